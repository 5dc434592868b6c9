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

"""The bundled vtest40 clip as serialized messages, for tests that replay it."""

import functools

from rosbags.highlevel import AnyReader

from sparse_perception.shared_data import bundled_clip

TOPIC = '/camera/image_raw/compressed'


@functools.lru_cache(maxsize=1)
def records() -> tuple[tuple[int, int, bytes], ...]:
    """
    Return (sec, nanosec, CDR bytes) of every CompressedImage in the clip, in order.

    The bytes are the bag's serialized messages, which rclpy deserializes (or publishes)
    unchanged: a bag stores exactly what goes over the wire.
    """
    out = []
    with AnyReader([bundled_clip()]) as reader:
        connections = [c for c in reader.connections if c.topic == TOPIC]
        for connection, _, raw in reader.messages(connections=connections):
            header = reader.deserialize(raw, connection.msgtype).header
            out.append((header.stamp.sec, header.stamp.nanosec, bytes(raw)))
    return tuple(out)
