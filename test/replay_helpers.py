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
Helpers for the replay tests: small real bags (rosbag2 mcap/sqlite3, ROS 1) and their frames.

Messages are built with rosbags' typestores and the package's own image conversion, then
written with rosbags' writers, exactly as a recorder would store them.
"""

from pathlib import Path

import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from sparse_perception.media.images import numpy_to_compressed, numpy_to_image

TYPESTORE = get_typestore(Stores.LATEST)
ROS1_TYPESTORE = get_typestore(Stores.ROS1_NOETIC)
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
STRING = 'std_msgs/msg/String'
START_NS = 1_700_000_000 * 10 ** 9
PERIOD_NS = 100_000_000  # 10 Hz


def frame_picture(index, shape=(48, 64)):
    """
    Return an RGB test frame.

    A bright square moves 4 px right per frame over a fixed background whose lower half
    flickers by up to 18 grey levels (changes a change threshold can ignore).
    """
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    picture = np.stack([(x * 3) % 200, (y * 5) % 200, ((x + y) * 2) % 200], -1)
    picture[shape[0] // 2:] += (index % 4) * 6
    left = (index * 4) % (shape[1] - 12)
    picture[10:22, left:left + 12] = (250, 240, 30)
    return picture.astype(np.uint8)


def header(store, index, frame_id='camera'):
    """Return a header stamped at START_NS + index periods (with a seq in ROS 1)."""
    stamp = START_NS + index * PERIOD_NS
    fields = {'stamp': store.types['builtin_interfaces/msg/Time'](
        sec=stamp // 10 ** 9, nanosec=stamp % 10 ** 9), 'frame_id': frame_id}
    if any(name == 'seq' for name, _ in store.fielddefs['std_msgs/msg/Header'][1]):
        fields['seq'] = index
    return store.types['std_msgs/msg/Header'](**fields)


def image_message(index, store=TYPESTORE, encoding='rgb8', shape=(48, 64)):
    """Return a raw Image of frame ``index`` in ``encoding`` (rgb8, bgr8 or mono8)."""
    rgb = frame_picture(index, shape)
    pixels = {'rgb8': rgb, 'bgr8': rgb[..., ::-1], 'mono8': rgb[..., 1]}.get(encoding, rgb)
    return numpy_to_image(np.ascontiguousarray(pixels), encoding, header(store, index),
                          msg_type=store.types[IMAGE])


def compressed_message(index, store=TYPESTORE, fmt='png', shape=(48, 64)):
    """Return a CompressedImage of frame ``index`` (PNG by default: lossless, so exact)."""
    return numpy_to_compressed(frame_picture(index, shape), fmt, header(store, index),
                               msg_type=store.types[COMPRESSED], encoding='rgb8')


def write_bag(path, topics, storage='mcap'):
    """
    Write a rosbag2: ``topics`` maps topic -> (msgtype, [message, ...]) or [raw bytes, ...].

    Message i of every topic is logged at START_NS + i periods.
    """
    plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
    with Writer(Path(path), version=8, storage_plugin=plugin) as writer:
        for topic, (msgtype, messages) in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            for index, msg in enumerate(messages):
                data = msg if isinstance(msg, (bytes, bytearray)) else \
                    TYPESTORE.serialize_cdr(msg, msgtype)
                writer.write(connection, START_NS + index * PERIOD_NS, data)
    return Path(path)


def write_ros1_bag(path, topic, messages, msgtype=IMAGE):
    """Write a ROS 1 bag of ``messages`` (built with ROS1_TYPESTORE) on ``topic``."""
    with Writer1(Path(path)) as writer:
        connection = writer.add_connection(topic, msgtype, typestore=ROS1_TYPESTORE)
        for index, msg in enumerate(messages):
            writer.write(connection, START_NS + index * PERIOD_NS,
                         ROS1_TYPESTORE.serialize_ros1(msg, msgtype))
    return Path(path)


def string_message(text):
    """Return a std_msgs/String (for a topic that is not an image)."""
    return TYPESTORE.types[STRING](data=text)
