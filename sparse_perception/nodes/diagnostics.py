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
The node's health report on /diagnostics, about every ``diagnostics.period`` seconds.

The timer runs on the steady clock: under use_sim_time, /diagnostics must go on when /clock
stops (a paused or finished bag). A new period applies from the next report.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rclpy.clock import Clock
from rclpy.lifecycle import LifecycleNode
from sparse_perception.nodes.health import (gpu_memory_bytes, HealthMonitor, HealthReport,
                                            Level)
from sparse_perception.nodes.outputs import Outputs
from sparse_perception.nodes.parameters import NodeParameters
from sparse_perception.nodes.ros_interop import diagnostic_array


class DiagnosticsTimer:
    """Publishes the node's :class:`HealthMonitor` report while the node is active."""

    def __init__(self, node: LifecycleNode, parameters: NodeParameters, health: HealthMonitor,
                 outputs: Outputs, publishers: Callable[[], int | None], clock: Clock):
        """Report for ``node``; ``publishers()`` counts the input topic's publishers."""
        self._node = node
        self._parameters = parameters
        self._health = health
        self._outputs = outputs
        self._publishers = publishers
        self._clock = clock
        self.timer: Any = None

    def start(self) -> None:
        """Report every ``diagnostics.period`` seconds from now on."""
        self.timer = self._node.create_timer(self._period(), self._report, clock=self._clock)

    def stop(self, final: tuple[Level, str] | None = None) -> bool:
        """
        Stop reporting; with ``final`` (level, message), after one last report that says why.

        The reports come only while the node is active: without a last one, the last status
        would stand for a node that stopped taking frames on purpose, or failed to, and a
        monitor could tell neither from a node that died. Returns whether a last report was
        sent (not when reports had stopped already).
        """
        if self.timer is None:
            return False
        self._node.destroy_timer(self.timer)
        self.timer = None
        if final is not None:
            return self._report(final)
        return False

    def _period(self) -> float:
        return self._parameters.settings.diagnostics.period

    def _report(self, final: tuple[Level, str] | None = None) -> bool:
        """Publish a report (the timer's callback); return whether it was published."""
        settings = self._parameters.settings
        report = self._health.report(time.monotonic(), publishers=self._publishers(),
                                     gpu_memory_bytes=gpu_memory_bytes())
        if final is not None:
            report = HealthReport(*final, report.values)
        try:
            self._outputs.publish_diagnostics(diagnostic_array(
                report, f'{self._node.get_fully_qualified_name()}: perception',
                settings.model.device, self._node.get_clock().now().to_msg()))
        except Exception as exc:  # the context may be going down (Ctrl-C): not worth failing
            if final is None:
                raise
            self._node.get_logger().debug(f'last /diagnostics report not sent: {exc}')
            return False
        period = self._period()
        if self.timer is not None and self.timer.timer_period_ns != int(period * 1e9):
            # Timers are remade, not changed in place: not every distribution's rclpy can
            # change a timer's period.
            self.stop()
            self.timer = self._node.create_timer(period, self._report, clock=self._clock)
        return True
