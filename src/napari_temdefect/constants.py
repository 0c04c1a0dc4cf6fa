"""Values shared by the GUI, the CLI and the core."""

#: Label value that marks pixels to leave out of the training loss ("ignore"). It is outside
#: the range of instance ids the product creates, and fits uint16 label files; 8-bit mask files
#: can choose another value with the CLI's --ignore-value.
IGNORE_LABEL = 65535

#: Kinds of quantification.
KINDS = ("blobs", "lines", "grains")
