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
What a node publishes: its lifecycle publishers and the messages made from each result.

Every output carries the input message's header unchanged. The keypoint markers, the overlay
and the change map cost a drawing or a large message, so they are made only while someone
subscribes.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import qos_profile_system_default
from sensor_msgs.msg import Image, PointCloud2, PointField
from sparse_perception import settings as st
from sparse_perception.media.images import numpy_to_image
from sparse_perception.media.messages import (
    change_map_to_image, keypoints_to_cloud, mask_to_image)
from sparse_perception.media.overlay import draw_pose, draw_segmentation
from sparse_perception.nodes.markers import keypoint_markers
from sparse_perception.nodes.ros_interop import marker_array, output_qos
from visualization_msgs.msg import MarkerArray


class Outputs:
    """The publishers of one node, made on configure, and what each frame's result becomes."""

    def __init__(self, node: LifecycleNode):
        """Publish for ``node`` once :meth:`create` made the publishers."""
        self._node = node
        self.publishers: dict[str, Any] = {}
        self.published: collections.Counter = collections.Counter()  # messages per output

    def create(self, heads: Sequence[str]) -> None:
        """Make the lifecycle publishers of ``heads``, the debug images and /diagnostics."""
        qos = output_qos()
        topics = {'overlay': Image, 'change_map': Image}
        if 'segmentation' in heads:
            topics['mask'] = Image
        if 'pose' in heads:
            topics.update(keypoints=PointCloud2, keypoint_markers=MarkerArray)
        for name, msg_type in topics.items():
            self.publishers[name] = self._node.create_lifecycle_publisher(
                msg_type, '~/' + name, qos)
        self.publishers['diagnostics'] = self._node.create_lifecycle_publisher(
            DiagnosticArray, '/diagnostics', qos_profile_system_default)

    def destroy(self) -> None:
        """Remove every publisher."""
        for publisher in self.publishers.values():
            self._node.destroy_lifecycle_publisher(publisher)
        self.publishers.clear()

    def publish_diagnostics(self, array: DiagnosticArray) -> None:
        """Publish a health report on /diagnostics."""
        self.publishers['diagnostics'].publish(array)

    def flush_diagnostics(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until /diagnostics subscribers acknowledged every report."""
        from rclpy.duration import Duration

        publisher = self.publishers.get('diagnostics')
        return publisher is None or publisher.wait_for_all_acked(
            Duration(nanoseconds=int(timeout_s * 1e9)))

    def publish_result(self, header: Any, image: Any, result: Any,
                       output: st.OutputSettings) -> None:
        """Publish what ``result`` (of ``image``, (H, W, 3) RGB) becomes, with ``header``."""
        if result.segmentation is not None:
            self._send('mask', mask_to_image(result.segmentation, header, msg_type=Image))
        if result.pose is not None:
            self._send('keypoints', keypoints_to_cloud(
                result.pose, header, msg_type=PointCloud2, field_type=PointField))
            if self.subscribed('keypoint_markers'):
                people = keypoint_markers(result.pose, image.shape[:2], output.min_score,
                                          output.marker_scale)
                self._send('keypoint_markers',
                           marker_array(people, header, self._node.get_name()))
        if self.subscribed('overlay'):
            drawn = image
            if result.segmentation is not None:
                drawn = draw_segmentation(drawn, result.segmentation)
            if result.pose is not None:
                drawn = draw_pose(drawn, result.pose, output.min_score)
            self._send('overlay', numpy_to_image(drawn, 'rgb8', header, msg_type=Image))
        if self.subscribed('change_map'):
            self._send('change_map', change_map_to_image(
                result.change_tiles, result.tile_size, image.shape[:2], header, msg_type=Image))

    def subscribed(self, topic: str) -> bool:
        """Return whether anyone subscribes to output ``topic``."""
        return self.publishers[topic].get_subscription_count() > 0

    def _send(self, topic: str, msg: Any) -> None:
        self.publishers[topic].publish(msg)
        self.published[topic] += 1
