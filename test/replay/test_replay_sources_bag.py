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
Bag frame sources: rosbag2 (mcap, sqlite3) and ROS 1, good and bad.

Every bag here is a real file written with rosbags; the bad ones are damaged the way disks,
interrupted recordings and other tools damage them.
"""

import gc
from pathlib import Path
import re
import shutil

import numpy as np
import pytest
from replay_helpers import (
    COMPRESSED, compressed_message, frame_picture, IMAGE, image_message, PERIOD_NS,
    ROS1_TYPESTORE, START_NS, STRING, string_message, TYPESTORE, write_bag, write_ros1_bag)
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.sources import Frame, FrameRange, open_source, SkippedFrame
from sparse_perception.shared_data import bundled_clip
from support import require_shared
import yaml

pytestmark = pytest.mark.bag


def _items(path, **kwargs):
    with open_source(path, **kwargs) as source:
        return source, list(source)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
@pytest.mark.parametrize('msgtype', [IMAGE, COMPRESSED])
def test_rosbag2(tmp_path, storage, msgtype):
    build = image_message if msgtype == IMAGE else compressed_message
    messages = [build(i) for i in range(5)]
    bag = write_bag(tmp_path / 'bag', {'/camera/image': (msgtype, messages)}, storage)
    source, items = _items(bag, keep_messages=True)
    assert (source.kind, source.storage, source.topic, source.msgtype, source.length) == (
        'rosbag2', storage, '/camera/image', msgtype, 5)  # the only image topic, detected
    assert all(isinstance(i, Frame) for i in items)
    for index, item in enumerate(items):
        np.testing.assert_array_equal(item.image, frame_picture(index))  # raw and PNG: exact
        assert item.stamp_ns == START_NS + index * PERIOD_NS == item.log_time_ns
        assert item.frame_id == 'camera'
        # The input message travels to the output bag byte for byte.
        assert item.message.data == bytes(TYPESTORE.serialize_cdr(messages[index], msgtype))


def test_a_rosbag2_folder_named_like_a_ros1_file_is_read_as_rosbag2(tmp_path):
    messages = [image_message(i) for i in range(3)]
    bag = write_bag(tmp_path / 'bag', {'/camera/image': (IMAGE, messages)})
    named = bag.rename(tmp_path / 'session.bag')
    with open_source(named) as source:
        # Opened through a link in a temporary folder, which goes with the source.
        link = Path(source._unlink.peek()[2][0])
        assert link.is_dir() and (link / 'rosbag2').resolve() == named.resolve()
        items = list(source)
    assert (source.kind, source.storage, source.length) == ('rosbag2', 'mcap', 3)
    assert [i.stamp_ns for i in items] == [START_NS + i * PERIOD_NS for i in range(3)]
    assert not link.exists() and named.is_dir()
    dropped = open_source(named)  # never closed: collected, it takes its link along
    link = Path(dropped._unlink.peek()[2][0])
    del dropped
    gc.collect()
    assert not link.exists() and named.is_dir()


def test_rosbag2_encodings(tmp_path):
    messages = [image_message(0, encoding='bgr8'), image_message(1, encoding='mono8')]
    bag = write_bag(tmp_path / 'bag', {'/camera/image': (IMAGE, messages)})
    _, (bgr, mono) = _items(bag)
    np.testing.assert_array_equal(bgr.image, frame_picture(0))
    np.testing.assert_array_equal(mono.image, np.repeat(frame_picture(1)[..., 1:2], 3, -1))


def test_ros1_bag(tmp_path):
    messages = [image_message(i, ROS1_TYPESTORE) for i in range(3)]
    bag = write_ros1_bag(tmp_path / 'old.bag', '/usb_cam/image_raw', messages)
    source, items = _items(bag, keep_messages=True)
    assert source.kind == 'rosbag1' and source.topic == '/usb_cam/image_raw'
    for index, item in enumerate(items):
        np.testing.assert_array_equal(item.image, frame_picture(index))
        assert item.stamp_ns == START_NS + index * PERIOD_NS
        # For the output bag, the ROS 1 message becomes a ROS 2 (CDR) one: no seq, same data.
        msg = TYPESTORE.deserialize_cdr(item.message.data, IMAGE)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(item.stamp_ns, 10 ** 9)
        assert msg.encoding == 'rgb8' and bytes(msg.data) == frame_picture(index).tobytes()


def test_frame_range(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(i) for i in range(8)])})
    source, items = _items(bag, frames=FrameRange.parse('2:7:2'))
    assert [i.index for i in items] == [2, 4, 6] and source.expected_frames == 3
    np.testing.assert_array_equal(items[1].image, frame_picture(4))
    _, items = _items(bag, frames=FrameRange.parse('6:'))
    assert [i.index for i in items] == [6, 7]


@pytest.fixture
def busy_bag(tmp_path):
    return write_bag(tmp_path / 'busy', {
        '/front/image': (IMAGE, [image_message(0)]),
        '/rear/image/compressed': (COMPRESSED, [compressed_message(0)]),
        '/chatter': (STRING, [string_message('hello')]),
    })


def test_topic_choice(busy_bag):
    with pytest.raises(ReplayError, match='several image topics: /front/image, '
                                          '/rear/image/compressed; choose one with --topic'):
        open_source(busy_bag)
    with pytest.raises(ReplayError, match="topic '/side' is not in .*; image topics: "
                                          '/front/image, /rear/image/compressed'):
        open_source(busy_bag, topic='/side')
    with pytest.raises(ReplayError, match="topic '/chatter' carries std_msgs/msg/String, not "
                                          'sensor_msgs Image or CompressedImage'):
        open_source(busy_bag, topic='/chatter')
    source, items = _items(busy_bag, topic='/rear/image/compressed')
    assert source.msgtype == COMPRESSED and len(items) == 1


def test_bag_without_images(tmp_path):
    bag = write_bag(tmp_path / 'talk', {'/chatter': (STRING, [string_message('x')])})
    with pytest.raises(ReplayError, match=r'has no sensor_msgs Image or CompressedImage topic '
                                          r'\(topics: /chatter \(std_msgs/msg/String\)\)'):
        open_source(bag)


def test_rate_is_for_videos(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(0)])})
    with pytest.raises(ReplayError, match='--rate applies to videos and image folders'):
        open_source(bag, rate=5.0)


@pytest.mark.parametrize('encoding, expected', [
    ('yuv422', "image encoding 'yuv422' cannot be replayed: unknown image encoding"),
    ('32FC1', "image encoding '32FC1' cannot be replayed: cannot convert 32FC1 to rgb8"),
    ('bayer_rggb8', "image encoding 'bayer_rggb8' cannot be replayed: .*no demosaicing"),
])
def test_encodings_the_package_does_not_read(tmp_path, encoding, expected):
    # One such frame among good ones is skipped and counted; it does not end the replay.
    messages = [image_message(i) for i in range(3)]
    msg = messages[1]
    msg.encoding = encoding  # same bytes, an encoding the replay cannot turn into RGB
    msg.step, msg.data = 64 * 4, np.zeros(48 * 64 * 4, np.uint8)
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, messages)})
    _, items = _items(bag)
    assert [type(i).__name__ for i in items] == ['Frame', 'SkippedFrame', 'Frame']
    assert re.search(expected, items[1].reason)


def test_compressed_depth_is_not_read(tmp_path):
    msg = compressed_message(0)
    msg.format = '16UC1; compressedDepth png'
    bag = write_bag(tmp_path / 'bag', {'/depth/compressedDepth': (COMPRESSED, [msg])})
    _, items = _items(bag)
    assert isinstance(items[0], SkippedFrame)
    assert re.search('compressed image format cannot be replayed: .*'
                     'compressed_depth_image_transport', items[0].reason)


def test_corrupt_frames_are_skipped(tmp_path):
    messages = [compressed_message(i, fmt='jpeg') for i in range(5)]
    messages[1].data = messages[1].data[:len(messages[1].data) // 2]  # truncated JPEG
    messages[3].data = np.frombuffer(b'\x00' * 100, np.uint8)  # not an image at all
    raw = [bytes(TYPESTORE.serialize_cdr(m, COMPRESSED)) for m in messages]
    raw[4] = raw[4][:20]  # a message cut short: it does not even deserialize
    bag = write_bag(tmp_path / 'bag', {'/c': (COMPRESSED, raw)})
    _, items = _items(bag)
    assert [type(i).__name__ for i in items] == ['Frame', 'SkippedFrame', 'Frame',
                                                 'SkippedFrame', 'SkippedFrame']
    assert 'truncated' in items[1].reason and items[1].stamp_ns == START_NS + PERIOD_NS
    assert 'corrupt or not JPEG/PNG' in items[3].reason
    assert items[4].reason.startswith('cannot deserialize sensor_msgs/msg/CompressedImage')
    assert items[4].stamp_ns is None


def test_raw_image_with_wrong_length_is_skipped(tmp_path):
    messages = [image_message(i) for i in range(3)]
    messages[2].data = messages[2].data[:-64]
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, messages)})
    _, items = _items(bag)
    assert isinstance(items[2], SkippedFrame) and 'Image data is truncated' in items[2].reason


def test_raw_image_over_the_size_limit_is_skipped(tmp_path, monkeypatch):
    from sparse_perception.media import images
    messages = [image_message(0), image_message(1, shape=(48, 80)), image_message(2)]
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, messages)})
    monkeypatch.setattr(images, 'default_max_pixels', lambda: 64 * 48)  # the first size fits
    _, items = _items(bag)
    assert [isinstance(item, SkippedFrame) for item in items] == [False, True, False]
    assert 'Image is 80x48' in items[1].reason
    assert 'refused before conversion' in items[1].reason


def _metadata(bag):
    return yaml.safe_load((bag / 'metadata.yaml').read_text())


def test_unknown_storage_format(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(0)])})
    document = _metadata(bag)
    document['rosbag2_bagfile_information']['storage_identifier'] = 'hdf5'
    (bag / 'metadata.yaml').write_text(yaml.safe_dump(document))
    with pytest.raises(ReplayError, match="uses the storage format 'hdf5', which cannot be "
                                          'read; supported: mcap, sqlite3'):
        open_source(bag)


@pytest.mark.parametrize('storage, suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_truncated_bag(tmp_path, storage, suffix):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(i) for i in range(4)])},
                    storage)
    data = bag / f'bag{suffix}'
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    with pytest.raises(ReplayError, match=r'cannot open the bag \(truncated or corrupt\?\)'):
        open_source(bag)


def test_bag_shorter_than_its_index(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(i) for i in range(4)])})
    document = _metadata(bag)
    info = document['rosbag2_bagfile_information']
    info['topics_with_message_count'][0]['message_count'] = 6
    (bag / 'metadata.yaml').write_text(yaml.safe_dump(document))
    # Here the index was edited, not the storage cut: the message says either may be wrong.
    with pytest.raises(ReplayError, match=r'its index lists 6 messages on /c but only 4 could '
                                          r'be read: .*truncated or corrupt, or the index '
                                          r'\(metadata.yaml\) does not describe this storage'):
        _items(bag)


def test_bag_longer_than_its_index_is_read_whole_and_said(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(i) for i in range(4)])})
    document = _metadata(bag)
    document['rosbag2_bagfile_information']['topics_with_message_count'][0][
        'message_count'] = 2
    (bag / 'metadata.yaml').write_text(yaml.safe_dump(document))
    source, items = _items(bag)
    assert len(items) == 4 and source.length == 4
    assert source.describe()['length'] == 4 and source.describe()['index_length'] == 2
    assert source.index_note.endswith('lists 2 messages on /c, but the storage holds more '
                                      '(4 read); the index does not describe this storage')


def test_damaged_chunk_in_a_real_bag(tmp_path):
    # Damage in an mcap chunk header makes the reader stop early without an error of its own;
    # the replay notices from the index and refuses to report on part of the bag.
    bag = tmp_path / 'vtest40'
    shutil.copytree(bundled_clip(), bag)
    storage = bag / 'vtest40.mcap'
    data = bytearray(storage.read_bytes())
    data[100:120] = b'\x07' * 20
    storage.write_bytes(bytes(data))
    with pytest.raises(ReplayError, match='its index lists 40 messages on '
                                          r'/camera/image_raw/compressed but only \d+ could'):
        _items(bag)


def test_reader_failure_midway_is_one_error(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(i) for i in range(4)])})
    source = open_source(bag)
    original = source._reader.messages

    def failing(**kwargs):
        for count, item in enumerate(original(**kwargs)):
            if count == 2:
                raise OSError('Input/output error')
            yield item

    source._reader.messages = failing
    with source, pytest.raises(ReplayError, match='the bag is corrupt: reading message 3 of /c '
                                                  'failed: Input/output error'):
        list(source)


def test_shared_vtest_bag():
    source, items = _items(require_shared('data/bags/vtest150_mcap'),
                           frames=FrameRange.parse('0:3'))
    assert source.length == 150 and source.topic == '/camera/image_raw/compressed'
    assert [i.image.shape for i in items] == [(576, 768, 3)] * 3


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_damaged_ros1_bag(tmp_path, damage):
    bag = write_ros1_bag(tmp_path / 'old.bag', '/cam',
                         [image_message(i, ROS1_TYPESTORE) for i in range(4)])
    data = bag.read_bytes()
    bag.write_bytes(data[:len(data) // 2] if damage == 'truncate' else b'#ROSBAG V2.0\n' +
                    b'\x13' * 300)
    with pytest.raises(ReplayError, match=r'old.bag: cannot open the bag \(truncated or '
                                          r'corrupt\?\): .*Header could not be read'):
        _items(bag)


def test_garbage_sqlite3_bag(tmp_path):
    bag = write_bag(tmp_path / 'bag', {'/c': (IMAGE, [image_message(0)])}, 'sqlite3')
    (bag / 'bag.db3').write_bytes(b'this is not a database' * 40)
    with pytest.raises(ReplayError, match=r'cannot open the bag \(truncated or corrupt\?\): '
                                          'Cannot open database .*file is not a database'):
        open_source(bag)
