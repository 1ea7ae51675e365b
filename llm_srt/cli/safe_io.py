"""Writing outputs without destroying what a user already has: overwrite checks, atomic writes, argument types.

One rule for every entry point: an existing output is replaced only with an explicit `overwrite=True`
(`--overwrite`), an output is never written over one of the inputs, and files are written to a temporary name in
the same folder and renamed into place, so a killed run leaves either the old file or the new one.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO


logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    """An output that exists already and would be replaced without `--overwrite`."""


class UsageError(ValueError):
    """A bad command line, found before any work starts (exit status 2 in `run_reporting_errors`)."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (symlinks and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    what: str = "output",
) -> None:
    """Refuse an output path that is one of `inputs`, or that exists while `overwrite` is False.

    Raises:
        ValueError: the output is an input.
        OutputExistsError: the output exists and `overwrite` is not set.
    """
    path = os.fspath(path)
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and os.path.exists(source) and os.path.exists(path) \
                and same_file(path, source):
            raise ValueError(f"The {what} {path} is also an input: choose another {what} file.")
    if os.path.isdir(path):
        raise OutputExistsError(f"The {what} {path} is a folder; give a file name.")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"The {what} {path} exists already; pass --overwrite to replace it.")


def _is_within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies inside it (both resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(
    path: str | os.PathLike,
    overwrite: bool = False,
    what: str = "output folder",
    inputs: Iterable[str | os.PathLike] = (),
) -> None:
    """Refuse an output folder that holds files while `overwrite` is False, that is a file, or that holds an input.

    An empty or missing folder is always fine. Every entry counts (a `README.md` or a stray checkpoint is as much a
    user's file as `config.json`), so the message names a few of them.

    Raises:
        ValueError: the folder is (or contains) one of `inputs`; replacing it would destroy an input.
        OutputExistsError: the path is a file, or the folder holds files and `overwrite` is not set.
    """
    path = os.fspath(path)
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and os.path.exists(source) and _is_within(source, path):
            raise ValueError(f"The {what} {path} holds the input {os.fspath(source)}: choose another {what}.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"The {what} {path} is a file, not a folder.")
    if os.path.isdir(path) and not overwrite:
        entries = sorted(os.listdir(path))
        if entries:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise OutputExistsError(
                f"The {what} {path} is not empty ({shown}); pass --overwrite to replace it, or choose another folder."
            )


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def new_file_mode(path: str | os.PathLike) -> int:
    """The permissions a file written at `path` should get: the replaced file's, else what `open` would give."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder beside `path`; on success it replaces `path` as a whole, on error it is removed.

    A run that fails (or is killed) while writing leaves the old folder as it was, never a mix of old and new files.
    The swap is two renames; were a run killed between them, both folders survive as `.<name>.*` siblings.

    ```python
    with atomic_dir("llm-srt-3b") as folder:
        model.save_pretrained(folder)
    ```
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.dirname(path), os.path.basename(path.rstrip(os.sep))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        yield temp
        # mkdtemp makes the folder 0700; give it the permissions an ordinary makedirs would have.
        os.chmod(temp, 0o777 & ~_umask())
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.rename(path, os.path.join(old, name))
            os.rename(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename, on error it is removed.

    ```python
    with atomic_write("results.json") as f:
        json.dump(results, f)
    ```
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": encoding})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, new_file_mode(path))  # mkstemp makes it 0600
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def drop_cut_last_line(path: str | os.PathLike) -> str | None:
    """Cut a line-per-record file (a JSON-lines cache appended to as work is done) back to its last whole line.

    A run killed mid-write leaves the last line without its newline; appending to it would glue the next record
    onto the cut one and lose both. The cut text is removed (a warning names the file and the line) and returned,
    so its record is done again; None when the file ends with a newline, is empty or does not exist.
    """
    try:
        handle = open(path, "r+b")
    except FileNotFoundError:
        return None
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        keep, end = 0, size
        while end > 0:  # the last newline, read backwards a block at a time
            start = max(0, end - (1 << 16))
            handle.seek(start)
            found = handle.read(end - start).rfind(b"\n")
            if found >= 0:
                keep = start + found + 1
                break
            end = start
        handle.seek(keep)
        tail = handle.read()
        handle.seek(0)
        line = handle.read(keep).count(b"\n") + 1
        handle.truncate(keep)
    logger.warning(f"{os.fspath(path)} line {line} was cut short (a run stopped while writing it): dropped, its "
                   "record is done again.")
    return tail.decode("utf-8", errors="replace")


def number_type(cast: type = float, low: float | None = None, high: float | None = None, low_open: bool = False,
                what: str | None = None):
    """An argparse `type`: `cast(text)`, finite, at least `low` (above it with `low_open`) and at most `high`."""
    what = what or ("a whole number" if cast is int else "a number")
    bounds = " and ".join(part for part in (
        None if low is None else f"{'>' if low_open else '>='} {low:g}", None if high is None else f"<= {high:g}") if part)

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{' ' + bounds if bounds else ''}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if value != value or value in (float("inf"), float("-inf")) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {'a finite number ' if cast is float else ''}{bounds}, got {text}")
        return value

    parse.__name__ = what.replace(" ", "_")  # argparse names the type in its messages
    return parse


positive_int = number_type(int, 1)
positive_int.__doc__ = "argparse type: an integer >= 1."
positive_float = number_type(float, 0, low_open=True)
positive_float.__doc__ = "argparse type: a finite number > 0."
non_negative_float = number_type(float, 0)
non_negative_float.__doc__ = "argparse type: a finite number >= 0."


def set_argument_types(parser: argparse.ArgumentParser, **types) -> argparse.ArgumentParser:
    """Give the named arguments of a built parser their argparse `type` (HfArgumentParser takes it from the
    dataclass annotation and ignores one in the field's metadata), so a bad value is refused by the parser itself:

    ```python
    parser = set_argument_types(HfArgumentParser(Arguments), max_seconds=positive_float, max_rows=positive_int)
    ```
    """
    by_dest = {action.dest: action for action in parser._actions}
    for dest, kind in types.items():
        if dest not in by_dest:
            raise KeyError(f"{parser.prog} has no argument {dest!r}")
        by_dest[dest].type = kind
    return parser


def one_line(error: BaseException) -> str:
    """An exception as one line: our own messages whole, a library's with its type when that says more."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if not isinstance(error, (ValueError, OSError, RuntimeError)) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text


def exit_with_error(prog: str, error: BaseException, status: int) -> None:
    """End a script with `prog: error: <the error on one line>` on stderr and exit `status`."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def run_reporting_errors(
    prog: str, work: Callable[[], object], usage_errors: tuple[type[BaseException], ...] = ()
) -> int:
    """Run a command's `work()` and turn its errors into one line `prog: error: ...` on stderr, no traceback.

    Returns the exit status: `work()`'s when it returns an int, else 0; 2 for bad usage (`UsageError`, `OutputExistsError`, `usage_errors`), 130 when
    interrupted, 141 (quietly) when the reader of stdout went away, 1 for any other failure. Set `LLM_SRT_TRACEBACK=1` to see the traceback of a failure instead.
    """
    try:
        status = work()
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading (`| head`): not an error; quiet, as SIGPIPE would end a C tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not raise again
        return 141
    except (UsageError, OutputExistsError, *usage_errors) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - failed work: one line naming it, not a traceback
        if os.environ.get("LLM_SRT_TRACEBACK"):
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1


__all__ = [
    "OutputExistsError", "UsageError", "same_file", "check_output_file", "check_output_dir", "atomic_write", "atomic_dir",
    "drop_cut_last_line", "new_file_mode", "set_argument_types", "one_line", "run_reporting_errors",
    "number_type", "positive_int", "positive_float", "non_negative_float",
]

