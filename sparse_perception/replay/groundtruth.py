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
Ground-truth readers: foreground masks (DAVIS layout), COCO-17 keypoint JSON, JHMDB ``.mat``.

Frames are matched to annotations by file name where the input is an image folder (frame
``00012.jpg`` <-> mask ``00012.png`` or the COCO image ``00012.jpg``), and by position
otherwise (the i-th frame of a bag or video <-> the i-th annotation in natural file order, the
i-th column of a JHMDB ``pos_img``).

Keypoints come out in COCO-17 order (``models.decoders.COCO17_JOINTS``) as
:class:`~sparse_perception.replay.metrics.PersonTruth`, whatever their source:

- COCO JSON: each image's non-crowd annotations; a joint is scored when ``v > 0``; the PCK
  reference is the longer side of the annotation's ``bbox`` (of the visible joints' box when
  there is none); the PCKh reference is the distance from the shoulders' midpoint to the nose.
- JHMDB ``joint_positions.mat``: ``pos_img`` is 2 x 15 x frames, 1-based pixels, in the order
  :data:`JHMDB_JOINTS`; the 12 joints shared with COCO-17 are scored; the PCK reference is the
  longer side of the box around all 15 joints (JHMDB's usual PCK@0.2 of the person box); the
  PCKh reference is the neck-to-face distance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sparse_perception.models.decoders import COCO17_JOINTS
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.metrics import PersonTruth
from sparse_perception.replay.sources import natural_key

# JHMDB's joint order (R/L are the person's right and left), named in COCO terms where COCO-17
# has the joint; neck, belly and face have no COCO-17 counterpart.
JHMDB_JOINTS = ('neck', 'belly', 'face', 'right_shoulder', 'left_shoulder', 'right_hip',
                'left_hip', 'right_elbow', 'left_elbow', 'right_knee', 'left_knee',
                'right_wrist', 'left_wrist', 'right_ankle', 'left_ankle')
# The 12 joints JHMDB shares with COCO-17: the scored ones.
JHMDB_SHARED = tuple(name for name in JHMDB_JOINTS if name in COCO17_JOINTS)
_MASK_SUFFIXES = ('.png',)


class MaskTruth:
    """A folder of per-frame foreground masks (PNG; any non-zero value is foreground)."""

    kind = 'masks'

    def __init__(self, folder: Path):
        self.path = folder
        self.files = sorted((p for p in folder.iterdir()
                             if p.is_file() and p.suffix.lower() in _MASK_SUFFIXES),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise ReplayError(f'{folder} holds no PNG masks; expected a DAVIS-style folder '
                              '(Annotations/480p/<sequence>/00000.png, ...)')
        self._by_stem = {p.stem: p for p in self.files}
        # DAVIS names a mask by its frame's number in the sequence (00000.png, ...): a
        # recording's frame i takes mask i, also where only some frames have one.
        self._by_number: dict[int, Path] | None = None
        if all(p.stem.isascii() and p.stem.isdecimal() for p in self.files):
            self._by_number = {}
            for path in self.files:
                other = self._by_number.setdefault(int(path.stem), path)
                if other is not path:
                    raise ReplayError(f'{folder}: {other.name} and {path.name} both name frame '
                                      f'{int(path.stem)}; keep one')
        self.matched_by = ''  # how the last frame found its mask (for the report)

    @property
    def numbered(self) -> bool:
        """Whether every mask is named by a frame number."""
        return self._by_number is not None

    @property
    def highest(self) -> int:
        """Return the highest frame number a mask is named by (-1: not numbered)."""
        return max(self._by_number) if self._by_number else -1

    def for_frame(self, index: int, name: str = '') -> np.ndarray | None:
        """
        Foreground (H, W) bool of a frame, None when it has no mask.

        A frame with a name (an image folder's) takes the mask of that name; a recording's
        frame ``index`` the mask numbered ``index``, or where the masks are not numbered the
        ``index``-th mask.
        """
        if name:
            path, self.matched_by = self._by_stem.get(Path(name).stem), 'file name'
        elif self._by_number is not None:
            path, self.matched_by = self._by_number.get(index), 'frame number'
        else:
            path = self.files[index] if index < len(self.files) else None
            self.matched_by = 'position'

        if path is None:
            return None
        from sparse_perception.media.images import compressed_to_numpy, ImageConversionError
        from sparse_perception.replay.sources import encoded_file
        try:
            # The same checks as camera frames: size limit from the header, CRCs, no cv2.error.
            mask = compressed_to_numpy(encoded_file(path))
        except (ImageConversionError, OSError) as exc:
            raise ReplayError(f'ground-truth mask {path} cannot be read: '
                              f'{" ".join(str(exc).split())}') from None
        return mask.any(axis=2) if mask.ndim == 3 else mask > 0

    def describe(self) -> dict:
        """Describe the annotations for the report."""
        return {'path': str(self.path), 'format': 'png masks', 'files': len(self.files),
                **({'matched_by': self.matched_by} if self.matched_by else {})}


class KeypointTruth:
    """Annotated people per frame in COCO-17 order, matched by frame name or position."""

    kind = 'keypoints'

    def __init__(self, path: Path, fmt: str, frames: list[list[PersonTruth]],
                 names: list[str] | None = None, scored: tuple[str, ...] = COCO17_JOINTS):
        self.path = path
        self.format = fmt
        self.frames = frames
        self.scored_joints = scored
        self._by_stem = None if names is None else {
            Path(n).stem: i for i, n in enumerate(names)}
        self.matched_by = ''  # how the last frame found its annotation (for the report)

    def for_frame(self, index: int, name: str = '') -> list[PersonTruth] | None:
        """Annotated people of a frame, None when the frame has no annotation."""
        if name and self._by_stem is not None:
            position, self.matched_by = self._by_stem.get(Path(name).stem), 'file name'
        else:
            position = index if index < len(self.frames) else None
            self.matched_by = 'position'

        return None if position is None else self.frames[position]

    @property
    def named(self) -> bool:
        """Whether frames are matched by file name (else by position)."""
        return self._by_stem is not None

    def describe(self) -> dict:
        """Describe the annotations for the report."""
        return {'path': str(self.path), 'format': self.format, 'frames': len(self.frames),
                'joints': list(self.scored_joints),
                **({'matched_by': self.matched_by} if self.matched_by else {})}


def _head_size(face: np.ndarray | None, neck: np.ndarray | None) -> float:
    """Length of the head segment (neck to face), NaN when either end is not annotated."""
    if face is None or neck is None:
        return math.nan
    return float(np.hypot(*(face - neck)))


def read_coco(path: Path) -> KeypointTruth:
    """Read COCO keypoint annotations (``images``, ``annotations``, ``categories``)."""
    try:
        document = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise ReplayError(f'{path} is not COCO keypoint JSON (images, annotations, '
                          f'categories): {_one_line(exc)}') from None
    try:
        return _read_coco(path, document)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        # A JSON document of another shape: a list where a mapping belongs, a missing id, ...
        what = f'missing key {exc}' if isinstance(exc, KeyError) else _one_line(exc)
        raise ReplayError(f'{path} is not COCO keypoint JSON of the expected shape (images: '
                          '[{id, file_name}], annotations: [{image_id, keypoints: [x, y, v] x '
                          f'17, bbox}}], categories): {what}') from None


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + '...'


def _read_coco(path: Path, document: dict) -> KeypointTruth:
    if not isinstance(document, dict):
        raise TypeError(f'the document is a {type(document).__name__}, not an object')
    images = document['images']
    annotations = document['annotations']
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise TypeError('images and annotations must be lists')
    names = COCO17_JOINTS
    for category in document.get('categories', []):
        if category.get('keypoints'):
            names = tuple(category['keypoints'])
            break
    unknown = [n for n in names if n not in COCO17_JOINTS]
    if unknown:
        raise ReplayError(f'{path}: keypoint names {unknown} are not COCO-17 joints '
                          f'({", ".join(COCO17_JOINTS)})')
    columns = [COCO17_JOINTS.index(n) for n in names]
    order = sorted(images, key=lambda image: natural_key(str(image.get('file_name', ''))))
    position = {image['id']: i for i, image in enumerate(order)}
    frames: list[list[PersonTruth]] = [[] for _ in order]
    for annotation in annotations:
        if annotation.get('iscrowd') or annotation.get('image_id') not in position:
            continue
        flat = np.asarray(annotation.get('keypoints', []), dtype=np.float64)
        if flat.size != 3 * len(names):
            raise ReplayError(f'{path}: annotation {annotation.get("id")} has {flat.size} '
                              f'keypoint values; expected 3 x {len(names)}')
        triples = flat.reshape(-1, 3)
        points = np.full((17, 2), np.nan)
        visible = np.zeros(17, bool)
        points[columns] = triples[:, :2]
        visible[columns] = triples[:, 2] > 0
        if not visible.any():
            continue
        bbox = annotation.get('bbox')
        if bbox and len(bbox) == 4 and max(bbox[2], bbox[3]) > 0:
            box_size = float(max(bbox[2], bbox[3]))
        else:
            box_size = float(np.ptp(points[visible], axis=0).max())
        nose, left, right = (COCO17_JOINTS.index(n)
                             for n in ('nose', 'left_shoulder', 'right_shoulder'))
        neck = (points[left] + points[right]) / 2 if visible[left] and visible[right] else None
        face = points[nose] if visible[nose] else None
        frames[position[annotation['image_id']]].append(
            PersonTruth(points, visible, box_size, _head_size(face, neck)))
    return KeypointTruth(path, 'coco', frames,
                         [str(image.get('file_name', '')) for image in order])


def read_jhmdb(path: Path) -> KeypointTruth:
    """Read a JHMDB ``joint_positions.mat`` (``pos_img``: 2 x 15 x frames, 1-based pixels)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ReplayError(
            'reading JHMDB .mat files needs scipy: `apt install python3-scipy` or '
            "`pip install 'sparse_perception[replay]'`") from None
    try:
        positions = np.asarray(loadmat(str(path))['pos_img'], dtype=np.float64)
    except Exception as exc:  # scipy raises many kinds for a file that is not a .mat
        raise ReplayError(f'{path} is not a JHMDB joint_positions.mat with pos_img: '
                          f'{_one_line(exc)}') from None
    if positions.ndim != 3 or positions.shape[:2] != (2, len(JHMDB_JOINTS)):
        raise ReplayError(f'{path}: pos_img has shape {positions.shape}; expected 2 x 15 x '
                          'frames')
    shared = [JHMDB_JOINTS.index(n) for n in JHMDB_SHARED]
    columns = [COCO17_JOINTS.index(n) for n in JHMDB_SHARED]
    neck, face = JHMDB_JOINTS.index('neck'), JHMDB_JOINTS.index('face')
    frames = []
    for frame in range(positions.shape[2]):
        joints = positions[:, :, frame].T - 1.0  # (15, 2), 0-based pixels
        points = np.full((17, 2), np.nan)
        visible = np.zeros(17, bool)
        points[columns] = joints[shared]
        visible[columns] = np.isfinite(joints[shared]).all(1)
        box_size = float(np.nanmax(np.ptp(joints, axis=0)))
        frames.append([PersonTruth(points, visible, box_size,
                                   _head_size(joints[face], joints[neck]))])
    return KeypointTruth(path, 'jhmdb', frames, None, JHMDB_SHARED)


def load_truth(path: str | Path) -> MaskTruth | KeypointTruth:
    """Open ground truth by its kind: a folder of PNG masks, COCO ``.json`` or JHMDB ``.mat``."""
    path = Path(path)
    if not path.exists():
        raise ReplayError(f'ground truth {path}: no such file or folder')
    if path.is_dir():
        return MaskTruth(path)
    suffix = path.suffix.lower()
    if suffix == '.json':
        return read_coco(path)
    if suffix == '.mat':
        return read_jhmdb(path)
    raise ReplayError(f'ground truth {path}: unknown kind {suffix!r}; expected a folder of PNG '
                      'masks (DAVIS layout), COCO keypoint .json or JHMDB joint_positions.mat')
