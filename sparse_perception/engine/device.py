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
The device executor: incremental frames without host synchronisation, CUDA-graph ready.

The eager executor (eager.py) decides per layer on the host: it counts changed positions,
builds exact-size index tensors with ``nonzero`` and picks sparse or dense paths. On a GPU
every such decision is a host synchronisation (about 50 us) and every small torch op a launch
(about 8 us), which is more than a sparse layer's arithmetic. This module runs the same
lowered program (ir.py) so that a frame needs no host synchronisation at all:

- change masks stay on the device as bytes per position, one flat buffer cleared per frame;
- per layer, one *candidates* kernel runs a fixed grid over all output tiles: it computes the
  receptive-field image of the input's changed positions (plus changed epilogue operands),
  and appends tiles holding candidates to a fixed-capacity list with a device-side count
  (programs exit at once when nothing upstream changed);
- one compute kernel per layer (1x1 GEMM, implicit-GEMM KxK and transposed KxK, depthwise,
  pooling, resampling, padding, depth-to-space, concatenation, pointwise) runs one program
  per list slot, slots past the count
  exit at once, reads its inputs straight from the NHWC caches (the gather with halo is
  fused), applies the epilogue and writes the candidates into the output cache;
- a layer with a change test (threshold > 0) writes its raw values to a staging buffer and a
  second kernel applies the epilogue, tests and commits (``kernels/epilogue.py``);
- global average pooling recomputes its sum on the device when its input changed anywhere;
- statistics are counted on the device and copied to the host once per frame, read lazily;
- a spatial gate (``gate``, as in the eager executor) is one more mask per layer size, copied
  in before the frame; the candidates kernel recomputes (candidates or stale) inside it and
  keeps the rest in the layer's stale mask, which persists from frame to frame.

Every launch of an incremental frame has the same arguments from frame to frame (the bound
buffers never move), so on CUDA the whole frame is captured once as a CUDA graph and
replayed; a capture that fails falls back to eager launches, said once in the log.

What the lowering supports but this mode does not (epilogues after softmax or argmax,
epilogues the kernels cannot fuse, integer outputs other than argmax) raises
:class:`UnsupportedOpError` naming the layer; such models run on the eager executor
(``execution='auto'`` falls back to it by itself).

Differences from the eager executor: there are no per-layer dense fall-backs (the kernels run
at every changed fraction; at 100% they compute the dense result from the same code), a
frame's changed share is only known on the host when the tile map comes from the host (so
``frame_dense_fallback`` applies to host tile maps only), softmax and argmax layers always
propagate their candidates (no threshold test), and dense tails run every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import enum
import logging
from typing import Any, Callable

from sparse_perception.engine.backend import kernel_modules
from sparse_perception.engine.config import EngineConfig
from sparse_perception.engine.errors import EngineError, UnsupportedOpError
from sparse_perception.engine.executor import ConvForm, Frame, LayerGeometry, Plan, \
    StreamState, Tiling
from sparse_perception.engine.ir import Kind, Layer
from sparse_perception.engine.lower import lower
from sparse_perception.engine.stats import FrameStats, LayerStats
from sparse_perception.engine.tracing import trace
import torch
from torch import nn

LOG = logging.getLogger(__name__)
# A program of the tiled kernels computes 64 positions (8 x 8 where the map is 8 wide).
TILING = Tiling(edge=8, positions=64)
_STAT_COLUMNS = 4  # per layer: listed tiles, candidates, changed, computed positions


class Reach(enum.Enum):
    """Which positions of its core input an output position reads (for its candidates)."""

    SAME = 'same'  # the same position (1x1 convolutions, pointwise ops, concatenation)
    WINDOW = 'window'  # a window: kernel, stride, dilation and padding
    TABLE = 'table'  # the rows and columns of tap tables (resampling, padding, shuffles)


@dataclass
class _LayerSpec:
    """What one layer needs on the device, built once per input shape."""

    index: int  # row of the statistics (row 0 is the input)
    layer: Layer
    kind: Kind | ConvForm  # the core, as LayerGeometry names it
    out: int
    inputs: list
    out_hw: tuple
    in_hw: tuple
    steps: list
    macs: float
    untested: bool  # no change test (LayerGeometry.untested)
    tile: tuple[int, int]  # the plan's (TILING)
    reach: Reach = Reach.SAME  # how candidates come from the core input
    window: tuple | None = None  # kernel, stride, dilation, (top, left)
    tables: tuple | None = None  # candidate tap tables (rows (Ho, kh), cols (Wo, kw))
    weights: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Return the layer's name."""
        return self.layer.name

    @property
    def names(self) -> tuple[str, ...]:
        """Return every name the layer answers to (for threshold overrides)."""
        return self.layer.names

    @property
    def positions(self) -> int:
        """Return the output's H * W."""
        return self.out_hw[0] * self.out_hw[1]


def build_specs(plan: Plan, k: Any) -> list[_LayerSpec]:
    """Return the device data of every layer of a plan (raises what the kernels cannot run)."""
    values = plan.program.values
    return [_build_spec(g, values, plan.device, plan.dtype, k) for g in plan.layers]


class _Lowering:
    """Builds the device data of a plan without running anything (see check_lowering)."""

    def __init__(self, k: Any):
        self.k = k

    def tiling(self, config: EngineConfig) -> Tiling:
        return TILING

    def build(self, plan: Plan, config: EngineConfig) -> tuple[list[_LayerSpec], None]:
        return build_specs(plan, self.k), None

    def unkept(self, plan: Plan) -> frozenset[int]:
        return frozenset()


def _gateable(spec: _LayerSpec) -> bool:
    """Whether a spatial gate applies to this layer (not global pools, not 1x1 outputs)."""
    return spec.kind != Kind.GAP and spec.positions > 1


def _unsupported(layer: Layer, reason: str) -> UnsupportedOpError:
    return UnsupportedOpError(f'layer {layer.name!r} ({layer.kind})', layer.name,
                              f'{reason}; the sync-free device mode cannot run it (use '
                              "execution 'eager')")


def _build_spec(g: LayerGeometry, values: list, device: torch.device, dtype: torch.dtype,
                k: Any) -> _LayerSpec:
    layer = g.layer
    if not g.value.dtype.is_floating_point and layer.kind != Kind.POSITIONWISE:
        raise _unsupported(layer, f'its output is {g.value.dtype}')
    ins = g.in_values
    spec = _LayerSpec(g.index + 1, layer, g.kind, layer.output, list(layer.inputs),
                      (g.value.height, g.value.width),
                      (ins[0].height, ins[0].width) if ins else (1, 1), g.steps,
                      g.macs_per_position, g.untested, g.tile)
    try:  # the epilogue must be fusable (operands are bound per stream later)
        k.epilogue.encode(spec.steps, {v: torch.zeros(values[v].positions + 3,
                                                      values[v].channels)
                                       for v in layer.operands()})
    except k.epilogue.Unfusable as exc:
        raise _unsupported(layer, str(exc)) from None
    a = layer.attrs
    if layer.kind == Kind.CONV:  # conv1x1, depthwise or conv
        w = a.weight.to(device, dtype)
        bias = None if a.bias is None else a.bias.to(device, dtype)
        kernel, stride, dil = tuple(a.kernel), tuple(a.stride), tuple(a.dilation)
        top, _, left, _ = a.padding
        groups = a.groups
        spec.weights['bias'] = bias
        if spec.kind == ConvForm.CONV1X1:
            spec.weights['weight_t'] = w.reshape(w.shape[0], -1).t().contiguous()
            return spec
        spec.reach = Reach.WINDOW
        spec.window = (kernel, stride, dil, (top, left))
        if spec.kind == ConvForm.DEPTHWISE:
            spec.weights['taps'] = k.depthwise.depthwise_weight(w)
        else:
            spec.weights['gemm'] = k.conv.conv_weight(w)
        spec.weights['groups'] = groups
        return spec
    if layer.kind == Kind.CONV_TRANSPOSE:
        # Output o reads input (o + crop - k * dilation) / stride where that is exact: tap
        # tables (Ho, kh) and (Wo, kw) give the candidates, the conv kernel the values.
        kernel, stride, dil = tuple(a.kernel), tuple(a.stride), tuple(a.dilation)
        crop = tuple(a.crop)
        spec.reach = Reach.TABLE
        spec.tables = tuple(k.conv.transposed_taps(n_out, n_in, kernel[i], stride[i], dil[i],
                                                   crop[i]).to(device)
                            for i, (n_out, n_in) in enumerate(zip(spec.out_hw, spec.in_hw)))
        spec.window = (kernel, stride, dil, crop)
        spec.weights['gemm'] = k.conv.conv_transpose_weight(a.weight.to(device, dtype),
                                                            a.groups)
        spec.weights['bias'] = None if a.bias is None else a.bias.to(device, dtype)
        spec.weights['groups'] = a.groups
        return spec
    if layer.kind == Kind.DEPTH_TO_SPACE:
        block = a.block
        rows = (torch.arange(spec.out_hw[0]) // block).to(torch.int32).to(device)
        cols = (torch.arange(spec.out_hw[1]) // block).to(torch.int32).to(device)
        spec.reach = Reach.TABLE
        spec.tables = (rows.view(-1, 1), cols.view(-1, 1))
        spec.weights['table'] = (rows, cols)
        spec.weights['shuffle'] = (block, a.order)
        return spec
    if layer.kind == Kind.POOL:
        padding = a.padding.torch_pair()  # (top, left), as the window kernels take it
        dil = tuple(a.dilation)
        spec.reach = Reach.WINDOW
        spec.window = (tuple(a.kernel), tuple(a.stride), dil, padding)
        if a.pool == 'avg':
            spec.weights['divisors'] = k.pool.avg_divisors(
                spec.in_hw, a.kernel, a.stride, padding, a.ceil_mode,
                a.count_include_pad, a.divisor_override).to(device)
        spec.weights['mode'] = a.pool
        return spec
    if layer.kind == Kind.RESAMPLE:
        rows = tuple(t.to(device) for t in k.resample.tap_tables(a.ah, spec.in_hw[0]))
        cols = tuple(t.to(device) for t in k.resample.tap_tables(a.aw, spec.in_hw[1]))
        spec.reach = Reach.TABLE
        spec.tables = (rows[0], cols[0])
        spec.weights['rows'], spec.weights['cols'] = rows, cols
        return spec
    if layer.kind == Kind.PAD:
        rows = a.rows.to(torch.int32).to(device)
        cols = a.cols.to(torch.int32).to(device)
        spec.reach = Reach.TABLE
        spec.tables = (rows.view(-1, 1), cols.view(-1, 1))
        spec.weights['table'] = (rows, cols)
        spec.weights['fill'] = float(a.value)
        return spec
    if layer.kind == Kind.POSITIONWISE:
        if spec.steps:
            raise _unsupported(layer, 'an epilogue after softmax or argmax')
        spec.weights['fn'] = a.fn
        return spec
    if layer.kind in (Kind.CAT, Kind.POINTWISE, Kind.GAP):
        return spec
    raise _unsupported(layer, f'{layer.kind} layers are not implemented by the kernels')


def check_lowering(module: nn.Module, x: torch.Tensor,
                   config: EngineConfig | None = None) -> Plan:
    """
    Lower ``module`` for inputs like ``x`` as the device executor does, on any machine.

    Raises :class:`UnsupportedOpError` naming the first layer the device executor cannot run
    (or :class:`EngineError` without Triton); nothing is launched, so no GPU or interpreter is
    needed. Returns the plan (weights in the kernels' layouts, on ``module``'s device).
    """
    k = _kernels_or_error()
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else torch.device('cpu')
    dtype = first.dtype if first is not None else torch.float32
    config = config or EngineConfig()
    return Plan(lower(trace(module), x, config.allow_dense_tail), _Lowering(k), config, device,
                dtype)


def _kernels_or_error() -> Any:
    try:
        return kernel_modules()
    except ImportError as exc:
        raise EngineError(f'the device mode needs Triton ({exc}); install the gpu extra '
                          "(pip install triton) or use execution 'eager'") from None


class DeviceStream:
    """What the device executor keeps per stream: masks, counters, lists, bound launches."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.gate_buffers: dict[tuple[int, int], torch.Tensor] = {}  # per layer size
        self.launches: dict[Any, list] = {}
        self.graphs: dict[Any, Any] = {}
        self.graph_failed = False
        self.host: torch.Tensor | None = None  # pinned copy of the counters (CUDA)
        # A gated frame ran since the last dense or whole-gate frame: stale positions may wait
        # (known on the host without reading the device's stale masks).
        self.gated = False

    @property
    def has_stale(self) -> bool:
        """Whether positions may wait for a gate (conservative: no device read)."""
        return self.gated

    def stale_positions(self) -> int:
        """Positions, over all layers, that a gate left stale (reads the device's masks)."""
        return int(self.buffers['stale'].sum()) if self.gated else 0

    def memory_bytes(self) -> int:
        """Bytes of the masks, lists, counters and staging."""
        return sum(t.numel() * t.element_size() for t in self.buffers.values())


class DeviceExecutor:
    """Runs an engine's frames on the Triton kernels without host synchronisation."""

    name = 'device'
    backend = None  # the kernels are launched directly, not through a backend
    # Settings a plan is built from: changing one rebuilds the plans. The compute tile and the
    # backend do not apply here (tiles follow each map's size; the kernels always run).
    plan_settings = ('allow_dense_tail',)

    def __init__(self, engine: Any, graph: bool | None = None):
        self.engine = engine
        self.device = engine.device
        self.k = _kernels_or_error()
        ok, reason = self.k.runtime.can_run_on(self.device)
        if not ok:
            raise EngineError(f'the device mode cannot run here: {reason}')
        self.use_graph = (self.device.type == 'cuda') if graph is None else bool(graph)
        if self.use_graph and self.device.type != 'cuda':
            raise EngineError(f'CUDA graphs need a CUDA model; this one is on {self.device} '
                              '(pass graph=False)')

    def reconfigured(self) -> None:
        """Take the engine's new configuration (its plans are rebuilt)."""

    # -- plans and streams ----------------------------------------------------------------------

    def tiling(self, config: EngineConfig) -> Tiling:
        """Tiles of a fixed number of positions, whatever the ``tile`` setting."""
        return TILING

    def build(self, plan: Plan, config: EngineConfig) -> tuple[list[_LayerSpec], None]:
        """Return the device data of a plan's layers (nothing more per input shape)."""
        return build_specs(plan, self.k), None

    def unkept(self, plan: Plan) -> frozenset[int]:
        """Return the values whose caches no run uses: none (every layer runs here)."""
        return frozenset()

    def plan_bytes(self, plan: Plan) -> int:
        """Bytes of the weights in the kernels' layouts and the tap tables."""
        total = 0
        for s in plan.runs:
            for t in list(s.weights.values()) + list(s.tables or ()):
                for part in t if isinstance(t, tuple) else (t,):
                    if isinstance(part, torch.Tensor):
                        total += part.numel() * part.element_size()
        return total

    def new_stream(self, plan: Plan) -> DeviceStream:
        """Return the per-stream buffers of a fresh state."""
        stream = DeviceStream()
        dev = self.device
        values = plan.program.values
        n = len(plan.runs)
        # One flat byte buffer for every mask: cleared by one memset per frame.
        sizes = [plan.input.positions] + [2 * s.positions for s in plan.runs]
        stream.buffers['masks'] = torch.zeros(sum(sizes), dtype=torch.uint8, device=dev)
        stream.buffers['stats'] = torch.zeros(n + 1, _STAT_COLUMNS, dtype=torch.int32,
                                              device=dev)
        gap_channels = [values[s.inputs[0]].channels for s in plan.runs if s.kind == Kind.GAP]
        stream.buffers['sums'] = torch.zeros(max(1, sum(gap_channels)), dtype=torch.float32,
                                             device=dev)
        staging = max([s.positions * values[s.out].channels for s in plan.runs] + [1])
        stream.buffers['staging'] = torch.zeros(staging, dtype=plan.dtype, device=dev)
        stream.buffers['x'] = torch.zeros(plan.input.channels, plan.input.height,
                                          plan.input.width, dtype=plan.dtype,
                                          device=dev)[None]
        for s in plan.runs:
            n_tiles = self.k.masks.tile_grid(s.out_hw, s.tile) if s.kind != Kind.GAP else 1
            stream.buffers[f'list{s.index}'] = torch.zeros(n_tiles, dtype=torch.int32,
                                                           device=dev)
        # Spatial gates: the stale masks of every gated layer (kept across frames) and one
        # gate mask per layer size (written before each gated frame).
        gated = [s for s in plan.runs if _gateable(s)]
        stream.buffers['stale'] = torch.zeros(max(1, sum(s.positions for s in gated)),
                                              dtype=torch.uint8, device=dev)
        for s in gated:
            if s.out_hw not in stream.gate_buffers:
                stream.gate_buffers[s.out_hw] = torch.zeros(s.positions, dtype=torch.uint8,
                                                            device=dev)
                stream.buffers[f'gate{s.out_hw[0]}x{s.out_hw[1]}'] = \
                    stream.gate_buffers[s.out_hw]
        return stream

    def started(self, plan: Plan, state: StreamState, x: torch.Tensor) -> None:
        """Complete a state whose caches were copied in: the input buffer."""
        state.executor_state.buffers['x'].copy_(x)

    def calibrated(self, state: StreamState) -> None:
        """Thresholds decide which layers test, hence the bound launches: bind them anew."""
        state.executor_state.launches.clear()
        state.executor_state.graphs.clear()

    # -- a frame --------------------------------------------------------------------------------

    def run(self, plan: Plan, state: StreamState,
            frame: Frame) -> tuple[Callable[[], FrameStats], bool]:
        """Run one frame; return how to read its statistics, and that the output changed."""
        stream = state.executor_state
        tiles, dense, gate = frame.tiles, frame.dense, frame.gate
        key = None
        if not dense:
            cutoff = self.engine.config.frame_dense_fallback
            if cutoff < 1.0 and gate is None and tiles.device.type == 'cpu' and \
                    float(tiles.float().mean()) > cutoff:
                dense = True
            key = (tuple(tiles.shape), frame.tile, gate is not None)
        stream.buffers['x'].copy_(frame.x)
        if dense:
            stream.buffers['stale'].zero_()
            stream.gated = False
            gate = None
            self._run(state, 'dense')
        else:
            if gate is not None:
                for (h, w), buffer in stream.gate_buffers.items():
                    buffer.copy_(gate.at(h, w).reshape(-1), non_blocking=True)
                stream.gated = not frame.whole_gate
            tiles_buffer = stream.buffers.get('tiles')
            if tiles_buffer is None or tuple(tiles_buffer.shape) != key[0]:
                stream.buffers['tiles'] = torch.zeros(key[0], dtype=torch.uint8,
                                                      device=self.device)
                stream.launches = {k: v for k, v in stream.launches.items() if k == 'dense'}
                stream.graphs.clear()
            stream.buffers['tiles'].copy_(tiles.to(torch.uint8), non_blocking=True)
            self._run(state, key)
        return self._stats(plan, stream, dense, gate), True

    def _views(self, state: StreamState, dense: bool) -> dict:
        """Masks, counts and lists of every value and layer, as views into the buffers."""
        stream = state.executor_state
        plan = state.plan
        masks, stats = stream.buffers['masks'], stream.buffers['stats']
        changed = {plan.program.input_id: masks[:plan.input.positions]}
        count = {plan.program.input_id: stats[0, 2:3]}
        cand = {}
        offset = plan.input.positions
        for s in plan.runs:
            p = s.positions
            cand[s.index] = masks[offset:offset + p]
            tested = not dense and self._tested(state, s)
            changed[s.out] = masks[offset + p:offset + 2 * p] if tested else cand[s.index]
            count[s.out] = stats[s.index, 2:3]
            offset += 2 * p
        return {'changed': changed, 'count': count, 'cand': cand}

    def _tested(self, state: StreamState, spec: _LayerSpec) -> bool:
        if spec.kind == Kind.GAP:
            return True
        if spec.kind == Kind.POSITIONWISE:
            return False  # always propagates its candidates (conservative, see module doc)
        threshold = state.thresholds[spec.index - 1] if state.thresholds else 0.0
        return (threshold > 0 or self.engine.config.exact_change_test) and not spec.untested

    def _bind(self, state: StreamState, key: Any) -> list:
        """Bind every launch of a frame (dense, or incremental with this tile map)."""
        stream = state.executor_state
        k, plan = self.k, state.plan
        dense = key == 'dense'
        views = self._views(state, dense)
        changed, count, cand = views['changed'], views['count'], views['cand']
        stats = stream.buffers['stats']
        bound = []
        input_id = plan.program.input_id
        tiles_map = stream.buffers.get('tiles')
        tile_edge = 1 if dense else key[1]
        bound.append(k.frame.intake_args(
            stream.buffers['x'], state.caches[input_id], changed[input_id],
            tiles_map if not dense else changed[input_id].view(1, -1), stats[0],
            tile_edge, state.input_threshold, dense))
        sums_offset = 0
        gated = not dense and key[2]
        stale_offset = 0
        for s in plan.runs:
            spatial = None
            if _gateable(s):
                if gated:
                    stale = stream.buffers['stale'][stale_offset:stale_offset + s.positions]
                    spatial = (stream.gate_buffers[s.out_hw], stale)
                stale_offset += s.positions
            threshold = state.thresholds[s.index - 1]
            test = self._tested(state, s) and not dense
            exact = threshold == 0
            row = stats[s.index]
            out_cache = state.caches[s.out]
            operands = {v: state.caches[v] for v in s.layer.operands()}
            if s.kind == Kind.GAP:
                channels = out_cache.shape[1]
                sums = stream.buffers['sums'][sums_offset:sums_offset + channels]
                sums_offset += channels
                src = s.inputs[0]
                bound += k.frame.global_pool_args(
                    state.caches[src], plan.program.values[src].positions, out_cache, sums,
                    changed[s.out], row, count[src], threshold, not dense, exact,
                    gate=not dense)
                continue
            tiles = stream.buffers[f'list{s.index}']
            tile_count = row[0:1]
            bound += self._bind_candidates(s, cand[s.index], changed, count, tiles,
                                           tile_count, row, dense, test, spatial)
            if test:
                staging = stream.buffers['staging'][:s.positions * out_cache.shape[1]].view(
                    s.positions, -1)
                target, ep = staging, k.epilogue.NO_EPILOGUE
            else:
                target, ep = out_cache, k.epilogue.encode(s.steps, operands)
            bound += self._bind_compute(s, state, target, ep, tiles, tile_count, cand[s.index])
            if test:
                bound.append(k.epilogue.commit_tiles_args(
                    out_cache, target, cand[s.index], changed[s.out], row, tiles, tile_count,
                    s.out_hw[0], s.out_hw[1], s.tile, k.epilogue.encode(s.steps, operands),
                    threshold, True, exact))
        return bound

    def _bind_candidates(self, s: _LayerSpec, cand: torch.Tensor, changed: dict, count: dict,
                         tiles: torch.Tensor, tile_count: torch.Tensor, row: torch.Tensor,
                         dense: bool, test: bool, spatial: tuple | None = None) -> list:
        k = self.k
        sources = [(changed[v], count[v]) for v in s.inputs]
        operands = [(changed[v], count[v]) for v in s.layer.operands()[len(s.inputs):]]
        common = {'tiles': tiles, 'count': tile_count, 'stats': row, 'dense': dense,
                  'count_changed': not test, 'spatial': spatial}
        first, rest = sources[0], sources[1:]
        if not rest and len(operands) <= 2:
            kw = {'source': first[0], 'source_count': first[1], 'in_hw': s.in_hw,
                  'operands': tuple(operands)}
            if s.reach == Reach.WINDOW:
                kw['window'] = s.window
            elif s.reach == Reach.TABLE:
                kw['tables'] = s.tables
            return [k.masks.candidates_args(cand, s.out_hw, s.tile, **kw, **common)]
        # Several inputs (concatenation) or many operands: accumulate, list on the last.
        parts = [('source', m, c) for m, c in sources] + [('operand', m, c) for m, c in operands]
        bound = []
        for i, (what, mask, cnt) in enumerate(parts):
            last = i == len(parts) - 1
            kw = {'accumulate': i > 0, 'gate': False, 'dense': dense}
            if what == 'source':
                kw.update(source=mask, source_count=cnt, in_hw=s.in_hw)
            else:
                kw.update(operands=((mask, cnt),))
            if last:
                kw.update(tiles=tiles, count=tile_count, stats=row, count_changed=not test,
                          spatial=spatial)
            bound.append(k.masks.candidates_args(cand, s.out_hw, s.tile, **kw))
        return bound

    def _bind_compute(self, s: _LayerSpec, state: StreamState, target: torch.Tensor,
                      ep: Any, tiles: torch.Tensor, tile_count: torch.Tensor,
                      cand: torch.Tensor) -> list:
        k = self.k
        values = state.plan.program.values
        src = state.caches[s.inputs[0]]
        w = s.weights
        common = {'cand': cand, 'epilogue': ep}
        if s.kind == ConvForm.CONV1X1:
            return [k.conv1x1.conv1x1_tiles_args(src, w['weight_t'], w['bias'], target,
                                                 s.out_hw, s.tile, tiles, tile_count,
                                                 **common)]
        if s.kind == Kind.CONV_TRANSPOSE:
            kernel, stride, dil, pads = s.window
            geometry = k.window.Geometry(s.in_hw, s.out_hw, kernel, stride, dil, pads)
            return [k.conv.conv_args(src, w['gemm'], w['bias'], target, geometry, w['groups'],
                                     s.tile, tiles, tile_count, transposed=True, **common)]
        if s.kind == Kind.DEPTH_TO_SPACE:
            return [k.gather.copy_tiles_args(src, target, s.out_hw, s.tile, tiles, tile_count,
                                             table=w['table'], in_width=s.in_hw[1],
                                             shuffle=w['shuffle'], **common)]
        if s.kind in (Kind.CONV, ConvForm.DEPTHWISE, Kind.POOL):
            kernel, stride, dil, pads = s.window
            geometry = k.window.Geometry(s.in_hw, s.out_hw, kernel, stride, dil, pads)
            if s.kind == ConvForm.DEPTHWISE:
                return [k.depthwise.depthwise_args(src, w['taps'], w['bias'], target, geometry,
                                                   s.tile, tiles, tile_count, src.shape[1],
                                                   **common)]
            if s.kind == Kind.CONV:
                return [k.conv.conv_args(src, w['gemm'], w['bias'], target, geometry,
                                         w['groups'], s.tile, tiles, tile_count, **common)]
            return [k.pool.pool_args(src, target, w['mode'], geometry, s.tile, tiles,
                                     tile_count, w.get('divisors'), **common)]
        if s.kind == Kind.RESAMPLE:
            return [k.resample.resample_tiles_args(src, target, s.in_hw, s.out_hw, w['rows'],
                                                   w['cols'], s.tile, tiles, tile_count,
                                                   **common)]
        if s.kind == Kind.PAD:
            return [k.gather.copy_tiles_args(src, target, s.out_hw, s.tile, tiles, tile_count,
                                             table=w['table'], in_width=s.in_hw[1],
                                             fill=w['fill'], **common)]
        if s.kind == Kind.POSITIONWISE:
            return [k.positionwise.positionwise_args(src, target, w['fn'], s.out_hw, s.tile,
                                                     tiles, tile_count, cand)]
        if s.kind == Kind.POINTWISE:
            return [k.gather.copy_tiles_args(src, target, s.out_hw, s.tile, tiles, tile_count,
                                             **common)]
        bound, col0 = [], 0  # cat
        for v in s.inputs:
            bound.append(k.gather.copy_tiles_args(state.caches[v], target, s.out_hw, s.tile,
                                                  tiles, tile_count, col0=col0, **common))
            col0 += values[v].channels
        return bound

    # -- running ---------------------------------------------------------------------------------

    def _launches(self, state: StreamState, key: Any) -> list:
        stream = state.executor_state
        bound = stream.launches.get(key)
        if bound is None:
            bound = self._bind(state, key)
            stream.launches[key] = bound
        return bound

    def _body(self, state: StreamState, bound: list) -> None:
        stream = state.executor_state
        stream.buffers['masks'].zero_()
        stream.buffers['stats'].zero_()
        stream.buffers['sums'].zero_()
        launch = self.k.runtime.launch
        for kernel, grid, args, meta in bound:
            launch(kernel, grid, *args, **meta)

    def _run(self, state: StreamState, key: Any) -> None:
        stream = state.executor_state
        bound = self._launches(state, key)
        if key == 'dense' or not self.use_graph or stream.graph_failed:
            self._body(state, bound)
            return
        graph = stream.graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        # First incremental frame of this tile map: run it eagerly (compiling every kernel),
        # then capture the same launches for the next frames.
        self._body(state, bound)
        try:
            graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize(self.device)
            with torch.cuda.graph(graph):
                self._body(state, bound)
            stream.graphs[key] = graph
        except Exception as exc:  # any capture failure: stay eager, say so once
            stream.graph_failed = True
            LOG.warning('device mode: CUDA graph capture failed (%s); running frames eagerly',
                        exc)

    def _stats(self, plan: Plan, stream: DeviceStream, dense: bool,
               gate: Any) -> Callable[[], FrameStats]:
        """Copy the counters off the device without waiting; return how to read them."""
        stats = stream.buffers['stats']
        event = None
        if self.device.type == 'cuda':
            if stream.host is None:
                stream.host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            host = stream.host
            host.copy_(stats, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = stats.clone()

        def read() -> FrameStats:
            if event is not None:
                event.synchronize()
            frame_stats = self._frame_stats(plan, host, dense)
            if gate is not None:
                frame_stats.gate_fraction = gate.fraction
            return frame_stats
        return read

    def _frame_stats(self, plan: Plan, host: torch.Tensor, dense: bool) -> FrameStats:
        counts = host.tolist()
        stats = FrameStats(dense=dense,
                           input_fraction=counts[0][2] / max(1, plan.input.positions))
        for s in plan.runs:
            tiles, active, changed, computed = counts[s.index]
            ls = LayerStats(s.layer.name, s.kind, s.positions,
                            dense_macs=s.positions * s.macs)
            if s.kind == Kind.GAP:
                computed = active
            ls.active, ls.changed, ls.computed = active, changed, computed
            ls.mode = 'full' if dense else ('sparse' if active else 'skip')
            ls.macs = computed * s.macs
            stats.layers.append(ls)
        return stats
