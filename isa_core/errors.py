"""The one exception family for mistakes a user can make (bad input, bad flags, bad files)."""

__all__ = ["IsaError", "field_error"]


class IsaError(ValueError):
    """A problem with the user's input; the message says what was wrong and how to fix it.

    The CLI prints it as one line and exits with status 2; library callers catch it like any
    ``ValueError``. ``field`` names the config field or argument the message starts with, so
    the CLI can show it as its flag (``beta`` -> ``--beta``) while the library names its own.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def field_error(field: str, problem: str) -> IsaError:
    """An IsaError about one field: ``"<field> <problem>"``, e.g. ``beta must be >= 0``."""
    return IsaError(f"{field} {problem}", field=field)
