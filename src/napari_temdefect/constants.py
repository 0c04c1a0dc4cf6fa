"""Values shared by the GUI, the CLI and the core."""

#: Label value that marks pixels to leave out of the training loss ("ignore"). It is outside
#: the range of instance ids the product creates, and fits uint16 label files; 8-bit mask files
#: can choose another value with the CLI's --ignore-value.
IGNORE_LABEL = 65535

#: Kinds of quantification.
KINDS = ("blobs", "lines", "grains")


def as_threshold(value) -> float | None:
    """``value`` as a probability threshold strictly inside (0, 1), or None when it is not one
    (missing, not a number, NaN, or out of range). Reads a threshold recorded in a checkpoint, a
    TIFF or a layer's metadata."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if 0.0 < t < 1.0 else None


#: Words in a model's class names that say what to measure, checked in this order
#: ("dislocation loop" is a blob; "dislocation" alone a line).
_KIND_WORDS = (
    ("grains", ("boundar", "grain")),
    ("blobs", ("loop", "bubble", "void", "cavit", "precipitat", "blob", "particle", "pore")),
    ("lines", ("disloc", "line")),
)


def kind_for_class(name) -> str | None:
    """The kind of measurement a model class name implies (``"boundary"`` → ``"grains"``,
    ``"bubble"`` → ``"blobs"``, ``"dislocation"`` → ``"lines"``), or None when the name does
    not say (``"defect"``)."""
    text = str(name or "").lower()
    for kind, words in _KIND_WORDS:
        if any(w in text for w in words):
            return kind
    return None
