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
What a robot user meets at the ROS edge, on the pipeline double in an executor.

Logging from the frames thread, parameters refused when set, timers under sim time, the QoS
that follows the publisher, remapping with the compressed transport, and what activation says.
"""

import clip
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState
import pipeline_double
import pytest
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from sparse_perception.nodes.node_config import PERCEPTION, POSE, SEGMENTATION
from sparse_perception.nodes.ros_interop import output_qos

pytestmark = pytest.mark.ros

MODELS = {'model.segmentation': 'tiny-seg', 'model.pose': 'tiny-pose'}
FAST = {'diagnostics.period': 0.1, 'node.warmup_width': 64, 'node.warmup_height': 48}


def _raw(index):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage
    from sparse_perception.media.images import compressed_to_numpy, numpy_to_image

    compressed = deserialize_message(clip.records()[index][2], CompressedImage)
    pixels = compressed_to_numpy(compressed, 'bgr8')
    return numpy_to_image(pixels, 'bgr8', compressed.header, msg_type=Image)


def _topic(node, name):
    return f'{node.get_namespace()}/{node.get_name()}/{name}'


def _input_topic(node):
    return node.get_namespace() + '/image'


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _send_and_wait(harness, publisher, msg, received):
    stamp = _stamp(msg)
    publisher.publish(msg)
    assert harness.spin_until(lambda: any(_stamp(m) == stamp for m in received)), (
        f'no output for the frame stamped {stamp}')


def _set(harness, client, **values):
    future = client.set_parameters(
        [Parameter(name.replace('__', '.'), value=value) for name, value in values.items()])
    assert harness.spin_until(future.done)
    return future.result().results


def _client(harness, node):
    client = AsyncParameterClient(harness.node, node.get_fully_qualified_name())
    assert harness.spin_until(lambda: client.services_are_ready())
    return client


def test_a_warning_then_an_error_from_the_frames_thread_keeps_it_running(harness):
    pipelines = []

    def factory(settings, heads):
        pipelines.append(pipeline_double.PipelineDouble(settings, heads=heads))
        return pipelines[-1]

    node = harness.make(SEGMENTATION, {**FAST, 'model.segmentation': 'tiny-seg'},
                        factory=factory)
    publisher = harness.node.create_publisher(Image, _input_topic(node), QoSProfile(depth=10))
    masks = harness.collect(Image, _topic(node, 'mask'))
    harness.spin_until(lambda: publisher.get_subscription_count() == 1)
    # A bad frame (logged as a warning), then a pipeline failure (logged as an error).
    publisher.publish(Image(header=_raw(0).header, height=0, width=0, encoding='bgr8'))
    assert harness.spin_until(lambda: harness.log_lines(node, Log.WARN))
    pipeline = pipelines[0]
    process = pipeline.process

    def fail_once(image):
        pipeline.process = process
        raise RuntimeError('the model blew up once')
    pipeline.process = fail_once
    publisher.publish(_raw(1))
    assert harness.spin_until(lambda: any(
        'blew up' in line for line in harness.log_lines(node, Log.ERROR)))
    # The frames thread is still alive: the next good frame is processed.
    _send_and_wait(harness, publisher, _raw(2), masks)
    assert node.worker.thread.is_alive()


def test_bad_values_are_refused_when_set_with_the_reason(harness):
    import torch

    node = harness.make(PERCEPTION, {**MODELS, **FAST})
    client = _client(harness, node)
    result, = _set(harness, client, model__segmentation='no_such_model')
    assert not result.successful
    assert 'no_such_model' in result.reason and 'tiny-seg' in result.reason, result.reason
    result, = _set(harness, client, model__pose='')
    assert not result.successful and 'model.pose' in result.reason
    # A wrong type: the reason names the parameter and its type, not rclpy's type codes.
    result, = _set(harness, client, change__threshold='lots')
    assert not result.successful
    assert result.reason == (
        "change.threshold must be a number, got 'lots': the parameter takes a double")
    result, = _set(harness, client, change__min_pixels=3.5)
    assert not result.successful and 'change.min_pixels' in result.reason
    assert result.reason.endswith('takes an integer'), result.reason
    # Read-only stays read-only whatever the type.
    result, = _set(harness, client, change__tile_size='big')
    assert not result.successful and 'read-only' in result.reason, result.reason
    result, = _set(harness, client, change__threshold=300.0)  # out of range
    assert not result.successful and '300' in result.reason
    result, = _set(harness, client, sparsity__layer_thresholds=['conv1'])  # no value
    assert not result.successful and "'conv1' must look like 'layer=value'" in result.reason
    if not torch.cuda.is_available():
        result, = _set(harness, client, model__device='cuda')
        assert not result.successful and 'CUDA is not available' in result.reason, result.reason
        assert node.get_parameter('model.device').value == 'auto'
    assert node.get_parameter('model.segmentation').value == 'tiny-seg'
    assert node.get_parameter('change.threshold').value == 2.0
    assert _set(harness, client, change__threshold=5.0)[0].successful


def test_a_parameter_the_node_lacks_is_named_when_set(harness):
    # rclpy's own refusal reads "Invalid access to undeclared parameter(s): []".
    node = harness.make(SEGMENTATION, {**FAST, 'model.segmentation': 'tiny-seg',
                                       'node.autostart': False})
    client = _client(harness, node)
    result, = _set(harness, client, node__heads=['pose'])
    assert not result.successful
    assert result.reason == (f'{node.get_name()} has no parameter node.heads: only '
                             'perception_node runs what it sets'), result.reason
    result, = _set(harness, client, model__pose='tiny-pose')
    assert result.reason.endswith('only perception_node and pose_node run what it sets')
    result, = _set(harness, client, change__treshold=5.0)
    assert result.reason == (f"{node.get_name()} has no parameter 'change.treshold'; did "
                             "you mean 'change.threshold'?"), result.reason


def test_an_empty_array_of_any_type_clears_a_list_parameter(harness):
    # `ros2 param set /node sparsity.layer_thresholds []` sends an empty bool array.
    node = harness.make(PERCEPTION, {**MODELS, **FAST})
    client = _client(harness, node)
    assert _set(harness, client, sparsity__layer_thresholds=['a=1'])[0].successful
    assert node.get_parameter('sparsity.layer_thresholds').value == ['a=1']
    future = client.set_parameters(
        [Parameter('sparsity.layer_thresholds', Parameter.Type.BOOL_ARRAY, [])])
    assert harness.spin_until(future.done)
    assert future.result().results[0].successful, future.result().results[0].reason
    assert list(node.get_parameter('sparsity.layer_thresholds').value) == []
    assert node.parameters.settings.sparsity.layer_thresholds == ()
    result, = _set(harness, client, sparsity__layer_thresholds=[True])  # not empty: refused
    assert not result.successful and 'takes a string array' in result.reason, result.reason


def test_the_registered_models_check_names_and_files(tmp_path, monkeypatch):
    from sparse_perception import settings as st
    from sparse_perception.nodes.node_config import registered_model_problem

    settings = st.PerceptionSettings()
    problem = registered_model_problem('segmentation', 'no_such_model', settings)
    assert 'no_such_model' in problem and 'selfie_segmentation' in problem
    problem = registered_model_problem('segmentation', 'blazepose', settings)
    assert "'blazepose' is a pose model, not a segmentation model" in problem, problem
    assert 'selfie_segmentation_landscape' in problem and 'movenet' not in problem
    monkeypatch.setenv('SPARSE_PERCEPTION_MODEL_CACHE', str(tmp_path / 'empty'))
    missing = registered_model_problem('pose', 'blazepose', settings)
    assert 'blazepose' in missing and 'models fetch' in missing, missing
    (tmp_path / 'models' / 'mediapipe').mkdir(parents=True)
    (tmp_path / 'models' / 'mediapipe' / 'pose_landmark_full.tflite').write_bytes(b'')
    found = st.replace(settings, {'model.models_dir': str(tmp_path / 'models')})
    assert registered_model_problem('pose', 'blazepose', found) is None
    # A mistyped folder is named, not passed over for the cache's file.
    typo = st.replace(settings, {'model.models_dir': str(tmp_path / 'modles')})
    assert 'modles' in registered_model_problem('pose', 'blazepose', typo)
    assert 'is not a folder' in registered_model_problem('pose', 'blazepose', typo)


def test_a_model_that_fails_to_load_reverts_only_itself(harness, tmp_path):
    broken = tmp_path / 'broken.json'
    broken.write_text('{"head": "segmentation", "seed": 1}')  # a pose file of the wrong head
    pipelines = []

    def factory(settings, heads):
        pipelines.append(pipeline_double.PipelineDouble(settings, heads=heads))
        return pipelines[-1]

    node = harness.make(POSE, {**FAST, 'model.pose': 'tiny-pose'}, factory=factory)
    client = _client(harness, node)
    publisher = harness.node.create_publisher(Image, _input_topic(node), QoSProfile(depth=10))
    clouds = harness.collect(PointCloud2, _topic(node, 'keypoints'))
    harness.spin_until(lambda: publisher.get_subscription_count() == 1)
    _send_and_wait(harness, publisher, _raw(0), clouds)
    # Accepted at set time (the file exists), found out at the next frame, together with a
    # good value set in between.
    assert _set(harness, client, model__pose=str(broken))[0].successful
    assert _set(harness, client, sparsity__scale=0.25)[0].successful
    _send_and_wait(harness, publisher, _raw(1), clouds)
    assert harness.spin_until(lambda: node.get_parameter('model.pose').value == 'tiny-pose')
    _send_and_wait(harness, publisher, _raw(2), clouds)
    assert node.get_parameter('sparsity.scale').value == 0.25
    assert pipelines[0].settings.sparsity.scale == 0.25
    assert pipelines[0].settings.model.pose == 'tiny-pose'


def test_diagnostics_go_on_under_sim_time_without_a_clock(harness):
    node = harness.make(PERCEPTION, {**MODELS, **FAST, 'use_sim_time': True})
    name = f'{node.get_fully_qualified_name()}: perception'
    diagnostics = harness.collect(DiagnosticArray, '/diagnostics')

    def reports():
        return [s for a in diagnostics for s in a.status if s.name == name]
    # Nobody publishes /clock: sim time stands at zero, and the reports must still come.
    assert harness.spin_until(lambda: len(reports()) >= 3, timeout=5.0)
    publisher = harness.node.create_publisher(Image, _input_topic(node), QoSProfile(depth=10))
    masks = harness.collect(Image, _topic(node, 'mask'))
    harness.spin_until(lambda: publisher.get_subscription_count() == 1)
    _send_and_wait(harness, publisher, _raw(0), masks)

    # Latency under sim time counts from receipt: small, not the distance to sim time zero.
    def latency():
        values = [{v.key: v.value for v in s.values}['latency p50 (ms)'] for s in reports()]
        return [float(v) for v in values if v != 'n/a']
    assert harness.spin_until(latency, timeout=5.0)
    assert 0.0 <= latency()[-1] < 10_000.0, latency()


def test_a_last_report_says_the_node_stopped_taking_frames(harness):
    node = harness.make(PERCEPTION, {**MODELS, **FAST})
    name = f'{node.get_fully_qualified_name()}: perception'
    diagnostics = harness.collect(DiagnosticArray, '/diagnostics')

    def reports():
        return [s for a in diagnostics for s in a.status if s.name == name]
    assert harness.spin_until(lambda: len(reports()) >= 1, timeout=5.0)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    # Inactive, the node reports no more: its last report must not say 'running'.
    assert harness.spin_until(lambda: reports()[-1].message != 'running', timeout=5.0)
    last = reports()[-1]
    assert last.level == DiagnosticStatus.OK and last.message.startswith('inactive: deactivated')
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: reports()[-1].message != last.message, timeout=5.0)
    count = len(reports())
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: len(reports()) > count, timeout=5.0)
    assert reports()[-1].message == 'shutting down'


def _subscription_reliability(harness, topic):
    infos = harness.node.get_subscriptions_info_by_topic(topic)
    return {i.qos_profile.reliability for i in infos}


def _active_with_a_reliable_publisher(harness):
    """Return an active node subscribed reliably, its input topic and that one publisher."""
    node = harness.make(PERCEPTION, {**MODELS, **FAST, 'node.autostart': False})
    topic = _input_topic(node)
    reliable = harness.node.create_publisher(
        Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    harness.spin_until(lambda: node.count_publishers(topic) == 1)
    assert node.trigger_configure() == node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(
        lambda: _subscription_reliability(harness, topic) == {ReliabilityPolicy.RELIABLE})
    return node, topic, reliable


def test_the_subscription_follows_the_publishers_reliability(harness):
    node, topic, reliable = _active_with_a_reliable_publisher(harness)
    masks = harness.collect(Image, _topic(node, 'mask'))
    _send_and_wait(harness, reliable, _raw(0), masks)
    # A best-effort publisher joins: the node subscribes best effort, which matches both.
    harness.node.create_publisher(
        Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert harness.spin_until(
        lambda: _subscription_reliability(harness, topic) == {ReliabilityPolicy.BEST_EFFORT},
        timeout=5.0)
    _send_and_wait(harness, reliable, _raw(1), masks)


def test_outputs_keep_more_than_the_last_message_for_reliable_subscribers():
    assert output_qos().depth > 1
    assert output_qos().reliability == ReliabilityPolicy.RELIABLE


@pytest.mark.parametrize('remap, expected', [
    ('image:=/cam_edge/image_raw', '/cam_edge/image_raw/compressed'),
    ('image/compressed:=/cam_edge/jpeg', '/cam_edge/jpeg'),
])
def test_remapping_the_base_topic_moves_the_compressed_topic(harness, remap, expected):
    node = harness.make(SEGMENTATION, {**FAST, 'model.segmentation': 'tiny-seg',
                                       'input.transport': 'compressed'},
                        cli_args=['--ros-args', '-r', remap])
    assert node.input.subscription.topic_name == expected


def test_activation_says_it_is_loading_and_warming(harness):
    node = harness.make(PERCEPTION, {**MODELS, **FAST})
    assert harness.spin_until(lambda: any(
        'warming up' in line and 'tiny-seg' in line for line in harness.log_lines(node)))
    assert harness.spin_until(lambda: any(
        line.startswith('active after') for line in harness.log_lines(node)))


def test_a_camera_topic_that_is_no_ros_name_is_refused_at_configure_naming_it(harness):
    node = harness.make(SEGMENTATION, {**MODELS, **FAST, 'node.autostart': False,
                                       'input.topic': 'bad topic'})
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert harness.spin_until(lambda: any(
        "input.topic 'bad topic' is not a valid ROS topic name" in line
        for line in harness.log_lines(node, Log.ERROR)))


def test_an_integer_for_a_double_parameter_starts_the_node_as_it_is_set_live(harness):
    # `threshold: 12` in a parameters file: rclpy alone refuses it at declaration, and the
    # node would not start where the replay and `ros2 param set` take it.
    node = harness.make(SEGMENTATION, {**MODELS, **FAST, 'node.autostart': False,
                                       'change.threshold': 12, 'change.tile_size': 8})
    threshold = node.get_parameter('change.threshold')
    assert threshold.type_ == Parameter.Type.DOUBLE and threshold.value == 12.0
    assert node.get_parameter('change.tile_size').value == 8  # integers stay integers
    assert node.parameters.settings.change.threshold == 12.0


def test_a_parameter_the_node_does_not_have_is_warned_of_with_the_nearest_name(harness):
    # rclpy keeps it unread: a misspelt name in a parameters file left the default running.
    node = harness.make(SEGMENTATION, {**MODELS, **FAST, 'node.autostart': False,
                                       'change.treshold': 7.0, 'camera_driver.gain': 3,
                                       'qos_overrides./image.subscription.depth': 5})
    said = ("parameter 'change.treshold' (from a parameters file or the command line) is not "
            "one of this node's; ignored: did you mean 'change.threshold'?")
    assert harness.spin_until(lambda: said in harness.log_lines(node, Log.WARN))
    assert harness.spin_until(lambda: any(
        line.startswith("parameter 'camera_driver.gain'") and line.endswith('ignored')
        for line in harness.log_lines(node, Log.WARN)))
    harness.spin_for(0.2)
    warnings = harness.log_lines(node, Log.WARN)
    assert not any('qos_overrides' in line for line in warnings)
    assert node.get_parameter('change.threshold').value == 2.0


def test_the_subscription_says_when_its_last_publisher_left(harness):
    node, topic, reliable = _active_with_a_reliable_publisher(harness)
    harness.node.destroy_publisher(reliable)
    said = f'input.reliability auto: {topic} has no publisher: subscribing best_effort'
    assert harness.spin_until(lambda: any(said in line for line in harness.log_lines(node)),
                              timeout=5.0), harness.log_lines(node)


def test_a_failure_to_start_taking_frames_is_said_and_activation_can_be_tried_again(
        harness, monkeypatch):
    node = harness.make(SEGMENTATION, {**MODELS, **FAST, 'node.autostart': False})
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS

    def broken(now):
        raise RuntimeError('the middleware refused the subscription')
    monkeypatch.setattr(node.input, 'start', broken)
    assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
    assert harness.spin_until(lambda: any(
        'cannot activate: starting to take frames failed: the middleware refused' in line
        for line in harness.log_lines(node, Log.ERROR)))
    # Back to inactive, its publishers too: an inactive node publishes nothing.
    client = harness.node.create_client(GetState, f'{node.get_fully_qualified_name()}/get_state')
    assert harness.spin_until(client.service_is_ready)
    future = client.call_async(GetState.Request())
    assert harness.spin_until(future.done)
    assert future.result().current_state.id == State.PRIMARY_STATE_INACTIVE
    assert not any(p.is_activated for p in node.outputs.publishers.values())
    monkeypatch.undo()
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    masks = harness.collect(Image, _topic(node, 'mask'))
    publisher = harness.node.create_publisher(Image, _input_topic(node), 1)
    _send_and_wait(harness, publisher, _raw(0), masks)
