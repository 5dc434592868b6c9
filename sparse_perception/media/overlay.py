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
Pictures for people: a frame with its class mask, skeletons and change map drawn on it.

Used by the nodes' ``~/overlay`` topic and by the replay's annotated video and contact sheet.
Drawing needs OpenCV, imported on first use.
"""

from __future__ import annotations

import numpy as np

from sparse_perception.results import FrameResult, PoseResult, SegmentationResult

UNLABELLED = 255


def palette(classes: int = 256) -> np.ndarray:
    """
    Return distinct RGB colours per class id, (classes, 3) uint8; id 0 (background) is black.

    The PASCAL VOC colour map (bit-interleaved class id), so masks look as in the literature.
    """
    ids = np.arange(classes)
    colours = np.zeros((classes, 3), np.uint8)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (shift * 3 + channel)) & 1
            colours[:, channel] |= (bit << (7 - shift)).astype(np.uint8)
    return colours


_PALETTE = palette()


def draw_segmentation(image: np.ndarray, segmentation: SegmentationResult,
                      alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over ``image`` (H, W, 3) uint8 RGB where a class other than 0 is."""
    mask = segmentation.mask
    if mask.shape != image.shape[:2]:
        raise ValueError(f'mask {mask.shape} does not match image {image.shape[:2]}')
    # Whole-image arithmetic in uint16 is several times faster than boolean indexing.
    weight = round(alpha * 256)
    blended = ((_PALETTE[mask].astype(np.uint16) * weight
                + image.astype(np.uint16) * (256 - weight)) >> 8).astype(np.uint8)
    labelled = (mask != 0) & (mask != UNLABELLED)
    return np.where(labelled[..., None], blended, image)


def _min_score(min_score: float | None) -> float:
    """``min_score``, or the default of output.min_score (the one source of defaults)."""
    from sparse_perception.settings import NodeSettings, spec

    return spec('output.min_score', NodeSettings).default if min_score is None else min_score


def draw_pose(image: np.ndarray, pose: PoseResult, min_score: float | None = None
              ) -> np.ndarray:
    """Draw bones and joints scoring ``min_score`` (output.min_score) on a copy of ``image``."""
    import cv2

    min_score = _min_score(min_score)

    out = np.ascontiguousarray(image.copy())
    scale = max(1, round(max(image.shape[:2]) / 400))
    for person, keypoints in zip(pose.person_ids, np.asarray(pose.keypoints)):
        # Colour and label follow the person's id, which stays while they are followed.
        colour = tuple(int(c) for c in _PALETTE[(int(person) % 20) + 1])
        for a, b in pose.skeleton:
            if min(keypoints[a, 2], keypoints[b, 2]) >= min_score:
                cv2.line(out, _point(keypoints[a]), _point(keypoints[b]), colour, scale,
                         cv2.LINE_AA)
        shown = keypoints[keypoints[:, 2] >= min_score]
        for x, y, score in shown:
            cv2.circle(out, _point((x, y)), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
        if len(shown):  # the id above the highest joint shown
            top = shown[np.argmin(shown[:, 1])]
            _label(out, str(int(person)), _point((top[0], top[1] - 6 * scale)), colour, scale)
    return out


def _label(image: np.ndarray, text: str, at: tuple[int, int], colour: tuple, scale: int):
    """Write ``text`` centred on ``at`` in ``colour`` with a dark outline (readable anywhere)."""
    import cv2

    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale
    (width, height), _ = cv2.getTextSize(text, font, size, scale)
    origin = (at[0] - width // 2, at[1])
    cv2.putText(image, text, origin, font, size, (0, 0, 0), scale + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, font, size, colour, scale, cv2.LINE_AA)


def draw_change(image: np.ndarray, tiles: np.ndarray, tile_size: int) -> np.ndarray:
    """Tint the changed tiles of ``image`` red."""
    height, width = image.shape[:2]
    changed = np.repeat(np.repeat(tiles, tile_size, 0), tile_size, 1)[:height, :width]
    out = image.copy()
    out[changed, 0] = np.maximum(out[changed, 0], 200)
    return out


def draw_result(image: np.ndarray, result: FrameResult, show_change: bool = False,
                min_score: float | None = None) -> np.ndarray:
    """
    Draw everything a frame result holds on a copy of ``image`` (H, W, 3) uint8 RGB.

    Keypoints scoring at least ``min_score`` (output.min_score) are drawn.
    """
    out = image
    if show_change and result.stats.change_measured:  # no map: nothing to draw
        out = draw_change(out, result.change_tiles, result.tile_size)
    if result.segmentation is not None:
        out = draw_segmentation(out, result.segmentation)
    if result.pose is not None:
        out = draw_pose(out, result.pose, min_score)
    return out if out is not image else image.copy()


def _point(xy) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))
