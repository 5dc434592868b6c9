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

"""Output message encodings (mask, keypoints, change map) on rosbags message types."""

import numpy as np
import pytest
from rosbags.typesys import get_typestore, Stores

from sparse_perception.media.images import image_to_numpy, ImageConversionError
from sparse_perception.media.messages import (
    change_map_to_image, cloud_to_keypoints, KEYPOINT_DTYPE, keypoints_to_cloud, mask_to_image,
    MessageFormatError)
from sparse_perception.results import PoseResult, SegmentationResult

TYPESTORE = get_typestore(Stores.LATEST)
Image = TYPESTORE.types['sensor_msgs/msg/Image']
PointCloud2 = TYPESTORE.types['sensor_msgs/msg/PointCloud2']
PointField = TYPESTORE.types['sensor_msgs/msg/PointField']
Header = TYPESTORE.types['std_msgs/msg/Header']
Time = TYPESTORE.types['builtin_interfaces/msg/Time']
HEADER = Header(stamp=Time(sec=1700000000, nanosec=5), frame_id='camera')


def _through_cdr(msg, name):
    return TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(msg, name), name)


def _pose(people=2, joints=3, seed=0):
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0, 500, (people, joints, 3)).astype(np.float32)
    keypoints[..., 2] = rng.uniform(0, 1, (people, joints))
    return PoseResult(keypoints, tuple(f'j{i}' for i in range(joints)), ((0, 1), (1, 2)))


def test_keypoints_round_trip_through_cdr():
    pose = _pose()
    msg = _through_cdr(keypoints_to_cloud(pose, HEADER, msg_type=PointCloud2,
                                          field_type=PointField), 'sensor_msgs/msg/PointCloud2')
    assert msg.header.frame_id == 'camera' and msg.header.stamp.nanosec == 5
    assert (msg.height, msg.width, msg.point_step) == (1, 6, 16)
    points = cloud_to_keypoints(msg)
    assert points.dtype == KEYPOINT_DTYPE
    np.testing.assert_array_equal(points['person'], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(points['joint'], [0, 1, 2, 0, 1, 2])
    got = np.stack([points['x'], points['y'], points['score']], -1).reshape(2, 3, 3)
    np.testing.assert_array_equal(got, pose.keypoints)


def test_no_people_is_an_empty_cloud():
    pose = PoseResult(np.zeros((0, 17, 3), np.float32), tuple(str(i) for i in range(17)), ())
    msg = keypoints_to_cloud(pose, HEADER, msg_type=PointCloud2, field_type=PointField)
    assert msg.width == 0 and cloud_to_keypoints(msg).size == 0


def test_reading_rejects_other_layouts():
    msg = keypoints_to_cloud(_pose(), HEADER, msg_type=PointCloud2, field_type=PointField)
    msg.fields[3].datatype = 7
    with pytest.raises(MessageFormatError, match='fields'):
        cloud_to_keypoints(msg)
    msg = keypoints_to_cloud(_pose(), HEADER, msg_type=PointCloud2, field_type=PointField)
    msg.data = msg.data[:-1]
    with pytest.raises(MessageFormatError, match='bytes'):
        cloud_to_keypoints(msg)
    with pytest.raises(ValueError, match='joint names'):
        keypoints_to_cloud(PoseResult(np.zeros((1, 2, 3), np.float32), ('a',), ()), HEADER,
                           msg_type=PointCloud2, field_type=PointField)


def test_mask_image():
    mask = np.random.default_rng(1).integers(0, 21, (7, 9)).astype(np.uint8)
    mask[0, 0] = 255
    msg = _through_cdr(mask_to_image(SegmentationResult(mask, ('a',) * 21), HEADER,
                                     msg_type=Image), 'sensor_msgs/msg/Image')
    assert msg.encoding == 'mono8' and msg.header.frame_id == 'camera'
    np.testing.assert_array_equal(image_to_numpy(msg), mask)
    with pytest.raises(ImageConversionError, match='uint8'):
        mask_to_image(SegmentationResult(mask.astype(np.int32), ()), HEADER, msg_type=Image)


def test_change_map_image_cuts_edge_tiles():
    tiles = np.array([[True, False], [False, True]])
    msg = change_map_to_image(tiles, 4, (6, 7), HEADER, msg_type=Image)
    pixels = image_to_numpy(msg)
    assert pixels.shape == (6, 7)
    assert pixels[:4, :4].min() == 255 and pixels[:4, 4:].max() == 0
    assert pixels[4:, 4:].min() == 255 and pixels[4:, :4].max() == 0
    with pytest.raises(ValueError, match='tiles'):
        change_map_to_image(tiles, 4, (9, 7), HEADER, msg_type=Image)


def test_person_field_carries_the_tracked_ids():
    import dataclasses

    pose = dataclasses.replace(_pose(), ids=np.array([7, 65538]))  # the field is uint16
    points = cloud_to_keypoints(keypoints_to_cloud(pose, HEADER, msg_type=PointCloud2,
                                                   field_type=PointField))
    np.testing.assert_array_equal(points['person'], [7, 7, 7, 2, 2, 2])
