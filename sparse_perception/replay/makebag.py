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
Video or image folder -> rosbag2 (mcap or sqlite3), so any recording becomes an evaluation bag.

Frames are stamped at ``start + i / rate`` (a video's own rate by default) with one frame_id,
and written as ``sensor_msgs/Image`` (``raw``) or ``sensor_msgs/CompressedImage`` (``jpeg``,
``png``, in compressed_image_transport's format string), logged at their stamps. JPEG and PNG
files of a folder that already are in the requested format go in byte for byte (format
``jpeg`` or ``png``, as cv_bridge writes it), so a bag made from an image dataset decodes to
exactly the dataset's pixels; ``quality`` forces re-encoding. Corrupt images of a folder are
skipped and counted. The bag is written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import re
import shutil
import tempfile
from typing import Any

import numpy as np

from sparse_perception.output_files import (interrupts_held, missing_folders, nearest_existing,
                                            remove_empty, staging_leftovers)
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.sources import (
    check_apart, COMPRESSED, DEFAULT_FRAME_ID, FrameRange, IMAGE, open_source, ros_header,
    SkippedFrame)

FORMATS = ('jpeg', 'png', 'raw')
RAW_ENCODINGS = ('rgb8', 'bgr8', 'mono8')


@dataclass
class MakeBagResult:
    """What make-bag wrote."""

    path: Path
    topic: str
    msgtype: str
    frames: int
    skipped: list[SkippedFrame] = field(default_factory=list)
    rate_hz: float = 0.0


def default_topic(fmt: str) -> str:
    """image_transport's topic names: raw images, or the ``compressed`` transport."""
    return '/camera/image_raw' if fmt == 'raw' else '/camera/image_raw/compressed'


def make_bag(input_path: str | Path, output: str | Path, *, rate: float | None = None,
             storage: str = 'mcap', fmt: str = 'jpeg', topic: str | None = None,
             frame_id: str = DEFAULT_FRAME_ID, quality: int | None = None,
             encoding: str | None = None, start_ns: int = 0, frames: FrameRange = FrameRange(),
             overwrite: bool = False) -> MakeBagResult:
    """Write the frames of a video or image folder into a new rosbag2 folder ``output``."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import get_typestore, Stores

    from sparse_perception.media.images import (
        convert_encoding, numpy_to_compressed, numpy_to_image)
    from sparse_perception.replay.outbag import BAG_VERSION, storage_plugin

    if fmt not in FORMATS:
        raise ReplayError(f'format {fmt!r} is not one of {", ".join(FORMATS)}')
    # Options that the format would ignore are refused: the bag would not be what was asked.
    if fmt != 'raw' and encoding is not None:
        raise ReplayError(f'an encoding applies to raw Images; {fmt} images are stored in '
                          'colour as cv_bridge writes them')
    if fmt == 'raw' and quality is not None:
        raise ReplayError('a quality applies to jpeg and png; raw Images are not compressed')
    encoding = encoding or 'rgb8'
    if fmt == 'raw' and encoding not in RAW_ENCODINGS:
        raise ReplayError(f'encoding {encoding!r} is not one of {", ".join(RAW_ENCODINGS)}')
    try:
        frame_id.encode('utf-8')
    except UnicodeEncodeError:  # a ROS string is UTF-8
        raise ReplayError(f'frame_id {frame_id.encode("utf-8", "backslashreplace").decode()} '
                          'is not UTF-8 text') from None
    if not frame_id:
        raise ReplayError("an empty frame_id names no TF frame; give the camera's frame "
                          '(default: camera)')
    if storage not in ('mcap', 'sqlite3'):
        raise ReplayError(f'storage {storage!r} is not mcap or sqlite3')
    output = Path(output)
    # Before anything else: --overwrite must never remove the input.
    check_apart(output, [input_path], 'output')
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise ReplayError(f'{output} exists already; choose another name or pass --overwrite')
    existing = nearest_existing(output.parent)
    if existing.exists() and not existing.is_dir():
        raise ReplayError(f'{output} lies under the file {existing}; expected a folder')
    if overwrite and (output.exists() or output.is_symlink()):
        _check_replaceable(output)
    if topic is not None:
        check_topic_name(topic, '--topic')
    topic = topic or default_topic(fmt)
    msgtype = IMAGE if fmt == 'raw' else COMPRESSED
    source = open_source(input_path, rate=rate, frames=frames, start_ns=start_ns,
                         frame_id=frame_id)
    if source.kind not in ('video', 'folder'):
        source.close()
        raise ReplayError(f'{input_path} is already a bag; make-bag reads videos and image '
                          'folders (convert bags with `ros2 bag convert`)')
    store = get_typestore(Stores.LATEST)
    # Folders made for the bag, deepest first: a run that writes no bag removes them again.
    made = missing_folders(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{output.name}.partial-', dir=output.parent))
    except OSError as exc:
        source.close()
        remove_empty(made)
        raise ReplayError(f'cannot write the bag {output} into {output.parent}: '
                          f'{exc.strerror or exc}') from None
    result = MakeBagResult(output, topic, msgtype, 0, rate_hz=source.rate_hz)
    done = False
    try:
        # Written under the final folder name: rosbag2 names the storage file after it.
        with source, Writer(staging / output.name, version=BAG_VERSION,
                            storage_plugin=storage_plugin(storage)) as writer:
            connection = writer.add_connection(topic, msgtype, typestore=store)
            for item in source:
                if isinstance(item, SkippedFrame):
                    result.skipped.append(item)
                    continue
                header = ros_header(store, item.stamp_ns, item.frame_id)
                original = _original_data(source, item.name, fmt, quality)
                if original is not None:
                    msg: Any = store.types[COMPRESSED](header=header, format=fmt, data=original)
                elif fmt == 'raw':
                    pixels = convert_encoding(item.image, 'rgb8', encoding)
                    msg = numpy_to_image(pixels, encoding, header, msg_type=store.types[IMAGE])
                else:
                    msg = numpy_to_compressed(item.image, fmt, header,
                                              msg_type=store.types[COMPRESSED],
                                              encoding='rgb8', quality=quality)
                writer.write(connection, item.stamp_ns, store.serialize_cdr(msg, msgtype))
                result.frames += 1
        if result.frames == 0:
            raise ReplayError(f'{input_path}: no frame could be read'
                              + (f' ({len(result.skipped)} corrupt)' if result.skipped
                                 else f' in the frame range {frames}'))
        _put_in_place(staging / output.name, output, staging)
        done = True
        return result
    finally:
        # Also after a first Ctrl-C: a second one must not leave part of the folder behind.
        # (An old bag replaced goes with it; a large one holds Ctrl-C back for that long.)
        with interrupts_held():
            shutil.rmtree(staging, ignore_errors=True)
            if not done:
                remove_empty(made)


def _put_in_place(bag: Path, output: Path, staging: Path) -> None:
    """
    Rename the finished ``bag`` to ``output``; an older one there moves into ``staging``.

    Two renames with interrupts held: ``output`` is always the old bag or the new one (were
    the old one removed first, a Ctrl-C in between would lose both).
    """
    with interrupts_held():
        old = None
        if output.exists() or output.is_symlink():
            old = staging / f'{output.name}.replaced'
            os.replace(output, old)
        try:
            os.replace(bag, output)
        except OSError:
            if old is not None:
                os.replace(old, output)
            raise


def leftovers(output: str | Path) -> list[Path]:
    """Return the staging folders of ``output`` that runs killed outright left behind."""
    output = Path(output)
    return staging_leftovers(output.parent, f'.{output.name}.partial-*')


# ROS 2 topic names (rcl's validation): '/'-separated tokens of letters, digits and
# underscores, none starting with a digit, no empty token, no trailing '/'.
_TOPIC = re.compile(r'^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')


def check_topic_name(name: str, what: str) -> None:
    """Raise ReplayError unless ``name`` is a valid fully qualified or relative topic name."""
    if not _TOPIC.match(name):
        raise ReplayError(
            f'{what} {name!r} is not a valid ROS topic name; expected /-separated tokens of '
            'letters, digits and underscores, none starting with a digit '
            '(e.g. /camera/image_raw)')


def _original_data(source: Any, name: str, fmt: str, quality: int | None) -> Any:
    """Return an image file's bytes to store as they are, or None when it must be encoded."""
    from sparse_perception.media.images import sniff_codec

    if source.kind != 'folder' or fmt == 'raw' or quality is not None or not name:
        return None
    # The bytes decide, not the file's name: PNG data in a .jpg file, labelled jpeg, would be
    # refused by the replay and by image_transport's decoders. Their first bytes tell, so a
    # file that is encoded anew is not read a second time whole.
    with open(source.path / name, 'rb') as stream:
        if sniff_codec(np.frombuffer(stream.read(8), np.uint8)) != fmt:
            return None
        stream.seek(0)
        return np.frombuffer(stream.read(), np.uint8)


def _check_replaceable(output: Path) -> None:
    """
    Refuse to let --overwrite remove what is not an earlier bag (before any frame is read).

    It replaces a bag folder (one with metadata.yaml) or a file; never the working folder
    or one holding it, never a folder of other things, and never through a symbolic link.
    """
    if output.is_symlink():
        raise ReplayError(f'{output} is a symbolic link; --overwrite replaces a bag itself: '
                          'give the folder it points to, or another name')
    here = Path.cwd().resolve()
    resolved = output.resolve()
    if resolved == here or resolved in here.parents:
        raise ReplayError(f'{output} is the working folder or holds it; choose a new name for '
                          'the bag')
    if resolved.is_dir() and any(resolved.iterdir()) \
            and not (resolved / 'metadata.yaml').is_file():
        raise ReplayError(f'{output} is a folder that is not a rosbag2 (no metadata.yaml); '
                          '--overwrite replaces a bag only: choose another name or remove it')
