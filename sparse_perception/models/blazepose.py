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
BlazePose (MediaPipe): a person detector, then 33 landmarks on a rotated crop, tracked over frames.

The two stages follow MediaPipe's pose graphs (``pose_detection_cpu.pbtxt``,
``pose_landmark_by_roi_cpu.pbtxt`` and the ROI graphs beside them):

1. Detector (224x224, letterboxed, pixels in [-1, 1]): 2254 SSD anchors, each with a box and
   four keypoints (mid-hip centre, a point encoding the body's size and rotation, and the same
   pair for the upper body), decoded and merged with weighted non-maximum suppression.
2. The region of interest (ROI): a square centred on the mid-hip, rotated so that the body
   points up, of side ``2 * |scale point - centre| * 1.25``.
3. Landmark model (256x256 crop of the ROI, pixels in [0, 1]): 39 landmarks (33 body joints and
   6 auxiliary points, of which 33 and 34 are the ROI's centre and scale point), a pose
   presence score, and heatmaps that refine the landmark positions.

Tracking differs from MediaPipe on purpose. MediaPipe re-derives the ROI from every frame's
landmarks, so the crop moves a little every frame and the landmark model never sees the same
pixels twice. Here the ROI stays still while the person stays inside it: the ROI the
landmarks suggest keeps its centre, size and rotation within tolerances of the current one's
(:class:`TrackingSettings`; the landmark model needs the hips near the crop's centre, its
presence score collapses beyond about 0.15 of the side), and every confidently present body
landmark stays inside the crop. Only then does the crop of a static scene stay static, so that
the incremental engine can skip the landmark model's unchanged tiles. When the person leaves
those bounds the ROI moves to where the landmarks say; when the presence score drops, the
detector runs again on the next frame. On the 40-frame JHMDB goalkeeper clip the ROI moved 14
times with PCK@0.2 0.877, against 40 moves and 0.881 when re-centred every frame (measured
before the grid below).

Every ROI the tracking makes is snapped to whole pixels and degrees (``roi_grid``,
``roi_angle_step``): the next crop comes from this frame's outputs, and two pipelines whose
networks round differently (sparse and dense, torch and LiteRT) would otherwise crop apart by
a little more every time the crop moves.

Coordinates are continuous frame pixels (the centre of pixel ``i`` is ``i + 0.5``), x right and
y down; a rotation ``r`` maps the crop's axes onto the frame by ``[[cos r, -sin r], [sin r,
cos r]]`` (clockwise on screen for positive ``r``), and :class:`RoiTransform` maps points
both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import math
from pathlib import Path
from typing import Any

import numpy as np

from sparse_perception.models import decoders
from sparse_perception.models.decoders import BLAZEPOSE33_JOINTS
from sparse_perception.models.decoders import BLAZEPOSE33_SKELETON  # noqa: F401 (re-exported)
from sparse_perception.models.decoders import COCO17_FROM_BLAZEPOSE33, Keypoint
from sparse_perception.models.registry import LoadedModel
from sparse_perception.models.transforms import check_frame, ImageTransform, resize_image

VIEWS = ('blazepose33', 'coco17')

# Landmark-model outputs the head keeps (landmarks, pose presence, heatmaps); the segmentation
# mask and the world landmarks are left out of the imported graph.
LANDMARK_OUTPUTS = (0, 1, 3)
_NUM_LANDMARKS = 39  # 33 body landmarks + 6 auxiliary ones
_ROI_CENTRE, _ROI_SCALE = 33, 34  # auxiliary landmarks that place the next ROI
_DETECTOR_CENTRE, _DETECTOR_SCALE = 0, 1  # detection keypoints: mid-hip, full-body scale point


@dataclass(frozen=True)
class DetectorSettings:
    """How the person detector's outputs are decoded (MediaPipe pose_detection_cpu.pbtxt)."""

    input_size: int = 224
    # SSD anchors: one cell grid per stride; strides that repeat share a grid (fixed size).
    strides: tuple[int, ...] = (8, 16, 32, 32, 32)
    anchors_per_layer: int = 2  # aspect ratio 1 plus the interpolated scale
    min_score: float = 0.5  # detection confidence (sigmoid of the clipped logit)
    score_clip: float = 100.0
    nms_iou: float = 0.3  # weighted NMS merges detections overlapping more than this


@dataclass(frozen=True)
class TrackingSettings:
    """When the ROI stays still, moves, or is searched for again."""

    roi_scale: float = 1.25  # ROI side = 2 * |scale point - centre| * roi_scale (MediaPipe)
    presence_threshold: float = 0.5  # below it the person is lost and the detector runs again
    # The ROI stays while the ROI the landmarks suggest is this close to it: the landmark model
    # was trained on crops centred on the hips, and its presence score collapses when the hips
    # drift about 0.15 of the crop away from the centre.
    center_tolerance: float = 0.05  # centre distance, as a fraction of the ROI's side
    scale_tolerance: float = 1.15  # suggested/current side within [1/t, t]
    rotation_tolerance: float = math.radians(10.0)
    landmark_presence: float = 0.5  # landmarks at least this present must stay inside the crop
    margin: float = 0.02  # ... at least this fraction of the crop from its border
    # Two ROIs whose centres lie closer than this fraction of the smaller side (and whose
    # sides are within scale_tolerance squared) frame one person: the landmark model, trained
    # on hips near the crop's centre, follows whoever is there, so a second crop would follow
    # the same person (a new detection there spawns nobody; of two crops that meet, the
    # younger ends).
    same_person: float = 0.15
    heatmap_refine: bool = True  # refine landmarks from the heatmaps (MediaPipe does)
    heatmap_kernel: int = 7
    heatmap_min_confidence: float = 0.5
    # Every ROI the tracking makes is snapped to a grid: its centre and side to whole
    # multiples of roi_grid frame pixels, its rotation to multiples of roi_angle_step. The ROI
    # of the next frame comes from this frame's landmarks, so without it a difference of
    # 1e-4 px (two runtimes' rounding) grows frame by frame: on vtest a dense and an exact
    # incremental pipeline cropped 0.3 px apart 520 frames on, and the presence score on those
    # crops was 0.77 against 0.30. Snapped, two nearly equal ROIs are one ROI (unless a value
    # lies within their difference of a half step: for 1e-4 px, about one snap in 10^4), and
    # a shift under half a pixel or degree is nothing the landmark model needs. 0 turns
    # snapping off.
    roi_grid: float = 1.0
    roi_angle_step: float = math.radians(1.0)


@dataclass(frozen=True)
class Detection:
    """One detected person in frame pixels."""

    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) of the detector's (face) box
    keypoints: np.ndarray  # (4, 2) x, y: mid-hip, full-body scale point, shoulders, upper body

    def shifted(self, dx: float, dy: float) -> Detection:
        """Return this detection moved by ``(dx, dy)`` (from a window's pixels to the frame's)."""
        x0, y0, x1, y1 = self.box
        return Detection(self.score, (x0 + dx, y0 + dy, x1 + dx, y1 + dy),
                         np.asarray(self.keypoints, dtype=np.float64) + (dx, dy))


def detection_windows(image_size: tuple[int, int], count: int) -> list[tuple[int, ...]]:
    """
    Return ``count`` overlapping windows ``(x0, y0, x1, y1)`` along the frame's longer side.

    Each spans the shorter side whole and ``min(1, 1.2 / count)`` of the longer one (a fifth
    more than an even split, so neighbours overlap), spaced evenly from one end to the other;
    windows that would repeat (a frame shorter than ``count`` pixels) are given once. Fewer
    than two: none (the whole frame is the only view).
    """
    height, width = (int(v) for v in image_size)
    if count < 2:
        return []
    wide = width >= height
    long_side = width if wide else height
    length = min(long_side, int(math.ceil(long_side * 1.2 / count)))
    starts = sorted({round(k * (long_side - length) / (count - 1)) for k in range(count)})
    if wide:
        return [(start, 0, start + length, height) for start in starts]
    return [(0, start, width, start + length) for start in starts]


@dataclass(frozen=True)
class Roi:
    """A rotated square of the frame: what the landmark model sees."""

    center: tuple[float, float]  # (x, y) frame pixels
    size: float  # side in frame pixels
    rotation: float  # radians; the crop's up axis points along (sin r, -cos r) in the frame

    @classmethod
    def from_points(cls, center, scale_point, scale: float = 1.25) -> Roi:
        """
        Return MediaPipe's alignment-point ROI: around ``center``, side ``2 * distance * scale``.

        The rotation turns the crop so that ``scale_point`` lies straight above ``center``.
        """
        (cx, cy), (sx, sy) = (float(v) for v in center), (float(v) for v in scale_point)
        size = 2.0 * math.hypot(sx - cx, sy - cy) * scale
        rotation = _normalise_angle(math.pi / 2 - math.atan2(-(sy - cy), sx - cx))
        return cls((cx, cy), size, rotation)

    @classmethod
    def around_box(cls, box, scale: float = 1.25) -> Roi:
        """
        Return an upright ROI around a person's box ``(x0, y0, x1, y1)``.

        Its side is ``scale`` times the box's longer side, and it is centred on the box (a
        standing person's hips sit near the box's centre).
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        return cls(((x0 + x1) / 2.0, (y0 + y1) / 2.0), max(x1 - x0, y1 - y0) * scale, 0.0)

    @classmethod
    def whole_frame(cls, image_size: tuple[int, int]) -> Roi:
        """Return the square around the whole frame (the crop when nobody is tracked)."""
        height, width = image_size
        return cls((width / 2.0, height / 2.0), float(max(height, width)), 0.0)

    def scaled(self, factor: float) -> Roi:
        return replace(self, size=self.size * factor)

    def snapped(self, grid: float, angle_step: float) -> Roi:
        """
        Return this ROI snapped to a grid of ``grid`` frame pixels and ``angle_step`` radians.

        Its centre and side become whole multiples of ``grid``, its rotation of ``angle_step``
        (0 leaves that part as it is). The side stays at least one ``grid``: a ROI never snaps
        to nothing.
        """
        def snap(value: float, step: float) -> float:
            return round(value / step) * step if step > 0 else value

        (cx, cy), size = self.center, self.size
        if grid > 0:
            size = max(snap(size, grid), grid)
        return Roi((snap(cx, grid), snap(cy, grid)), size,
                   _normalise_angle(snap(self.rotation, angle_step)))

    def matrix(self) -> np.ndarray:
        """(2, 2) rotation taking crop offsets (x right, y down) to frame offsets."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([[c, -s], [s, c]])

    def to_frame(self, uv: np.ndarray) -> np.ndarray:
        """Map normalised crop coordinates ``(..., 2)`` (0..1 across the crop) to the frame."""
        uv = np.asarray(uv, dtype=np.float64)
        return (uv - 0.5) * self.size @ self.matrix().T + self.center

    def from_frame(self, xy: np.ndarray) -> np.ndarray:
        """Map frame coordinates ``(..., 2)`` to normalised crop coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - self.center) @ self.matrix() / self.size + 0.5

    def corners(self) -> np.ndarray:
        """Return the (4, 2) frame coordinates of the crop's corners, clockwise from top-left."""
        return self.to_frame(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))


@dataclass(frozen=True)
class RoiTransform:
    """How a frame was cropped for the landmark model; maps points both ways."""

    image_size: tuple[int, int]  # (H, W) of the camera frame
    input_size: tuple[int, int]  # (h, w) of the network input
    roi: Roi
    source: str  # 'detection', 'proposal', 'landmarks' (tracked) or 'frame' (nobody tracked)
    mode: str = 'roi'
    person: int = -1  # the id of the tracked person this crop follows (-1: nobody)

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Map frame coordinates ``(..., 2)`` as (x, y) to network input pixels."""
        height, width = self.input_size
        return self.roi.from_frame(xy) * (width, height)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Map network input pixels ``(..., 2)`` as (x, y) back to frame coordinates."""
        height, width = self.input_size
        return self.roi.to_frame(np.asarray(xy, dtype=np.float64) / (width, height))


def crop(image: np.ndarray, roi: Roi, size: tuple[int, int], *,
         border: str = 'replicate') -> np.ndarray:
    """
    Cut the rotated ``roi`` out of an ``(H, W, 3)`` uint8 frame as an ``size`` (h, w) uint8 crop.

    Bilinear sampling at each crop pixel's centre (no antialiasing, like MediaPipe's warp);
    outside the frame ``border`` is 'replicate' (the landmark model's input) or 'zero'.
    """
    import torch
    import torch.nn.functional as F

    check_frame(image)
    if border not in ('replicate', 'zero'):
        raise ValueError(f"border={border!r} is not one of 'replicate', 'zero'")
    height, width = image.shape[:2]
    out_h, out_w = (int(v) for v in size)
    # The samples' frame coordinates are an affine map of the crop's: their extremes lie at
    # the four corner samples.
    u = np.array([0.5 / out_w, 1.0 - 0.5 / out_w])
    v = np.array([0.5 / out_h, 1.0 - 0.5 / out_h])
    corners = roi.to_frame(np.stack(np.meshgrid(u, v), axis=-1))
    # Only the frame pixels the samples reach (and their neighbours) are converted: a crop of
    # an HD frame then costs what the crop costs. Where the region meets the frame's edge it
    # is the frame's edge, so replicating the region's border replicates the frame's.
    x0 = min(max(int(np.floor(corners[..., 0].min())) - 2, 0), width - 1)
    y0 = min(max(int(np.floor(corners[..., 1].min())) - 2, 0), height - 1)
    x1 = max(min(int(np.ceil(corners[..., 0].max())) + 3, width), x0 + 1)
    y1 = max(min(int(np.ceil(corners[..., 1].max())) + 3, height), y0 + 1)
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    # The sampling grid as one affine map, from the crop's normalised coordinates (pixel
    # centres, align_corners=False) to the region's: affine_grid builds it far faster than
    # mapping every sample to frame coordinates would.
    extent = np.array([[2.0 / (x1 - x0)], [2.0 / (y1 - y0)]])
    linear = roi.matrix() * (roi.size / 2.0) * extent
    offset = (np.asarray(roi.center) - (x0, y0)) * extent[:, 0] - 1.0
    theta = torch.from_numpy(np.concatenate([linear, offset[:, None]], axis=1)).float()
    grid = F.affine_grid(theta[None], [1, 3, out_h, out_w], align_corners=False)
    pixels = torch.from_numpy(region).permute(2, 0, 1)[None].float()
    sampled = F.grid_sample(pixels, grid, mode='bilinear', align_corners=False,
                            padding_mode='border' if border == 'replicate' else 'zeros')
    return sampled.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def ssd_anchor_centres(settings: DetectorSettings = DetectorSettings()) -> np.ndarray:
    """
    (N, 2) anchor centres (x, y) normalised to the detector input, in the model's output order.

    MediaPipe's SSD anchors with a fixed anchor size: strides that repeat share one grid with
    their anchors side by side, and only the centres matter.
    """
    centres = []
    layer = 0
    while layer < len(settings.strides):
        stride = settings.strides[layer]
        repeats = 0
        while layer < len(settings.strides) and settings.strides[layer] == stride:
            repeats += 1
            layer += 1
        cells = math.ceil(settings.input_size / stride)
        y, x = np.meshgrid(np.arange(cells), np.arange(cells), indexing='ij')
        grid = np.stack([(x + 0.5) / cells, (y + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, repeats * settings.anchors_per_layer, axis=1)
                       .reshape(-1, 2))
    return np.concatenate(centres)


def decode_detections(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                      settings: DetectorSettings = DetectorSettings()) -> list[tuple]:
    """
    Decode the detector's raw outputs into detections in detector-input pixels.

    ``regressors`` is (N, 12): box centre x, y, width, height, then four keypoints (x, y), all
    in input pixels relative to the anchor centre; ``logits`` (N,) the person scores. Returns
    ``[(score, box (4,) as x0, y0, x1, y1, keypoints (4, 2))]`` above ``min_score``, merged by
    weighted non-maximum suppression, best first.
    """
    regressors = np.asarray(regressors, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if regressors.size != len(anchors) * 12 or len(logits) != len(anchors):
        raise ValueError(f'expected ({len(anchors)}, 12) regressors and {len(anchors)} scores, '
                         f'got {regressors.shape} and {logits.shape}')
    regressors = regressors.reshape(len(anchors), 12)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -settings.score_clip, settings.score_clip)))
    keep = np.flatnonzero(scores >= settings.min_score)
    if keep.size == 0:
        return []
    size = float(settings.input_size)
    anchor_px = anchors[keep] * size
    raw = regressors[keep]
    centre = raw[:, 0:2] + anchor_px
    half = raw[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) + anchor_px[:, None, :]
    return weighted_nms(scores[keep], boxes, keypoints, settings.nms_iou)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float) -> list[tuple]:
    """
    Merge overlapping detections: MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection and every remaining one overlapping it by more than
    ``iou_threshold`` (itself included); their score-weighted mean box and keypoints, with the
    best score, make one detection; repeat with the rest.
    """
    order = list(np.argsort(-scores, kind='stable'))
    merged = []
    while order:
        best = order[0]
        overlap = _iou(boxes[best], boxes[order])
        group = [i for i, o in zip(order, overlap) if o > iou_threshold or i == best]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(axis=0) / weights.sum()
        points = (keypoints[group] * weights[:, :, None]).sum(axis=0) / weights.sum()
        merged.append((float(scores[best]), box, points))
        order = [i for i in order if i not in group]
    return merged


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def refine_from_heatmap(xy: np.ndarray, heatmap: np.ndarray, kernel: int = 7,
                        min_confidence: float = 0.5) -> np.ndarray:
    """
    Refine landmark positions with their heatmaps (MediaPipe's RefineLandmarksFromHeatmap).

    ``xy`` is (K, 2) normalised to the crop (0..1), ``heatmap`` (h, w, K) logits. Around each
    landmark's heatmap cell, the sigmoid confidences of a ``kernel`` x ``kernel`` window weight
    the cell positions ``(col / w, row / h)``; the weighted mean replaces the landmark where
    the window's highest confidence reaches ``min_confidence``. Cell positions are MediaPipe's
    (cell corners), which agree with the regressed landmarks: on 70 JHMDB and DAVIS crops the
    refined landmarks moved by (-0.3, -0.5) crop pixels on average, against (+1.7, +1.6) with
    cell centres.
    """
    heatmap = np.asarray(heatmap)  # each window is taken to float64 on its own
    height, width, count = heatmap.shape
    if len(xy) != count:
        raise ValueError(f'{len(xy)} landmarks but {count} heatmaps')
    out = np.array(xy, dtype=np.float64)
    offset = (kernel - 1) // 2
    for k in range(count):
        col, row = int(xy[k, 0] * width), int(xy[k, 1] * height)
        if not (0 <= col < width and 0 <= row < height) or xy[k, 0] < 0 or xy[k, 1] < 0:
            continue
        rows = slice(max(0, row - offset), min(height, row + offset + 1))
        cols = slice(max(0, col - offset), min(width, col + offset + 1))
        confidence = 1.0 / (1.0 + np.exp(-heatmap[rows, cols, k].astype(np.float64)))
        total = confidence.sum()
        if total <= 0 or confidence.max() < min_confidence:
            continue
        # Broadcast cell indices rather than an index grid per landmark: the same products.
        grid_y = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None]
        grid_x = np.arange(cols.start, cols.stop, dtype=np.float64)[None, :]
        out[k, 0] = (grid_x * confidence).sum() / total / width
        out[k, 1] = (grid_y * confidence).sum() / total / height
    return out


def coco17_view(person: list[Keypoint]) -> list[Keypoint]:
    """Return the COCO-17 joints (COCO order) of a BlazePose-33 person."""
    if len(person) != len(BLAZEPOSE33_JOINTS):
        raise ValueError(f'expected {len(BLAZEPOSE33_JOINTS)} BlazePose keypoints, got '
                         f'{len(person)}')
    return [person[i] for i in COCO17_FROM_BLAZEPOSE33]


@dataclass
class Track:
    """One followed person: an id that stays while the person is followed, and a still ROI."""

    person: int  # the id
    roi: Roi
    source: str  # 'detection', 'proposal' or 'landmarks': what placed the ROI


def same_person(a: Roi, b: Roi, settings: TrackingSettings = TrackingSettings()) -> bool:
    """Whether two ROIs frame one person (see ``TrackingSettings.same_person``)."""
    side = min(a.size, b.size)
    ratio = a.size / b.size if b.size > 0 else math.inf
    close = math.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1]) \
        < settings.same_person * side
    return close and settings.scale_tolerance ** -2 <= ratio <= settings.scale_tolerance ** 2


@dataclass
class BlazePose(LoadedModel):
    """
    BlazePose with the surface of :class:`LoadedModel`, so a pipeline runs it like any pose model.

    ``module`` is the landmark model (``trunk`` + ``tail``: what the incremental engine runs,
    on the 256x256 crop); ``detector`` the person detector, run densely when nobody is tracked.
    ``preprocess(frame)`` returns the crop as a tensor and the :class:`RoiTransform` it came
    from (detecting first when needed); ``decode(outputs, transform)`` returns the person in
    frame pixels and advances the tracking, so call it once per frame, in frame order.
    ``joints`` chooses the view: BlazePose-33, or COCO-17 (``coco17`` view).

    While nobody is tracked the crop is the whole frame (``transform.source == 'frame'``) and
    decode returns ``[]`` whatever the network says, so a pipeline may skip the network then.
    Feed the engine's change map from the crop, not the frame: the crop is what stays still.
    """

    detector: Any = None  # TFLiteNet of pose_detection.tflite
    detector_source: Path | None = None
    detector_settings: DetectorSettings = field(default_factory=DetectorSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    max_people: int = 1  # how many people are followed at once, each in a crop of its own
    # With room for more people after the whole frame's detections, the detector looks again in
    # this many overlapping windows along the frame's longer side (0 or 1: the whole frame
    # only): a window's letterboxed input shows its people larger, by up to the frame's long
    # side over its short side (the detector finds the most prominent person or two of what
    # it sees).
    detect_windows: int = 0
    window_detector: Any = None  # what runs on the windows (a dense pass; None: ``detector``)
    tracks: list[Track] = field(default_factory=list, init=False)  # oldest first
    counters: dict[str, int] = field(init=False, default_factory=lambda: {
        'frames': 0, 'detector_runs': 0, 'window_runs': 0, 'detections': 0, 'proposals': 0,
        'rejected_proposals': 0, 'roi_moves': 0, 'losses': 0, 'merges': 0})

    def __post_init__(self):
        self._anchors = ssd_anchor_centres(self.detector_settings)
        self._image_size: tuple[int, int] | None = None
        self._next_id = 0

    @property
    def view(self) -> str:
        return 'coco17' if len(self.joints) == len(decoders.COCO17_JOINTS) else 'blazepose33'

    @property
    def roi(self) -> Roi | None:
        """Return the ROI of the person followed longest (None: nobody is followed)."""
        return self.tracks[0].roi if self.tracks else None

    @property
    def roi_source(self) -> str:
        """Return what placed that ROI: 'detection', 'landmarks' ('frame': nobody)."""
        return self.tracks[0].source if self.tracks else 'frame'

    def reset(self) -> None:
        """Forget the tracked people (a new stream starts): the next frame runs the detector."""
        self.tracks, self._image_size = [], None

    def transform(self, image_size: tuple[int, int]) -> RoiTransform:
        """Return the crop the next frame of ``image_size`` gets if no detection is needed."""
        image_size = (int(image_size[0]), int(image_size[1]))
        if not self.tracks or self._image_size != image_size:
            return RoiTransform(image_size, self.input_size, Roi.whole_frame(image_size),
                                'frame')
        return self._crop_of(self.tracks[0], image_size)

    def _snapped(self, roi: Roi) -> Roi:
        """Snap a ROI the tracking made to its grid (``TrackingSettings.roi_grid``)."""
        return roi.snapped(self.tracking.roi_grid, self.tracking.roi_angle_step)

    def _crop_of(self, track: Track, image_size: tuple[int, int]) -> RoiTransform:
        return RoiTransform(image_size, self.input_size, track.roi, track.source,
                            person=track.person)

    def detect(self, image: np.ndarray, detector: Any = None) -> list[Detection]:
        """
        Run the person detector on a frame; detections in frame pixels, best first.

        ``detector`` runs instead of the model's own (its letterboxed input differs from the
        stream the model's own detector sees: a window).
        """
        import torch

        check_frame(image)
        size = self.detector_settings.input_size
        letterbox = ImageTransform.fit(image.shape[:2], (size, size), 'letterbox')
        pixels = resize_image(image, letterbox)
        tensor = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)[None].float()
        tensor = tensor * (2.0 / 255.0) - 1.0  # the detector's [-1, 1] input range
        with torch.no_grad():
            regressors, logits = (self.detector if detector is None else detector)(tensor)
        self.counters['detector_runs'] += 1
        found = decode_detections(regressors[0].cpu().numpy(), logits[0].cpu().numpy(),
                                  self._anchors, self.detector_settings)
        detections = []
        for score, box, keypoints in found:
            corners = letterbox.to_image(box.reshape(2, 2)).reshape(-1)
            detections.append(Detection(score, tuple(float(v) for v in corners),
                                        letterbox.to_image(keypoints)))
        return detections

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, RoiTransform]:
        """Crop the frame for the landmark model (uint8), detecting the person when needed."""
        transform = self.locate(image)
        return self.crop_input(image, transform), transform

    def crop_input(self, image: np.ndarray, transform: RoiTransform) -> np.ndarray:
        """Cut the landmark model's uint8 input out of the frame ``transform`` was made for."""
        return crop(image, transform.roi, self.input_size)

    def locate(self, image: np.ndarray, *, detect: bool = True) -> RoiTransform:
        """
        Return the crop of the next frame: the tracked ROI, or a new detection.

        While nobody is tracked the detector runs, unless ``detect`` is False (a caller that
        schedules detections); ``transform.source == 'frame'`` then means nobody is there,
        and the landmark model need not run. With ``max_people`` above 1 this is the crop of
        the person followed longest; :meth:`locate_people` returns every crop.
        """
        crops = self.locate_people(image, detect=detect)
        return crops[0] if crops else self.transform(image.shape[:2])

    def locate_people(self, image: np.ndarray, *, detect: bool = True,
                      proposals: Any = ()) -> list[RoiTransform]:
        """
        Return the crop of every followed person for the next frame, oldest first.

        While fewer than ``max_people`` are followed the detector runs, unless ``detect`` is
        False (a caller that schedules detections), and each detection that is nobody's
        already (:func:`same_person`) starts a new person, best first; with room left, it
        runs again on each of :func:`detection_windows` (``detect_windows``; on
        ``window_detector``), likewise. Then, with room left, each of ``proposals`` (boxes
        ``(x0, y0, x1, y1)`` in frame pixels where someone may be, most likely first: a
        segmentation mask's person regions, which find people too small for the detector)
        that lies in nobody's crop starts one, whether the detector ran or not; the landmark
        network's presence score on the next decode keeps or drops them.
        """
        check_frame(image)
        image_size = (int(image.shape[0]), int(image.shape[1]))
        if self._image_size != image_size:
            self.tracks, self._image_size = [], image_size
        if detect and len(self.tracks) < self.max_people:
            self._follow(self.detect(image))
            for x0, y0, x1, y1 in detection_windows(image_size, self.detect_windows):
                if len(self.tracks) >= self.max_people:
                    break
                window = np.ascontiguousarray(image[y0:y1, x0:x1])
                detector = self.detector if self.window_detector is None else \
                    self.window_detector
                self.counters['window_runs'] += 1
                self._follow([d.shifted(x0, y0) for d in self.detect(window, detector)])
        for box in proposals:
            if len(self.tracks) >= self.max_people:
                break
            roi = self._snapped(Roi.around_box(box, self.tracking.roi_scale))
            if any(_inside(roi.center, t.roi) or same_person(roi, t.roi, self.tracking)
                   for t in self.tracks):
                continue
            self.tracks.append(Track(self._next_id, roi, 'proposal'))
            self._next_id += 1
            self.counters['proposals'] += 1
        return [self._crop_of(track, image_size) for track in self.tracks]

    def _follow(self, detections: list[Detection]) -> None:
        """Start following each of ``detections`` (best first) that is nobody's already."""
        found = 0
        for detection in detections:
            if len(self.tracks) >= self.max_people:
                break
            roi = self._snapped(Roi.from_points(detection.keypoints[_DETECTOR_CENTRE],
                                                detection.keypoints[_DETECTOR_SCALE],
                                                self.tracking.roi_scale))
            if any(same_person(roi, t.roi, self.tracking) for t in self.tracks):
                continue
            self.tracks.append(Track(self._next_id, roi, 'detection'))
            self._next_id += 1
            found += 1
        self.counters['detections'] += found

    def decode(self, outputs, transform, *, min_score: float = 0.0,
               view: str | None = None) -> list[list[Keypoint]]:
        """
        Decode the landmark outputs for the frame ``transform`` describes; advance the tracking.

        ``outputs`` are the landmark model's (landmarks (1, 195), presence (1, 1), heatmaps
        (1, 64, 64, 39)). Returns ``[person]`` (33 or 17 :class:`Keypoint` in frame pixels,
        scored by the landmark's visibility) or ``[]`` when nobody is tracked, the presence
        score is below the threshold, or the mean keypoint score is below ``min_score``.
        """
        if not isinstance(transform, RoiTransform):
            raise ValueError(f'BlazePose decodes with the RoiTransform that preprocess returned, '
                             f'got {type(transform).__name__}')
        view = view or self.view
        if view not in VIEWS:
            raise ValueError(f'view={view!r} is not one of {", ".join(VIEWS)}')
        self.counters['frames'] += 1
        landmarks, presence, heatmap = _landmark_arrays(outputs)
        if transform.source == 'frame':
            return []  # nobody detected: the crop is only there to keep the stream uniform
        # The person this crop follows, if the crop is still theirs (the latest frame's).
        track = next((t for t in self.tracks
                      if t.person == transform.person and t.roi == transform.roi), None)
        if presence < self.tracking.presence_threshold:
            if track is not None:
                # A proposal nobody confirmed was never someone followed: not a loss.
                self.counters['rejected_proposals' if track.source == 'proposal'
                              else 'losses'] += 1
                self.tracks.remove(track)
            return []
        height, width = self.input_size
        uv = landmarks[:, :2] / (width, height)
        if self.tracking.heatmap_refine and heatmap is not None:
            uv = refine_from_heatmap(uv, heatmap, self.tracking.heatmap_kernel,
                                     self.tracking.heatmap_min_confidence)
        xy = transform.roi.to_frame(uv)
        visibility = _sigmoid(landmarks[:, 3])
        landmark_presence = _sigmoid(landmarks[:, 4])
        if track is not None:  # the decoded frame is the latest one: track
            self._track(track, uv, xy, landmark_presence)
        person = [Keypoint(float(x), float(y), float(s))
                  for (x, y), s in zip(xy[:len(BLAZEPOSE33_JOINTS)], visibility)]
        if view == 'coco17':
            person = coco17_view(person)
        if np.mean([k.score for k in person]) < min_score:
            return []
        return [person]

    def _track(self, track: Track, uv: np.ndarray, xy: np.ndarray,
               presence: np.ndarray) -> None:
        """Keep the ROI while the person stays inside it; otherwise move it to the landmarks."""
        settings = self.tracking
        suggested = self._snapped(Roi.from_points(xy[_ROI_CENTRE], xy[_ROI_SCALE],
                                                  settings.roi_scale))
        if keeps_roi(track.roi, suggested, uv[:len(BLAZEPOSE33_JOINTS)],
                     presence[:len(BLAZEPOSE33_JOINTS)], settings):
            return
        if any(same_person(suggested, other.roi, settings) for other in self.tracks
               if other.person < track.person):
            # It moved onto someone followed longer: one person, one crop.
            self.counters['merges'] += 1
            self.tracks.remove(track)
            return
        track.roi, track.source = suggested, 'landmarks'
        self.counters['roi_moves'] += 1

    def __call__(self, image: np.ndarray, **options):
        """Run both stages densely on one frame and decode it (tracking across calls)."""
        import torch

        tensor, transform = self.preprocess(image)
        with torch.no_grad():
            outputs = self.module(tensor)
        return self.decode(outputs, transform, **options)

    def describe(self) -> dict[str, Any]:
        summary = super().describe()
        summary['view'] = self.view
        summary['detector'] = {
            'source': str(self.detector_source),
            'input_size': [self.detector_settings.input_size] * 2,
            'anchors': int(len(self._anchors)),
            'tflite_ops': getattr(self.detector.info, 'tflite_op_counts', None),
        }
        summary['tracking'] = dict(vars(self.tracking))
        return summary


def _inside(point, roi: Roi, border: float = 0.2) -> bool:
    """Whether ``point`` (x, y) lies in the middle of ``roi``: a person followed there."""
    u, v = roi.from_frame(np.asarray(point, np.float64))
    return border <= u <= 1.0 - border and border <= v <= 1.0 - border


def keeps_roi(roi: Roi, suggested: Roi, uv: np.ndarray, presence: np.ndarray,
              settings: TrackingSettings = TrackingSettings()) -> bool:
    """
    Whether ``roi`` may stay where it is for the next frame.

    ``suggested`` is the ROI this frame's landmarks call for, ``uv`` the body landmarks in
    ``roi``'s normalised crop coordinates and ``presence`` their presence scores. The ROI
    stays while the suggested one is within the centre, size and rotation tolerances of it and
    every present landmark lies at least ``margin`` inside the crop.
    """
    offset = math.hypot(suggested.center[0] - roi.center[0], suggested.center[1] - roi.center[1])
    if offset > settings.center_tolerance * roi.size:
        return False
    ratio = suggested.size / roi.size
    if not 1.0 / settings.scale_tolerance <= ratio <= settings.scale_tolerance:
        return False
    if abs(_normalise_angle(suggested.rotation - roi.rotation)) > settings.rotation_tolerance:
        return False
    inside = uv[presence >= settings.landmark_presence]
    margin = settings.margin
    return not (inside.size and ((inside < margin).any() or (inside > 1.0 - margin).any()))


def _landmark_arrays(outputs) -> tuple[np.ndarray, float, np.ndarray | None]:
    """
    Return the (39, 5) raw landmarks, the presence score, and the (64, 64, 39) heatmaps.

    The landmarks are float64; the heatmaps (None when absent) keep the model's dtype.
    """
    if not isinstance(outputs, (tuple, list)) or len(outputs) < 2:
        raise ValueError('expected the landmark model outputs (landmarks, presence[, heatmaps]), '
                         f'got {type(outputs).__name__}')
    # The heatmaps keep their dtype: refine_from_heatmap reads a few windows of them.
    arrays = [np.asarray(o.detach().cpu() if hasattr(o, 'detach') else o,
                         dtype=np.float64 if k < 2 else None)
              for k, o in enumerate(outputs[:3])]
    landmarks = arrays[0].reshape(-1)
    if landmarks.size != _NUM_LANDMARKS * 5:
        raise ValueError(f'expected {_NUM_LANDMARKS * 5} landmark values, got {landmarks.size}')
    heatmap = arrays[2].reshape(arrays[2].shape[-3:]) if len(arrays) > 2 else None
    return landmarks.reshape(_NUM_LANDMARKS, 5), float(arrays[1].reshape(-1)[0]), heatmap


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _normalise_angle(angle: float) -> float:
    """Wrap an angle in radians into [-pi, pi)."""
    return angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi))
