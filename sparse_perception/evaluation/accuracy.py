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
Accuracy under sparsity on real footage: what ``sparse-perception eval accuracy`` measures.

Four sections, each a key of the result:

- ``parity``: each registered model whose file is at hand against the TFLite interpreter on
  real frames (:mod:`sparse_perception.models.parity`): label agreement for segmentation,
  keypoint error in network-input pixels for pose.
- ``davis``: DeepLabV3-MobileNetV2 (PASCAL VOC, person = class 15) on the DAVIS 2016 sequences
  parkour and breakdance, dense and incremental: mean per-frame IoU of the person class
  against the DAVIS mask (DAVIS's J), and the share of mask pixels on which incremental and
  dense agree. The network is the fully convolutional variant (``*_fcn``), at the frames'
  own 854x480: a spatial gate (``sparsity.gate``) needs a network that runs the frame as it
  is, and the comparison holds the model fixed across gates.

Each scored section also gives ``macs_ratio`` (MACs executed / dense MACs, over the frames
after the first) and ``speedup`` (dense p50 / incremental p50 wall time, both measured in the
same run, in alternation).
- ``jhmdb``: MoveNet Lightning on the JHMDB clip, dense and incremental: PCK@0.2 on the 12
  joints JHMDB shares with COCO-17, the reference length being the longer side of the box
  around all 15 annotated joints (see :mod:`sparse_perception.replay.groundtruth`).
- ``settings``: the change and sparsity settings used, with the active fraction they produced.

An anchor (``--anchor MODEL``, the dense pipeline a user would otherwise run, e.g. the stock
513x513 DeepLab on LiteRT) runs dense on the same frames, in alternation with the other two:
each clip of its head then has an ``anchor`` entry with its score against the ground truth,
its p50 time and ``speedup`` (anchor p50 / incremental p50). Its network may differ from
the evaluated one (size, weights, runtime), so there is no agreement with it.

Frames are read with the replay's image-folder source and scored with the replay's metric
classes (:mod:`sparse_perception.replay.metrics`) and ground-truth readers, and frames are
matched to annotations as the replay does for a bag: frame i of the sequence with the mask
numbered i (DAVIS's names), with the i-th annotated frame of a joint_positions.mat.
A replay of a bag made from the same frames (``sparse-perception make-bag``) with ``--gt``
therefore reports the same ground-truth scores; ``test/replay/test_eval_replay.py`` checks it.

The data and the Coral models come from the shared folder (``SPARSE_PERCEPTION_SHARED``,
default ``../shared`` beside the repository).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sparse_perception import settings as settings_module
from sparse_perception.evaluation import loop
from sparse_perception.evaluation.stats import mean_or_none, summarize
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.metrics import (BinaryIou, KeypointAgreement, MaskAgreement, Pck,
                                              PCK_ALPHA, PCKH_ALPHA)
from sparse_perception.replay.report import json_safe
from sparse_perception.replay.sources import Frame, FrameRange, SkippedFrame
from sparse_perception.settings import HEADS, PerceptionSettings

SCHEMA = 'sparse_perception.eval.accuracy/1'
SEGMENTATION_MODEL = 'deeplabv3_mnv2_pascal_fcn'
POSE_MODEL = 'movenet_lightning'
GT_CLASS = 'person'  # class 15 of PASCAL VOC
# The clips' masks are of people: a segmentation model without that class cannot be scored.
PERSON_REMEDY = ("eval accuracy scores the 'person' class: use a segmentation model whose "
                 'class names include it (a registered one, or a checkpoint with labels)')
DAVIS_SEQUENCES = ('parkour', 'breakdance')
DAVIS_RATE_HZ = 24.0  # DAVIS 2016 frames are 24 per second
JHMDB_CLIP = 'Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2'
JHMDB_RATE_HZ = 30.0
SECTIONS = ('parity', 'davis', 'jhmdb')
METRIC_NAMES = {'iou': 'IoU', 'pck': 'PCK'}  # result keys -> how they are written
# Every other DAVIS frame (12 of its 24 per second): dense and incremental DeepLab on all 184
# frames took 7.7 minutes (at 513x513) of the 10 the evaluation may take on 2 shared CPU cores.
DAVIS_FRAMES = '::2'
JHMDB_FRAMES = ':'  # all 40 frames (MoveNet at 192x192 is cheap)
# The accuracy bounds the default sparsity settings must keep.
MAX_DROP_POINTS = 0.5  # IoU / PCK points, dense minus incremental
MIN_AGREEMENT = 0.995  # share of mask pixels, incremental vs dense
# Parity: the Coral models from the shared folder, the MediaPipe ones where they are cached.
PARITY_MODELS = ('deeplabv3_mnv2_pascal', 'deeplabv3_mnv2_dm05_pascal', 'movenet_lightning',
                 'selfie_segmentation', 'selfie_segmentation_landscape', 'blazepose')
# The settings whose values the result records (the ones that shape sparsity).
# pose.gate, pose.gate_score, and the pose head's own change threshold and min_pixels.
SPARSITY_SECTIONS = ('change.', 'sparsity.', 'pose.gate', 'pose.change_')


class EvaluationError(ValueError):
    """The evaluation cannot run (missing data, bad options); the message says what to do."""


@dataclass(frozen=True)
class Clip:
    """A sequence of frames with ground truth, and the head that is scored on it."""

    name: str  # 'parkour', 'breakdance', or the JHMDB clip's name
    head: str  # 'segmentation' or 'pose'
    frames_dir: Path  # a folder of image files in natural order, or a bag
    truth: Path | None  # a folder of PNG masks or a joint_positions.mat; None: no scores
    rate_hz: float | None  # for an image folder (a bag has its own stamps)


def _shared(relative: str) -> Path:
    from sparse_perception.shared_data import shared_path, SharedDataMissing

    try:
        return shared_path(relative)
    except SharedDataMissing as exc:
        raise EvaluationError(str(exc)) from None


def davis_clip(sequence: str) -> Clip:
    """Return the DAVIS 2016 480p sequence ``sequence`` from the shared folder."""
    folder = _shared('data/davis/DAVIS/JPEGImages/480p')
    if not (folder / sequence).is_dir():  # a mistyped name, not a missing data folder
        there = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise EvaluationError(f'DAVIS has no sequence {sequence!r} in {folder}; it has: '
                              f'{", ".join(there) or "none"}')
    frames = _shared(f'data/davis/DAVIS/JPEGImages/480p/{sequence}')
    masks = _shared(f'data/davis/DAVIS/Annotations/480p/{sequence}')
    return Clip(sequence, 'segmentation', frames, masks, DAVIS_RATE_HZ)


def jhmdb_clip() -> Clip:
    """Return the JHMDB clip (40 frames, 320x240) and its joint_positions.mat."""
    folder = _shared(f'data/jhmdb/ReadJHMDBAnnotations/data/{JHMDB_CLIP}')
    truth = _shared('data/jhmdb/ReadJHMDBAnnotations/data/joint_positions.mat')
    return Clip(JHMDB_CLIP, 'pose', folder, truth, JHMDB_RATE_HZ)


def vtest_clip() -> Clip:
    """Return the bundled vtest40 bag (static camera, no ground truth): where sparsity pays."""
    from sparse_perception.shared_data import bundled_clip

    return Clip('vtest40', 'segmentation', bundled_clip(), None, None)


def read_frames(clip: Clip, frames: FrameRange = FrameRange()) -> list[Frame]:
    """Decode the selected frames of ``clip`` (as the replay decodes an image folder)."""
    from sparse_perception.replay.sources import open_source

    try:
        with open_source(clip.frames_dir, rate=clip.rate_hz, frames=frames) as source:
            items = list(source)
    except ReplayError as exc:
        raise EvaluationError(f'{clip.name}: {exc}') from None
    bad = [item for item in items if isinstance(item, SkippedFrame)]
    if bad:
        raise EvaluationError(f'{clip.frames_dir}: frame {bad[0].index} cannot be decoded '
                              f'({bad[0].reason}); the shared data is damaged')
    if not items:
        raise EvaluationError(f'{clip.frames_dir}: the frame range {frames} selects none of '
                              'its frames')
    return items


def load_truth(clip: Clip) -> Any:
    """Open the clip's annotations with the replay's readers."""
    from sparse_perception.replay.groundtruth import load_truth as load

    if clip.truth is None:
        return None
    try:
        return load(clip.truth)
    except ReplayError as exc:
        raise EvaluationError(str(exc)) from None


@dataclass
class HeadRun:
    """What one pipeline produced on the frames of one clip."""

    masks: list[np.ndarray] = field(default_factory=list)  # (H, W) uint8 class ids
    keypoints: list[np.ndarray] = field(default_factory=list)  # (P, K, 3) x, y, score, f64
    ms: list[float] = field(default_factory=list)  # wall time of Pipeline.process per frame
    active: list[float] = field(default_factory=list)  # active fraction per frame
    changed: list[float] = field(default_factory=list)  # changed tile fraction per frame
    macs: int = 0
    dense_macs: int = 0
    macs_after_first: int = 0  # the first frame of a stream always runs dense
    dense_macs_after_first: int = 0
    dense_frames: int = 0

    def add(self, head: str, result: Any, ms: float) -> None:
        """Keep one frame's output of ``head`` and its statistics."""
        stats = result.stats.heads[head]
        self.ms.append(ms)
        self.active.append(float(stats.active_fraction))
        if result.stats.change_measured:  # frames without a change map say nothing of it
            self.changed.append(float(result.stats.changed_fraction))
        if len(self.ms) > 1:  # not the first frame
            self.macs_after_first += int(stats.macs)
            self.dense_macs_after_first += int(stats.dense_macs)
        self.macs += int(stats.macs)
        self.dense_macs += int(stats.dense_macs)
        self.dense_frames += bool(stats.dense)
        if head == 'segmentation':
            self.masks.append(result.segmentation.mask)
        else:
            # float64, as the replay keeps them (float32 -> float64 is exact).
            self.keypoints.append(np.asarray(result.pose.keypoints, np.float64))


def run_head(pipelines: Sequence[Any], head: str, frames: Sequence[Frame]) -> list[HeadRun]:
    """
    Run each pipeline (reset first) over ``frames``; keep the outputs of ``head``.

    With several pipelines (incremental and dense), each frame goes through all of them in
    turn (:func:`sparse_perception.evaluation.loop.run`).
    """
    runs = [HeadRun() for _ in pipelines]
    for pipeline in pipelines:
        pipeline.reset()
    for step in loop.run(frames, pipelines):
        for run, result, ms in zip(runs, step.results, step.ms):
            run.add(head, result, ms)
    return runs


def truth_scores(clip: Clip, frames: Sequence[Frame], truth: Any,
                 runs: Sequence[tuple[HeadRun, Sequence[str]]]) -> list[dict[str, Any]]:
    """
    Score each run against the annotations: the IoU or PCK summary of each, in order.

    Each run comes with its model's class names (segmentation: the person class is looked up
    in them) or joint names (pose); frames are matched to annotations by their index in the
    sequence (a mask named by that number, the annotation at that position).
    """
    from sparse_perception.replay.runner import class_id, coco_view

    if clip.head == 'segmentation':
        persons = [class_id(tuple(names), GT_CLASS, PERSON_REMEDY) for _, names in runs]
        ious = [BinaryIou() for _ in runs]
        for i, frame in enumerate(frames):
            mask = None if truth is None else truth.for_frame(frame.index)  # by number
            if mask is not None:
                for iou, (run, _), person in zip(ious, runs, persons):
                    iou.add(run.masks[i] == person, mask)
        return [iou.summary() for iou in ious]
    pcks = [Pck(PCK_ALPHA, PCKH_ALPHA) for _ in runs]
    for i, frame in enumerate(frames):
        people = None if truth is None else truth.for_frame(frame.index)
        if people is not None:
            for pck, (run, names) in zip(pcks, runs):
                pck.add(coco_view(run.keypoints[i], names), people)
    return [pck.summary() for pck in pcks]


def score(clip: Clip, frames: Sequence[Frame], truth: Any, incremental: HeadRun,
          dense: HeadRun, names: Sequence[str]) -> dict[str, Any]:
    """
    Score both runs against the annotations and each other, with the replay's metrics.

    ``names`` are the segmentation head's class names or the pose head's joint names.
    """
    from sparse_perception.replay.runner import class_id

    out: dict[str, Any] = {'frames': len(frames),
                           'frame_indices': [frames[0].index, frames[-1].index],
                           'frame_size': list(frames[0].image.shape[1::-1])}
    ours, theirs = truth_scores(clip, frames, truth, [(incremental, names), (dense, names)])
    if clip.head == 'segmentation':
        agreement = MaskAgreement()
        for i in range(len(frames)):
            agreement.add(incremental.masks[i], dense.masks[i])
        out.update({
            'class_id': class_id(tuple(names), GT_CLASS, PERSON_REMEDY),
            'dense_iou': theirs['iou'],
            'incremental_iou': ours['iou'],
            'iou_drop_points': _drop(theirs['iou'], ours['iou']),
            'agreement': agreement.pixel,
            'agreement_worst_frame': min(agreement.per_frame),
            'dense_iou_global': theirs['iou_global'],
            'incremental_iou_global': ours['iou_global'],
            'frames_scored': ours['frames_scored'],
        })
    else:
        agreement = KeypointAgreement()
        for i in range(len(frames)):
            agreement.add(incremental.keypoints[i], dense.keypoints[i])
        keypoints = agreement.summary()
        out.update({
            'dense_pck': theirs['pck'],
            'incremental_pck': ours['pck'],
            'pck_drop_points': _drop(theirs['pck'], ours['pck']),
            'dense_pckh': theirs['pckh'],
            'incremental_pckh': ours['pckh'],
            'pck_alpha': PCK_ALPHA,
            'joints_scored': ours['joints_scored'],
            'frames_scored': ours['frames_scored'],
            'agreement_keypoint_px': keypoints['keypoint_px'],
            'agreement_keypoint_px_confident': keypoints['keypoint_px_confident'],
            'agreement_keypoint_px_worst_frame': keypoints['keypoint_px_worst_frame'],
        })
    out.update(activity(incremental, dense))
    return out


def activity(incremental: HeadRun, dense: HeadRun) -> dict[str, Any]:
    """Active fraction, MACs saved and latency (frames after the first) of a run pair."""
    # The first frame runs dense in both: without frames after it there is no latency to give.
    inc = summarize(incremental.ms[1:])
    den = summarize(dense.ms[1:])
    return {
        'active_fraction': mean_or_none(incremental.active),
        'active_fraction_after_first': mean_or_none(incremental.active[1:]),
        'changed_fraction_after_first': mean_or_none(incremental.changed[1:]),
        'macs_saved': (1.0 - incremental.macs / incremental.dense_macs
                       if incremental.dense_macs else None),
        'macs_ratio': (incremental.macs_after_first / incremental.dense_macs_after_first
                       if incremental.dense_macs_after_first else None),
        'dense_frames': incremental.dense_frames,
        'latency_ms': {'dense': den, 'incremental': inc},
        'speedup': den['p50'] / inc['p50'] if inc and den and inc['p50'] > 0 else None,
    }


def anchor_score(clip: Clip, frames: Sequence[Frame], truth: Any, anchor: HeadRun,
                 incremental: HeadRun, names: Sequence[str], model: str) -> dict[str, Any]:
    """
    Score an anchor's run against the annotations; time it against the incremental run.

    ``names`` are the anchor's own class or joint names (its labels may differ from the
    evaluated model's).
    """
    (summary,) = truth_scores(clip, frames, truth, [(anchor, names)])
    metric = 'iou' if clip.head == 'segmentation' else 'pck'
    ours = summarize(incremental.ms[1:])
    theirs = summarize(anchor.ms[1:])
    return {'model': model, metric: summary[metric], 'latency_ms': theirs,
            'speedup': (theirs['p50'] / ours['p50']
                        if ours and theirs and ours['p50'] > 0 else None)}


def anchor_heads(names: Sequence[str], sections: Sequence[str],
                 models_dir: str | None = None) -> dict[str, str]:
    """
    Return ``{head: model}`` for the anchors named, each run for the head it serves.

    Raises EvaluationError for a model that cannot be loaded, two anchors of one head, an
    anchor whose head no section scores, or a segmentation anchor without a person class.
    """
    from sparse_perception.models.registry import load_model, REGISTRY

    scored = {'davis': 'segmentation', 'jhmdb': 'pose'}
    heads: dict[str, str] = {}
    for name in names:
        if name in REGISTRY:
            kind, labels = REGISTRY[name].kind, REGISTRY[name].labels
        else:
            try:
                model = load_model(name, models_dir=models_dir)
            except (OSError, ValueError) as exc:
                raise EvaluationError(f'--anchor {name}: {exc}') from None
            kind, labels = model.kind, model.labels
        if kind == 'segmentation' and GT_CLASS not in [label.lower() for label in labels]:
            raise EvaluationError(f'--anchor {name}: its classes have no {GT_CLASS!r}, which '
                                  'the DAVIS masks are scored on')
        if kind in heads:
            raise EvaluationError(f'--anchor {name}: {heads[kind]} is already the {kind} '
                                  'anchor (one per head)')
        section = next(s for s, head in scored.items() if head == kind)
        if section not in sections:
            raise EvaluationError(f'--anchor {name} is a {kind} model, and the {section} '
                                  'section, which scores that head, is not run')
        heads[kind] = name
    return heads


def _drop(dense: float | None, incremental: float | None) -> float | None:
    if dense is None or incremental is None:
        return None
    return 100.0 * (dense - incremental)


def _pipeline(settings: PerceptionSettings, head: str, incremental: bool) -> Any:
    from sparse_perception.pipeline import Pipeline

    try:
        return Pipeline(settings, heads=(head,), incremental=incremental)
    except ValueError as exc:  # ModelLoadError names the model and the reason
        raise EvaluationError(str(exc)) from None


@dataclass
class ClipData:
    """A clip with its decoded frames and annotations, read once."""

    clip: Clip
    frames: list[Frame]
    truth: Any


def load_clips(sections: Sequence[str], davis_frames: FrameRange = FrameRange(),
               jhmdb_frames: FrameRange = FrameRange(),
               sequences: Sequence[str] = DAVIS_SEQUENCES) -> dict[str, list[ClipData]]:
    """
    Read the clips of the ``davis`` and ``jhmdb`` sections (frames decoded in memory).

    Raises EvaluationError where a range selects a single frame of a clip or none of its
    annotated frames: before any pipeline runs, not after.
    """
    out: dict[str, list[ClipData]] = {}
    if 'davis' in sections:
        clips = [davis_clip(name) for name in sequences]
        out['davis'] = [_scorable(c, read_frames(c, davis_frames), davis_frames)
                        for c in clips]
    if 'jhmdb' in sections:
        clip = jhmdb_clip()
        out['jhmdb'] = [_scorable(clip, read_frames(clip, jhmdb_frames), jhmdb_frames)]
    return out


def _scorable(clip: Clip, frames: list[Frame], selected: FrameRange) -> ClipData:
    """Return the clip's data, or raise where its frames cannot give the scores."""
    if len(frames) < 2:
        # The first frame of a stream runs dense: activity, MACs and latency are of the frames
        # after it, and a single frame has none.
        raise EvaluationError(
            f'the frame range {selected} selects 1 frame of {clip.name} (frame '
            f'{frames[0].index}); the incremental figures are of the frames after the first, '
            'so at least 2 are needed')
    truth = load_truth(clip)
    annotated = _annotated(truth)
    if annotated is not None and not any(f.index < annotated for f in frames):
        raise EvaluationError(
            f'{clip.name}: no ground truth for the frames {selected} (frames '
            f'{frames[0].index}-{frames[-1].index}); its annotations cover frames 0-'
            f'{annotated - 1} only')
    return ClipData(clip, frames, truth)


def _annotated(truth: Any) -> int | None:
    """Return how many leading frames the annotations can cover, or None."""
    if truth is None:
        return None
    if getattr(truth, 'numbered', False):  # masks named by frame number: up to the last
        return truth.highest + 1
    # By position: the n-th mask file or the n-th annotated frame.
    covered = getattr(truth, 'files', None) or getattr(truth, 'frames', None)
    return None if covered is None else len(covered)


class Evaluator:
    """
    Dense and incremental pipelines per head; runs clips and scores them.

    Every run of a clip runs the incremental and the dense pipeline frame by frame in
    alternation, also after :meth:`update` switched the incremental pipeline to new settings
    (a sweep): a pipeline that runs alone keeps its working set in the CPU's caches and times
    about twice as fast as one that alternates, so only latencies taken side by side compare.
    """

    def __init__(self, settings: PerceptionSettings, log: Callable[[str], None] = print,
                 anchors: dict[str, str] | None = None):
        self.settings = settings
        self.log = log
        self.anchors = dict(anchors or {})  # head -> a model run dense beside (anchor_heads)
        self._incremental: dict[str, Any] = {}
        self._dense: dict[str, Any] = {}
        self._anchor: dict[str, Any] = {}

    def _pipelines(self, head: str, first: Frame) -> list[Any]:
        if head not in self._incremental:
            self._incremental[head] = _pipeline(self.settings, head, True)
            loop.warm([self._incremental[head]], first)
        if head not in self._dense:
            self._dense[head] = _pipeline(self.settings, head, False)
            loop.warm([self._dense[head]], first)
        if head in self.anchors and head not in self._anchor:
            anchor = settings_module.replace(self.settings, {f'model.{head}': self.anchors[head]})
            self._anchor[head] = _pipeline(anchor, head, False)
            loop.warm([self._anchor[head]], first)
        return [self._incremental[head], self._dense[head],
                *([self._anchor[head]] if head in self._anchor else [])]

    def discard_incremental(self) -> None:
        """Drop the incremental pipelines; the next clip builds new ones, as a new run would."""
        for pipeline in self._incremental.values():
            pipeline.close()
        self._incremental = {}

    def update(self, settings: PerceptionSettings) -> None:
        """Use new change and sparsity settings for the incremental runs from now on."""
        # The dense (and anchor) pipelines are kept, and only these settings leave a dense run
        # as it was: any other change would compare the new incremental run with a stale one.
        old, new = settings_module.flatten(self.settings), settings_module.flatten(settings)
        others = [name for name in new if not name.startswith(SPARSITY_SECTIONS)
                  and new[name] != old.get(name)]
        if others:
            raise EvaluationError(f'Evaluator.update changes only the change and sparsity '
                                  f'settings; {others[0]} differs (make a new Evaluator)')
        for pipeline in self._incremental.values():
            pipeline.update(settings)
        self.settings = settings

    def clip(self, data: ClipData) -> dict[str, Any]:
        """Run and score one clip, dense and incremental in alternation, frame by frame."""
        head = data.clip.head
        pipelines = self._pipelines(head, data.frames[0])
        started = time.perf_counter()
        runs = run_head(pipelines, head, data.frames)
        result = score(data.clip, data.frames, data.truth, runs[0], runs[1],
                       _names(pipelines[0], head))
        result['model'] = getattr(self.settings.model, head)
        if len(runs) > 2:
            result['anchor'] = anchor_score(data.clip, data.frames, data.truth, runs[2],
                                            runs[0], _names(pipelines[2], head),
                                            self.anchors[head])
        self.log(f'{data.clip.name}: {len(data.frames)} frames in '
                 f'{time.perf_counter() - started:.1f} s, ' + _brief(result))
        return result

    def close(self) -> None:
        """Release the pipelines."""
        for pipeline in [*self._incremental.values(), *self._dense.values(),
                         *self._anchor.values()]:
            pipeline.close()
        self._incremental, self._dense, self._anchor = {}, {}, {}


def _names(pipeline: Any, head: str) -> Sequence[str]:
    """Return a pipeline's class names (segmentation) or joint names (pose)."""
    return pipeline.class_names if head == 'segmentation' else pipeline.joint_names


def _brief(result: dict[str, Any]) -> str:
    parts = []
    for key, label in (('iou', 'IoU'), ('pck', 'PCK')):
        if result.get(f'dense_{key}') is not None:
            parts.append(f"{label} dense {result[f'dense_{key}']:.4f} incremental "
                         f"{result[f'incremental_{key}']:.4f}")
    if 'agreement' in result:
        parts.append(f"agreement {result['agreement'] * 100:.3f}%")
    else:
        parts.append(f"keypoints {result['agreement_keypoint_px']:.2f} px from dense")
    return ', '.join(parts + [f"active {figure(result['active_fraction_after_first'], '.3f')}"])


def sparsity_values(settings: PerceptionSettings) -> dict[str, Any]:
    """Return the change and sparsity settings as ``{'section.field': value}``."""
    flat = settings_module.flatten(settings)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()
            if k.startswith(SPARSITY_SECTIONS)}


def criteria(davis: dict[str, Any], jhmdb: dict[str, Any] | None) -> dict[str, Any]:
    """Check the results against the accuracy bounds; list what fails."""
    failures = []
    # A clip with nothing scored against the ground truth has shown no bound kept: it fails.
    for name, result in davis.items():
        if result['iou_drop_points'] is None:
            failures.append(f'davis/{name}: nothing scored against the ground truth')
        elif result['iou_drop_points'] > MAX_DROP_POINTS:
            failures.append(f'davis/{name}: IoU drop {result["iou_drop_points"]:.3f} points '
                            f'> {MAX_DROP_POINTS}')
        if result['agreement'] is not None and result['agreement'] < MIN_AGREEMENT:
            failures.append(f'davis/{name}: agreement {result["agreement"] * 100:.3f}% < '
                            f'{MIN_AGREEMENT * 100:g}%')
    if jhmdb and jhmdb['pck_drop_points'] is None:
        failures.append('jhmdb: nothing scored against the ground truth')
    elif jhmdb and jhmdb['pck_drop_points'] > MAX_DROP_POINTS:
        failures.append(f'jhmdb: PCK drop {jhmdb["pck_drop_points"]:.3f} points > '
                        f'{MAX_DROP_POINTS}')
    return {'max_drop_points': MAX_DROP_POINTS, 'min_agreement': MIN_AGREEMENT,
            'passed': not failures, 'failures': failures}


def parity_frames(models: Sequence[str], davis_frames: int, jhmdb_frames: int,
                  sequences: Sequence[str] = DAVIS_SEQUENCES) -> tuple[list[Path], list[Path]]:
    """
    Return the image files parity runs on: (segmentation frames, pose frames).

    Segmentation models run on ``davis_frames`` frames spread over each of ``sequences``, pose
    models on ``jhmdb_frames`` frames spread over the JHMDB clip; the data of a kind that no
    model checks is not read. Raises EvaluationError for an unregistered model or missing data.
    """
    from sparse_perception.models.registry import REGISTRY
    from sparse_perception.replay.sources import image_files

    unknown = [name for name in models if name not in REGISTRY]
    if unknown:
        raise EvaluationError(f'parity models {unknown} are not registered; known: '
                              f'{", ".join(REGISTRY)}')
    kinds = {REGISTRY[name].kind for name in models}
    segmentation = [path for sequence in sequences
                    for path in _spread(image_files(davis_clip(sequence).frames_dir),
                                        davis_frames)] if 'segmentation' in kinds else []
    pose = (_spread(image_files(jhmdb_clip().frames_dir), jhmdb_frames)
            if 'pose' in kinds else [])
    return segmentation, pose


def parity(models: Sequence[str], davis_frames: int, jhmdb_frames: int,
           log: Callable[[str], None] = print,
           sequences: Sequence[str] = DAVIS_SEQUENCES) -> dict[str, Any]:
    """
    Each model against the TFLite interpreter, on real frames (see models.parity).

    The frames are those of :func:`parity_frames`. A MediaPipe model that the ``models fetch``
    cache lacks is reported as skipped, with the reason.
    """
    require_interpreter()
    from sparse_perception.models import parity as parity_module
    from sparse_perception.models.registry import load_model, ModelNotFound, REGISTRY

    segmentation, pose = parity_frames(models, davis_frames, jhmdb_frames, sequences)
    out: dict[str, Any] = {}
    for name in models:
        started = time.perf_counter()
        try:
            model = load_model(name)
        except ModelNotFound as exc:
            if REGISTRY[name].location == 'shared':
                raise EvaluationError(str(exc)) from None
            out[name] = {'skipped': str(exc)}
            log(f'parity {name}: skipped (not in the model cache)')
            continue
        if model.decoder == 'class_map':
            result = parity_module.segmentation_parity(model, segmentation)
            entry = {'metric': 'label agreement with the interpreter (share of pixels)',
                     'agreement': result.summary['pooled_agreement'],
                     'min_agreement': result.summary['min_agreement']}
        elif model.decoder == 'probability':
            result = parity_module.probability_parity(model, segmentation)
            entry = {'metric': 'agreement of the person masks (probability >= 0.5)',
                     'agreement': result.summary['pooled_agreement'],
                     'min_agreement': result.summary['min_agreement'],
                     'max_abs_probability': result.summary['max_abs_probability']}
        elif model.decoder == 'blazepose':
            result = parity_module.blazepose_parity(model, pose)
            entry = {'metric': 'landmark error in crop pixels (256x256)',
                     'median_px': result.summary['median_px'],
                     'max_px': result.summary['max_px'],
                     'within_2px': result.summary['within_2px']}
        else:
            result = parity_module.pose_parity(model, pose)
            entry = {'metric': 'keypoint error in network-input pixels',
                     'median_px': result.summary['median_px'],
                     'mean_px': result.summary['mean_px'],
                     'max_px': result.summary['max_px'],
                     'within_2px': result.summary['within_2px']}
        entry.update(kind=model.kind, fake_quant=result.fake_quant, frames=len(result.frames),
                     per_frame=result.per_frame)
        out[name] = entry
        log(f'parity {name}: {len(result.frames)} frames in '
            f'{time.perf_counter() - started:.1f} s, '
            + ', '.join(f'{k} {v:.4g}' for k, v in entry.items()
                        if isinstance(v, float)))
    return out


def require_interpreter() -> None:
    """Raise a clear error when the TFLite interpreter (ai-edge-litert) is not installed."""
    import importlib.util

    if importlib.util.find_spec('ai_edge_litert') is None:
        raise EvaluationError(
            'the parity section needs the TFLite interpreter: pip install ai-edge-litert (in '
            "the test extra: pip install 'sparse_perception[test]'), or leave the section "
            'out with --sections davis,jhmdb')


def _spread(items: Sequence[Any], count: int) -> list[Any]:
    """Return ``count`` items evenly spread from first to last (all of them if fewer)."""
    if count >= len(items):
        return list(items)
    if count <= 0:
        return []
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in positions]


@dataclass(frozen=True)
class AccuracyOptions:
    """What ``eval accuracy`` runs (its command-line options, parsed)."""

    settings: PerceptionSettings
    sections: tuple[str, ...] = SECTIONS
    davis_frames: FrameRange = FrameRange.parse(DAVIS_FRAMES)
    jhmdb_frames: FrameRange = FrameRange.parse(JHMDB_FRAMES)
    sequences: tuple[str, ...] = DAVIS_SEQUENCES
    parity_davis_frames: int = 3  # per DAVIS sequence
    parity_jhmdb_frames: int = 8
    parity_models: tuple[str, ...] = PARITY_MODELS
    anchors: tuple[str, ...] = ()  # models run dense beside, one per head (anchor_heads)


def default_settings(**changes: Any) -> PerceptionSettings:
    """Return the package's default settings with the evaluation's models (DeepLab, MoveNet)."""
    values = {'model.segmentation': SEGMENTATION_MODEL, 'model.pose': POSE_MODEL}
    values.update(changes)
    return settings_module.replace(PerceptionSettings(), values)


def evaluate(options: AccuracyOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the sections of ``options``; return the result (see the module docstring)."""
    from sparse_perception.evaluation.provenance import environment

    unknown = [s for s in options.sections if s not in SECTIONS]
    if unknown or not options.sections:
        raise EvaluationError(f'sections {list(options.sections)}: expected some of '
                              f'{", ".join(SECTIONS)}')
    started = time.perf_counter()
    timings: dict[str, float] = {}
    result: dict[str, Any] = {'schema': SCHEMA}
    if 'parity' in options.sections:
        require_interpreter()  # before minutes of work, not after
        parity_frames(options.parity_models, options.parity_davis_frames,
                      options.parity_jhmdb_frames, options.sequences)
    anchors = anchor_heads(options.anchors, options.sections,  # before reading the clips
                           options.settings.model.models_dir or None)
    clips = load_clips(options.sections, options.davis_frames, options.jhmdb_frames,
                       options.sequences)
    evaluator = Evaluator(options.settings, log, anchors)
    try:
        for section in ('davis', 'jhmdb'):
            if section not in clips:
                continue
            begin = time.perf_counter()
            scored = {data.clip.name: evaluator.clip(data) for data in clips[section]}
            result[section] = scored if section == 'davis' else {
                'clip': clips[section][0].clip.name, **scored[clips[section][0].clip.name]}
            timings[f'{section}_s'] = time.perf_counter() - begin
    finally:
        evaluator.close()
    if 'parity' in options.sections:  # last: the interpreter's threads never overlap a timing
        begin = time.perf_counter()
        result['parity'] = parity(options.parity_models, options.parity_davis_frames,
                                  options.parity_jhmdb_frames, log, options.sequences)
        timings['parity_s'] = time.perf_counter() - begin
    davis = result.get('davis', {})
    jhmdb = result.get('jhmdb')
    fractions = {f'davis/{name}': r['active_fraction'] for name, r in davis.items()}
    if jhmdb is not None:
        fractions['jhmdb'] = jhmdb['active_fraction']
    result['settings'] = {
        **sparsity_values(options.settings),
        'package_defaults': sparsity_values(options.settings) == sparsity_values(
            PerceptionSettings()),
        'active_fraction': fractions,
        'active_fraction_mean': mean_or_none(list(fractions.values())),
    }
    if davis or jhmdb:
        result['criteria'] = criteria(davis, jhmdb)
    result['conditions'] = {
        'models': {head: {'name': getattr(options.settings.model, head),
                          'network_input': network_input(options.settings, head)}
                   for head in HEADS
                   if ('davis' if head == 'segmentation' else 'jhmdb') in options.sections},
        'anchors': {head: {'name': name, 'network_input': network_input(
            settings_module.replace(options.settings, {f'model.{head}': name}), head)}
            for head, name in anchors.items()},
        'note': ('The frames of a range are processed in order as one stream (the '
                 'incremental pipeline sees a range with a step as a lower frame rate). '
                 f'By default DAVIS runs on every other frame ({DAVIS_FRAMES}, 12 fps) and '
                 'JHMDB on all 40, to finish within 10 minutes on 2 CPU cores; the '
                 'networks run at their own input size (network_input). Latency and '
                 'speedup are p50 over the frames after the first, wall time of '
                 'Pipeline.process, dense and incremental in alternation.'),
        'match_truth': 'by frame position in the sequence (as the replay does for a bag)',
        'gate_file': describe_gate(options.settings),
    }
    # The conditions of the sections that ran only (as models and anchors).
    if 'davis' in options.sections:
        result['conditions']['davis_frames'] = str(options.davis_frames)
    if 'jhmdb' in options.sections:
        result['conditions']['jhmdb_frames'] = str(options.jhmdb_frames)
    if 'davis' in options.sections or 'parity' in options.sections:  # parity's are DAVIS's
        result['conditions']['davis_sequences'] = list(options.sequences)
    if 'parity' in options.sections:
        result['conditions']['parity_frames'] = {
            'davis_per_sequence': options.parity_davis_frames,
            'jhmdb': options.parity_jhmdb_frames}
    timings['total_s'] = time.perf_counter() - started
    result['timing'] = timings
    result['environment'] = environment(options.settings.model.device)
    return result


def describe_gate(settings: PerceptionSettings) -> dict | None:
    """Return the learned gate's file, SHA-256 and metadata for the result (None: no such gate)."""
    from sparse_perception.gates.learned import describe

    return describe(settings)


def source_lines(env: Mapping[str, Any]) -> list[str]:
    """Return the results file's line naming the commit that ran, if it was recorded."""
    source = env.get('source') or {}
    if not source.get('commit'):
        return []
    return [f'- source: commit {source["commit"][:12]}'
            + (' with modified files' if source.get('tracked_files_modified') else '')]


def markdown(result: dict[str, Any], command: str = '') -> str:
    """Render an ``eval accuracy`` result as markdown tables."""
    env = result['environment']
    versions, device = env['versions'], env['device']
    conditions = result['conditions']
    settings = result['settings']
    lines = ['# Accuracy under sparsity (sparse-perception eval accuracy)', '']
    lines.append('- settings: ' + ', '.join(
        f'{k} = {v}' for k, v in settings.items() if k.startswith(SPARSITY_SECTIONS))
        + (' (the package defaults)' if settings['package_defaults'] else ''))
    for head, model in conditions['models'].items():
        lines.append(f'- {head}: {model["name"]}, network input {model["network_input"]}')
    gate = conditions.get('gate_file')
    if gate:
        lines.append(f"- learned gate: {gate['file']}, SHA-256 {gate['sha256'] or 'unread'}")
    frames = []  # of the sections that ran
    if 'davis_frames' in conditions:
        frames.append(f'DAVIS {", ".join(conditions["davis_sequences"])} '
                      f'[{conditions["davis_frames"]}]')
    if 'jhmdb_frames' in conditions:
        frames.append(f'JHMDB [{conditions["jhmdb_frames"]}]')
    if frames:
        lines.append(f'- frames: {", ".join(frames)}; ground truth matched '
                     f'{conditions["match_truth"]}')
    lines.append(f'- machine: {device.get("cpu")}, {device.get("cores")} cores, device '
                 f'{device.get("used")}, torch {versions.get("torch")} with '
                 f'{device.get("torch_threads")} threads, Python {versions.get("python")}, '
                 f'C allocator {device.get("allocator", "not recorded")}')
    if command:
        lines.append(f'- command: `{command}`, {result["timing"]["total_s"]:.0f} s')
    lines += source_lines(env)
    lines.append('')
    if result.get('davis'):
        model = next(iter(result['davis'].values())).get('model', 'segmentation model')
        lines += [f'## DAVIS: person IoU ({model})', '',
                  '| sequence | frames | dense IoU | incremental IoU | drop (points) | '
                  'agreement | active | MACs / dense | dense ms | incremental ms | speedup |',
                  '|---|---|---|---|---|---|---|---|---|---|---|']
        for name, r in result['davis'].items():
            lines.append(
                f'| {name} | {r["frames"]} | {figure(r["dense_iou"], ".4f")} | '
                f'{figure(r["incremental_iou"], ".4f")} | '
                f'{figure(r["iou_drop_points"], "+.3f")} | '
                f'{r["agreement"] * 100:.3f}% | '
                f'{figure(r["active_fraction_after_first"], ".3f")} | '
                f'{figure(r["macs_ratio"], ".3f")} | {_ms(r, "dense")} | '
                f'{_ms(r, "incremental")} | {_speedup(r)} |')
        lines.append('')
    jhmdb = result.get('jhmdb')
    if jhmdb:
        lines += [f'## JHMDB: PCK@{PCK_ALPHA} of the person box, 12 joints '
                  f'({jhmdb.get("model", "pose model")})', '',
                  '| clip | frames | dense PCK | incremental PCK | drop (points) | keypoints '
                  'vs dense | active | MACs / dense | dense ms | incremental ms | speedup |',
                  '|---|---|---|---|---|---|---|---|---|---|---|',
                  f'| {jhmdb["clip"]} | {jhmdb["frames"]} | '
                  f'{figure(jhmdb["dense_pck"], ".4f")} | '
                  f'{figure(jhmdb["incremental_pck"], ".4f")} | '
                  f'{figure(jhmdb["pck_drop_points"], "+.3f")} | '
                  f'{jhmdb["agreement_keypoint_px"]:.2f} px | '
                  f'{figure(jhmdb["active_fraction_after_first"], ".3f")} | '
                  f'{figure(jhmdb["macs_ratio"], ".3f")} | {_ms(jhmdb, "dense")} | '
                  f'{_ms(jhmdb, "incremental")} | {_speedup(jhmdb)} |', '']
    lines += _anchor_table(result)
    check = result.get('criteria')
    if check:
        lines += [f'Accuracy bounds (drop <= {check["max_drop_points"]} points, agreement >= '
                  f'{check["min_agreement"] * 100:g}%): '
                  + ('**met**' if check['passed'] else '**missed**: '
                     + '; '.join(check['failures'])), '']
    if result.get('parity'):
        lines += ['## Parity with the TFLite interpreter', '',
                  '| model | frames | result |', '|---|---|---|']
        for name, entry in result['parity'].items():
            if 'skipped' in entry:
                lines.append(f'| {name} | - | skipped: {entry["skipped"]} |')
            elif 'agreement' in entry:
                lines.append(f'| {name} | {entry["frames"]} | {entry["agreement"] * 100:.2f}% '
                             f'of labels agree (worst frame '
                             f'{entry["min_agreement"] * 100:.2f}%) |')
            else:
                lines.append(f'| {name} | {entry["frames"]} | keypoint error median '
                             f'{entry["median_px"]:.3g} px, max {entry["max_px"]:.3g} px, '
                             f'{entry["within_2px"] * 100:.1f}% within 2 px |')
        lines.append('')
    lines.append('ms: p50 wall time of Pipeline.process over the frames after the first, '
                 'dense and incremental in alternation; speedup: their ratio. Active: share '
                 'of positions recomputed; MACs / dense: multiply-accumulates executed over '
                 'those of dense passes, frames after the first.')
    return '\n'.join(lines)


def anchored(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (section, clip, clip result) for each scored clip that has an anchor entry."""
    rows = [('davis', name, r) for name, r in result.get('davis', {}).items() if 'anchor' in r]
    jhmdb = result.get('jhmdb')
    if jhmdb and 'anchor' in jhmdb:
        rows.append(('jhmdb', jhmdb['clip'], jhmdb))
    return rows


def _anchor_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines comparing each scored clip with its anchor (none without anchors)."""
    rows = anchored(result)
    if not rows:
        return []
    anchors = result['conditions'].get('anchors', {})
    lines = ['## Beside an anchor: a dense pipeline on the same frames, in alternation', '']
    for head, entry in anchors.items():
        lines.append(f'- {head}: {entry["name"]}, network input {entry["network_input"]}')
    lines += ['', '| clip | anchor | anchor score | incremental score | incremental minus '
              'anchor (points) | anchor ms | incremental ms | speedup over the anchor |',
              '|---|---|---|---|---|---|---|---|']
    for _, name, r in rows:
        a = r['anchor']
        metric = 'iou' if 'iou' in a else 'pck'
        ours = r[f'incremental_{metric}']
        theirs = a[metric]
        diff = '-' if ours is None or theirs is None else f'{100 * (ours - theirs):+.2f}'
        latency = a['latency_ms']
        lines.append(f'| {name} | {a["model"]} | {_score(theirs, metric)} | '
                     f'{_score(ours, metric)} | {diff} | '
                     f'{"-" if not latency else format(latency["p50"], ".0f")} | '
                     f'{_ms(r, "incremental")} | {_speedup(a)} |')
    lines += ['', 'Scores: person IoU (DAVIS) or PCK@0.2 (JHMDB) against the ground truth. '
              'Speedup over the anchor: its p50 over the incremental p50.', '']
    return lines


def _score(value: float | None, metric: str) -> str:
    return '-' if value is None else f'{METRIC_NAMES[metric]} {value:.4f}'


def figure(value: float | None, spec: str) -> str:
    """Format ``value`` with ``spec``; '-' where there is none (nothing to measure it on)."""
    return '-' if value is None else format(value, spec)


def _speedup(result: dict[str, Any]) -> str:
    return '-' if result.get('speedup') is None else f'{result["speedup"]:.2f}x'


def _ms(result: dict[str, Any], kind: str) -> str:
    latency = result['latency_ms'][kind]
    return '-' if not latency else f'{latency["p50"]:.0f}'


def network_input(settings: PerceptionSettings, head: str) -> str:
    """Describe how frames reach a head's network: 'WxH (resize)' or 'frame size'."""
    from sparse_perception.models.registry import load_model, REGISTRY

    name = getattr(settings.model, head)
    model = load_model(name, models_dir=settings.model.models_dir or None)
    if model.input_size is None:
        return (f'the frame size, up to {settings.model.fcn_max_megapixels:g} megapixels '
                '(fully convolutional)')
    fit = REGISTRY[name].resize if name in REGISTRY else 'resize'
    return f'{model.input_size[1]}x{model.input_size[0]} ({fit})'


def json_text(result: dict[str, Any]) -> str:
    """Return ``result`` as the JSON text the evaluation writes (NaN as null)."""
    return json.dumps(json_safe(result), indent=2, allow_nan=False) + '\n'


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write ``result`` as JSON (NaN as null) through a temporary name."""
    write_text(json_text(result), path)


def write_text(text: str, path: Path) -> None:
    """Write ``text`` through a temporary name, so that nothing half-written is left."""
    path = Path(path)
    if path.is_dir():
        raise EvaluationError(f'{path} is a folder; expected a file name')
    if not path.parent.is_dir():
        raise EvaluationError(f'{path}: the folder {path.parent} does not exist')
    from sparse_perception.output_files import write_atomic

    write_atomic(path, text)
