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
One replay run from options to written report: what ``sparse-perception replay`` does.

:func:`run_job` opens the input and the ground truth, builds the incremental pipeline and its
dense reference, replays every frame into the output sinks, optionally sweeps the sparsity
scale, then writes ``report.json``, ``report.md``, ``frames.csv``, plots, pictures and the
output bag through a staging folder (see :mod:`.report`). It returns the report dictionary.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from sparse_perception.evaluation.provenance import environment
from sparse_perception.output_files import (interrupts_held, missing_folders, nearest_existing,
                                            overlap, remove_empty)
from sparse_perception.replay import report as report_module
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.groundtruth import KeypointTruth, load_truth, MaskTruth
from sparse_perception.replay.runner import (
    build_pipeline, class_id, Progress, replay, Scorer, sweep)
from sparse_perception.replay.sources import check_apart, FrameRange, open_source
from sparse_perception.settings import HEADS

LATENCY_PLOT = 'latency.png'
ACTIVITY_PLOT = 'active_fraction.png'
SWEEP_PLOT = 'sweep.png'
CONTACT_SHEET = 'contact_sheet.png'
VIDEO = 'annotated.mp4'
OUTPUT_BAG = 'output_bag'


@dataclass
class ReplayJob:
    """Everything a replay run needs (the command line's options, parsed)."""

    source: Path  # rosbag2 folder, ROS 1 bag, video or image folder
    out: Path
    settings: Any  # PerceptionSettings
    heads: tuple[str, ...] = HEADS
    topic: str | None = None
    rate: float | None = None
    frames: FrameRange = field(default_factory=FrameRange)
    dense: bool = True
    ground_truth: Sequence[Path] = ()
    gt_class: str = 'person'
    pck_alpha: float = 0.2
    pckh_alpha: float = 0.5
    sweep: Sequence[float] = ()
    bag: bool = True
    bag_storage: str = 'mcap'
    bag_namespace: str = '/sparse_perception'
    contact_sheet: int = 12
    video: bool = False
    progress: bool = False
    # Other files the run reads (the parameters file): none of its outputs may replace them.
    reads: Sequence[Path] = ()
    # The command line that started the run, for the report ('' when not run from one).
    command: str = ''
    # Builds the pipelines, with the signature of Pipeline; None: the package's Pipeline.
    pipeline: Callable[..., Any] | None = None
    log: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))


def default_pipeline() -> Callable[..., Any]:
    """Return what a replay builds its pipelines with unless told otherwise: the Pipeline."""
    from sparse_perception.pipeline import Pipeline

    return Pipeline


def _truths(paths: Sequence[Path]) -> tuple[MaskTruth | None, KeypointTruth | None]:
    masks = keypoints = None
    for path in paths:
        truth = load_truth(path)
        if isinstance(truth, MaskTruth):
            if masks is not None:
                raise ReplayError(f'two mask ground truths given ({masks.path}, {path}); '
                                  'give one')
            masks = truth
        else:
            if keypoints is not None:
                raise ReplayError(f'two keypoint ground truths given ({keypoints.path}, '
                                  f'{path}); give one')
            keypoints = truth
    return masks, keypoints


# Everything a run writes into --out. A new run removes the ones it does not write again, so
# that no output of an earlier run (a bag, a contact sheet, a video) sits beside a new report;
# nothing else in --out is touched.
OUTPUTS = (report_module.REPORT_JSON, report_module.REPORT_MD, report_module.FRAMES_CSV,
           LATENCY_PLOT, ACTIVITY_PLOT, SWEEP_PLOT, CONTACT_SHEET, VIDEO, OUTPUT_BAG)


def _check_out(out: Path, inputs: Sequence[Path], reads: Sequence[Path] = ()) -> None:
    """
    Refuse an --out that overlaps an input or cannot be written, before any work.

    ``reads`` are other files the run reads (a parameters file, a model or gate file): --out
    may hold them, but none of the outputs it writes or replaces may be one of them.
    """
    check_apart(out, inputs, '--out')
    for name in OUTPUTS:
        for read in reads:
            if overlap(out / name, [read]) is not None:
                raise ReplayError(f'--out {out}: this run writes its {name} over {read}, '
                                  'which it reads; move that file or choose another --out')
    if out.exists() and not out.is_dir():
        raise ReplayError(f'--out {out} is a file; expected a folder (it is created if absent)')
    existing = nearest_existing(out)
    if existing.exists() and not existing.is_dir():
        raise ReplayError(f'--out {out} lies under the file {existing}; expected a folder')
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ReplayError(f'--out {out}: {existing} is not writable; choose another folder')
    # Try it: permissions alone do not tell (root, read-only file systems, /proc).
    made = ([] if out.exists() else [out]) + missing_folders(out)  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix='.probe-', dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ReplayError(f'--out {out}: cannot write there ({exc.filename or out}: '
                          f'{exc.strerror or exc}); choose another folder') from None
    finally:
        remove_empty(made)


def _files_of(settings: Any) -> list[Path]:
    """Return the model and gate files the settings name by path (a registered name: none)."""
    named = (settings.model.segmentation, settings.model.pose, settings.sparsity.gate_model)
    return [Path(value).expanduser() for value in named
            if value and Path(value).expanduser().is_file()]


def run_job(job: ReplayJob) -> dict[str, Any]:
    """Run the replay described by ``job``; return the report (also written to job.out)."""
    started = time.perf_counter()
    _check_out(job.out, [job.source, *job.ground_truth], [*job.reads, *_files_of(job.settings)])
    masks, keypoints = _truths(job.ground_truth)
    if masks is not None and 'segmentation' not in job.heads:
        raise ReplayError('mask ground truth needs the segmentation head (--heads segmentation '
                          'or segmentation,pose)')
    if keypoints is not None and 'pose' not in job.heads:
        raise ReplayError('keypoint ground truth needs the pose head (--heads pose or '
                          'segmentation,pose)')
    # Videos keep their own rate unless one is given; frames of a folder/video get stamps.
    opener = {'topic': job.topic, 'rate': job.rate, 'frames': job.frames}
    source = open_source(job.source, keep_messages=job.bag, **opener)
    if job.bag:
        from sparse_perception.replay.outbag import check_apart_topics
        try:
            check_apart_topics(source.topic, job.bag_namespace)
        except ReplayError:
            source.close()
            raise
    for leftover in report_module.leftovers(job.out):
        job.log(f'note: {leftover} is the staging folder of a run that was killed; it holds '
                'no finished output: remove it')
    pipelines: list[Any] = []
    sinks: list[Any] = []
    staging = None
    try:
        factory = job.pipeline if job.pipeline is not None else default_pipeline()
        incremental = build_pipeline(factory, job.settings, job.heads, incremental=True)
        pipelines.append(incremental)
        dense = None
        if job.dense:
            dense = build_pipeline(factory, job.settings, job.heads, incremental=False)
            pipelines.append(dense)
        gt_class = None
        if masks is not None:
            gt_class = class_id(tuple(incremental.class_names), job.gt_class)
        joint_names = tuple(incremental.joint_names)

        def make_scorer() -> Scorer:
            return Scorer(masks, keypoints, gt_class, joint_names, job.pck_alpha,
                          job.pckh_alpha)

        staging = report_module.Staging(job.out)
        outputs: dict[str, Any] = {}
        bag = None
        if job.bag:
            from sparse_perception.replay.outbag import OutputBag
            bag = OutputBag(staging.path / OUTPUT_BAG, source.topic, source.msgtype,
                            job.bag_storage, job.bag_namespace)
            sinks.append(bag)
        if job.contact_sheet > 0:
            from sparse_perception.replay.pictures import ContactSheet
            sinks.append(ContactSheet(staging.path / CONTACT_SHEET, job.contact_sheet,
                                      expected=source.expected_frames))
        if job.video:
            from sparse_perception.replay.pictures import AnnotatedVideo
            sinks.append(AnnotatedVideo(staging.path / VIDEO, source.rate_hz))
        try:
            result = replay(source, incremental, dense, make_scorer(), sinks=sinks,
                            progress=Progress(source.expected_frames, job.progress))
        finally:
            source.close()
        for sink in sinks:
            sink.close()
        _warn_unmatched(result.scorer, masks, keypoints, source, job.log)
        if source.index_note:
            job.log(f'note: {source.index_note}')
        if bag is not None:
            outputs['bag'] = bag.describe()
        if job.contact_sheet > 0 and (staging.path / CONTACT_SHEET).exists():
            outputs['contact_sheet'] = CONTACT_SHEET
        if job.video:
            outputs['video'] = VIDEO

        points = []
        sweep_started = time.perf_counter()
        if job.sweep:
            def reopen():
                return open_source(job.source, **opener)

            def bar(scale):
                if job.progress:
                    job.log(f'sweep: sparsity.scale = {scale:g}')
                return Progress(source.expected_frames, job.progress)

            points = sweep(reopen, incremental, dense, job.settings, job.sweep, make_scorer,
                           bar)

        sweep_s = time.perf_counter() - sweep_started
        summary = result.scorer.summary()
        report = _assemble(job, source, summary, result, points, outputs)
        _plots(report, result.scorer.records, points, staging.path, job.log)
        report_module.write_frames_csv(result.scorer.records, staging.path /
                                       report_module.FRAMES_CSV)
        report['outputs']['frames_csv'] = report_module.FRAMES_CSV
        report['wall_s'] = time.perf_counter() - started
        report['timing'] = {
            'total_s': report['wall_s'], 'replay_loop_s': result.wall_s,
            'incremental_process_s': result.incremental_s,
            'dense_process_s': result.dense_s, 'sweep_s': sweep_s,
            # reading, decoding, scoring, output bag, pictures, plots, start-up
            'other_s': report['wall_s'] - result.incremental_s - result.dense_s - sweep_s}
        (staging.path / report_module.REPORT_MD).write_text(
            report_module.text_safe(report_module.markdown(report)) + '\n', encoding='utf-8')
        report_module.write_json(report, staging.path / report_module.REPORT_JSON)
        staging.commit(owned=OUTPUTS)
        return report
    finally:
        # Also after a first Ctrl-C: a second one must not leave the staging folder behind.
        with interrupts_held():
            source.close()
            for sink in sinks:  # after a failure: release files before the staging goes
                with contextlib.suppress(Exception):
                    sink.close()
            if staging is not None:
                staging.abort()
        for pipeline in pipelines:
            pipeline.close()


def _warn_unmatched(scorer: Scorer, masks: Any, keypoints: Any, source: Any, log) -> None:
    """Say so when annotations matched no frame, or are matched by position to another count."""
    truth = scorer.ground_truth() or {}
    for name, given in (('masks', masks), ('keypoints', keypoints)):
        if given is None:
            continue
        if not truth[name]['frames_scored']:
            log(f'warning: the ground-truth {name} in {given.path} matched no frame (frames '
                'are matched by file name for image folders; for recordings masks by the frame '
                'number in their names, else by position)')
            continue
        # A recording keeps no file names: its i-th frame takes the i-th annotation, which is
        # right only if both start at the same frame. Different counts hint that they do not.
        count = given.describe()['files' if name == 'masks' else 'frames']
        if source.kind == 'folder' and (name == 'masks' or given.named):
            continue  # matched by file name
        if name == 'masks' and given.numbered:  # frame i takes the mask numbered i
            if source.length is not None and given.highest >= source.length:
                log(f'warning: {given.path} holds {count} annotated frames, numbered up to '
                    f'{given.highest}, but the input {source.length}; they are matched by '
                    'frame number (frame i of the input with the mask numbered i): check that '
                    'both start at the same frame of one recording')
        elif source.length is not None and count != source.length:
            log(f'warning: {given.path} holds {count} annotated frames but the input '
                f'{source.length}; they are matched by position (frame i of the input with '
                'annotation i): check that both start at the same frame of one recording')


def _assemble(job: ReplayJob, source: Any, summary: dict, result: Any, points: list,
              outputs: dict) -> dict[str, Any]:
    from sparse_perception import settings as settings_module
    from sparse_perception.gates.learned import describe as describe_gate

    flat = settings_module.flatten(job.settings)
    factory = job.pipeline if job.pipeline is not None else default_pipeline()
    return {
        'schema': report_module.SCHEMA,
        'input': source.describe(),
        'pipeline': f'{factory.__module__}:{factory.__qualname__}',
        'command': job.command or None,
        'heads': list(job.heads),
        'frames': summary['frames'],
        'skipped_frames': len(result.skipped),
        'state_resets': result.resets,
        'skipped': [{'index': s.index, 'stamp_ns': s.stamp_ns, 'reason': s.reason}
                    for s in result.skipped],
        'latency_ms': summary['latency_ms'],
        'speedup': summary['speedup'],
        'active_fraction': summary['active_fraction'],
        'activity': summary['activity'],
        'agreement': summary['agreement'],
        'pose': summary['pose'],
        'ground_truth': summary['ground_truth'],
        'sweep': points,
        'settings': {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()},
        'gate_file': describe_gate(job.settings),  # a gate trained again keeps its path
        'wall_s': None,  # set when everything but the report files is written
        'environment': environment(job.settings.model.device),
        'outputs': outputs,
    }


def _plots(report: dict, records: list, points: list, folder: Path, log) -> None:
    from sparse_perception.replay import plots
    outputs = report['outputs']
    try:
        plots.latency_plot(records, folder / LATENCY_PLOT)
        outputs['latency_plot'] = LATENCY_PLOT
        plots.activity_plot(records, folder / ACTIVITY_PLOT)
        outputs['activity_plot'] = ACTIVITY_PLOT
        if points and plots.sweep_plot(points, folder / SWEEP_PLOT):
            outputs['sweep_plot'] = SWEEP_PLOT
    except plots.PlotsUnavailable as exc:
        outputs['plots_missing'] = str(exc)
        log(f'note: {exc}')
