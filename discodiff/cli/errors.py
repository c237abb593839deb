"""One way every command reports failure: a single ``error: …`` line naming the input and the fix, no traceback.

:func:`reports_errors` wraps each ``discodiff`` sub-command; :func:`run_script` does the same for the
argparse launch scripts (``train/train.py``, ``train/export.py``). Both turn a
:class:`~discodiff.errors.DiscoDiffError` or an ``OSError`` (a full disk, a permission problem) into one
line on stderr and exit status 1; Ctrl-C exits with 130 and says so. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from ..errors import DiscoDiffError
from ..outputs import describe_os_error

Command = TypeVar("Command", bound=Callable)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def error_line(err: BaseException) -> str | None:
    """The one-line message for an error the user can fix, None for anything else (a bug)."""
    if isinstance(err, DiscoDiffError):
        return str(err)
    if isinstance(err, OSError):
        return describe_os_error(err)
    return None


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def reports_errors(command: Command) -> Command:
    """Decorate a command so that user errors end it with one line and exit status 1, and warnings print as
    ``warning: …`` lines (see the module docstring)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return command(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (DiscoDiffError, OSError) as err:
            fail(error_line(err))

    return wrapper


def run_script(main: Callable[[], object]) -> None:
    """Run an argparse script's ``main`` with the same error reporting as the ``discodiff`` commands."""
    reports_errors(main)()
