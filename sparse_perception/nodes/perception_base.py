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
The lifecycle node the three perception nodes share: parameters, QoS, conversion, publishing.

Life cycle: configure reads the parameters, checks the model settings and creates
the publishers; activate builds the pipeline (loading the models), warms it up, and starts the
subscription and a processing thread; deactivate stops them and frees the models and GPU
memory; cleanup removes the publishers. With ``node.autostart`` (the default) the node walks
itself to active, so ``ros2 run`` and ``ros2 launch`` just work.

Frames: the subscription callback only drops each message into a one-place mailbox
(:class:`~sparse_perception.stream.LatestSlot`); the processing thread always takes the newest,
so a slow model drops frames (counted in /diagnostics) instead of building a queue of stale
ones. Every output carries the input message's header unchanged.

Every decision (health levels, resets, throttling, QoS diagnosis, model checks) is made in the
pure modules :mod:`~sparse_perception.health`, :mod:`~sparse_perception.stream` and
:mod:`~sparse_perception.node_config`; this class wires them to rclpy.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_system_default
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from sparse_perception import settings as st
from sparse_perception.health import (
    gpu_memory_bytes, HealthMonitor, release_device_memory)
from sparse_perception.images import compressed_to_numpy, image_to_numpy, numpy_to_image
from sparse_perception.markers import keypoint_markers
from sparse_perception.messages import change_map_to_image, keypoints_to_cloud, mask_to_image
from sparse_perception.node_config import (
    change_problem, changed_models, heads_of, keep_reloads, make_pipeline,
    MODEL_INFO_PARAMETERS, ModelCheck, NodeKind, parameter_specs, pipeline_settings,
    PipelineFactory, registered_model_problem, settings_from_parameters, startup_problems,
    warmup_images, wrong_type_problem)
from sparse_perception.nodes.ros_interop import (
    descriptor, diagnostic_array, from_parameter_value, input_qos, marker_array, output_qos,
    parameter_type, publisher_info, to_parameter_value)
from sparse_perception.overlay import draw_pose, draw_segmentation
from sparse_perception.stream import (
    choose_reliability, diagnose_silence, incompatible_qos_message, LatestSlot, LogThrottle,
    reason_key, SilenceWatch, stamp_to_ns, StreamGuard)
from visualization_msgs.msg import MarkerArray

# flake8-import-order cannot tell this package from third-party ones under ament's settings,
# so its imports sort in among them.

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

# How often the processing thread wakes without a frame to see whether it must stop.
_POLL_SECONDS = 0.2
# Seconds between checks that the input topic's publishers actually deliver.
_WATCH_PERIOD = 1.0


class PerceptionLifecycleNode(LifecycleNode):
    """Camera in, masks and keypoints out; subclasses say which heads (``KIND``)."""

    KIND: NodeKind  # set by each node class

    def __init__(self, *, pipeline_factory: PipelineFactory = make_pipeline,
                 model_check: ModelCheck = registered_model_problem,
                 defer_autostart: bool = False, node_name: str | None = None,
                 **node_options: Any):
        """
        Declare the parameters and, with ``node.autostart``, walk to active.

        ``pipeline_factory(settings, heads)`` builds the pipeline and ``model_check(head,
        value, settings)`` says why a model setting cannot load before it is accepted (tests
        pass a double of both). With ``defer_autostart`` the caller starts the walk to active
        (:meth:`start_autostart`) once the node spins. ``node_options`` go to rclpy's Node
        (namespace, parameter_overrides, context, ...).
        Raises :class:`~sparse_perception.settings.SettingError` for a bad parameter value.
        """
        super().__init__(node_name or self.KIND.name, **node_options)
        self._factory = pipeline_factory
        self._check_model = model_check
        # Timers run on the steady clock: under use_sim_time, /diagnostics and the silence
        # watch must go on when /clock stops (a paused or finished bag).
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._reliability: str | None = None  # of the live subscription
        self._specs = {spec.name: spec for spec in parameter_specs(self.KIND)}
        self._lock = threading.Lock()  # guards _params and _pending between threads
        self._pending: st.PerceptionSettings | None = None  # applied at the next frame
        self._in_force: st.PerceptionSettings | None = None  # what the pipeline runs with
        self._pipeline: Any = None
        self._outputs: dict[str, Any] = {}
        self._subscription = None
        self._input_timers: list[Any] = []
        self._worker: threading.Thread | None = None
        self._autostarter: threading.Thread | None = None
        self._slot = LatestSlot()
        self._guard = StreamGuard()
        self._throttle = LogThrottle()
        self.published: collections.Counter = collections.Counter()  # messages per output
        try:
            self._params = settings_from_parameters(self.KIND, self._declare_settings())
            self._heads = heads_of(self.KIND, self._params)
            self._declare_model_info()
        except Exception:
            self.destroy_node()  # the context would otherwise keep a half-built node
            raise
        self._health = HealthMonitor(self._params.diagnostics, time.monotonic())
        self._silence = SilenceWatch(self._params.input.no_message_warning, time.monotonic())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self._params.node.autostart and not defer_autostart:
            self._autostart()

    # -----------------------------------------------------------------------------------------
    # Parameters
    # -----------------------------------------------------------------------------------------

    def _declare_settings(self) -> dict[str, Any]:
        values = {}
        for spec in self._specs.values():
            kind = parameter_type(spec)
            try:
                if spec.kind is tuple and not spec.default:
                    # rclpy cannot infer a type from an empty list: declare it typed, unset.
                    declared = self.declare_parameter(spec.name, kind, descriptor(spec))
                else:
                    declared = self.declare_parameter(
                        spec.name, to_parameter_value(spec, spec.default), descriptor(spec))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                hint = (' (a float needs a decimal point: 12.0, not 12)'
                        if spec.kind is float else '')
                raise st.SettingError(
                    f'parameter {spec.name} must be {kind.name.lower()}: {exc}; fix the '
                    f'parameters file or command line{hint}') from None
            value = declared.value
            if value is None:  # an empty-list default, or `[]` in a parameters file
                value = [] if spec.kind is tuple else spec.default
                if not spec.info.read_only:
                    self.set_parameters([Parameter(spec.name, kind, value)])
            values[spec.name] = from_parameter_value(spec, value)
        return values

    def _declare_model_info(self) -> None:
        for head in self._heads:
            for name, description in MODEL_INFO_PARAMETERS[head]:
                kind = (Parameter.Type.INTEGER_ARRAY if name == 'skeleton'
                        else Parameter.Type.STRING_ARRAY)
                self.declare_parameter(name, kind, ParameterDescriptor(
                    description=description + ' (set by the node when the model loads)',
                    read_only=True))

    def _publish_model_info(self) -> None:
        """Write the loaded model's class/joint names and skeleton into read-only parameters."""
        pipeline = self._pipeline
        values = []
        if 'segmentation' in self._heads:
            values.append(Parameter('class_names', Parameter.Type.STRING_ARRAY,
                                    list(pipeline.class_names)))
        if 'pose' in self._heads:
            values.append(Parameter('joint_names', Parameter.Type.STRING_ARRAY,
                                    list(pipeline.joint_names)))
            values.append(Parameter('skeleton', Parameter.Type.INTEGER_ARRAY,
                                    [int(j) for bone in pipeline.skeleton for j in bone]))
        descriptors = {p.name: self.describe_parameter(p.name) for p in values}
        # These are read-only to everyone else, and rclpy has no public way for a node to
        # change its own read-only parameter; its internal setter that applies descriptors
        # (as declare_parameter does) skips the read-only check and still publishes the
        # parameter event. Jazzy and Kilted call it _set_parameters_atomically_common (tested
        # here); Humble's _set_parameters_atomically is believed to take the same arguments
        # (not tested here), and anything else is reported rather than crashing.
        setter = getattr(self, '_set_parameters_atomically_common', None)
        try:
            result = (setter or self._set_parameters_atomically)(values, descriptors)
        except (AttributeError, TypeError) as exc:
            self.get_logger().warning(
                f'this rclpy cannot update the read-only model parameters ({exc!r}); '
                f'{", ".join(p.name for p in values)} may be stale')
            return
        if not result.successful:
            self.get_logger().warning(f'could not publish the model names: {result.reason}')

    def set_parameters(self, parameter_list: list[Parameter]) -> list[SetParametersResult]:
        """Set each parameter on its own, as rclpy does, each through the type check below."""
        return [self.set_parameters_atomically([parameter]) for parameter in parameter_list]

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """
        Set the parameters all or none, after checking each value's type against its setting.

        rclpy checks types before any node callback and refuses a wrong one with its bare type
        codes ("Wrong parameter type, expected '3' got '4'"); checked here first, the reason
        names the parameter and the type it takes. Every parameter request (the parameter
        services behind ``ros2 param set``, and the node itself) comes through here.
        """
        checked = []
        for parameter in parameter_list:
            spec = self._specs.get(parameter.name)
            if (spec is None or parameter.type_ == Parameter.Type.NOT_SET
                    or self.describe_parameter(parameter.name).read_only):
                checked.append(parameter)  # rclpy's own checks say what is wrong
                continue
            wanted = parameter_type(spec)
            if wanted == Parameter.Type.DOUBLE and parameter.type_ == Parameter.Type.INTEGER:
                # `ros2 param set /node change.threshold 20` sends an integer; take it as 20.0.
                parameter = Parameter(parameter.name, wanted, float(parameter.value))
            elif parameter.type_ != wanted:
                return SetParametersResult(
                    successful=False, reason=wrong_type_problem(spec, parameter.value))
            checked.append(parameter)
        return super().set_parameters_atomically(checked)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: from_parameter_value(self._specs[p.name], p.value)
                   for p in parameters if p.name in self._specs}
        if not changes:
            return SetParametersResult(successful=True)
        with self._lock:
            try:
                new = st.replace(self._params, changes)
            except st.SettingError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            problem = change_problem(self._params, new, self._heads, self._check_model)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            self._params = new
            self._health.update_settings(new.diagnostics)
            self._pending = pipeline_settings(new)
        return SetParametersResult(successful=True)

    def _apply_pending(self) -> None:
        """Give the pipeline the settings changed since the last frame (model reloads too)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or pending == self._in_force:
            return
        old = self._in_force
        reloads = changed_models(old, pending, self._heads)
        try:
            self._pipeline.update(pending)
        except Exception as exc:  # ModelLoadError, or anything a bad model throws
            self._keep_previous_model(old, pending, exc)
            return
        self._in_force = pending
        self._health.set_fault(None)
        if reloads:
            self._publish_model_info()
            self.get_logger().info('loaded ' + ', '.join(
                f'model.{head} = {getattr(pending.model, head)!r}' for head in reloads))

    def _keep_previous_model(self, old: st.PerceptionSettings, rejected: st.PerceptionSettings,
                             exc: Exception) -> None:
        """Go back to the model that ran, keeping every other change made meanwhile."""
        kept, reverted = keep_reloads(old, rejected)
        before, failed = st.flatten(old), st.flatten(rejected)
        self.get_logger().error(
            'could not apply ' + ', '.join(f'{n} = {failed[n]!r}' for n in reverted)
            + f': {exc}; keeping the previous '
            + ', '.join(f'{n} = {before[n]!r}' for n in reverted))
        try:
            self._pipeline.update(kept)
            self._in_force = kept
        except Exception as again:
            self._health.set_fault(f'settings could not be restored after a failed change: '
                                   f'{again}')
            self.get_logger().error(f'could not restore the previous settings either: {again}')
        # Put those parameters back, so that `ros2 param get` tells what runs; one set again
        # since (to another value) is left as it is.
        with self._lock:
            current = st.flatten(self._params)
        self.set_parameters([
            Parameter(name, parameter_type(self._specs[name]),
                      to_parameter_value(self._specs[name], before[name]))
            for name in reverted if name in self._specs and current[name] == failed[name]])

    # -----------------------------------------------------------------------------------------
    # Life cycle
    # -----------------------------------------------------------------------------------------

    def start_autostart(self) -> None:
        """
        With ``node.autostart``, walk to active in a thread of its own, while the node spins.

        Loading and warming the model takes tens of seconds on a CPU; meanwhile the executor
        answers the node's services: get_state says 'activating', parameters can be read.
        """
        if self._params.node.autostart and self._autostarter is None:
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
        problems = startup_problems(self.KIND, self._params)
        for problem in problems:
            self.get_logger().error(f'cannot configure: {problem}')
        if problems:
            return FAILURE
        try:
            qos = output_qos()
            topics = {'overlay': Image, 'change_map': Image}
            if 'segmentation' in self._heads:
                topics['mask'] = Image
            if 'pose' in self._heads:
                topics.update(keypoints=PointCloud2, keypoint_markers=MarkerArray)
            for name, msg_type in topics.items():
                self._outputs[name] = self.create_lifecycle_publisher(
                    msg_type, '~/' + name, qos)
            self._outputs['diagnostics'] = self.create_lifecycle_publisher(
                DiagnosticArray, '/diagnostics', qos_profile_system_default)
        except Exception as exc:
            self.get_logger().error(f'cannot configure: {exc}')
            self._destroy_publishers()
            return FAILURE
        self.get_logger().info(
            f'configured: heads {", ".join(self._heads)}; input {self._input_topic()} '
            f'({self._params.input.transport}, {self._params.input.reliability}, depth '
            f'{self._params.input.depth})')
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm the models, then start taking frames."""
        settings = pipeline_settings(self._params)
        lifecycle = self._params.node
        started = time.monotonic()
        self.get_logger().info(
            'activating: loading ' + ', '.join(
                f'model.{head} = {getattr(settings.model, head)!r}' for head in self._heads)
            + f' on {settings.model.device} and warming up ({lifecycle.warmup_frames} frames '
            f'of {lifecycle.warmup_width}x{lifecycle.warmup_height}); this can take tens of '
            'seconds on a CPU')
        try:
            pipeline = self._factory(settings, self._heads)
        except Exception as exc:  # ModelLoadError, or anything a broken model file throws
            self.get_logger().error(f'cannot activate: {exc}')
            return FAILURE
        try:
            self._pipeline, self._in_force = pipeline, settings
            with self._lock:
                self._pending = None if self._pending == settings else self._pending
            for frame in warmup_images(lifecycle.warmup_frames, lifecycle.warmup_width,
                                       lifecycle.warmup_height):
                if not self.context.ok():  # Ctrl-C while warming up: stop here
                    self._close_pipeline()
                    return FAILURE
                pipeline.process(frame)
            pipeline.reset()
            self._publish_model_info()
        except Exception as exc:
            self.get_logger().error(f'cannot activate: warming up the model failed: {exc}')
            self._close_pipeline()
            return FAILURE
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._start_input()
        self.get_logger().info(
            f'active after {time.monotonic() - started:.1f} s: taking images from '
            f'{self._subscription.topic_name} ({self._reliability})')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames and free the models and GPU memory."""
        self._stop_input()
        self._close_pipeline()
        self.get_logger().info('inactive: model released')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Remove the publishers."""
        self._destroy_publishers()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever state."""
        self._release_all()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self.get_logger().error(f'error in state {state.label}: releasing everything')
        self._release_all()
        return SUCCESS

    def destroy_node(self) -> None:
        """Stop the processing thread and free the model before the node goes."""
        starter = self._autostarter
        if starter is not None and starter is not threading.current_thread():
            starter.join()  # a model load cannot be cut short; the warm-up stops early
        self._release_all()
        super().destroy_node()

    def _release_all(self) -> None:
        self._stop_input()
        self._close_pipeline()
        self._destroy_publishers()

    def _close_pipeline(self) -> None:
        pipeline, self._pipeline, self._in_force = self._pipeline, None, None
        if pipeline is not None:
            try:
                pipeline.close()
            except Exception as exc:
                self.get_logger().error(f'closing the pipeline failed: {exc}')
            del pipeline
            release_device_memory()

    def _destroy_publishers(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()

    # -----------------------------------------------------------------------------------------
    # Input
    # -----------------------------------------------------------------------------------------

    def _input_topic(self) -> str:
        cfg = self._params.input
        if cfg.transport == 'raw':
            return cfg.topic
        compressed = cfg.topic.rstrip('/') + '/compressed'
        # As image_transport does: remapping the base topic (image:=/camera/image_raw) moves
        # its compressed topic with it, unless the compressed topic is remapped itself.
        resolve = getattr(self, 'resolve_topic_name', None)
        if resolve is None:  # an rclpy without it cannot tell; take the name as it is
            return compressed
        if resolve(compressed) != resolve(compressed, only_expand=True):
            return compressed
        return resolve(cfg.topic).rstrip('/') + '/compressed'

    def _input_type(self) -> type:
        return Image if self._params.input.transport == 'raw' else CompressedImage

    def _start_input(self) -> None:
        now = time.monotonic()
        self._slot = LatestSlot()
        self._guard.forget()
        self._health.restart(now)
        self._silence = SilenceWatch(self._params.input.no_message_warning, now)
        self._worker = threading.Thread(target=self._work, name=f'{self.get_name()}-frames',
                                        daemon=True)
        self._worker.start()
        self._subscribe(self._wanted_reliability(self._input_topic()))
        self._input_timers = [
            self.create_timer(self._params.diagnostics.period, self._on_diagnostics_timer,
                              clock=self._steady),
            self.create_timer(_WATCH_PERIOD, self._on_watch_timer, clock=self._steady),
        ]

    def _wanted_reliability(self, topic: str) -> str:
        return choose_reliability(self._params.input.reliability, [
            publisher_info(e).reliability for e in self.get_publishers_info_by_topic(topic)])

    def _subscribe(self, reliability: str) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
        self._reliability = reliability
        self._subscription = self.create_subscription(
            self._input_type(), self._input_topic(), self._on_image,
            input_qos(reliability, self._params.input.depth),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible))

    def _stop_input(self) -> None:
        for timer in self._input_timers:
            self.destroy_timer(timer)
        self._input_timers = []
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._slot.close():  # a frame received but never processed: count it
            self._health.dropped(time.monotonic())
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def _on_image(self, msg: Any) -> None:
        now = time.monotonic()
        self._health.received(now)
        self._silence.message(now)
        if self._slot.put((msg, now)):
            self._health.dropped(now)

    def _on_incompatible(self, event: Any) -> None:
        policy = getattr(event.last_policy_kind, 'name', str(event.last_policy_kind))
        self._log_once('qos:' + policy, incompatible_qos_message(
            self._input_topic(), policy, self._reliability or self._params.input.reliability),
            'warning')

    def _on_watch_timer(self) -> None:
        if self._subscription is None:
            return
        now = time.monotonic()
        topic = self._subscription.topic_name
        publishers = [publisher_info(e) for e in self.get_publishers_info_by_topic(topic)]
        wanted = choose_reliability(self._params.input.reliability,
                                    [p.reliability for p in publishers])
        if wanted != self._reliability:
            self.get_logger().info(
                f'input.reliability auto: the publishers of {topic} now offer '
                f'{", ".join(sorted({p.reliability for p in publishers}))}: subscribing '
                f'{wanted}')
            self._subscribe(wanted)
        self._silence.timeout = self._params.input.no_message_warning
        if self._silence.poll(now, len(publishers)):
            self.get_logger().warning(diagnose_silence(
                topic, _type_name(self._input_type()), self._reliability, publishers,
                self._silence.silent_for(now), self._silence.ever_received))

    def _on_diagnostics_timer(self) -> None:
        now = time.monotonic()
        topic = self._subscription.topic_name if self._subscription is not None else None
        report = self._health.report(
            now, publishers=self.count_publishers(topic) if topic else None,
            gpu_memory_bytes=gpu_memory_bytes())
        self._outputs['diagnostics'].publish(diagnostic_array(
            report, f'{self.get_fully_qualified_name()}: perception',
            self._params.model.device, self.get_clock().now().to_msg()))
        period = self._params.diagnostics.period
        timer = self._input_timers[0] if self._input_timers else None
        if timer is not None and timer.timer_period_ns != int(period * 1e9):
            # A new period applies from the next report (timers are remade, not changed in
            # place: not every distribution's rclpy can change a timer's period).
            self.destroy_timer(timer)
            self._input_timers[0] = self.create_timer(period, self._on_diagnostics_timer,
                                                      clock=self._steady)

    # -----------------------------------------------------------------------------------------
    # Frames
    # -----------------------------------------------------------------------------------------

    def _work(self) -> None:
        slot = self._slot
        while not slot.closed:
            item = slot.take(_POLL_SECONDS)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # a bug must not stop the stream; log it, go on
                if not self.context.ok():
                    return  # shutting down (Ctrl-C): publishing fails, and that is no error
                self._bad_frame('internal', f'unexpected error processing a frame: {exc!r}',
                                'error')

    def _decode(self, msg: Any) -> Any:
        if self._params.input.transport == 'raw':
            return image_to_numpy(msg, 'rgb8')
        limit = int(self._params.input.max_megapixels * 1e6)
        return compressed_to_numpy(msg, 'rgb8', max_pixels=limit)

    def _process(self, msg: Any, received: float) -> None:
        header = msg.header
        stamp_ns = stamp_to_ns(header.stamp)
        try:
            image = self._decode(msg)  # (H, W, 3) uint8 RGB
        except Exception as exc:  # ImageConversionError; ImportError without OpenCV
            self._bad_frame('input', f'skipped a bad input image: {exc}', 'warning')
            return
        self._apply_pending()
        reset = self._guard.observe(stamp_ns, image.shape[:2])
        if reset is not None:
            self._log_once('reset:' + '+'.join(reset.kinds), reset.reason, 'warning')
            self._pipeline.reset()
        try:
            result = self._pipeline.process(image)
        except Exception as exc:
            self._bad_frame('pipeline', f'processing a frame failed: {exc}', 'error')
            return
        self._publish(header, image, result)
        now = time.monotonic()
        latency_ms = None
        if self.get_parameter('use_sim_time').value:
            # /clock advances in steps (a bag's clock rate), so stamp-to-now would read the
            # step, not the node: under sim time the latency counts from the image's receipt.
            latency_ms = (now - received) * 1e3
        elif stamp_ns:
            latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        self._health.processed(now, result.stats, latency_ms, stamp_ns)

    def _subscribed(self, topic: str) -> bool:
        return self._outputs[topic].get_subscription_count() > 0

    def _send(self, topic: str, msg: Any) -> None:
        self._outputs[topic].publish(msg)
        self.published[topic] += 1

    def _publish(self, header: Any, image: Any, result: Any) -> None:
        output = self._params.output
        if result.segmentation is not None:
            self._send('mask', mask_to_image(result.segmentation, header, msg_type=Image))
        if result.pose is not None:
            self._send('keypoints', keypoints_to_cloud(
                result.pose, header, msg_type=PointCloud2, field_type=PointField))
            if self._subscribed('keypoint_markers'):
                people = keypoint_markers(result.pose, image.shape[:2], output.min_score,
                                          output.marker_scale)
                self._send('keypoint_markers', marker_array(people, header, self.get_name()))
        # Debug images cost a drawing and a large message: only while someone watches.
        if self._subscribed('overlay'):
            drawn = image
            if result.segmentation is not None:
                drawn = draw_segmentation(drawn, result.segmentation)
            if result.pose is not None:
                drawn = draw_pose(drawn, result.pose, output.min_score)
            self._send('overlay', numpy_to_image(drawn, 'rgb8', header, msg_type=Image))
        if self._subscribed('change_map'):
            self._send('change_map', change_map_to_image(
                result.change_tiles, result.tile_size, image.shape[:2], header, msg_type=Image))

    def _bad_frame(self, category: str, reason: str, level: str) -> None:
        self._health.failed(time.monotonic(), reason)
        self._log_once(reason_key(category, reason), reason, level)

    def _log_once(self, key: str, text: str, level: str) -> None:
        repeats = self._throttle.check(key, time.monotonic())
        if repeats is None:
            return
        if repeats:
            text += f' (and {repeats} more like it since the last report)'
        # One call site per severity: rclpy refuses a call site whose severity changes.
        logger = self.get_logger()
        if level == 'error':
            logger.error(text)
        elif level == 'warning':
            logger.warning(text)
        else:
            logger.info(text)


def _type_name(msg_type: type) -> str:
    module = msg_type.__module__.split('.')[0]  # sensor_msgs.msg._image -> sensor_msgs
    return f'{module}/msg/{msg_type.__name__}'


def run(node_class: type, args: list[str] | None = None) -> int:
    """Run one perception node until shutdown (the body of each node's ``main``)."""
    # Ctrl-C in a terminal reaches the node twice (from the terminal, and from `ros2 launch`
    # passing it on), and each SIGINT would raise KeyboardInterrupt wherever the main thread
    # is, as in the middle of freeing the model, or kill the process while Python exits.
    # rclpy's own handler, installed by init() on top of this one, shuts the context down,
    # which ends the spin; Python's part of the signal has nothing left to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rclpy.init(args=args)
    # Made before the node: a Ctrl-C during a long activation (model load, warm-up) then
    # ends the spin cleanly instead of failing to create an executor on a shut-down context.
    executor = SingleThreadedExecutor()
    node = None
    try:
        node = node_class(defer_autostart=True)
        executor.add_node(node)
        node.start_autostart()
        executor.spin()
    except st.SettingError as exc:
        get_logger(node_class.KIND.name).fatal(str(exc))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
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
    return 0
