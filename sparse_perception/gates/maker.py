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
Spatial gates for a segmentation network: recompute where the people are, not every change.

On a moving camera every tile changes, so temporal sparsity alone computes everything. A gate
(``sparsity.gate``) tells the engine where a frame may recompute (engine/gate.py); the rest
keeps its cached features and is recomputed once a gate covers it again. The gates:

- ``previous``: the person tiles of the last frame's output, grown by ``sparsity.gate_margin``
  tiles. Cheap, but someone who appears away from everyone seen is looked for only by the
  refresh cells (below), which may miss them.
- ``glance``: the same network, dense, on the frame scaled by ``sparsity.glance_scale`` (a
  sixteenth of the work at 1/4), gives this frame's person tiles; the gate is those plus the
  previous ones, grown. While someone is followed the glance looks only at every
  ``sparsity.glance_period``-th frame, and the frames between gate on the previous tiles
  alone (someone who appears away from everyone seen waits for the next glance), unless
  someone moved farther than the margin since the frame before. When neither sees anybody,
  the glance's own output, scaled back up, is the frame's result and the full-size pass is
  skipped (``sparsity.glance_exit``; never on a stream's first frame, which must find the
  people the glance is too coarse for, nor on more than ``sparsity.gate_refresh`` - 1
  frames in a row (no bound at 0), so that someone too small for the glance is still
  found; the next full pass runs ungated, as the caches are older everywhere). Fully
  convolutional networks only: a fixed-size network cannot run smaller.
- ``learned``: a tiny tile-level network (gates/learned.py, file ``sparsity.gate_model``,
  trained by ``sparse-perception gate train``) gives the tiles where this frame's people are
  likely (probability at least ``sparsity.gate_threshold``); the gate is those plus the
  previous ones, grown. Any segmentation network with a person class.

Whatever the gate, a frame runs ungated when nothing was seen yet (a stream's first frame,
the first under another gate, tile size or glance scale) or when neither the last frame's
output nor the gate's own look (glance, learned) shows anybody: there is nobody to follow,
whoever appears must be found anywhere, and a refresh cell computed amid stale features may
miss them.

A gate that covers more than ``sparsity.gate_dense_above`` of the frame (a crowd) is dropped:
the frame recomputes every change and every stale position, which costs little more than the
gate would and leaves nothing waiting. The glance is skipped when the last frame's people,
grown, cover that much already.

Every gate also holds a refresh cell: ``sparsity.gate_refresh`` about square blocks of tiles
split the frame, and each frame's gate takes the next one in reading order, so that every
position is recomputed at least every ``sparsity.gate_refresh`` frames (the bound on how
stale a cached position can get; 0 turns the cells off).

Gates follow people: on the PASCAL models other classes outside the gate keep stale labels
until the refresh cell passes (their IoU is not what the gate protects).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

from sparse_perception.settings import PerceptionSettings, SparsitySettings

LOG = logging.getLogger(__name__)


def person_map(outputs: Any, decoder: str, person: int) -> Any:
    """
    Return a bool (h, w) tensor: where a segmentation network's outputs say "person".

    ``decoder`` is the model's (models/registry.py): 'class_map' outputs hold class ids,
    'class_scores' NHWC scores, 'probability' a person probability (thresholded at 0.5, as
    the decoder does).
    """
    import torch

    out = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    if decoder == 'class_map':
        ids = out if not out.is_floating_point() else out.argmax(1)
        return ids.reshape(ids.shape[-2:]) == person
    if decoder == 'class_scores':  # (1, h, w, C)
        return out.reshape(out.shape[-3:]).argmax(-1) == person
    if decoder == 'probability':
        prob = out.float()
        if prob.dim() == 4 and prob.shape[-1] == 1 and prob.shape[1] != 1:
            prob = prob[..., 0]
        return torch.as_tensor(prob).reshape(prob.shape[-2:]) >= 0.5
    raise ValueError(f'a {decoder!r} model has no person map to gate on')


def person_class(labels: tuple[str, ...]) -> int | None:
    """Index of 'person' among a segmentation model's labels, None if it has none."""
    return list(labels).index('person') if 'person' in labels else None


def resize_outputs(outputs: Any, decoder: str, height: int, width: int) -> Any:
    """Scale a segmentation network's outputs up to an (height, width) input, as if run there."""
    import torch.nn.functional as F

    out = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    if decoder == 'class_map' and not out.is_floating_point():  # ids (1, h, w)
        ids = out.reshape(1, 1, *out.shape[-2:]).float()
        up = F.interpolate(ids, size=(height, width), mode='nearest-exact')
        return up.reshape(1, height, width).to(out.dtype)
    if out.dim() == 4 and decoder in ('class_scores', 'probability') and out.shape[1] != 1:
        nchw = out.permute(0, 3, 1, 2).float()  # NHWC, as TFLite models give them
        up = F.interpolate(nchw, size=(height, width), mode='bilinear', align_corners=False)
        return up.permute(0, 2, 3, 1).to(out.dtype)
    nchw = out.reshape(1, -1, *out.shape[-2:]).float()
    up = F.interpolate(nchw, size=(height, width), mode='bilinear', align_corners=False)
    return up.reshape(*out.shape[:-2], height, width).to(out.dtype)


def to_tiles(mask: Any, height: int, width: int, tile: int) -> Any:
    """
    Turn a bool (h, w) map over an (height, width) input into (ceil(H/t), ceil(W/t)) tiles.

    A tile is set where the map, scaled to the input by nearest neighbour (torch's
    ``interpolate``), has a set pixel inside it. Computed without that input-sized map: a
    map of the input's size pools its tiles as bytes, a smaller one ORs, per tile, the span
    of its rows (then columns) that the tile's pixels read.
    """
    import torch
    import torch.nn.functional as F

    m = mask.reshape(mask.shape[-2:])
    if m.dtype != torch.bool:
        m = m != 0
    if tuple(m.shape) == (height, width):
        th, tw = -(-height // tile), -(-width // tile)
        u = F.pad(m.view(torch.uint8), (0, tw * tile - width, 0, th * tile - height))
        return u.view(th, tile, tw, tile).amax((1, 3)) > 0
    return _tile_rows(_tile_rows(m, height, tile).t(), width, tile).t()


def _tile_rows(m: Any, size: int, tile: int) -> Any:
    """OR the rows of bool ``m`` (n, C) that each tile of ``size`` input rows reads: (T, C)."""
    from sparse_perception.engine.gate import any_in_spans

    n = m.shape[0]
    src = None if n == size else _nearest(n, size, m.device)
    if src is not None and n > size:  # shrinking skips rows: keep the ones read, in order
        m, src = m.index_select(0, src), None
    first, last = _tile_ends(size, tile, m.device)
    # Nearest neighbour reads rows in order, one step at most between neighbours when
    # enlarging: a tile reads every row from its first pixel's to its last pixel's.
    if src is None:
        return any_in_spans(m, (first, last + 1))
    return any_in_spans(m, (src.index_select(0, first), src.index_select(0, last) + 1))


@functools.lru_cache(maxsize=32)
def _nearest(n: int, size: int, device: Any) -> Any:
    """Row of ``n`` that each of ``size`` rows reads under torch's nearest neighbour."""
    import torch
    import torch.nn.functional as F

    rows = torch.arange(n, dtype=torch.float64).view(1, 1, n)
    return F.interpolate(rows, size=size, mode='nearest').view(-1).long().to(device)


@functools.lru_cache(maxsize=32)
def _tile_ends(size: int, tile: int, device: Any) -> tuple[Any, Any]:
    """First and last of ``size`` rows in each tile of ``tile`` rows."""
    import torch

    first = torch.arange(0, size, tile)
    return first.to(device), (torch.clamp(first + tile, max=size) - 1).to(device)


def grow(tiles: Any, margin: int) -> Any:
    """Grow a bool tile map by ``margin`` tiles in every direction."""
    import torch.nn.functional as F

    if margin <= 0 or not bool(tiles.any()):
        return tiles
    grown = F.max_pool2d(tiles[None, None].float(), 2 * margin + 1, 1, margin)
    return grown[0, 0] > 0


def covers_most(tiles: Any, dense_above: float) -> bool:
    """Whether a bool tile map covers more than ``dense_above`` of its input (a crowd)."""
    return float(tiles.float().mean()) > dense_above


def bound(tiles: Any, margin: int, dense_above: float, refresh: int, frame: int) -> Any:
    """
    Turn a frame's people tiles into its gate: grown by ``margin``, with the refresh cell.

    Returns None (the frame runs ungated: it recomputes every change and every stale
    position) when the grown tiles cover more than ``dense_above`` of the input. Otherwise
    the refresh cell of frame number ``frame`` joins them, so that every layer recomputes
    each position at least once in ``refresh`` frames (0: no cell; from inputs that may be
    stale themselves, see the README). ``tiles`` may be changed in place.
    """
    tiles = grow(tiles, margin)
    if covers_most(tiles, dense_above):
        return None
    if refresh > 0:
        top, bottom, left, right = refresh_cell(tiles.shape[0], tiles.shape[1], refresh, frame)
        tiles[top:bottom, left:right] = True
    return tiles


def refresh_cell(rows: int, columns: int, period: int, frame: int) -> tuple[int, int, int, int]:
    """
    Return the tiles, rows [top, bottom) and columns [left, right), that ``frame`` refreshes.

    The ``period`` cells of consecutive frames tile the map exactly once, in rows of cells
    scanned in reading order. The cells are about square: a layer 16 times coarser than the
    input sees a band of tile rows across the frame as a row or two of positions, which its
    tiles of 4x4 positions cover several times over. With a band on DAVIS parkour (the
    glance, the defaults) the depthwise layers there computed 56% of their positions for 20%
    gated, with these cells 41% (hand-run).
    """
    side = math.sqrt(rows * columns / period)
    bands = max(1, min(rows, period, round(rows / side)))
    index = frame % period
    per_band, extra = divmod(period, bands)  # the first `extra` bands hold one cell more
    band, first = 0, 0
    while True:
        cells = per_band + (band < extra)
        if index < first + cells:
            break
        first += cells
        band += 1
    cell = index - first
    return (band * rows // bands, (band + 1) * rows // bands,
            cell * columns // cells, (cell + 1) * columns // cells)


class GateMaker:
    """
    Makes each frame's gate for one segmentation network, and the glance's early exit.

    Call :meth:`glance` (glance gate only) before the frame, :meth:`gate` for the engine's
    tile map, and :meth:`observe` with the frame's outputs, whichever path made them.
    """

    def __init__(self, settings: SparsitySettings, tile: int, decoder: str, person: int | None,
                 glance_pass: Callable[[Any], Any] | None = None, model: str | None = None,
                 max_megapixels: float | None = None):
        self.tile = tile
        self.model = model  # model.segmentation: a learned gate must be made for it
        # model.fcn_max_megapixels where it scales the network input (None: a fixed size)
        self.max_megapixels = max_megapixels
        self._told_scale: tuple | None = None  # the gate file and bounds last warned of
        self.decoder = decoder
        self.person = person
        self.glance_pass = glance_pass  # x -> outputs, dense (torch), any input size
        self.learned: Any = None  # the learned gate's network (gates.learned.LearnedGate)
        self.mode: str | None = None
        self.scale: float | None = None
        self.period: int | None = None
        self.configure(settings)  # (a first gate starts from nothing seen: reset)

    def configure(self, settings: SparsitySettings, tile: int | None = None) -> None:
        """
        Take the gate settings (and the change tiles' edge) from the next frame on.

        They are all live. Another gate, another tile or another glance scale starts from
        nothing seen: what the last gate remembered is older than the frames it did not see,
        in other tiles, or what a glance at another scale saw.
        """
        tile = self.tile if tile is None else tile
        if settings.gate != 'none' and self.person is None:
            raise ValueError("sparsity.gate follows people, and this model's labels have no "
                             "'person' class (use sparsity.gate none)")
        if settings.gate == 'glance' and self.glance_pass is None:
            raise ValueError("sparsity.gate 'glance' runs the network at a smaller size and "
                             'needs a fully convolutional one; this model has a fixed input '
                             "size (use 'previous', or a model whose name ends in _fcn)")
        if settings.gate == 'learned':
            self._load_learned(settings.gate_model, tile)
            self._check_scale()
        if settings.glance_period != self.period:
            self.moved = True  # not measured under a period of 1: glance first
        # (A glance at another scale may see someone the last one missed.)
        fresh = (settings.gate != self.mode or tile != self.tile
                 or (settings.gate == 'glance' and settings.glance_scale != self.scale))
        self.tile = tile
        self.mode = settings.gate
        self.threshold = settings.gate_threshold
        self.margin = settings.gate_margin
        self.scale = settings.glance_scale
        self.period = settings.glance_period
        self.refresh = settings.gate_refresh
        self.exit = settings.glance_exit
        self.dense_above = settings.gate_dense_above
        if fresh:
            self.reset()

    def reconfigure(self, settings: PerceptionSettings) -> None:
        """Take a pipeline's new settings from the next frame on (see :meth:`configure`)."""
        if self.max_megapixels is not None:
            self.max_megapixels = settings.model.fcn_max_megapixels
        self.configure(settings.sparsity, settings.change.tile_size)

    def _check_scale(self) -> None:
        """Warn once when the learned gate was trained for another frame-size bound."""
        trained = self.learned.meta.get('fcn_max_megapixels')  # (older files: not recorded)
        if trained is None or self.max_megapixels is None or trained == self.max_megapixels:
            return
        told = (self.learned.path, self.learned.sha256, trained, self.max_megapixels)
        if told != self._told_scale:
            self._told_scale = told
            LOG.warning('the learned gate %s was trained with model.fcn_max_megapixels %g and '
                        'this pipeline has %g: a frame above the smaller of the two reaches '
                        'the gate at another scale than it learned; train it with '
                        '--fcn-max-megapixels %g', self.learned.path, trained,
                        self.max_megapixels, self.max_megapixels)

    def _load_learned(self, path: str, tile: int) -> None:
        from sparse_perception.gates.learned import file_stamp, GateFileError, LearnedGate

        same = (self.learned is not None and self.learned.path == path
                and self.learned.tile == tile)
        if same and self.learned.stamp == file_stamp(path):
            return
        try:
            # GateFileError (a ValueError): a bad file, or one made for another model or tile
            self.learned = LearnedGate(path, tile, self.model)
        except GateFileError as exc:
            # The same setting, its file changed on disk since (a gate trained again in place
            # is read again): one that went bad does not stop another setting's change; the
            # gate in use stays, and says so once per change of the file.
            if not same:
                raise
            stamp = file_stamp(path)
            if self.learned.unread != stamp:
                self.learned.unread = stamp
                LOG.warning('%s; the learned gate read from it before stays in use', exc)

    def reset(self) -> None:
        """Forget what earlier frames showed (a new stream)."""
        self.previous: Any = None  # person tiles of the last frame's output
        if self.learned is not None:
            self.learned.reset()
        self.frames = 0
        self.exits = 0  # frames in a row the glance answered alone
        self.unglanced = 0  # frames in a row that followed the last frame's people unglanced
        self.moved = True  # whether the last frame's people outran the gate (see observe)
        self.seen: Any = None  # this frame's glance tiles

    @property
    def active(self) -> bool:
        return self.mode != 'none'

    def glance(self, x: Any) -> Any:
        """
        Look at ``x`` (1, C, H, W) with the glance, or the learned gate's network.

        Returns its outputs at full size when the frame may skip its full pass (nobody now or
        in the last frame, ``glance_exit``, and fewer than ``gate_refresh`` - 1 frames in a
        row answered so), else None.
        """
        import torch.nn.functional as F

        self.seen = None
        if self.mode == 'learned':
            self.seen = self.learned.tiles(x, self.previous, self.threshold)
            return None
        if self.mode != 'glance':
            return None
        height, width = x.shape[-2:]
        if self._crowd(self.previous, height, width):
            return None  # the frame runs ungated: a glance would not change that
        if (self.unglanced < self.period - 1 and not self.moved
                and self._follows(height, width)):
            self.unglanced += 1
            return None  # the gate follows the last frame's people alone (glance_period)
        self.unglanced = 0
        if self.exit and self._nobody(self.previous) and not self._exits_left():
            # The glance answered gate_refresh - 1 frames in a row: the full pass is due, and
            # it runs ungated (its caches missed those frames), so the glance would not help.
            self.exits = 0
            return None
        size = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        small = F.interpolate(x, size=size, mode='area')
        outputs = self.glance_pass(small)
        people = person_map(outputs, self.decoder, self.person)
        self.seen = to_tiles(people, height, width, self.tile)
        # A stream's first frame runs in full: with nothing seen before, a glance that sees
        # nobody may just have missed someone small. So does every gate_refresh-th frame in
        # a row without anybody: the bound the refresh cells keep under a gate, and someone
        # too small for the glance is found (at 854x480 the DeepLab's glance at 1/4 missed a
        # runner shrunk to 0.35 in all 40 frames, the full pass saw them in 37:
        # bench/results/gate_newcomer/).
        if (self.exit and self._nobody(self.previous) and self._nobody(self.seen)
                and self._exits_left()):
            self.exits += 1
            return resize_outputs(outputs, self.decoder, height, width)
        self.exits = 0
        return None

    def may_repeat(self) -> bool:
        """
        Whether the glance's last answer may stand for an unchanged input too.

        It counts as one more frame the glance answered alone: False once the full pass is
        due (see :meth:`glance`), or when the glance's settings changed since.
        """
        if (self.mode != 'glance' or not self.exit or not self._nobody(self.previous)
                or not self._exits_left()):
            return False
        self.exits += 1
        return True

    def _exits_left(self) -> bool:
        """Whether the glance may answer one more frame in a row alone (see above)."""
        return self.refresh == 0 or self.exits < self.refresh - 1

    @staticmethod
    def _nobody(tiles: Any) -> bool:
        """Whether ``tiles`` were looked at (not None) and hold no person."""
        return tiles is not None and not bool(tiles.any())

    def learned_macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of the learned gate on an (height, width) input."""
        from sparse_perception.gates.learned import macs

        return macs(*self._tiles_of(height, width))

    def glance_size(self, height: int, width: int) -> tuple[int, int]:
        """Return the glance's input size for an (height, width) input."""
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    def gate(self, height: int, width: int) -> Any:
        """
        Return this frame's bool tile map over an (height, width) input.

        None runs the frame ungated: gate none, a gate over more than ``gate_dense_above``,
        nothing seen yet (a stream's first frame, or the first since the gate changed), or
        nobody in the last frame's output nor in this frame's glance or learned gate.
        """
        import torch

        if self.mode == 'none':
            return None
        th, tw = self._tiles_of(height, width)
        parts = [part for part in (self.previous, self.seen)
                 if part is not None and tuple(part.shape) == (th, tw)]
        if self.previous is None or not any(bool(part.any()) for part in parts):
            # Nobody to follow: whoever comes must be found anywhere, and a refresh cell
            # computed amid stale features may not find them (with the selfie model at
            # 8-pixel tiles on DAVIS parkour a lost person stayed lost for 34 frames; a
            # learned gate at refresh 0 would recompute nothing at all).
            return None
        # On the device the parts come from (the model's outputs: CUDA when it runs there).
        tiles = torch.zeros(th, tw, dtype=torch.bool, device=parts[0].device)
        for part in parts:
            tiles |= part
        return bound(tiles, self.margin, self.dense_above, self.refresh, self.frames)

    def _tiles_of(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of change tiles over an (height, width) input."""
        return -(-height // self.tile), -(-width // self.tile)

    def _follows(self, height: int, width: int) -> bool:
        """Whether the last frame's output, at this input size, showed somebody."""
        previous = self.previous
        return (previous is not None and tuple(previous.shape) == self._tiles_of(height, width)
                and bool(previous.any()))

    def _crowd(self, people: Any, height: int, width: int) -> bool:
        """Whether ``people`` (tiles of this input size), grown, cover most of the input."""
        return (people is not None and tuple(people.shape) == self._tiles_of(height, width)
                and self._covers_most(grow(people, self.margin)))

    def _covers_most(self, tiles: Any) -> bool:
        return covers_most(tiles, self.dense_above)

    def observe(self, outputs: Any, height: int, width: int) -> None:
        """Remember the person tiles of this frame's outputs (for the next frame's gate)."""
        self.frames += 1
        if self.mode == 'none':
            return
        people = person_map(outputs, self.decoder, self.person)
        tiles = to_tiles(people, height, width, self.tile)
        if self.mode == 'glance' and self.period > 1:
            self.moved = self._outran(self.previous, tiles)
        self.previous = tiles

    def _outran(self, before: Any, now: Any) -> bool:
        """
        Whether someone in ``now`` lies more than the margin away from everyone in ``before``.

        People who moved that far in a frame may leave the next frame's gate, grown by the
        margin from where they are now, so the next frame glances, whatever glance_period
        says. On DAVIS parkour at every fourth frame, a glance on every other frame lost 2.74
        IoU points without this and 0.47 with it, at 24.0% and 26.7% of the dense MACs
        (hand-run with `eval accuracy`, the path choice off; 0.46 in
        bench/results/gates_glance_period_sweep_every4th.md, 0.25 glancing at every frame).
        A frame between two glances computes only inside its gate, so it cannot show a move
        beyond it: with a period above 2 such a move waits for the next scheduled glance.
        """
        if before is None or tuple(before.shape) != tuple(now.shape):
            return True
        return bool((now & ~grow(before, self.margin)).any())
