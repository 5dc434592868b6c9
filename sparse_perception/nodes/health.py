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
Health of a running perception node, decided without ROS: rates, latency, levels.

A node feeds :class:`HealthMonitor` with what happens (an image arrived, a frame was
processed with this latency and these stats, a frame was dropped or was bad) and asks it for a
:class:`HealthReport` about once a second, which it turns into ``/diagnostics``. Every method
takes the time ``now`` (monotonic seconds) from the caller, so the logic is tested with made-up
clocks. The levels use the numbers of ``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
import enum
import sys
import threading

import numpy as np

from sparse_perception.evaluation.stats import percentile
from sparse_perception.results import PipelineStats
from sparse_perception.settings import DiagnosticsSettings


# Latencies beyond these are no processing delay but stamps from another clock.
_CLOCK_GAP_MS = 3600e3
_CLOCK_SKEW_MS = 1000.0


class Level(enum.IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class HealthReport:
    """One diagnostics status: level, a one-line summary and named values."""

    level: Level
    message: str
    values: tuple[tuple[str, str], ...]

    def value(self, key: str) -> str:
        """Return the value named ``key``."""
        return dict(self.values)[key]


class _Window:
    """Timestamped samples of the last ``span`` seconds."""

    def __init__(self, span: float):
        self.span = span
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def clear(self) -> None:
        self._samples.clear()

    def add(self, now: float, value: float = 1.0) -> None:
        self._samples.append((now, value))
        self.trim(now)

    def trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.span:
            self._samples.popleft()

    def values(self, now: float) -> np.ndarray:
        self.trim(now)
        return np.array([v for _, v in self._samples], dtype=np.float64)

    def times(self, now: float) -> np.ndarray:
        self.trim(now)
        return np.array([t for t, _ in self._samples], dtype=np.float64)

    def __len__(self) -> int:
        return len(self._samples)


def event_rate(times: np.ndarray, now: float) -> float:
    """
    Return events per second from sorted event times up to ``now`` (0 with fewer than two).

    A wait since the last event longer than the mean interval counts: once the events stop
    the rate falls at once, rather than holding the last stream's rate until the window empties.
    """
    intervals = len(times) - 1
    span = float(times[-1] - times[0]) if intervals > 0 else 0.0
    if span <= 0:
        return 0.0
    late = max(0.0, now - float(times[-1]) - span / intervals)
    return intervals / (span + late)


class HealthMonitor:
    """
    Collects what a node did and reports its health; safe to call from several threads.

    Levels: ERROR for a fault (a model that failed to load), for every frame in the window
    failing, for p95 latency above ``latency_error_ms`` and for no processed frame for three
    times ``stale_after`` while active; WARN for p95 latency above ``latency_warn_ms``, more
    than half the received frames dropped (processing slower than the camera), no frame for
    ``stale_after`` seconds, bad frames in the window, or image stamps so far from the node's
    clock (more than an hour behind, a second ahead) that they come from another clock; OK
    otherwise.
    """

    def __init__(self, settings: DiagnosticsSettings, now: float):
        self._lock = threading.Lock()
        self._settings = settings
        self._started = now
        self._received = _Window(settings.window)
        self._processed = _Window(settings.window)
        self._latency = _Window(settings.window)  # ms, image stamp -> published
        self._processing = _Window(settings.window)  # ms, pipeline only
        self._active = _Window(settings.window)  # active fraction per frame
        self._dropped = _Window(settings.window)
        self._failed = _Window(settings.window)
        self._dense = _Window(settings.window)
        self._totals = collections.Counter()
        self._last_processed: float | None = None
        self._last_stats: PipelineStats | None = None
        self._last_changed: float | None = None  # of the last frame whose change map measured
        self._last_stamp_ns: int | None = None
        self._last_failure = ''
        self._fault: str | None = None

    def update_settings(self, settings: DiagnosticsSettings) -> None:
        """Use new thresholds and window length from the next report on."""
        with self._lock:
            self._settings = settings
            for window in (self._received, self._processed, self._latency, self._processing,
                           self._active, self._dropped, self._failed, self._dense):
                window.span = settings.window

    def received(self, now: float) -> None:
        """Record that an image message arrived."""
        with self._lock:
            self._received.add(now)
            self._totals['received'] += 1

    def dropped(self, now: float, count: int = 1) -> None:
        """Record frames replaced by a newer one before they could be processed."""
        with self._lock:
            for _ in range(count):
                self._dropped.add(now)
            self._totals['dropped'] += count

    def failed(self, now: float, reason: str) -> None:
        """Record a frame that could not be processed (bad input or a pipeline error)."""
        with self._lock:
            self._failed.add(now)
            self._totals['failed'] += 1
            self._last_failure = reason

    def processed(self, now: float, stats: PipelineStats, latency_ms: float | None,
                  stamp_ns: int) -> None:
        """Record a frame processed and published; ``latency_ms`` None when unstamped."""
        with self._lock:
            self._processed.add(now)
            self._totals['processed'] += 1
            if latency_ms is not None:
                self._latency.add(now, latency_ms)
            self._processing.add(now, stats.ms)
            self._active.add(now, stats.active_fraction)
            if stats.dense:
                self._dense.add(now)
                self._totals['dense'] += 1
            self._last_processed = now
            self._last_stats = stats
            if stats.change_measured:
                self._last_changed = float(stats.changed_fraction)
            self._last_stamp_ns = stamp_ns

    def set_fault(self, reason: str | None) -> None:
        """Set (or clear, with None) a lasting fault reported as ERROR until cleared."""
        with self._lock:
            self._fault = reason

    def restart(self, now: float) -> None:
        """
        Start an activation at ``now``: staleness counts from it, and the windows start empty.

        The totals go on counting. The windows' figures (rates, latency, bad frames) are of
        the activation before, whose model and input may be gone: reported after a new
        activation, they would describe a node that no longer runs.
        """
        with self._lock:
            self._started = now
            self._last_processed = None
            # The last frame's figures too: they are the activation before's.
            self._last_stats = self._last_changed = self._last_stamp_ns = None
            for window in (self._received, self._processed, self._latency, self._processing,
                           self._active, self._dropped, self._failed, self._dense):
                window.clear()
            self._last_failure = ''

    def report(self, now: float, *, publishers: int | None = None,
               gpu_memory_bytes: int | None = None) -> HealthReport:
        """Return the health at ``now``; ``publishers`` of the input topic when known."""
        with self._lock:
            return self._report(now, publishers, gpu_memory_bytes)

    def _report(self, now: float, publishers: int | None,
                gpu_memory_bytes: int | None) -> HealthReport:
        cfg = self._settings
        latency = self._latency.values(now)
        p50, p95 = percentile(latency, 50), percentile(latency, 95)
        received = len(self._received.values(now))
        dropped = len(self._dropped.values(now))
        failed = len(self._failed.values(now))
        processed = len(self._processed.values(now))
        problems: list[tuple[Level, str]] = []
        if self._fault:
            problems.append((Level.ERROR, self._fault))
        quiet_since = self._last_processed if self._last_processed is not None else self._started
        quiet = now - quiet_since
        if quiet >= cfg.stale_after:
            if self._last_processed is None and publishers == 0:
                what = 'waiting for images: the input topic has no publisher'
            elif self._last_processed is None:
                what = f'no frame processed in {quiet:.1f} s since activation'
            else:
                what = f'no frame processed for {quiet:.1f} s'
            problems.append((Level.ERROR if quiet >= 3 * cfg.stale_after else Level.WARN, what))
        if failed and not processed:
            problems.append((Level.ERROR, f'every frame in the last {cfg.window:g} s failed: '
                                          f'{self._last_failure}'))
        elif failed:
            problems.append((Level.WARN, f'{failed} bad frame(s) in the last {cfg.window:g} s: '
                                         f'{self._last_failure}'))
        if p50 is not None and not -_CLOCK_SKEW_MS <= p50 <= _CLOCK_GAP_MS:
            direction = 'behind' if p50 > 0 else 'ahead of'
            problems.append((Level.WARN, f'image stamps are {abs(p50) / 1e3:.0f} s {direction} '
                                         "this node's clock (a bag replayed without "
                                         'use_sim_time, or unsynchronised clocks): latency '
                                         'figures mean nothing'))
        elif p95 is not None and p95 > cfg.latency_error_ms:
            problems.append((Level.ERROR, f'slow: p95 latency {p95:.0f} ms > '
                                          f'{cfg.latency_error_ms:g} ms'))
        elif p95 is not None and p95 > cfg.latency_warn_ms:
            problems.append((Level.WARN, f'slow: p95 latency {p95:.0f} ms > '
                                         f'{cfg.latency_warn_ms:g} ms'))
        if received and dropped * 2 > received:
            problems.append((Level.WARN, f'dropping {dropped} of {received} frames: processing '
                                         'is slower than the input'))
        level = max((lvl for lvl, _ in problems), default=Level.OK)
        message = '; '.join(text for _, text in problems) or 'running'
        return HealthReport(level, message, self._values(now, p50, p95, gpu_memory_bytes))

    def _values(self, now: float, p50: float | None, p95: float | None,
                gpu_memory_bytes: int | None) -> tuple[tuple[str, str], ...]:
        def number(value, digits=1):
            return 'n/a' if value is None else f'{value:.{digits}f}'

        active = self._active.values(now)
        last = self._last_stats
        stamp = self._last_stamp_ns
        return (
            ('input rate (Hz)', number(event_rate(self._received.times(now), now), 2)),
            ('processed rate (Hz)', number(event_rate(self._processed.times(now), now), 2)),
            ('latency p50 (ms)', number(p50)),
            ('latency p95 (ms)', number(p95)),
            ('processing p50 (ms)', number(percentile(self._processing.values(now), 50))),
            ('active fraction (mean)', number(float(active.mean()) if len(active) else None, 4)),
            ('active fraction (last frame)', number(last.active_fraction if last else None, 4)),
            # Frames that only dense passes read may go without a change map: the last map's.
            ('changed fraction (last change map)', number(self._last_changed, 4)),
            ('dense frames (window)', str(len(self._dense.values(now)))),
            ('dense frames (total)', str(self._totals['dense'])),
            # Every frame received is processed, dropped or bad, or waits to be processed: a
            # gap to the frames sent was lost before the node (the transport or its queue).
            ('received frames (total)', str(self._totals['received'])),
            ('dropped frames (total)', str(self._totals['dropped'])),
            ('bad frames (total)', str(self._totals['failed'])),
            ('processed frames (total)', str(self._totals['processed'])),
            ('last frame stamp', 'n/a' if stamp is None else
             f'{stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}'),
            ('GPU memory (MiB)', 'n/a' if gpu_memory_bytes is None else
             f'{gpu_memory_bytes / 2**20:.1f}'),
        )


def gpu_memory_bytes() -> int | None:
    """Return CUDA memory allocated by torch in this process, or None where CUDA is unused."""
    torch = sys.modules.get('torch')  # never import torch (or initialise CUDA) just to ask
    if torch is None or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.memory_allocated())


def release_device_memory() -> None:
    """Return cached CUDA memory to the driver after a model is freed (no-op without CUDA)."""
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
