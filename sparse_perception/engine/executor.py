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
:class:`IncrementalModel`: run an unmodified ``nn.Module`` incrementally, frame by frame.

One model instance serves any number of camera streams: each stream's caches live in its own
:class:`StreamState`. Per input size the model lowers the traced module once (see graph.py)
and builds its layer runs (see layers.py); a frame whose size differs from the state's
re-initialises that state and runs dense.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sparse_perception.engine.backend import as_nchw, get_backend, new_cache
from sparse_perception.engine.config import EngineConfig, layer_threshold
from sparse_perception.engine.errors import EngineError
from sparse_perception.engine.gate import Gate
from sparse_perception.engine.graph import lower, macs_per_position, Program, trace
from sparse_perception.engine.layers import Change, full_change, make_run, Run
from sparse_perception.engine.stats import FrameStats, LayerStats
import torch
from torch import nn


class StreamState:
    """The caches and bookkeeping of one stream (create with ``IncrementalModel.new_state``)."""

    def __init__(self) -> None:
        self.plan: _Plan | None = None
        self.caches: list[torch.Tensor] = []  # per value id: (P + 3, C) NHWC rows
        # per run: bool (H, W) positions whose inputs changed outside a gate, or None
        self.stale: list[torch.Tensor | None] = []
        self.thresholds: list[float] = []  # per run
        self.rms: list[float | None] = []  # per run: RMS of its output on the first frame
        self.input_threshold = 0.0
        self.sums: dict[int, torch.Tensor] = {}  # running float64 sums of global pools
        self.tail_output: Any = None
        self.frames = 0  # frames run since the last (re)initialisation
        self.refresh_requested = False

    def request_refresh(self) -> None:
        """Run the next frame dense, recomputing every cache from the input."""
        self.refresh_requested = True

    def reset(self) -> None:
        """Drop every cache; the next frame re-initialises the state (a dense frame)."""
        self.__init__()

    @property
    def has_stale(self) -> bool:
        """Whether a gate left positions that no frame recomputed yet."""
        return any(m is not None for m in self.stale)

    @property
    def stale_positions(self) -> int:
        """Positions, over all layers, that a gate left stale and no frame recomputed yet."""
        return sum(int(m.sum()) for m in self.stale if m is not None)

    def memory_bytes(self) -> int:
        """Bytes held by this stream's caches, running sums and stale masks."""
        total = sum(c.numel() * c.element_size() for c in self.caches)
        total += sum(m.numel() for m in self.stale if m is not None)
        return total + sum(s.numel() * s.element_size() for s in self.sums.values())


class _Frame:
    """What the runs of one frame share."""

    __slots__ = ('backend', 'state', 'caches', 'dense', 'rows_cutoff', 'window_cutoff',
                 'thresholds', 'deltas', 'test_exact', 'direct', 'gate')

    def __init__(self, backend, state, dense, config, gate=None):
        self.backend = backend
        self.state = state
        self.caches = state.caches
        self.dense = dense
        self.rows_cutoff = config.layer_dense_fallback
        self.window_cutoff = config.window_dense_fallback
        self.thresholds = state.thresholds
        self.deltas: dict[int, tuple] = {}
        self.test_exact = config.exact_change_test
        self.direct = False  # a run may store its values itself (set per layer)
        self.gate: Gate | None = gate  # where layers may recompute (None: everywhere)


class _Plan:
    """The lowered program and its runs for one input shape."""

    def __init__(self, program: Program, config: EngineConfig, device: torch.device,
                 dtype: torch.dtype):
        self.program = program
        self.device = device
        self.dtype = dtype
        values = program.values
        self.runs: list[Run] = [
            make_run(i, layer, values, device, dtype, config.tile)
            for i, layer in enumerate(program.layers[1:])]
        gap_inputs = {r.inputs[0] for r in self.runs if r.kind == 'gap'}
        read = {v for r in self.runs for v in r.inputs + r.operand_ids}
        for r in self.runs:
            r.want_old = r.out in gap_inputs
            r.terminal = r.out not in read
        self.input = values[program.input_id]
        self.input_wants_old = program.input_id in gap_inputs
        self.input_full = full_change(self.input, device)
        self._tile_tables: dict[int, torch.Tensor] = {}
        self.check_layer_thresholds(config)

    def check_layer_thresholds(self, config: EngineConfig) -> None:
        """Raise :class:`EngineError` if a per-layer threshold names no layer of this plan."""
        known = {name for r in self.runs for name in r.names} | {'input'}
        unknown = sorted(set(config.layer_thresholds) - known)
        if unknown:
            raise EngineError(
                f'layer thresholds name unknown layers {unknown}; layer names are: '
                + ', '.join(r.name for r in self.runs))

    def tile_table(self, tile: int) -> torch.Tensor:
        """Return int64 (tiles, tile * tile): input pixel rows of each input tile (P = outside)."""
        table = self._tile_tables.get(tile)
        if table is None:
            h, w = self.input.height, self.input.width
            nty, ntx = -(-h // tile), -(-w // tile)
            ty, tx = torch.meshgrid(torch.arange(nty), torch.arange(ntx), indexing='ij')
            y = ty.reshape(-1, 1, 1) * tile + torch.arange(tile).view(1, -1, 1)
            x = tx.reshape(-1, 1, 1) * tile + torch.arange(tile).view(1, 1, -1)
            inside = (y < h) & (x < w)
            table = torch.where(inside, y * w + x, h * w).view(nty * ntx, -1).to(self.device)
            self._tile_tables[tile] = table
        return table

    def view(self, state: StreamState, value_id: int) -> torch.Tensor:
        """Return the model-facing view of a cached value."""
        value = self.program.values[value_id]
        cache = state.caches[value_id]
        if value.view == 'nc':
            return cache[:1]
        if value.view == 'nhw':
            return cache[:value.positions].view(1, value.height, value.width)
        return as_nchw(cache, value.height, value.width)

    def memory_bytes(self) -> int:
        """Bytes of the index tables and converted weights shared by every stream."""
        total = 0
        for r in self.runs:
            for t in vars(r).values():
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total


def apply_thresholds(engine: Any, config: EngineConfig, state: Any) -> None:
    """
    Take ``config``'s thresholds in place, for IncrementalModel and DeviceModel alike.

    ``state`` (or the engine's default one) recomputes its per-layer thresholds from the layer
    scales of its first frame and runs its next frame dense if any went down.
    """
    for plan in engine._plans.values():  # raises before anything changes
        plan.check_layer_thresholds(config)
    engine.config = config
    state = state if state is not None else engine._default_state
    if state is not None and state.plan is not None and state.frames > 0:
        before = list(state.thresholds) + [state.input_threshold]
        engine._calibrate(state.plan, state)
        after = list(state.thresholds) + [state.input_threshold]
        if any(new < old for new, old in zip(after, before)):
            # Changes held back under the old thresholds would stay in the caches: a dense
            # frame restores what the new, tighter thresholds promise.
            state.request_refresh()


class IncrementalModel:
    """
    Incremental execution of an unmodified ``nn.Module`` in eval mode.

    ``y = inc(x, tiles, state)`` runs one frame: ``x`` is ``(1, C, H, W)``; ``tiles`` is a
    bool ``(Ht, Wt)`` map of changed input tiles (a :class:`~sparse_perception.change.ChangeMap`
    also works and fixes the tile size; a plain map is read with the smallest tile size that
    fits), or None for a dense frame. Only pixels inside set
    tiles are read from ``x``; the rest of the input keeps its cached, last propagated
    value. The first frame of a state, a frame of a new size and a requested refresh run
    dense. With all thresholds 0 the result equals the dense model's on the cached input.

    ``gate`` (optional, a tile map over the input given like ``tiles``) limits where layers
    recompute: each layer recomputes its changed positions inside the gate (resampled to its
    size, see gate.py) and remembers those outside as stale, recomputing them in the first
    frame whose gate covers them. Dense frames ignore the gate. Without a gate (or with one
    that covers everything) a frame is exactly what it is ungated.

    The returned tensors are views of the state's caches (channels_last for 4-D outputs): they
    are overwritten by the next frame of the same state; clone them to keep them.
    """

    def __init__(self, module: nn.Module, config: EngineConfig | None = None):
        if module.training:
            raise EngineError(f'{type(module).__name__} is in training mode; call .eval() '
                              'before wrapping it (BatchNorm must use its running statistics)')
        self.module = module
        self.config = config or EngineConfig()
        self.graph = trace(module)
        first = next(iter(module.parameters()), None)
        self.device = first.device if first is not None else torch.device('cpu')
        self.dtype = first.dtype if first is not None else torch.float32
        self.backend = get_backend(self.config.backend, self.device)
        self._plans: dict[tuple, _Plan] = {}
        self._default_state: StreamState | None = None
        self.last_stats: FrameStats | None = None

    # -- public ---------------------------------------------------------------------------------

    def new_state(self) -> StreamState:
        """Return empty per-stream caches (initialised by the stream's first frame)."""
        return StreamState()

    def plan_for(self, x: torch.Tensor) -> _Plan:
        """Return (building once) the plan for inputs shaped like ``x``."""
        key = tuple(x.shape)
        plan = self._plans.get(key)
        if plan is None:
            program = lower(self.graph, x, self.config.allow_dense_tail)
            plan = _Plan(program, self.config, self.device, self.dtype)
            self._plans[key] = plan
        return plan

    def reconfigure(self, config: EngineConfig,
                    state: StreamState | None = None) -> None:
        """
        Use ``config`` from the next frame on, keeping the caches where that is possible.

        Thresholds and dense fall-backs change in place: the given ``state`` (or the default
        one) recomputes its per-layer thresholds from the layer scales it measured on its first
        frame, and runs its next frame dense if any threshold went down (what the old ones held
        back would otherwise stay). A new compute tile, backend or tail rule rebuilds the plans,
        so the next frame of every stream runs dense.
        """
        old = self.config
        if (config.tile, config.backend, config.allow_dense_tail) != (
                old.tile, old.backend, old.allow_dense_tail):
            self.backend = get_backend(config.backend, self.device)
            self.config = config
            self._plans.clear()
            return
        apply_thresholds(self, config, state)

    def dense_macs(self, x: torch.Tensor) -> int:
        """Multiply-accumulates of one dense pass on inputs like ``x`` (no plan is kept)."""
        return dense_macs(self, self._check_input(x))

    def layer_names(self, x: torch.Tensor) -> list[str]:
        """Return the names of the layers (for threshold overrides) for inputs like ``x``."""
        return [r.name for r in self.plan_for(self._check_input(x)).runs]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, tiles: Any = None,
                 state: StreamState | None = None, gate: Any = None) -> Any:
        """Run one frame (see the class docstring)."""
        x = self._check_input(x)
        if state is None:
            if self._default_state is None:
                self._default_state = self.new_state()
            state = self._default_state
        profile = self.config.profile
        start = _clock(self.device) if profile else 0.0
        plan = self.plan_for(x)
        tile_size, refresh, tiles = _unpack_tiles(tiles)
        dense = tiles is None or refresh or state.refresh_requested
        if state.plan is not plan:
            self._init_state(state, plan)
            dense = True
        stats = FrameStats(dense=dense)
        f = _Frame(self.backend, state, dense, self.config,
                   None if dense else self._gate(plan, state, gate))
        change = self._input(plan, f, x, tiles, tile_size, stats)
        if (not f.dense and change is not None and f.gate is None
                and stats.input_fraction > self.config.frame_dense_fallback):
            # A dense frame reads the whole input, as a refresh does: the tiles the change map
            # held back would otherwise stay stale under a dense pass (a moving camera).
            f.dense = stats.dense = True
            change = self._input(plan, f, x, None, None, stats)
        if f.dense:
            state.stale = [None] * len(plan.runs)  # a dense frame recomputes everything
        else:
            stats.gate_fraction = 1.0 if f.gate is None else f.gate.fraction
        changes: dict[int, Change | None] = {plan.program.input_id: change}
        layer_stats = stats.layers
        for run in plan.runs:
            ls = LayerStats(run.name, run.kind, run.positions,
                            dense_macs=run.positions * run.macs_per_position)
            t0 = _clock(self.device) if profile else 0.0
            changes[run.out] = run.step(f, changes, ls)
            if profile:
                ls.time_ms = (_clock(self.device) - t0) * 1e3
            layer_stats.append(ls)
        output = self._output(plan, state, changes, f.dense)
        if state.frames == 0:
            self._calibrate(plan, state)
        state.frames += 1
        state.refresh_requested = False
        if profile:
            stats.time_ms = (_clock(self.device) - start) * 1e3
        self.last_stats = stats
        return output

    # -- internals ------------------------------------------------------------------------------

    def _check_input(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise EngineError(f'x must be a torch tensor (1, C, H, W), got {type(x).__name__}')
        if x.dim() != 4 or x.shape[0] != 1:
            raise EngineError(f'x has shape {tuple(x.shape)}; expected (1, C, H, W) (batch 1: '
                              'serve several streams with one state each)')
        if x.device != self.device:
            raise EngineError(f'x is on {x.device} but the model is on {self.device}; move the '
                              'input to the model device')
        if x.dtype != self.dtype:
            if not x.dtype.is_floating_point:
                raise EngineError(f'x has dtype {x.dtype}; expected a float tensor '
                                  f'({self.dtype}), normalised as the model expects')
            x = x.to(self.dtype)
        return x

    def _init_state(self, state: StreamState, plan: _Plan) -> None:
        state.reset()
        state.plan = plan
        device = self.device
        state.caches = [new_cache(v.positions, v.channels, v.dtype, device)
                        for v in plan.program.values]
        state.thresholds = [0.0] * len(plan.runs)
        state.stale = [None] * len(plan.runs)

    def _gate(self, plan: _Plan, state: StreamState, gate: Any) -> Gate | None:
        """Turn a gate tile map (or ChangeMap-like gate) into a :class:`Gate`, None if none."""
        value = plan.input
        if gate is None:
            if any(m is not None for m in state.stale):
                # Gated frames left positions stale: an ungated frame recomputes them all.
                return Gate(torch.ones(1, 1, dtype=torch.bool, device=self.device),
                            max(value.height, value.width), value.height, value.width)
            return None
        tile_size, _, tiles = _unpack_tiles(gate, 'gate')
        tile = _tile_size(tiles, tile_size, value.height, value.width)
        return Gate(torch.as_tensor(tiles, device=self.device), tile, value.height, value.width)

    def _calibrate(self, plan: _Plan, state: StreamState) -> None:
        """
        Set per-layer thresholds: override, else scale x RMS of the first frame's output.

        Global average pools take the larger of the two scales (see EngineConfig.global_scale).
        """
        cfg = self.config
        state.input_threshold = float(cfg.layer_thresholds.get('input', 0.0))
        if len(state.rms) != len(plan.runs):  # the first frame: measure each layer's scale
            state.rms = [float(state.caches[r.out][:r.positions].double().pow(2).mean().sqrt())
                         if r.value.dtype.is_floating_point else None for r in plan.runs]
        for run in plan.runs:
            state.thresholds[run.index] = layer_threshold(cfg, run.names, run.kind,
                                                          state.rms[run.index])

    def _input(self, plan: _Plan, f: _Frame, x: torch.Tensor, tiles: Any, tile_size: int | None,
               stats: FrameStats) -> Change | None:
        value = plan.input
        cache = f.caches[plan.program.input_id]
        if f.dense:
            as_nchw(cache, value.height, value.width).copy_(x)
            if plan.input_wants_old:
                f.deltas[plan.program.input_id] = (None, None)
            stats.input_fraction = 1.0
            return plan.input_full
        tile = _tile_size(tiles, tile_size, value.height, value.width)
        tiles = torch.as_tensor(tiles, device=self.device)
        if tile == 1:
            pixels = tiles.reshape(-1).nonzero().squeeze(1)
        else:
            ids = tiles.reshape(-1).nonzero().squeeze(1)
            pixels = plan.tile_table(tile).index_select(0, ids).view(-1)
            pixels = pixels[pixels < value.positions]
        if pixels.numel() == 0:
            return None
        if x.is_contiguous(memory_format=torch.channels_last):
            rows = x.permute(0, 2, 3, 1).reshape(value.positions, -1).index_select(0, pixels)
        else:
            rows = x.reshape(value.channels, -1).index_select(1, pixels).t()
        changed, old = self.backend.store(cache, pixels, rows, f.state.input_threshold, True,
                                          plan.input_wants_old)
        if changed is None:
            changed = pixels
        if plan.input_wants_old:
            f.deltas[plan.program.input_id] = (changed, old)
        stats.input_fraction = changed.numel() / value.positions
        if changed.numel() == 0:
            return None
        return Change(value.height, value.width, idx=changed)

    def _output(self, plan: _Plan, state: StreamState, changes: dict, dense: bool) -> Any:
        program = plan.program
        if (program.tail_is_dense and not dense and state.tail_output is not None
                and all(changes.get(v) is None for v in program.frontier)):
            return state.tail_output
        views = [plan.view(state, v) for v in program.frontier]
        if program.tail_mutates:  # never let the tail write into the caches
            views = [v.clone() for v in views]
        out = program.tail(*views)
        if program.tail_is_dense:
            state.tail_output = out
        return out


def dense_macs(engine: Any, x: torch.Tensor) -> int:
    """Multiply-accumulates of a dense pass of ``engine``'s network on inputs like ``x``."""
    plan = engine._plans.get(tuple(x.shape))
    program = plan.program if plan is not None else lower(engine.graph, x,
                                                          engine.config.allow_dense_tail)
    values = program.values
    return int(sum(values[layer.output].positions * macs_per_position(layer, values)
                   for layer in program.layers[1:]))


def _clock(device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _unpack_tiles(tiles: Any, what: str = 'tiles') -> tuple[int | None, bool, Any]:
    """Return (tile size or None, refresh, tile map or None) for tensors and ChangeMaps."""
    if tiles is None:
        return None, True, None
    if hasattr(tiles, 'tiles') and hasattr(tiles, 'tile_size'):
        tile_map = tiles.tiles
        if isinstance(tile_map, np.ndarray):
            tile_map = torch.from_numpy(tile_map)
        return int(tiles.tile_size), bool(getattr(tiles, 'refresh', False)), tile_map
    if isinstance(tiles, np.ndarray):
        tiles = torch.from_numpy(tiles)
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 2:
        raise EngineError(f'{what} must be a bool (Ht, Wt) tensor, a ChangeMap or None, got '
                          f'{type(tiles).__name__} {tuple(getattr(tiles, "shape", ()))}')
    if tiles.dtype != torch.bool:
        raise EngineError(f'{what} has dtype {tiles.dtype}; expected torch.bool')
    return None, False, tiles


def _tile_size(tiles: torch.Tensor, tile_size: int | None, height: int, width: int) -> int:
    """
    Tile edge that maps a (Ht, Wt) tile map onto an (height, width) image.

    Without a tile size (a plain tensor rather than a ChangeMap) this is the smallest edge t
    with (ceil(H / t), ceil(W / t)) == (Ht, Wt): the tile size of a detector whose tiles
    divide the frame.
    """
    th, tw = tiles.shape
    if tile_size is not None:
        if (-(-height // tile_size), -(-width // tile_size)) == (th, tw):
            return tile_size
        raise EngineError(f'a {th}x{tw} tile map does not match a {height}x{width} frame with '
                          f'tile size {tile_size}; expected {-(-height // tile_size)}x'
                          f'{-(-width // tile_size)}')
    t = max(-(-height // th), -(-width // tw), 1)
    if (-(-height // t), -(-width // t)) != (th, tw):
        raise EngineError(f'a {th}x{tw} tile map does not match a {height}x{width} frame; '
                          'expected (ceil(H / t), ceil(W / t)) tiles for a tile size t')
    return t
