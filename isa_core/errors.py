"""The one exception family for mistakes a user can make (bad input, bad flags, bad files)."""

__all__ = ["IsaError"]


class IsaError(ValueError):
    """A problem with the user's input; the message says what was wrong and how to fix it.

    The CLI prints it as one line and exits with status 2; library callers catch it like any
    ``ValueError``.
    """
