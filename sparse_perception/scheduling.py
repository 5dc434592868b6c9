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
Which path runs a network on a frame: the incremental engine, or a plain dense pass.

Skipped work only pays when the engine's bookkeeping costs less than it saves. That depends
on the network (a small one at 256x144 has little arithmetic to skip), on the dense runtime it
competes with and on the scene (a moving camera changes every tile), so it is measured rather
than assumed. :class:`PathChoice` keeps the wall time of the last few frames of each path and
answers, per frame, which one to run:

- The engine's frames are timed only when they ran sparse: a dense engine frame (the first,
  a refresh) says nothing about what an incremental frame costs.
- When the engine's median exceeds the dense pass's, the network runs dense. The engine's
  caches go stale then, so returning to it costs one dense engine frame; it is tried again
  after ``first_probe`` dense frames times how many times slower it was, and after twice as
  many (or that ratio as many, if larger) each time it loses again, up to ``max_probe``: a
  scene or a network where the engine never wins costs almost nothing extra.
- A trial (the first, or one after a loss) ends at its first sample when that sample took
  more than ``give_up`` times the dense pass's median: the engine cannot win soon, and each
  further sample costs another slow frame (on vtest both heads' networks lost by several
  times, and BlazePose's detector, which runs on every 4th frame while nobody is followed,
  took 12 frames to give its three samples). The engine then counts as losing by
  ``give_up``, not by all of that sample: one sample may be an outlier.
- A trial waits for a calmer scene. The caller gives :meth:`PathChoice.pick` the share of
  what the network sees that changed (the scene's activity; None where no change map
  measured it). When the engine lost by ``ratio`` on samples where a median share ``s``
  changed, a due trial waits while the latest measured share is still at least
  ``s / ratio``: were the engine's cost a fixed part plus a part no more than proportional
  to the share changed, it could not win there (a moving camera, a busy street: each trial
  costs a slow frame and a refresh). Waiting counts as losing again (the next look comes
  twice as late), and it needs no change map of its own, since the latest measured share
  decides. A trial runs regardless once ``max_probe`` dense frames passed since the engine
  lost, and wherever the losing samples had no share.
- A frame in which nothing changed is not a sample of either path (the caller skips it), nor
  are the engine's first ``warmup`` sparse frames (one-time costs: compiling, capturing).

A frame whose every network runs its dense pass needs no change map, except to notice that
nothing changed (then the last outputs stand). :class:`ChangeMapSchedule` skips the map on
such frames while the scene keeps changing: after a map with changes, the next few maps are
skipped (those frames run dense, as a dense pipeline would), then one is made again (with a
refresh first: its reference missed the frames in between), twice as many skipped each time
the scene still changed, up to ``longest``. A picture that holds still is thus noticed within
``longest`` + 2 frames; a network whose path choice is about to try the engine again makes the
pipeline take maps at once. On vtest at 768x576 a change map took about 1 ms
(bench/results/change_map_cpu.md), a quarter of LiteRT's whole frame for both heads
(bench/results/cpu.md).

The choice changes only speed: both paths compute the same network, and with every threshold
at 0 on the same runtime their outputs are equal; on CUDA only while cuDNN's TF32 is off (by
default torch convolves float32 in TF32 there, which moved dense outputs by 6e-4 to 3e-2 of
their scale on the registered networks, while the engine's kernels compute in float32).
"""

from __future__ import annotations

from collections import deque
import copy
import statistics
import time
from typing import Any

PATHS = ('engine', 'dense')


def measurable(execution: str, device: Any) -> bool:
    """
    Whether a path's host wall time says what it costs: on the CPU and on CUDA.

    On CUDA the clock reads only after the device finished (:func:`finished_clock`). The
    device executor on the CPU is Triton's interpreter (tests): its time says nothing.
    """
    kind = getattr(device, 'type', str(device))
    return kind == 'cuda' or (kind == 'cpu' and execution == 'eager')


def warmup_frames(device: Any) -> int:
    """
    Return how many of the engine's first sparse frames say nothing of its cost on ``device``.

    On CUDA the first incremental frames compile their Triton kernels and capture the CUDA
    graph (about 4 s each for the default models on an H200, against 4 ms later). As samples
    they would keep the engine off for the longest probe interval.
    """
    return 2 if getattr(device, 'type', str(device)) == 'cuda' else 0


def finished_clock(device: Any) -> float:
    """
    Return the host clock in seconds after the work queued on ``device`` has finished.

    A CUDA device runs its kernels after the host queued them, so a path's time is read after
    a synchronisation. The pipeline waits for a network's outputs anyway (its decoders copy
    them to the host), so this adds no wait of its own.
    """
    if getattr(device, 'type', str(device)) == 'cuda':
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()


class PathChoice:
    """Measured choice between the engine and a dense pass (see the module docstring)."""

    def __init__(self, samples: int = 3, first_probe: int = 16, max_probe: int = 512,
                 warmup: int = 0, give_up: float = 2.0):
        if samples < 1 or first_probe < 1 or max_probe < first_probe or warmup < 0 \
                or not give_up > 1.0:
            raise ValueError(f'PathChoice needs samples >= 1, 1 <= first_probe <= max_probe, '
                             f'warmup >= 0 and give_up > 1, got {samples}, {first_probe}, '
                             f'{max_probe}, {warmup}, {give_up}')
        self.give_up = float(give_up)
        # The engine's first sparse frames that are not samples: they carry one-time costs.
        self._warmup = warmup
        self.first_probe = first_probe
        self.max_probe = max_probe
        self._engine_ms: deque[float] = deque(maxlen=samples)
        self._dense_ms: deque[float] = deque(maxlen=samples)
        self.path = 'engine'
        self._probe = first_probe  # dense frames before the engine is tried again
        self._dense_frames = 0  # dense frames since the engine last lost or a trial waited
        self._lost_before = False  # the engine lost its last decision (this is a trial)
        self._scene: float | None = None  # the changed share the last pick was given
        self._latest: float | None = None  # the latest share measured (not None)
        # The changed share of each engine sample, beside its time (None: not measured).
        self._sample_scenes: deque[float | None] = deque(maxlen=samples)
        self._lost_at: tuple[float, float] | None = None  # (share, ratio) of the last loss
        self._since_loss = 0  # dense frames since the engine last lost

    def copy(self, warmup: int) -> PathChoice:
        """
        Return a choice that starts where this one stands, for another state of its network.

        It takes the samples, the path and the trial schedule; ``warmup`` gives the new state's
        own first sparse frames (its engine is cold: on CUDA it compiles and captures again).
        """
        twin = copy.deepcopy(self)
        twin._warmup = warmup
        return twin

    @property
    def needs_dense_sample(self) -> bool:
        """Whether the dense pass has never been timed (time it on the first frame)."""
        return not self._dense_ms

    def wants_engine(self) -> bool:
        """Whether the next frame with changes may run the engine (as :meth:`pick` says)."""
        return self.path == 'engine' or (self._due() and not self._waits())

    def pick(self, scene: float | None = None) -> str:
        """
        Return the path for the next frame that has changes: 'engine' or 'dense'.

        ``scene``: how much of what the network sees changed, in [0, 1] (the frame's changed
        share; a network that runs on some frames only may give its input's since it last
        ran), or None where it was not measured. Where :meth:`wants_engine` said no and no
        share is given, the answer is 'dense'.
        """
        self._scene = scene
        if scene is not None:
            self._latest = scene
        if self.path == 'dense' and self._due():
            if self._waits():  # as busy as when it lost: look again later, as after a loss
                self._probe = min(self.max_probe, 2 * self._probe)
                left = self.max_probe - self._since_loss  # a trial at max_probe at the latest
                self._dense_frames = self._probe - min(self._probe, left)
                return 'dense'
            self.path = 'engine'  # try it again: the scene may have calmed down
            self._engine_ms.clear()
            self._sample_scenes.clear()
        return self.path

    def _due(self) -> bool:
        return self._dense_frames >= self._probe

    def _waits(self) -> bool:
        """Whether a due trial waits: the latest share is as busy as the engine lost at."""
        if self._lost_at is None or self._latest is None or self._since_loss >= self.max_probe:
            return False
        share, ratio = self._lost_at
        return self._latest * ratio >= share

    def record(self, path: str, ms: float) -> None:
        """Add the wall time of a frame that ran ``path`` (the engine's sparse frames only)."""
        if path not in PATHS:
            raise ValueError(f'path {path!r} is not one of {PATHS}')
        if path == 'dense':
            self._dense_ms.append(ms)
            self._dense_frames += 1
            self._since_loss += 1
            return
        if self._warmup:
            self._warmup -= 1
            return
        self._engine_ms.append(ms)
        self._sample_scenes.append(self._scene)
        if not self._dense_ms:
            return
        dense = statistics.median(self._dense_ms)
        if len(self._engine_ms) == self._engine_ms.maxlen:
            engine = statistics.median(self._engine_ms)
        elif len(self._engine_ms) == 1 and ms > self.give_up * dense:
            # A first sample far behind: no more slow samples. One sample may be an outlier,
            # so it counts as losing by give_up, not by all of it.
            engine = self.give_up * dense if dense > 0 else ms
        else:
            return
        if engine > dense:
            ratio = engine / dense if dense > 0 else float('inf')
            if self._lost_before:
                self._probe = self._probe * max(2.0, ratio)
            else:
                self._probe = self.first_probe * ratio
            self._probe = int(min(self._probe, self.max_probe))
            self._lost_before = True
            self.path, self._dense_frames, self._since_loss = 'dense', 0, 0
            scenes = [scene for scene in self._sample_scenes if scene is not None]
            self._lost_at = (statistics.median(scenes), ratio) if scenes else None
        else:
            self._lost_before, self._probe, self._lost_at = False, self.first_probe, None

    def estimates(self) -> dict[str, float | None]:
        """Return the median recent wall time of each path in ms (None before a sample)."""
        return {'engine': statistics.median(self._engine_ms) if self._engine_ms else None,
                'dense': statistics.median(self._dense_ms) if self._dense_ms else None}


class ChangeMapSchedule:
    """Which frames make a change map while only dense passes read it (module docstring)."""

    def __init__(self, first: int = 4, longest: int = 32):
        if not 1 <= first <= longest:
            raise ValueError(f'ChangeMapSchedule needs 1 <= first <= longest, got {first}, '
                             f'{longest}')
        self.first, self.longest = first, longest
        self.reset()

    def reset(self) -> None:
        """Start over: make the next map."""
        self._period = 0  # maps skipped after the last map with changes (0: none yet)
        self._left = 0  # maps still to skip

    def skip(self, needed: bool) -> bool:
        """
        Return whether this frame goes without a change map.

        ``needed``: some network may run the engine on it (which reads the map).
        """
        if needed:
            self.reset()
            return False
        if self._left > 0:
            self._left -= 1
            return True
        return False

    def made(self, refresh: bool, changed_fraction: float) -> None:
        """Take the map made this frame: a refresh says nothing; a still picture resets."""
        if refresh:
            return
        if changed_fraction == 0.0:
            self.reset()
            return
        self._period = self.first if self._period == 0 else min(self.longest, 2 * self._period)
        self._left = self._period


__all__ = ['ChangeMapSchedule', 'finished_clock', 'measurable', 'PATHS', 'PathChoice',
           'warmup_frames']
