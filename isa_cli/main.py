"""Entry point of `isa`: runs the typer app and turns every user error into one line.

Errors are printed as ``isa <command>: error: <message>`` on stderr with exit status 2; a
traceback appears only with ``ISA_DEBUG=1``.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import traceback
import warnings

import typer

from isa_cli import data, evaluate, plot, prior, report, sweep, toy, train  # noqa: F401  (registers the commands)
from isa_cli.app import app
from isa_core.errors import IsaError

__all__ = ["main"]

USAGE_ERROR = 2
INTERNAL_ERROR = 1


# OS errors that come from the user's environment (a full disk, a read-only folder, missing
# permissions), not from a bug: each maps to the fix printed after the reason.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "free space on that filesystem or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EFBIG: "the file is too large for that filesystem; write elsewhere",
    errno.EROFS: "that filesystem is read-only; write elsewhere",
    errno.EACCES: "check the permissions, or use another path",
    errno.EPERM: "check the permissions, or use another path",
    errno.ENAMETOOLONG: "use a shorter file or folder name",
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "that path is a folder; give a file",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or process fewer inputs",
    errno.EIO: "the device reported an I/O error; check the disk",
}


def _internal(error: BaseException) -> str:
    return (
        f"internal error: {type(error).__name__}: {error} "
        "(a bug in isa; rerun with ISA_DEBUG=1 for the traceback and report it)"
    )


def _debug() -> bool:
    return os.environ.get("ISA_DEBUG", "") not in ("", "0")


@functools.cache
def _click_command():
    """The click command tree of the app, built once (typer builds it anew on every call)."""
    return typer.main.get_command(app)


def _command_name(args: list[str]) -> str:
    """The subcommand path named in ``args`` (``prior-sample``, ``data info``), for messages."""
    try:
        command = _click_command()
    except Exception:
        return ""
    names: list[str] = []
    for arg in args:
        commands = getattr(command, "commands", None)
        if not isinstance(commands, dict):
            break
        sub = commands.get(arg)
        if sub is None:
            if arg.startswith("-"):
                continue
            break
        names.append(arg)
        command = sub
    return " ".join(names)


def _fail(command: str, message: str, status: int) -> None:
    prefix = f"isa {command}" if command else "isa"
    one_line = " ".join(message.split())
    sys.stderr.write(f"{prefix}: error: {one_line}\n")
    sys.stderr.flush()
    sys.exit(status)


def _as_flags(error: IsaError) -> str:
    """The message, its leading field name shown as the flag that sets it (beta -> --beta)."""
    message, field = str(error), error.field
    if field and message.startswith(field):
        return "--" + field.replace("_", "-") + message[len(field) :]
    return message


def _one_line_warning(command: str):
    """Print warnings as ``isa <command>: warning: <message>``, like errors, not as tracebacks."""
    prefix = f"isa {command}" if command else "isa"

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        (file or sys.stderr).write(f"{prefix}: warning: {text}\n")

    return show


def main(argv: list[str] | None = None) -> None:
    """Run `isa` with ``argv`` (default: the process arguments) and exit."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    if not _debug():
        warnings.showwarning = _one_line_warning(_command_name(args))
    try:
        result = _click_command()(args=args, prog_name="isa", standalone_mode=False)
    except typer.Exit as done:
        result = done.exit_code
    except typer.TyperException as error:  # typer's usage errors: bad flag, missing value, ...
        ctx = getattr(error, "ctx", None)
        name = ctx.command_path.removeprefix("isa").strip() if ctx else _command_name(args)
        hint = f"; see 'isa {name} --help'" if name else "; see 'isa --help'"
        _fail(name, error.format_message().rstrip(".") + hint, USAGE_ERROR)
    except IsaError as error:
        if _debug():
            traceback.print_exc()
        _fail(_command_name(args), _as_flags(error), USAGE_ERROR)
    except typer.Abort:
        _fail(_command_name(args), "aborted", 130)
    except KeyboardInterrupt:
        _fail(_command_name(args), "interrupted", 130)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except MemoryError:
        # Sizes are bounded where they are parsed; this is the net for what slips through.
        _fail(
            _command_name(args),
            "out of memory: the input or a size flag asks for more memory than this machine "
            "has; use smaller inputs, fewer samples or a smaller batch",
            USAGE_ERROR,
        )
    except RecursionError:
        _fail(
            _command_name(args),
            "the input is nested too deeply to process; flatten it",
            USAGE_ERROR,
        )
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRORS:
            if _debug():
                raise
            _fail(_command_name(args), _internal(error), INTERNAL_ERROR)
        where = f" {error.filename}" if error.filename else ""
        _fail(
            _command_name(args),
            f"cannot access{where}: {error.strerror or error}; {_ENVIRONMENT_ERRORS[error.errno]}",
            USAGE_ERROR,
        )
    except Exception as error:
        if _debug():
            raise
        _fail(_command_name(args), _internal(error), INTERNAL_ERROR)
    sys.exit(result if isinstance(result, int) else 0)
