# Copyright 2026 The sparse_perception authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
Files the command-line tools write: checked before the work, written whole or not at all.

A benchmark, an evaluation or a training runs for minutes before it writes; an output path
it cannot use should fail at once, and an output that is one of the run's inputs (the video
it reads, the shared data) must never be written over. :func:`check_outputs` says so before
anything runs; :func:`write_atomic` writes through a temporary file of its own beside the
target, flushed to disk, then renamed over it, so that a reader sees the old file or the
whole new one, and two runs writing the same path never mix their halves.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import signal
import tempfile
import threading
from typing import Any, Callable, Iterable, Iterator, Sequence


class OutputError(ValueError):
    """An output path that cannot or must not be written."""


def overlap(output: str | Path, inputs: Iterable[str | Path]) -> str | None:
    """
    Return why ``output`` must not be written over ``inputs`` (None: it may).

    It must not be, contain or lie inside an input: writing it would replace or pollute the
    input. Symbolic links are followed.
    """
    out = Path(output).resolve()
    for given in inputs:
        inp = Path(given).resolve()
        if out == inp:
            relation = 'is'
        elif out in inp.parents:
            relation = 'contains'
        elif inp in out.parents:
            relation = 'lies inside'
        else:
            continue
        return (f'{output} {relation} the input {given}; writing it could destroy or pollute '
                'the input: choose an output outside it')
    return None


def check_outputs(outputs: Sequence[tuple[str, str | Path | None]],
                  inputs: Iterable[str | Path] = (), *, create_folders: bool = False) -> None:
    """
    Raise :class:`OutputError` unless every output can be written, now, before the work.

    ``outputs`` are (flag, path) pairs (a None path is not written). Each path must be a file
    name in an existing folder (``create_folders``: made here, once no output names an input)
    that takes a new file, name no input, and differ from the other outputs.
    """
    inputs = list(inputs)
    given = [(flag, Path(path)) for flag, path in outputs if path is not None]
    for flag, path in given:
        if str(path) in ('', '.'):
            raise OutputError(f'{flag}: expected a file name, got {str(path)!r}')
        reason = overlap(path, inputs)
        if reason is not None:
            raise OutputError(f'{flag} {reason}')
    seen: dict[Path, str] = {}
    for flag, path in given:
        if path.is_dir():
            raise OutputError(f'{flag} {path} is a folder; expected a file name to write')
        if create_folders and not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f'{flag} {path}: cannot make the folder {path.parent}: '
                                  f'{exc.strerror}; choose another place') from None
        if path.parent.exists() and not path.parent.is_dir():
            raise OutputError(f'{flag} {path}: {path.parent} is a file, not a folder')
        if not path.parent.is_dir():
            raise OutputError(f'{flag} {path}: the folder {path.parent} does not exist; '
                              'create it first')
        key = path.resolve()
        if key in seen:
            raise OutputError(f'{flag} {path} is also where {seen[key]} writes; one would '
                              'replace the other: give them different names')
        seen[key] = flag
        # Try it: permissions alone do not tell (root, read-only file systems).
        try:
            handle, probe = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f'{flag} {path}: cannot write into {path.parent}: '
                              f'{exc.strerror}; choose another place') from None


def report_pair(base: str | Path) -> tuple[Path, Path]:
    """
    Return the .json and .md files a result named ``base`` (no suffix) is written to.

    The suffixes are added, not swapped in: ``runs/2026.12.04`` gives ``runs/2026.12.04.json``
    (``with_suffix`` would give ``runs/2026.12.json``). A base that already ends in .json or
    .md stands for the pair.
    """
    base = Path(base)
    if base.suffix in ('.json', '.md'):
        base = base.with_suffix('')
    return base.with_name(base.name + '.json'), base.with_name(base.name + '.md')


def write_atomic(path: str | Path, data: str | bytes | Callable[[str], None]) -> Path:
    """
    Write ``path`` whole or not at all; return it.

    ``data`` is text (UTF-8), bytes, or a function that writes the file it is given (e.g.
    ``torch.save``). The temporary file is unique to this call and is removed on failure.
    The result is a new file: it gets the permissions a new file gets here (the umask), not
    those of the file it replaces. An error names ``path``, never the temporary file.
    """
    path = Path(path)
    temp = write_aside(path, data)
    with _removed_on_failure(temp, path):
        os.replace(temp, path)
    return path


def write_aside(path: str | Path, data: str | bytes | Callable[[str], None]) -> Path:
    """
    Write ``data`` (as :func:`write_atomic` takes it) to a new temporary file beside ``path``.

    The file is synced to disk and has a new file's permissions; the caller renames it over
    ``path`` (several such files may be renamed one after another) or removes it.
    """
    path = Path(path)
    if not isinstance(data, (str, bytes)) and not callable(data):
        raise TypeError(f'data for {path} must be str, bytes or a function that writes a '
                        f'file, not {type(data).__name__}')
    try:
        handle, name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.part',
                                        dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    temp = Path(name)
    with _removed_on_failure(temp, path):
        with os.fdopen(handle, 'wb') as stream:
            if not callable(data):
                stream.write(data.encode('utf-8') if isinstance(data, str) else data)
        if callable(data):
            data(name)
        with open(temp, 'rb+') as stream:
            os.fsync(stream.fileno())
        os.chmod(temp, new_file_mode())
    return temp


@contextlib.contextmanager
def _removed_on_failure(temp: Path, path: Path) -> Iterator[None]:
    """Remove ``temp`` when the block fails; an OSError then names ``path``, not ``temp``."""
    try:
        yield
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_together(items: Sequence[tuple[str | Path, str | bytes | Callable[[str], None]]]
                   ) -> None:
    """
    Write each (path, data) of a set of files that belong together, all of them or none.

    Every file is written aside first (:func:`write_aside`); only when all of them are on
    disk are they renamed over their paths, with interrupts held: a full disk leaves every
    path as it was, a Ctrl-C every path as it was or all of them new, never a new file
    beside an old one from another run. (A rename needs no space; one that fails
    all the same, say onto a folder made at a path since it was checked, leaves the files
    renamed before it.) An error names the path, and no temporary file is left.
    """
    temporaries: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            temporaries.append((write_aside(path, data), Path(path)))
        with interrupts_held():  # a Ctrl-C between renames would pair new files with old
            while temporaries:
                temp, path = temporaries[0]
                with _removed_on_failure(temp, path):
                    os.replace(temp, path)
                temporaries.pop(0)
    finally:
        for temp, _ in temporaries:
            temp.unlink(missing_ok=True)


def write_reports(outputs: Sequence[tuple[str, str | Path | None]], texts: Sequence[str],
                  command: str) -> int:
    """
    Write each output given a path (the (flag, path) pairs of :func:`check_outputs`).

    They are written together (:func:`write_together`). Returns the exit status: 0, or 1
    after one line on stderr naming the file.
    """
    import sys

    try:
        write_together([(path, text) for (_, path), text in zip(outputs, texts) if path])
    except OSError as exc:
        print(f'{command}: cannot write {exc.filename}: {exc.strerror or exc}', file=sys.stderr)
        return 1
    return 0


# What stops a command: Ctrl-C, a `kill` or a service stop, a closed terminal or ssh session.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ('SIGINT', 'SIGTERM', 'SIGHUP')
                     if hasattr(signal, name))


@contextlib.contextmanager
def interrupts_held() -> Iterator[list[int]]:
    """
    Hold back Ctrl-C, SIGTERM and SIGHUP while the block runs; yield a list of those that came.

    For the last steps of a command, which put its finished outputs in place or remove its
    staging folder: an interrupt amid them would leave old outputs beside new ones, or a
    partial folder behind. A signal that comes meanwhile is not acted on; the block's caller
    sees it in the list (the work is done, or the command is on its way out already). Only
    the main thread can set handlers: elsewhere the block runs as it is.
    """
    caught: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is None:  # a handler set outside Python: left alone
                continue
            previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def missing_folders(path: str | Path) -> list[Path]:
    """Return the folders above ``path`` that do not exist yet, deepest first."""
    parent = Path(path).parent
    return [folder for folder in (parent, *parent.parents) if not folder.exists()]


class FoldersMade:
    """
    The folders that outputs ((flag, path) pairs, as :func:`check_outputs` takes) will need.

    Taken before they are made; on leaving the ``with`` block without ``written`` set (a
    failure, an interrupt), those still empty go: a run that wrote nothing leaves none.
    """

    def __init__(self, outputs: Sequence[tuple[str, str | Path | None]]):
        self.made = [missing_folders(path) for _, path in outputs if path is not None]
        self.written = False

    def __enter__(self) -> 'FoldersMade':
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.written:
            for folders in self.made:
                remove_empty(folders)


def remove_empty(folders: Iterable[Path]) -> None:
    """
    Remove ``folders`` (deepest first, as :func:`missing_folders` gives them) while empty.

    For the folders a run made for an output it did not write: it leaves none behind.
    """
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else was put there meanwhile
            return


def nearest_existing(path: str | Path) -> Path:
    """Return ``path``, or the nearest path above it that exists (it decides if it can be made)."""
    existing = Path(path)
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return existing


def staging_leftovers(folder: str | Path, pattern: str) -> list[Path]:
    """Return the staging folders matching ``pattern`` in ``folder`` (of runs killed outright)."""
    try:
        return sorted(p for p in Path(folder).glob(pattern) if p.is_dir())
    except OSError:
        return []


def new_file_mode() -> int:
    """Return the permissions a newly created file gets here (0o666 less the umask)."""
    return 0o666 & ~_umask()


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """Return the umask, read without changing it where /proc tells it."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and set it back: no other file is made meanwhile
    # by this module.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


__all__ = ['check_outputs', 'new_file_mode', 'OutputError', 'overlap', 'report_pair',
           'write_aside', 'write_atomic', 'write_reports', 'write_together']
