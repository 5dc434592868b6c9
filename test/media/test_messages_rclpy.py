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

"""Output message encodings on real rclpy message classes, through rclpy serialisation."""

import numpy as np
import pytest
from sparse_perception.media.images import image_to_numpy
from sparse_perception.media.messages import (
    cloud_to_keypoints, keypoints_to_cloud, mask_to_image)
from sparse_perception.results import PoseResult, SegmentationResult
from support import require_module

serialization = require_module('rclpy.serialization')
sensor_msgs = require_module('sensor_msgs.msg')
std_msgs = require_module('std_msgs.msg')
builtin_interfaces = require_module('builtin_interfaces.msg')

pytestmark = pytest.mark.ros


def _header():
    return std_msgs.Header(stamp=builtin_interfaces.Time(sec=1700000000, nanosec=42),
                           frame_id='camera')


def _round_trip(msg):
    return serialization.deserialize_message(serialization.serialize_message(msg), type(msg))


def test_keypoint_cloud_through_rclpy():
    keypoints = np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3)
    pose = PoseResult(keypoints, tuple(f'j{i}' for i in range(17)), ((0, 1),))
    msg = _round_trip(keypoints_to_cloud(pose, _header(), msg_type=sensor_msgs.PointCloud2,
                                         field_type=sensor_msgs.PointField))
    assert msg.header.stamp.nanosec == 42 and msg.header.frame_id == 'camera'
    assert [f.name for f in msg.fields] == ['x', 'y', 'score', 'joint', 'person']
    points = cloud_to_keypoints(msg)
    np.testing.assert_array_equal(points['x'].reshape(2, 17), keypoints[..., 0])
    np.testing.assert_array_equal(points['person'][17:], 1)


def test_mask_through_rclpy():
    mask = (np.arange(12, dtype=np.uint8) % 21).reshape(3, 4)
    msg = _round_trip(mask_to_image(SegmentationResult(mask, ()), _header(),
                                    msg_type=sensor_msgs.Image))
    assert msg.encoding == 'mono8'
    np.testing.assert_array_equal(image_to_numpy(msg), mask)
