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

"""``sparse-perception make-bag``: videos and image folders into rosbag2, read back."""

import cv2
import numpy as np
import pytest
from replay_helpers import frame_picture, TYPESTORE
from rosbags.highlevel import AnyReader
from sparse_perception import cli
from sparse_perception.media.images import compressed_to_numpy, image_to_numpy
from sparse_perception.replay.sources import open_source
import yaml

pytestmark = pytest.mark.bag


def _read(bag):
    with AnyReader([bag], default_typestore=TYPESTORE) as reader:
        return [(c.topic, c.msgtype, t, reader.deserialize(raw, c.msgtype))
                for c, t, raw in reader.messages()]


@pytest.fixture
def video(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 12.5, (64, 48))
    for index in range(5):
        writer.write(np.ascontiguousarray(frame_picture(index)[..., ::-1]))
    writer.release()
    return path


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / 'frames'
    path.mkdir()
    for index in range(4):
        cv2.imwrite(str(path / f'{index:03d}.png'), frame_picture(index)[..., ::-1])
    return path


def test_video_to_mcap(video, tmp_path, capsys):
    out = tmp_path / 'bags' / 'clip_bag'
    assert cli.main(['make-bag', str(video), str(out)]) == 0
    assert 'wrote 5 frames (0 skipped' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['clip_bag.mcap', 'metadata.yaml']
    info = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['storage_identifier'] == 'mcap' and info['message_count'] == 5
    messages = _read(out)
    with open_source(video) as source:
        frames = list(source)
    for index, (topic, msgtype, timestamp, msg) in enumerate(messages):
        assert topic == '/camera/image_raw/compressed'
        assert msgtype == 'sensor_msgs/msg/CompressedImage'
        assert timestamp == index * 80_000_000  # 12.5 Hz from the video itself
        assert (msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec) == timestamp
        assert msg.header.frame_id == 'camera' and msg.format == 'rgb8; jpeg compressed bgr8'
        # The decoded video frame, JPEG-encoded by OpenCV with its defaults, byte for byte.
        expected = cv2.imencode('.jpg', np.ascontiguousarray(frames[index].image[..., ::-1]))[1]
        assert bytes(msg.data) == expected.tobytes()
    assert not list(out.parent.glob('.*partial*'))


def test_truncated_video_says_how_many_frames_it_lost(tmp_path, capsys):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 48))
    for index in range(20):
        writer.write(np.ascontiguousarray(frame_picture(index)[..., ::-1]))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(path), str(out)]) == 0
    printed = capsys.readouterr().out
    written = len(_read(out))
    assert 0 < written < 20
    assert f'wrote {written} frames ({20 - written} skipped as corrupt)' in printed
    assert f'the video ends after frame {written - 1} of the 20 its header states' in printed


def test_folder_to_sqlite3_raw(folder, tmp_path):
    out = tmp_path / 'raw_bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '25', '--storage', 'sqlite3',
                     '--format', 'raw', '--encoding', 'bgr8', '--frame-id', 'cam_optical',
                     '--start-time', '1700000000.5', '--topic', '/front/image_raw']) == 0
    assert (out / 'raw_bag.db3').exists()
    messages = _read(out)
    assert len(messages) == 4
    for index, (topic, msgtype, timestamp, msg) in enumerate(messages):
        assert (topic, msgtype) == ('/front/image_raw', 'sensor_msgs/msg/Image')
        assert timestamp == 1_700_000_000_500_000_000 + index * 40_000_000
        assert msg.encoding == 'bgr8' and msg.header.frame_id == 'cam_optical'
        np.testing.assert_array_equal(image_to_numpy(msg, 'rgb8'), frame_picture(index))


def test_png_and_frame_range(folder, tmp_path):
    out = tmp_path / 'png_bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10', '--format', 'png',
                     '--frames', '1:']) == 0
    messages = _read(out)
    assert [t for _, _, t, _ in messages] == [100_000_000, 200_000_000, 300_000_000]
    for index, (_, _, _, msg) in enumerate(messages, start=1):
        # PNG files asked for as PNG go in as they are.
        assert msg.format == 'png'
        assert bytes(msg.data) == (folder / f'{index:03d}.png').read_bytes()
        np.testing.assert_array_equal(compressed_to_numpy(msg, 'rgb8'), frame_picture(index))


def test_jpeg_files_byte_for_byte_unless_a_quality_is_given(tmp_path):
    folder = tmp_path / 'jpegs'
    folder.mkdir()
    for index in range(2):
        cv2.imwrite(str(folder / f'{index}.jpg'), frame_picture(index)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert cli.main(['make-bag', str(folder), str(tmp_path / 'same'), '--rate', '5']) == 0
    for index, (_, _, _, msg) in enumerate(_read(tmp_path / 'same')):
        assert msg.format == 'jpeg'
        assert bytes(msg.data) == (folder / f'{index}.jpg').read_bytes()
    assert cli.main(['make-bag', str(folder), str(tmp_path / 'again'), '--rate', '5',
                     '--quality', '90']) == 0
    for index, (_, _, _, msg) in enumerate(_read(tmp_path / 'again')):
        assert msg.format == 'rgb8; jpeg compressed bgr8'
        assert bytes(msg.data) != (folder / f'{index}.jpg').read_bytes()


def test_corrupt_images_are_skipped_and_listed(folder, tmp_path, capsys):
    (folder / '001.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10']) == 0
    printed = capsys.readouterr().out
    assert 'wrote 3 frames (1 skipped as corrupt)' in printed
    assert 'skipped frame 1: 001.png: ' in printed
    assert [t for _, _, t, _ in _read(out)] == [0, 200_000_000, 300_000_000]


@pytest.mark.parametrize('setup, args, message', [
    ('folder', ['--format', 'raw'], 'image folder, which has no frame rate: pass --rate'),
    ('exists', ['--rate', '10'], 'exists already; choose another name or pass --overwrite'),
    ('bag', [], 'is already a bag; make-bag reads videos and image folders'),
    ('corrupt', ['--rate', '10'], 'no frame could be read (4 corrupt)'),
    ('missing', [], 'no such file or folder'),
    ('folder', ['--rate', '10', '--quality', '300'], '--quality 300 is out of range for jpeg; '
                                                     'expected 1 to 100'),
    ('folder', ['--rate', '10', '--format', 'png', '--quality', '10'],
     '--quality 10 is out of range for png; expected 0 to 9'),
    ('folder', ['--rate', '10', '--format', 'raw', '--quality', '90'],
     'a quality applies to jpeg and png; raw Images are not compressed'),
    ('folder', ['--rate', '10', '--encoding', 'mono8'], 'an encoding applies to raw Images'),
    ('folder', ['--rate', '10', '--frame-id', ''], 'an empty frame_id names no TF frame'),
    ('folder', ['--rate', '10', '--frame-id', 'cam\udcff'],
     'frame_id cam\\udcff is not UTF-8 text'),
])
def test_bad_input(folder, tmp_path, capsys, setup, args, message):
    out = tmp_path / 'out_bag'
    source = folder
    if setup == 'exists':
        out.mkdir()
    elif setup == 'bag':
        assert cli.main(['make-bag', str(folder), str(tmp_path / 'made'), '--rate', '5']) == 0
        source = tmp_path / 'made'
    elif setup == 'corrupt':
        for path in folder.iterdir():
            path.write_bytes(b'\x89PNG\r\n\x1a\n')
    elif setup == 'missing':
        source = tmp_path / 'nothing'
    capsys.readouterr()
    assert cli.main(['make-bag', str(source), str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith('sparse-perception make-bag: error: ') and err.count('\n') == 1
    assert message in err
    assert not list(tmp_path.glob('.*partial*'))
    if setup != 'exists':
        assert not out.exists()


def test_overwrite(folder, tmp_path):
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10']) == 0
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '20', '--frames', ':2',
                     '--overwrite']) == 0
    assert [t for _, _, t, _ in _read(out)] == [0, 50_000_000]
