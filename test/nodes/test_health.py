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

"""Node health decisions (sparse_perception.nodes.health) on made-up clocks."""

import sys

import numpy as np
import pytest

from sparse_perception.nodes import health
from sparse_perception.nodes.health import HealthMonitor, Level
from sparse_perception.results import HeadStats, PipelineStats
from sparse_perception.settings import DiagnosticsSettings


def _stats(active=0.25, dense=False, ms=4.0):
    head = HeadStats(active, int(active * 1000), 1000, dense, ms)
    return PipelineStats(changed_fraction=active, heads={'segmentation': head}, ms=ms)


def _running(latency_ms=20.0, frames=30, rate=10.0, settings=DiagnosticsSettings()):
    """Return a monitor fed ``frames`` frames at ``rate`` Hz and the time after the last."""
    monitor = HealthMonitor(settings, now=0.0)
    now = 0.0
    for i in range(frames):
        now = i / rate
        monitor.received(now)
        monitor.processed(now, _stats(dense=i == 0), latency_ms, stamp_ns=i * 100_000_000)
    return monitor, now


def test_ok_when_frames_flow_and_values_are_measured():
    monitor, now = _running()
    report = monitor.report(now + 0.05, publishers=1)
    assert report.level == Level.OK and report.message == 'running'
    assert report.value('input rate (Hz)') == '10.00'
    assert report.value('latency p95 (ms)') == '20.0'
    assert report.value('active fraction (last frame)') == '0.2500'
    assert report.value('dense frames (total)') == '1'
    assert report.value('processed frames (total)') == '30'
    assert report.value('last frame stamp') == '2.900000000'
    assert report.value('GPU memory (MiB)') == 'n/a'


def test_latency_percentiles_over_the_window_only():
    monitor = HealthMonitor(DiagnosticsSettings(window=5.0), now=0.0)
    for i, latency in enumerate([1000.0] * 10 + [10.0 * k for k in range(1, 21)]):
        monitor.processed(float(i), _stats(), latency, stamp_ns=1)
    report = monitor.report(29.0)
    # Only the last 6 s (t = 24..29, latencies 150..200) are in the window.
    assert report.value('latency p50 (ms)') == '175.0'
    expected = np.percentile([150, 160, 170, 180, 190, 200], 95)
    assert report.value('latency p95 (ms)') == f'{expected:.1f}'


@pytest.mark.parametrize('latency, level', [(150.0, Level.OK), (250.0, Level.WARN),
                                            (1500.0, Level.ERROR)])
def test_slow_frames_warn_then_error(latency, level):
    monitor, now = _running(latency_ms=latency)
    report = monitor.report(now)
    assert report.level == level
    if level != Level.OK:
        assert 'p95 latency' in report.message


@pytest.mark.parametrize('latency, words', [(5e10, 'behind'), (-5000.0, 'ahead of')])
def test_stamps_from_another_clock_are_named_not_called_slow(latency, words):
    monitor, now = _running(latency_ms=latency)
    report = monitor.report(now)
    assert report.level == Level.WARN
    assert words in report.message and 'use_sim_time' in report.message
    assert 'slow' not in report.message


def test_stale_input_warns_then_errors_after_three_times_as_long():
    monitor, now = _running()
    assert monitor.report(now + 2.9).level == Level.OK
    warn = monitor.report(now + 3.5)
    assert warn.level == Level.WARN and 'no frame processed for 3.5 s' in warn.message
    assert monitor.report(now + 9.5).level == Level.ERROR


def test_waiting_for_a_publisher_is_named():
    monitor = HealthMonitor(DiagnosticsSettings(), now=100.0)
    assert monitor.report(101.0, publishers=0).level == Level.OK  # just activated
    report = monitor.report(104.0, publishers=0)
    assert report.level == Level.WARN and 'no publisher' in report.message
    report = monitor.report(104.0, publishers=2)
    assert 'since activation' in report.message


def test_bad_frames_warn_and_only_bad_frames_error():
    monitor, now = _running()
    monitor.failed(now, 'corrupt JPEG')
    report = monitor.report(now)
    assert report.level == Level.WARN and 'corrupt JPEG' in report.message
    assert report.value('bad frames (total)') == '1'
    only_bad = HealthMonitor(DiagnosticsSettings(), now=0.0)
    for i in range(5):
        only_bad.failed(i * 0.1, 'unsupported encoding 32FC1')
    report = only_bad.report(0.5)
    assert report.level == Level.ERROR and 'every frame' in report.message


def test_dropping_most_frames_warns():
    monitor, now = _running()
    for i in range(40):
        monitor.received(now + i * 0.01)
        monitor.dropped(now + i * 0.01)
    report = monitor.report(now + 0.4)
    assert report.level == Level.WARN and 'dropping 40 of 70' in report.message
    assert report.value('dropped frames (total)') == '40'
    assert report.value('received frames (total)') == '70'


def test_fault_is_an_error_until_cleared_and_levels_combine():
    monitor, now = _running(latency_ms=300.0)
    monitor.set_fault('model.pose = "x.tflite" failed to load')
    report = monitor.report(now)
    assert report.level == Level.ERROR
    assert 'failed to load' in report.message and 'p95 latency' in report.message
    monitor.set_fault(None)
    assert monitor.report(now).level == Level.WARN


def test_a_new_activation_reports_only_what_happened_since():
    monitor, now = _running(latency_ms=700.0)  # slow, and then bad frames
    for i in range(5):
        monitor.failed(now + i * 0.1, 'cannot convert 16UC1 to rgb8')
    before = monitor.report(now + 0.5)
    assert before.level == Level.WARN and 'slow' in before.message and '16UC1' in before.message
    monitor.restart(now + 1.0)  # deactivated, activated again: nothing arrived since
    report = monitor.report(now + 1.5, publishers=1)
    assert report.level == Level.OK and report.message == 'running'
    assert report.value('input rate (Hz)') == '0.00' and report.value('latency p95 (ms)') == 'n/a'
    assert report.value('bad frames (total)') == '5'  # the totals go on counting
    assert report.value('processed frames (total)') == '30'


def test_new_settings_apply_to_the_next_report():
    monitor, now = _running(latency_ms=150.0)
    assert monitor.report(now).level == Level.OK
    monitor.update_settings(DiagnosticsSettings(latency_warn_ms=100.0))
    assert monitor.report(now).level == Level.WARN


def test_rates_fall_once_frames_stop_and_a_new_activation_shows_no_old_frame():
    monitor, now = _running(frames=50, rate=10.0, settings=DiagnosticsSettings(window=10.0))
    rates = [float(monitor.report(now + gap).value('input rate (Hz)')) for gap in (0.05, 3, 7)]
    assert rates[0] == 10.0 and rates[0] > rates[1] > rates[2] > 0
    monitor.restart(now + 8)  # deactivated, activated again: nothing arrived since
    report = monitor.report(now + 8.5)
    for name in ('last frame stamp', 'active fraction (last frame)',
                 'changed fraction (last change map)'):
        assert report.value(name) == 'n/a', name


def test_rate_helper():
    assert health.event_rate(np.array([]), 1.0) == 0.0
    assert health.event_rate(np.array([1.0, 1.0]), 1.0) == 0.0
    assert health.event_rate(np.array([0.0, 0.5, 1.0]), 1.0) == pytest.approx(2.0)
    assert health.event_rate(np.array([0.0, 0.5, 1.0]), 1.4) == pytest.approx(2.0)
    # Events that stopped: a wait past the mean interval counts, and the rate falls at once.
    assert health.event_rate(np.array([0.0, 0.5, 1.0]), 4.0) == pytest.approx(2 / 3.5)


def test_gpu_helpers_never_import_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, 'torch', raising=False)
    assert health.gpu_memory_bytes() is None
    health.release_device_memory()
    assert 'torch' not in sys.modules


def test_the_changed_fraction_is_the_last_change_maps():
    monitor = HealthMonitor(DiagnosticsSettings(), now=0.0)
    measured = PipelineStats(0.125, {'segmentation': HeadStats(0.5, 1, 2, False, 1.0)}, 1.0)
    monitor.processed(0.0, measured, 5.0, stamp_ns=1)
    without = PipelineStats(1.0, {'segmentation': HeadStats(1.0, 2, 2, True, 1.0)}, 1.0, False)
    monitor.processed(0.1, without, 5.0, stamp_ns=2)  # a frame that went without a map
    assert monitor.report(0.15, publishers=1).value('changed fraction (last change map)') \
        == '0.1250'
