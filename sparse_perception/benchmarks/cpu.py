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
``sparse-perception bench cpu``: the whole pipeline on the CPU, each way a user could run it.

In one process, on the same decoded frames (the bundled vtest40 clip, or a given bag or
video), for each head (segmentation, pose, and both together: the main job) with the default
models and settings, four pipelines run frame by frame in alternation, so that all see the
same machine load:

- ``dense_torch``: the dense reference pipeline, stock torch (``model.runtime: torch``);
- ``engine_dense``: the incremental pipeline with ``change.refresh_period: 1``, the detector
  on every frame and no path choice, i.e. the engine's own dense pass on every frame;
- ``incremental``: the incremental pipeline at the shipped defaults (its dense passes on the
  default runtime, LiteRT where installed);
- ``litert``: the dense reference pipeline with ``model.runtime: litert`` (the models' own
  .tflite files on the TFLite interpreter, XNNPACK, the same thread count).

Each pass over the frames starts from a reset (the first frame of a pass is dense for the
incremental pipelines); every ``Pipeline.process`` call is timed (time.perf_counter), after
one untimed warm-up frame. Reported per run: p50, p90 (as :mod:`evaluation.stats` defines
them) and mean ms per frame; MACs executed over dense MACs (as the engine counts them); mask
agreement and keypoint error against ``dense_torch`` on the same frame; frames where the
person count differs. Then, unless ``--no-contention``, one more pass with two busy processes
(started and stopped here) on the CPU gives the contended p50. ``--json`` writes the results
and a markdown report beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

from sparse_perception.cli import path_argument
from sparse_perception.evaluation import loop, provenance
from sparse_perception.evaluation.stats import median, percentile
from sparse_perception.settings import HEADS

ENGINES = ('dense_torch', 'engine_dense', 'incremental', 'litert')
# Each group is one set of pipelines measured on its own: every head alone, and all together.
HEAD_GROUPS = {**{head: (head,) for head in HEADS}, 'both': HEADS}
BUSY_PROCESSES = 2  # the contended pass: a robot's CPU shared with other busy nodes
BUSY_SETTLE_S = 0.5  # lets the busy processes start spinning before the contended pass
# A busy process spins until the benchmark that started it is gone, however it ended (a
# benchmark killed outright cannot stop it, and it would burn a core for good).
# Its argument is the benchmark's process id: it may already be gone when the loop starts.
BUSY_LOOP = 'import os, sys\nwhile os.getppid() == int(sys.argv[1]): pass'
# The decoded frames the benchmark may hold (it replays them, alternating pipelines).
FRAME_BUDGET_BYTES = 4 * 2**30


def register(subparsers: Any) -> None:
    """Add ``cpu`` to the ``bench`` group."""
    parser = subparsers.add_parser(
        'cpu', help='the pipeline on the CPU: dense torch, engine dense, incremental, LiteRT',
        description='Time the perception pipeline per head (segmentation, pose, both) on the '
        'same frames, alternating frame by frame: dense torch, the engine own dense pass, '
        'the incremental pipeline at the defaults and the dense pipeline on LiteRT; then again '
        'under CPU contention. Run it on a quiet machine.')
    parser.add_argument('input', nargs='?', type=path_argument, metavar='BAG',
                        help='a rosbag2 folder, ROS 1 bag, video or image folder '
                        '[the bundled vtest40 clip]')
    parser.add_argument('--topic', help="the bag's image topic [its only one]")
    parser.add_argument('--json', type=path_argument, metavar='PATH',
                        help='write the results here, and a markdown report beside them '
                        '(same name, .md)')
    parser.add_argument('--frames', type=int, default=None, metavar='N',
                        help='use the first N frames [all; at most 4 GiB of them decoded, '
                        'all held in memory]')
    parser.add_argument('--size', type=_size, default=None, metavar='WxH',
                        help='resize every frame to this size first (bilinear), to stand for '
                        'a camera of that size [as decoded]')
    parser.add_argument('--passes', type=int, default=3, metavar='N',
                        help='timed passes over the frames, each from a reset [3]')
    parser.add_argument('--threads', type=int, default=None, metavar='N',
                        help='model.threads for torch and LiteRT (0 = all cores) '
                        '[the settings default]')
    parser.add_argument('--no-contention', action='store_true',
                        help='skip the pass under two busy processes')
    parser.add_argument('--heads', default=','.join(HEAD_GROUPS), metavar='LIST',
                        help='comma-separated head groups, each measured on its own: '
                        f'{", ".join(HEAD_GROUPS)} '
                        f'[{",".join(HEAD_GROUPS)}]')
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; print the markdown report."""
    groups = tuple(h.strip() for h in args.heads.split(',') if h.strip())
    bad = [h for h in groups if h not in HEAD_GROUPS]
    if bad or not groups:
        print(f'--heads {args.heads!r}: expected a comma-separated list from '
              f'{", ".join(HEAD_GROUPS)}', file=sys.stderr)
        return 2
    twice = next((h for h in groups if groups.count(h) > 1), None)
    if twice:  # it would be measured twice and reported as two sets of rows of one name
        print(f'--heads {args.heads!r}: {twice} is given twice', file=sys.stderr)
        return 2
    for flag, value, low in (('--frames', args.frames, 1), ('--passes', args.passes, 1),
                             ('--threads', args.threads, 0)):
        if value is not None and value < low:
            print(f'{flag} {value}: expected at least {low}', file=sys.stderr)
            return 2
    from sparse_perception import settings as st
    try:
        if args.threads is not None:
            st.check_flags([('--threads', 'model.threads', args.threads)])
    except st.SettingError as exc:
        print(exc, file=sys.stderr)
        return 2
    from sparse_perception.output_files import (check_outputs, FoldersMade, OutputError,
                                                report_pair, write_reports)
    from sparse_perception.pipeline import ModelLoadError
    from sparse_perception.replay.sources import ReplayError
    from sparse_perception.shared_data import bundled_clip

    outputs = []
    if args.json:
        path = Path(args.json)
        outputs = [('--json', path), ('the report beside --json', report_pair(path)[1])]
    with FoldersMade(outputs) as folders:
        try:
            # Before minutes of measuring: a path that cannot be written, or that is the input.
            check_outputs(outputs, [args.input if args.input else bundled_clip()],
                          create_folders=True)
            result = run(args.input, topic=args.topic, frames=args.frames, passes=args.passes,
                         threads=args.threads, contention=not args.no_contention,
                         groups=groups, command=_command(args), size=args.size)
        except (ModelLoadError, ReplayError, OutputError, OSError) as exc:
            print(f'bench cpu: {exc}', file=sys.stderr)
            return 1
        report = markdown(result)
        print(report)  # first: a failed write below loses no result
        status = write_reports(outputs, (json.dumps(result, indent=2) + '\n', report),
                               'bench cpu')
        folders.written = status == 0
        return status


def _command(args: argparse.Namespace) -> str:
    """Return the command line that repeats this run (from the parsed arguments)."""
    import shlex

    words = ['sparse-perception', 'bench', 'cpu'] + ([str(args.input)] if args.input else [])
    size = f'{args.size[0]}x{args.size[1]}' if args.size else None
    for flag, value in (('--topic', args.topic), ('--frames', args.frames), ('--size', size),
                        ('--passes', args.passes), ('--threads', args.threads),
                        ('--heads', args.heads), ('--json', args.json)):
        if value is not None:
            words += [flag, str(value)]
    if args.no_contention:
        words.append('--no-contention')
    return shlex.join(words)


# -- the measurement ----------------------------------------------------------------------------

def run(source: str | os.PathLike | None = None, *, topic: str | None = None,
        frames: int | None = None, passes: int = 3, threads: int | None = None,
        contention: bool = True, groups: Sequence[str] = tuple(HEAD_GROUPS),
        command: str = '', size: tuple[int, int] | None = None) -> dict:
    """Run the benchmark and return the result dict (see the module docstring)."""
    import torch

    from sparse_perception import settings as st

    started = time.perf_counter()
    load_before = provenance.load_average()
    clip, input_label = _frames(source, topic, frames, size)
    changes: dict[str, Any] = {'model.device': 'cpu'}  # the CPU benchmark, GPU or not
    if threads is not None:
        changes['model.threads'] = threads
    base = st.replace(st.PerceptionSettings(), changes)
    variants = {
        'dense_torch': ({'model.runtime': 'torch'}, False),
        # The engine's own dense pass on every frame: a refresh each frame, the detector each
        # frame, never the dense runtime instead.
        'engine_dense': ({'change.refresh_period': 1, 'pose.detect_period': 1,
                          'sparsity.adaptive': False, 'model.runtime': 'torch'}, True),
        'incremental': ({}, True),
        'litert': ({'model.runtime': 'litert'}, False),
    }
    runs, details = [], []
    for group in groups:
        pipelines = _pipelines(base, variants, HEAD_GROUPS[group])
        measured = _quiet(pipelines, clip, passes, HEAD_GROUPS[group])
        unchanged = _unchanged(pipelines['incremental'], clip)
        contended = _contended(pipelines, clip) if contention else {}
        for engine in ENGINES:
            m = measured[engine]
            runs.append({
                'engine': engine, 'head': group,
                'p50_ms': _round(percentile(m['ms'], 50)),
                'p90_ms': _round(percentile(m['ms'], 90)),
                'mean_ms': _round(statistics.fmean(m['ms'])),
                'contended_p50_ms': _round(percentile(contended[engine], 50))
                if contended else None,
                'macs_ratio': None if engine in ('dense_torch', 'litert') else
                _ratio(m['macs'], m['dense_macs']),
                'agreement': m['agreement'],
                'keypoint_px_p50': m['keypoint_px_p50'],
                'count_mismatch_frames': m['count_mismatch_frames'],
                # The same picture again: what a frame in which nothing moved costs.
                'unchanged_p50_ms': _round(unchanged) if engine == 'incremental' else None,
            })
            details.append({'engine': engine, 'head': group, 'frames_timed': len(m['ms']),
                            'active_fraction': 1.0 if engine in ('dense_torch', 'litert')
                            else m['active_fraction'],
                            'dense_frames': m['dense_frames']})
        del pipelines
    by_key = {(r['engine'], r['head']): r for r in runs}

    def speedup(reference: str) -> float | None:
        ref, inc = by_key.get((reference, 'both')), by_key.get(('incremental', 'both'))
        if ref is None or inc is None or not inc['p50_ms']:
            return None
        return round(ref['p50_ms'] / inc['p50_ms'], 3)

    commit, dirty = provenance.source_commit()
    return {
        'machine': _machine(load_before),
        'torch': torch.__version__,
        'commit': commit,
        'threads': base.model.threads,
        'runs': runs,
        'speedup_vs_dense': speedup('dense_torch'),
        'speedup_vs_litert': speedup('litert'),
        'details': {
            'command': command,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'wall_s': round(time.perf_counter() - started, 1),
            'tree_dirty': dirty,
            'input': input_label,
            'frames': len(clip),
            'frame_size': list(clip[0].image.shape[:2]),
            'passes': passes,
            'contention': {'busy_processes': BUSY_PROCESSES, 'passes': 1} if contention
            else None,
            'settings': st.flatten(base),
            'engine_settings': {name: changes or {} for name, (changes, _) in variants.items()},
            'engine_incremental': {name: inc for name, (_, inc) in variants.items()},
            'runs': details,
        },
    }


def _size(text: str) -> tuple[int, int]:
    """Parse ``--size``: WIDTHxHEIGHT, each from 32 to 8192 pixels."""
    width, _, height = text.partition('x')
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080') \
            from None
    if not all(32 <= side <= 8192 for side in size):
        raise argparse.ArgumentTypeError(f'{text!r}: each side from 32 to 8192 pixels')
    return size


def _frames(source, topic, count, size=None) -> tuple[list, str]:
    """Decode the frames once (resized to ``size``): (the frames, a label of the input)."""
    import dataclasses

    from sparse_perception.replay.sources import Frame, input_kind, open_source, ReplayError
    from sparse_perception.shared_data import bundled_clip

    path = Path(source) if source is not None else bundled_clip()
    # An image folder has no frame rate; the benchmark times frames, so their stamps are
    # only labels (one a second).
    rate = 1.0 if input_kind(path)[0] == 'folder' else None
    frames, held = [], 0
    with open_source(path, topic=topic, rate=rate) as opened:
        for item in opened:
            if isinstance(item, Frame):
                if size is not None and item.image.shape[1::-1] != size:
                    item = dataclasses.replace(item, image=_resized(item.image, size))
                frames.append(item)
                held += item.image.nbytes
                if count is not None and len(frames) >= count:
                    break
                if held > FRAME_BUDGET_BYTES:
                    raise ReplayError(
                        f'{path}: its first {len(frames)} frames already take '
                        f'{held / 2**30:.1f} GiB decoded, and the benchmark holds every frame '
                        f'it times in memory; pass --frames {len(frames) - 1} or fewer')
    if not frames:
        raise ReplayError(f'{path}: no frame could be decoded')
    shapes = {f.image.shape for f in frames}
    if len(shapes) > 1:
        raise ReplayError(f'{path}: frames of several sizes {sorted(shapes)}; the benchmark '
                          'needs one size (a size change resets the pipelines)')
    label = f'{path.name} ({"bundled clip" if source is None else str(path)})'
    if size is not None:
        label += f', resized to {size[0]}x{size[1]} (bilinear)'
    return frames, label


def _resized(image, size: tuple[int, int]):
    """Return ``image`` resized to ``size`` (width, height), bilinear (OpenCV: --size)."""
    from sparse_perception.replay.sources import ReplayError

    try:
        import cv2
    except ImportError as exc:
        raise ReplayError(f'--size needs OpenCV (the opencv extra): {exc}') from None
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def _pipelines(base, variants: dict, heads: tuple[str, ...]) -> dict:
    from sparse_perception import settings as st
    from sparse_perception.pipeline import Pipeline

    return {name: Pipeline(st.replace(base, changes), heads=heads, incremental=incremental)
            for name, (changes, incremental) in variants.items()}


def _quiet(pipelines: dict, clip: list, passes: int, heads: tuple[str, ...]) -> dict:
    """Time every frame of every pass and compare each result with dense_torch's."""
    ordered = [pipelines[name] for name in ENGINES]
    loop.warm(ordered, clip[0])
    acc = {name: {'ms': [], 'macs': 0, 'dense_macs': 0, 'active': 0.0, 'dense_frames': 0,
                  'equal_pixels': 0, 'pixels': 0, 'keypoint_px': [], 'mismatch': 0}
           for name in ENGINES}
    reference = ENGINES.index('dense_torch')
    for _ in range(passes):
        for pipeline in ordered:
            pipeline.reset()
        for step in loop.run(clip, ordered, rotate=True):
            for name, result, ms in zip(ENGINES, step.results, step.ms):
                acc[name]['ms'].append(ms)
                _accumulate(acc[name], result, step.results[reference], heads)
    return {name: _summary(a, heads) for name, a in acc.items()}


def _unchanged(pipeline, clip: list, repeats: int = 10) -> float:
    """p50 ms of the incremental pipeline on its last picture shown again, unchanged."""
    pipeline.reset()
    for frame in clip[:4]:  # past the first, dense frame and the path choice's first samples
        pipeline.process(frame.image)
    picture = clip[min(3, len(clip) - 1)].image
    for _ in range(40):  # until a change map sees it hold still (maps may be skipped first)
        stats = pipeline.process(picture).stats
        if stats.change_measured and stats.changed_fraction == 0.0:
            break
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline.process(clip[min(3, len(clip) - 1)].image)
        times.append((time.perf_counter() - start) * 1e3)
    return median(times)


def _accumulate(acc: dict, result, reference, heads: tuple[str, ...]) -> None:
    for head in heads:
        stats = result.stats.heads[head]
        acc['macs'] += stats.macs
        acc['dense_macs'] += stats.dense_macs
        acc['active'] += stats.active_fraction * stats.dense_macs  # weighted by dense work
    acc['dense_frames'] += result.stats.dense
    if 'segmentation' in heads:
        got, want = result.segmentation.mask, reference.segmentation.mask
        acc['equal_pixels'] += int((got == want).sum())
        acc['pixels'] += want.size
    if 'pose' in heads:
        got, want = result.pose.keypoints, reference.pose.keypoints
        acc['mismatch'] += got.shape[0] != want.shape[0]
        acc['keypoint_px'] += _matched_distances(got, want)


def _matched_distances(got, want) -> list[float]:
    """Keypoint distances (pixels) of the persons found by both, paired nearest first."""
    import numpy as np

    if not len(got) or not len(want):
        return []
    # (P_got, P_want, K): distance of every keypoint between every pair of persons.
    distance = np.hypot(got[:, None, :, 0] - want[None, :, :, 0],
                        got[:, None, :, 1] - want[None, :, :, 1])
    cost = distance.mean(axis=2)
    out: list[float] = []
    used_got, used_want = set(), set()
    for flat in np.argsort(cost, axis=None):
        i, j = np.unravel_index(flat, cost.shape)
        if i not in used_got and j not in used_want:
            used_got.add(i)
            used_want.add(j)
            out += distance[i, j].tolist()
    return out


def _summary(acc: dict, heads: tuple[str, ...]) -> dict:
    pose = 'pose' in heads
    return {
        'ms': acc['ms'], 'macs': acc['macs'], 'dense_macs': acc['dense_macs'],
        'active_fraction': _round(acc['active'] / acc['dense_macs'], 4) if acc['dense_macs']
        else None,
        'dense_frames': acc['dense_frames'],
        'agreement': round(acc['equal_pixels'] / acc['pixels'], 6) if acc['pixels'] else None,
        'keypoint_px_p50': _round(median(acc['keypoint_px']), 4)
        if acc['keypoint_px'] else None,
        'count_mismatch_frames': int(acc['mismatch']) if pose else None,
    }


def _contended(pipelines: dict, clip: list) -> dict:
    """One more pass with busy processes on the CPU; ms per frame of each pipeline."""
    times: dict[str, list[float]] = {name: [] for name in ENGINES}
    busy: list[subprocess.Popen] = []
    try:
        for _ in range(BUSY_PROCESSES):
            busy.append(subprocess.Popen([sys.executable, '-c', BUSY_LOOP, str(os.getpid())]))
        time.sleep(BUSY_SETTLE_S)
        ordered = [pipelines[name] for name in ENGINES]
        for pipeline in ordered:
            pipeline.reset()
        for step in loop.run(clip, ordered, rotate=True):
            for name, ms in zip(ENGINES, step.ms):
                times[name].append(ms)
    finally:
        for process in busy:
            process.terminate()
        for process in busy:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return times


# -- helpers --------------------------------------------------------------------------------

def _ratio(macs: int, dense_macs: int) -> float | None:
    return round(macs / dense_macs, 4) if dense_macs else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _machine(load_before: list | None) -> dict:
    return {**provenance.machine(),
            **provenance.versions(('python', 'torch', 'ai_edge_litert', 'numpy', 'cv2')),
            'load_average_before': load_before, 'load_average_after': provenance.load_average()}


def _cell(value: Any, unit: str = '', digits: int = 1) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}{unit}'
    return f'{value}{unit}'


def markdown(result: dict) -> str:
    """Render the result as a markdown report."""
    d, m = result['details'], result['machine']
    extra = {(r['engine'], r['head']): r for r in d['runs']}
    lines = [
        '# The pipeline on the CPU: dense torch, engine dense, incremental, LiteRT', '',
        f"- input: {d['input']}, {d['frames']} frames of {d['frame_size'][1]}x"
        f"{d['frame_size'][0]}; passes: {d['passes']}, each from a reset, every frame timed "
        '(after one untimed warm-up frame), the four pipelines alternating frame by frame',
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); "
        f"model.threads {result['threads']} (torch and LiteRT)",
        f"- versions: Python {m['python']}, torch {m['torch']}, ai-edge-litert "
        f"{m['ai_edge_litert']}, numpy {m['numpy']}, OpenCV {m['opencv']}; {m['platform']}",
        f"- commit: {result['commit']}"
        + {True: ' (tracked files modified)', False: ' (clean)', None: ''}[d['tree_dirty']],
        f"- load average (1, 5, 15 min): before {m['load_average_before']}, after "
        f"{m['load_average_after']}",
        f"- command: `{d['command']}`, {d['date']}, {d['wall_s']} s", '',
        '| head | engine | p50 ms | p90 ms | mean ms | contended p50 ms | MACs / dense | '
        'active | mask agreement | keypoint px p50 | count mismatch |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in result['runs']:
        e = extra.get((r['engine'], r['head']), {})
        agreement = None if r['agreement'] is None else f"{r['agreement']:.3%}"
        lines.append(
            f"| {r['head']} | {r['engine']} | {_cell(r['p50_ms'])} | {_cell(r['p90_ms'])} | "
            f"{_cell(r['mean_ms'])} | {_cell(r['contended_p50_ms'])} | "
            f"{_cell(r['macs_ratio'], digits=3)} | {_cell(e.get('active_fraction'), digits=3)} "
            f"| {_cell(agreement)} | {_cell(r['keypoint_px_p50'], digits=3)} | "
            f"{_cell(r['count_mismatch_frames'])} |")
    lines += [
        '',
        'Speedup of the incremental pipeline, both heads, p50: '
        f"**{_cell(result['speedup_vs_dense'], 'x', 2)}** over dense torch, "
        f"**{_cell(result['speedup_vs_litert'], 'x', 2)}** over LiteRT.",
        '',
        'A frame in which nothing moved (the same picture again, once a change map has seen '
        'it hold still), incremental, p50 ms: '
        + ', '.join(f"{r['head']} {_cell(r['unchanged_p50_ms'])}" for r in result['runs']
                    if r['engine'] == 'incremental') + '.',
        '',
        'dense_torch: the dense reference pipeline on torch (`Pipeline(settings, '
        'incremental=False)`, `model.runtime: torch`); engine_dense: the incremental pipeline '
        "with a refresh every frame (the engine's own dense pass, the detector on every frame, "
        'no path choice); incremental: the shipped defaults (each network on the engine or on '
        'its dense runtime, whichever is measured faster; the person detector on every '
        '`pose.detect_period`-th frame while nobody is tracked, never twice on a picture a '
        'change map saw unchanged); litert: the dense reference pipeline with '
        '`model.runtime: litert`. '
        "MACs / dense is what the networks executed (the path choice's timing passes "
        "included) over what the dense reference's passes execute on the same frames (a "
        'network not run where the reference runs it counts its dense MACs as saved; the '
        'detector between its scheduled frames counts on neither side); the dense pipelines '
        'count no MACs of their own ("-"); active: the share of positions recomputed, '
        'weighted by dense MACs. Mask agreement, keypoint error (all keypoints of the persons '
        'both found, paired nearest first) and person count mismatches are against '
        'dense_torch on the same frame of the same pass. Contended: one pass with '
        f'{BUSY_PROCESSES} busy Python processes started and stopped by the benchmark.',
        '',
        '## Settings', '',
        'Defaults of `sparse_perception/settings.py` with these changes: '
        + ', '.join(f'`{k}: {v}`' for k, v in _changed(d['settings']).items()) + '; per '
        'engine: ' + '; '.join(
            f'{name}: ' + (', '.join(f'`{k}: {v}`' for k, v in changes.items()) or 'none')
            for name, changes in d['engine_settings'].items()) + '.', '',
        '<details><summary>every setting</summary>', '',
        '```', *[f'{k}: {v}' for k, v in d['settings'].items()], '```', '', '</details>',
    ]
    return '\n'.join(lines) + '\n'


def _changed(flat: dict) -> dict:
    from sparse_perception import settings as st

    defaults = st.flatten(st.PerceptionSettings())
    return {k: v for k, v in flat.items() if defaults.get(k) != v}
