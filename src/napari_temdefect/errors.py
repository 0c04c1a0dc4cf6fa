"""One exception type for every mistake a user can make.

Its message is a single sentence that names the problem and the fix. The CLI prints it on one
line and exits non-zero; widgets show it as a napari notification. Anything else that escapes is
a bug, and is reported as such.
"""


class TemDefectError(Exception):
    """A user-facing error whose ``str`` is one clear sentence."""

    def __init__(self, message: str):
        # Keep messages on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class CancelledError(TemDefectError):
    """Raised inside long operations when the user pressed Cancel or Stop."""

    def __init__(self, message: str = "Cancelled by the user."):
        super().__init__(message)
