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
Frame sources for the replay: rosbag2 (mcap, sqlite3), ROS 1 bags, video files, image folders.

Every source yields, in order, a :class:`Frame` (RGB pixels with the input's stamp and
frame_id) or a :class:`SkippedFrame` (a frame whose data is corrupt: it is counted and reported,
and the run goes on). Input that cannot be replayed at all (a missing path, an unknown storage
format, a truncated bag, a topic that is not there, an encoding this package does not read)
raises :class:`~sparse_perception.replay.errors.ReplayError` with a one-line message.

Bags are read with rosbags' ``AnyReader``; images are decoded by
:mod:`sparse_perception.media.images` (so bags decode exactly as the nodes decode live topics);
videos and image folders need OpenCV and get stamps synthesised from a frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
from pathlib import Path
import re
from typing import Any, Iterator, Sequence

import numpy as np

from sparse_perception.media.images import (
    compressed_to_numpy, convert_encoding, decoded_encoding, image_to_numpy,
    ImageConversionError, parse_compressed_format)
from sparse_perception.replay.errors import ReplayError

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED)
STORAGES = ('mcap', 'sqlite3')
VIDEO_SUFFIXES = ('.avi', '.mp4', '.mkv', '.mov', '.webm', '.mpg', '.mpeg', '.m4v', '.wmv')
# Decoded by sparse_perception.media.images (JPEG/PNG, with truncation checks) ...
_COMPRESSED_SUFFIXES = ('.png', '.jpg', '.jpeg')
# ... and by OpenCV directly.
_OTHER_IMAGE_SUFFIXES = ('.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
IMAGE_SUFFIXES = _COMPRESSED_SUFFIXES + _OTHER_IMAGE_SUFFIXES
# Topic that frames of videos and image folders get in an output bag.
DEFAULT_TOPIC = '/camera/image_raw/compressed'
DEFAULT_FRAME_ID = 'camera'
_SUPPORTED_KINDS = ('a rosbag2 folder (mcap or sqlite3), a ROS 1 .bag file, a video file '
                    f'({", ".join(VIDEO_SUFFIXES)}) or a folder of images '
                    f'({", ".join(IMAGE_SUFFIXES)})')


@dataclass(frozen=True)
class InputMessage:
    """An input image as it goes into an output bag: ROS 2 type name and CDR bytes."""

    msgtype: str
    data: bytes


@dataclass(frozen=True)
class Frame:
    """One decoded input frame."""

    index: int  # position in the source, from 0; corrupt frames count too
    image: np.ndarray  # (H, W, 3) uint8 RGB
    stamp_ns: int  # header stamp (bags) or synthesised from the rate (videos, folders)
    frame_id: str
    log_time_ns: int  # when the bag recorded it (the stamp for videos and folders)
    name: str = ''  # file name in an image folder, '' otherwise
    message: InputMessage | None = None  # for the output bag, when the source keeps them


@dataclass(frozen=True)
class SkippedFrame:
    """A frame whose data is corrupt: counted, reported, not processed."""

    index: int
    stamp_ns: int | None  # None when not even the header could be read
    reason: str


@dataclass(frozen=True)
class FrameRange:
    """Which frames of a source to replay, as a Python slice of frame indices (no negatives)."""

    start: int = 0
    stop: int | None = None  # exclusive; None = to the end
    step: int = 1

    @classmethod
    def parse(cls, text: str) -> 'FrameRange':
        """Parse ``START:STOP[:STEP]`` (each part optional, e.g. ``10:``, ``:50``, ``::2``)."""
        parts = text.split(':')
        if not 1 <= len(parts) <= 3 or (len(parts) == 1 and not parts[0].strip()):
            raise ReplayError(f'frame range {text!r} is not START:STOP[:STEP] (e.g. 0:100)')
        try:
            values = [int(p) if p.strip() else None for p in parts]
        except ValueError:
            raise ReplayError(
                f'frame range {text!r} is not START:STOP[:STEP] of whole numbers '
                '(e.g. 0:100 or 10:50:2)') from None
        if len(parts) == 1:  # a single index: that frame only
            values = [values[0], values[0] + 1]
        start, stop, step = (values + [None, None])[:3]
        result = cls(start or 0, stop, 1 if step is None else step)
        if result.start < 0 or (result.stop is not None and result.stop <= result.start) \
                or result.step < 1:
            raise ReplayError(
                f'frame range {text!r} selects no frames; expected 0 <= START < STOP and '
                'STEP >= 1')
        return result

    def wants(self, index: int) -> bool:
        """Whether frame ``index`` is in the range."""
        return index >= self.start and (index - self.start) % self.step == 0 and not self.past(
            index)

    def past(self, index: int) -> bool:
        """Whether ``index`` and every later frame are beyond the range."""
        return self.stop is not None and index >= self.stop

    def count(self, length: int | None) -> int | None:
        """How many frames the range selects from a source of ``length`` frames."""
        if length is None:
            return None
        end = length if self.stop is None else min(length, self.stop)
        return max(0, -(-(end - self.start) // self.step))

    def __str__(self) -> str:
        stop = '' if self.stop is None else self.stop
        return f'{self.start}:{stop}' + (f':{self.step}' if self.step != 1 else '')


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def _typestore():
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.LATEST)


class FrameSource:
    """Base of every source: a context manager and an iterator of frames in the range."""

    kind = ''  # 'rosbag2', 'rosbag1', 'video' or 'folder'
    index_note: str | None = None  # what a bag's index got wrong, once read (see BagSource)

    def __init__(self, path: Path, frames: FrameRange):
        self.path = path
        self.frames = frames
        self.topic = DEFAULT_TOPIC  # the input topic (bags) or the one an output bag uses
        self.msgtype = COMPRESSED
        self.rate_hz: float | None = None  # videos and folders
        self.length: int | None = None  # frames in the whole source, when known
        self.storage = ''  # rosbag2 storage plugin

    def __enter__(self) -> 'FrameSource':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release files and decoders."""

    def __iter__(self) -> Iterator[Frame | SkippedFrame]:
        raise NotImplementedError

    @property
    def expected_frames(self) -> int | None:
        """How many frames the range selects, when the source length is known."""
        return self.frames.count(self.length)

    def describe(self) -> dict[str, Any]:
        """Describe the input for the report."""
        info: dict[str, Any] = {'path': str(self.path), 'kind': self.kind, 'topic': self.topic,
                                'msgtype': self.msgtype, 'frame_range': str(self.frames)}
        if self.storage:
            info['storage'] = self.storage
        if self.rate_hz is not None:
            info['rate_hz'] = self.rate_hz
        if self.length is not None:
            info['length'] = self.length
        return info


# ---------------------------------------------------------------------------------------------
# Bags
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _check_raw_encoding(encoding: str) -> None:
    """Raise ReplayError when raw images of ``encoding`` cannot become RGB (fatal, not skipped)."""
    from sparse_perception.media.images import encoding_info
    try:
        info = encoding_info(encoding)
        shape = (1, 1) if info.channels == 1 else (1, 1, info.channels)
        convert_encoding(np.zeros(shape, info.dtype), encoding, 'rgb8')
    except ImageConversionError as exc:
        raise ReplayError(f'image encoding {encoding!r} cannot be replayed: {exc}') from None


def _check_compressed_format(fmt: str) -> None:
    try:
        parse_compressed_format(fmt)
    except ImageConversionError as exc:
        raise ReplayError(f'compressed image format cannot be replayed: {exc}') from None


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class BagSource(FrameSource):
    """Images from one topic of a rosbag2 folder (mcap or sqlite3) or a ROS 1 ``.bag`` file."""

    def __init__(self, path: Path, frames: FrameRange, topic: str | None = None,
                 keep_messages: bool = False):
        super().__init__(path, frames)
        # A rosbag2 recording is a folder, whatever its name ends with.
        self.kind = 'rosbag2' if path.is_dir() else 'rosbag1'
        self.keep_messages = keep_messages
        self._reader = None
        self._unlink: Any = None  # removes the link folder below, once (close, or collected)
        opened = path
        if self.kind == 'rosbag2':
            self.storage = _rosbag2_storage(path)
            if path.suffix == '.bag':
                # rosbags takes any path ending in .bag for a ROS 1 file: open the folder
                # through a link named otherwise.
                import shutil
                import tempfile
                import weakref

                folder = tempfile.mkdtemp(prefix='sparse-perception-bag-')
                # (rmtree removes the link, not the bag it points to.)
                self._unlink = weakref.finalize(self, shutil.rmtree, folder, True)
                opened = Path(folder) / 'rosbag2'
                opened.symlink_to(path.resolve(), target_is_directory=True)
        from rosbags.highlevel import AnyReader
        try:
            self._reader = AnyReader([opened], default_typestore=_typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several kinds for broken bags
            self.close()
            raise ReplayError(f'{path}: cannot open the bag (truncated or corrupt?): '
                              f'{_one_line(exc).replace(str(opened), str(path))}') from None
        try:
            self._check_index()
            self._connections = self._select(topic)
        except ReplayError:
            self.close()
            raise
        self.topic = self._connections[0].topic
        self.msgtype = self._connections[0].msgtype
        self.length = sum(c.msgcount for c in self._connections)
        self.index_length: int | None = None  # what the index said, where it undercounted
        self._output_typestore = _typestore() if keep_messages and self.kind == 'rosbag1' \
            else None

    def _check_index(self) -> None:
        """Refuse an index whose topics are not named and counted (an edited metadata.yaml)."""
        for c in self._reader.connections:
            count = c.msgcount
            if not (isinstance(c.topic, str) and isinstance(c.msgtype, str)
                    and isinstance(count, int) and not isinstance(count, bool) and count >= 0):
                raise ReplayError(
                    f'{self.path}: the bag index is corrupt: a topic {c.topic!r} of type '
                    f'{c.msgtype!r} with {count!r} messages'[:300]
                    + (' (metadata.yaml)' if self.kind == 'rosbag2' else ''))

    def _select(self, topic: str | None) -> list:
        connections = self._reader.connections
        images = sorted({c.topic for c in connections if c.msgtype in IMAGE_TYPES})
        listing = ', '.join(images) if images else 'none'
        if topic is None:
            if len(images) == 1:
                topic = images[0]
            elif not images:
                every = ', '.join(sorted(f'{c.topic} ({c.msgtype})' for c in connections))
                raise ReplayError(
                    f'{self.path} has no sensor_msgs Image or CompressedImage topic '
                    f'(topics: {every or "none"})')
            else:
                raise ReplayError(
                    f'{self.path} has several image topics: {listing}; choose one with --topic')
        chosen = [c for c in connections if c.topic == topic]
        if not chosen:
            raise ReplayError(f'topic {topic!r} is not in {self.path}; image topics: {listing}')
        wrong = sorted({c.msgtype for c in chosen if c.msgtype not in IMAGE_TYPES})
        if wrong:
            raise ReplayError(
                f'topic {topic!r} carries {", ".join(wrong)}, not sensor_msgs Image or '
                f'CompressedImage; image topics: {listing}')
        types = sorted({c.msgtype for c in chosen})
        if len(types) > 1:  # not a ROS topic's recording: a topic has one type
            raise ReplayError(f'topic {topic!r} in {self.path} carries both '
                              f'{" and ".join(types)}; a ROS topic has one message type: is '
                              'this a merged bag?')
        return chosen

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.index_length is not None:
            info['index_length'] = self.index_length
        return info

    @property
    def index_note(self) -> str | None:
        """Say where the bag's index counted fewer messages than the storage held."""
        if self.index_length is None:
            return None
        return (f'{self.path}: its index (metadata.yaml) lists {self.index_length} messages on '
                f'{self.topic}, but the storage holds more ({self.length} read); the index '
                'does not describe this storage')

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # never opened (a broken bag): nothing to close
                pass
            self._reader = None
        if self._unlink is not None:
            self._unlink()

    def __iter__(self) -> Iterator[Frame | SkippedFrame]:
        index = -1
        messages = self._reader.messages(connections=self._connections)
        while True:
            try:
                item = next(messages, None)
            except Exception as exc:
                raise ReplayError(
                    f'{self.path}: the bag is corrupt: reading message {index + 2} of '
                    f'{self.topic} failed: {_one_line(exc)}') from None
            if item is None:
                break
            index += 1
            if index >= self.length:
                # The index undercounts (an edited metadata.yaml): the messages are read all
                # the same; the report counts them and says what the index claimed.
                if self.index_length is None:
                    self.index_length = self.length
                self.length = index + 1
            if self.frames.past(index):
                return  # stopped early on purpose: no completeness check
            if not self.frames.wants(index):
                continue
            connection, log_time, raw = item
            yield self._decode(index, connection.msgtype, log_time, raw)
        read = index + 1
        if read < self.length:
            raise ReplayError(
                f'{self.path}: its index lists {self.length} messages on {self.topic} but '
                f'only {read} could be read: the storage is truncated or corrupt, or the '
                'index (metadata.yaml) does not describe this storage')

    def _decode(self, index: int, msgtype: str, log_time: int, raw: Any) -> Frame | SkippedFrame:
        from sparse_perception.media.images import default_max_pixels  # read when called
        try:
            msg = self._reader.deserialize(raw, msgtype)
        except Exception as exc:
            return SkippedFrame(index, None, f'cannot deserialize {msgtype}: {_one_line(exc)}')
        stamp = _stamp_ns(msg)
        try:
            if msgtype == IMAGE:
                _check_raw_encoding(msg.encoding)
                image = image_to_numpy(msg, 'rgb8', max_pixels=default_max_pixels())
            else:
                _check_compressed_format(msg.format)
                image = compressed_to_numpy(msg, 'rgb8')
        except (ImageConversionError, ReplayError) as exc:
            # One frame in an encoding or format that cannot be read is skipped like a corrupt
            # one; a topic where every frame is so fails with the reasons listed.
            return SkippedFrame(index, stamp, _one_line(exc))
        message = None
        if self.keep_messages:
            message = InputMessage(msgtype, self._cdr(msg, msgtype, raw))
        return Frame(index, image, stamp, str(msg.header.frame_id), int(log_time),
                     message=message)

    def _cdr(self, msg: Any, msgtype: str, raw: Any) -> bytes:
        if self.kind == 'rosbag2':
            return bytes(raw)  # byte for byte what was recorded
        # ROS 1: the same fields in a ROS 2 message (a ROS 2 header has no seq).
        store = self._output_typestore
        Header = store.types['std_msgs/msg/Header']
        Time = store.types['builtin_interfaces/msg/Time']
        header = Header(stamp=Time(sec=int(msg.header.stamp.sec),
                                   nanosec=int(msg.header.stamp.nanosec)),
                        frame_id=str(msg.header.frame_id))
        if msgtype == IMAGE:
            out = store.types[IMAGE](
                header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                is_bigendian=msg.is_bigendian, step=msg.step, data=msg.data)
        else:
            out = store.types[COMPRESSED](header=header, format=msg.format, data=msg.data)
        return bytes(store.serialize_cdr(out, msgtype))


def _rosbag2_storage(path: Path) -> str:
    """Read the storage plugin from metadata.yaml; unknown ones are a clear error."""
    import yaml
    try:
        document = yaml.safe_load((path / 'metadata.yaml').read_text(encoding='utf-8'))
        storage = document['rosbag2_bagfile_information']['storage_identifier']
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError) as exc:
        # ValueError: not UTF-8, or a scalar out of range (a date, an integer of 5000 digits)
        raise ReplayError(f'{path}/metadata.yaml is not rosbag2 metadata: '
                          f'{_one_line(exc)}') from None
    if storage not in STORAGES:
        raise ReplayError(
            f'{path} uses the storage format {storage!r}, which cannot be read; supported: '
            f'{", ".join(STORAGES)} (convert with `ros2 bag convert`)')
    return storage


# ---------------------------------------------------------------------------------------------
# Videos and image folders
# ---------------------------------------------------------------------------------------------

def _cv2():
    try:
        import cv2
    except ImportError:
        raise ReplayError(
            'videos and image folders need OpenCV: on a robot `apt install python3-opencv`, '
            "with pip `pip install 'sparse_perception[opencv]'`") from None
    return cv2


# A synthesised rate gives frame i the stamp i / rate: at most 1 MHz keeps stamps a microsecond
# apart (no two equal), and at least 1 mHz keeps thousands of frames in a ROS stamp's seconds.
MIN_RATE_HZ, MAX_RATE_HZ = 1e-3, 1e6


class _Synthesised(FrameSource):
    """Stamps from a frame rate: frame i at ``start_ns + i / rate``."""

    def __init__(self, path: Path, frames: FrameRange, rate: float, start_ns: int,
                 frame_id: str, keep_messages: bool):
        super().__init__(path, frames)
        if not rate > 0 or rate != rate or rate == float('inf'):
            raise ReplayError(f'frame rate {rate!r} Hz is not a positive number')
        if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
            raise ReplayError(f'frame rate {rate!r} Hz is out of range; expected '
                              f'{MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} Hz')
        self.rate_hz = float(rate)
        self.start_ns = int(start_ns)
        self.frame_id = frame_id
        self.keep_messages = keep_messages
        self._typestore = _typestore() if keep_messages else None

    def stamp(self, index: int) -> int:
        """Stamp of frame ``index`` in nanoseconds."""
        return self.start_ns + round(index * 1e9 / self.rate_hz)

    def _frame(self, index: int, image: np.ndarray, name: str = '') -> Frame:
        stamp = self.stamp(index)
        message = None
        if self.keep_messages:
            message = InputMessage(COMPRESSED, encode_compressed(
                image, stamp, self.frame_id, self._typestore))
        return Frame(index, image, stamp, self.frame_id, stamp, name, message)


def encode_compressed(image: np.ndarray, stamp_ns: int, frame_id: str, typestore: Any,
                      fmt: str = 'jpeg', quality: int | None = 95) -> bytes:
    """RGB frame -> CDR bytes of a sensor_msgs/CompressedImage (image_transport's format)."""
    from sparse_perception.media.images import numpy_to_compressed
    msg = numpy_to_compressed(image, fmt, ros_header(typestore, stamp_ns, frame_id),
                              msg_type=typestore.types[COMPRESSED], encoding='rgb8',
                              quality=quality)
    return bytes(typestore.serialize_cdr(msg, COMPRESSED))


# builtin_interfaces/Time keeps whole seconds in an int32: the last stamp a message can hold.
MAX_STAMP_NS = (2 ** 31 - 1) * 1_000_000_000


def ros_header(typestore: Any, stamp_ns: int, frame_id: str) -> Any:
    """Return a std_msgs/Header of ``typestore`` with the given stamp and frame."""
    if not 0 <= stamp_ns <= MAX_STAMP_NS:
        raise ReplayError(
            f'stamp {stamp_ns / 1e9:.9g} s is outside what a ROS stamp holds (0 to 2**31 - 1 '
            'seconds since the epoch, until 2038); choose an earlier start time')
    Header = typestore.types['std_msgs/msg/Header']
    Time = typestore.types['builtin_interfaces/msg/Time']
    return Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                  frame_id=frame_id)


class VideoSource(_Synthesised):
    """Frames of a video file decoded by OpenCV (FFmpeg)."""

    kind = 'video'

    def __init__(self, path: Path, frames: FrameRange, rate: float | None = None,
                 start_ns: int = 0, frame_id: str = DEFAULT_FRAME_ID,
                 keep_messages: bool = False):
        from sparse_perception.media.images import native_stderr_of, pass_on_stderr

        cv2 = _cv2()
        # One decoding thread: a damage report printed during a read then belongs to the
        # frame that read returns (frame threading would print it frames later).
        capture, said = native_stderr_of(lambda: cv2.VideoCapture(
            str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1]))
        if not capture.isOpened():
            said = _one_line(RuntimeError(_FFMPEG_LINE.sub('', said)))
            raise ReplayError(f'{path}: OpenCV cannot open this video (corrupt, or a codec '
                              'its FFmpeg lacks); convert it, e.g. to MJPEG or H.264'
                              + (f'; the decoder says: {said}' if said != 'RuntimeError'
                                 else ''))
        # What FFmpeg said on opening (a broken header) goes into the reasons of frames lost.
        self._opening_notes = _decoder_lines(said)
        pass_on_stderr([line for line in said.splitlines(keepends=True)
                        if not _FFMPEG_LINE.match(line)])
        if rate is None:
            rate = capture.get(cv2.CAP_PROP_FPS)
            if not rate or rate != rate or rate <= 0 or rate > 1000:
                capture.release()
                raise ReplayError(f'{path}: the video states no usable frame rate ({rate!r}); '
                                  'pass --rate HZ')
        try:
            super().__init__(path, frames, rate, start_ns, frame_id, keep_messages)
        except ReplayError:
            capture.release()
            raise
        self._capture = capture
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if count > 0 else None
        # A container may hold slots that repeat the frame before (an AVI's empty chunks):
        # the header counts them, the decoder skips them. Each frame's presentation time says
        # which slot it fills, so that stamps keep the video's timing and the frames after the
        # last decoded one are not taken for lost ones. (-1: no usable timing.)
        native = capture.get(cv2.CAP_PROP_FPS)
        self._native_fps = native if native and 0 < native <= 1000 else -1.0
        self._skipped_slots = 0  # slots before the frame just read that held no frame
        self._origin_ms: float | None = None  # the first frame's presentation time
        from sparse_perception.media.images import default_max_pixels
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > default_max_pixels():
            self.close()
            raise ReplayError(
                f'{path}: frames of {width}x{height} (width x height) are more than the limit '
                f'of {default_max_pixels() / 1e6:g} megapixels (input.max_megapixels)')

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __iter__(self) -> Iterator[Frame | SkippedFrame]:
        index = -1
        damaged = None  # the damaged frame later frames are predicted from, if any
        while True:
            index += 1
            if self.frames.past(index):
                return
            wanted = self.frames.wants(index)
            ok, bgr, damage, intra = self._read(wanted)
            if not ok:
                yield from self._lost(index, damage or self._opening_notes)
                return
            self._place(index)
            if damage:
                damaged = index
            elif intra:
                damaged = None
            if not wanted:
                continue
            if damage:
                # FFmpeg conceals damage and returns a picture anyway: wrong pixels.
                yield SkippedFrame(index, self.stamp(index),
                                   f'the video decoder reports damaged data: {damage}')
            elif damaged is not None:
                yield SkippedFrame(index, self.stamp(index),
                                   f'predicted from the damaged frame {damaged} (no key frame '
                                   'since)')
            else:
                yield self._frame(index, np.ascontiguousarray(bgr[..., ::-1]))

    def stamp(self, index: int) -> int:
        """Stamp of frame ``index``: its slot in the video (see ``_skipped_slots``) / rate."""
        return super().stamp(index + self._skipped_slots)

    def _place(self, index: int) -> None:
        """Note which slot the frame just read fills, from its presentation time."""
        if self._native_fps <= 0:
            return
        shown = self._capture.get(_cv2().CAP_PROP_POS_MSEC)
        if self._origin_ms is None:  # (a video's first time need not be 0: MP4 edit lists)
            self._origin_ms = shown
        slot = round((shown - self._origin_ms) * self._native_fps / 1000)
        self._skipped_slots = max(self._skipped_slots, slot - index)

    def _read(self, wanted: bool) -> tuple[bool, Any, str, bool]:
        """Decode the next frame: (ok, BGR image or None, damage reported, a key frame)."""
        from sparse_perception.media.images import native_stderr_of, pass_on_stderr

        cv2 = _cv2()
        capture = self._capture

        def read():
            try:
                return capture.read() if wanted else (capture.grab(), None)
            except cv2.error as exc:
                return False, _one_line(exc)
        (ok, bgr), said = native_stderr_of(read)
        lines = said.splitlines(keepends=True)
        pass_on_stderr([line for line in lines if not _FFMPEG_LINE.match(line)])
        damage = _decoder_lines(said)
        if isinstance(bgr, str):  # OpenCV's own error
            damage, bgr = f'{damage} {bgr}'.strip(), None
        # I-frames (and frames of an unknown type: intra-only codecs may say nothing) start
        # afresh; P and B frames are predicted from the frames before them.
        kind = capture.get(cv2.CAP_PROP_FRAME_TYPE) if ok else 0
        return ok, bgr, damage, kind not in (ord('P'), ord('B'), ord('S'))

    def _lost(self, index: int, why: str) -> Iterator[SkippedFrame]:
        """Frames the header promises from ``index`` on that cannot be read: skipped, counted."""
        slots = self.length
        frames = None if slots is None else slots - self._skipped_slots  # the slots' frames
        if frames is None or index >= frames:
            if frames is not None:
                self.length = index  # every frame read: the header counted empty slots too
            return  # the end of a video of unknown length, or the whole video read
        reason = (f'the video ends after frame {index - 1} of the {frames} its header '
                  f'states (truncated or corrupt file){": " + why if why else ""}')
        for lost in range(index, frames):
            if self.frames.past(lost):
                return
            if self.frames.wants(lost):
                yield SkippedFrame(lost, self.stamp(lost), reason)


# FFmpeg's log lines: '[mjpeg @ 0x55d0c2a1f4c0] huffman table decode error'.
_FFMPEG_LINE = re.compile(r'\[[\w,.-]+ @ (0x)?[0-9a-fA-F]+\] ')


def _decoder_lines(text: str) -> str:
    """Return FFmpeg's messages in captured stderr on one line, without their prefixes."""
    found = [_FFMPEG_LINE.sub('', line).strip() for line in text.splitlines()
             if _FFMPEG_LINE.match(line)]
    return _one_line(RuntimeError('; '.join(dict.fromkeys(found)))) if found else ''


class FolderSource(_Synthesised):
    """Image files of a folder in natural order (``2.png`` before ``10.png``)."""

    kind = 'folder'

    def __init__(self, path: Path, frames: FrameRange, rate: float | None = None,
                 start_ns: int = 0, frame_id: str = DEFAULT_FRAME_ID,
                 keep_messages: bool = False):
        if rate is None:
            raise ReplayError(f'{path} is an image folder, which has no frame rate: pass '
                              '--rate HZ (it sets the stamps)')
        super().__init__(path, frames, rate, start_ns, frame_id, keep_messages)
        self.files = image_files(path)
        self.length = len(self.files)

    def __iter__(self) -> Iterator[Frame | SkippedFrame]:
        for index, file in enumerate(self.files):
            if self.frames.past(index):
                return
            if not self.frames.wants(index):
                continue
            try:
                image = read_image(file)
            except (ImageConversionError, OSError) as exc:
                yield SkippedFrame(index, self.stamp(index), f'{file.name}: {_one_line(exc)}')
                continue
            yield self._frame(index, image, file.name)


def image_files(folder: Path) -> list[Path]:
    """Return the image files of ``folder`` in natural order."""
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class _Blob:
    """A file's bytes dressed as a CompressedImage (format sniffed from the data)."""

    data: np.ndarray
    format: str = ''  # noqa: A003 (the CompressedImage field name)


def encoded_file(path: Path) -> Any:
    """Return a JPEG or PNG file's bytes dressed as a CompressedImage message."""
    return _Blob(np.fromfile(path, np.uint8))


def _header_size(data: bytes) -> tuple[int, int]:
    """Width and height from a BMP, PNM, TIFF or WebP header; ImageConversionError if unread."""
    import struct
    try:
        if data[:2] == b'BM':
            if struct.unpack_from('<I', data, 14)[0] == 12:  # the old OS/2 header
                return struct.unpack_from('<HH', data, 18)
            width, height = struct.unpack_from('<ii', data, 18)
            return abs(width), abs(height)  # a negative height means top-down rows
        if data[:1] == b'P' and data[1:2] in b'123456':
            text = re.sub(rb'#[^\n]*', b' ', data[2:256])
            width, height = (int(t) for t in text.split()[:2])
            return width, height
        if data[:4] in (b'II*\0', b'MM\0*'):
            order = '<' if data[:2] == b'II' else '>'
            offset = struct.unpack_from(order + 'I', data, 4)[0]
            count = struct.unpack_from(order + 'H', data, offset)[0]
            found = {}
            for entry in range(count):
                tag, kind = struct.unpack_from(order + 'HH', data, offset + 2 + 12 * entry)
                if tag in (256, 257):
                    fmt = order + ('H' if kind == 3 else 'I')
                    found[tag] = struct.unpack_from(fmt, data, offset + 2 + 12 * entry + 8)[0]
            return found[256], found[257]
        if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
            chunk = data[12:16]
            if chunk == b'VP8 ':
                width, height = struct.unpack_from('<HH', data, 26)
                return width & 0x3FFF, height & 0x3FFF
            if chunk == b'VP8L':
                bits = struct.unpack_from('<I', data, 21)[0]
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b'VP8X':
                return (int.from_bytes(data[24:27], 'little') + 1,
                        int.from_bytes(data[27:30], 'little') + 1)
    except (struct.error, ValueError, KeyError, IndexError):
        pass
    raise ImageConversionError(
        f'the image header cannot be read (corrupt, or not BMP/PNM/TIFF/WebP): it starts with '
        f'{data[:8].hex(" ")}')


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; raises ImageConversionError if corrupt."""
    from sparse_perception.media.images import default_max_pixels

    data = np.fromfile(path, np.uint8)
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        return compressed_to_numpy(_Blob(data), 'rgb8')
    width, height = _header_size(data[:65536].tobytes())
    limit = default_max_pixels()
    if width * height > limit:
        raise ImageConversionError(
            f'the image is {width}x{height} (width x height), {width * height / 1e6:.1f} '
            f'megapixels, more than the limit of {limit / 1e6:g} (input.max_megapixels); '
            'refused before decoding')
    cv2 = _cv2()
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:
        raise ImageConversionError(
            f'OpenCV cannot decode the {data.size} bytes: {_one_line(exc)}') from None
    if image is None:
        raise ImageConversionError(f'OpenCV cannot decode the {data.size} bytes (corrupt?)')
    return np.ascontiguousarray(convert_encoding(image, decoded_encoding(image), 'rgb8'))


# ---------------------------------------------------------------------------------------------
# Opening any input
# ---------------------------------------------------------------------------------------------

BAG_KINDS = ('rosbag1', 'rosbag2')  # the kinds of input_kind that hold topics


def input_kind(path: Path) -> tuple[str, Path]:
    """
    Say what ``path`` is: ('rosbag2' | 'rosbag1' | 'video' | 'folder', path to open).

    A storage file or metadata.yaml inside a rosbag2 folder stands for the folder.
    """
    if not path.exists():
        raise ReplayError(f'{path}: no such file or folder; expected {_SUPPORTED_KINDS}')
    if path.is_dir():
        if (path / 'metadata.yaml').is_file():
            return 'rosbag2', path
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
            return 'folder', path
        if any(path.glob('*.mcap')) or any(path.glob('*.db3')):
            raise ReplayError(f'{path} holds bag storage files but no metadata.yaml; recreate '
                              'it with `ros2 bag reindex`')
        raise ReplayError(f'{path} is neither a rosbag2 folder (no metadata.yaml) nor a folder '
                          f'of images (no {", ".join(IMAGE_SUFFIXES)} files)')
    suffix = path.suffix.lower()
    if suffix == '.bag':
        return 'rosbag1', path
    if suffix in ('.mcap', '.db3') or path.name == 'metadata.yaml':
        if (path.parent / 'metadata.yaml').is_file():
            return 'rosbag2', path.parent
        raise ReplayError(f'{path} has no metadata.yaml beside it; rosbag2 files are read as '
                          'a folder: recreate the metadata with `ros2 bag reindex`')
    if suffix in VIDEO_SUFFIXES:
        return 'video', path
    raise ReplayError(f'{path}: unknown input kind {suffix or "(no suffix)"!r}; expected '
                      f'{_SUPPORTED_KINDS}')


def check_apart(output: str | Path, inputs: Sequence[str | Path], what: str) -> None:
    """
    Raise ReplayError when ``output`` is, contains or lies inside one of ``inputs``.

    Writing an output replaces or removes what is there: an output that overlaps an input
    would destroy or pollute it. Symbolic links are followed.
    """
    from sparse_perception.output_files import overlap

    reason = overlap(output, inputs)
    if reason is not None:
        raise ReplayError(f'{what} {reason}')


def open_source(path: str | Path, *, topic: str | None = None, rate: float | None = None,
                frames: FrameRange = FrameRange(), start_ns: int = 0,
                frame_id: str = DEFAULT_FRAME_ID, keep_messages: bool = False) -> FrameSource:
    """
    Open any supported input; use as a context manager.

    ``topic`` selects a bag's image topic (default: its only one); ``rate`` and ``start_ns``
    set the stamps of videos and image folders (a video's own rate by default);
    ``keep_messages`` attaches each frame's input message for an output bag.
    """
    kind, path = input_kind(Path(path))
    if kind in ('video', 'folder') and topic is not None:
        raise ReplayError(f'--topic applies to bags; {path} is a {kind}')
    if kind in BAG_KINDS:
        if rate is not None:
            raise ReplayError(f'--rate applies to videos and image folders; {path} is a bag '
                              'and keeps its own stamps')
        return BagSource(path, frames, topic, keep_messages)
    source = VideoSource if kind == 'video' else FolderSource
    return source(path, frames, rate, start_ns, frame_id, keep_messages)


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + '...'
