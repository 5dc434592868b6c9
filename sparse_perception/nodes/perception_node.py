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
The perception lifecycle node: camera in, masks and keypoints out.

One class serves the three executables; they differ only in the heads they run
(:data:`~sparse_perception.nodes.node_config.NODE_KINDS`): ``perception_node`` runs
segmentation and pose on one subscription and one decoded frame (``node.heads``, read-only,
can narrow it to one), ``segmentation_node`` and ``pose_node`` one head each.

The node wires small parts together, each in its own module: :class:`NodeParameters` (the
settings as parameters), :class:`Outputs` (publishers and what a result becomes),
:class:`FrameInput` (the subscription and its mailbox), :class:`FrameWorker` (the pipeline and
its thread) and :class:`DiagnosticsTimer`. Every decision (health levels, resets, throttling,
QoS diagnosis, model checks) is made in the pure modules :mod:`.health`, :mod:`.stream` and
:mod:`.node_config`.

Life cycle: configure checks the model settings and creates the publishers; activate builds the
pipeline (loading the models), warms it up, and starts the subscription and the frame worker;
deactivate stops them and frees the models and GPU memory; cleanup removes the publishers.
With ``node.autostart`` (the default) the node walks itself to active, so ``ros2 run`` and
``ros2 launch`` just work.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from typing import Any

from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from sparse_perception import settings as st
from sparse_perception.nodes.diagnostics import DiagnosticsTimer
from sparse_perception.nodes.frame_input import FrameInput
from sparse_perception.nodes.frame_worker import FrameWorker
from sparse_perception.nodes.health import HealthMonitor, Level
from sparse_perception.nodes.node_config import (
    make_pipeline, ModelCheck, NodeKind, PERCEPTION, pipeline_settings, PipelineFactory,
    registered_model_problem, startup_problems)
from sparse_perception.nodes.outputs import Outputs
from sparse_perception.nodes.parameters import NodeParameters
from sparse_perception.nodes.stream import ThrottledLogger

# flake8-import-order cannot tell this package from third-party ones under ament's settings,
# so its imports sort in among them.

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

# Longest wait of the executable's spin for anything to do (and for a stop signal to be
# seen); see run().
_SPIN_WAIT_SECONDS = 0.5
# How long a node stopped by a signal waits for its last /diagnostics report to be received.
_REPORT_FLUSH_SECONDS = 1.0


class PerceptionNode(LifecycleNode):
    """Lifecycle node running the heads of ``kind`` on one camera."""

    def __init__(self, kind: NodeKind = PERCEPTION, *,
                 pipeline_factory: PipelineFactory = make_pipeline,
                 model_check: ModelCheck = registered_model_problem,
                 defer_autostart: bool = False, node_name: str | None = None,
                 **node_options: Any):
        """
        Declare the parameters and, with ``node.autostart``, walk to active.

        ``kind`` says the heads and the default node name. ``pipeline_factory(settings,
        heads)`` builds the pipeline and ``model_check(head, value, settings)`` says why a
        model setting cannot load before it is accepted (tests pass a double of both). With
        ``defer_autostart`` the caller starts the walk to active (:meth:`start_autostart`)
        once the node spins. ``node_options`` go to rclpy's Node (namespace,
        parameter_overrides, context, ...).
        Raises :class:`~sparse_perception.settings.SettingError` for a bad parameter value.
        """
        super().__init__(node_name or kind.name, **node_options)
        self.kind = kind
        self._autostarter: threading.Thread | None = None
        self.parameters = NodeParameters(self, kind, model_check)
        try:
            settings = self.parameters.declare()
        except Exception:
            self.destroy_node()  # the context would otherwise keep a half-built node
            raise
        # Timers run on the steady clock: under use_sim_time, /diagnostics and the silence
        # watch must go on when /clock stops (a paused or finished bag).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        log = ThrottledLogger(self.get_logger())
        self.health = HealthMonitor(settings.diagnostics, time.monotonic())
        self.outputs = Outputs(self)
        self.input = FrameInput(self, self.parameters, self.health, log, steady)
        self.worker = FrameWorker(self, self.parameters, self.health, self.outputs, log,
                                  pipeline_factory)
        self.diagnostics = DiagnosticsTimer(self, self.parameters, self.health, self.outputs,
                                            self.input.publisher_count, steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if settings.node.autostart and not defer_autostart:
            self._autostart()

    # -----------------------------------------------------------------------------------------
    # Parameters
    # -----------------------------------------------------------------------------------------

    def set_parameters(self, parameter_list: list[Parameter]) -> list[SetParametersResult]:
        """Set each parameter on its own, as rclpy does, each through the type check."""
        return [self.set_parameters_atomically([parameter]) for parameter in parameter_list]

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """
        Set the parameters all or none, after checking each value's type against its setting.

        Every parameter request (the parameter services behind ``ros2 param set``, and the node
        itself) comes through here, so every refusal of a type names the parameter.
        """
        checked, refusal = self.parameters.check_types(parameter_list)
        if refusal is not None:
            return SetParametersResult(successful=False, reason=refusal)
        return super().set_parameters_atomically(checked)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        return self.parameters.accept(
            parameters, lambda settings: self.health.update_settings(settings.diagnostics))

    # -----------------------------------------------------------------------------------------
    # Life cycle
    # -----------------------------------------------------------------------------------------

    def start_autostart(self) -> None:
        """
        With ``node.autostart``, walk to active in a thread of its own, while the node spins.

        Loading and warming the model takes tens of seconds on a CPU; meanwhile the executor
        answers the node's services: get_state says 'activating', parameters can be read.
        """
        if self.parameters.settings.node.autostart and self._autostarter is None:
            self._autostarter = threading.Thread(
                target=self._autostart_quietly, name=f'{self.get_name()}-autostart', daemon=True)
            self._autostarter.start()

    def _autostart_quietly(self) -> None:
        try:
            self._autostart()
        except Exception as exc:
            if self.context.ok():  # else: shut down under the transition (Ctrl-C)
                self.get_logger().error(f'could not walk to active: {exc!r}')

    def _autostart(self) -> None:
        if self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the model settings and create the publishers."""
        settings = self.parameters.settings
        problems = startup_problems(self.kind, settings, self.parameters.check_model)
        for problem in problems:
            self.get_logger().error(f'cannot configure: {problem}')
        if problems:
            return FAILURE
        cfg = settings.input
        try:  # read-only: a bad name would otherwise fail only when activating
            self.resolve_topic_name(self.input.topic())
        except Exception as exc:  # rclpy's InvalidTopicNameException and the like
            reason = re.sub(r', at \S+:\d+$', '', str(exc))  # rcl's source file and line
            self.get_logger().error(f'cannot configure: input.topic {cfg.topic!r} is not a '
                                    f'valid ROS topic name: {reason}')
            return FAILURE
        try:
            self.outputs.create(self.parameters.heads)
        except Exception as exc:
            self.get_logger().error(f'cannot configure: {exc}')
            self.outputs.destroy()
            return FAILURE
        self.get_logger().info(
            f'configured: heads {", ".join(self.parameters.heads)}; input {self.input.topic()} '
            f'({cfg.transport}, {cfg.reliability}, depth {cfg.depth})')
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm the models, then start taking frames."""
        settings = pipeline_settings(self.parameters.settings)
        lifecycle = self.parameters.settings.node
        started = time.monotonic()
        self.get_logger().info(
            'activating: loading ' + ', '.join(
                f'model.{head} = {getattr(settings.model, head)!r}'
                for head in self.parameters.heads)
            + f' on {settings.model.device} and warming up ({lifecycle.warmup_frames} frames '
            f'of {lifecycle.warmup_width}x{lifecycle.warmup_height}); this can take tens of '
            'seconds on a CPU')
        try:
            self.worker.load(settings)
        except Exception as exc:  # ModelLoadError, or anything a broken model file throws
            self.get_logger().error(f'cannot activate: {exc}')
            return FAILURE
        try:
            warm = self.worker.warm_up(lifecycle, self.context.ok)
        except Exception as exc:
            self.get_logger().error(f'cannot activate: warming up the model failed: {exc}')
            warm = False
        if not warm:  # failed, or Ctrl-C while warming up
            self.worker.close()
            return FAILURE
        result = super().on_activate(state)  # enables the lifecycle publishers
        try:
            self._start_frames()
        except Exception as exc:  # else rclpy's error transition would drop the reason
            self.get_logger().error(f'cannot activate: starting to take frames failed: {exc}')
            self._stop_frames((Level.ERROR, f'inactive: starting to take frames failed: {exc}'))
            self.worker.close()
            super().on_deactivate(state)  # the publishers go back to inactive too
            return FAILURE
        self.get_logger().info(
            f'active after {time.monotonic() - started:.1f} s: taking images from '
            f'{self.input.subscription.topic_name} ({self.input.reliability})')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames and free the models and GPU memory."""
        self._stop_frames((Level.OK, 'inactive: deactivated, taking no frames'))
        self.worker.close()
        self.get_logger().info('inactive: model released')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Remove the publishers."""
        self.outputs.destroy()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever state."""
        self._release_all((Level.OK, 'shutting down'))
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self.get_logger().error(f'error in state {state.label}: releasing everything')
        self._release_all((Level.ERROR, f'error in state {state.label}: released everything'))
        return SUCCESS

    def report_stop(self, reason: str) -> None:
        """
        Send the last /diagnostics report, saying ``reason``, if reports are being sent.

        It waits (up to a second) for reliable subscribers to acknowledge it: the process may
        end right after, and a report still queued would be lost with it.
        """
        if self.diagnostics.stop((Level.OK, reason)):
            self.outputs.flush_diagnostics(_REPORT_FLUSH_SECONDS)

    def destroy_node(self) -> None:
        """Stop the frame worker and free the model before the node goes."""
        starter = self._autostarter
        if starter is not None and starter is not threading.current_thread():
            starter.join()  # a model load cannot be cut short; the warm-up stops early
        if hasattr(self, 'worker'):  # else: its parameters failed to declare
            self._release_all()
        super().destroy_node()

    def _start_frames(self) -> None:
        now = time.monotonic()
        self.health.restart(now)
        slot = self.input.start(now)
        self.worker.start(slot)
        self.diagnostics.start()

    def _stop_frames(self, final: tuple[Level, str] | None = None) -> None:
        """Stop taking frames; ``final``: the level and message of a last /diagnostics report."""
        self.diagnostics.stop(final)
        self.input.stop()  # closes the slot, which ends the worker's thread
        self.worker.stop()

    def _release_all(self, final: tuple[Level, str] | None = None) -> None:
        self._stop_frames(final)
        self.worker.close()
        self.outputs.destroy()


class _StopSignals:
    """
    Takes SIGINT and SIGTERM in place of rclpy: the first one ends the spin, and no more.

    rclpy's own handlers shut the context down at once, from the signal, after which the node
    cannot publish the last /diagnostics report that says why its reports stop. Ctrl-C in a
    terminal also reaches the node twice (from the terminal, and from `ros2 launch` passing
    it on), and Python's default SIGINT raises KeyboardInterrupt wherever the main thread is,
    as in the middle of freeing the model. So a signal here only records its name: the spin
    (a bounded wait) sees it, the node reports, and the context is shut down after that.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._take)

    def _take(self, signum: int, frame: Any) -> None:
        if self.name is None:
            self.name = signal.Signals(signum).name

    def ignore(self) -> None:
        """Ignore both from now on: Python restores the default handlers as it exits."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def run(kind: NodeKind, args: list[str] | None = None, **node_options: Any) -> int:
    """Run a perception node of ``kind`` until shutdown (the body of each executable)."""
    from rclpy.signals import SignalHandlerOptions

    stop = _StopSignals()
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # rclpy's RCLError: a bad --ros-args part, or its params file
        # (Without rcl's source positions: ', at /project/src/rcl/arguments.c:415'.)
        reason = re.sub(r',? at \S+\.c:\d+', '', ' '.join(str(exc).split()))
        print(f'[FATAL] [{kind.name}]: the ROS arguments cannot be used: {reason}',
              file=sys.stderr)
        return 1
    # Made before the node: a Ctrl-C during a long activation (model load, warm-up) then
    # ends the spin cleanly instead of failing to create an executor on a shut-down context.
    executor = SingleThreadedExecutor()
    node = None
    try:
        node = PerceptionNode(kind, defer_autostart=True, **node_options)
        executor.add_node(node)
        node.start_autostart()
        # Not executor.spin(), which waits without a timeout: a bounded wait sees a stop
        # signal (whose handler runs only once the wait returns) and a context shut down
        # from elsewhere.
        while executor.context.ok() and stop.name is None:
            executor.spin_once(timeout_sec=_SPIN_WAIT_SECONDS)
        if stop.name is not None:
            node.report_stop(f'shutting down: {stop.name} received')
            # From here on the context says so to whatever still runs: a warm-up under way
            # stops early, and a frame that fails to publish is no error.
            rclpy.try_shutdown()
    except st.SettingError as exc:
        get_logger(kind.name).fatal(str(exc))
        return 1
    except ExternalShutdownException:
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Shut down under a running transition (Ctrl-C during activation): what failed
        # failed because of the shutdown.
    finally:
        if node is not None:
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
        stop.ignore()
    return 0


def main(args: list[str] | None = None) -> int:
    """Run ``perception_node`` until shutdown (its console script)."""
    return run(PERCEPTION, args)


if __name__ == '__main__':
    sys.exit(main())
