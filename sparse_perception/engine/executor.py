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

One engine object holds what does not depend on how a frame is executed: the traced module,
one :class:`Plan` per input shape (the lowered program and each layer's geometry, computed
once; the last few used are kept), the per-stream :class:`StreamState`, input checks, tile
maps and gates, calibration of the per-layer thresholds, the output views and the statistics
of the last frame. Behind it
one of two executors runs the frames:

- ``eager`` (eager.py with layers.py) decides per layer on the host, on the pure-torch
  reference or the Triton kernels (``EngineConfig.backend``);
- ``device`` (device.py) runs a frame without host synchronisation on the Triton kernels and
  replays it as a CUDA graph on CUDA.

``execution='auto'`` takes the device executor on CUDA where the backend resolves to the
kernels, and the eager one otherwise; a model the device executor cannot run (found when the
engine is built or when a plan is lowered) then runs eagerly, and :attr:`~IncrementalModel.
fallback` says why. This is the one place that chooses and falls back.

One engine serves any number of camera streams, each with its own state; a frame whose size
differs from the state's re-initialises that state and runs dense.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
import enum
import functools
import itertools
import logging
import math
import time
from typing import Any, Callable

import numpy as np
from sparse_perception.engine.backend import as_nchw, new_cache
from sparse_perception.engine.config import EngineConfig, layer_threshold
from sparse_perception.engine.errors import EngineError
from sparse_perception.engine.gate import Gate
from sparse_perception.engine.ir import Kind, Layer, macs_per_position, Program, Value
from sparse_perception.engine.lower import lower
from sparse_perception.engine.stats import FrameStats
from sparse_perception.engine.tracing import trace
from sparse_perception.kernels.steps import Step
import torch
from torch import nn

LOG = logging.getLogger(__name__)

EXECUTIONS = ('auto', 'eager', 'device')
# Plans kept per model, the most recently used: a plan holds its input size's index tables
# and converted weights (22 MB for the fully convolutional DeepLab at 854x480), so
# a stream whose frame size keeps changing would otherwise grow without bound. A few cover
# streams that alternate between sizes; a plan dropped is built again when its size returns.
MAX_PLANS = 4


class ConvForm(str, enum.Enum):
    """The shapes of a convolution (``Kind.CONV``) that both executors compute their own way."""

    CONV1X1 = 'conv1x1'  # 1x1, stride 1, no padding, one group: a GEMM on rows
    DEPTHWISE = 'depthwise'  # one input channel per group: a per-channel window

    # Prints as its plain name in statistics and messages, like Kind.
    __str__ = str.__str__
    __format__ = str.__format__


@dataclass
class LayerGeometry:
    """What every executor knows of one lowered layer, computed once per plan."""

    index: int  # position among the plan's layers (the input is not one)
    layer: Layer
    kind: Kind | ConvForm  # the core, a convolution's special shapes named (core_kind)
    value: Value  # the output
    in_values: list[Value]  # the core's inputs
    steps: list[Step]  # the epilogue, constants on the model's device and dtype
    operand_ids: list[int]  # value ids the epilogue reads besides the core's output
    macs_per_position: float
    terminal: bool  # no layer reads the output (only the model's output or its tail)
    tile: tuple[int, int]  # (rows, columns) of output positions computed together (compute_tile)
    # No change test: terminal, or read only by a terminal arg-max over the channels, which
    # must see every recomputed score (as a dense tail reading the scores would).
    untested: bool = False

    @property
    def name(self) -> str:
        """Return the module path the layer is known by."""
        return self.layer.name

    @property
    def positions(self) -> int:
        """Return the output's H * W."""
        return self.value.positions


def core_kind(layer: Layer, values: list[Value]) -> Kind | ConvForm:
    """Return the compute kind of a lowered layer (a convolution's special shapes named)."""
    if layer.kind != Kind.CONV:
        return layer.kind
    a = layer.attrs
    if (tuple(a.kernel) == (1, 1) and tuple(a.stride) == (1, 1)
            and not any(a.padding) and a.groups == 1):
        return ConvForm.CONV1X1
    if a.groups == values[layer.inputs[0]].channels and a.weight.shape[1] == 1:
        return ConvForm.DEPTHWISE
    return Kind.CONV


@dataclass(frozen=True)
class Tiling:
    """What an executor asks of its tiles (the one parameter of :func:`compute_tile`)."""

    edge: int  # the tile edge it prefers, in output positions
    positions: int | None = None  # every tile holds exactly this many (None: square tiles)


def compute_tile(out_hw: tuple[int, int], tiling: Tiling,
                 stride: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """
    Return the tile, (rows, columns) of output positions, a layer computes together.

    Both executors recompute a layer tile by tile: a tile that holds a candidate is computed
    whole, so the tile decides how many positions a frame computes (the statistics'
    ``computed`` and ``macs``), not the values. They differ in one constraint, ``tiling``:

    - the eager executor gathers each tile with its halo and runs a stock torch op on the
      batch, so its tiles are square: ``edge`` (the ``tile`` setting), halved while the map
      holds fewer than 64 of them (down to 2), so that a small map still has tiles to skip.
      A transposed convolution's tiles are multiples of its ``stride``, so that every tile's
      patch has the same geometry;
    - the device executor runs one Triton program per tile over a fixed number of positions
      (``positions``: a power of two for ``tl.arange``, at least 16 rows for ``tl.dot``):
      tiles ``edge`` wide, narrower on a narrower map (a power of two), and as tall as the
      positions make them. Its kernels read every position's window on their own, so they need
      no alignment to a stride.
    """
    height, width = out_hw
    if tiling.positions is not None:
        columns = min(tiling.edge, 1 << max(0, width - 1).bit_length())
        return tiling.positions // columns, columns
    t = tiling.edge
    while t > 2 and -(-height // t) * -(-width // t) < 64:
        t //= 2
    # A multiple of both strides (their least common multiple): rounding up to one and then
    # to the other left a tile of 4 under strides (4, 3), whose patches differ in geometry.
    step = math.lcm(*stride)
    t = max(1, t, step)
    t = -(-t // step) * step
    return t, t


def convert_step(step: Step, device: torch.device, dtype: torch.dtype) -> Step:
    """Move an epilogue step's constants to the layer's device and dtype."""
    if step.kind == 'affine':
        scale, shift = step.const
        return Step('affine', 'affine', const=(scale.to(device, dtype).view(1, -1),
                                               shift.to(device, dtype).view(1, -1)))
    if step.kind == 'binary' and step.const is not None:
        return Step('binary', step.op, const=step.const.to(device, dtype), reverse=step.reverse)
    if step.kind == 'act' and step.params and isinstance(step.params[0], torch.Tensor):
        return Step('act', step.op, params=(step.params[0].to(device, dtype),))
    return step


def geometry(program: Program, device: torch.device, dtype: torch.dtype,
             tiling: Tiling) -> list[LayerGeometry]:
    """Return the geometry of every layer but the input, in execution order."""
    values = program.values
    layers = program.layers[1:]
    read = {v for layer in layers for v in layer.operands()}
    # Values read by any layer but a final class arg-max: their layers' changes are tested.
    tested = {v for layer in layers if layer.kind != Kind.POSITIONWISE
              or layer.attrs.fn != 'argmax' or layer.output in read
              for v in layer.operands()}
    return [LayerGeometry(
        i, layer, core_kind(layer, values), values[layer.output],
        [values[v] for v in layer.inputs],
        [convert_step(s, device, dtype) for s in layer.epilogue],
        [s.operand for s in layer.epilogue if s.operand is not None],
        macs_per_position(layer, values), layer.output not in read,
        compute_tile((values[layer.output].height, values[layer.output].width), tiling,
                     tuple(layer.attrs.stride) if layer.kind == Kind.CONV_TRANSPOSE
                     else (1, 1)),
        layer.output not in tested)
        for i, layer in enumerate(layers)]


class Plan:
    """
    The lowered program of one input shape and the executor's per-layer work.

    ``layers`` holds the shared geometry; ``runs`` what the executor built from it, one per
    layer in the same order (each with the ``name``, ``names`` and ``kind`` it reports), and
    ``tables`` what else the executor keeps per input shape.
    """

    def __init__(self, program: Program, executor: Any, config: EngineConfig,
                 device: torch.device, dtype: torch.dtype):
        self.program = program
        self.executor = executor
        self.device = device
        self.dtype = dtype
        self.input = program.values[program.input_id]
        self.layers = geometry(program, device, dtype, executor.tiling(config))
        self.runs, self.tables = executor.build(self, config)
        # Values whose cache no run reads or writes (see Positionwise.fold): a stream keeps a
        # placeholder of pad rows for them instead (34 MB for DeepLab's scores at 854x480).
        self.unkept: frozenset[int] = executor.unkept(self)

    def check_layer_thresholds(self, config: EngineConfig, graph_names: frozenset[str]) -> None:
        """
        Raise :class:`EngineError` if a per-layer threshold names no layer of this plan.

        A name of the traced graph that lowering folded into another layer (a view, say) was
        taken before the first frame: it is said in a warning and has no effect.
        """
        known = {name for g in self.layers for name in g.layer.names} | {'input'}
        unknown = sorted(set(config.layer_thresholds) - known)
        folded = [name for name in unknown if name in graph_names]
        if folded:
            LOG.warning('layer thresholds for %s have no effect: no layer of its own computes '
                        'them (layer names are: %s)', folded,
                        ', '.join(g.name for g in self.layers))
        unknown = [name for name in unknown if name not in graph_names]
        if unknown:
            raise EngineError(
                f'layer thresholds name unknown layers {unknown}; layer names are: '
                + ', '.join(g.name for g in self.layers))

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
        return self.executor.plan_bytes(self)


class StreamState:
    """
    The caches and bookkeeping of one stream (create with ``IncrementalModel.new_state``).

    ``executor_state`` holds what only the plan's executor keeps per stream (the eager one's
    stale masks and running sums; the device one's masks, lists, counters and bound
    launches).
    """

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.caches: list[torch.Tensor] = []  # per value id: (P + 3, C) NHWC rows
        self.thresholds: list[float] = []  # per layer
        self.rms: list[float | None] = []  # per layer: RMS of its output on the first frame
        self.input_threshold = 0.0
        self.tail_output: Any = None
        self.frames = 0  # frames run since the last (re)initialisation
        self.refresh_requested = False
        self.executor_state: Any = None

    def request_refresh(self) -> None:
        """Run the next frame dense, recomputing every cache from the input."""
        self.refresh_requested = True

    def reset(self) -> None:
        """Drop every cache; the next frame re-initialises the state (a dense frame)."""
        self.__init__()

    @property
    def has_stale(self) -> bool:
        """Whether a gate may have left positions that no frame recomputed yet."""
        return self.executor_state is not None and self.executor_state.has_stale

    @property
    def stale_positions(self) -> int:
        """Positions, over all layers, that a gate left stale and no frame recomputed yet."""
        return 0 if self.executor_state is None else self.executor_state.stale_positions()

    def memory_bytes(self) -> int:
        """Bytes held by this stream's caches and the executor's per-stream buffers."""
        total = sum(c.numel() * c.element_size() for c in self.caches)
        if self.executor_state is not None:
            total += self.executor_state.memory_bytes()
        return total


@dataclass
class Frame:
    """One frame as the engine hands it to the executor."""

    x: torch.Tensor  # (1, C, H, W) in the model's dtype
    tiles: torch.Tensor | None  # bool (Ht, Wt) changed input tiles, as given; None: dense
    tile: int  # the tile edge of ``tiles`` (1 when dense)
    dense: bool
    gate: Gate | None  # where layers may recompute (None: everywhere)
    whole_gate: bool  # the gate covers everything (set to recompute what gates left)


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

    ``execution`` picks the executor: 'eager', 'device' or 'auto' (see the module docstring);
    ``graph`` (device executor) replays incremental frames as a CUDA graph (default: on
    CUDA). The device executor runs on CUDA, and on CPU tensors under Triton's interpreter
    (for tests).

    The returned tensors are views of the state's caches (channels_last for 4-D outputs): they
    are overwritten by the next frame of the same state; clone them to keep them, and never
    write on them (``y.sigmoid_()``): the next frames would start from what was written.
    """

    def __init__(self, module: nn.Module, config: EngineConfig | None = None,
                 execution: str = 'eager', graph: bool | None = None):
        if module.training:
            raise EngineError(f'{type(module).__name__} is in training mode; call .eval() '
                              'before wrapping it (BatchNorm must use its running statistics)')
        if execution not in EXECUTIONS:
            raise EngineError(f'execution {execution!r} is not one of {", ".join(EXECUTIONS)}')
        self.module = module
        self.config = config or EngineConfig()
        self.graph = trace(module)
        first = next(itertools.chain(module.parameters(), module.buffers()), None)
        self.device = first.device if first is not None else torch.device('cpu')
        self.dtype = first.dtype if first is not None else torch.float32
        # A module without parameters or buffers (pools and activations only) has no device
        # of its own: it runs where its first input is.
        self._placed = first is not None
        self.requested = execution
        self.fallback: str | None = None  # why 'auto' runs eagerly where it chose the device
        self._graph_option = graph
        self._plans: collections.OrderedDict[tuple, Plan] = collections.OrderedDict()
        self._default_state: StreamState | None = None
        self._last: FrameStats | Callable[[], FrameStats] | None = None
        self.check_layer_names(self.config)
        if self._placed:
            self.executor = self._choose()
        else:  # chosen at the first input, which says where the module runs (_check_input)
            from sparse_perception.engine import eager

            self.executor = eager.EagerExecutor(self)

    def check_layer_names(self, config: EngineConfig) -> None:
        """
        Raise :class:`EngineError` if a per-layer threshold names no layer of the model.

        Against each plan built so far, or, before the first frame builds one, against the
        traced graph's node and module names (what a layer is named after): a misspelt name
        is refused when it is set, not at the next frame.
        """
        if self._plans:
            for plan in self._plans.values():
                plan.check_layer_thresholds(config, self._graph_names())
            return
        unknown = sorted(set(config.layer_thresholds) - set(self.threshold_names()))
        if unknown:
            modules = [n.target for n in self.graph.graph.nodes if n.op == 'call_module']
            raise EngineError(
                f"layer thresholds name unknown layers {unknown}; the model's layers are "
                'named after its modules: ' + ', '.join(modules or ['(none)']))

    def threshold_names(self) -> tuple[str, ...]:
        """
        Return the names a per-layer threshold may use, each layer's own name first, in order.

        Those of the plan built last, or, before the first frame builds one, the traced
        graph's module and node names (a layer is named after the nodes it fuses).
        """
        if self._plans:
            plan = next(reversed(self._plans.values()))
            own = [g.name for g in plan.layers]
            aliases = [name for g in plan.layers for name in g.layer.names]
            return tuple(dict.fromkeys(['input', *own, *aliases]))
        nodes = self.graph.graph.nodes
        own = [n.target for n in nodes if n.op == 'call_module']
        return tuple(dict.fromkeys(['input', *own, *self._graph_names()]))

    def _graph_names(self) -> frozenset[str]:
        """Names of the traced graph's operations (its inputs, outputs and constants not)."""
        return frozenset(n.name for n in self.graph.graph.nodes
                         if n.op in ('call_module', 'call_function', 'call_method'))

    # -- choosing the executor --------------------------------------------------------------

    def _choose(self) -> Any:
        from sparse_perception.engine import eager

        requested = self.requested
        if requested == 'device':
            check_device_backend(self.config)
            return self._device()
        if requested == 'auto' and auto_picks_device(self.config, self.device):
            try:
                return self._device()
            except EngineError as exc:
                self.fallback = str(exc)
        return eager.EagerExecutor(self)

    def _device(self) -> Any:
        from sparse_perception.engine import device

        return device.DeviceExecutor(self, self._graph_option)

    def _fall_back(self, exc: EngineError) -> None:
        """Under 'auto', run eagerly from now on because the device executor cannot."""
        from sparse_perception.engine import eager

        if self.requested != 'auto' or self.execution != 'device':
            raise exc
        self.fallback = str(exc)
        self.executor = eager.EagerExecutor(self)
        self._plans.clear()

    @property
    def execution(self) -> str:
        """Return the executor that runs the frames: 'eager' or 'device'."""
        return self.executor.name

    @property
    def backend(self) -> Any:
        """Return the eager executor's primitives (None under the device executor)."""
        return self.executor.backend

    @property
    def use_graph(self) -> bool:
        """Whether incremental frames replay as a CUDA graph."""
        return self.executor.use_graph

    # -- public ---------------------------------------------------------------------------------

    def new_state(self) -> StreamState:
        """Return empty per-stream caches (initialised by the stream's first frame)."""
        return StreamState()

    def plan_for(self, x: torch.Tensor) -> Plan:
        """Return the plan for inputs shaped like ``x`` (built once, kept while recently used)."""
        key = tuple(x.shape)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = self._plan(x)
            except EngineError as exc:  # UnsupportedOpError is one
                self._fall_back(exc)
                plan = self._plan(x)
            plan.check_layer_thresholds(self.config, self._graph_names())
            self._plans[key] = plan
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)  # a stream still on it keeps it until it moves
        else:
            self._plans.move_to_end(key)
        return plan

    def _plan(self, x: torch.Tensor) -> Plan:
        program = lower(self.graph, x, self.config.allow_dense_tail)
        return Plan(program, self.executor, self.config, self.device, self.dtype)

    def reconfigure(self, config: EngineConfig,
                    state: StreamState | None = None) -> None:
        """
        Use ``config`` from the next frame on, keeping the caches where that is possible.

        Thresholds and dense fall-backs change in place: the given ``state`` (or the default
        one) recomputes its per-layer thresholds from the layer scales it measured on its first
        frame, and runs its next frame dense if any threshold went down (what the old ones held
        back would otherwise stay). A setting the executor's plans depend on (the tail rule;
        eagerly also the compute tile and the backend) rebuilds the plans, so the next frame of
        every stream runs dense.
        """
        old = self.config
        self.check_layer_names(config)  # raises before anything changes
        if any(getattr(config, name) != getattr(old, name)
               for name in self.executor.plan_settings):
            self.config = config
            self.executor.reconfigured()
            self._plans.clear()
            # (Every stream's next frame finds a new plan and runs dense; a caller that
            # holds the state can tell from it, as from a threshold that went down.)
            state = state if state is not None else self._default_state
            if state is not None:
                state.request_refresh()
            return
        self.config = config
        state = state if state is not None else self._default_state
        if state is not None and state.plan is not None and state.frames > 0:
            before = list(state.thresholds) + [state.input_threshold]
            self._calibrate(state.plan, state)
            after = list(state.thresholds) + [state.input_threshold]
            if any(new < old for new, old in zip(after, before)):
                # What the old thresholds held back would stay in the caches: a dense
                # frame restores what the new, tighter thresholds promise.
                state.request_refresh()

    def dense_macs(self, x: torch.Tensor) -> int:
        """Multiply-accumulates of one dense pass on inputs like ``x`` (no plan is kept)."""
        x = self._check_input(x)
        plan = self._plans.get(tuple(x.shape))
        program = plan.program if plan is not None else lower(self.graph, x,
                                                              self.config.allow_dense_tail)
        values = program.values
        return int(sum(values[layer.output].positions * macs_per_position(layer, values)
                       for layer in program.layers[1:]))

    def layer_names(self, x: torch.Tensor) -> list[str]:
        """Return the names of the layers (for threshold overrides) for inputs like ``x``."""
        return [g.name for g in self.plan_for(self._check_input(x)).layers]

    @property
    def last_stats(self) -> FrameStats | None:
        """Statistics of the last frame (the device executor's are read on first access)."""
        if callable(self._last):
            self._last = self._last()
        return self._last

    @torch.no_grad()
    def start_from(self, x: torch.Tensor, caches: list[torch.Tensor],
                   state: StreamState | None = None) -> None:
        """
        Initialise ``state`` from caches computed elsewhere, as if a dense frame of ``x`` ran.

        ``caches`` are another engine's after a dense frame of the same module on ``x`` (the
        same lowered program: one (P + 3, C) cache per value). The next frame runs
        incrementally. This lets the interpreter tests check the device executor's
        incremental frames of full-size networks without interpreting a whole dense frame.
        """
        x = self._check_input(x)
        state = state if state is not None else self._state()
        plan = self.plan_for(x)
        self._init_state(state, plan)
        shapes = [tuple(c.shape) for c in state.caches]
        if len(caches) != len(shapes) or any(
                tuple(c.shape) != shape for i, (c, shape) in enumerate(zip(caches, shapes))
                if i not in plan.unkept):
            raise EngineError(f'start_from: {len(caches)} caches do not match the plan of '
                              f'{len(shapes)} values for input {tuple(x.shape)}; pass the '
                              'caches of an engine after a dense frame of this input (an '
                              'eager engine keeps none for an upsampling that its class '
                              'arg-max computes itself)')
        for i, (target, source) in enumerate(zip(state.caches, caches)):
            if i not in plan.unkept:
                target.copy_(source)
        self.executor.started(plan, state, x)
        self._calibrate(plan, state)
        state.frames = 1

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, tiles: Any = None,
                 state: StreamState | None = None, gate: Any = None) -> Any:
        """Run one frame (see the class docstring)."""
        x = self._check_input(x)
        state = state if state is not None else self._state()
        plan = self.plan_for(x)
        tile_size, refresh, tiles = unpack_tiles(tiles)
        # Checked on every frame, a dense one too.
        gate_map = None if gate is None else unpack_tiles(gate, 'gate')
        dense = tiles is None or refresh or state.refresh_requested
        if state.plan is not plan:
            self._init_state(state, plan)
            dense = True
        value = plan.input
        tile, spatial, whole = 1, None, False
        if not dense:
            tile = tile_size_of(tiles, tile_size, value.height, value.width)
            if gate_map is not None and gate_map[0] is None \
                    and tuple(gate_map[2].shape) == tuple(tiles.shape):
                gate_map = (tile, *gate_map[1:])  # a plain gate on the change map's tiles
            spatial, whole = self._gate(plan, state, gate_map)
        frame = Frame(x, None if dense else tiles, tile, dense, spatial, whole)
        try:
            self._last, frontier_changed = self.executor.run(plan, state, frame)
            output = self._output(plan, state, frontier_changed or frame.dense)
        except BaseException:
            # The layers before the failure hold this frame, those after it the last one, and
            # the input cache no longer differs from a retry: the next frame starts over.
            state.refresh_requested = True
            raise
        if state.frames == 0:
            self._calibrate(plan, state)
        state.frames += 1
        state.refresh_requested = False
        return output

    # -- shared by the executors ----------------------------------------------------------------

    def _state(self) -> StreamState:
        if self._default_state is None:
            self._default_state = self.new_state()
        return self._default_state

    def _check_input(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise EngineError(f'x must be a torch tensor (1, C, H, W), got {type(x).__name__}')
        if x.dim() != 4 or x.shape[0] != 1:
            raise EngineError(f'x has shape {tuple(x.shape)}; expected (1, C, H, W) (batch 1: '
                              'serve several streams with one state each)')
        if 0 in x.shape:
            raise EngineError(f'x has shape {tuple(x.shape)}: no pixels (channels, height and '
                              'width must be at least 1)')
        if not self._placed:
            self._placed = True
            self.device = x.device
            self.dtype = x.dtype if x.dtype.is_floating_point else self.dtype
            self._plans.clear()
            self.executor = self._choose()
        if x.device != self.device:
            raise EngineError(f'x is on {x.device} but the model is on {self.device}; move the '
                              'input to the model device')
        if x.dtype != self.dtype:
            if not x.dtype.is_floating_point:
                raise EngineError(f'x has dtype {x.dtype}; expected a float tensor '
                                  f'({self.dtype}), normalised as the model expects')
            x = x.to(self.dtype)
        return x

    def _init_state(self, state: StreamState, plan: Plan) -> None:
        state.reset()
        state.plan = plan
        state.caches = [new_cache(0 if i in plan.unkept else v.positions, v.channels, v.dtype,
                                  self.device) for i, v in enumerate(plan.program.values)]
        state.thresholds = [0.0] * len(plan.layers)
        state.executor_state = self.executor.new_stream(plan)

    def _gate(self, plan: Plan, state: StreamState,
              gate: tuple[int | None, bool, Any] | None) -> tuple[Gate | None, bool]:
        """
        Return this frame's :class:`Gate` (None: ungated) and whether it covers all.

        ``gate`` is the frame's gate as :func:`unpack_tiles` gives it, or None.
        """
        value = plan.input
        if gate is None:
            if not state.has_stale:
                return None, False
            # Gated frames left positions stale: a gate over everything recomputes them.
            whole = torch.ones(1, 1, dtype=torch.bool, device=self.device)
            return Gate(whole, max(value.height, value.width), value.height, value.width), True
        tile_size, _, tiles = gate
        tile = tile_size_of(tiles, tile_size, value.height, value.width)
        # A gate made on the host (the pose gate's) goes over without the host waiting, as a
        # change map does: a blocking copy would wait for the frames queued before it.
        tiles = torch.as_tensor(tiles).to(self.device, non_blocking=True)
        return Gate(tiles, tile, value.height, value.width), False

    def _calibrate(self, plan: Plan, state: StreamState) -> None:
        """
        Set per-layer thresholds: override, else scale x RMS of the first frame's output.

        Global average pools take the larger of the two scales (see EngineConfig.global_scale).
        The scales are measured on the first frame (one synchronisation, a dense frame), so
        that a scale set later (:meth:`reconfigure`) means what it means from the start.
        """
        cfg = self.config
        state.input_threshold = float(cfg.layer_thresholds.get('input', 0.0))
        if len(state.rms) != len(plan.layers):
            measured = [g for g in plan.layers if g.value.dtype.is_floating_point
                        and g.layer.output not in plan.unkept]
            rms = torch.stack([state.caches[g.layer.output][:g.positions].double().pow(2).mean()
                               for g in measured]).sqrt().tolist() if measured else []
            by_layer = dict(zip((g.index for g in measured), rms))
            state.rms = [by_layer.get(g.index) for g in plan.layers]
        for g in plan.layers:
            state.thresholds[g.index] = layer_threshold(cfg, g.layer.names, g.kind,
                                                        state.rms[g.index])
        self.executor.calibrated(state)

    def _output(self, plan: Plan, state: StreamState, frontier_changed: bool) -> Any:
        program = plan.program
        if program.tail_is_dense and not frontier_changed and state.tail_output is not None:
            return state.tail_output
        views = [plan.view(state, v) for v in program.frontier]
        if program.tail_mutates:  # never let the tail write into the caches
            views = [v.clone() for v in views]
        out = program.tail(*views)
        if program.tail_is_dense:
            state.tail_output = out
        return out


def check_device_backend(config: EngineConfig) -> None:
    """Raise :class:`EngineError` where the backend setting rules out the device executor."""
    from sparse_perception.settings import execution_problem

    problem = execution_problem(config.backend, 'device')
    if problem:
        raise EngineError(problem)


def auto_picks_device(config: EngineConfig, device: torch.device) -> bool:
    """Return whether 'auto' runs the device executor: on CUDA where the backend is the kernels."""
    from sparse_perception.engine.backend import get_backend

    return device.type == 'cuda' and get_backend(config.backend, device).name == 'kernels'


def clock(device: torch.device) -> float:
    """Return the host time, after the device's queued work (for profiling)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


def unpack_tiles(tiles: Any, what: str = 'tiles') -> tuple[int | None, bool, Any]:
    """Return (tile size or None, refresh, tile map or None) for tensors and ChangeMaps."""
    if tiles is None:
        return None, True, None
    tile_size, refresh = None, False
    if hasattr(tiles, 'tiles') and hasattr(tiles, 'tile_size'):
        size = tiles.tile_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise EngineError(f'{what}.tile_size must be a whole number of pixels, at least 1; '
                              f'got {size!r}')
        tile_size, refresh = int(size), bool(getattr(tiles, 'refresh', False))
        what, tiles = f'{what}.tiles', tiles.tiles
    if isinstance(tiles, np.ndarray):
        if tiles.dtype != np.bool_:
            raise EngineError(f'{what} has dtype {tiles.dtype}; expected bool')
        # Contiguous: torch takes no negative strides (a flipped view).
        tiles = torch.from_numpy(np.ascontiguousarray(tiles))
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 2:
        raise EngineError(f'{what} must be a bool (Ht, Wt) tensor, a ChangeMap or None, got '
                          f'{type(tiles).__name__} {tuple(getattr(tiles, "shape", ()))}')
    # (A ChangeMap's tiles too: ~ of a uint8 map is 254 or 255, not its complement.)
    if tiles.dtype != torch.bool:
        raise EngineError(f'{what} has dtype {tiles.dtype}; expected torch.bool')
    if tiles.numel() == 0:
        raise EngineError(f'{what} has shape {tuple(tiles.shape)}; a tile map holds at least '
                          'one tile')
    if tiles.is_meta:
        raise EngineError(f'{what} is on the meta device, which holds no values')
    return tile_size, refresh, tiles


def tile_size_of(tiles: torch.Tensor, tile_size: int | None, height: int, width: int) -> int:
    """
    Tile edge that maps a (Ht, Wt) tile map onto an (height, width) image.

    Without a tile size (a plain tensor rather than a ChangeMap) this is the smallest edge t
    with (ceil(H / t), ceil(W / t)) == (Ht, Wt): the tile size of a detector whose tiles
    divide the frame. Where t does not divide the frame and a larger edge fits too, a warning
    says so (once per map and frame size): a 7x7 map over a 100x100 frame may be of 15- or
    16-pixel tiles, and taking the wrong one misplaces changes.
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
    if (height % t or width % t) and (-(-height // (t + 1)), -(-width // (t + 1))) == (th, tw):
        _warn_ambiguous_tiles(th, tw, height, width, t)
    return t


@functools.lru_cache(maxsize=64)  # once per map and frame size (a few at a time)
def _warn_ambiguous_tiles(th: int, tw: int, height: int, width: int, t: int) -> None:
    # The edges that fit form one run; past the frame's larger side every edge fits.
    largest, side = t + 1, max(height, width)
    while largest < side and (-(-height // (largest + 1)),
                              -(-width // (largest + 1))) == (th, tw):
        largest += 1
    more = ' or more' if largest >= side else ''
    LOG.warning('a %dx%d tile map over a %dx%d frame fits tiles of %d to %d%s pixels; taking '
                '%d: pass the ChangeMap, which names its tile size', th, tw, height, width, t,
                largest, more, t)
