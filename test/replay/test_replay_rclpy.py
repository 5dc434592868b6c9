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
The replay's output bag read through real rclpy (the ros-test extra).

Every message deserializes with rclpy's C type support into sensor_msgs classes, with the
content and stamps the replay wrote.

This is what ``ros2 bag play`` relies on: the bytes in the bag are CDR that rclpy (and so any
ROS 2 node) accepts for the recorded type.
"""

import numpy as np
from pipeline_double import PipelineDouble
import pytest
from replay_helpers import (
    compressed_message, frame_picture, PERIOD_NS, START_NS, write_bag)
from rosbags.rosbag2 import Reader
from sparse_perception.media.images import compressed_to_numpy, image_to_numpy
from sparse_perception.media.messages import cloud_to_keypoints
from sparse_perception.replay.job import ReplayJob, run_job
from sparse_perception.settings import PerceptionSettings
from support import require_module

serialization = require_module('rclpy.serialization')
sensor_msgs = require_module('sensor_msgs.msg')

pytestmark = pytest.mark.ros

RCLPY_TYPES = {'sensor_msgs/msg/CompressedImage': sensor_msgs.CompressedImage,
               'sensor_msgs/msg/Image': sensor_msgs.Image,
               'sensor_msgs/msg/PointCloud2': sensor_msgs.PointCloud2}


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_output_bag_deserializes_with_rclpy(tmp_path, storage):
    frames = 4
    bag = write_bag(tmp_path / 'input', {'/camera/image_raw/compressed': (
        'sensor_msgs/msg/CompressedImage', [compressed_message(i) for i in range(frames)])})
    out = tmp_path / 'out'
    run_job(ReplayJob(source=bag, out=out, settings=PerceptionSettings(), bag_storage=storage,
                      contact_sheet=0, pipeline=PipelineDouble))
    pipeline = PipelineDouble(PerceptionSettings())
    expected = [pipeline.process(frame_picture(i)) for i in range(frames)]
    seen = {}
    with Reader(out / 'output_bag') as reader:
        for connection, timestamp, raw in reader.messages():
            msg = serialization.deserialize_message(bytes(raw),
                                                    RCLPY_TYPES[connection.msgtype])
            assert isinstance(msg, RCLPY_TYPES[connection.msgtype])
            seen.setdefault(connection.topic, []).append((timestamp, msg))
    assert sorted(seen) == ['/camera/image_raw/compressed', '/sparse_perception/keypoints',
                            '/sparse_perception/mask']
    for topic, messages in seen.items():
        assert len(messages) == frames
        for index, (timestamp, msg) in enumerate(messages):
            stamp = START_NS + index * PERIOD_NS
            assert timestamp == stamp
            assert msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec == stamp
            assert msg.header.frame_id == 'camera'
    for index, result in enumerate(expected):
        _, image = seen['/camera/image_raw/compressed'][index]
        np.testing.assert_array_equal(compressed_to_numpy(image, 'rgb8'), frame_picture(index))
        _, mask = seen['/sparse_perception/mask'][index]
        assert mask.encoding == 'mono8' and (mask.height, mask.width) == (48, 64)
        np.testing.assert_array_equal(image_to_numpy(mask), result.segmentation.mask)
        _, cloud = seen['/sparse_perception/keypoints'][index]
        points = cloud_to_keypoints(cloud)
        np.testing.assert_array_equal(points['joint'], np.arange(17))
        np.testing.assert_allclose(points['y'], result.pose.keypoints[0, :, 1])
