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
The package's output messages, built from pipeline results: one encoding for nodes and bags.

- masks: ``sensor_msgs/Image`` ``mono8`` of class ids at the input resolution (255 =
  unlabelled);
- keypoints: ``sensor_msgs/PointCloud2`` with one point per joint per person and the fields
  ``x``, ``y`` (float32, input pixels), ``score`` (float32), ``joint`` (uint16, index into the
  joint names) and ``person`` (uint16: the person's id, which stays while a tracking model
  follows them), little-endian, 16 bytes a point, ``height`` 1;
- change maps: ``mono8`` Image, 255 where the tile changed, at the input resolution.

vision_msgs has no keypoint type and is not installed everywhere; a PointCloud2 is standard,
typed and reads straight into numpy (:func:`cloud_to_keypoints`). Like :mod:`images`, this
module takes the message classes as arguments (rclpy's in a node, rosbags' in the replay) and
imports neither.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparse_perception.media.images import build_message, ImageConversionError, numpy_to_image
from sparse_perception.results import PoseResult, SegmentationResult

# sensor_msgs/PointField datatype constants.
_FLOAT32 = 7
_UINT16 = 4

# (name, offset, datatype) of each keypoint field; the numpy dtype below must agree.
KEYPOINT_FIELDS = (
    ('x', 0, _FLOAT32), ('y', 4, _FLOAT32), ('score', 8, _FLOAT32),
    ('joint', 12, _UINT16), ('person', 14, _UINT16),
)
KEYPOINT_DTYPE = np.dtype({
    'names': ['x', 'y', 'score', 'joint', 'person'],
    'formats': ['<f4', '<f4', '<f4', '<u2', '<u2'],
    'offsets': [0, 4, 8, 12, 14],
    'itemsize': 16,
})


class MessageFormatError(ValueError):
    """A message does not have the layout this package writes."""


def mask_to_image(segmentation: SegmentationResult, header: Any, *, msg_type: type) -> Any:
    """Class-id mask -> ``mono8`` Image carrying ``header``."""
    mask = segmentation.mask
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ImageConversionError(
            f'a class-id mask must be a 2-D uint8 array, got {mask.dtype} of shape {mask.shape}')
    return numpy_to_image(mask, 'mono8', header, msg_type=msg_type)


def change_map_to_image(tiles: np.ndarray, tile_size: int, image_shape: tuple[int, int],
                        header: Any, *, msg_type: type) -> Any:
    """
    Tile change map (Ht, Wt) -> ``mono8`` Image of ``image_shape`` (255 where changed).

    Tiles at the right and bottom edges may hang over the image; they are cut to it.
    """
    height, width = image_shape
    expected = (-(-height // tile_size), -(-width // tile_size))
    if tiles.shape != expected:
        raise ValueError(f'change map has {tiles.shape} tiles; a {height}x{width} image in '
                         f'{tile_size}-pixel tiles has {expected}')
    pixels = np.repeat(np.repeat(tiles.astype(np.uint8) * 255, tile_size, 0), tile_size, 1)
    return numpy_to_image(np.ascontiguousarray(pixels[:height, :width]), 'mono8', header,
                          msg_type=msg_type)


def keypoints_to_cloud(pose: PoseResult, header: Any, *, msg_type: type,
                       field_type: type) -> Any:
    """
    Pose result -> PointCloud2 with one point per (person, joint), in person-major order.

    Every joint is written with its score, low ones included: a reader filters by score.
    """
    keypoints = np.asarray(pose.keypoints, dtype=np.float32)
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f'keypoints must be (people, joints, 3), got {keypoints.shape}')
    people, joints, _ = keypoints.shape
    if joints != len(pose.joint_names):
        raise ValueError(f'{joints} joints per person but {len(pose.joint_names)} joint names')
    points = np.zeros(people * joints, KEYPOINT_DTYPE)
    flat = keypoints.reshape(-1, 3)
    points['x'], points['y'], points['score'] = flat[:, 0], flat[:, 1], flat[:, 2]
    points['joint'] = np.tile(np.arange(joints, dtype=np.uint16), people)
    # The person's id, the same while a tracking model follows them (uint16: it wraps).
    points['person'] = np.repeat((pose.person_ids % 65536).astype(np.uint16), joints)
    fields = [field_type(name=name, offset=offset, datatype=datatype, count=1)
              for name, offset, datatype in KEYPOINT_FIELDS]
    return build_message(msg_type, header, {
        'height': 1, 'width': len(points), 'fields': fields, 'is_bigendian': False,
        'point_step': KEYPOINT_DTYPE.itemsize, 'row_step': KEYPOINT_DTYPE.itemsize * len(points),
        'is_dense': True,
    }, points.view(np.uint8))


def cloud_to_keypoints(msg: Any) -> np.ndarray:
    """
    PointCloud2 written by :func:`keypoints_to_cloud` -> structured array of KEYPOINT_DTYPE.

    Raises :class:`MessageFormatError` naming the mismatch when the layout differs.
    """
    layout = [(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]
    expected = [(name, offset, datatype, 1) for name, offset, datatype in KEYPOINT_FIELDS]
    if layout != expected:
        raise MessageFormatError(f'keypoint cloud fields are {layout}; expected {expected}')
    if msg.is_bigendian:
        raise MessageFormatError('keypoint cloud is big-endian; this package writes '
                                 'little-endian clouds')
    count = int(msg.height) * int(msg.width)
    step = int(msg.point_step)
    if step != KEYPOINT_DTYPE.itemsize or int(msg.row_step) != step * int(msg.width):
        raise MessageFormatError(
            f'keypoint cloud point_step={step}, row_step={msg.row_step}; expected '
            f'{KEYPOINT_DTYPE.itemsize} and {KEYPOINT_DTYPE.itemsize} * width')
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != count * step:
        raise MessageFormatError(
            f'keypoint cloud holds {data.size} bytes; {count} points need {count * step}')
    return data.view(KEYPOINT_DTYPE).copy()
