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
Images in real rosbag2 files: the shared vtest bag, the bundled clip, and bags written here.

Bags are read with rosbags' AnyReader and written with its Writer, in both storage formats
rosbag2 uses (mcap and sqlite3).
"""

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from sparse_perception.media.images import (
    compressed_to_numpy, image_to_numpy, numpy_to_compressed, numpy_to_image)
from sparse_perception.shared_data import bundled_clip
from support import require_shared

pytestmark = pytest.mark.bag

TYPESTORE = get_typestore(Stores.LATEST)
Image = TYPESTORE.types['sensor_msgs/msg/Image']
CompressedImage = TYPESTORE.types['sensor_msgs/msg/CompressedImage']
Header = TYPESTORE.types['std_msgs/msg/Header']
Time = TYPESTORE.types['builtin_interfaces/msg/Time']
TOPIC = '/camera/image_raw/compressed'
VTEST_SIZE = (576, 768)  # (height, width)


def _stamp(msg):
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def _read(bag):
    """Return ``[(topic, timestamp, raw bytes, message)]`` of a bag folder, in order."""
    with AnyReader([bag], default_typestore=TYPESTORE) as reader:
        return [(connection.topic, timestamp, bytes(raw),
                 reader.deserialize(raw, connection.msgtype))
                for connection, timestamp, raw in reader.messages()]


def test_decode_the_shared_vtest_bag():
    messages = _read(require_shared('data/bags/vtest150_mcap'))
    assert len(messages) == 150
    for index, (topic, timestamp, _, msg) in enumerate(messages[::10]):
        assert topic == TOPIC and msg.format == 'jpeg'
        assert _stamp(msg) == 1_700_000_000 * 10 ** 9 + index * 10 ** 9  # every 10th, 10 Hz
        bgr = compressed_to_numpy(msg)
        assert bgr.shape == VTEST_SIZE + (3,) and bgr.dtype == np.uint8
        np.testing.assert_array_equal(bgr, cv2.imdecode(msg.data, cv2.IMREAD_UNCHANGED))
        np.testing.assert_array_equal(compressed_to_numpy(msg, 'rgb8'), bgr[..., ::-1])
        assert 40 < bgr.mean() < 220  # real footage, not a blank frame


def test_bundled_clip():
    clip = bundled_clip()
    assert clip.name == 'vtest40' and (clip / 'NOTICE.md').is_file()
    assert sum(p.stat().st_size for p in clip.iterdir()) < 4 * 2 ** 20  # a few MB at most
    messages = _read(clip)
    assert len(messages) == 40
    stamps = []
    for topic, timestamp, _, msg in messages:
        assert topic == TOPIC
        frame = compressed_to_numpy(msg, 'rgb8')
        assert frame.shape == VTEST_SIZE + (3,)
        stamps.append(_stamp(msg))
    assert all(b > a for a, b in zip(stamps, stamps[1:])), 'stamps must increase'
    assert stamps[-1] - stamps[0] == 39 * 10 ** 8  # 40 frames at 10 Hz


def test_bundled_clip_is_the_start_of_the_shared_bag():
    source = _read(require_shared('data/bags/vtest150_mcap'))[:40]
    clip = _read(bundled_clip())
    # Same receive times and byte-identical serialized messages (JPEG bytes and stamps).
    assert [(t, raw) for _, t, raw, _ in clip] == [(t, raw) for _, t, raw, _ in source]


def test_missing_bundled_clip_is_named():
    with pytest.raises(FileNotFoundError, match=r"no bundled clip 'nope'.*available: \['vtest40'"):
        bundled_clip('nope')


def _header(index):
    return Header(stamp=Time(sec=1_700_000_000, nanosec=index * 33_000_000),
                  frame_id='camera_optical')


def _frames():
    """Return (topic, message, what decoding must give) for a spread of encodings and codecs."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:24, 0:32]
    smooth = np.stack([x * 8, y * 10, x + y], axis=-1).astype(np.uint8)
    depth = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
    depth_be = depth.astype('>u2')
    floats = rng.normal(2.0, 1.0, (24, 32)).astype(np.float32)
    floats[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    # A padded row layout (step > width * 3), as some camera drivers publish.
    padded_rows = np.zeros((24, 100), np.uint8)
    padded_rows[:, :96] = smooth[..., ::-1].reshape(24, 96)
    padded = Image(header=_header(5), height=24, width=32, encoding='bgr8', is_bigendian=0,
                   step=100, data=padded_rows.reshape(-1))
    jpeg = numpy_to_compressed(smooth, 'jpeg', _header(3), msg_type=CompressedImage,
                               encoding='rgb8')
    return [
        ('/image/rgb8', numpy_to_image(smooth, 'rgb8', _header(0), msg_type=Image), smooth),
        ('/image/mono16_be', numpy_to_image(depth_be, 'mono16', _header(1), msg_type=Image),
         depth),
        ('/image/32fc1', numpy_to_image(floats, '32FC1', _header(2), msg_type=Image), floats),
        ('/image/rgb8/compressed', jpeg, cv2.imdecode(jpeg.data, cv2.IMREAD_UNCHANGED)),
        ('/image/rgba8/compressed',
         numpy_to_compressed(rgba, 'png', _header(4), msg_type=CompressedImage,
                             encoding='rgba8'), rgba[..., [2, 1, 0, 3]]),
        ('/image/padded', padded, smooth[..., ::-1]),
    ]


@pytest.mark.parametrize('storage', [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_write_and_read_back_bit_exactly(tmp_path, storage):
    frames = _frames()
    bag = tmp_path / 'images'
    written = []
    with Writer(bag, version=8, storage_plugin=storage) as writer:
        for index, (topic, msg, _) in enumerate(frames):
            connection = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            raw = bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
            timestamp = 1_700_000_000 * 10 ** 9 + index
            writer.write(connection, timestamp, raw)
            written.append((topic, timestamp, raw))
    suffix = {StoragePlugin.MCAP: '.mcap', StoragePlugin.SQLITE3: '.db3'}[storage]
    assert list(bag.glob('*' + suffix)), f'no {suffix} file written'

    read = _read(bag)
    assert [(topic, t, raw) for topic, t, raw, _ in read] == written
    for (topic, msg, expected), (_, _, _, back) in zip(frames, read):
        assert _stamp(back) == _stamp(msg) and back.header.frame_id == msg.header.frame_id
        if topic.endswith('/compressed'):
            assert back.format == msg.format and back.data.tobytes() == msg.data.tobytes()
            np.testing.assert_array_equal(compressed_to_numpy(back), expected)
        else:
            assert (back.encoding, back.step, back.is_bigendian) == (
                msg.encoding, msg.step, msg.is_bigendian)
            decoded = image_to_numpy(back)
            assert decoded.dtype.isnative
            np.testing.assert_array_equal(decoded, expected)
