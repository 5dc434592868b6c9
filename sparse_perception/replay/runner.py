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
The replay loop: every frame through the incremental pipeline and its dense reference.

The pipelines are built by a factory with the signature of
``sparse_perception.pipeline.Pipeline(settings, heads=..., incremental=...)`` (the Pipeline
class itself, unless a :class:`~sparse_perception.replay.job.ReplayJob` names another
callable). :class:`Scorer` turns the
per-frame results into the figures of the report; :func:`replay` runs a source through the
pipelines (the frame loop of :mod:`sparse_perception.evaluation.loop`) and hands each frame to
the output sinks (bag, contact sheet, video);
:func:`sweep` replays the source again at each sparsity scale, the incremental pipeline beside
the dense reference (when there is one) each time.
"""

from __future__ import annotations

import array
import dataclasses
from dataclasses import dataclass, field
import math
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from sparse_perception.evaluation import loop
from sparse_perception.evaluation.stats import mean_or_none, summarize
from sparse_perception.models.decoders import COCO17_JOINTS
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.groundtruth import KeypointTruth, MaskTruth
from sparse_perception.replay.metrics import (BinaryIou, KeypointAgreement, MaskAgreement, Pck,
                                              PCK_ALPHA, PCKH_ALPHA)
from sparse_perception.replay.sources import Frame, FrameSource, SkippedFrame


def build_pipeline(factory: Callable[..., Any], settings: Any, heads: Sequence[str],
                   incremental: bool) -> Any:
    """Create a pipeline; a model that cannot load (ModelLoadError, a ValueError) is named."""
    try:
        return factory(settings, heads=tuple(heads), incremental=incremental)
    except ValueError as exc:  # ModelLoadError and SettingError are ValueErrors
        kind = 'incremental' if incremental else 'dense reference'
        raise ReplayError(f'cannot create the {kind} pipeline: {exc}') from None


def class_id(class_names: Sequence[str], wanted: str,
             remedy: str = 'pass --gt-class NAME or ID') -> int:
    """
    Resolve ``wanted`` (a class name or an id) against a segmentation head's class names.

    ``remedy`` ends the error of a name that is not one of them.
    """
    if wanted.isdigit():
        value = int(wanted)
        if class_names and value >= len(class_names):
            raise ReplayError(f'class id {value} is out of range: the segmentation model has '
                              f'{len(class_names)} classes')
        return value
    lowered = [name.lower() for name in class_names]
    if wanted.lower() not in lowered:
        raise ReplayError(f'class {wanted!r} is not one of the segmentation classes: '
                          f'{", ".join(class_names) or "(none)"}; {remedy}')
    return lowered.index(wanted.lower())


def coco_view(keypoints: np.ndarray, joint_names: Sequence[str]) -> np.ndarray:
    """Reorder (P, K, 3) keypoints into COCO-17 order by joint name (NaN where absent)."""
    out = np.full((keypoints.shape[0], len(COCO17_JOINTS), 3), np.nan, np.float64)
    lowered = [name.lower() for name in joint_names]
    for column, name in enumerate(COCO17_JOINTS):
        if name in lowered:
            out[:, column] = keypoints[:, lowered.index(name)]
    return out


@dataclass
class FrameRecord:
    """What one frame measured (a row of frames.csv)."""

    index: int
    stamp_ns: int
    incremental_ms: float
    dense_ms: float | None
    active_fraction: float
    changed_fraction: float | None  # None: the frame had no change map (see PipelineStats)
    ran_dense: bool
    mask_pixel: float | None = None
    keypoint_px: float | None = None
    gt_iou: float | None = None
    gt_iou_dense: float | None = None
    gt_pck: float | None = None
    gt_pck_dense: float | None = None


class FrameTable:
    """
    The :class:`FrameRecord` of every frame of a run, held as columns of machine numbers.

    A replay of a long recording keeps one record per frame for frames.csv, the plots and
    exact percentiles: 8 bytes per figure and frame here (about 100 bytes a frame), where
    Python objects took several times that. Iterating gives the records back; a missing
    figure (None) is held as NaN.
    """

    _INTEGERS = ('index', 'stamp_ns')

    def __init__(self) -> None:
        self._names = tuple(f.name for f in dataclasses.fields(FrameRecord))
        self._columns = {name: array.array('q' if name in self._INTEGERS else
                                           'b' if name == 'ran_dense' else 'd')
                         for name in self._names}

    def append(self, record: FrameRecord) -> None:
        """Add one frame's record."""
        for name, column in self._columns.items():
            value = getattr(record, name)
            column.append(math.nan if value is None else value)

    def __len__(self) -> int:
        return len(self._columns['index'])

    def __iter__(self) -> Iterator[FrameRecord]:
        columns = [self._columns[name] for name in self._names]
        for values in zip(*columns):
            yield FrameRecord(**{name: self._value(name, value)
                                 for name, value in zip(self._names, values)})

    def _value(self, name: str, value: Any) -> Any:
        if name in self._INTEGERS:
            return int(value)
        if name == 'ran_dense':
            return bool(value)
        return None if math.isnan(value) else float(value)

    def values(self, name: str) -> list:
        """One figure of every frame that has it, in frame order (None left out)."""
        return [self._value(name, v) for v in self._columns[name]
                if name in self._INTEGERS or name == 'ran_dense' or not math.isnan(v)]

    def has(self, name: str) -> bool:
        """Whether any frame has this figure."""
        return any(not math.isnan(v) for v in self._columns[name])


@dataclass
class DenseOutputs:
    """The dense reference's outputs of one frame, as the scorer compares them."""

    mask: np.ndarray | None
    keypoints: np.ndarray | None
    ms: float


class _GroundTruthScores:
    """IoU and PCK of one pipeline (incremental or dense) against the annotations."""

    def __init__(self, alpha: float, head_alpha: float):
        self.iou = BinaryIou()
        self.pck = Pck(alpha, head_alpha)


@dataclass
class Scorer:
    """Collects the figures of one incremental run (against dense and ground truth)."""

    masks: MaskTruth | None = None
    keypoints: KeypointTruth | None = None
    gt_class: int | None = None
    joint_names: Sequence[str] = ()
    pck_alpha: float = PCK_ALPHA
    pckh_alpha: float = PCKH_ALPHA
    records: FrameTable = field(default_factory=FrameTable)

    def __post_init__(self):
        self.mask_agreement = MaskAgreement()
        self.keypoint_agreement = KeypointAgreement()
        self.truth = {name: _GroundTruthScores(self.pck_alpha, self.pckh_alpha)
                      for name in ('incremental', 'dense')}
        # Means are kept as running sums and counts: a run may be days long.
        self.active_total = 0.0
        self.head_fractions: dict[str, list[float]] = {}  # head: [sum, frames]
        self.head_ms: dict[str, array.array] = {}  # head: every frame's ms (percentiles)
        self.layer_fractions: dict[str, dict[str, list[float]]] = {}  # head: layer: [sum, n]
        self.macs = 0
        self.dense_macs = 0
        self.head_macs: dict[str, list[int]] = {}
        self.people = [0, 0, 0]  # frames with pose, of them with people, persons reported

    def add(self, frame: Frame, result: Any, dense: DenseOutputs | None) -> FrameRecord:
        """Score one frame's incremental result (and its dense reference, when there is one)."""
        stats = result.stats
        record = FrameRecord(frame.index, frame.stamp_ns, float(stats.ms),
                             None if dense is None else float(dense.ms),
                             float(stats.active_fraction),
                             float(stats.changed_fraction) if stats.change_measured else None,
                             bool(stats.dense))
        self.active_total += record.active_fraction
        for name, head in stats.heads.items():
            _accumulate(self.head_fractions.setdefault(name, [0.0, 0]), head.active_fraction)
            self.head_ms.setdefault(name, array.array('d')).append(float(head.ms))
            counts = self.head_macs.setdefault(name, [0, 0])
            counts[0] += int(head.macs)
            counts[1] += int(head.dense_macs)
            self.macs += int(head.macs)
            self.dense_macs += int(head.dense_macs)
            layers = getattr(head, 'layers', None)  # per-layer fractions, where stats carry them
            if isinstance(layers, dict):
                per_layer = self.layer_fractions.setdefault(name, {})
                for layer, fraction in layers.items():
                    _accumulate(per_layer.setdefault(str(layer), [0.0, 0]), fraction)
        mask = result.segmentation.mask if result.segmentation is not None else None
        points = result.pose.keypoints if result.pose is not None else None
        if points is not None:
            count = int(np.asarray(points).shape[0])
            self.people[0] += 1
            self.people[1] += count > 0
            self.people[2] += count
        if dense is not None:
            if mask is not None and dense.mask is not None:
                record.mask_pixel = self.mask_agreement.add(mask, dense.mask)
            if points is not None and dense.keypoints is not None:
                value = self.keypoint_agreement.add(np.asarray(points), dense.keypoints)
                record.keypoint_px = None if math.isnan(value) else value
        self._ground_truth(frame, record, mask, points, dense)
        self.records.append(record)
        return record

    def _ground_truth(self, frame: Frame, record: FrameRecord, mask, points, dense) -> None:
        if self.masks is not None and mask is not None and self.gt_class is not None:
            truth = self.masks.for_frame(frame.index, frame.name)
            if truth is not None:
                if truth.shape != mask.shape:
                    raise ReplayError(
                        f'ground-truth mask of frame {frame.index} is {truth.shape[1]}x'
                        f'{truth.shape[0]} but the frame is {mask.shape[1]}x{mask.shape[0]}; '
                        'are these the annotations of this input?')
                record.gt_iou = self.truth['incremental'].iou.add(mask == self.gt_class, truth)
                if dense is not None and dense.mask is not None:
                    record.gt_iou_dense = self.truth['dense'].iou.add(
                        dense.mask == self.gt_class, truth)
        if self.keypoints is not None and points is not None:
            people = self.keypoints.for_frame(frame.index, frame.name)
            if people is not None:
                value = self.truth['incremental'].pck.add(
                    coco_view(np.asarray(points), self.joint_names), people)
                record.gt_pck = None if math.isnan(value) else value
                if dense is not None and dense.keypoints is not None:
                    value = self.truth['dense'].pck.add(
                        coco_view(dense.keypoints, self.joint_names), people)
                    record.gt_pck_dense = None if math.isnan(value) else value

    # -- summaries ----------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        """Frames scored so far."""
        return len(self.records)

    def running_active_fraction(self) -> float | None:
        """Mean active fraction so far (for the progress line, on every frame)."""
        return self.active_total / self.frames if self.frames else None

    def latency(self) -> dict[str, Any]:
        """Latency summaries (ms) of both pipelines and the speedup of the p50s."""
        incremental = summarize(self.records.values('incremental_ms'))
        dense = summarize(self.records.values('dense_ms'))
        speedup = None
        if incremental and dense and incremental['p50'] > 0:
            speedup = dense['p50'] / incremental['p50']
        return {'latency_ms': {'dense': dense, 'incremental': incremental},
                'speedup': speedup}

    def activity(self) -> dict[str, Any]:
        """Active fractions (overall, per head, per layer), changed fraction, MACs saved."""
        fractions = self.records.values('active_fraction')
        return {
            'active_fraction': mean_or_none(fractions),
            'active_fraction_after_first': mean_or_none(fractions[1:]),
            'active_fraction_p50': (summarize(fractions) or {}).get('p50'),
            'changed_fraction': mean_or_none(self.records.values('changed_fraction')),
            'dense_frames': sum(self.records.values('ran_dense')),
            'macs': self.macs,
            'dense_macs': self.dense_macs,
            'macs_saved': 1.0 - self.macs / self.dense_macs if self.dense_macs else None,
            'per_head': {
                name: {'active_fraction': _mean(values),
                       'macs_saved': (1.0 - self.head_macs[name][0] / self.head_macs[name][1]
                                      if self.head_macs[name][1] else None),
                       'ms': summarize(self.head_ms[name])}
                for name, values in self.head_fractions.items()},
            'per_layer': {
                head: {layer: _mean(values) for layer, values in layers.items()}
                for head, layers in self.layer_fractions.items()},
        }

    def agreement(self) -> dict[str, Any] | None:
        """Agreement with dense, None when no dense outputs were compared."""
        if not self.records.has('dense_ms'):
            return None
        return {**self.mask_agreement.summary(), **self.keypoint_agreement.summary()}

    def ground_truth(self) -> dict[str, Any] | None:
        """Scores against the annotations (incremental at the top, dense under ``dense``)."""
        if self.masks is None and self.keypoints is None:
            return None
        out: dict[str, Any] = {}
        for name in ('incremental', 'dense'):
            scores = self.truth[name]
            values: dict[str, Any] = {}
            if self.masks is not None:
                iou = scores.iou.summary()
                values.update(iou=iou['iou'], iou_global=iou['iou_global'],
                              miou=iou['miou'])
                if name == 'incremental':
                    out['masks'] = {**self.masks.describe(), 'class_id': self.gt_class,
                                    'frames_scored': iou['frames_scored']}
            if self.keypoints is not None:
                pck = scores.pck.summary()
                values.update(pck=pck['pck'], pckh=pck['pckh'])
                if name == 'incremental':
                    out['keypoints'] = {**self.keypoints.describe(),
                                        'pck_alpha': self.pck_alpha,
                                        'pckh_alpha': self.pckh_alpha,
                                        'frames_scored': pck['frames_scored'],
                                        'joints_scored': pck['joints_scored']}
            if name == 'incremental':
                out.update(values)
            elif self.records.has('dense_ms'):
                out['dense'] = values
        return out

    def pose(self) -> dict[str, Any] | None:
        """
        How the pose head did: who it found, and how far from dense (None without pose).

        Mask agreement can stay high while pose goes wrong (another person followed, a person
        lost), so a setting is judged on these too.
        """
        frames, with_people, people = self.people
        if not frames:
            return None
        compared = self.records.has('dense_ms')
        agreement = self.keypoint_agreement.summary() if compared else {}
        return {
            'frames_with_people': with_people,
            'people_per_frame_mean': people / frames,
            'keypoint_px_p50': self.keypoint_agreement.joint_p50() if compared else None,
            'keypoint_px_mean': agreement.get('keypoint_px'),
            'person_count_mismatch_frames': (agreement.get('people_mismatch_frames')
                                             if compared else None),
        }

    def summary(self) -> dict[str, Any]:
        """Every figure of this run."""
        activity = self.activity()
        return {'frames': self.frames, **self.latency(),
                'active_fraction': activity.pop('active_fraction'), 'activity': activity,
                'agreement': self.agreement(), 'pose': self.pose(),
                'ground_truth': self.ground_truth()}


def _accumulate(total: list, value: float) -> None:
    """Add ``value`` to a running [sum, count]."""
    total[0] += float(value)
    total[1] += 1


def _mean(total: list) -> float | None:
    return total[0] / total[1] if total[1] else None


class Progress:
    """One self-overwriting line on stderr: frames, frames/s, running active fraction."""

    def __init__(self, total: int | None, enabled: bool, stream: Any = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = total
        self.started = time.perf_counter()
        self.shown = 0.0
        self.width = 0

    def update(self, done: int, skipped: int, active: float | None, force: bool = False):
        """Redraw at most five times a second."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.shown < 0.2:
            return
        self.shown = now
        rate = done / (now - self.started) if now > self.started else 0.0
        total = f'/{self.total}' if self.total else ''
        text = f'frame {done + skipped}{total}  {rate:.1f} frames/s'
        if active is not None:
            text += f'  active {active:.3f}'
        if skipped:
            text += f'  skipped {skipped}'
        self.stream.write('\r' + text.ljust(self.width))
        self.width = len(text)
        self.stream.flush()

    def finish(self) -> None:
        """End the line."""
        if self.enabled and self.width:
            self.stream.write('\n')
            self.stream.flush()


@dataclass
class ReplayResult:
    """A finished replay: the scorer, skipped frames and where the time went."""

    scorer: Scorer
    skipped: list[SkippedFrame]
    wall_s: float  # the whole loop: reading, decoding, both pipelines, scoring, sinks
    incremental_s: float  # wall time inside the incremental pipeline's process()
    dense_s: float  # wall time inside the dense pipeline's process()
    resets: int = 0  # times the temporal state was reset: a stamp jumped back (a looped bag)


def _dense_outputs(result: Any) -> DenseOutputs:
    return DenseOutputs(
        None if result.segmentation is None else np.array(result.segmentation.mask),
        None if result.pose is None else np.asarray(result.pose.keypoints, np.float64),
        float(result.stats.ms))


def replay(source: FrameSource, incremental: Any, dense: Any | None, scorer: Scorer, *,
           sinks: Iterable[Any] = (), progress: Progress | None = None) -> ReplayResult:
    """
    Run every frame of ``source`` through ``incremental`` (and ``dense``), scoring each.

    The two pipelines alternate frame by frame, so that their times compare under the same
    conditions; each frame's dense outputs are scored and dropped (a long recording holds no
    more memory than a short one). Each processed frame goes to every sink's
    ``write(frame, result)``. Corrupt frames are skipped and listed.
    """
    started = time.perf_counter()
    sinks = list(sinks)
    skipped: list[SkippedFrame] = []
    incremental_s = dense_s = 0.0
    resets = 0
    pipelines = [incremental] if dense is None else [incremental, dense]
    for step in loop.run(source, pipelines):
        if isinstance(step, SkippedFrame):
            skipped.append(step)
        else:
            resets += step.reset
            incremental_s += step.ms[0] / 1e3
            reference = None
            if dense is not None:
                dense_s += step.ms[1] / 1e3
                reference = _dense_outputs(step.results[1])
            scorer.add(step.frame, step.results[0], reference)
            for sink in sinks:
                sink.write(step.frame, step.results[0])
        if progress is not None:
            progress.update(scorer.frames, len(skipped), scorer.running_active_fraction())
    if progress is not None:
        progress.update(scorer.frames, len(skipped), scorer.running_active_fraction(),
                        force=True)
        progress.finish()
    if scorer.frames == 0:
        if skipped:
            reasons = '; '.join(f'frame {s.index}: {s.reason}' for s in skipped[:3])
            why = f'{len(skipped)} corrupt: {reasons}'
        elif source.length is not None:
            why = f'it holds {source.length} frames; frame range {source.frames}'
        else:
            why = f'none could be decoded; frame range {source.frames}'
        raise ReplayError(f'{source.path}: no frame could be replayed ({why})')
    return ReplayResult(scorer, skipped, time.perf_counter() - started, incremental_s,
                        dense_s, resets)


def sweep(open_source: Callable[[], FrameSource], pipeline: Any, dense: Any | None,
          settings: Any, scales: Sequence[float], make_scorer: Callable[[], Scorer],
          progress: Callable[[float], Progress] | None = None) -> list[dict[str, Any]]:
    """
    Re-run the incremental ``pipeline`` at each sparsity scale; return one point per scale.

    Each pass replays the source again as :func:`replay` does, the ``dense`` reference (if
    any) beside the incremental pipeline (both from a reset): a pipeline timed alone runs
    faster than one that alternates with another, so each point's speedup is measured side by
    side, and no dense output is kept from pass to pass. The path choice is off in every pass
    (``sparsity.adaptive`` false): where it would pick a network's dense pass, the scale would
    change nothing, and the curve is the engine's. Each point has the scale, the incremental
    latency and speedup, the active fraction, agreement and ground-truth scores.
    """
    from sparse_perception import settings as settings_module

    points = []
    for scale in scales:
        scaled = settings_module.replace(settings, {'sparsity.scale': float(scale),
                                                    'sparsity.adaptive': False})
        pipeline.update(scaled)
        for each in (pipeline, dense):
            if each is not None:
                each.reset()
        with open_source() as source:
            result = replay(source, pipeline, dense, make_scorer(),
                            progress=progress(scale) if progress is not None else None)
        summary = result.scorer.summary()
        points.append({'scale': float(scale), 'frames': summary['frames'],
                       'latency_ms': summary['latency_ms'], 'speedup': summary['speedup'],
                       'active_fraction': summary['active_fraction'],
                       'macs_saved': summary['activity']['macs_saved'],
                       'agreement': summary['agreement'],
                       'ground_truth': summary['ground_truth']})
    pipeline.update(settings)
    pipeline.reset()
    return points
