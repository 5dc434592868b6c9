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
Decoders: network outputs -> class-id masks and keypoints on the camera frame (pure functions).

Masks are uint8 at the input image's resolution with :data:`UNLABELLED` (255) where no class
is decided; keypoints are ``(x, y, score)`` in image pixel coordinates (continuous: the centre
of pixel ``i`` is ``i + 0.5``). Both undo the resize/letterbox recorded in an
:class:`~sparse_perception.models.transforms.ImageTransform`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sparse_perception.models.transforms import ImageTransform, optional_cv2

UNLABELLED = 255

# PASCAL VOC 2012 segmentation classes, in the order of the models trained on it.
PASCAL_VOC_LABELS = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
    'sheep', 'sofa', 'train', 'tvmonitor',
)
PASCAL_VOC_PERSON = 15

# COCO-17 keypoints in COCO order, and the COCO skeleton as 0-based (joint, joint) pairs.
COCO17_JOINTS = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)
COCO17_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# The 33 BlazePose (MediaPipe pose landmark) joints in the model's order, MediaPipe's pose
# connections, and where each COCO-17 joint is among them (COCO-17 joint k is BlazePose joint
# COCO17_FROM_BLAZEPOSE33[k]).
BLAZEPOSE33_JOINTS = (
    'nose', 'left_eye_inner', 'left_eye', 'left_eye_outer', 'right_eye_inner', 'right_eye',
    'right_eye_outer', 'left_ear', 'right_ear', 'mouth_left', 'mouth_right', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_pinky',
    'right_pinky', 'left_index', 'right_index', 'left_thumb', 'right_thumb', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle', 'left_heel',
    'right_heel', 'left_foot_index', 'right_foot_index',
)
BLAZEPOSE33_SKELETON = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12),
    (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18),
    (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27),
    (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)
COCO17_FROM_BLAZEPOSE33 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

# Person vs background masks (selfie segmentation): class ids of a thresholded probability.
PERSON_LABELS = ('background', 'person')


class Keypoint(NamedTuple):
    """One joint in image pixel coordinates, with the network's confidence."""

    x: float
    y: float
    score: float


def class_mask(output, transform: ImageTransform, *, min_score: float | None = None,
               num_classes: int | None = None) -> np.ndarray:
    """
    Turn a segmentation output into a uint8 class-id mask of the camera frame's size.

    ``output`` is either a class-id map ``(h, w)`` or ``(1, h, w)`` of integers (an arg-max
    already taken in the model), or class scores ``(C, h, w)`` or ``(1, C, h, w)`` (logits or
    probabilities, NCHW) at the network input's resolution. Scores are resampled bilinearly to
    the frame before the arg-max; ids are sampled at each frame pixel's centre. With
    ``min_score``, pixels whose winning softmax probability is below it become
    :data:`UNLABELLED`; ids outside ``[0, num_classes)`` do too.
    """
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(output)
    top, left, bottom, right = transform.content_box
    image_h, image_w = transform.image_size
    if not tensor.is_floating_point():
        labels = _squeeze_to(tensor, 2, 'a class-id map (h, w)')
        _check_spatial(labels.shape, transform)
        mask = labels[top:bottom, left:right]
        if tuple(mask.shape) != (image_h, image_w):  # a fully convolutional map is the frame's
            mask = F.interpolate(mask.to(torch.float32)[None, None], size=(image_h, image_w),
                                 mode='nearest-exact')[0, 0]
        mask = mask.to(torch.int64)
        # One pass finds the common case, a map of valid ids only.
        lo, hi = (int(v) for v in torch.aminmax(mask)) if mask.numel() else (0, 0)
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bad = mask < 0
            if num_classes is not None:
                bad |= mask >= num_classes
            mask = torch.where(bad, torch.full_like(mask, UNLABELLED), mask)
            hi = int(mask.max())
        if hi > UNLABELLED:
            raise ValueError('class ids above 255 do not fit a uint8 mask')
        return mask.to(torch.uint8).cpu().numpy()
    scores = _squeeze_to(tensor, 3, 'class scores (C, h, w)')
    if scores.shape[0] > UNLABELLED:  # ids 0..C-1, and 255 stays the unlabelled pixels'
        raise ValueError(f'class scores of {scores.shape[0]} classes do not fit a uint8 mask '
                         f'(at most {UNLABELLED}: {UNLABELLED} marks unlabelled pixels)')
    _check_spatial(scores.shape[1:], transform)
    crop = scores[:, top:bottom, left:right].float()[None]
    resized = F.interpolate(crop, size=(image_h, image_w), mode='bilinear',
                            align_corners=False)[0]
    ids = resized.argmax(dim=0)
    if min_score is not None:
        probability = torch.softmax(resized, dim=0).amax(dim=0)
        ids = torch.where(probability < min_score, torch.full_like(ids, UNLABELLED), ids)
    return ids.to(torch.uint8).cpu().numpy()


def probability_mask(probability, transform: ImageTransform, *, threshold: float = 0.5,
                     class_id: int = 1) -> np.ndarray:
    """
    Threshold a per-pixel probability map (e.g. person vs background) into a class-id mask.

    ``probability`` is ``(h, w)``, ``(1, h, w)``, ``(h, w, 1)``, ``(1, h, w, 1)`` (NHWC) or
    ``(1, 1, h, w)`` (NCHW) in [0, 1] at the network input's resolution; it is resampled
    bilinearly to the frame, and pixels at or above ``threshold`` get ``class_id``, the rest 0.
    """
    import torch
    import torch.nn.functional as F

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f'threshold must be within [0, 1], got {threshold!r}')
    if not 0 <= class_id < UNLABELLED:
        raise ValueError(f'class_id must be within [0, 254], got {class_id!r}')
    tensor = torch.as_tensor(probability).float()
    if tensor.dim() == 4 and tensor.shape[0] == 1 and tensor.shape[-1] == 1 and \
            tensor.shape[1] != 1:
        tensor = tensor[..., 0]  # (1, h, w, 1): a TFLite NHWC map
    if tensor.dim() == 3 and tensor.shape[-1] == 1 and tensor.shape[0] != 1:
        tensor = tensor[..., 0]
    prob = _squeeze_to(tensor, 2, 'a probability map (h, w)')
    _check_spatial(prob.shape, transform)
    top, left, bottom, right = transform.content_box
    crop = prob[top:bottom, left:right]
    height, width = transform.image_size
    cv2 = optional_cv2()
    if cv2 is not None and crop.device.type == 'cpu':
        # OpenCV's bilinear resize samples at pixel centres as align_corners=False does, at
        # a fraction of the cost (a mask the size of the camera frame, every frame).
        resized = cv2.resize(np.ascontiguousarray(crop.numpy()), (width, height),
                             interpolation=cv2.INTER_LINEAR)
        return (resized >= threshold).astype(np.uint8) * np.uint8(class_id)
    resized = F.interpolate(crop[None, None], size=(height, width), mode='bilinear',
                            align_corners=False)
    return ((resized[0, 0] >= threshold).to(torch.uint8) * class_id).cpu().numpy()


def single_pose(keypoints, transform: ImageTransform, *,
                min_score: float = 0.0) -> list[list[Keypoint]]:
    """
    Decode a single-person pose output (MoveNet SinglePose) into image coordinates.

    ``keypoints`` is ``(1, 1, K, 3)`` or ``(K, 3)`` rows of (y, x, score) with y and x
    normalised to the network input (0..1). Returns ``[person]`` where ``person`` is a list of
    K :class:`Keypoint`, or ``[]`` when the mean score is below ``min_score``.
    """
    array = np.asarray(keypoints.detach().cpu() if hasattr(keypoints, 'detach')
                       else keypoints, dtype=np.float64)
    array = array.reshape(-1, array.shape[-1]) if array.ndim > 2 else array
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f'expected keypoints of shape (K, 3) as (y, x, score), got '
                         f'{np.shape(keypoints)}')
    if array[:, 2].mean() < min_score:
        return []
    net_h, net_w = transform.input_size
    xy = np.stack([array[:, 1] * net_w, array[:, 0] * net_h], axis=-1)
    image_xy = transform.to_image(xy)
    return [[Keypoint(float(x), float(y), float(s))
             for (x, y), s in zip(image_xy, array[:, 2])]]


def _squeeze_to(tensor, rank: int, what: str):
    while tensor.dim() > rank and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != rank:
        raise ValueError(f'expected {what}, got a tensor of shape {tuple(tensor.shape)}')
    return tensor


def _check_spatial(shape, transform: ImageTransform) -> None:
    if tuple(shape) != tuple(transform.input_size):
        raise ValueError(f'output is {shape[1]}x{shape[0]} but the network input was '
                         f'{transform.input_size[1]}x{transform.input_size[0]}; decode outputs '
                         'at the input resolution')
