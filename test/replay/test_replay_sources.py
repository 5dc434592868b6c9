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

"""Frame sources without bags: image folders and video files (bags: test_replay_sources_bag.py)."""

import re

import cv2
import numpy as np
import pytest
from rosbags.typesys import get_typestore, Stores

from sparse_perception.media.images import compressed_to_numpy
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.sources import (
    Frame, FrameRange, input_kind, open_source, SkippedFrame)
from support import require_shared

TYPESTORE = get_typestore(Stores.LATEST)


def _picture(index, shape=(24, 32)):
    """Return a smooth RGB picture, different per index."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return np.stack([x * 6 + index * 10, y * 8, np.full(shape, 40 + index * 20)],
                    -1).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / 'frames'
    path.mkdir()
    for index in (0, 1, 2, 10):  # natural order puts 10 last
        cv2.imwrite(str(path / f'f{index}.png'), _picture(index)[..., ::-1])
    cv2.imwrite(str(path / 'f11.jpg'), _picture(11)[..., ::-1])
    cv2.imwrite(str(path / 'f12.png'), (_picture(12)[..., 0].astype(np.uint16) * 257))  # grey16
    (path / 'README.txt').write_text('not a frame')
    return path


def _frames(source):
    with source:
        return list(source)


def test_image_folder(folder):
    items = _frames(open_source(folder, rate=4.0, start_ns=1_000_000_000, frame_id='cam'))
    assert all(isinstance(i, Frame) for i in items)
    assert [i.name for i in items] == ['f0.png', 'f1.png', 'f2.png', 'f10.png', 'f11.jpg',
                                       'f12.png']
    assert [i.index for i in items] == list(range(6))
    assert [i.stamp_ns for i in items] == [1_000_000_000 + k * 250_000_000 for k in range(6)]
    assert all(i.frame_id == 'cam' and i.log_time_ns == i.stamp_ns for i in items)
    for item, index in zip(items[:4], (0, 1, 2, 10)):
        np.testing.assert_array_equal(item.image, _picture(index))  # PNG: exact, RGB order
    # JPEG: what OpenCV decodes, in RGB order.
    np.testing.assert_array_equal(items[4].image, cv2.imread(str(folder / 'f11.jpg'))[..., ::-1])
    grey = items[5].image
    assert grey.shape == (24, 32, 3) and (grey[..., 0] == grey[..., 2]).all()
    np.testing.assert_array_equal(grey[..., 0], _picture(12)[..., 0])  # 16 -> 8 bit


def test_image_folder_range_and_messages(folder):
    source = open_source(folder, rate=10.0, frames=FrameRange.parse('1:5:2'), keep_messages=True)
    assert source.length == 6 and source.expected_frames == 2
    items = _frames(source)
    assert [i.index for i in items] == [1, 3]
    assert items[1].stamp_ns == 300_000_000  # stamps follow the index, not the position
    message = items[0].message
    assert message.msgtype == 'sensor_msgs/msg/CompressedImage'
    msg = TYPESTORE.deserialize_cdr(message.data, message.msgtype)
    assert msg.header.stamp.nanosec == 100_000_000 and msg.header.frame_id == 'camera'
    assert msg.format == 'rgb8; jpeg compressed bgr8'
    assert np.abs(compressed_to_numpy(msg, 'rgb8').astype(int) - _picture(1)).mean() < 2


def test_corrupt_images_are_skipped_and_named(folder):
    jpeg = (folder / 'f11.jpg').read_bytes()
    (folder / 'f11.jpg').write_bytes(jpeg[:len(jpeg) // 2])  # truncated JPEG
    (folder / 'f1.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 50)  # garbage PNG
    (folder / 'f3.bmp').write_bytes(b'BM nonsense')
    items = _frames(open_source(folder, rate=1.0))
    bad = [i for i in items if isinstance(i, SkippedFrame)]
    assert [b.index for b in bad] == [1, 3, 5]
    assert bad[0].reason.startswith('f1.png: ') and 'corrupt' in bad[0].reason
    assert bad[1].reason.startswith('f3.bmp: ')
    assert bad[2].reason.startswith('f11.jpg: ') and 'truncated' in bad[2].reason
    assert bad[0].stamp_ns == 1_000_000_000
    assert len(items) == 7


def test_image_folder_needs_a_rate(folder):
    with pytest.raises(ReplayError, match='image folder, which has no frame rate: pass --rate'):
        open_source(folder)
    with pytest.raises(ReplayError, match='frame rate -2.0 Hz is not a positive number'):
        open_source(folder, rate=-2.0)
    # Stamps overflowed (an error of Python's), or were all equal, at these.
    for rate in (1e-300, 1e300):
        with pytest.raises(ReplayError, match=re.escape(f'frame rate {rate!r} Hz is out of')):
            open_source(folder, rate=rate)


@pytest.fixture
def video(tmp_path):
    path = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 5.0, (64, 48))
    assert writer.isOpened()
    for index in range(8):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 200  # red in OpenCV's BGR order
        frame[:, index * 8:(index + 1) * 8, 1] = 255  # a green bar that moves right
        writer.write(frame)
    writer.release()
    return path


def _bar_column(image):
    return int(np.argmax(image[24, :, 1])) // 8


def test_video(video):
    source = open_source(video)
    assert source.kind == 'video' and source.rate_hz == 5.0 and source.length == 8
    items = _frames(source)
    assert len(items) == 8
    assert [i.stamp_ns for i in items] == [k * 200_000_000 for k in range(8)]
    first = items[0].image
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert first[40, 60, 0] > 150 and first[40, 60, 2] < 60  # RGB order: red first
    assert [_bar_column(i.image) for i in items] == list(range(8))


def test_video_rate_and_range(video):
    items = _frames(open_source(video, rate=20.0, frames=FrameRange.parse('1:7:2')))
    assert [i.index for i in items] == [1, 3, 5]
    assert [_bar_column(i.image) for i in items] == [1, 3, 5]
    assert [i.stamp_ns for i in items] == [50_000_000, 150_000_000, 250_000_000]


def test_unreadable_video(tmp_path):
    path = tmp_path / 'broken.avi'
    path.write_bytes(b'RIFF' + b'\0' * 200)
    with pytest.raises(ReplayError, match='OpenCV cannot open this video'):
        open_source(path)


def test_input_kinds(tmp_path, video):
    with pytest.raises(ReplayError, match=r'nope\.bag: no such file or folder; expected a '
                                          r'rosbag2 folder'):
        input_kind(tmp_path / 'nope.bag')
    notes = tmp_path / 'notes.txt'
    notes.write_text('x')
    with pytest.raises(ReplayError, match=r"unknown input kind '\.txt'"):
        input_kind(notes)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ReplayError, match='neither a rosbag2 folder'):
        input_kind(empty)
    (empty / 'x.mcap').write_bytes(b'')
    with pytest.raises(ReplayError, match='no metadata.yaml; recreate it with `ros2 bag '
                                          'reindex`'):
        input_kind(empty)
    with pytest.raises(ReplayError, match='has no metadata.yaml beside it'):
        input_kind(empty / 'x.mcap')
    (empty / 'metadata.yaml').write_text('{}')
    assert input_kind(empty / 'x.mcap') == ('rosbag2', empty)
    assert input_kind(empty) == ('rosbag2', empty)
    assert input_kind(video) == ('video', video)
    with pytest.raises(ReplayError, match='--topic applies to bags'):
        open_source(video, topic='/camera')


def _mjpeg_avi(path, frames=20):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (32, 24))
    for index in range(frames):
        writer.write(np.random.default_rng(index).integers(0, 255, (24, 32, 3), np.uint8))
    writer.release()
    return path


def test_truncated_video_counts_the_frames_it_lost(tmp_path):
    path = _mjpeg_avi(tmp_path / 'clip.avi')
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.7)])
    source = open_source(path)
    assert source.length == 20
    items = _frames(source)
    read = [i for i in items if isinstance(i, Frame)]
    lost = [i for i in items if isinstance(i, SkippedFrame)]
    assert 0 < len(read) < 20 and len(read) + len(lost) == 20
    assert [i.index for i in lost] == list(range(len(read), 20))
    assert f'ends after frame {len(read) - 1} of the 20 its header states' in lost[0].reason
    assert lost[0].stamp_ns == len(read) * 100_000_000
    # A frame range stops the count where it stops.
    assert len(_frames(open_source(path, frames=FrameRange.parse(':15')))) == 15


def test_a_video_with_empty_slots_keeps_its_timing_and_loses_nothing():
    # This JHMDB clip's AVI index holds 48 slots for 40 frames: 8 empty chunks repeat the
    # frame before, and the decoder skips them.
    path = require_shared('data/jhmdb/ReadJHMDBAnnotations/data/'
                          'Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2.avi')
    source = open_source(path)
    assert source.length == 48  # what its header says, before reading
    items = _frames(source)
    assert [type(i) for i in items] == [Frame] * 40 and source.length == 40
    capture = cv2.VideoCapture(str(path))
    shown = []  # each frame's presentation time, as the decoder gives it
    while capture.read()[0]:
        shown.append(round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1e6))
    assert [i.stamp_ns for i in items] == shown and shown[3] - shown[2] > 60_000_000  # a gap
    # A range of it: the same stamps.
    assert [i.stamp_ns for i in _frames(open_source(path, frames=FrameRange.parse('2:6')))] \
        == shown[2:6]


def test_whole_video_reports_nothing_lost(tmp_path):
    items = _frames(open_source(_mjpeg_avi(tmp_path / 'clip.avi', 6)))
    assert [type(i) for i in items] == [Frame] * 6


def _clip(path, fourcc, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    for index in range(frames):
        writer.write(np.ascontiguousarray(_picture(index, (48, 64))[..., ::-1]))
    writer.release()
    with open_source(path) as source:
        return [item.image for item in source]


def test_frames_the_video_decoder_reports_damaged_are_skipped(tmp_path, capfd):
    # FFmpeg conceals damage and returns a picture: its report is the only sign of it.
    path = tmp_path / 'clip.avi'
    intact = _clip(path, 'MJPG', 8)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b'\xff\xd8\xff']
    scan = data.index(b'\xff\xda', starts[3])  # frame 3's entropy-coded data
    data[scan + 40:scan + 64] = np.random.default_rng(0).bytes(24)
    path.write_bytes(bytes(data))
    items = _frames(open_source(path))
    assert [type(i) for i in items] == [Frame] * 3 + [SkippedFrame] + [Frame] * 4
    assert items[3].reason.startswith('the video decoder reports damaged data: ')
    for index in (0, 1, 2, 4, 5, 6, 7):  # MJPEG frames stand alone: the others are intact
        np.testing.assert_array_equal(items[index].image, intact[index])
    assert capfd.readouterr().err == ''  # FFmpeg's report is taken, not printed


def test_frames_predicted_from_a_damaged_frame_are_skipped_until_a_key_frame(tmp_path):
    path = tmp_path / 'clip.mp4'
    intact = _clip(path, 'mp4v', 30)  # MPEG-4 part 2: a key frame every 12 frames
    data = bytearray(path.read_bytes())
    at = data.index(b'mdat') + 1500  # inside one of the predicted frames after the first
    data[at:at + 16] = np.random.default_rng(1500).bytes(16)
    path.write_bytes(bytes(data))
    items = _frames(open_source(path))
    kinds = ''.join('F' if isinstance(i, Frame) else 'S' for i in items)
    damaged = kinds.index('S')
    assert 0 < damaged < 12 and kinds == 'F' * damaged + 'S' * (12 - damaged) + 'F' * 18, kinds
    assert items[damaged].reason.startswith('the video decoder reports damaged data: ')
    assert items[damaged + 1].reason == (f'predicted from the damaged frame {damaged} (no key '
                                         'frame since)')
    for index in [*range(damaged), *range(12, 30)]:  # before the damage, and from key frame 12
        np.testing.assert_array_equal(items[index].image, intact[index])


def test_opencv_errors_in_an_image_folder_skip_the_frame(folder, monkeypatch):
    from sparse_perception.media import images
    monkeypatch.setattr(images, 'default_max_pixels', lambda: 2 ** 40)  # OpenCV's limit first
    bmp = bytearray(cv2.imencode('.bmp', np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    bmp[18:26] = np.array([65000, 65000], '<i4').tobytes()  # above OpenCV's own pixel limit
    (folder / 'f3.bmp').write_bytes(bytes(bmp))
    jpeg = cv2.imencode('.jpg', _picture(5, (96, 128)))[1].tobytes()
    (folder / 'f4.jpg').write_bytes(jpeg[:len(jpeg) // 2] + b'\xff\xd9')  # decodes, damaged
    items = _frames(open_source(folder, rate=1.0))
    bad = {i.index: i.reason for i in items if isinstance(i, SkippedFrame)}
    assert sorted(bad) == [3, 4] and len(items) == 8
    assert bad[3].startswith('f3.bmp: OpenCV cannot decode the') and 'MAX_IMAGE_PIXELS' in bad[3]
    assert bad[4].startswith('f4.jpg: ') and 'Corrupt JPEG data' in bad[4]


def test_rosbag2_metadata_that_is_not_utf8_is_one_error(tmp_path):
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'metadata.yaml').write_bytes(b'rosbag2_bagfile_information:\n  x: "\xff\xfe"\n')
    with pytest.raises(ReplayError, match=r'metadata.yaml is not rosbag2 metadata: .*utf-8'):
        open_source(bag)


@pytest.mark.parametrize('suffix', ['.bmp', '.tiff', '.webp', '.ppm', '.pgm'])
def test_other_image_formats_are_read_with_a_size_check(tmp_path, suffix):
    from sparse_perception.replay.sources import _header_size, read_image
    picture = _picture(3, (30, 50))
    image = picture[..., 1] if suffix == '.pgm' else picture[..., ::-1]
    path = tmp_path / f'frame{suffix}'
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == '.webp'
                       else [])
    assert _header_size(path.read_bytes()) == (50, 30)
    decoded = read_image(path)
    assert decoded.shape == (30, 50, 3)


def test_bmp_claiming_a_huge_size_is_refused_before_decoding(folder):
    bmp = bytearray(cv2.imencode('.bmp', np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    bmp[18:26] = np.array([20000, -20000], '<i4').tobytes()  # 400 megapixels, top-down
    (folder / 'f3.bmp').write_bytes(bytes(bmp))
    items = _frames(open_source(folder, rate=1.0))
    bad = [i for i in items if isinstance(i, SkippedFrame)]
    assert len(bad) == 1 and 'f3.bmp: the image is 20000x20000' in bad[0].reason
    assert 'refused before decoding' in bad[0].reason


def test_video_of_frames_beyond_the_size_limit_is_refused(tmp_path, monkeypatch):
    from sparse_perception.media import images
    path = _mjpeg_avi(tmp_path / 'clip.avi', 2)
    monkeypatch.setattr(images, 'default_max_pixels', lambda: 32 * 24 - 1)
    with pytest.raises(ReplayError, match=r'frames of 32x24 .*more than the limit'):
        open_source(path)
