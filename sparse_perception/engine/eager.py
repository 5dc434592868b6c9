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
The eager executor: per layer, decide on the host what to recompute, then recompute it.

Each layer of a plan becomes a run (layers.py) holding its weights and index tables; a frame
turns the changed input tiles into changed positions, and each run turns its inputs' changed
positions into its own (sparse, or dense past the layer's cut-off). The primitives come from
``EngineConfig.backend``: the pure-torch reference or the Triton kernels.
"""

from __future__ import annotations

from typing import Any

from sparse_perception.engine.backend import as_nchw, get_backend
from sparse_perception.engine.executor import clock, Frame, Plan, StreamState, Tiling
from sparse_perception.engine.ir import Kind
from sparse_perception.engine.layers import Change, full_change, make_run
from sparse_perception.engine.stats import FrameStats, LayerStats
import torch


class EagerStream:
    """What the eager executor keeps per stream besides the caches."""

    def __init__(self, layers: int) -> None:
        # per layer: bool (H, W) positions whose inputs changed outside a gate, or None
        self.stale: list[torch.Tensor | None] = [None] * layers
        self.sums: dict[int, torch.Tensor] = {}  # running float64 sums of global pools

    @property
    def has_stale(self) -> bool:
        """Whether a gate left positions that no frame recomputed yet."""
        return any(m is not None for m in self.stale)

    def stale_positions(self) -> int:
        """Positions, over all layers, that a gate left stale and no frame recomputed yet."""
        return sum(int(m.sum()) for m in self.stale if m is not None)

    def memory_bytes(self) -> int:
        """Bytes of the stale masks and running sums."""
        total = sum(m.numel() for m in self.stale if m is not None)
        return total + sum(s.numel() * s.element_size() for s in self.sums.values())


class LayerFrame:
    """What the runs of one frame share."""

    __slots__ = ('backend', 'stream', 'caches', 'dense', 'rows_cutoff', 'window_cutoff',
                 'thresholds', 'input_threshold', 'deltas', 'test_exact', 'direct', 'tested',
                 'gate')

    def __init__(self, backend, state, dense, config, gate=None):
        self.backend = backend
        self.stream = state.executor_state
        self.caches = state.caches
        self.dense = dense
        self.rows_cutoff = config.layer_dense_fallback
        self.window_cutoff = config.window_dense_fallback
        self.thresholds = state.thresholds
        self.input_threshold = state.input_threshold
        self.deltas: dict[int, tuple] = {}
        self.test_exact = config.exact_change_test
        self.direct = False  # a run may store its values itself (set per layer)
        self.tested = False  # the layer reports the rows it stores as its changes (per layer)
        self.gate = gate  # where layers may recompute (None: everywhere)


class InputTables:
    """What the eager executor keeps per input shape for reading the input."""

    def __init__(self, plan: Plan, wants_old: bool):
        self.wants_old = wants_old  # a global pooling reads the input's deltas
        self.full = full_change(plan.input, plan.device)
        self._input = plan.input
        self._device = plan.device
        self._tile_tables: dict[int, torch.Tensor] = {}

    def tile_table(self, tile: int) -> torch.Tensor:
        """Return int64 (tiles, tile * tile): input pixel rows of each input tile (P: outside)."""
        table = self._tile_tables.get(tile)
        if table is None:
            h, w = self._input.height, self._input.width
            nty, ntx = -(-h // tile), -(-w // tile)
            ty, tx = torch.meshgrid(torch.arange(nty), torch.arange(ntx), indexing='ij')
            y = ty.reshape(-1, 1, 1) * tile + torch.arange(tile).view(1, -1, 1)
            x = tx.reshape(-1, 1, 1) * tile + torch.arange(tile).view(1, 1, -1)
            inside = (y < h) & (x < w)
            table = torch.where(inside, y * w + x, h * w).view(nty * ntx, -1).to(self._device)
            self._tile_tables[tile] = table
        return table


class EagerExecutor:
    """Runs an engine's frames layer by layer, deciding on the host."""

    name = 'eager'
    use_graph = False
    # Settings a plan is built from: changing one rebuilds the plans.
    plan_settings = ('tile', 'backend', 'allow_dense_tail')

    def __init__(self, engine: Any):
        self.engine = engine
        self.backend = get_backend(engine.config.backend, engine.device)

    def reconfigured(self) -> None:
        """Take the engine's new configuration (its plans are rebuilt)."""
        self.backend = get_backend(self.engine.config.backend, self.engine.device)

    # -- plans and streams ----------------------------------------------------------------------

    def tiling(self, config: Any) -> Tiling:
        """Square tiles of the ``tile`` setting (see compute_tile)."""
        return Tiling(config.tile)

    def build(self, plan: Plan, config: Any) -> tuple[list, InputTables]:
        """Return the runs of a plan's layers (with what reads what) and its input tables."""
        values = plan.program.values
        runs = [make_run(g, values, plan.device, plan.dtype) for g in plan.layers]
        gap_inputs = {g.layer.inputs[0] for g in plan.layers if g.kind == Kind.GAP}
        for r in runs:
            r.want_old = r.out in gap_inputs
        _fold_class_argmax(runs, plan)
        return runs, InputTables(plan, plan.program.input_id in gap_inputs)

    def unkept(self, plan: Plan) -> frozenset[int]:
        """Return the values whose caches no run uses: upsamplings folded into an arg-max."""
        return frozenset(r.out for r in plan.runs if getattr(r, 'folded', False))

    def plan_bytes(self, plan: Plan) -> int:
        """Bytes of the runs' index tables and converted weights."""
        total = 0
        for r in plan.runs:
            for t in vars(r).values():
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def new_stream(self, plan: Plan) -> EagerStream:
        """Return the per-stream part of a fresh state."""
        return EagerStream(len(plan.runs))

    def started(self, plan: Plan, state: StreamState, x: torch.Tensor) -> None:
        """Complete a state whose caches were copied in: the global pools' running sums."""
        for g, run in zip(plan.layers, plan.runs):
            if g.kind == Kind.GAP:
                src = run.in_values[0]
                state.executor_state.sums[run.index] = \
                    state.caches[run.inputs[0]][:src.positions].sum(0, dtype=torch.float64)

    def calibrated(self, state: StreamState) -> None:
        """Thresholds are read per frame: nothing to rebind."""

    # -- a frame --------------------------------------------------------------------------------

    def run(self, plan: Plan, state: StreamState, frame: Frame) -> tuple[FrameStats, bool]:
        """Run one frame; return its statistics and whether the frontier changed."""
        engine, config = self.engine, self.engine.config
        profile = config.profile
        start = clock(engine.device) if profile else 0.0
        stats = FrameStats(dense=frame.dense)
        f = LayerFrame(self.backend, state, frame.dense, config, frame.gate)
        change = self._input(plan, f, frame.x, frame.tiles, frame.tile, stats)
        if (not f.dense and change is not None and f.gate is None
                and stats.input_fraction > config.frame_dense_fallback):
            # A dense frame reads the whole input, as a refresh does: the tiles the change map
            # held back would otherwise stay stale under a dense pass (a moving camera).
            f.dense = stats.dense = True
            change = self._input(plan, f, frame.x, None, 1, stats)
        stream = state.executor_state
        if f.dense:
            stream.stale = [None] * len(plan.runs)  # a dense frame recomputes everything
        else:
            stats.gate_fraction = 1.0 if f.gate is None else f.gate.fraction
        changes: dict[int, Change | None] = {plan.program.input_id: change}
        layer_stats = stats.layers
        for run in plan.runs:
            ls = LayerStats(run.name, run.kind, run.positions,
                            dense_macs=run.positions * run.macs_per_position)
            t0 = clock(engine.device) if profile else 0.0
            changes[run.out] = run.step(f, changes, ls)
            if profile:
                ls.time_ms = (clock(engine.device) - t0) * 1e3
            layer_stats.append(ls)
        if profile:
            stats.time_ms = (clock(engine.device) - start) * 1e3
        frontier_changed = f.dense or any(changes.get(v) is not None
                                          for v in plan.program.frontier)
        return stats, frontier_changed

    def _input(self, plan: Plan, f: LayerFrame, x: torch.Tensor, tiles: Any, tile: int,
               stats: FrameStats) -> Change | None:
        value = plan.input
        input_id = plan.program.input_id
        cache = f.caches[input_id]
        if f.dense:
            as_nchw(cache, value.height, value.width).copy_(x)
            if plan.tables.wants_old:
                f.deltas[input_id] = (None, None)
            stats.input_fraction = 1.0
            return plan.tables.full
        tiles = torch.as_tensor(tiles, device=self.engine.device)
        ids = tiles.reshape(-1).nonzero().squeeze(1)
        if ids.numel() * 4 > tiles.numel():
            # Many tiles (a moving camera): test and store the frame in one pass. At 854x480
            # with every pixel moving, one pass took 5.2 ms whatever the share of tiles; tile
            # by tile took 2.3 ms at 5% of them, 6.3 at 20%, 8.8 at 30% and 33 at all. A still
            # camera moves few pixels of a tile, which makes tile by tile cheaper.
            return self._whole_input(plan, f, x, tiles, tile, cache, stats)
        if tile == 1:
            pixels = ids
        else:
            pixels = plan.tables.tile_table(tile).index_select(0, ids).view(-1)
            pixels = pixels[pixels < value.positions]
        if pixels.numel() == 0:
            return None
        if x.is_contiguous(memory_format=torch.channels_last):
            rows = x.permute(0, 2, 3, 1).reshape(value.positions, -1).index_select(0, pixels)
        else:
            rows = x.reshape(value.channels, -1).index_select(1, pixels).t()
        changed, old = self.backend.store(cache, pixels, rows, f.input_threshold, True,
                                          plan.tables.wants_old)
        if changed is None:
            changed = pixels
        if plan.tables.wants_old:
            f.deltas[input_id] = (changed, old)
        stats.input_fraction = changed.numel() / value.positions
        if changed.numel() == 0:
            return None
        return Change(value.height, value.width, idx=changed)

    def _whole_input(self, plan: Plan, f: LayerFrame, x: torch.Tensor, tiles: torch.Tensor,
                     tile: int, cache: torch.Tensor, stats: FrameStats) -> Change | None:
        """Store a frame many of whose ``tiles`` changed, in one pass over the frame."""
        value = plan.input
        input_id = plan.program.input_id
        # A global pooling of the input needs the rows it loses (a frame's copy: cheap here).
        old = cache[:value.positions].clone() if plan.tables.wants_old else None
        # The tiles the change map held back keep their cached pixels: they test unchanged.
        changed = self.backend.intake(x, cache, tiles, tile, f.input_threshold)
        count = int(changed.count_nonzero())
        stats.input_fraction = count / value.positions
        if count == value.positions:
            if old is not None:
                f.deltas[input_id] = (None, None)  # a fresh sum is cheaper
            return plan.tables.full
        if count == 0:
            return None
        change = Change(value.height, value.width, mask=changed.view(value.height, value.width),
                        count=count)
        if old is not None:
            f.deltas[input_id] = (change.idx, old.index_select(0, change.idx))
        return change


def _fold_class_argmax(runs: list, plan: Plan) -> None:
    """
    Fold a resampling read only by a class arg-max into it (see ``Positionwise.fold``).

    That is a final upsampling of class scores to the frame followed by the class map (a
    segmentation network's usual end): the arg-max then needs the upsampled scores only near
    class boundaries.
    """
    readers: dict[int, int] = {}
    for r in runs:
        for v in set(r.inputs) | set(r.operand_ids):
            readers[v] = readers.get(v, 0) + 1
    frontier = set(plan.program.frontier)
    producer = {r.out: r for r in runs}
    for r in runs:
        if not (r.kind == Kind.POSITIONWISE and r.layer.attrs.fn == 'argmax' and r.terminal
                and not r.steps and not r.want_old and r.channels == 1):
            continue
        source = producer.get(r.inputs[0])
        if (source is None or source.kind != Kind.RESAMPLE or not source.convex
                or source.steps or source.want_old or readers.get(source.out) != 1
                or source.out in frontier or source.channels < 2):
            continue
        r.fold(source)
