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
Temporal change maps: which tiles of a camera image changed since they were last propagated.

A :class:`ChangeDetector` keeps one *reference* image: per tile, the pixels that were last
propagated downstream (not simply the previous frame). A pixel counts as changed when any of
its channels differs from the reference by more than ``threshold`` (in grey levels of an
8-bit image; float images in [0, 1] are compared in the same units times 1/255, other
integer images in their own units).

Sensor and compression noise changes isolated pixels everywhere; real motion changes many
pixels of a few neighbouring tiles. So a tile is changed when at least ``min_pixels`` of its
pixels changed (a *core* tile), or when it borders a core tile (8-neighbourhood) and at least
``neighbour_pixels`` of its pixels changed: the edges of a moving object, where only a few
pixels of a tile change, go along with the object while the same few pixels elsewhere are
treated as noise. A tile the frame cuts short (the last row or column of a frame whose
size is no multiple of the tile) needs its share of those pixels, rounded up. The changed set
is optionally grown by ``dilation`` tiles, and the reference is then updated in the changed
tiles only. Slow drift therefore accumulates against
the reference until it crosses the threshold, and is never lost.

The first frame, every ``refresh_period``-th frame and the frame after
:meth:`ChangeDetector.request_refresh` are refreshes: every tile is marked changed and the
reference becomes the whole frame.

Frames are numpy arrays or torch tensors: ``(H, W)``, ``(H, W, C)`` (camera layout) or, for
tensors only, ``(1, C, H, W)`` (the layout the engine takes). 8-bit frames on the CPU (the
camera case) take a numpy path (with OpenCV's SIMD passes when it is installed: the
per-pixel test for RGB, the copy into the reference for up to 4 channels); everything else
runs in torch on the frame's device. Numpy frames are wrapped without copying.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import numbers
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ChangeMap:
    """The change map of one frame."""

    tiles: torch.Tensor  # bool (Ht, Wt): tiles to propagate this frame
    refresh: bool  # first frame, periodic or requested refresh: every tile is set
    changed_fraction: float  # fraction of tiles set in ``tiles``
    pixel_fraction: float  # fraction of pixels above the threshold (before tiling)
    tile_size: int  # edge of a tile in input pixels
    frame_index: int  # 0 for the first frame after construction or reset()
    # False: the map measured no change: none was made for this frame (the pipeline skips
    # the map while only dense passes would read it; every tile stands as changed), or it is
    # the refresh after such frames, or a dense pipeline's
    measured: bool = True

    def pixel_mask(self, height: int, width: int) -> torch.Tensor:
        """Return the tile map expanded to a bool ``(height, width)`` pixel mask."""
        t = self.tile_size
        return self.tiles.repeat_interleave(t, 0).repeat_interleave(t, 1)[:height, :width]


class ChangeDetector:
    """
    Turn a stream of frames into per-tile change maps (see the module docstring).

    Construct it from the ``change`` section of the settings or from explicit arguments;
    explicit arguments override the settings.
    """

    def __init__(self, settings: Any = None, *, threshold: float | None = None,
                 tile_size: int | None = None, dilation: int | None = None,
                 refresh_period: int | None = None, min_pixels: int | None = None,
                 neighbour_pixels: int | None = None):
        from sparse_perception.settings import ChangeSettings, min_pixels_problem

        defaults = ChangeSettings()

        def pick(name, explicit):
            if explicit is not None:
                return explicit
            return getattr(settings if settings is not None else defaults, name,
                           getattr(defaults, name))

        self.threshold = _number('threshold', pick('threshold', threshold))
        self.tile_size = _whole('tile_size', pick('tile_size', tile_size))
        self.dilation = _whole('dilation', pick('dilation', dilation))
        self.refresh_period = _whole('refresh_period', pick('refresh_period', refresh_period))
        self.min_pixels = _whole('min_pixels', pick('min_pixels', min_pixels))
        # At or above min_pixels the neighbour rule has no effect.
        self.neighbour_pixels = _whole('neighbour_pixels',
                                       pick('neighbour_pixels', neighbour_pixels))
        checks = (('threshold', self.threshold, 0.0, 255.0),
                  ('tile_size', self.tile_size, 1, 4096), ('dilation', self.dilation, 0, 4096),
                  ('refresh_period', self.refresh_period, 0, math.inf),
                  ('min_pixels', self.min_pixels, 1, math.inf),
                  ('neighbour_pixels', self.neighbour_pixels, 1, math.inf))
        for name, value, low, high in checks:
            if not low <= value <= high or value != value:
                raise ValueError(f'ChangeDetector {name}={value!r} is out of range; expected '
                                 f'{low} to {high}')
        min_pixels_problem('ChangeDetector min_pixels', self.min_pixels, self.tile_size)
        self.reset()

    def reset(self) -> None:
        """Forget the reference: the next frame is a first frame (a refresh)."""
        self._reference: torch.Tensor | None = None
        self._refresh_requested = False
        self._frame_index = 0
        self._needs_key: tuple | None = None
        self._needs: tuple[Any, Any] = (0, 0)

    def request_refresh(self) -> None:
        """Make the next frame a full refresh (every tile changed)."""
        self._refresh_requested = True

    @property
    def reference(self) -> torch.Tensor | None:
        """Return the last propagated image, ``(H, W, C)`` (None before the first frame)."""
        return self._reference

    def update(self, frame: Any) -> ChangeMap:
        """Compare ``frame`` with the reference, update the reference, return the change map."""
        image = _as_hwc(frame)
        height, width = image.shape[:2]
        t = self.tile_size
        tiles_h, tiles_w = -(-height // t), -(-width // t)
        index = self._frame_index
        self._frame_index += 1
        ref = self._reference
        refresh = (ref is None or ref.shape != image.shape or ref.dtype != image.dtype
                   or ref.device != image.device or self._refresh_requested
                   or (self.refresh_period > 0 and index % self.refresh_period == 0))
        if refresh:
            self._refresh_requested = False
            self._reference = image.clone()
            tiles = torch.ones(tiles_h, tiles_w, dtype=torch.bool, device=image.device)
            return ChangeMap(tiles, True, 1.0, 1.0, t, index)

        if image.dtype == torch.uint8 and image.device.type == 'cpu':
            tiles, pixel_fraction = self._update_uint8(image, ref, tiles_h, tiles_w)
        else:
            tiles, pixel_fraction = self._update_torch(image, ref, tiles_h, tiles_w)
        return ChangeMap(tiles, False, float(tiles.float().mean()), pixel_fraction, t, index)

    def _pixels_needed(self, height: int, width: int, device: Any = None) -> tuple[Any, Any]:
        """
        Return the changed pixels a tile needs: to change (min_pixels), beside one (neighbours).

        Ints, or where the frame ends inside the last tile row or column, (Ht, Wt) int64 arrays
        (tensors on ``device`` if given): a partial tile needs its share of them (rounded up),
        so that a change confined to it (a 1-pixel row of a 481-row frame) can still count.
        """
        t = self.tile_size
        key = (height, width, t, self.min_pixels, self.neighbour_pixels, device)
        if key != self._needs_key:
            needs: tuple[Any, Any] = (self.min_pixels, self.neighbour_pixels)
            if height % t or width % t:
                rows = np.full(-(-height // t), t, np.int64)
                rows[-1] = height - (len(rows) - 1) * t
                columns = np.full(-(-width // t), t, np.int64)
                columns[-1] = width - (len(columns) - 1) * t
                area = rows[:, None] * columns[None, :]
                needs = tuple(-(-n * area // (t * t)) for n in needs)  # full tiles: n
                if device is not None:
                    needs = tuple(torch.from_numpy(n).to(device) for n in needs)
            self._needs_key, self._needs = key, needs
        return self._needs

    def _tile_rule(self, counts: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Return the changed tiles for per-tile counts of changed pixels (core, neighbours)."""
        core, near_need = self._pixels_needed(height, width, counts.device)
        tiles = counts >= core
        if self.neighbour_pixels < self.min_pixels and bool(tiles.any()):
            near = F.max_pool2d(tiles[None, None].float(), 3, 1, 1)[0, 0] > 0
            tiles = tiles | (near & (counts >= near_need))
        if self.dilation > 0 and bool(tiles.any()):
            k = 2 * self.dilation + 1
            grown = F.max_pool2d(tiles[None, None].float(), k, 1, self.dilation)
            tiles = grown[0, 0] > 0
        return tiles

    def _update_torch(self, image: torch.Tensor, ref: torch.Tensor, tiles_h: int,
                      tiles_w: int) -> tuple[torch.Tensor, float]:
        t = self.tile_size
        height, width = image.shape[:2]
        changed = _changed_pixels(image, ref, self.threshold)  # (H, W) bool
        pixel_fraction = float(changed.float().mean())
        padded = F.pad(changed, (0, tiles_w * t - width, 0, tiles_h * t - height))
        counts = padded.view(tiles_h, t, tiles_w * t).sum(1, dtype=torch.int32)
        counts = counts.view(tiles_h, tiles_w, t).sum(2)  # rows of tiles, then columns
        tiles = self._tile_rule(counts, height, width)
        mask = tiles.repeat_interleave(t, 0).repeat_interleave(t, 1)[:height, :width]
        torch.where(mask[..., None], image, ref, out=ref)
        return tiles, pixel_fraction

    def _update_uint8(self, image: torch.Tensor, ref: torch.Tensor, tiles_h: int,
                      tiles_w: int) -> tuple[torch.Tensor, float]:
        """Update for 8-bit CPU frames (the camera case) in numpy: faster than torch's uint8."""
        t = self.tile_size
        height, width = image.shape[:2]
        a, r = image.numpy(), ref.numpy()
        # d > threshold <=> d > floor(threshold) for integer d
        changed = _changed_uint8(a, r, int(self.threshold))  # (H, W) uint8, 1 = changed
        if (tiles_h * t, tiles_w * t) != (height, width):
            changed = np.pad(changed, ((0, tiles_h * t - height), (0, tiles_w * t - width)))
        # Rows of tiles first, then columns (numpy: torch's strided bool sum is far slower).
        # A pixel column's sum over a tile row fits 16 bits: tile_size is at most 4096.
        counts = changed.reshape(tiles_h, t, tiles_w * t).sum(1, dtype=np.uint16)  # (Ht, W)
        counts = counts.reshape(tiles_h, tiles_w, t).sum(2, dtype=np.int64)  # (Ht, Wt)
        pixel_fraction = float(counts.sum()) / (height * width)
        tiles = self._tile_rule_numpy(counts, height, width)
        if tiles.any():
            _copy_tiles(a, r, tiles, t)
        return torch.from_numpy(tiles), pixel_fraction

    def _tile_rule_numpy(self, counts: np.ndarray, height: int, width: int) -> np.ndarray:
        """:meth:`_tile_rule` on numpy counts: torch's ops cost more than the map is worth."""
        core, near_need = self._pixels_needed(height, width)
        tiles = counts >= core
        if self.neighbour_pixels < self.min_pixels and tiles.any():
            tiles = tiles | (_grown(tiles, 1) & (counts >= near_need))
        if self.dilation > 0 and tiles.any():
            tiles = _grown(tiles, self.dilation)
        return tiles


def _grown(tiles: np.ndarray, radius: int) -> np.ndarray:
    """Return ``tiles`` (bool 2-D) grown by ``radius`` tiles in every direction (a square)."""
    height, width = tiles.shape
    radius = min(radius, max(height, width))  # more reaches no further tile
    padded = np.pad(tiles, radius)
    rows = np.zeros((height, width + 2 * radius), bool)
    for dy in range(2 * radius + 1):  # separable: rows, then columns
        rows |= padded[dy:dy + height]
    grown = np.zeros((height, width), bool)
    for dx in range(2 * radius + 1):
        grown |= rows[:, dx:dx + width]
    return grown


def _copy_tiles(a: np.ndarray, r: np.ndarray, tiles: np.ndarray, t: int) -> None:
    """Copy the pixels of ``a`` in the set ``tiles`` into ``r`` (both (H, W, C) uint8)."""
    cv2 = _cv2()
    height, width, channels = a.shape
    tiles_h, tiles_w = tiles.shape
    if cv2 is not None and channels <= 4 and a.flags.c_contiguous and r.flags.c_contiguous:
        # One masked copy in OpenCV, several times faster than numpy's indexed copy of whole
        # tiles. The pixel mask: each tile row widened to pixels, then repeated down its tile.
        row = np.repeat(tiles.view(np.uint8), t, axis=1)[:, None, :width]  # (Ht, 1, W)
        mask = np.repeat(row, t, axis=1).reshape(tiles_h * t, width)[:height]  # (H, W)
        out = cv2.copyTo(a, mask, r)
        if out is not r:
            r[...] = out.reshape(r.shape)  # OpenCV drops a single channel's axis
        return
    rows, cols = np.nonzero(tiles)
    if (tiles_h * t, tiles_w * t) == (height, width):  # copy whole changed tiles
        r.reshape(tiles_h, t, tiles_w, t, channels)[rows, :, cols] = \
            a.reshape(tiles_h, t, tiles_w, t, channels)[rows, :, cols]
        return
    for y, x in zip((rows * t).tolist(), (cols * t).tolist()):
        r[y:y + t, x:x + t] = a[y:y + t, x:x + t]


class ResampledChange:
    """
    The change map of a network input resampled from the camera frame, made from the frame's map.

    The change settings count camera pixels: a pixel moved past ``threshold`` grey levels, a
    tile holds ``min_pixels`` such pixels. A network input resampled from the frame (BlazePose's
    detector sees the frame shrunk about 3.4 times, its landmark model a crop enlarged 1-4
    times, a segmentation model a resized frame) would, with a change detector of its own,
    apply them at another scale: on the shrunk detector input 32 changed pixels stand for about
    370 camera pixels, and shrinking also averages a small person's edges below the threshold,
    so a walking pedestrian could stay stale for many frames. Here an input tile is changed
    when the frame region it samples holds a frame tile that changed since the network last
    ran: the same rule for every network whatever its input's scale, exact at threshold 0 as
    the frame's map is, and no second pass over pixels.

    Call :meth:`add` with every frame's change map, whether the network runs on that frame or
    not, and :meth:`update` with the input's transform when it runs.
    """

    def __init__(self, tile_size: int):
        tile_size = _whole('tile_size', tile_size, 'ResampledChange')
        if tile_size < 1:
            raise ValueError(f'ResampledChange tile_size={tile_size!r} must be at least 1')
        self.tile_size = tile_size
        self._footprints: tuple[Any, Any] | None = None  # (transform key, tile index boxes)
        self.reset()

    def reset(self) -> None:
        """Forget what changed: the next update is a refresh (every tile changed)."""
        self._pending: np.ndarray | None = None  # frame tiles changed since the last update
        self._frame_tiles: tuple[int, int] | None = None
        self._frame_tile_size = 0
        self._refresh = True
        self._frame_index = 0

    def request_refresh(self) -> None:
        """Make the next update a full refresh (every tile changed)."""
        self._refresh = True

    def add(self, frame_change: ChangeMap) -> None:
        """Take one frame's change map into what changed since the network last ran."""
        tiles = frame_change.tiles.cpu().numpy().astype(bool, copy=False)
        shape = tuple(tiles.shape)
        if (frame_change.refresh or shape != self._frame_tiles
                or frame_change.tile_size != self._frame_tile_size):
            self._refresh = True
            self._pending = np.zeros(shape, bool)
            self._frame_tiles, self._frame_tile_size = shape, frame_change.tile_size
            return
        self._pending |= tiles

    def update(self, transform: Any) -> ChangeMap:
        """
        Return the change map of the input ``transform`` makes, and start gathering anew.

        ``transform`` maps input pixels to frame pixels (``to_image``) and has ``input_size``
        (h, w): an :class:`~sparse_perception.models.transforms.ImageTransform` or a
        BlazePose ``RoiTransform``.
        """
        t = self.tile_size
        height, width = (int(v) for v in transform.input_size)
        tiles_h, tiles_w = -(-height // t), -(-width // t)
        index = self._frame_index
        self._frame_index += 1
        if self._refresh or self._pending is None:  # a network made after this frame's add
            self._refresh = False
            if self._pending is not None:
                self._pending[:] = False
            return ChangeMap(torch.ones(tiles_h, tiles_w, dtype=torch.bool), True, 1.0, 1.0, t,
                             index)
        image = getattr(transform, 'image_size', None)
        frame_tiles = None if image is None else tuple(-(-int(v) // self._frame_tile_size)
                                                       for v in image)
        if frame_tiles is not None and frame_tiles != self._frame_tiles:
            # Its boxes would sample another frame's tiles: changes missed or misplaced.
            raise ValueError(f'the transform is made for a frame of {image[0]}x{image[1]} '
                             f'pixels (height x width), {frame_tiles[0]}x{frame_tiles[1]} tiles '
                             f'of {self._frame_tile_size} pixels; the change maps have '
                             f'{self._frame_tiles[0]}x{self._frame_tiles[1]}')
        boxes = self._tile_boxes(transform, tiles_h, tiles_w)
        integral = np.zeros((self._pending.shape[0] + 1, self._pending.shape[1] + 1), np.int32)
        integral[1:, 1:] = self._pending.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
        x0, y0, x1, y1 = boxes  # inclusive frame tile ranges, (tiles_h, tiles_w) each
        count = (integral[y1 + 1, x1 + 1] - integral[y0, x1 + 1] - integral[y1 + 1, x0]
                 + integral[y0, x0])
        tiles = torch.from_numpy(count > 0)
        self._pending[:] = False
        fraction = float(tiles.float().mean())
        return ChangeMap(tiles, False, fraction, fraction, t, index)

    def _tile_boxes(self, transform: Any, tiles_h: int, tiles_w: int) -> tuple:
        """Per input tile, the inclusive range of frame tiles its pixels are sampled from."""
        key = (transform, self._frame_tiles, self._frame_tile_size)
        if self._footprints is not None and self._footprints[0] == key:
            return self._footprints[1]
        t, frame_t = self.tile_size, self._frame_tile_size
        height, width = (int(v) for v in transform.input_size)
        # The first and last pixel centres of each tile: the map is affine, so the corners of
        # a tile's centre grid bound where its samples land in the frame.
        firsts_x, firsts_y = np.arange(tiles_w) * t + 0.5, np.arange(tiles_h) * t + 0.5
        lasts_x = np.minimum(np.arange(1, tiles_w + 1) * t, width) - 0.5
        lasts_y = np.minimum(np.arange(1, tiles_h + 1) * t, height) - 0.5
        corners = [transform.to_image(np.stack(np.meshgrid(xs, ys), axis=-1))
                   for xs in (firsts_x, lasts_x) for ys in (firsts_y, lasts_y)]
        low, high = np.minimum.reduce(corners), np.maximum.reduce(corners)  # (h, w, 2)
        # A sample reads the frame pixels around it: bilinear interpolation (crops, enlarging)
        # the two nearest along each axis, area averaging (shrinking) those under the input
        # pixel, half its extent each way; torch's antialiased stand-in for OpenCV up to a
        # whole extent.
        origin, ex, ey = transform.to_image(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        extent = np.abs(ex - origin) + np.abs(ey - origin)  # (x, y) frame pixels per input pixel
        reach = np.maximum(0.5, extent * (0.5 if _cv2() is not None else 1.0))
        first = np.floor(low - reach).astype(np.int64)
        last = np.maximum(np.floor(high - 0.5) + 1, np.ceil(high + reach) - 1).astype(np.int64)
        frame_h, frame_w = self._frame_tiles
        # Outside the frame a crop replicates its border: clipping reads the edge tiles.
        x0 = np.clip(first[..., 0] // frame_t, 0, frame_w - 1)
        y0 = np.clip(first[..., 1] // frame_t, 0, frame_h - 1)
        x1 = np.clip(last[..., 0] // frame_t, 0, frame_w - 1)
        y1 = np.clip(last[..., 1] // frame_t, 0, frame_h - 1)
        boxes = (x0, y0, x1, y1)
        self._footprints = (key, boxes)
        return boxes


def _changed_uint8(a: np.ndarray, b: np.ndarray, level: int) -> np.ndarray:
    """
    Return (H, W) uint8: 1 where any channel of ``a`` and ``b`` (uint8) differs by > ``level``.

    With OpenCV, for 3 channels: each channel's absolute difference thresholded to 0 or 255,
    then converted to grey, which is above 0 wherever any channel is 255 (the smallest
    weight, blue's, gives 29): a few SIMD passes instead of numpy's maximum over the strided
    channels (bench/change_map.py times the whole map both ways).
    """
    cv2 = _cv2()
    if cv2 is not None and a.ndim == 3 and a.shape[2] == 3 and a.flags.c_contiguous \
            and b.flags.c_contiguous:
        diff = cv2.absdiff(a, b)
        cv2.threshold(diff, level, 255, cv2.THRESH_BINARY, dst=diff)
        grey = cv2.cvtColor(diff, cv2.COLOR_RGB2GRAY)
        return cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY)[1]
    diff = np.maximum(a, b) - np.minimum(a, b)  # |a - b| without widening
    peak = diff if diff.ndim == 2 else diff[..., 0]
    for c in range(1, diff.shape[2] if diff.ndim == 3 else 1):
        # the strided channels one by one: numpy's max over a short last axis is far slower
        peak = np.maximum(peak, diff[..., c])
    return (peak > level).view(np.uint8)


_CV2: list = []


def _cv2() -> Any:
    """Return OpenCV if it can be imported (an optional dependency), else None."""
    if not _CV2:
        try:
            import cv2
        except ImportError:
            cv2 = None
        _CV2.append(cv2)
    return _CV2[0]


# The pixel types a change map reads (see _changed_pixels): integers of 8 and 16 bits, widened
# so that no difference wraps, and floats, compared in their own precision. A wider integer
# would wrap, a complex number lose its imaginary part: a change missed without a word.
_PIXEL_TYPES = ('uint8', 'int8', 'uint16', 'int16', 'float16', 'float32', 'float64')
_TENSOR_DTYPES = (*(getattr(torch, name) for name in _PIXEL_TYPES), torch.bfloat16)


def _pixel_type_error(dtype: Any) -> TypeError:
    return TypeError(f'frame dtype {dtype} is not supported; expected 8- or 16-bit integers or '
                     'float (convert the image first)')


def _number(name: str, value: Any, owner: str = 'ChangeDetector') -> float:
    """Return a real number argument as a float (not a flag, nor a text that converts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f'{owner} {name}={value!r} must be a number')
    return float(value)


def _whole(name: str, value: Any, owner: str = 'ChangeDetector') -> int:
    """Return a whole number argument as an int: 16.9 is refused rather than read as 16."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not float(value).is_integer():
        raise ValueError(f'{owner} {name}={value!r} must be a whole number')
    return int(value)


def _as_hwc(frame: Any) -> torch.Tensor:
    """Return ``frame`` as an ``(H, W, C)`` tensor (a view where possible)."""
    if isinstance(frame, np.ndarray):
        if frame.dtype.name not in _PIXEL_TYPES:
            raise _pixel_type_error(frame.dtype)
        if not frame.dtype.isnative:  # big-endian pixels (a message's): torch reads native
            frame = frame.astype(frame.dtype.newbyteorder('='))
        frame = np.ascontiguousarray(frame)
        if not frame.flags.writeable:  # a message's buffer: torch wraps only writable arrays
            frame = frame.copy()
        tensor = torch.from_numpy(frame)
        layout = 'numpy'
    elif isinstance(frame, torch.Tensor):
        if frame.dtype not in _TENSOR_DTYPES:
            raise _pixel_type_error(frame.dtype)
        tensor = frame.detach()
        layout = 'tensor'
    else:
        raise TypeError(f'frame must be a numpy array or a torch tensor, got {type(frame)!r}')
    expected = '(H, W) or (H, W, C)' + (' or (1, C, H, W)' if layout == 'tensor' else '')
    shape = tuple(tensor.shape)
    if tensor.dim() == 2:
        hwc = tensor[..., None]
    elif tensor.dim() == 3:
        # (3, H, W) is a channel-first image, not one 3 pixels high with H x W channels.
        if shape[0] in (1, 3, 4) and shape[2] not in (1, 2, 3, 4):
            raise ValueError(f'frame has shape {shape}, channels first; expected {expected}')
        hwc = tensor
    elif tensor.dim() == 4 and layout == 'tensor' and tensor.shape[0] == 1:
        hwc = tensor[0].permute(1, 2, 0)
    else:
        raise ValueError(f'frame has shape {shape}; expected {expected}')
    if 0 in hwc.shape:
        raise ValueError(f'frame has shape {shape}: no pixels (height, width and channels must '
                         'be at least 1)')
    return hwc


def _changed_pixels(image: torch.Tensor, ref: torch.Tensor, threshold: float) -> torch.Tensor:
    """Return bool ``(H, W)``: pixels where any channel moved more than ``threshold``."""
    if image.dtype == torch.uint8:
        # |a - b| without widening: uint8 subtraction would wrap around.
        diff = torch.maximum(image, ref) - torch.minimum(image, ref)
        return diff.amax(-1) > threshold
    if image.dtype.is_floating_point:
        # Written so that a NaN on one side counts as moved (a depth image's hole that fills,
        # or opens); NaN on both sides is no change, nor the same infinity (out of range).
        moved = ~((image - ref).abs() <= threshold / 255.0) & (image != ref)
        return (moved & ~(image.isnan() & ref.isnan())).any(-1)
    return (image.int() - ref.int()).abs().amax(-1) > threshold
