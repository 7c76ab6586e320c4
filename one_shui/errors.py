"""The one user-error type: a problem the user can fix (a missing file, a bad setting, a wrong
checkpoint). Every entry point shows it as one line naming the thing and the fix, with exit status 1;
any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """An error the user can fix; its message names the thing and the fix."""


class SettingError(UserError, ValueError):
    """An option has a value that cannot work (an unknown name, a size out of range)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named, or that an earlier step should have written, is not there."""


class OutputExistsError(UserError, FileExistsError):
    """An output would overwrite a file that exists."""


def user_error(err: BaseException | None) -> UserError | None:
    """The user error behind ``err``, if any: itself or what it was raised from (jsonargparse and
    Lightning wrap errors raised while instantiating a class)."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err


def exit_on_user_error(prog: str, run: Callable[[], T]) -> T:
    """``run()``; a user error ends the process with ``prog: message`` on stderr and status 1."""
    try:
        return run()
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        sys.exit(f"{prog}: {cause}")
