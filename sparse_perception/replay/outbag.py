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
The replay's output bag: the input images plus the pipeline's ``mask`` and ``keypoints``.

Written with rosbags as rosbag2 (mcap by default, or sqlite3), in the same message encodings
the nodes publish (:mod:`sparse_perception.media.messages`): the mask as a ``mono8``
``sensor_msgs/Image`` of class ids, keypoints as a ``sensor_msgs/PointCloud2``. Every output
message carries the input frame's header (stamp and frame_id) and is logged at the input's
receive time, so ``ros2 bag play`` replays outputs in step with their images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.sources import Frame, ros_header

MASK = 'mask'
KEYPOINTS = 'keypoints'
DEFAULT_NAMESPACE = '/sparse_perception'
# rosbag2 metadata version 8: read by rosbags and by the rosbag2 of recent ROS 2 releases.
BAG_VERSION = 8


def storage_plugin(storage: str) -> Any:
    """Return the rosbags StoragePlugin for 'mcap' or 'sqlite3'."""
    from rosbags.rosbag2 import StoragePlugin
    return {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]


def check_namespace(namespace: str, what: str = 'bag namespace') -> None:
    """Raise ReplayError unless the mask and keypoints topics under ``namespace`` are ROS names."""
    from sparse_perception.replay.makebag import check_topic_name

    if namespace.strip('/'):
        check_topic_name(namespace.strip('/'), what)


def output_topics(namespace: str) -> dict[str, str]:
    """Return the topics of the masks and the keypoints under ``namespace``."""
    namespace = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return {MASK: f'{namespace}/{MASK}', KEYPOINTS: f'{namespace}/{KEYPOINTS}'}


def check_apart_topics(input_topic: str, namespace: str) -> None:
    """Raise ReplayError if the input's topic is one the outputs go to: a topic has one type."""
    check_namespace(namespace)
    given = '/' + input_topic.lstrip('/')
    for key, topic in output_topics(namespace).items():
        if given == topic:
            raise ReplayError(f'the input topic {input_topic} is where the output bag puts the '
                              f'{key}; choose another --bag-namespace')


class OutputBag:
    """Sink for :func:`~sparse_perception.replay.runner.replay`: writes one bag folder."""

    def __init__(self, path: Path, input_topic: str, input_msgtype: str,
                 storage: str = 'mcap', namespace: str = DEFAULT_NAMESPACE):
        from rosbags.rosbag2 import Writer
        from rosbags.typesys import get_typestore, Stores

        check_apart_topics(input_topic, namespace)
        self.path = path
        self.typestore = get_typestore(Stores.LATEST)
        self.types = self.typestore.types
        self.topics = {'input': input_topic, **output_topics(namespace)}
        self.counts = dict.fromkeys(self.topics, 0)
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=storage_plugin(storage))
        self._writer.open()
        self._connections = {
            'input': self._writer.add_connection(input_topic, input_msgtype,
                                                 typestore=self.typestore)}
        self._wanted = {'input': input_msgtype, MASK: 'sensor_msgs/msg/Image',
                        KEYPOINTS: 'sensor_msgs/msg/PointCloud2'}

    def _connection(self, key: str) -> Any:
        if key not in self._connections:
            self._connections[key] = self._writer.add_connection(
                self.topics[key], self._wanted[key], typestore=self.typestore)
        return self._connections[key]

    def write(self, frame: Frame, result: Any) -> None:
        """Write a frame's input message and its outputs, all at the input's receive time."""
        from sparse_perception.media.messages import keypoints_to_cloud, mask_to_image

        time = frame.log_time_ns
        if frame.message is not None:
            self._writer.write(self._connection('input'), time, frame.message.data)
            self.counts['input'] += 1
        header = ros_header(self.typestore, frame.stamp_ns, frame.frame_id)
        if result.segmentation is not None:
            msg = mask_to_image(result.segmentation, header,
                                msg_type=self.types['sensor_msgs/msg/Image'])
            self._put(MASK, msg, time)
        if result.pose is not None:
            msg = keypoints_to_cloud(result.pose, header,
                                     msg_type=self.types['sensor_msgs/msg/PointCloud2'],
                                     field_type=self.types['sensor_msgs/msg/PointField'])
            self._put(KEYPOINTS, msg, time)

    def _put(self, key: str, msg: Any, time: int) -> None:
        data = self.typestore.serialize_cdr(msg, self._wanted[key])
        self._writer.write(self._connection(key), time, data)
        self.counts[key] += 1

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def describe(self) -> dict[str, Any]:
        """Topics and message counts for the report."""
        return {'path': self.path.name,
                'topics': {self.topics[k]: {'msgtype': self._wanted[k], 'messages': n}
                           for k, n in self.counts.items() if n}}
