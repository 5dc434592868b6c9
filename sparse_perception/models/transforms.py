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
From a camera frame to a network input and back: resize or letterbox, kept as a transform.

Coordinates are continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``, so its centre
is ``i + 0.5``. The transform is an axis-aligned affine map ``net = image * scale + offset``
(per axis); :meth:`ImageTransform.to_input` and :meth:`ImageTransform.to_image` apply it both
ways, and decoders use it to put masks and keypoints back on the camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESIZE_MODES = ('resize', 'letterbox', 'none')


@dataclass(frozen=True)
class ImageTransform:
    """How a camera frame was placed in the network input: ``net = image * scale + offset``."""

    image_size: tuple[int, int]  # (H, W) of the camera frame
    input_size: tuple[int, int]  # (H, W) of the network input
    scale: tuple[float, float]  # (sy, sx)
    offset: tuple[int, int]  # (oy, ox): where the frame's top-left corner lands, in net pixels
    content_size: tuple[int, int]  # (H, W) of the resized frame inside the network input
    mode: str = 'resize'

    @classmethod
    def fit(cls, image_size: tuple[int, int], input_size: tuple[int, int] | None,
            mode: str = 'resize') -> ImageTransform:
        """
        Place a frame of ``image_size`` into a network input of ``input_size``.

        'resize' stretches it to fill the input; 'letterbox' keeps the aspect ratio and centres
        it with padding; 'none' (or ``input_size`` None: a fully convolutional network) feeds
        the frame as it is.
        """
        if mode not in RESIZE_MODES:
            raise ValueError(f'resize mode {mode!r} is not one of {", ".join(RESIZE_MODES)}')
        h, w = (int(v) for v in image_size)
        if h < 1 or w < 1:
            raise ValueError(f'image size must be positive, got {image_size!r}')
        if input_size is None or mode == 'none':
            return cls((h, w), (h, w), (1.0, 1.0), (0, 0), (h, w), 'none')
        net_h, net_w = (int(v) for v in input_size)
        if mode == 'resize':
            return cls((h, w), (net_h, net_w), (net_h / h, net_w / w), (0, 0), (net_h, net_w),
                       mode)
        fit = min(net_h / h, net_w / w)
        content_h = min(net_h, max(1, round(h * fit)))
        content_w = min(net_w, max(1, round(w * fit)))
        offset = ((net_h - content_h) // 2, (net_w - content_w) // 2)
        return cls((h, w), (net_h, net_w), (content_h / h, content_w / w), offset,
                   (content_h, content_w), mode)

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Map image coordinates ``(..., 2)`` as (x, y) to network input coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * (self.scale[1], self.scale[0]) + (self.offset[1], self.offset[0])

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Map network input coordinates ``(..., 2)`` as (x, y) back to image coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - (self.offset[1], self.offset[0])) / (self.scale[1], self.scale[0])

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the frame's pixels inside the network input."""
        top, left = self.offset
        return top, left, top + self.content_size[0], left + self.content_size[1]


def resize_image(image: np.ndarray, transform: ImageTransform, *,
                 pad_value: int = 0) -> np.ndarray:
    """
    Resize an ``(H, W, 3)`` uint8 frame into the network input as ``(h, w, 3)`` uint8.

    Area averaging when shrinking (OpenCV's INTER_AREA), bilinear when enlarging, in uint8 so
    that the torch model and a uint8 TFLite interpreter see the same pixels. Padding
    (letterbox) is ``pad_value``. Without OpenCV (an optional dependency) torch's antialiased
    bilinear resize stands in: the same picture to within a grey level or two, at about ten
    times the cost (7 ms instead of 0.5 ms for 768x576 to 256x144 on one core).
    """
    check_frame(image)
    if tuple(image.shape[:2]) != tuple(transform.image_size):
        raise ValueError(f'frame is {image.shape[1]}x{image.shape[0]}, but the transform was '
                         f'made for {transform.image_size[1]}x{transform.image_size[0]}')
    if transform.mode == 'none':
        return np.ascontiguousarray(image)
    content = transform.content_size
    resized = _resize(np.ascontiguousarray(image), content)
    if content == transform.input_size:
        return np.ascontiguousarray(resized)
    out = np.full((*transform.input_size, 3), pad_value, dtype=np.uint8)
    top, left, bottom, right = transform.content_box
    out[top:bottom, left:right] = resized
    return out


_CV2: list = []


def optional_cv2():
    """Return OpenCV when it can be imported (an optional dependency), else None; tried once."""
    if not _CV2:
        try:
            import cv2
        except ImportError:
            cv2 = None
        _CV2.append(cv2)
    return _CV2[0]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a contiguous (H, W, 3) uint8 frame to ``size`` (h, w) as uint8."""
    shrinking = size[0] < image.shape[0] or size[1] < image.shape[1]
    cv2 = optional_cv2()
    if cv2 is not None:
        return cv2.resize(image, (size[1], size[0]),
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    import torch
    import torch.nn.functional as F

    frame = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = F.interpolate(frame, size=size, mode='bilinear', align_corners=False,
                            antialias=shrinking)
    return resized.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def check_frame(image: np.ndarray) -> None:
    """Raise a clear error unless ``image`` is an (H, W, 3) uint8 RGB array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or \
            image.dtype != np.uint8:
        described = f'{image.dtype} array of shape {image.shape}' if isinstance(
            image, np.ndarray) else type(image).__name__
        raise ValueError(f'expected an (H, W, 3) uint8 RGB frame, got a {described}; convert '
                         'it first (sparse_perception.media.images does this for ROS images)')
