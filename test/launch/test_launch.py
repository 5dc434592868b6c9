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
Each launch file started with ``ros2 launch`` and its documented arguments, as a user does.

The package comes from a plain ``pip install .`` (conftest), the models are the defaults from
``sparse-perception models fetch``, and the frames are the bundled clip, sent from this process
with reliable and best-effort publishers, raw and compressed. One node start per launch file:
each test drives its node through topics, parameters and the life cycle, then stops it with
SIGINT and expects a clean exit.
"""

import os
import subprocess
import time

import clip
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from ros2_process import ros2, Running
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from sparse_perception.images import compressed_to_numpy, numpy_to_image

RUN = f'lt{os.getpid()}'  # namespaces unique to this test run
BEST_EFFORT = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def _compressed(index):
    return deserialize_message(clip.records()[index][2], CompressedImage)


def _raw(index):
    compressed = _compressed(index)
    return numpy_to_image(compressed_to_numpy(compressed, 'bgr8'), 'bgr8', compressed.header,
                          msg_type=Image)


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _send_until_output(harness, publisher, msg, *received, timeout=60.0):
    """
    Publish ``msg`` every half second until every list in ``received`` holds its output.

    Re-sending stands in for a camera's stream: the node may still be matching the publisher
    (and choosing its reliability) when the first copy goes out. Returns the outputs.
    """
    stamp = _stamp(msg)

    def outputs():
        found = [next((m for m in r if _stamp(m) == stamp), None) for r in received]
        return found if all(m is not None for m in found) else None
    end = time.monotonic() + timeout
    while time.monotonic() < end and not outputs():
        publisher.publish(msg)
        harness.spin_until(outputs, timeout=0.5)
    assert outputs(), f'no output for the frame stamped {stamp}'
    return outputs()


@pytest.fixture
def params_file(tmp_path):
    # A user's parameters file: warm up on one small frame, to keep the start short here.
    path = tmp_path / 'params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    node:\n      warmup_frames: 1\n'
                    '      warmup_width: 128\n      warmup_height: 96\n')
    return path


def _stop_cleanly(running):
    code = running.interrupt()
    output = running.output
    assert code == 0, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert 'process has finished cleanly' in output, output


def _lifecycle(harness, node, service, transition=None):
    """Call the node's get_state (return the state id) or change_state (return success)."""
    client = harness.node.create_client(
        service, f'{node}/{"get_state" if service is GetState else "change_state"}')
    assert harness.spin_until(client.service_is_ready, timeout=10.0)
    request = (GetState.Request() if service is GetState
               else ChangeState.Request(transition=Transition(id=transition)))
    future = client.call_async(request)
    assert harness.spin_until(future.done, timeout=120.0)  # activation loads the model
    harness.node.destroy_client(client)
    result = future.result()
    return result.current_state.id if service is GetState else result.success


def _set(harness, client, name, value):
    future = client.set_parameters([Parameter(name, value=value)])
    assert harness.spin_until(future.done, timeout=10.0)
    return future.result().results[0]


def test_segmentation_launch_raw_reliable_and_best_effort_lifecycle_and_ctrl_c(
        installed, harness, params_file):
    namespace, camera = f'{RUN}_seg', f'/{RUN}_seg_camera/image_raw'
    node = f'/{namespace}/segmentation_node'
    running = Running(installed, 'launch', 'sparse_perception', 'segmentation.launch.py',
                      f'camera_topic:={camera}', 'transport:=raw', f'namespace:={namespace}',
                      f'params_file:={params_file}', 'use_sim_time:=false', 'log_level:=info')
    try:
        running.wait_for('active after')
        masks = harness.collect(Image, f'{node}/mask', OUTPUTS)
        reliable = harness.node.create_publisher(Image, camera, RELIABLE)
        frame = _raw(0)
        mask, = _send_until_output(harness, reliable, frame, masks)
        assert mask.header == frame.header
        assert (mask.height, mask.width, mask.encoding) == (frame.height, frame.width, 'mono8')
        running.wait_for('subscribing reliable', timeout=30.0)  # the publisher's reliability

        best_effort = harness.node.create_publisher(Image, camera, BEST_EFFORT)
        running.wait_for('subscribing best_effort', timeout=30.0)
        frame = _raw(1)
        assert _send_until_output(harness, best_effort, frame, masks)[0].header == frame.header

        # A bad frame is skipped with the reason; the next good one is processed.
        best_effort.publish(Image(header=_raw(2).header, height=0, width=0, encoding='bgr8'))
        running.wait_for('skipped a bad input image', timeout=30.0)
        frame = _raw(3)
        assert _send_until_output(harness, best_effort, frame, masks)[0].header == frame.header

        code, output = ros2(installed, 'lifecycle', 'set', '--no-daemon', '--spin-time', '3',
                            node, 'deactivate')
        assert code == 0 and 'Transitioning successful' in output, output
        assert _lifecycle(harness, node, GetState) == State.PRIMARY_STATE_INACTIVE
        assert _lifecycle(harness, node, ChangeState, Transition.TRANSITION_ACTIVATE)
        assert _lifecycle(harness, node, GetState) == State.PRIMARY_STATE_ACTIVE
        frame = _raw(4)
        assert _send_until_output(harness, best_effort, frame, masks)[0].header == frame.header
        _stop_cleanly(running)
    finally:
        running.stop()


def test_perception_launch_compressed_and_parameters_refused_when_set(
        installed, harness, params_file):
    import torch

    namespace, camera = f'{RUN}_both', f'/{RUN}_both_camera/image_raw'
    node = f'/{namespace}/perception_node'
    running = Running(installed, 'launch', 'sparse_perception', 'perception.launch.py',
                      f'camera_topic:={camera}', 'transport:=compressed',
                      f'namespace:={namespace}', 'heads:=[segmentation, pose]',
                      f'params_file:={params_file}', 'log_level:=info')
    try:
        running.wait_for('active after')
        masks = harness.collect(Image, f'{node}/mask', OUTPUTS)
        clouds = harness.collect(PointCloud2, f'{node}/keypoints', OUTPUTS)
        publisher = harness.node.create_publisher(CompressedImage, camera + '/compressed',
                                                  BEST_EFFORT)
        frame = _compressed(0)
        mask, cloud = _send_until_output(harness, publisher, frame, masks, clouds)
        assert mask.header == frame.header and cloud.header == frame.header

        # The README's command.
        code, output = ros2(installed, 'param', 'set', '--no-daemon', '--spin-time', '3', node,
                            'change.threshold', '20.0')
        assert code == 0 and 'Set parameter successful' in output, output
        client = AsyncParameterClient(harness.node, node)
        assert harness.spin_until(client.services_are_ready, timeout=10.0)
        assert _set(harness, client, 'sparsity.scale', 0.1).successful
        refused = {
            'change.threshold': 300.0,  # out of range
            'change.min_pixels': 'many',  # wrong type
            'model.segmentation': 'no_such_model',  # unknown model
        }
        if not torch.cuda.is_available():
            refused['model.device'] = 'cuda'  # unavailable device
        for name, value in refused.items():
            result = _set(harness, client, name, value)
            assert not result.successful and result.reason, (name, result)
        assert 'no_such_model' in _set(harness, client, 'model.segmentation',
                                       'no_such_model').reason
        # Nothing refused is applied later, and nothing accepted is undone.
        frame = _compressed(1)
        _send_until_output(harness, publisher, frame, masks, clouds)
        future = client.get_parameters(['change.threshold', 'sparsity.scale',
                                        'model.segmentation', 'model.device'])
        assert harness.spin_until(future.done, timeout=10.0)
        values = [v.double_value or v.string_value for v in future.result().values]
        assert values == [20.0, 0.1, 'selfie_segmentation_landscape', 'auto'], values
        assert 'could not apply' not in running.output, running.output
        _stop_cleanly(running)
    finally:
        running.stop()


def test_pose_launch_under_sim_time_reports_without_a_clock(installed, harness, params_file):
    namespace, camera = f'{RUN}_pose', f'/{RUN}_pose_camera/image_raw'
    node = f'/{namespace}/pose_node'
    running = Running(installed, 'launch', 'sparse_perception', 'pose.launch.py',
                      f'camera_topic:={camera}', f'namespace:={namespace}',
                      f'params_file:={params_file}', 'use_sim_time:=true', 'log_level:=info')
    try:
        running.wait_for('active after')
        diagnostics = harness.collect(DiagnosticArray, '/diagnostics', OUTPUTS)
        clouds = harness.collect(PointCloud2, f'{node}/keypoints', OUTPUTS)
        publisher = harness.node.create_publisher(Image, camera, RELIABLE)
        frame = _raw(0)
        assert _send_until_output(harness, publisher, frame, clouds)[0].header == frame.header
        name = f'{node}: perception'
        # No /clock is published: the reports come all the same.
        assert harness.spin_until(lambda: sum(
            s.name == name for a in diagnostics for s in a.status) >= 2, timeout=10.0)
        _stop_cleanly(running)
    finally:
        running.stop()


def test_ros2_run_with_a_remap_and_the_compressed_transport(installed, harness):
    # The README's command, with the compressed transport: the remap moves both topics.
    namespace = f'{RUN}_run'
    running = Running(installed, 'run', 'sparse_perception', 'segmentation_node', '--ros-args',
                      '-r', f'__ns:=/{namespace}', '-r', f'image:=/{namespace}/camera/image_raw',
                      '-p', 'input.transport:=compressed', '-p', 'node.warmup_frames:=0')
    try:
        running.wait_for('active after')
        assert f'taking images from /{namespace}/camera/image_raw/compressed' in running.output
        masks = harness.collect(Image, f'/{namespace}/segmentation_node/mask', OUTPUTS)
        publisher = harness.node.create_publisher(
            CompressedImage, f'/{namespace}/camera/image_raw/compressed', BEST_EFFORT)
        frame = _compressed(5)
        assert _send_until_output(harness, publisher, frame, masks)[0].header == frame.header
        code = running.interrupt()
        assert code == 0 and 'Traceback' not in running.output, running.output
    finally:
        running.stop()


def test_pip_install_puts_the_node_executables_where_ros2_run_looks(installed):
    code, output = ros2(installed, 'pkg', 'executables', 'sparse_perception')
    assert code == 0, output
    assert sorted(output.split()) == sorted(
        ['sparse_perception'] * 3 + ['perception_node', 'pose_node', 'segmentation_node'])


def test_the_installed_command_line_finds_every_model(installed):
    done = subprocess.run(['sparse-perception', 'models', 'list'], env=installed,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'not found' not in done.stdout and 'missing' not in done.stdout, done.stdout
    for name in ('selfie_segmentation_landscape', 'blazepose', 'deeplabv3_mnv2_pascal',
                 'movenet_lightning'):
        assert name in done.stdout, done.stdout
