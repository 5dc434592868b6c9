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
Pictures of a replay for people: a contact sheet of annotated frames, an annotated video.

Both draw the incremental pipeline's mask, skeletons and changed tiles (on frames whose change
map measured them) with :mod:`sparse_perception.media.overlay`; both need OpenCV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.sources import Frame


def _annotate(frame: Frame, result: Any) -> np.ndarray:
    from sparse_perception.media.overlay import draw_result
    return draw_result(frame.image, result, show_change=True)


class ContactSheet:
    """
    Sink keeping up to ``tiles`` evenly spaced annotated thumbnails; written as one PNG.

    The length of the input is not always known in advance (``expected`` is a hint), so every
    ``stride``-th frame is kept and, when the sheet overflows, every other kept frame is
    dropped and the stride doubled: the kept frames stay evenly spaced.
    """

    def __init__(self, path: Path, tiles: int = 12, columns: int = 4, width: int = 320,
                 expected: int | None = None):
        self.path = Path(path)
        self.tiles = tiles
        self.columns = columns
        self.width = width
        # Knowing the length up front, draw only about the frames the sheet will show.
        self.stride = max(1, expected // tiles) if expected else 1
        self.seen = 0
        self.kept: list[tuple[int, float, np.ndarray]] = []

    def write(self, frame: Frame, result: Any) -> None:
        """Keep this frame when it falls on the stride."""
        position = self.seen
        self.seen += 1
        if position % self.stride:
            return
        import cv2
        picture = _annotate(frame, result)
        # Fit the thumbnail in width x 2 width: a tall, narrow frame (3000x2) must not make a
        # sheet of gigabytes.
        scale = min(self.width / picture.shape[1], 2 * self.width / picture.shape[0])
        size = (max(1, min(self.width, round(picture.shape[1] * scale))),
                max(1, min(2 * self.width, round(picture.shape[0] * scale))))
        thumb = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        self.kept.append((frame.index, float(result.stats.active_fraction), thumb))
        if len(self.kept) > 2 * self.tiles:
            self.kept = self.kept[::2]
            self.stride *= 2

    def close(self) -> None:
        """Write the sheet (nothing when no frame was kept); later calls do nothing."""
        if not self.kept:
            return
        import cv2
        chosen, self.kept = self.kept, []
        if len(chosen) > self.tiles:
            picks = np.linspace(0, len(chosen) - 1, self.tiles).round().astype(int)
            chosen = [chosen[i] for i in picks]
        height = max(t.shape[0] for _, _, t in chosen)
        rows = -(-len(chosen) // self.columns)
        sheet = np.full((rows * (height + 22), self.columns * self.width, 3), 255, np.uint8)
        for n, (index, active, thumb) in enumerate(chosen):
            top, left = (n // self.columns) * (height + 22), (n % self.columns) * self.width
            sheet[top:top + thumb.shape[0], left:left + thumb.shape[1]] = thumb
            cv2.putText(sheet, f'frame {index}  active {active:.3f}',
                        (left + 4, top + height + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 1, cv2.LINE_AA)
        # Encoded in memory and written by Python: a full disk is then an OSError naming the
        # file, not libpng's 'Write Error' line on stderr and a False.
        ok, encoded = cv2.imencode('.png', sheet[..., ::-1])
        if not ok:
            raise ReplayError(f'cannot encode the contact sheet {self.path}')
        self.path.write_bytes(encoded.tobytes())


class AnnotatedVideo:
    """
    Sink writing every annotated frame to an MP4 (mp4v).

    Videos and image folders play at their rate; a bag, which has none, at the rate of its
    first two stamps (10 Hz when it has a single frame).
    """

    def __init__(self, path: Path, rate_hz: float | None = None):
        self.path = Path(path)
        self.rate_hz = rate_hz
        self._writer = None
        self._first: tuple[np.ndarray, int] | None = None
        self.frames = 0

    def write(self, frame: Frame, result: Any) -> None:
        """Append one annotated frame (frames of another size are resized to the first)."""
        picture = _annotate(frame, result)
        if self._writer is None and self.rate_hz is None:
            if self._first is None:
                self._first = (picture, frame.stamp_ns)
                return
            step = (frame.stamp_ns - self._first[1]) / 1e9
            self.rate_hz = 1.0 / step if 0 < step < 10 else 10.0
        if self._first is not None:
            self._append(self._first[0])
            self._first = None
        self._append(picture)

    def _append(self, picture: np.ndarray) -> None:
        import cv2
        if self._writer is None:
            self.size = (picture.shape[1], picture.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'mp4v'),
                                           float(self.rate_hz or 10.0), self.size)
            if not self._writer.isOpened():
                raise ReplayError(f'OpenCV cannot write the video {self.path} (no mp4v '
                                  'encoder); run without --video')
        if (picture.shape[1], picture.shape[0]) != self.size:
            picture = cv2.resize(picture, self.size)
        # A failed write (a full disk) is only an OpenCV warning per frame on stderr; it is
        # found at close instead, from the file itself.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._writer.write(np.ascontiguousarray(picture[..., ::-1]))
        finally:
            cv2.utils.logging.setLogLevel(level)
        self.frames += 1

    def close(self) -> None:
        """Finish the file; ReplayError when it did not come out whole (a full disk)."""
        if self._first is not None:
            self._append(self._first[0])
            self._first = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            problem = mp4_problem(self.path)
            if problem:
                raise ReplayError(f'the annotated video {self.path.name} was not written '
                                  f'completely ({problem}): is the disk full?')


def mp4_problem(path: Path) -> str | None:
    """
    Say what is wrong with an MP4 file's top-level boxes, or None when they are whole.

    OpenCV's writer reports no failed write; a file cut short (a full disk) lacks its ``moov``
    index or ends inside a box. Reading the box headers finds that without FFmpeg.
    """
    import struct
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f'it cannot be read back: {exc.strerror}'
    offset, kinds = 0, set()
    while offset < len(data):
        if offset + 8 > len(data):
            return f'it ends inside a box header at byte {offset}'
        size, kind = struct.unpack_from('>I4s', data, offset)
        if size == 1 and offset + 16 <= len(data):
            size = struct.unpack_from('>Q', data, offset + 8)[0]
        elif size == 0:
            size = len(data) - offset
        if size < 8 or offset + size > len(data):
            return f'its {kind.decode("latin-1")!r} box at byte {offset} is cut short'
        kinds.add(kind)
        offset += size
    missing = [k.decode() for k in (b'ftyp', b'mdat', b'moov') if k not in kinds]
    return f'no {", ".join(missing)} box' if missing else None
