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
:class:`DeviceModel`: incremental execution without host synchronisation, CUDA-graph ready.

The eager executor (executor.py) decides per layer on the host: it counts changed positions,
builds exact-size index tensors with ``nonzero`` and picks sparse or dense paths. On a GPU
every such decision is a host synchronisation (about 50 us) and every small torch op a launch
(about 8 us), which is more than a sparse layer's arithmetic. This module runs the same
lowered program (graph.py) so that a frame needs no host synchronisation at all:

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
:class:`UnsupportedOpError` naming the layer; such models run on
:class:`~sparse_perception.engine.IncrementalModel`.

Differences from the eager executor: there are no per-layer dense fall-backs (the kernels run
at every changed fraction; at 100% they compute the dense result from the same code), a
frame's changed share is only known on the host when the tile map comes from the host (so
``frame_dense_fallback`` applies to host tile maps only), softmax and argmax layers always
propagate their candidates (no threshold test), and dense tails run every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import Any

from sparse_perception.engine.backend import as_nchw, new_cache
from sparse_perception.engine.config import EngineConfig, layer_threshold
from sparse_perception.engine.errors import EngineError, UnsupportedOpError
from sparse_perception.engine.executor import (_tile_size, _unpack_tiles, apply_thresholds,
                                               dense_macs)
from sparse_perception.engine.gate import Gate
from sparse_perception.engine.graph import Layer, lower, macs_per_position, Program, trace
from sparse_perception.engine.layers import convert_step
from sparse_perception.engine.stats import FrameStats, LayerStats
import torch
from torch import nn

LOG = logging.getLogger(__name__)
_STAT_COLUMNS = 4  # per layer: listed tiles, candidates, changed, computed positions


def _kernels() -> Any:
    """Import the kernel modules (Triton) on first use."""
    from sparse_perception.kernels import (conv, conv1x1, depthwise, epilogue, frame, gather,
                                           masks, pool, positionwise, resample, window)
    from sparse_perception.kernels import runtime

    return _Modules(conv, conv1x1, depthwise, epilogue, frame, gather, masks, pool,
                    positionwise, resample, window, runtime)


@dataclass
class _Modules:
    conv: Any
    conv1x1: Any
    depthwise: Any
    epilogue: Any
    frame: Any
    gather: Any
    masks: Any
    pool: Any
    positionwise: Any
    resample: Any
    window: Any
    runtime: Any


@dataclass
class _LayerSpec:
    """What one layer needs on the device, built once per input shape."""

    index: int  # row of the statistics
    layer: Layer
    kind: str  # conv1x1 conv conv_transpose depthwise pool resample pad depth_to_space cat
    #            pointwise positionwise gap
    out: int
    inputs: list
    out_hw: tuple
    in_hw: tuple
    tile: tuple = (8, 8)
    geom: str = 'same'  # how candidates come from the core input: window, table, same
    window: tuple | None = None  # kernel, stride, dilation, (top, left)
    tables: tuple | None = None  # candidate tap tables (rows (Ho, kh), cols (Wo, kw))
    weights: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    macs: float = 0.0
    terminal: bool = False

    @property
    def positions(self) -> int:
        """Return the output's H * W."""
        return self.out_hw[0] * self.out_hw[1]


class _DevicePlan:
    """The lowered program and the per-layer device data for one input shape."""

    def __init__(self, program: Program, config: EngineConfig, device: torch.device,
                 dtype: torch.dtype, k: _Modules):
        self.program = program
        self.device = device
        self.dtype = dtype
        values = program.values
        self.input = values[program.input_id]
        self.specs = []
        read = set()
        for layer in program.layers[1:]:
            read.update(layer.operands())
        for i, layer in enumerate(program.layers[1:]):
            spec = _build_spec(i + 1, layer, values, device, dtype, k)
            spec.terminal = layer.output not in read
            self.specs.append(spec)
        self.check_layer_thresholds(config)

    def check_layer_thresholds(self, config: EngineConfig) -> None:
        """Raise :class:`EngineError` if a per-layer threshold names no layer of this plan."""
        known = {n for s in self.specs for n in s.layer.names} | {'input'}
        unknown = sorted(set(config.layer_thresholds) - known)
        if unknown:
            raise EngineError(f'layer thresholds name unknown layers {unknown}; layer names '
                              'are: ' + ', '.join(s.layer.name for s in self.specs))


def _gateable(spec: _LayerSpec) -> bool:
    """Whether a spatial gate applies to this layer (not global pools, not 1x1 outputs)."""
    return spec.kind != 'gap' and spec.positions > 1


def _unsupported(layer: Layer, reason: str) -> UnsupportedOpError:
    return UnsupportedOpError(f'layer {layer.name!r} ({layer.kind})', layer.name,
                              f'{reason}; the sync-free device mode cannot run it (use '
                              'IncrementalModel, the eager executor)')


def _build_spec(index: int, layer: Layer, values: list, device: torch.device,
                dtype: torch.dtype, k: _Modules) -> _LayerSpec:
    out = values[layer.output]
    ins = [values[v] for v in layer.inputs]
    if not out.dtype.is_floating_point and layer.kind != 'positionwise':
        raise _unsupported(layer, f'its output is {out.dtype}')
    spec = _LayerSpec(index, layer, layer.kind, layer.output, list(layer.inputs),
                      (out.height, out.width), (ins[0].height, ins[0].width) if ins else (1, 1))
    spec.tile = k.window.cache_tile(spec.out_hw)
    spec.macs = macs_per_position(layer, values)
    spec.steps = [convert_step(s, device, dtype) for s in layer.epilogue]
    try:  # the epilogue must be fusable (operands are bound per stream later)
        k.epilogue.encode(spec.steps, {v: torch.zeros(values[v].positions + 3,
                                                      values[v].channels)
                                       for v in layer.operands()})
    except k.epilogue.Unfusable as exc:
        raise _unsupported(layer, str(exc)) from None
    a = layer.attrs
    if layer.kind == 'conv':
        w = a['weight'].to(device, dtype)
        bias = None if a['bias'] is None else a['bias'].to(device, dtype)
        kernel, stride, dil = tuple(a['kernel']), tuple(a['stride']), tuple(a['dilation'])
        top, _, left, _ = a['pads']
        groups = a['groups']
        spec.weights['bias'] = bias
        if kernel == (1, 1) and stride == (1, 1) and not any(a['pads']) and groups == 1:
            spec.kind = 'conv1x1'
            spec.weights['weight_t'] = w.reshape(w.shape[0], -1).t().contiguous()
            return spec
        spec.geom = 'window'
        spec.window = (kernel, stride, dil, (top, left))
        if groups == ins[0].channels and w.shape[1] == 1:
            spec.kind = 'depthwise'
            spec.weights['taps'] = k.depthwise.depthwise_weight(w)
        else:
            spec.weights['gemm'] = k.conv.conv_weight(w)
        spec.weights['groups'] = groups
        return spec
    if layer.kind == 'conv_transpose':
        # Output o reads input (o + padding - k * dilation) / stride where that is exact: tap
        # tables (Ho, kh) and (Wo, kw) give the candidates, the conv kernel the values.
        kernel, stride, dil = tuple(a['kernel']), tuple(a['stride']), tuple(a['dilation'])
        padding = tuple(a['padding'])
        spec.geom = 'table'
        spec.tables = tuple(k.conv.transposed_taps(n_out, n_in, kernel[i], stride[i], dil[i],
                                                   padding[i]).to(device)
                            for i, (n_out, n_in) in enumerate(zip(spec.out_hw, spec.in_hw)))
        spec.window = (kernel, stride, dil, padding)
        spec.weights['gemm'] = k.conv.conv_transpose_weight(a['weight'].to(device, dtype),
                                                            a['groups'])
        spec.weights['bias'] = None if a['bias'] is None else a['bias'].to(device, dtype)
        spec.weights['groups'] = a['groups']
        return spec
    if layer.kind == 'depth_to_space':
        block = a['block']
        rows = (torch.arange(spec.out_hw[0]) // block).to(torch.int32).to(device)
        cols = (torch.arange(spec.out_hw[1]) // block).to(torch.int32).to(device)
        spec.geom = 'table'
        spec.tables = (rows.view(-1, 1), cols.view(-1, 1))
        spec.weights['table'] = (rows, cols)
        spec.weights['shuffle'] = (block, a['order'])
        return spec
    if layer.kind == 'pool':
        padding = tuple(a['padding'])
        dil = tuple(a.get('dilation', (1, 1)))
        spec.geom = 'window'
        spec.window = (tuple(a['kernel']), tuple(a['stride']), dil, padding)
        if a['pool'] == 'avg':
            spec.weights['divisors'] = k.pool.avg_divisors(
                spec.in_hw, a['kernel'], a['stride'], padding, a['ceil_mode'],
                a['count_include_pad'], a['divisor_override']).to(device)
        spec.weights['mode'] = a['pool']
        return spec
    if layer.kind == 'resample':
        rows = tuple(t.to(device) for t in k.resample.tap_tables(a['ah'], spec.in_hw[0]))
        cols = tuple(t.to(device) for t in k.resample.tap_tables(a['aw'], spec.in_hw[1]))
        spec.geom = 'table'
        spec.tables = (rows[0], cols[0])
        spec.weights['rows'], spec.weights['cols'] = rows, cols
        return spec
    if layer.kind == 'pad':
        rows = a['rows'].to(torch.int32).to(device)
        cols = a['cols'].to(torch.int32).to(device)
        spec.geom = 'table'
        spec.tables = (rows.view(-1, 1), cols.view(-1, 1))
        spec.weights['table'] = (rows, cols)
        spec.weights['fill'] = float(a['value'])
        return spec
    if layer.kind == 'positionwise':
        if spec.steps:
            raise _unsupported(layer, 'an epilogue after softmax or argmax')
        spec.weights['fn'] = a['fn']
        return spec
    if layer.kind in ('cat', 'pointwise', 'gap'):
        return spec
    raise _unsupported(layer, f'{layer.kind} layers are not implemented by the kernels')


def check_lowering(module: nn.Module, x: torch.Tensor,
                   config: EngineConfig | None = None) -> _DevicePlan:
    """
    Lower ``module`` for inputs like ``x`` as the device mode does, on any machine.

    Raises :class:`UnsupportedOpError` naming the first layer the device mode cannot run (or
    :class:`EngineError` without Triton); nothing is launched, so no GPU or interpreter is
    needed. Returns the plan (weights in the kernels' layouts, on ``module``'s device).
    """
    try:
        k = _kernels()
    except ImportError as exc:
        raise EngineError(f'the device mode needs Triton ({exc}); install the gpu extra '
                          '(pip install triton)') from None
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else torch.device('cpu')
    dtype = first.dtype if first is not None else torch.float32
    config = config or EngineConfig()
    return _DevicePlan(lower(trace(module), x, config.allow_dense_tail), config, device, dtype,
                       k)


class DeviceState:
    """One stream's caches, masks, counters and bound launches (``DeviceModel.new_state``)."""

    def __init__(self) -> None:
        self.plan: _DevicePlan | None = None
        self.caches: list[torch.Tensor] = []
        self.thresholds: list[float] = []  # per layer spec
        self.rms: list[float] = []
        self.input_threshold = 0.0
        self.frames = 0
        self.refresh_requested = False
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

    def request_refresh(self) -> None:
        """Run the next frame dense, recomputing every cache from the input."""
        self.refresh_requested = True

    def reset(self) -> None:
        """Drop every cache; the next frame re-initialises the state (a dense frame)."""
        self.__init__()

    def memory_bytes(self) -> int:
        """Bytes held by this stream's caches, masks, lists and staging."""
        tensors = self.caches + list(self.buffers.values())
        return sum(t.numel() * t.element_size() for t in tensors)


class DeviceModel:
    """
    Sync-free incremental execution of an unmodified ``nn.Module`` on the Triton kernels.

    The call contract is :class:`~sparse_perception.engine.IncrementalModel`'s: ``y =
    model(x, tiles, state)`` with ``x`` (1, C, H, W) and ``tiles`` a bool (Ht, Wt) change map
    (or a :class:`~sparse_perception.change.ChangeMap`, or None for a dense frame); outputs
    are views of the state's caches, overwritten by its next frame. With all thresholds 0
    the output equals the dense model's (up to fp32 accumulation order).

    ``graph``: replay incremental frames as a CUDA graph (default: on CUDA). Runs on CUDA,
    and on CPU tensors under Triton's interpreter (for tests).
    """

    def __init__(self, module: nn.Module, config: EngineConfig | None = None,
                 graph: bool | None = None):
        if module.training:
            raise EngineError(f'{type(module).__name__} is in training mode; call .eval() '
                              'before wrapping it (BatchNorm must use its running statistics)')
        self.module = module
        self.config = config or EngineConfig()
        self.graph = trace(module)
        first = next(iter(module.parameters()), None)
        self.device = first.device if first is not None else torch.device('cpu')
        self.dtype = first.dtype if first is not None else torch.float32
        try:
            self.k = _kernels()
        except ImportError as exc:
            raise EngineError(f'the device mode needs Triton ({exc}); install the gpu extra '
                              '(pip install triton) or use IncrementalModel') from None
        ok, reason = self.k.runtime.can_run_on(self.device)
        if not ok:
            raise EngineError(f'the device mode cannot run here: {reason}')
        self.use_graph = (self.device.type == 'cuda') if graph is None else bool(graph)
        if self.use_graph and self.device.type != 'cuda':
            raise EngineError(f'CUDA graphs need a CUDA model; this one is on {self.device} '
                              '(pass graph=False)')
        self._plans: dict[tuple, _DevicePlan] = {}
        self._default_state: DeviceState | None = None
        self._last: tuple | FrameStats | None = None  # (state, counters, event, dense) -> stats

    # -- public ---------------------------------------------------------------------------------

    def new_state(self) -> DeviceState:
        """Return empty per-stream state (initialised by the stream's first frame)."""
        return DeviceState()

    def plan_for(self, x: torch.Tensor) -> _DevicePlan:
        """Return (building once) the plan for inputs shaped like ``x``."""
        key = tuple(x.shape)
        plan = self._plans.get(key)
        if plan is None:
            program = lower(self.graph, x, self.config.allow_dense_tail)
            plan = _DevicePlan(program, self.config, self.device, self.dtype, self.k)
            self._plans[key] = plan
        return plan

    def dense_macs(self, x: torch.Tensor) -> int:
        """Multiply-accumulates of one dense pass on inputs like ``x`` (no plan is kept)."""
        return dense_macs(self, self._check_input(x))

    def layer_names(self, x: torch.Tensor) -> list[str]:
        """Return the layer names (for threshold overrides) for inputs like ``x``."""
        return [s.layer.name for s in self.plan_for(self._check_input(x)).specs]

    def reconfigure(self, config: EngineConfig, state: DeviceState | None = None) -> None:
        """
        Use ``config`` from the next frame on, keeping the caches where that is possible.

        As :meth:`IncrementalModel.reconfigure <sparse_perception.engine.IncrementalModel.
        reconfigure>`: thresholds change in place (the given ``state``, or the default one,
        recomputes its per-layer thresholds from the layer scales of its first frame and runs
        its next frame dense if any went down); a new tail rule rebuilds the plans, so the
        next frame of every stream runs dense. The compute tile and the backend do not apply
        to this mode (its tiles follow each map's size; it always runs the kernels).
        """
        if config.allow_dense_tail != self.config.allow_dense_tail:
            self.config = config
            self._plans.clear()
            return
        apply_thresholds(self, config, state)

    @torch.no_grad()
    def start_from(self, x: torch.Tensor, caches: list[torch.Tensor],
                   state: DeviceState | None = None) -> None:
        """
        Initialise ``state`` from caches computed elsewhere, as if a dense frame of ``x`` ran.

        ``caches`` are :class:`~sparse_perception.engine.IncrementalModel`'s after a dense
        frame of the same module on ``x`` (the same lowered program: one (P + 3, C) cache per
        value). The next frame runs incrementally. This lets the interpreter tests check the
        incremental frames of full-size networks without interpreting a whole dense frame.
        """
        x = self._check_input(x)
        state = state if state is not None else self._default_state or self.new_state()
        plan = self.plan_for(x)
        self._init_state(state, plan)
        shapes = [tuple(c.shape) for c in state.caches]
        if [tuple(c.shape) for c in caches] != shapes:
            raise EngineError(f'start_from: {len(caches)} caches do not match the device '
                              f'plan of {len(shapes)} values for input {tuple(x.shape)}; pass '
                              "the eager executor's caches after a dense frame of this input")
        for target, source in zip(state.caches, caches):
            target.copy_(source)
        state.buffers['x'].copy_(x)
        self._calibrate(plan, state)
        state.frames = 1

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, tiles: Any = None,
                 state: DeviceState | None = None, gate: Any = None) -> Any:
        """Run one frame (see the class docstring; ``gate`` as the eager executor's)."""
        x = self._check_input(x)
        if state is None:
            if self._default_state is None:
                self._default_state = self.new_state()
            state = self._default_state
        plan = self.plan_for(x)
        tile_size, refresh, tiles = _unpack_tiles(tiles)
        dense = tiles is None or refresh or state.refresh_requested
        if state.plan is not plan:
            self._init_state(state, plan)
            dense = True
        key, spatial = None, None
        if not dense:
            tile = _tile_size(tiles, tile_size, plan.input.height, plan.input.width)
            spatial = self._gate(plan, state, gate)
            cutoff = self.config.frame_dense_fallback
            if cutoff < 1.0 and spatial is None and tiles.device.type == 'cpu' and \
                    float(tiles.float().mean()) > cutoff:
                dense = True
            key = (tuple(tiles.shape), tile, spatial is not None)
        state.buffers['x'].copy_(x)
        if dense:
            state.buffers['stale'].zero_()
            state.gated = False
            spatial = None
            self._run(state, 'dense')
        else:
            if spatial is not None:
                gate_map, whole = spatial
                for (h, w), buffer in state.gate_buffers.items():
                    buffer.copy_(gate_map.at(h, w).reshape(-1), non_blocking=True)
                state.gated = not whole
            tiles_buffer = state.buffers.get('tiles')
            if tiles_buffer is None or tuple(tiles_buffer.shape) != key[0]:
                state.buffers['tiles'] = torch.zeros(key[0], dtype=torch.uint8,
                                                     device=self.device)
                state.launches = {k: v for k, v in state.launches.items() if k == 'dense'}
                state.graphs.clear()
            state.buffers['tiles'].copy_(tiles.to(torch.uint8), non_blocking=True)
            self._run(state, key)
        self._record_stats(state, dense, None if spatial is None else spatial[0])
        output = self._output(plan, state)
        if state.frames == 0:
            self._calibrate(plan, state)
        state.frames += 1
        state.refresh_requested = False
        return output

    @property
    def last_stats(self) -> FrameStats | None:
        """Statistics of the last frame (read from the device on first access)."""
        if self._last is None:
            return None
        if isinstance(self._last, FrameStats):
            return self._last
        state, host, event, dense, gate = self._last
        if event is not None:
            event.synchronize()
        self._last = self._frame_stats(state, host, dense)
        if gate is not None:
            self._last.gate_fraction = gate.fraction
        return self._last

    # -- building --------------------------------------------------------------------------------

    def _check_input(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise EngineError(f'x must be a torch tensor (1, C, H, W), got {type(x).__name__}')
        if x.dim() != 4 or x.shape[0] != 1:
            raise EngineError(f'x has shape {tuple(x.shape)}; expected (1, C, H, W)')
        if x.device != self.device:
            raise EngineError(f'x is on {x.device} but the model is on {self.device}; move the '
                              'input to the model device')
        if not x.dtype.is_floating_point:
            raise EngineError(f'x has dtype {x.dtype}; expected a float tensor ({self.dtype})')
        return x

    def _init_state(self, state: DeviceState, plan: _DevicePlan) -> None:
        state.reset()
        state.plan = plan
        dev = self.device
        values = plan.program.values
        state.caches = [new_cache(v.positions, v.channels, v.dtype, dev) for v in values]
        n = len(plan.specs)
        state.thresholds = [0.0] * n
        # One flat byte buffer for every mask: cleared by one memset per frame.
        sizes = [plan.input.positions] + [2 * s.positions for s in plan.specs]
        masks = torch.zeros(sum(sizes), dtype=torch.uint8, device=dev)
        state.buffers['masks'] = masks
        state.buffers['stats'] = torch.zeros(n + 1, _STAT_COLUMNS, dtype=torch.int32,
                                             device=dev)
        gap_channels = [values[s.inputs[0]].channels for s in plan.specs if s.kind == 'gap']
        state.buffers['sums'] = torch.zeros(max(1, sum(gap_channels)), dtype=torch.float32,
                                            device=dev)
        staging = max([s.positions * values[s.out].channels for s in plan.specs] + [1])
        state.buffers['staging'] = torch.zeros(staging, dtype=self.dtype, device=dev)
        state.buffers['x'] = torch.zeros(plan.input.channels, plan.input.height,
                                         plan.input.width, dtype=self.dtype,
                                         device=dev)[None]
        for s in plan.specs:
            n_tiles = self.k.masks.tile_grid(s.out_hw, s.tile) if s.kind != 'gap' else 1
            state.buffers[f'list{s.index}'] = torch.zeros(n_tiles, dtype=torch.int32,
                                                          device=dev)
        # Spatial gates: the stale masks of every gated layer (kept across frames) and one
        # gate mask per layer size (written before each gated frame).
        gated = [s for s in plan.specs if _gateable(s)]
        state.buffers['stale'] = torch.zeros(max(1, sum(s.positions for s in gated)),
                                             dtype=torch.uint8, device=dev)
        state.gate_buffers = {}
        for s in gated:
            if s.out_hw not in state.gate_buffers:
                state.gate_buffers[s.out_hw] = torch.zeros(s.positions, dtype=torch.uint8,
                                                           device=dev)
                state.buffers[f'gate{s.out_hw[0]}x{s.out_hw[1]}'] = \
                    state.gate_buffers[s.out_hw]

    def _gate(self, plan: _DevicePlan, state: DeviceState, gate: Any) -> tuple | None:
        """Return (Gate, covers everything) for this frame, or None (ungated)."""
        value = plan.input
        if gate is None:
            if not state.gated:
                return None
            # Gated frames may have left positions stale: a whole gate recomputes them.
            whole = torch.ones(1, 1, dtype=torch.bool, device=self.device)
            return Gate(whole, max(value.height, value.width), value.height, value.width), True
        tile_size, _, tiles = _unpack_tiles(gate, 'gate')
        tile = _tile_size(tiles, tile_size, value.height, value.width)
        tiles = torch.as_tensor(tiles, device=self.device)
        return Gate(tiles, tile, value.height, value.width), False

    def _views(self, state: DeviceState, dense: bool) -> dict:
        """Masks, counts and lists of every value and layer, as views into the buffers."""
        plan = state.plan
        masks, stats = state.buffers['masks'], state.buffers['stats']
        changed = {plan.program.input_id: masks[:plan.input.positions]}
        count = {plan.program.input_id: stats[0, 2:3]}
        cand = {}
        offset = plan.input.positions
        for s in plan.specs:
            p = s.positions
            cand[s.index] = masks[offset:offset + p]
            tested = not dense and self._tested(state, s)
            changed[s.out] = masks[offset + p:offset + 2 * p] if tested else cand[s.index]
            count[s.out] = stats[s.index, 2:3]
            offset += 2 * p
        return {'changed': changed, 'count': count, 'cand': cand}

    def _tested(self, state: DeviceState, spec: _LayerSpec) -> bool:
        if spec.kind == 'gap':
            return True
        if spec.kind == 'positionwise':
            return False  # always propagates its candidates (conservative, see module doc)
        threshold = state.thresholds[spec.index - 1] if state.thresholds else 0.0
        return (threshold > 0 or self.config.exact_change_test) and not spec.terminal

    def _bind(self, state: DeviceState, key: Any) -> list:
        """Bind every launch of a frame (dense, or incremental with this tile map)."""
        k, plan = self.k, state.plan
        dense = key == 'dense'
        views = self._views(state, dense)
        changed, count, cand = views['changed'], views['count'], views['cand']
        stats = state.buffers['stats']
        bound = []
        input_id = plan.program.input_id
        tiles_map = state.buffers.get('tiles')
        tile_edge = 1 if dense else key[1]
        bound.append(k.frame.intake_args(
            state.buffers['x'], state.caches[input_id], changed[input_id],
            tiles_map if not dense else changed[input_id].view(1, -1), stats[0],
            tile_edge, state.input_threshold, dense))
        sums_offset = 0
        gated = not dense and key[2]
        stale_offset = 0
        for s in plan.specs:
            spatial = None
            if _gateable(s):
                if gated:
                    stale = state.buffers['stale'][stale_offset:stale_offset + s.positions]
                    spatial = (state.gate_buffers[s.out_hw], stale)
                stale_offset += s.positions
            threshold = state.thresholds[s.index - 1]
            test = self._tested(state, s) and not dense
            exact = threshold == 0
            row = stats[s.index]
            out_cache = state.caches[s.out]
            operands = {v: state.caches[v] for v in s.layer.operands()}
            if s.kind == 'gap':
                channels = out_cache.shape[1]
                sums = state.buffers['sums'][sums_offset:sums_offset + channels]
                sums_offset += channels
                src = s.inputs[0]
                bound += k.frame.global_pool_args(
                    state.caches[src], plan.program.values[src].positions, out_cache, sums,
                    changed[s.out], row, count[src], threshold, not dense, exact,
                    gate=not dense)
                continue
            tiles = state.buffers[f'list{s.index}']
            tile_count = row[0:1]
            bound += self._bind_candidates(s, cand[s.index], changed, count, tiles,
                                           tile_count, row, dense, test, spatial)
            if test:
                staging = state.buffers['staging'][:s.positions * out_cache.shape[1]].view(
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
            if s.geom == 'window':
                kw['window'] = s.window
            elif s.geom == 'table':
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

    def _bind_compute(self, s: _LayerSpec, state: DeviceState, target: torch.Tensor,
                      ep: Any, tiles: torch.Tensor, tile_count: torch.Tensor,
                      cand: torch.Tensor) -> list:
        k = self.k
        values = state.plan.program.values
        src = state.caches[s.inputs[0]]
        w = s.weights
        common = {'cand': cand, 'epilogue': ep}
        if s.kind == 'conv1x1':
            return [k.conv1x1.conv1x1_tiles_args(src, w['weight_t'], w['bias'], target,
                                                 s.out_hw, s.tile, tiles, tile_count,
                                                 **common)]
        if s.kind == 'conv_transpose':
            kernel, stride, dil, pads = s.window
            geometry = k.window.Geometry(s.in_hw, s.out_hw, kernel, stride, dil, pads)
            return [k.conv.conv_args(src, w['gemm'], w['bias'], target, geometry, w['groups'],
                                     s.tile, tiles, tile_count, transposed=True, **common)]
        if s.kind == 'depth_to_space':
            return [k.gather.copy_tiles_args(src, target, s.out_hw, s.tile, tiles, tile_count,
                                             table=w['table'], in_width=s.in_hw[1],
                                             shuffle=w['shuffle'], **common)]
        if s.kind in ('conv', 'depthwise', 'pool'):
            kernel, stride, dil, pads = s.window
            geometry = k.window.Geometry(s.in_hw, s.out_hw, kernel, stride, dil, pads)
            if s.kind == 'depthwise':
                return [k.depthwise.depthwise_args(src, w['taps'], w['bias'], target, geometry,
                                                   s.tile, tiles, tile_count, src.shape[1],
                                                   **common)]
            if s.kind == 'conv':
                return [k.conv.conv_args(src, w['gemm'], w['bias'], target, geometry,
                                         w['groups'], s.tile, tiles, tile_count, **common)]
            return [k.pool.pool_args(src, target, w['mode'], geometry, s.tile, tiles,
                                     tile_count, w.get('divisors'), **common)]
        if s.kind == 'resample':
            return [k.resample.resample_tiles_args(src, target, s.in_hw, s.out_hw, w['rows'],
                                                   w['cols'], s.tile, tiles, tile_count,
                                                   **common)]
        if s.kind == 'pad':
            return [k.gather.copy_tiles_args(src, target, s.out_hw, s.tile, tiles, tile_count,
                                             table=w['table'], in_width=s.in_hw[1],
                                             fill=w['fill'], **common)]
        if s.kind == 'positionwise':
            return [k.positionwise.positionwise_args(src, target, w['fn'], s.out_hw, s.tile,
                                                     tiles, tile_count, cand)]
        if s.kind == 'pointwise':
            return [k.gather.copy_tiles_args(src, target, s.out_hw, s.tile, tiles, tile_count,
                                             **common)]
        bound, col0 = [], 0  # cat
        for v in s.inputs:
            bound.append(k.gather.copy_tiles_args(state.caches[v], target, s.out_hw, s.tile,
                                                  tiles, tile_count, col0=col0, **common))
            col0 += values[v].channels
        return bound

    # -- running ---------------------------------------------------------------------------------

    def _launches(self, state: DeviceState, key: Any) -> list:
        bound = state.launches.get(key)
        if bound is None:
            bound = self._bind(state, key)
            state.launches[key] = bound
        return bound

    def _body(self, state: DeviceState, bound: list) -> None:
        state.buffers['masks'].zero_()
        state.buffers['stats'].zero_()
        state.buffers['sums'].zero_()
        launch = self.k.runtime.launch
        for kernel, grid, args, meta in bound:
            launch(kernel, grid, *args, **meta)

    def _run(self, state: DeviceState, key: Any) -> None:
        bound = self._launches(state, key)
        if key == 'dense' or not self.use_graph or state.graph_failed:
            self._body(state, bound)
            return
        graph = state.graphs.get(key)
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
            state.graphs[key] = graph
        except Exception as exc:  # any capture failure: stay eager, say so once
            state.graph_failed = True
            LOG.warning('device mode: CUDA graph capture failed (%s); running frames eagerly',
                        exc)

    def _record_stats(self, state: DeviceState, dense: bool, gate: Any) -> None:
        stats = state.buffers['stats']
        if self.device.type == 'cuda':
            if state.host is None:
                state.host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            state.host.copy_(stats, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._last = (state, state.host, event, dense, gate)
        else:
            self._last = (state, stats.clone(), None, dense, gate)

    def _frame_stats(self, state: DeviceState, host: torch.Tensor, dense: bool) -> FrameStats:
        plan = state.plan
        counts = host.tolist()
        stats = FrameStats(dense=dense,
                           input_fraction=counts[0][2] / max(1, plan.input.positions))
        for s in plan.specs:
            tiles, active, changed, computed = counts[s.index]
            ls = LayerStats(s.layer.name, s.kind, s.positions,
                            dense_macs=s.positions * s.macs)
            if s.kind == 'gap':
                computed = active
            ls.active, ls.changed, ls.computed = active, changed, computed
            ls.mode = 'full' if dense else ('sparse' if active else 'skip')
            ls.macs = computed * s.macs
            stats.layers.append(ls)
        return stats

    def _output(self, plan: _DevicePlan, state: DeviceState) -> Any:
        program = plan.program
        views = []
        for v in program.frontier:
            value = program.values[v]
            cache = state.caches[v]
            if value.view == 'nc':
                views.append(cache[:1])
            elif value.view == 'nhw':
                views.append(cache[:value.positions].view(1, value.height, value.width))
            else:
                views.append(as_nchw(cache, value.height, value.width))
        if program.tail_mutates:
            views = [v.clone() for v in views]
        return program.tail(*views)

    def _calibrate(self, plan: _DevicePlan, state: DeviceState) -> None:
        """
        Per-layer thresholds: override, else scale x RMS of the first frame's output.

        Global average pools take the larger of the two scales (EngineConfig.global_scale).
        The scales are measured on the first frame (one synchronisation, a dense frame), so
        that a scale set later (:meth:`reconfigure`) means what it means from the start.
        """
        cfg = self.config
        state.input_threshold = float(cfg.layer_thresholds.get('input', 0.0))
        if len(state.rms) != len(plan.specs):
            squares = torch.stack([state.caches[s.out][:s.positions].double().pow(2).mean()
                                   for s in plan.specs])
            state.rms = squares.sqrt().tolist()
        for s in plan.specs:
            rms = None if s.kind == 'positionwise' else state.rms[s.index - 1]  # argmax, softmax
            state.thresholds[s.index - 1] = layer_threshold(cfg, s.layer.names, s.kind, rms)
        # Thresholds decide which layers test, hence the bound launches: bind them anew.
        state.launches.clear()
        state.graphs.clear()
