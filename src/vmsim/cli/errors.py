"""Errors a subcommand raises to end the command, and the one place where failures and
results become exit statuses.

Exit statuses of ``vmsim`` (also in ``vmsim --help`` and the README):

==== ======================================================================================
0    success
1    failure: an input could not be read (missing, unreadable, corrupt), or the model did
     something the spec says Linux does not
2    usage: bad options (argparse's own errors are 2 as well)
3    limit: ``replay``: a call failed in the model at the given ``--max-map-count``;
     ``maps``: the process is at or over its vm.max_map_count
4    no input: ``replay`` found no system call to replay (empty, or nothing parsed)
130  interrupted (Ctrl-C), as shells report 128 + SIGINT
==== ======================================================================================
"""

from __future__ import annotations

import zlib

from vmsim.trace.events import MAX_QUOTE, clip

EXIT_OK = 0
EXIT_FAILURE = 1  # a command failed, or the model disagreed with the spec
EXIT_USAGE = 2  # bad options (argparse uses 2 as well)
EXIT_LIMIT = 3  # replay: a call failed at the limit; maps: at or over the limit
EXIT_NO_INPUT = 4  # replay: nothing in the input was a system call
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

EXIT_STATUS_HELP = (
    "exit status: 0 success; 1 an input could not be read, or a model deviation; "
    "2 bad options; 3 limit reached (replay: a call failed at --max-map-count; maps: at or "
    "over vm.max_map_count); 4 replay found no system call in its input; 130 interrupted"
)


class CliError(Exception):
    """A failure the user should read about (printed to stderr as ``vmsim: <message>``)."""


class UsageError(CliError):
    """The options make no sense for this command (exit status 2, like argparse)."""


class ModelDeviation(CliError):
    """The model did something the spec says Linux does not (exit status 1)."""


class ResultStatus(Exception):
    """Not an error: the command ran and printed its report; its result asks for a nonzero
    exit status (``code``) as documented above."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def message_of(exc: BaseException) -> str:
    """The one line printed for ``exc``: its message, with any very long message cut."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return clip(" ".join(text.splitlines()), 4 * MAX_QUOTE)


def exit_code(exc: BaseException) -> int:
    """The one place where failures become exit statuses."""
    if isinstance(exc, ResultStatus):
        return exc.code
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CliError | OSError | EOFError | zlib.error):  # a ModelDeviation too
        return EXIT_FAILURE
    raise exc


HANDLED = (CliError, OSError, EOFError, zlib.error, KeyboardInterrupt)
"""What main() turns into ``vmsim: <message>`` and an exit status (anything else is a bug
and keeps its traceback)."""

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_LIMIT",
    "EXIT_NO_INPUT",
    "EXIT_OK",
    "EXIT_STATUS_HELP",
    "HANDLED",
    "CliError",
    "ModelDeviation",
    "ResultStatus",
    "UsageError",
    "clip",
    "exit_code",
    "message_of",
]
