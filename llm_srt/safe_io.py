"""Writing outputs without destroying what a user already has: overwrite checks, atomic writes, argument types.

One rule for every entry point: an existing output is replaced only with an explicit `overwrite=True`
(`--overwrite`), an output is never written over one of the inputs, and files are written to a temporary name in
the same folder and renamed into place, so a killed run leaves either the old file or the new one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO


class OutputExistsError(FileExistsError):
    """An output that exists already and would be replaced without `--overwrite`."""


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
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


__all__ = ["OutputExistsError", "same_file", "check_output_file", "atomic_write", "positive_int", "positive_float"]
