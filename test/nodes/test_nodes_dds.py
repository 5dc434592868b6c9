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
Two processes over DDS: one replays the bundled bag, the node runs in another.

This test is a third process that watches the outputs and matches each to its input by stamp.
The node process runs the same run() as the console script, on the pipeline double, and must
exit cleanly on SIGINT.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import clip
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from support import REPO

pytestmark = pytest.mark.ros

NAMESPACE = f'/dds_{os.getpid()}'  # unique to this run (see ros_harness.UNIQUE)
NODE = f'{NAMESPACE}/perception_node'
CAMERA = f'{NAMESPACE}/camera/image_raw'


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _node_process(namespace, *parameters):
    """Start node_process.py (the tiny models) in ``namespace`` with ``-p`` ``parameters``."""
    arguments = ['-r', f'__ns:={namespace}', '-p', 'model.segmentation:=tiny-seg',
                 '-p', 'model.pose:=tiny-pose']
    for parameter in parameters:
        arguments += ['-p', parameter]
    return subprocess.Popen(
        [sys.executable, str(REPO / 'test' / 'nodes' / 'node_process.py'), '--ros-args',
         *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_active(harness, node_process, timeout=60.0, node=NODE):
    client = harness.node.create_client(GetState, f'{node}/get_state')
    end = time.monotonic() + timeout
    while time.monotonic() < end and node_process.poll() is None:
        if client.service_is_ready():
            future = client.call_async(GetState.Request())
            harness.spin_until(future.done, timeout=5.0)
            if future.done() and future.result().current_state.id == State.PRIMARY_STATE_ACTIVE:
                return True
        harness.spin_for(0.1)
    return False


@pytest.mark.parametrize('arguments, said', [
    (['--params-file', '/nonexistent/params.yaml'], "Couldn't parse params file: "
                                                    "'--params-file /nonexistent/params.yaml'"),
    (['--log-level', 'loud'], "Couldn't parse log level: '--log-level loud'"),
    (['-r', 'image:=bad//name'], "Couldn't parse remap rule"),
])
def test_ros_arguments_rclpy_cannot_take_end_in_one_line_not_a_traceback(arguments, said):
    done = subprocess.run(
        [sys.executable, str(REPO / 'test' / 'nodes' / 'node_process.py'), '--ros-args',
         *arguments], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # (after rcl's own line, if it writes one)
    assert last.startswith('[FATAL] [perception_node]: the ROS arguments cannot be used: '
                           'failed to initialize rcl: ') and said in last, done.stderr
    assert '.c:' not in last, last


@pytest.mark.slow
def test_bag_replayed_by_another_process_every_output_matched_by_stamp(harness):
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    masks = harness.collect(Image, f'{NODE}/mask', qos)
    clouds = harness.collect(PointCloud2, f'{NODE}/keypoints', qos)
    node_process = subprocess.Popen(
        [sys.executable, str(REPO / 'test' / 'nodes' / 'node_process.py'), '--ros-args',
         '-r', f'__ns:={NAMESPACE}', '-p', 'model.segmentation:=tiny-seg',
         '-p', 'model.pose:=tiny-pose', '-p', 'input.transport:=compressed',
         # As the player publishes: under auto the node would switch from best effort once it
         # sees the player, and lose what is sent meanwhile in a 2 s replay.
         '-p', 'input.reliability:=reliable',
         '-p', f'input.topic:={CAMERA}', '-p', 'node.warmup_width:=64',
         '-p', 'node.warmup_height:=48'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    player = None
    try:
        assert _wait_active(harness, node_process), 'the node process never became active'
        player = subprocess.Popen(
            [sys.executable, str(REPO / 'test' / 'nodes' / 'bag_publisher.py'),
             f'{CAMERA}/compressed', '--rate', '20'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert harness.spin_until(lambda: player.poll() is not None, timeout=60.0)
        player_output = player.stdout.read()
        assert player.returncode == 0 and 'sent 40' in player_output, player_output
        sent = {(sec, nanosec) for sec, nanosec, _ in clip.records()}
        last = max(sent)
        # The newest frame is always processed, and the last message of a reliable keep-last
        # topic is always delivered: the last frame's outputs arrive, whatever was dropped.
        assert harness.spin_until(
            lambda: last in {_stamp(m) for m in masks} and last in {_stamp(c) for c in clouds},
            timeout=30.0), (len(masks), len(clouds))
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        node_process.send_signal(signal.SIGINT)
        try:
            node_output, _ = node_process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            node_process.kill()
            node_output, _ = node_process.communicate()
    assert node_process.returncode == 0, node_output

    mask_stamps = [_stamp(m) for m in masks]
    cloud_stamps = [_stamp(c) for c in clouds]
    # How many frames the node takes depends on the machine's load (it drops what it cannot
    # keep up with, newest wins), and DDS promises neither output topic every message (keep
    # last): a mask and a cloud of one frame are two deliveries, either may be lost alone.
    # What holds: outputs only for frames sent, in order, each once, and the last frame's.
    assert set(mask_stamps) <= sent and set(cloud_stamps) <= sent
    assert mask_stamps == sorted(set(mask_stamps))  # in order, each frame once
    assert cloud_stamps == sorted(set(cloud_stamps))
    assert mask_stamps[-1] == cloud_stamps[-1] == last
    assert all(m.header.frame_id == 'camera' for m in masks + clouds)
    assert all((m.height, m.width, m.encoding) == (576, 768, 'mono8') for m in masks)


def _run_executable(module, *ros_args, until=None, timeout=30.0, alive=None):
    """
    Run a node's console-script entry point; stop it with SIGINT once ``until`` is printed.

    ``alive``, a list, gets whether the process still ran 2 s after ``until`` was printed.
    """
    # A node that does not exit dumps every thread's stack on SIGABRT (faulthandler), so a
    # hang shows where it hangs instead of only an exit code of -9.
    process = subprocess.Popen([sys.executable, '-m', module, '--ros-args', *ros_args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, 'PYTHONFAULTHANDLER': '1'})
    lines, seen = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if until is not None and until in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if until is not None:
            seen.wait(timeout)
            if alive is not None:
                time.sleep(2.0)
                alive.append(process.poll() is None)
            process.send_signal(signal.SIGINT)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    reader.join(5)
    return process.returncode, ''.join(lines)


def test_a_bad_parameter_stops_the_executable_with_the_reason():
    code, output = _run_executable('sparse_perception.nodes.pose_node',
                                   '-p', 'change.threshold:=lots')
    assert code == 1, output
    assert 'parameter change.threshold must be double' in output and 'lots' in output, output


@pytest.mark.slow
def test_the_executable_reports_a_model_it_cannot_load_and_stays_up():
    # Through the real factory and model check: a model name nobody registered leaves the
    # node unconfigured with the reason, and the node keeps running.
    alive = []
    code, output = _run_executable(
        'sparse_perception.nodes.segmentation_node', '-r', f'__ns:=/exe_{os.getpid()}',
        '-p', 'model.segmentation:=no-such-registered-model', until='cannot configure',
        alive=alive)
    assert alive == [True] and code == 0, output
    assert ("cannot configure: model.segmentation = 'no-such-registered-model' is neither a "
            'registered model') in output, output


@pytest.mark.slow
def test_ctrl_c_twice_while_shutting_down_exits_cleanly():
    # A terminal's Ctrl-C reaches the node from the terminal and again from `ros2 launch`; the
    # second one lands while the node frees its model. Keep signalling until it has exited.
    process = _node_process(f'/sigint_{os.getpid()}', 'node.warmup_width:=64',
                            'node.warmup_height:=48')
    lines, active = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if ']: active' in line:
                active.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert active.wait(60), ''.join(lines)
        end = time.monotonic() + 10.0
        while process.poll() is None and time.monotonic() < end:
            process.send_signal(signal.SIGINT)
            time.sleep(0.01)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
    output = ''.join(lines)
    assert process.returncode == 0, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output


@pytest.mark.slow
def test_the_node_answers_get_state_while_it_warms_up(harness):
    # A long warm-up (the most frames, large ones: a few seconds, so that the state is seen
    # while it lasts however fast a frame is): the executor must spin meanwhile.
    namespace = f'/warm_{os.getpid()}'
    process = _node_process(namespace, 'node.warmup_frames:=100', 'node.warmup_width:=1920',
                            'node.warmup_height:=1080')
    client = harness.node.create_client(GetState, f'{namespace}/perception_node/get_state')
    seen = []
    try:
        end = time.monotonic() + 120.0
        while time.monotonic() < end and process.poll() is None:
            if client.service_is_ready():
                future = client.call_async(GetState.Request())
                if harness.spin_until(future.done, timeout=2.0):
                    seen.append(future.result().current_state.id)
                    if seen[-1] == State.PRIMARY_STATE_ACTIVE:
                        break
            harness.spin_for(0.05)
        assert seen and seen[-1] == State.PRIMARY_STATE_ACTIVE, seen
        assert State.TRANSITION_STATE_ACTIVATING in seen, seen
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0 and 'Traceback' not in output, output


@pytest.mark.slow
@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM'])
def test_a_node_stopped_by_a_signal_says_so_in_a_last_report(harness, signal_name):
    # Without it the last report would still say the node runs, as from a node that died.
    namespace = f'/stop_{os.getpid()}_{signal_name.lower()}'
    node = f'{namespace}/perception_node'
    reports = harness.collect(DiagnosticArray, '/diagnostics',
                              QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    process = _node_process(namespace, 'node.warmup_width:=64', 'node.warmup_height:=48',
                            'diagnostics.period:=0.2')

    def mine():
        return [s for array in reports for s in array.status
                if s.name == f'{node}: perception']
    try:
        assert _wait_active(harness, process, node=node), 'the node never became active'
        assert harness.spin_until(mine, timeout=10.0), 'no report while active'
        process.send_signal(getattr(signal, signal_name))
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0 and 'Traceback' not in output, output
    harness.spin_for(0.5)  # what arrived while this process waited
    last = mine()[-1]
    assert last.message == f'shutting down: {signal_name} received', [s.message for s in mine()]
    assert last.level == DiagnosticStatus.OK
