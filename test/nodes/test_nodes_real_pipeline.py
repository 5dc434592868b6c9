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
The perception node end to end with the real pipeline and its default models (MediaPipe).

The other node tests drive the ROS edge with a small stand-in pipeline; this one runs what a
robot runs: selfie segmentation and BlazePose from the ``models fetch`` cache, through the
incremental engine, on frames of the bundled rosbag2 clip.
"""

import clip
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from sparse_perception.media.images import image_to_numpy
from sparse_perception.media.messages import cloud_to_keypoints
from sparse_perception.nodes.node_config import make_pipeline, PERCEPTION

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 768, 576


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


@pytest.mark.slow
def test_default_models_through_the_real_pipeline(harness, mediapipe_cache):
    node = harness.make(PERCEPTION, {
        'model.models_dir': str(mediapipe_cache), 'model.device': 'cpu',
        'input.transport': 'compressed', 'node.warmup_width': 64, 'node.warmup_height': 48,
    }, factory=make_pipeline)
    topic = f'{node.get_namespace()}/{node.get_name()}'
    publisher = harness.node.create_publisher(
        CompressedImage, node.get_namespace() + '/image/compressed', qos_profile_sensor_data)
    masks = harness.collect(Image, topic + '/mask')
    clouds = harness.collect(PointCloud2, topic + '/keypoints')
    assert harness.spin_until(lambda: publisher.get_subscription_count() == 1, timeout=60)
    for index in range(3):
        sec, nanosec, raw = clip.records()[index]
        msg = deserialize_message(raw, CompressedImage)
        publisher.publish(msg)
        assert harness.spin_until(
            lambda: any(_stamp(m) == (sec, nanosec) for m in masks)
            and any(_stamp(c) == (sec, nanosec) for c in clouds), timeout=60)
        mask = next(m for m in masks if _stamp(m) == (sec, nanosec))
        cloud = next(c for c in clouds if _stamp(c) == (sec, nanosec))
        assert mask.header == msg.header and cloud.header == msg.header
        values = image_to_numpy(mask)
        assert values.shape == (HEIGHT, WIDTH) and set(np.unique(values)) <= {0, 1}
        points = cloud_to_keypoints(cloud)
        assert len(points) % 33 == 0  # BlazePose-33, one block per person found
    assert node.get_parameter('class_names').value == ['background', 'person']
    assert node.get_parameter('joint_names').value[0] == 'nose'
