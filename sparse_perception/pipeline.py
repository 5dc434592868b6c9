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
The pure perception pipeline: camera frame -> change map -> incremental networks -> outputs.

One :class:`Pipeline` serves the ROS nodes, the bag replay, the benchmarks and the tests; it
knows nothing of ROS. Per frame it

1. updates the temporal change map of the camera frame (:mod:`sparse_perception.change`),
   whose reference holds, per tile, the pixels last propagated: one map per head, shared by
   heads whose change settings agree (the pose head has a threshold of its own,
   ``pose.change_threshold``; its tracking feeds on its keypoints); while every network
   would run its dense pass and the scene keeps changing, the frame goes without a map
   (:class:`~sparse_perception.scheduling.ChangeMapSchedule`): every tile stands as changed;
2. for each head (segmentation, pose), fits the frame to the network input and finds which
   input tiles changed: the frame's change map itself when the network takes the frame as it
   is, else the frame's map carried onto the network input (a resized frame, or a tracked
   person's crop; :class:`~sparse_perception.change.ResampledChange`), so that the change
   settings count camera pixels whatever the input's scale;
3. runs the network's convolutional trunk in the incremental engine, which reads the input
   only inside changed tiles (a class arg-max joins it, run where the class scores changed),
   and its small tail densely, and decodes the result into a mask
   or keypoints on the camera frame. A network runs a plain dense pass instead while that
   is measured faster (:mod:`sparse_perception.scheduling`), an input that did not
   change is not run at all, and a tracking pose model that follows nobody detects on every
   ``pose.detect_period``-th frame only.

With every threshold at 0 the outputs equal a dense pass over the same frames. A dense
reference (``incremental=False``) runs the networks on the raw frames instead, with the same
tracking (a tracking pose model detects on the same schedule, on every frame with room counted
as changed); comparing the two measures what the thresholds cost.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from sparse_perception.results import (FrameResult, HeadStats, PipelineStats, PoseResult,
                                       SegmentationResult)
from sparse_perception.scheduling import ChangeMapSchedule
from sparse_perception.settings import HEADS, PerceptionSettings, specs

LOG = logging.getLogger(__name__)


# What _IncrementalNet.begin returns where the path choice picked a dense pass.
_DENSE = object()


class ModelLoadError(ValueError):
    """A head's model cannot be loaded or run; the message names the model and the reason."""


class LayerThresholdError(ModelLoadError):
    """``sparsity.layer_thresholds`` names a layer no network (or not the one named) has."""


# Model settings every head is built anew for (Pipeline.update): those that reload (the
# settings say which), but for the models themselves, each of which rebuilds its own head.
RELOADING = tuple(s.name.split('.', 1)[1] for s in specs(PerceptionSettings)
                  if s.name.startswith('model.') and s.info.reload
                  and s.name not in ('model.segmentation', 'model.pose'))


def reloads_every_head(old: PerceptionSettings, new: PerceptionSettings) -> bool:
    """Whether :meth:`Pipeline.update` from ``old`` to ``new`` builds every head anew."""
    return any(getattr(old.model, name) != getattr(new.model, name) for name in RELOADING)


def own_thresholds(thresholds: Mapping[str, float], scope: str, known: Sequence[str],
                   what: str) -> dict[str, float]:
    """
    Return one network's share of ``sparsity.layer_thresholds`` (parsed), by its layer names.

    A bare name applies to every network with a layer of that name (imported models reuse
    names such as ``op003_conv``); a name qualified by its network as the replay's report
    lists it (``segmentation/NAME``, ``pose/NAME``, ``pose/detector/NAME``) to that network
    alone, over a bare one. A qualified name this network lacks raises ModelLoadError; a bare
    one is for the pipeline to check (:func:`check_thresholds_claimed`).
    """
    own, qualified = {}, {}
    for key, value in thresholds.items():
        where, _, name = key.rpartition('/')
        if not where:
            if key in known:
                own[key] = value
        elif where + '/' == scope:
            if name not in known:
                raise LayerThresholdError(
                    f'sparsity.layer_thresholds: {what} ({scope}) has no layer {name!r}; '
                    f'its layers: {_some(known)}')
            qualified[name] = value
    own.update(qualified)
    return own


def check_thresholds_claimed(thresholds: Mapping[str, float], nets: Sequence[Any]) -> None:
    """
    Raise ModelLoadError for a per-layer threshold that no network of ``nets`` takes.

    Each net has ``scope`` and ``engine.threshold_names()``. Nothing is checked without nets
    (a dense pipeline has no layer thresholds to apply).
    """
    if not nets:
        return
    scopes = sorted({net.scope for net in nets})
    for key in thresholds:
        where, _, _ = key.rpartition('/')
        if where:
            if where + '/' not in scopes:
                raise LayerThresholdError(
                    f'sparsity.layer_thresholds: {key!r} names no network of this pipeline; '
                    f'its networks: {", ".join(scopes)}')
        elif not any(key in net.engine.threshold_names() for net in nets):
            named = {net.scope: net.engine.threshold_names() for net in nets}
            raise LayerThresholdError(
                f'sparsity.layer_thresholds: no network of this pipeline has a layer named '
                f'{key!r}; ' + '; '.join(f'{scope} {_some(names)}'
                                         for scope, names in sorted(named.items())))


def _some(names: Sequence[str], shown: int = 12) -> str:
    """List the first ``shown`` of ``names``; say how many more."""
    more = len(names) - shown
    return ', '.join(names[:shown]) + (
        f' and {more} more (the per-layer table of a replay report names them)'
        if more > 0 else '')


class _IncrementalNet:
    """
    A network's convolutional trunk in the incremental engine, with its stream state.

    ``change`` is a change map of the network's own input, for inputs that are resampled from
    the frame (a resized frame, a tracked crop): that is the image that must hold still, and a
    crop that moves is then simply a changed input. ``stats`` collects the engine statistics
    of every call since :meth:`take_stats`.

    The engine (:class:`~sparse_perception.engine.IncrementalModel`) runs on the executor
    ``model.execution`` asks for, and chooses under 'auto'; it takes ``(x, tiles, state)`` and
    returns views of the state's caches, which the caller consumes before the next frame.
    Under 'auto', a model the device executor cannot run (found when it is lowered: at load,
    or at the first frame of a fully convolutional model) runs on the eager executor, and the
    engine's reason is logged once as a warning; under an explicit 'device' that is a
    :class:`ModelLoadError`.

    :meth:`run` returns the network's outputs (trunk and tail) by one of two paths: the
    engine, or ``dense``, a plain dense pass (torch or LiteRT: ``model.runtime``), whichever
    :class:`~sparse_perception.scheduling.PathChoice` measures faster now (``sparsity.adaptive``;
    on CUDA each timed pass ends with a synchronisation); an input that did not change returns
    the last outputs.

    ``gates`` (a segmentation network's :class:`~sparse_perception.gates.maker.GateMaker`, a
    single-person pose network's :class:`~sparse_perception.gates.track.TrackGate`) limits
    where the engine recomputes (``sparsity.gate``, ``pose.gate``), and a glance may answer a
    frame alone; the engine then reads the whole input on its next frame, as it missed this one.
    """

    def __init__(self, trunk: Any, tail: Any, dense: Any, settings: PerceptionSettings,
                 what: str, scope: str, input_size: tuple[int, int] | None = None,
                 gates: Any = None):
        from sparse_perception.change import ChangeDetector
        from sparse_perception.engine import EngineConfig, EngineError, IncrementalModel

        self.what = what
        self.scope = scope  # how a per-layer threshold names it: 'pose/detector/', ...
        # Per-layer thresholds wait for the engine, which knows the layers (_config).
        self.config = EngineConfig.from_settings(settings, layer_thresholds={})
        self.trunk = trunk
        self.tail = tail
        self.dense = dense  # x -> the network's outputs in one dense pass
        self.input_size = input_size
        self.requested = settings.model.execution
        self._fallback_logged = False
        try:
            # graph=None: CUDA-graph replay on CUDA; on the CPU (the interpreter) no graphs.
            self.engine = IncrementalModel(trunk, self.config, execution=self.requested)
            self._lower()
        except EngineError as exc:  # an op the engine cannot run, a bad config
            raise self._load_error(exc) from exc
        except ValueError as exc:
            raise ModelLoadError(f'{what} cannot run incrementally: {exc}') from exc
        self.config = self._config(settings)
        self.engine.reconfigure(self.config)
        self._log_fallback()
        self.state = self.engine.new_state()
        self.change = ChangeDetector(settings.change)
        self.gates = gates
        self._missed = False  # the engine missed a frame the glance answered
        self._glance_stats: dict[tuple, Any] = {}  # a gate's own pass, per input size
        self.stats: list[Any] = []
        self._unread = False  # the engine holds statistics of a call not yet collected
        self.adaptive = settings.sparsity.adaptive
        self.choice = self._new_choice()
        self.path = 'engine'  # what ran the last frame: 'engine' or 'dense'
        self.repeated = False  # the last run returned the same outputs as the run before
        self._outputs: Any = None  # the last frame's outputs, while the dense path runs
        self._dense_stats: Any = None  # the engine's statistics of a dense frame
        self._pass_stats: dict[bool, Any] = {}  # made from them once: ran dense, skipped
        self.map_ms = 0.0  # what the frame's change map cost this frame (0: none was made)
        # The share of the frame that changed since the frame before (None: not measured):
        # the path choice retries the engine only once the scene calmed down. A network that
        # runs on some frames only (own_share) takes its input map's share instead, which
        # holds every change since it last ran.
        self.scene: float | None = None
        self.own_share = False

    def _new_choice(self) -> Any:
        from sparse_perception.scheduling import measurable, PathChoice, warmup_frames

        device = self.engine.device
        measured = measurable(self.execution, device)
        return PathChoice(warmup=warmup_frames(device)) if self.adaptive and measured else None

    def _clock(self) -> float:
        """Return the host clock in seconds once the device has done what was queued."""
        from sparse_perception.scheduling import finished_clock

        return finished_clock(self.engine.device)

    def run(self, x: Any, change: Any, still: bool | None = None) -> Any:
        """
        Return the network's outputs on ``x`` (1, C, H, W), by the path chosen for it.

        ``change`` is the input's ChangeMap, or a function that makes it: the dense path
        needs none when ``still`` already says whether the input is unchanged.
        """
        outputs = self.begin(x, change, still)
        if outputs is _DENSE:
            start = self._clock()
            outputs = self.dense(x)
            self.ran_dense(x, outputs, (self._clock() - start) * 1e3)
        return outputs

    def begin(self, x: Any, change: Any, still: bool | None = None) -> Any:
        """
        Do :meth:`run`'s work but the dense pass the path choice picked: return :data:`_DENSE`.

        The caller then runs the dense pass (possibly in one batch with other inputs) and
        hands its outputs and wall time to :meth:`ran_dense`. (The engine's first frame still
        times a dense pass here, as the choice's first sample.)
        """
        choice = self.choice
        if choice is None or self.path == 'engine' or still is None:
            change = _made(change)
            still = not change.refresh and not bool(change.tiles.any())
            if self.own_share:
                self.scene = None if change.refresh else float(change.changed_fraction)
        # Positions a gate left stale may be recomputed on a still input: not a repeat then.
        self.repeated = still and not self._stale()
        if still and self.path == 'glance':
            if self.gates.may_repeat():
                self.not_run()  # the glance's answer stands for the same input
                return self._outputs
            # The glance answered gate_refresh - 1 frames in a row: the full pass is due.
            still = self.repeated = False
        if choice is None:
            return self._engine_frame(x, change, glance=not still)
        if still:
            # Nothing changed: the last outputs stand, whichever path made them (the engine
            # finds that out in a few microseconds and keeps its caches in step).
            if self.path == 'engine':
                return self._engine_frame(x, change)
            if self._outputs is not None:
                self._skipped()
                return self._outputs
        if choice.pick(self.scene) == 'dense':
            return _DENSE
        start = self._clock()  # the input's change map is part of the engine's cost
        if self.path == 'dense':
            # The caches missed the dense frames; so did the change map's reference, unless
            # this frame's map was made already (then the engine's dense frame reads it all).
            self.state.request_refresh()
            if callable(change):
                self.change.request_refresh()
        outputs = self._engine_frame(x, _made(change), glance=True)
        # The frame's change map counts too: the dense path may go without one.
        ms = (self._clock() - start) * 1e3 + self.map_ms
        if self.path == 'glance':
            choice.record('engine', ms)  # the engine path answered from its glance
            return outputs
        stats = self.engine.last_stats
        if not stats.dense:
            choice.record('engine', ms)
        if choice.needs_dense_sample:  # the first frame, or the choice just turned on
            self.dense(x)  # warm
            start = self._clock()
            self.dense(x)
            choice.record('dense', (self._clock() - start) * 1e3)
            self._count_samples(x, 2)
        self.path, self._outputs = 'engine', None
        return outputs

    def ran_dense(self, x: Any, outputs: Any, ms: float) -> None:
        """Take the outputs of the dense pass :meth:`begin` asked for, which took ``ms``."""
        self.choice.record('dense', ms)
        self._ran_dense()
        self._outputs = outputs
        if self.gates is not None:
            self.gates.observe(outputs, *x.shape[-2:])

    def needs_change(self) -> bool:
        """Whether its next run may read its input's change map (on the engine's path)."""
        choice = self.choice
        return choice is None or self.path != 'dense' or choice.wants_engine()

    def _engine_frame(self, x: Any, change: Any, glance: bool = False) -> Any:
        """Return the engine's outputs on ``x``; not a repeat if it recomputes everything."""
        if self._recomputes_all():
            # New settings or frames the engine missed: its outputs on a still input differ
            # from what was shown, so they are not a repeat either. (The last outputs of the
            # dense path, which a still input returns as they are, are one.)
            self.repeated = False
        return self._engine_outputs(x, change, glance)

    def _engine_outputs(self, x: Any, change: Any, glance: bool = False) -> Any:
        gates = self._active_gates()
        height, width = x.shape[-2:]
        gate = None
        if gates is not None:
            if glance and gates.mode == 'learned':
                gates.glance(x)  # this frame's likely people, from the learned gate
                self._count_learned(height, width)
            if glance and gates.mode == 'glance':
                early = gates.glance(x)
                if gates.seen is not None:  # it ran (not skipped: crowd, between glances)
                    self._count_glance(x)
                if early is not None:  # nobody, now or before: the glance is the answer
                    self.not_run()
                    self.path, self._outputs, self._missed = 'glance', early, True
                    gates.observe(early, height, width)
                    return early
            # After frames the glance answered alone, the caches hold an older picture
            # everywhere: this frame recomputes all of it, as a stream's first frame does.
            gate = None if self._missed else gates.gate(height, width)
            if gate is not None:  # with its tile edge: a guess from the shapes can be off
                gate = _GateTiles(gate, gates.tile)
        outputs = self.tail(*_for_tail(self(x, change, gate)))
        if self.gates is not None:
            self.gates.observe(outputs, height, width)
        self.path = 'engine'
        return outputs

    def _stale(self) -> bool:
        return bool(getattr(self.state, 'has_stale', False))

    def _recomputes_all(self) -> bool:
        """Whether the engine's next frame recomputes everything (not what it last showed)."""
        state = self.state
        return self._missed or state.refresh_requested or state.plan is None

    def _active_gates(self) -> Any:
        gates = self.gates
        return gates if gates is not None and gates.active else None

    def _count_glance(self, x: Any) -> None:
        """Add the glance's dense pass to this frame's statistics (made in take_stats)."""
        self._collect()
        # Its MACs are counted once per size by lowering the network at that size: not here,
        # where the path choice times the engine's path.
        self.stats.append(_Glance(tuple(x.shape[:2]), self.gates.glance_size(*x.shape[-2:]),
                                  x.dtype, x.device))

    def _count_learned(self, height: int, width: int) -> None:
        """Add the learned gate's pass to this frame's statistics."""
        from sparse_perception.engine.stats import FrameStats, LayerStats

        self._collect()
        key = ('learned', height, width)
        stats = self._glance_stats.get(key)
        if stats is None:  # the same for every frame of a size: made once
            tiles = -(-height // self.gates.tile) * -(-width // self.gates.tile)
            macs = self.gates.learned_macs(height, width)
            stats = self._keep_glance_stat(key, FrameStats(layers=[LayerStats(
                'learned_gate', 'gate', tiles, 'full', 0, tiles, 0, macs, 0.0)]))
        self.stats.append(stats)

    def _count_samples(self, x: Any, passes: int) -> None:
        """Add the path choice's timing passes to this frame's MACs (no dense MACs: extra)."""
        from sparse_perception.engine.stats import FrameStats, LayerStats

        self._collect()
        macs = self.engine.dense_macs(x) * passes
        key = ('samples', macs)
        stats = self._glance_stats.get(key)
        if stats is None:
            stats = self._keep_glance_stat(key, FrameStats(layers=[LayerStats(
                'path_choice_samples', 'samples', 0, 'full', 0, 0, 0, macs, 0.0)]))
        self.stats.append(stats)

    def _glance_stat(self, glance: Any) -> Any:
        """Return the statistics of a glance: its MACs, no dense MACs (they add to the frame)."""
        from sparse_perception.engine.stats import FrameStats, LayerStats

        stats = self._glance_stats.get(glance.size)
        if stats is None:
            import torch

            small = torch.zeros(*glance.batch_channels, *glance.size, dtype=glance.dtype,
                                device=glance.device)
            positions = glance.size[0] * glance.size[1]
            macs = self.engine.dense_macs(small)
            stats = self._keep_glance_stat(glance.size, FrameStats(layers=[LayerStats(
                'glance', 'glance', positions, 'full', 0, positions, 0, macs, 0.0)]))
        return stats

    def _keep_glance_stat(self, key: tuple, stats: Any) -> Any:
        """Keep a gate pass's statistics for its input size (a few sizes: frames may change)."""
        if len(self._glance_stats) >= 16:
            self._glance_stats.clear()
        self._glance_stats[key] = stats
        return stats

    def _ran_dense(self) -> None:
        self._collect()
        self.path = 'dense'
        self.stats.append(self._pass_stat(skipped=False))

    def _skipped(self) -> None:
        self.not_run()
        self.path = 'dense'

    def _pass_stat(self, skipped: bool) -> Any:
        # Read-only once made: the same object stands for every such frame of this size.
        stats = self._pass_stats.get(skipped)
        if stats is None:
            stats = self._pass_stats[skipped] = _as_dense_pass(self._dense_stats, skipped)
        return stats

    def count_dense_pass(self) -> None:
        """Count a dense pass of the network on another input of its size (a window)."""
        self._collect()
        self.stats.append(self._pass_stat(skipped=False))

    def not_run(self) -> None:
        """Count a frame the network was not run on where a dense pipeline runs it."""
        self._collect()
        self.stats.append(self._pass_stat(skipped=True))

    @property
    def execution(self) -> str:
        """Return the executor the engine runs: 'eager' or 'device'."""
        return self.engine.execution

    def _lower(self) -> None:
        """Lower the trunk for its input now when that is fixed, so unsupported ops fail here."""
        import torch

        if self.input_size is not None:
            self.engine.layer_names(torch.zeros(1, 3, *self.input_size,
                                                device=self.engine.device))

    def warm_up(self) -> None:
        """
        Run a synthetic dense frame, an incremental one and the dense pass; keep none of them.

        Each network's first frames pay one-time costs: building the plan, and on a GPU Triton
        compiling the kernels (with the default models on an H200 the first frame took 28 s
        and two later ones about 4 s each, against 4 ms after). A network that runs only
        when somebody is in view (a pose landmark network) would pay them then. The frames
        use a state of their own; the network's is untouched. Gated frames are not warmed,
        and a fully convolutional network (no fixed input size) is left to the frames.
        """
        import torch

        from sparse_perception.change import ChangeMap

        if self.input_size is None:
            return
        engine = self.engine
        x = torch.zeros(1, 3, *self.input_size, dtype=engine.dtype, device=engine.device)
        state = engine.new_state()
        with torch.no_grad():
            self.tail(*_for_tail(engine(x, None, state)))
            tile = self.change.tile_size
            tiles = torch.zeros(-(-self.input_size[0] // tile), -(-self.input_size[1] // tile),
                                dtype=torch.bool)
            tiles[0, 0] = True
            moved = x.clone()
            moved[..., :tile, :tile] = 1.0
            change = ChangeMap(tiles, False, float(tiles.float().mean()), 0.0, tile, 1)
            self.tail(*_for_tail(engine(moved, change, state)))
            self.dense(x)

    def _load_error(self, exc: Exception) -> ModelLoadError:
        if self.requested == 'device':
            return ModelLoadError(f'{self.what} cannot run in the device mode '
                                  f"(model.execution 'device'): {exc}; use model.execution "
                                  "'eager' or 'auto'")
        return ModelLoadError(f'{self.what} cannot run incrementally: {exc}')

    def _log_fallback(self) -> None:
        if self.engine.fallback is not None and not self._fallback_logged:
            LOG.warning('%s: the sync-free device mode cannot run it (%s); running the eager '
                        'executor instead', self.what, self.engine.fallback)
            self._fallback_logged = True

    def __call__(self, x: Any, change: Any, gate: Any = None) -> Any:
        """
        Run ``x`` (1, C, H, W) through the engine.

        ``change`` is its ChangeMap, or None for a dense frame; ``gate`` a tile map of where
        layers may recompute (either executor), or None.
        """
        from sparse_perception.engine import UnsupportedOpError

        self._collect()
        tiles = None if change is None or change.refresh else change
        if tiles is not None and self._missed:
            # The glance answered frames the engine did not see: all of its input is new.
            tiles = _all_tiles(tiles)
        self._missed = False
        try:
            if gate is None:
                features = self.engine(x, tiles, self.state)
            else:
                features = self.engine(x, tiles, self.state, gate=gate)
        except UnsupportedOpError as exc:  # lowered at its first frame (fully convolutional)
            # An explicit 'device', or 'auto' whose eager fall-back cannot run it either.
            if self.requested == 'device' or self.engine.fallback is not None:
                raise self._load_error(exc) from exc
            raise
        self._log_fallback()
        self._unread = True
        return features

    def _collect(self) -> None:
        # Read after the frame's outputs were used: on CUDA the device mode's statistics wait
        # for the frame to finish, which decoding the outputs has waited for already.
        if self._unread:
            stats = self.engine.last_stats
            if stats.dense:  # what a frame costs dense, for frames the engine does not run
                self._dense_stats, self._pass_stats = stats, {}
            self.stats.append(stats)
            self._unread = False

    def _config(self, settings: PerceptionSettings) -> Any:
        """Return the engine settings: ``sparsity.*``, with this network's per-layer thresholds."""
        from sparse_perception.engine import EngineConfig
        from sparse_perception.settings import parse_layer_thresholds

        own = own_thresholds(parse_layer_thresholds(settings.sparsity.layer_thresholds),
                             self.scope, self.engine.threshold_names(), self.what)
        return EngineConfig.from_settings(settings, layer_thresholds=own)

    def reconfigure(self, settings: PerceptionSettings) -> None:
        if self.gates is not None:
            from sparse_perception.gates.learned import GateFileError
            try:  # first: a gate this model cannot take changes nothing
                self.gates.reconfigure(settings)
            except GateFileError as exc:  # the gate's file is at fault, not the model
                raise ModelLoadError(f'sparsity.gate_model: {exc}') from exc
            except ValueError as exc:
                raise ModelLoadError(f'{self.what}: {exc}') from exc
        self.config = self._config(settings)
        self.engine.reconfigure(self.config, self.state)
        _apply_change_settings(self.change, settings.change)
        if self.change.tile_size != settings.change.tile_size:
            # The tile edge shapes the map's reference: a new map, whose first is a refresh.
            from sparse_perception.change import ChangeDetector, ResampledChange

            tile = settings.change.tile_size
            self.change = (ResampledChange(tile) if isinstance(self.change, ResampledChange)
                           else ChangeDetector(settings.change))
        if settings.sparsity.adaptive != self.adaptive:
            self.adaptive = settings.sparsity.adaptive
            self.choice = self._new_choice()
            if self.path != 'engine':
                self.state.request_refresh()
            self.path, self._outputs = 'engine', None

    def reset(self) -> None:
        # The path choice keeps what it measured: the network and its costs stay the same,
        # unless it is fully convolutional, whose costs follow the frame size.
        self.state.reset()
        self.change.reset()
        if self.gates is not None:
            self.gates.reset()
        self.path, self._outputs, self._missed = 'engine', None, False
        # What a frame that failed part way ran is not the next frame's work.
        self.stats, self._unread = [], False
        if self.input_size is None:
            self.choice, self._dense_stats, self._pass_stats = self._new_choice(), None, {}

    def take_stats(self) -> list[Any]:
        self._collect()
        stats, self.stats = self.stats, []
        return [self._glance_stat(s) if isinstance(s, _Glance) else s for s in stats]


class _IncrementalDetector:
    """
    Stands in for a two-stage model's detector module: runs it through the engine.

    A tracking model (BlazePose) runs its person detector on every frame while it follows
    nobody, which on a still camera is the same picture again and again. The detector's input
    is a letterboxed frame in [-1, 1]; its change map is taken on that input.
    """

    def __init__(self, detector: Any, dense: Any, settings: PerceptionSettings, what: str,
                 scope: str, input_size: tuple[int, int]):
        from sparse_perception.change import ResampledChange

        self.net = _IncrementalNet(detector.trunk, detector.tail, _dense_pass(dense), settings,
                                   what, scope, input_size)
        self.net.change = ResampledChange(settings.change.tile_size)
        self.net.own_share = True  # it runs on some frames only: see _IncrementalNet.scene
        self.input_size = input_size
        self._image_size: tuple[int, int] | None = None

    def add(self, frame_change: Any, image_size: tuple[int, int]) -> None:
        """Take every frame's change map, whether the detector runs on the frame or not."""
        self.net.change.add(frame_change)
        self._image_size = image_size

    def __call__(self, x: Any) -> Any:
        from sparse_perception.models.transforms import ImageTransform

        if self._image_size is None:
            raise ValueError(f'{self.net.what} runs within a pipeline, which gives it each '
                             "frame's change map first")
        letterbox = ImageTransform.fit(self._image_size, self.input_size, 'letterbox')
        return self.net.run(x, lambda: self.net.change.update(letterbox))


class _GateTiles(NamedTuple):
    """A gate's bool tile map and tile edge, read by the engine as it reads a ChangeMap's."""

    tiles: Any
    tile_size: int


class _Decoded(NamedTuple):
    """A result decoded earlier that stands again (outputs are decoded; this is not)."""

    people: list


class _RunSummary(NamedTuple):
    """What a head's statistics take from one network run."""

    dense_macs: float  # what a dense pass costs
    active_macs: float  # the active fraction times dense_macs
    macs: float  # multiply-accumulates executed
    dense: bool  # ran dense
    layers: dict[str, float]  # active fraction by prefixed layer name


class _Head:
    """
    One network on the frame: the loaded model and, when incremental, its engine state.

    A fully convolutional network that takes the camera frame as it is shares the pipeline's
    change map; a network whose input is resampled gets the frame's map carried onto its input
    (ResampledChange). A tracking pose model that follows several people runs its landmark
    network once per person, each in a network state of its own (``slots``).
    """

    def __init__(self, kind: str, settings: PerceptionSettings, device: str,
                 incremental: bool):
        self.kind = kind
        self.model_name = getattr(settings.model, kind)
        self.model = _load(kind, self.model_name, settings, device, incremental)
        self.nets: list[_IncrementalNet] = []
        self.net = None
        self._prefixes = ['']  # per network in nets: how its layers are named in the stats
        self._dense = _dense_pass(self.model.module)  # the dense reference's pass
        # A tracking model's detector runs on every detect_period-th frame while it follows
        # fewer people than it may, in the dense reference too: the reference is the same
        # tracking with dense networks, so what differs from it is what sparsity did.
        self.detect_period = settings.pose.detect_period
        self._undetected = 0  # frames in a row with room for another person
        self._moved = False  # the frame changed since the detector last ran
        self._focused: tuple[Any, Any] | None = None  # pose.focus: (answer, its second look)
        self._settings = settings
        self._summaries: dict[tuple[str, int], tuple[Any, _RunSummary]] = {}  # see _summary
        self._apply_people(settings)
        if incremental:
            self.net = self._landmark_net(settings)
            self.nets.append(self.net)
            if getattr(self.model, 'detector', None) is not None:
                try:
                    size = self.model.detector_settings.input_size
                    detector = _IncrementalDetector(
                        self.model.detector, self.model.dense_detector, settings,
                        f'the detector of {self.model_name!r}', f'{self.kind}/detector/',
                        (size, size))
                except LayerThresholdError:
                    raise  # the setting is at fault, not the network
                except ModelLoadError as exc:  # it still runs, densely, as before
                    LOG.info('%s; it runs dense', exc)
                else:
                    self.model.detector = detector
                    self.nets.append(detector.net)
                    self._prefixes.append('detector/')
        from sparse_perception.person_crops import PersonSlots

        self.slots = PersonSlots(self.net, self._another_person)

    def _apply_people(self, settings: PerceptionSettings) -> bool:
        """Give a tracking model the people settings; return whether it is one."""
        if not hasattr(self.model, 'max_people'):
            return False
        self.model.max_people = settings.pose.max_people
        self.model.detect_windows = settings.pose.detect_windows
        return True

    def _landmark_net(self, settings: PerceptionSettings) -> _IncrementalNet:
        from sparse_perception.change import ResampledChange
        from sparse_perception.models.registry import engine_network

        what = f'{self.kind} model {self.model_name!r}'
        trunk, tail = engine_network(self.model.module)
        net = _IncrementalNet(trunk, tail, _dense_pass(self.model.dense_module),
                              settings, what, f'{self.kind}/', self.model.input_size,
                              _gates(self.kind, self.model, settings, what))
        if self.model.input_size is None or self.model.resize != 'none':
            # A resampled input: its change map comes from the frame's (see ResampledChange);
            # a network fed the frame itself shares the frame's map (a fully convolutional
            # one is, up to model.fcn_max_megapixels).
            net.change = ResampledChange(settings.change.tile_size)
        return net

    def _another_person(self) -> _IncrementalNet | None:
        """Make a landmark network state for one more person followed at once (None: dense)."""
        if self.net is None:
            return None
        from sparse_perception.scheduling import warmup_frames

        net = self._landmark_net(self._settings)
        if net.choice is not None and self.net.choice is not None:
            # The same network on crops of the same size: the new person starts where the
            # first person's path choice stands, not with an engine trial and a dense sample of
            # its own on the frame that finds them (several pedestrians are often found at
            # once). What a dense pass of it costs in MACs is the first network's too.
            net.choice = self.net.choice.copy(warmup_frames(net.engine.device))
            net._dense_stats = self.net._dense_stats
        self.nets.append(net)
        self._prefixes.append(f'person{len(self.slots.slots)}/')
        return net

    def needs_change(self) -> bool:
        """
        Whether a network of this head may read the frame's change map on the next frame.

        A slot without a crop (nobody followed there) starts its next run with a refresh, so
        its network needs no map of earlier frames, whatever its path; the detector, while it
        may run (room for another person), reads the maps of every frame since it last ran
        (after frames without one, a refresh).
        """
        nets = [slot.net for slot in self.slots.slots
                if slot.net is not None and slot.transform is not None]
        detector = getattr(self.model, 'detector', None)
        if isinstance(detector, _IncrementalDetector) and \
                len(self.model.tracks) < self.model.max_people:  # it may run
            nets.append(detector.net)
        return any(net.needs_change() for net in nets)

    def reconfigure(self, settings: PerceptionSettings) -> None:
        """Apply new sparsity and change settings from the next frame on, keeping the caches."""
        if self.kind == 'pose' and self.net is not None:  # first: a bad gate changes nothing
            _check_pose_gate(self.model, settings, f'pose model {self.model_name!r}')
        self._settings = settings
        if hasattr(self.model, 'max_pixels'):  # a frame above it now gets a smaller input
            bound = _max_pixels(settings)
            if bound != self.model.max_pixels and self.model.input_size is None:
                # The input size may change with it, and what a fully convolutional network
                # costs follows its input size: the path choice starts afresh (reset).
                for net in self.nets:
                    net.reset()
            self.model.max_pixels = bound
        for net in self.nets:
            net.reconfigure(settings)
        self.detect_period = settings.pose.detect_period
        if self._apply_people(settings):
            del self.model.tracks[settings.pose.max_people:]  # the latest found go first

    def reset(self) -> None:
        for net in self.nets:
            net.reset()
        self.slots.forget()
        self._undetected, self._moved, self._focused = 0, False, None
        if hasattr(self.model, 'reset'):  # a tracking model forgets its people
            self.model.reset()

    def run(self, frame: np.ndarray, frame_change: Any,
            proposals: Callable[[], list] | None = None) -> tuple[Any, HeadStats]:
        """
        Run on ``frame`` (H, W, 3) uint8 RGB; ``frame_change`` is the frame's ChangeMap.

        ``proposals`` returns boxes where the frame's segmentation saw people, for a tracking
        model to try on any frame where it follows fewer people than it may.
        """
        start = time.perf_counter()
        model = self.model
        scene = None if frame_change.refresh or not frame_change.measured else float(
            frame_change.changed_fraction)
        for net in self.nets:  # what changed reaches every resampled input, run or not
            # A gate bounds what the engine recomputes however much changed: no wait there.
            net.scene = None if net._active_gates() is not None else scene
            if net.change is not frame_change and hasattr(net.change, 'add'):
                net.change.add(frame_change)
        detector = getattr(model, 'detector', None)
        if isinstance(detector, _IncrementalDetector):
            detector.add(frame_change, frame.shape[:2])
        if getattr(model, 'locate_people', None) is None:
            pixels, transform = model.prepare(frame)
            (slot,) = self.slots.slots[:1]
            decoded = self._infer(slot, lambda: pixels, transform, frame_change)
            if self._settings.pose.focus and _single_pose(model):
                decoded = self._focus(frame, decoded)
            return _to_result(self.kind, model, decoded), self._stats(start)
        free = len(model.tracks) < model.max_people
        detect = free and self._detect_now(frame_change)
        # Proposals cost a connected-components pass, not a network: tried on every frame
        # with room, as the dense reference does, so both follow the same people.
        boxes = proposals() if free and proposals is not None else ()
        from sparse_perception.models.blazepose import detection_windows

        windows = model.counters['window_runs']
        crops = model.locate_people(frame, detect=detect, proposals=boxes)
        if isinstance(detector, _IncrementalDetector):
            if free and not detect and self._undetected % self.detect_period == 0:
                # The dense reference detects on this frame (in its windows too): nothing
                # changed since the detector last ran, so skipping it is sparsity's saving.
                # (Between the period's frames neither pipeline detects: nothing to count.)
                for _ in range(1 + len(detection_windows(frame.shape[:2],
                                                         model.detect_windows))):
                    detector.net.not_run()
            for _ in range(model.counters['window_runs'] - windows):
                detector.net.count_dense_pass()  # a window, on the dense pass
        inputs = [(slot, lambda transform=transform: model.crop_input(frame, transform),
                   transform)
                  for slot, transform in zip(self.slots.assign([c.person for c in crops]), crops)]
        people, ids = [], []
        for transform, decoded in zip(crops, self._infer_many(inputs, frame_change)):
            for person in decoded:
                people.append(person)
                ids.append(transform.person)
        # Someone lost (or every slot taken): the next frame may detect at once.
        lost = len(model.tracks) < len(crops)
        full = len(model.tracks) >= model.max_people
        self._undetected = 0 if lost or full else self._undetected + 1
        return _to_result(self.kind, model, people, ids), self._stats(start)

    def _infer(self, slot: Any, pixels: Any, transform: Any, frame_change: Any) -> Any:
        """Run the network on one input (``pixels()`` makes it) in ``slot``'s state; decode."""
        return self._infer_many([(slot, pixels, transform)], frame_change)[0]

    def _infer_many(self, inputs: Sequence[tuple[Any, Any, Any]], frame_change: Any) -> list:
        """
        Run the network on each of ``inputs`` ``(slot, pixels, transform)``; decode each.

        Each input runs in its slot's network state, by the path chosen for it there; the dense
        passes due run together (:meth:`_dense_pass.many`: one batch where that pays), each
        network's path choice taking an equal share of their time. Decoded in input order.
        """
        import torch

        # Per input: its outputs, a _Decoded result that stands again, or None while its
        # dense pass is due.
        answers: list[Any] = []
        due: list[tuple[int, Any, Any]] = []  # (input index, its network or None, its x)
        with torch.no_grad():
            for index, (slot, pixels, transform) in enumerate(inputs):
                net = slot.net
                # Known still: the same crop of a still frame; its input is the last one then.
                # (A frame that changed only where the crop does not read is not taken as
                # still: the dense path then runs on the fresh crop, as a dense pipeline
                # would, and at the static-camera setting that kept the person count with
                # dense on 18 more frames of vtest's 795,
                # bench/results/pose_sparsity_vtest.md.)
                still = (transform == slot.transform and not frame_change.refresh
                         and frame_change.changed_fraction == 0.0)
                x = slot.x if still and slot.x is not None else self.model.to_tensor(pixels())
                if net is None:
                    answers.append(None)
                    due.append((index, None, x))
                    continue
                slot.x = x
                change = lambda slot=slot, transform=transform: self._input_change(  # noqa: E731
                    slot, transform, frame_change)
                outputs = net.begin(x, change, still)
                repeated = net.repeated and slot.transform == transform
                slot.transform = transform
                if outputs is _DENSE:
                    answers.append(None)
                    due.append((index, net, x))
                elif repeated and slot.decoded is not None:
                    # The same outputs on the same crop decode to the same result.
                    answers.append(_Decoded(slot.decoded))
                else:
                    answers.append(outputs)
            self._run_dense(due, answers)
        decoded = []
        for (slot, _, transform), answer in zip(inputs, answers):
            if not isinstance(answer, _Decoded):
                slot.decoded = self.model.decode(answer, transform)
                answer = _Decoded(slot.decoded)
            decoded.append(answer.people)
        return decoded

    def _run_dense(self, due: list[tuple[int, Any, Any]], answers: list[Any]) -> None:
        """Run the dense passes ``due`` (see :meth:`_infer_many`) into ``answers``."""
        if not due:
            return
        nets = [net for _, net, _ in due]
        dense = self._dense if nets[0] is None else nets[0].dense
        # Every slot's network wraps the one dense module of the head: one batch serves all.
        clock = nets[0]._clock if nets[0] is not None else time.perf_counter
        start = clock()
        outputs = dense.many([x for _, _, x in due])
        ms = (clock() - start) * 1e3 / len(due)
        for (index, net, x), output in zip(due, outputs):
            if net is not None:
                net.ran_dense(x, output, ms)
            answers[index] = output

    def _focus(self, frame: np.ndarray, decoded: list) -> list:
        """
        Look again, dense, at a crop around an unsure single-person answer (``pose.focus``).

        Returns the more confident (mean score) of the two answers, in frame pixels.
        """
        pose = self._settings.pose
        if not decoded or np.mean([k.score for k in decoded[0]]) >= pose.focus_score:
            return decoded
        if self._focused is not None and self._focused[0] is decoded:
            return self._focused[1]  # the same answer on the same input: the same look again
        self._focused = (decoded, self._look_again(frame, decoded))
        return self._focused[1]

    def _look_again(self, frame: np.ndarray, decoded: list) -> list:
        """Run the dense pass on the crop around ``decoded``; return the surer answer."""
        import torch

        from sparse_perception.models.decoders import Keypoint

        # The surer half of an unsure answer says where the person is (its scores may all be
        # low: a whole frame's worth of pixels went to somebody small).
        surest = sorted(decoded[0], key=lambda k: -k.score)[:max(2, len(decoded[0]) // 2)]
        box = focus_box([(k.x, k.y) for k in surest], frame.shape[:2])
        if box is None:
            return decoded
        x0, y0, x1, y1 = box
        pixels, transform = self.model.prepare(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        # The fastest dense pass the head has (LiteRT's, where the path choice runs it).
        dense = self.net.dense if self.net is not None else self._dense
        with torch.no_grad():
            outputs = dense(self.model.to_tensor(pixels))
        focused = self.model.decode(outputs, transform)
        if not focused or np.mean([k.score for k in focused[0]]) <= \
                np.mean([k.score for k in decoded[0]]):
            return decoded
        return [[Keypoint(k.x + x0, k.y + y0, k.score) for k in focused[0]]]

    def _detect_now(self, frame_change: Any) -> bool:
        """Whether a tracking model with room for another person may detect on this frame."""
        if self.net is None:  # dense: every frame counts as moved (no change map)
            return self._undetected % self.detect_period == 0
        # Any change counts, inside the followed people's crops too: the detector sees the
        # whole frame, and someone a followed person hid or outshone is found once they move.
        self._moved = (self._moved or frame_change.refresh
                       or frame_change.changed_fraction > 0)
        detect = self._undetected == 0 or (
            # Nothing changed since the detector last ran: it would find nobody new.
            self._moved and self._undetected % self.detect_period == 0)
        if detect:
            self._moved = False
        return detect

    def _input_change(self, slot: Any, transform: Any, frame_change: Any) -> Any:
        """Return the ChangeMap of the network input (its ``refresh`` means dense)."""
        if getattr(transform, 'mode', None) == 'none':
            return frame_change  # the input is the frame: share its change map
        if transform != slot.transform:
            slot.net.change.request_refresh()  # a new crop or fit: every pixel is new
        return slot.net.change.update(transform)

    def _stats(self, start: float) -> HeadStats:
        """Sum what the head's networks did this frame (the detector only when it ran)."""
        ms = (time.perf_counter() - start) * 1e3
        if self.net is None:
            return HeadStats(1.0, 0, 0, True, ms)
        runs = [self._summary(prefix, stats) for net, prefix in zip(self.nets, self._prefixes)
                for stats in net.take_stats()]
        dense_macs = sum(run.dense_macs for run in runs)
        active = sum(run.active_macs for run in runs) / dense_macs if dense_macs else 0.0
        layers: dict[str, float] = {}
        for run in runs:
            layers.update(run.layers)
        return HeadStats(active_fraction=active, macs=int(sum(run.macs for run in runs)),
                         dense_macs=int(dense_macs), dense=any(run.dense for run in runs),
                         ms=ms, layers=layers)

    def _summary(self, prefix: str, stats: Any) -> _RunSummary:
        """Return what :meth:`_stats` sums of one network run, its layers named ``prefix``."""
        # A frame a network skipped or ran on the dense path is one read-only object, the same
        # every such frame: summed once (its layers are the whole network's).
        key = (prefix, id(stats))
        cached = self._summaries.get(key)
        if cached is not None and cached[0] is stats:
            return cached[1]
        summary = _RunSummary(stats.dense_macs, stats.active_fraction * stats.dense_macs,
                              stats.macs, stats.dense,
                              {prefix + s.name: s.active_fraction for s in stats.layers})
        if len(self._summaries) >= 64:  # bounded: the engine's own frames come and go
            self._summaries.clear()
        self._summaries[key] = (stats, summary)
        return summary


class Pipeline:
    """
    Camera frames in, decoded masks and keypoints out (see the module docstring).

    ``heads`` chooses the networks ('segmentation', 'pose'); their models are named by
    ``settings.model.segmentation`` and ``settings.model.pose``. Loading errors raise
    :class:`ModelLoadError` naming the model and the reason.
    """

    def __init__(self, settings: PerceptionSettings | None = None, *,
                 heads: Sequence[str] = HEADS, incremental: bool = True):
        settings = settings if settings is not None else PerceptionSettings()
        unknown = [h for h in heads if h not in HEADS]
        if unknown or not heads or len(set(heads)) != len(heads):
            raise ValueError(f'heads must be distinct names from {HEADS}, got {tuple(heads)}')
        self.incremental = incremental
        self._settings = settings
        # Segmentation runs before pose whatever the order asked: its mask proposes people.
        self._head_names = tuple(kind for kind in HEADS if kind in heads)
        self._device = _device(settings.model.device)
        _apply_threads(settings.model.threads)
        self._heads = {kind: _Head(kind, settings, self._device, incremental)
                       for kind in self._head_names}
        self._check_thresholds(settings, self._heads)
        self._check_proposals(settings)
        self._changes = self._new_detectors(settings)
        # Frames whose every network runs dense may go without a change map (see
        # scheduling.ChangeMapSchedule); after such frames the next map starts with a refresh.
        self._map_schedule = ChangeMapSchedule()
        self._map_missed = False
        self._map_made = False  # this frame made its change maps (and paid for them)
        # True: make every frame's map all the same (somebody watches them, e.g. a node's
        # change_map topic has a subscriber).
        self.keep_change_maps = False
        self._shape: tuple[int, ...] | None = None
        self._closed = False
        self._warn_unread_change(settings)

    @staticmethod
    def _check_thresholds(settings: PerceptionSettings, heads: dict) -> None:
        """Refuse a per-layer threshold that no network of ``heads`` takes."""
        from sparse_perception.settings import parse_layer_thresholds

        check_thresholds_claimed(parse_layer_thresholds(settings.sparsity.layer_thresholds),
                                 [net for head in heads.values() for net in head.nets])

    # -- the contract -----------------------------------------------------------------------

    @property
    def settings(self) -> PerceptionSettings:
        return self._settings

    @property
    def class_names(self) -> tuple[str, ...]:
        head = self._heads.get('segmentation')
        return tuple(head.model.labels) if head else ()

    @property
    def joint_names(self) -> tuple[str, ...]:
        head = self._heads.get('pose')
        return tuple(head.model.joints) if head else ()

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        head = self._heads.get('pose')
        return tuple(tuple(edge) for edge in head.model.skeleton) if head else ()

    def process(self, image: np.ndarray) -> FrameResult:
        """
        Run every head on one frame, ``(H, W, 3)`` uint8 RGB.

        A frame that fails part way (an exception from a network) resets the temporal state
        before the exception goes on: the next frame runs dense, and tracking starts afresh.
        """
        self._check_open()
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(
                'a frame must be a non-empty (H, W, 3) uint8 RGB array, got '
                f'{getattr(image, "dtype", type(image).__name__)} of shape '
                f'{getattr(image, "shape", None)}')
        start = time.perf_counter()
        if image.shape != self._shape:
            if self._shape is not None:
                LOG.info('frame size changed from %s to %s: temporal state reset',
                         self._shape[:2], image.shape[:2])
            self.reset()
            self._shape = image.shape
        try:
            changes, outputs, heads = self._run_heads(image)
        except BaseException:
            # The change maps took this frame in as propagated and a network may hold part
            # of it: the next frame would be answered from what this one left. It starts
            # afresh instead (dense, as after a size change), and nobody is followed.
            self.reset()
            raise
        change = changes[self._head_names[0]]  # the segmentation head's when both run
        tiles = change.tiles.cpu().numpy()
        stats = PipelineStats(float(change.changed_fraction), heads,
                              (time.perf_counter() - start) * 1e3, change.measured)
        return FrameResult(outputs.get('segmentation'), outputs.get('pose'), tiles,
                           change.tile_size, stats)

    def _run_heads(self, image: np.ndarray) -> tuple[dict, dict, dict[str, HeadStats]]:
        """Return the frame's change maps and each head's outputs and statistics."""
        # The dense reference needs no change map: every tile of every frame is computed.
        made = time.perf_counter()
        changes = self._change_maps(image)
        map_ms = (time.perf_counter() - made) * 1e3 if self._map_made else 0.0
        for head in self._heads.values():
            for net in head.nets:
                net.map_ms = map_ms
        outputs: dict[str, Any] = {}
        heads: dict[str, HeadStats] = {}
        for kind, head in self._heads.items():
            outputs[kind], heads[kind] = head.run(image, changes[kind],
                                                  self._proposals(outputs.get('segmentation')))
        return changes, outputs, heads

    def _check_proposals(self, settings: PerceptionSettings) -> None:
        """Refuse mask proposals without OpenCV (its connected components find the people)."""
        if settings.pose.mask_proposal_height == 0 or len(self._head_names) < 2:
            return
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                'pose.mask_proposal_height needs OpenCV: on a robot `apt install python3-opencv` '
                "(rosdep does this), with pip `pip install 'sparse_perception[opencv]'`; or set "
                'it to 0') from None

    def _proposals(self, segmentation: Any) -> Callable[[], list] | None:
        """Return the person regions of this frame's mask for the pose head (None: none)."""
        height = self._settings.pose.mask_proposal_height
        if segmentation is None or height == 0 or 'person' not in segmentation.class_names:
            return None
        from sparse_perception.person_crops import person_boxes

        person = segmentation.class_names.index('person')
        return lambda: person_boxes(segmentation.mask, person, height)

    def update(self, settings: PerceptionSettings) -> None:
        """
        Apply new settings from the next frame on.

        A head whose model, device, precision, backend or execution changed is reloaded (which
        may raise :class:`ModelLoadError`; the old head then stays); sparsity changes keep the
        caches; a new change threshold keeps the change map's reference, unless it makes two
        heads share a map or stop sharing one (the new maps then start with a refresh).
        """
        self._check_open()
        old = self._settings
        reload_all = reloads_every_head(old, settings)
        device = _device(settings.model.device)
        if settings.model.threads != old.model.threads:
            _apply_threads(settings.model.threads)  # the reloaded heads' LiteRT takes it too
        heads = dict(self._heads)
        reconfigured = []  # heads changed in place, which a failure must set back
        try:
            for kind in self._head_names:
                if reload_all or getattr(settings.model, kind) != getattr(old.model, kind):
                    heads[kind] = _Head(kind, settings, device, self.incremental)
                elif (settings.sparsity != old.sparsity or settings.change != old.change
                      or settings.pose != old.pose or settings.model.fcn_max_megapixels
                      != old.model.fcn_max_megapixels):
                    reconfigured.append(heads[kind])
                    heads[kind].reconfigure(settings)
            self._check_thresholds(settings, heads)
            self._check_proposals(settings)
        except Exception as exc:
            # The old settings stay: a head reconfigured before the one that failed (or the
            # failed one, part way) takes them back. (What it remembered may go with it: a
            # gate changed and back starts from nothing seen, a plan change and back runs
            # the next frame dense.)
            for head in reconfigured:
                try:
                    head.reconfigure(old)
                except Exception as back:  # said with the error that caused it
                    exc.add_note(f'and the {head.kind} head could not take the old settings '
                                 f'back: {back}')
            if settings.model.threads != old.model.threads:
                _apply_threads(old.model.threads)
            raise
        self._heads, self._device = heads, device
        if (settings.change.threshold, settings.change.min_pixels) != (
                old.change.threshold, old.change.min_pixels):
            self._warn_unread_change(settings)
        if settings.change.tile_size != old.change.tile_size:
            self._changes = self._new_detectors(settings)
            self.reset()
        elif self._sharing(settings) != self._sharing(old):
            # Heads that shared a change map now differ, or the reverse: each head's map must
            # hold what that head last propagated, so the new maps start with a refresh (one
            # dense frame; the tracking and the caches' shapes stay).
            self._changes = self._new_detectors(settings)
        else:
            for kind, detector in self._changes.items():
                _apply_change_settings(detector, settings.change_for(kind))
        self._settings = settings

    def reset(self) -> None:
        """Forget the temporal state: the next frame runs dense."""
        for detector in {id(d): d for d in self._changes.values()}.values():
            detector.reset()
        self._map_schedule.reset()
        self._map_missed = False
        for head in self._heads.values():
            head.reset()

    def warm_up(self) -> None:
        """
        Pay every network's one-time costs now (plans; on a GPU, compiling the kernels).

        Frames alone reach only the networks they run: a pose landmark network waits for
        somebody to be in view. Outputs and temporal state are unchanged.
        """
        self._check_open()
        for head in self._heads.values():
            for net in head.nets:
                net.warm_up()

    def close(self) -> None:
        """Release the networks and the GPU memory they held; the pipeline runs no more."""
        self._heads = {}
        self._closed = True
        if self._device.startswith('cuda'):
            import torch

            torch.cuda.empty_cache()

    # -- helpers ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError('the pipeline is closed (its networks were released): make a '
                               'new one')

    def _change_maps(self, image: np.ndarray) -> dict[str, Any]:
        """Return each head's change map of ``image``: one map per distinct change settings."""
        if not self.incremental or self._map_schedule.skip(self.keep_change_maps or any(
                head.needs_change() for head in self._heads.values())):
            import torch

            from sparse_perception.change import ChangeMap

            t = self._settings.change.tile_size
            tiles = torch.ones(-(-image.shape[0] // t), -(-image.shape[1] // t),
                               dtype=torch.bool)
            every = ChangeMap(tiles, True, 1.0, 1.0, t, 0, measured=False)
            self._map_missed, self._map_made = self.incremental, False
            return {kind: every for kind in self._head_names}
        self._map_made = True
        detectors = {id(d): d for d in self._changes.values()}
        resumed, self._map_missed = self._map_missed, False
        if resumed:
            # The references missed the frames in between, which the networks ran dense on:
            # a picture equal to a reference is not the picture their outputs came from.
            for detector in detectors.values():
                detector.request_refresh()
        made = {key: detector.update(image) for key, detector in detectors.items()}
        if resumed:  # every tile set for want of a reference: it measured no change
            made = {key: dataclasses.replace(m, measured=False) for key, m in made.items()}
        # Every head's map must show changes for the next maps to be skipped.
        still = min(m.changed_fraction for m in made.values())
        self._map_schedule.made(any(m.refresh for m in made.values()), still)
        return {kind: made[id(detector)] for kind, detector in self._changes.items()}

    def _warn_unread_change(self, settings: PerceptionSettings) -> None:
        """Say so when change.threshold or min_pixels are set but no head reads them."""
        pose = settings.change_for('pose')
        if 'segmentation' not in self._head_names and (
                settings.change.threshold, settings.change.min_pixels) != (
                pose.threshold, pose.min_pixels):
            LOG.warning('change.threshold %g and change.min_pixels %d are the segmentation '
                        "head's, and only the pose head runs here: it reads "
                        'pose.change_threshold (%g) and pose.change_min_pixels (%d)',
                        settings.change.threshold, settings.change.min_pixels,
                        pose.threshold, pose.min_pixels)

    def _sharing(self, settings: PerceptionSettings) -> list[int]:
        """Per head, the index of the first head with the same change settings."""
        changes = [settings.change_for(kind) for kind in self._head_names]
        return [changes.index(change) for change in changes]

    def _new_detectors(self, settings: PerceptionSettings) -> dict[str, Any]:
        """Make each head's change detector; heads whose change settings agree share one."""
        from sparse_perception.change import ChangeDetector

        made: dict[Any, Any] = {}
        for kind in self._head_names:
            change = settings.change_for(kind)
            if change not in made:
                made[change] = ChangeDetector(change)
        return {kind: made[settings.change_for(kind)] for kind in self._head_names}


def _device(requested: str) -> str:
    import torch

    if requested == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if requested.startswith('cuda') and not torch.cuda.is_available():
        raise ModelLoadError('model.device is cuda but CUDA is not available here (torch '
                             f'{torch.__version__}); use cpu or auto')
    return requested


@dataclasses.dataclass(frozen=True)
class _Glance:
    """A glance ran on an input of this size (its statistics are made when collected)."""

    batch_channels: tuple[int, int]
    size: tuple[int, int]
    dtype: Any
    device: Any


def _gates(kind: str, model: Any, settings: PerceptionSettings, what: str) -> Any:
    """Return the gate maker of a network: segmentation, single-person pose, else None."""
    from sparse_perception.gates.learned import GateFileError
    from sparse_perception.gates.maker import GateMaker, person_class
    from sparse_perception.gates.track import TrackGate

    if kind != 'segmentation':
        _check_pose_gate(model, settings, what)
        return TrackGate(settings, settings.change.tile_size) if _single_pose(model) else None
    # The glance runs the torch network at another size: fully convolutional models only.
    glance = _dense_pass(model.module, channels_last=True) if model.fully_convolutional else None
    try:
        return GateMaker(settings.sparsity, settings.change.tile_size, model.decoder,
                         person_class(tuple(model.labels)), glance,
                         model=settings.model.segmentation,
                         max_megapixels=(settings.model.fcn_max_megapixels
                                         if model.fully_convolutional else None))
    except GateFileError as exc:  # the gate's file is at fault, not the model
        raise ModelLoadError(f'sparsity.gate_model: {exc}') from exc
    except ValueError as exc:
        raise ModelLoadError(f'{what}: {exc}') from exc


def focus_box(points: Sequence[tuple[float, float]],
              frame_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """
    Return the square crop (x0, y0, x1, y1) that pose.focus looks at, or None.

    The square is 1.5 times the larger extent of ``points`` (frame pixels), centred on them,
    moved inside the frame. None with fewer than two points, or when the square would hold
    more than half the frame (a second look at about the same pixels sees nothing new).
    """
    height, width = frame_size
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    side = max(16, int(round(1.5 * max(max(xs) - min(xs), max(ys) - min(ys)))))
    side = min(side, height, width)
    if side * side > 0.5 * height * width:
        return None
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    x0 = int(min(max(round(cx - side / 2), 0), width - side))
    y0 = int(min(max(round(cy - side / 2), 0), height - side))
    return x0, y0, x0 + side, y0 + side


def _single_pose(model: Any) -> bool:
    return getattr(model, 'decoder', None) == 'single_pose'


def _check_pose_gate(model: Any, settings: PerceptionSettings, what: str) -> None:
    """Raise ModelLoadError when ``pose.gate`` asks for a gate this pose model cannot take."""
    if settings.pose.gate != 'none' and not _single_pose(model):
        raise ModelLoadError(
            f'{what}: pose.gate {settings.pose.gate!r} follows the keypoints of a '
            'single-person pose network (movenet_lightning); this one tracks people in crops '
            "of their own (use pose.gate 'none')")


def _all_tiles(change: Any) -> Any:
    """Return the same ChangeMap with every tile set (not a refresh: gates still apply)."""
    import dataclasses as dc

    import torch

    return dc.replace(change, tiles=torch.ones_like(torch.as_tensor(change.tiles)),
                      changed_fraction=1.0)


def _made(change: Any) -> Any:
    """Return a ChangeMap given as one or as a function that makes it."""
    return change() if callable(change) else change


def _for_tail(features: Sequence[Any]) -> list[Any]:
    """Return a trunk's outputs for its tail: fp16 features as float, the tail's fp32."""
    return [f.float() if f.is_floating_point() else f for f in features]


class _dense_pass:  # noqa: N801 (reads as the function it stands for)
    """``x -> outputs``: a network's trunk and tail as one dense pass."""

    def __init__(self, module: Any, channels_last: bool = False):
        self.module = module  # torch, or LiteRT's stand-in (models/tflite/litert.py)
        # An fp16 trunk (model.precision on CUDA, set at load, before this is made) takes its
        # input in fp16, as the engine does; LiteRT's stand-in has no parameters.
        first = next(iter(getattr(module.trunk, 'parameters', tuple)()), None)
        self.dtype = first.dtype if first is not None else None
        self.batches = _batches_pay(first)
        # Torch's CPU depthwise convolutions are several times faster on channels_last inputs:
        # the fully convolutional DeepLab's glance at 214x120 took 16.0 against 18.7 ms. The
        # dense reference keeps the stock NCHW input a user would hand the module.
        self.channels_last = channels_last and first is not None

    def __call__(self, x: Any) -> Any:
        if self.dtype is not None and x.dtype != self.dtype and x.dtype.is_floating_point:
            x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            import torch

            x = x.contiguous(memory_format=torch.channels_last)
        # The trunk hands float features to the tail, which stays in fp32.
        return self.module.tail(*[f.float() for f in self.module.trunk(x)])

    def many(self, inputs: Sequence[Any]) -> list[Any]:
        """Return the outputs of each of ``inputs`` (1, C, H, W), as one batch where it pays."""
        import torch

        if not self.batches or len(inputs) < 2:
            return [self(x) for x in inputs]
        x = torch.cat(list(inputs))
        if self.dtype is not None and x.dtype != self.dtype and x.dtype.is_floating_point:
            x = x.to(self.dtype)
        # The trunk (nearly all of the work) runs on the batch; the tail runs per input, as an
        # imported tail may reshape to the file's batch of one.
        features = [f.float() for f in self.module.trunk(x)]
        return [self.module.tail(*[f[i:i + 1] for f in features]) for i in range(len(inputs))]


def _batches_pay(parameter: Any) -> bool:
    """
    Whether several inputs of one size (people's crops) should go through in one batch.

    ``parameter`` is one of the network's torch parameters (None: LiteRT's stand-in). On CUDA
    yes: one launch per layer instead of one per person (no GPU figure yet). On the CPU no:
    on torch a batch of two 256x256 crops took 2.33x one (landmark_batch_litert_cpu.md), and
    on LiteRT 1.82x one, yet following two people that way saved 1.4% of the pose head's time
    (41.66 vs 42.25 ms, pose_people_litert_batch.md) while it needed an interpreter of its
    own for the batch.
    """
    return parameter is not None and parameter.device.type == 'cuda'


def _as_dense_pass(template: Any, skipped: bool) -> Any:
    """Engine statistics for a frame the dense path ran (or skipped: nothing changed)."""
    from sparse_perception.engine.stats import FrameStats, LayerStats

    layers = [] if template is None else [
        LayerStats(s.name, s.kind, s.positions, 'skip' if skipped else 'full',
                   0 if skipped else s.positions, 0 if skipped else s.positions,
                   0 if skipped else s.positions, 0.0 if skipped else s.dense_macs,
                   s.dense_macs) for s in template.layers]
    return FrameStats(dense=not skipped, input_fraction=0.0 if skipped else 1.0, layers=layers)


def _dense_runtime(requested: str, model: Any, device: str) -> str:
    """Resolve ``model.runtime`` for one loaded model to 'torch' or 'litert'."""
    if requested != 'auto':
        return requested
    from sparse_perception.models.tflite.litert import can_use_litert

    return 'litert' if device == 'cpu' and can_use_litert(model) else 'torch'


_TORCH_DEFAULT_THREADS: list[int] = []  # torch's own thread count, before any setting


def _apply_threads(threads: int) -> None:
    # Process-wide in torch: the nodes and the replay run one pipeline configuration each.
    import torch

    if not _TORCH_DEFAULT_THREADS:
        _TORCH_DEFAULT_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(threads if threads > 0 else _TORCH_DEFAULT_THREADS[0])


def _max_pixels(settings: PerceptionSettings) -> int:
    """Return the largest input of a fully convolutional model, in pixels."""
    return round(settings.model.fcn_max_megapixels * 1e6)  # (0.064896 is 64896 pixels)


def _load(kind: str, name: str, settings: PerceptionSettings, device: str,
          incremental: bool):
    from sparse_perception.models.registry import load_model

    if not name:
        raise ModelLoadError(
            f'model.{kind} is empty: name a registered model (see `sparse-perception models '
            'list`) or a model file')
    try:
        model = load_model(name, device, models_dir=settings.model.models_dir or None)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        # ImportError: an optional package the model's format needs (tflite) is missing.
        raise ModelLoadError(f'cannot load the {kind} model {name!r}: {exc}') from exc
    if model.kind != kind:
        raise ModelLoadError(f'model {name!r} is a {model.kind} model, not a {kind} model')
    model.max_pixels = _max_pixels(settings)
    model.dense_module, model.dense_detector = model.module, getattr(model, 'detector', None)
    runtime = _dense_runtime(settings.model.runtime, model, device)
    if runtime == 'litert':
        from sparse_perception.models.tflite.litert import litert_networks

        try:
            model.dense_module, model.dense_detector = litert_networks(
                model, settings.model.threads)
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            if settings.model.runtime == 'litert':
                raise ModelLoadError(f'cannot run the {kind} model {name!r} on LiteRT: '
                                     f'{exc}') from exc
            LOG.warning('the %s model %r runs its dense passes on torch: LiteRT cannot run '
                        'it (%s)', kind, name, exc)
            runtime = 'torch'
    if hasattr(model, 'window_detector'):
        # Windows of a frame are not the stream the detector's engine state follows: they
        # run on the dense pass, in both pipelines.
        model.window_detector = model.dense_detector
    model.details = dict(getattr(model, 'details', {}) or {}, runtime=runtime)
    if runtime == 'litert':
        if not incremental:  # the dense reference runs nothing else
            model.module = model.dense_module
            if model.dense_detector is not None:
                model.detector = model.dense_detector
    if settings.model.precision == 'fp16' and device.startswith('cuda'):
        model.module.trunk.half()  # the tail and the decoders stay in fp32
    return model


def _apply_change_settings(detector: Any, change: Any) -> None:
    # The reference image survives: only how new frames are compared with it changes. Every
    # live change setting is copied (tile_size is read-only: it shapes the reference).
    for field in dataclasses.fields(change):
        if field.name != 'tile_size':
            setattr(detector, field.name, getattr(change, field.name))


def _to_result(kind: str, model: Any, decoded: Any, ids: Sequence[int] | None = None) -> Any:
    if kind == 'segmentation':
        # A copy: a still frame answers with the mask decoded before, which a caller may
        # have drawn on in an earlier result (each result owns its arrays).
        return SegmentationResult(np.array(decoded, dtype=np.uint8, order='C'),
                                  tuple(model.labels))
    people = [[tuple(k) for k in person] for person in decoded]
    joints = len(model.joints)
    keypoints = np.asarray(people, dtype=np.float32).reshape(len(people), joints, 3)
    return PoseResult(keypoints, tuple(model.joints),
                      tuple(tuple(edge) for edge in model.skeleton),
                      None if ids is None else np.asarray(ids, dtype=np.int64))


__all__ = ['HEADS', 'ModelLoadError', 'Pipeline']
