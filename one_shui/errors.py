"""The one user-error type: a problem the user can fix (a command line that does not parse, a missing
file, a bad setting, a wrong checkpoint). Every entry point shows it as one line naming the thing and the
fix, with exit status 1; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """An error the user can fix; its message names the thing and the fix."""


class SettingError(UserError, ValueError):
    """An option has a value that cannot work (an unknown name, a size out of range)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named, or that an earlier step should have written, is not there."""


class OutputExistsError(UserError, FileExistsError):
    """An output would overwrite a file that exists."""


class CommandLineError(SettingError):
    """The command line does not parse: an unknown option, a missing argument, a value of the wrong type."""


class StorageError(UserError, OSError):
    """The file system refuses a write or a read: full, over quota, read-only, or not permitted."""


STORAGE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # what the user can fix


def user_error(err: BaseException | None) -> UserError | None:
    """The user error behind ``err``, if any: itself or what it was raised from (jsonargparse and
    Lightning wrap errors raised while instantiating a class). A full, read-only or forbidden file
    system is one too, and so is a command line that does not parse."""
    while err is not None:
        if isinstance(err, UserError):
            return err
        if isinstance(err, argparse.ArgumentError):  # argparse's and jsonargparse's, made one line
            return CommandLineError(" ".join(str(err).split()))
        if isinstance(err, OSError) and err.errno in STORAGE:
            return StorageError(
                f"{err.filename or 'a file'}: {err.strerror}; free some space, fix its permissions, or "
                "choose another folder"
            )
        err = err.__cause__
    return None


def exit_on_user_error(prog: str, run: Callable[[], T]) -> T:
    """``run()``; a user error ends the process with ``prog: message`` on stderr and status 1, the
    convention of every command. A command line that does not parse is one too (argparse's and
    jsonargparse's errors, raised by :class:`CommandLineParser` or a parser with ``exit_on_error=False``),
    its line ending with where the usage is."""
    try:
        return run()
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        usage = f"; see {prog} --help" if isinstance(cause, CommandLineError) else ""
        sys.exit(f"{prog}: {cause}{usage}")


class CommandLineParser(argparse.ArgumentParser):
    """argparse's parser, whose errors (an unknown option, a missing argument, a value of the wrong type)
    are raised for :func:`exit_on_user_error` instead of printing the usage and exiting with status 2."""

    def error(self, message: str) -> NoReturn:
        raise argparse.ArgumentError(None, message)


@contextlib.contextmanager
def damaged_as(error: type[UserError], what: str) -> Iterator[None]:
    """Inside the block, a structural error of a file's content (a missing key, a wrong type or shape)
    becomes one ``error`` starting with ``what``; user errors and anything else pass as they are."""
    try:
        yield
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as err:
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        raise error(f"{what} ({detail[:300]}); make it again") from None


def at_least(where: str, minimum: float, **values: float | None) -> None:
    """Refuse any of ``values`` (options under ``where``, such as ``model.init_args``) that is not a finite
    number of at least ``minimum``; None passes (an option left to its default)."""
    for name, value in values.items():
        if value is not None and not (math.isfinite(value) and value >= minimum):
            raise SettingError(f"{where}.{name} must be a finite number, at least {minimum:g}, not {value!r}")


def positive(where: str, **values: float | None) -> None:
    """Refuse any of ``values`` that is not a finite number above 0 (see :func:`at_least`)."""
    for name, value in values.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SettingError(f"{where}.{name} must be a finite number above 0, not {value!r}")


def at_most(where: str, maximum: float, **values: float | None) -> None:
    """Refuse any of ``values`` above ``maximum`` (see :func:`at_least`)."""
    for name, value in values.items():
        if value is not None and value > maximum:
            raise SettingError(f"{where}.{name} must be at most {maximum:g}, not {value!r}")
