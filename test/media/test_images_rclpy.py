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
sparse_perception.media.images on real rclpy message classes (the ros-test extra).

rclpy keeps ``data`` in an ``array.array('B')``, a buffer its owner may change, and serializes
through its C type support: both differ from rosbags, which test/media/test_images.py covers.
"""

import array
import time

import numpy as np
import pytest
from rosbags.typesys import get_typestore, Stores
from sparse_perception.media.images import (
    compressed_to_numpy, encoding_info, ENCODINGS, image_to_numpy, ImageConversionError,
    numpy_to_compressed, numpy_to_image)
from support import require_module

rclpy = require_module('rclpy')
serialization = require_module('rclpy.serialization')
sensor_msgs = require_module('sensor_msgs.msg')
std_msgs = require_module('std_msgs.msg')
builtin_interfaces = require_module('builtin_interfaces.msg')

pytestmark = pytest.mark.ros

Image = sensor_msgs.Image
CompressedImage = sensor_msgs.CompressedImage


def _header():
    return std_msgs.Header(stamp=builtin_interfaces.Time(sec=1700000000, nanosec=42),
                           frame_id='camera')


def _random_image(encoding, height=3, width=5, seed=0):
    info = encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype.kind == 'f':
        return rng.normal(0, 100, shape).astype(info.dtype)
    limits = np.iinfo(info.dtype)
    return rng.integers(limits.min, limits.max, shape, dtype=info.dtype, endpoint=True)


def _wire_round_trip(msg):
    return serialization.deserialize_message(serialization.serialize_message(msg), type(msg))


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_through_rclpy_serialization(encoding):
    pixels = _random_image(encoding, seed=len(encoding))
    msg = numpy_to_image(pixels, encoding, _header(), msg_type=Image)
    assert isinstance(msg, Image) and isinstance(msg.data, array.array)
    assert msg.encoding == encoding and msg.is_bigendian == 0
    assert msg.step == 5 * encoding_info(encoding).pixel_bytes
    received = _wire_round_trip(msg)
    assert received.header.frame_id == 'camera' and received.header.stamp.nanosec == 42
    back = image_to_numpy(received)
    assert back.dtype == pixels.dtype
    np.testing.assert_array_equal(back, pixels)


def test_padded_big_endian_message_built_by_hand():
    pixels = _random_image('mono16', 4, 3, seed=1)
    rows = pixels.astype('>u2').view(np.uint8).reshape(4, 6)
    padded = np.zeros((4, 8), np.uint8)
    padded[:, :6] = rows
    msg = Image(header=_header(), height=4, width=3, encoding='mono16', is_bigendian=1, step=8)
    msg.data = array.array('B', padded.tobytes())
    back = image_to_numpy(_wire_round_trip(msg), 'mono8')
    np.testing.assert_array_equal(back, (pixels.astype(np.uint32) + 128) // 257)


def test_rclpy_buffer_is_copied_unless_asked():
    pixels = _random_image('rgb8', 6, 4)
    msg = numpy_to_image(pixels, 'rgb8', _header(), msg_type=Image)
    message_bytes = np.frombuffer(msg.data, np.uint8)
    back = image_to_numpy(msg)
    assert back.flags.writeable and not np.shares_memory(back, message_bytes)
    shared = image_to_numpy(msg, copy=False)
    assert np.shares_memory(shared, message_bytes)
    msg.data[0] ^= 0xFF  # the owner changes its message ...
    assert shared[0, 0, 0] == pixels[0, 0, 0] ^ 0xFF  # ... the shared view sees it,
    assert back[0, 0, 0] == pixels[0, 0, 0]  # the default copy does not
    del shared, message_bytes


def test_message_data_stays_resizable_after_a_default_conversion():
    msg = numpy_to_image(_random_image('mono8'), 'mono8', _header(), msg_type=Image)
    image_to_numpy(msg)
    msg.data.extend(b'\x00')  # BufferError if a view of it were still exported


def test_writing_does_not_alias_the_array():
    pixels = _random_image('bgr8', 5, 5)
    msg = numpy_to_image(pixels, 'bgr8', _header(), msg_type=Image, copy=False)
    pixels[...] = 0
    assert any(msg.data)  # array.array holds its own copy whatever copy= says


def test_wire_format_interoperates_with_rosbags():
    typestore = get_typestore(Stores.LATEST)
    bag_image = typestore.types['sensor_msgs/msg/Image']
    bag_header = typestore.types['std_msgs/msg/Header'](
        stamp=typestore.types['builtin_interfaces/msg/Time'](sec=1700000000, nanosec=42),
        frame_id='camera')
    pixels = _random_image('rgba16', 3, 7, seed=5)
    ours = serialization.serialize_message(
        numpy_to_image(pixels, 'rgba16', _header(), msg_type=Image))
    theirs = typestore.serialize_cdr(
        numpy_to_image(pixels, 'rgba16', bag_header, msg_type=bag_image), bag_image.__msgtype__)
    # Same CDR layout; alignment padding is not compared (rclpy leaves it uninitialized).
    assert len(ours) == len(theirs)
    assert bytes(ours)[-pixels.nbytes:] == bytes(theirs)[-pixels.nbytes:] == pixels.tobytes()
    # Each side decodes the other's bytes: a bag written by rosbags reads through rclpy's
    # deserializer, and what an rclpy node publishes reads through rosbags (a recorded bag).
    np.testing.assert_array_equal(
        image_to_numpy(serialization.deserialize_message(bytes(theirs), Image)), pixels)
    from_node = typestore.deserialize_cdr(bytes(ours), bag_image.__msgtype__)
    assert (from_node.header.frame_id, from_node.header.stamp.nanosec) == ('camera', 42)
    np.testing.assert_array_equal(image_to_numpy(from_node), pixels)


@pytest.mark.parametrize('fmt, encoding', [('jpeg', 'passthrough'), ('png', 'passthrough'),
                                           ('jpeg', 'rgb8'), ('png', 'rgba8'),
                                           ('png', 'mono16')])
def test_compressed_round_trip(fmt, encoding):
    channels = {'passthrough': 3, 'rgb8': 3, 'rgba8': 4, 'mono16': 1}[encoding]
    y, x = np.mgrid[0:32, 0:40]
    base = np.stack([x * 6, y * 7, x + y, 255 - x], axis=-1)[..., :channels]
    pixels = (base * 257 if encoding == 'mono16' else base).astype(
        np.uint16 if encoding == 'mono16' else np.uint8).squeeze()
    msg = numpy_to_compressed(pixels, fmt, _header(), msg_type=CompressedImage,
                              encoding=encoding)
    assert isinstance(msg.data, array.array) and msg.header.frame_id == 'camera'
    received = _wire_round_trip(msg)
    assert received.format == msg.format
    back = compressed_to_numpy(received, encoding if encoding != 'passthrough' else 'bgr8')
    assert back.shape == pixels.shape and back.dtype == pixels.dtype
    if fmt == 'png':
        np.testing.assert_array_equal(back, pixels)
    else:
        assert np.abs(back.astype(int) - pixels).mean() < 2


def test_bad_rclpy_messages_are_named():
    msg = Image(header=_header(), height=2, width=3, encoding='rgb8', step=9)
    msg.data = array.array('B', bytes(17))
    with pytest.raises(ImageConversionError, match=r'truncated: 17 bytes, but step \* height'):
        image_to_numpy(msg)
    msg.encoding = 'rgb10'
    with pytest.raises(ImageConversionError, match=r"unknown image encoding 'rgb10'"):
        image_to_numpy(msg)
    corrupt = CompressedImage(header=_header(), format='jpeg')
    corrupt.data = array.array('B', b'\xff\xd8\xff' + bytes(50))
    with pytest.raises(ImageConversionError, match=r'truncated or corrupt'):
        compressed_to_numpy(corrupt)


def test_publish_and_subscribe_in_process():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('images_test', context=context)
        received = []
        node.create_subscription(Image, 'images_test/image', received.append, 10)
        publisher = node.create_publisher(Image, 'images_test/image', 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        pixels = _random_image('bgr8', 48, 64, seed=9)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline:
            publisher.publish(numpy_to_image(pixels, 'bgr8', _header(), msg_type=Image))
            executor.spin_once(timeout_sec=0.1)
        assert received, 'no Image arrived within 20 s'
        np.testing.assert_array_equal(image_to_numpy(received[0], 'rgb8'), pixels[..., ::-1])
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
