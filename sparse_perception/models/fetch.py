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
Obtain the MediaPipe models through the package registry (PyPI), without installing MediaPipe.

``pip download --no-deps mediapipe==0.10.21`` fetches the wheel; the TFLite files listed in
:data:`~sparse_perception.models.registry.MEDIAPIPE_FILES` are extracted from it into the
model cache. The wheel's platform does not matter for these data files, so when no wheel
matches this machine (a Python without MediaPipe wheels) a Linux x86-64 one is fetched instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib

from sparse_perception.models.registry import (
    cache_dir, CACHE_ENV, FETCH_MARKER, MANIFEST, MEDIAPIPE_FILES, MEDIAPIPE_VERSION)
from sparse_perception.output_files import write_aside

# A wheel that exists for mediapipe 0.10.21 whatever the machine: the fallback download.
FALLBACK_PLATFORM = ['--platform', 'manylinux_2_28_x86_64', '--python-version', '3.11',
                     '--implementation', 'cp', '--abi', 'cp311']
# The largest MediaPipe model taken from the wheel is under 10 MB; a member far beyond that
# is not one of them (a zip bomb would otherwise fill memory and the cache).
MAX_MEMBER_BYTES = 64 << 20


class FetchError(RuntimeError):
    """The wheel could not be downloaded or does not hold the expected files."""


def fetch_mediapipe(target: str | os.PathLike | None = None, *, wheel: str | None = None,
                    version: str = MEDIAPIPE_VERSION, pip_args: list[str] | None = None,
                    log=print, force: bool = False) -> dict[str, Path]:
    """
    Put the MediaPipe TFLite files into ``target`` (default: the model cache's mediapipe/).

    ``wheel`` uses a wheel file already at hand instead of downloading; ``pip_args`` are
    added to the ``pip download`` command (an index URL, ``--no-index --find-links DIR``).
    Returns ``{file name: path}``. Files are written under temporary names and renamed, and a
    manifest records each file's sha256 and the wheel it came from. When every file is there
    already and matches the manifest of the same version, nothing is downloaded (``force``
    downloads anyway).
    """
    target = Path(target) if target is not None else cache_dir() / 'mediapipe'
    present = None if force or wheel else _verified(target, version)
    if present is not None:
        _remove_stale_temporaries(target)
        log(f'{len(present)} files already present in {target} (mediapipe {version}; '
            'checked against the manifest)')
        return present
    if wheel and Path(wheel).is_dir():
        raise FetchError(f'wheel {str(wheel)!r} is a folder; expected a mediapipe wheel file')
    if wheel and not Path(wheel).is_file():  # before anything is made
        raise FetchError(f'wheel {str(wheel)!r} does not exist')
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not os.access(target, os.W_OK | os.X_OK):
            raise PermissionError(13, 'Permission denied', str(target))
    except OSError as exc:
        raise FetchError(f'cannot use {target} as the model cache: {exc.strerror}; choose '
                         f'another folder with --cache-dir or ${CACHE_ENV}') from None
    with tempfile.TemporaryDirectory(prefix='sparse-perception-fetch-') as scratch:
        wheel_path = Path(wheel) if wheel else _download(version, Path(scratch),
                                                         pip_args or [], log)
        if not wheel_path.is_file():
            raise FetchError(f'wheel {str(wheel_path)!r} does not exist')
        return _extract(wheel_path, target, log, version)


def _verified(target: Path, version: str) -> dict[str, Path] | None:
    """Return the cached files if all match the manifest written for ``version``, else None."""
    if (target / FETCH_MARKER).exists():  # a fetch that did not finish
        return None
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    # A manifest edited by hand or cut short may parse as anything: only its own shape counts.
    if not isinstance(manifest, dict) or not isinstance(manifest.get('files'), dict):
        return None
    if manifest.get('version', _name_version(str(manifest.get('wheel', '')))) != version:
        return None
    found = {}
    for filename in MEDIAPIPE_FILES:
        path, record = target / filename, manifest['files'].get(filename)
        if not isinstance(record, dict):
            return None
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        if record.get('sha256') != digest:
            return None
        found[filename] = path
    return found


def _download(version: str, folder: Path, pip_args: list[str], log) -> Path:
    base = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
            '--disable-pip-version-check', '-d', str(folder), f'mediapipe=={version}']
    attempts = [base + pip_args, base + FALLBACK_PLATFORM + pip_args]
    errors = []
    for command in attempts:
        log(f'running: {" ".join(command[2:])}')
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            wheels = sorted(folder.glob(f'mediapipe-{version}-*.whl'))
            if wheels:
                return wheels[0]
            errors.append('pip reported success but left no mediapipe wheel')
        else:
            errors.append(result.stderr.strip().splitlines()[-1] if result.stderr.strip()
                          else f'pip exited with {result.returncode}')
    raise FetchError(f'could not download mediapipe=={version} with pip: '
                     f'{" / ".join(errors)}; check the package index access, or download the '
                     'wheel elsewhere and pass it with --wheel')


def _extract(wheel_path: Path, target: Path, log, version: str = MEDIAPIPE_VERSION
             ) -> dict[str, Path]:
    """
    Extract the model files: read and check every member, then write them all.

    Nothing is replaced unless every file could be written beside its target first. From the
    first replacement until the new manifest is in place, a marker file (FETCH_MARKER) stands
    in the folder: a replacement cut short (a crash, Ctrl-C) leaves the marker and no
    manifest, which fails verification and is fetched again, and which load_model refuses,
    never a manifest vouching for mixed files.
    """
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            names = set(archive.namelist())
            missing = [member for member in MEDIAPIPE_FILES.values() if member not in names]
            if missing:
                raise FetchError(f'{wheel_path.name} lacks {", ".join(missing)}; expected a '
                                 f'mediapipe {version} wheel')
            held = _wheel_version(archive, wheel_path)
            if held is not None and held != version:
                raise FetchError(f'{wheel_path} holds mediapipe {held}, not {version}: the '
                                 'model files differ between versions; pass a wheel of '
                                 f'{version} (or --version {held})')
            contents = {filename: _read_member(archive, member, wheel_path)
                        for filename, member in MEDIAPIPE_FILES.items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise FetchError(f'{wheel_path} is not an intact wheel (zip) file: '
                         f'{" ".join(str(exc).split()) or type(exc).__name__}; download it '
                         'again') from None
    # Every name must take a file before any is replaced: a folder in the way would stop
    # the replacement half-way.
    for filename in list(contents) + [MANIFEST, FETCH_MARKER]:
        if (target / filename).is_dir():
            raise FetchError(f'{target / filename} is a folder; remove it, or choose another '
                             f'cache with --cache-dir or ${CACHE_ENV}')
    _remove_stale_temporaries(target)
    # The version is recorded apart from the wheel's file name, which a download may change.
    written, manifest = {}, {'wheel': wheel_path.name, 'version': version, 'files': {}}
    temporaries: dict[str, Path] = {}
    try:
        for filename, data in contents.items():
            temporaries[filename] = write_aside(target / filename, data)
        # The marker comes before the old manifest goes: from then on until the new one is
        # in place, the folder may hold files of two versions.
        _write_marker(target / FETCH_MARKER)
        (target / MANIFEST).unlink(missing_ok=True)
        for filename, data in contents.items():
            path = target / filename
            os.replace(temporaries[filename], path)
            del temporaries[filename]
            written[filename] = path
            manifest['files'][filename] = {'member': MEDIAPIPE_FILES[filename],
                                           'sha256': hashlib.sha256(data).hexdigest(),
                                           'bytes': len(data)}
            log(f'wrote {path} ({len(data)} bytes)')
        text = json.dumps(manifest, indent=2) + '\n'
        temporaries[MANIFEST] = write_aside(target / MANIFEST, text)
        os.replace(temporaries[MANIFEST], target / MANIFEST)
        del temporaries[MANIFEST]
        (target / FETCH_MARKER).unlink()
    except OSError as exc:  # a full disk, a cache made read-only meanwhile
        raise FetchError(f'cannot write the models into {target}: {exc.strerror}; no manifest '
                         'was written, so the next run fetches them again') from None
    finally:  # an error or an interruption: no temporary is left behind
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
    return written


def _name_version(wheel_name: str) -> str | None:
    """Return the version in a wheel's file name (mediapipe-0.10.21-...), None if none."""
    match = re.match(r'mediapipe-([^-]+)-', wheel_name)
    return match.group(1) if match else None


def _wheel_version(archive: zipfile.ZipFile, wheel_path: Path) -> str | None:
    """Return the version a mediapipe wheel declares (dist-info, else its file name)."""
    for name in archive.namelist():
        if re.fullmatch(r'mediapipe-[^/]+\.dist-info/METADATA', name):
            with archive.open(name) as stream:
                for line in stream.read(1 << 20).decode('utf-8', 'replace').splitlines():
                    if line.startswith('Version:'):
                        return line.split(':', 1)[1].strip()
    return _name_version(wheel_path.name)


def _read_member(archive: zipfile.ZipFile, member: str, wheel_path: Path) -> bytes:
    """Return a model member's bytes, refusing what cannot be a MediaPipe TFLite model."""
    declared = archive.getinfo(member).file_size
    with archive.open(member) as stream:  # the CRC is checked once the end is read
        data = stream.read(MAX_MEMBER_BYTES + 1)
    if max(declared, len(data)) > MAX_MEMBER_BYTES:
        raise FetchError(f'{wheel_path}: {member} holds {declared} bytes, more than the '
                         f'{MAX_MEMBER_BYTES >> 20} MiB limit for a model (the MediaPipe ones '
                         'are under 10 MB); expected a mediapipe wheel, download it again')
    if data[4:8] != b'TFL3':
        raise FetchError(f'{wheel_path}: {member} is not a TFLite flatbuffer (no TFL3 '
                         'identifier at byte 4); expected a mediapipe wheel, download it again')
    return data


def _write_marker(path: Path) -> None:
    """Write the marker that says a fetch is replacing the files beside it, synced to disk."""
    existed = path.exists()  # left by a fetch cut short: the files may be mixed already
    try:
        with open(path, 'w', encoding='utf-8') as stream:
            stream.write('`sparse-perception models fetch` is replacing the model files here; '
                         'if it stopped, the files may come from two versions: run it again\n')
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        if not existed:  # nothing was replaced yet: the old cache still holds
            path.unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(target: Path) -> None:
    """
    Remove the temporaries that a fetch killed outright (no cleanup ran) left in ``target``.

    Only the names that write_aside gives the cache's own files (``.<name>.<8 random
    characters>.part``) are removed, nothing else a user may keep in the folder.
    """
    names = '|'.join(re.escape(name) for name in [*MEDIAPIPE_FILES, MANIFEST])
    pattern = re.compile(rf'\.(?:{names})\.[a-z0-9_]{{8}}\.part')
    try:
        stale = [p for p in target.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    except OSError:
        return
    for path in stale:
        try:
            path.unlink()
        except OSError:  # left for a later fetch: not worth failing this one
            pass
