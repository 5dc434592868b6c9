#!/usr/bin/env python3
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
BlazePose following several people: what it finds, and what each person costs.

    .venv/bin/python bench/pose_people.py [--max-people 4] [--detect-windows 3]
        [--vtest-frames 795]

Writes bench/results/pose_people.json and .md:

1. COCO stills (the shared folder's four images, 12 annotated people): PCK@0.2 of the person
   box over every annotated person, COCO-17 joints, after three frames of each still (the
   crops settle on the landmarks), for ``pose.max_people`` 1, ``--max-people``, and
   ``--max-people`` with ``pose.detect_windows`` at ``--detect-windows``, dense reference and
   incremental pipeline, the pose head alone (people come from the person detector) and with
   the segmentation head (its mask's person regions propose people too,
   ``pose.mask_proposal_height``);
2. cost per person: the pose head's milliseconds per frame on a frame holding two people (COCO
   785 twice, one above the other), still and panning 2 pixels a frame, for 1 and 2 people,
   the two pipelines taking turns frame by frame;
3. vtest (``--vtest-frames`` frames of the full clip): frames in which the incremental
   pipeline reports anybody, people per frame and the pose head's time, for the same
   settings, pose alone and with segmentation, with
   ``sparsity.adaptive`` off: the path choice follows measured time, and the tracking follows
   the path's outputs, so with it on two runs find people in different frames.

The machine's load average is recorded before and after: the timings mean little on a
machine that other work shares.
"""

import argparse
import json
import os
from pathlib import Path
import platform
import subprocess
import sys
import time

import cv2
import numpy as np

from sparse_perception import settings as st
from sparse_perception.evaluation.provenance import cpu_model
from sparse_perception.output_files import write_atomic
from sparse_perception.pipeline import Pipeline
from sparse_perception.replay.groundtruth import read_coco
from sparse_perception.replay.metrics import Pck
from sparse_perception.shared_data import shared_path

RESULTS = Path(__file__).resolve().parent / 'results'
COCO = 'data/coco-stills/tests/data/coco'


# With the segmentation head, its person regions propose people (off by default).
PROPOSALS = {'pose.mask_proposal_height': 32}


def _settings(max_people, heads=('pose',), **changes):
    values = {'model.pose': 'blazepose_coco17', 'model.device': 'cpu',
              'pose.max_people': max_people,
              **(PROPOSALS if 'segmentation' in heads else {})}
    values.update(changes)
    return st.replace(st.PerceptionSettings(), values)


def _rgb(path):
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f'cannot read {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def coco_pck(max_people, heads, windows=0):
    """Score PCK@0.2 over every annotated person of the COCO stills, dense and incremental."""
    folder = shared_path(COCO)
    truth = read_coco(folder / 'test_coco.json')
    names = sorted(p.name for p in folder.glob('*.jpg'))
    out = {}
    for name, incremental in (('dense', False), ('incremental', True)):
        pck, found = Pck(), []
        for index, file in enumerate(names):
            pipeline = Pipeline(_settings(max_people, heads, **{'pose.detect_windows': windows}),
                                heads=heads,
                                incremental=incremental)
            image = _rgb(folder / file)
            for _ in range(3):
                pose = pipeline.process(image).pose
            people = truth.for_frame(index, file)
            pck.add(np.asarray(pose.keypoints, np.float64), people)
            found.append({'image': file, 'annotated': len(people), 'found': pose.people})
        out[name] = {**pck.summary(), 'images': found}
    return out


def person_costs(scene, frames=64):
    """
    Time the pose head per frame on two people, still or panning, after a warm-up.

    Two pipelines, following one person and two, run each frame in turn (so a load that comes
    and goes falls on both).
    """
    person = _rgb(shared_path(f'{COCO}/000000000785.jpg'))
    two = np.ascontiguousarray(np.concatenate([person, person], 0))
    counts = (1, 2)
    pipelines = [Pipeline(_settings(n), heads=('pose',)) for n in counts]
    ms, people = [[] for _ in counts], [[] for _ in counts]
    for i in range(frames):
        frame = two if scene == 'still' else np.ascontiguousarray(np.roll(two, 2 * i, axis=1))
        for k, pipeline in enumerate(pipelines):
            result = pipeline.process(frame)
            if i >= 4:  # the first frames detect and run dense
                ms[k].append(result.stats.heads['pose'].ms)
                people[k].append(result.pose.people)
    return [{'scene': scene, 'max_people': n, 'frames_timed': len(ms[k]),
             'people_mean': float(np.mean(people[k])), 'ms_p50': float(np.median(ms[k])),
             'ms_mean': float(np.mean(ms[k]))} for k, n in enumerate(counts)]


def vtest_people(max_people, frames, heads, windows=0):
    """Count frames with anybody and people per frame, and time the pose head, on vtest."""
    capture = cv2.VideoCapture(str(shared_path('data/vtest/vtest.avi')))
    pipeline = Pipeline(_settings(max_people, heads, **{'sparsity.adaptive': False,
                                                        'pose.detect_windows': windows}),
                        heads=heads)
    counts, ms = [], []
    for _ in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        result = pipeline.process(np.ascontiguousarray(frame[..., ::-1]))
        counts.append(result.pose.people)
        ms.append(result.stats.heads['pose'].ms)
    return {'max_people': max_people, 'heads': '+'.join(heads), 'detect_windows': windows,
            'frames': len(counts), 'pose_ms_p50': float(np.median(ms)) if ms else None,
            'pose_ms_mean': float(np.mean(ms)) if ms else None,
            'frames_with_people': int(sum(1 for c in counts if c)),
            'people_per_frame_mean': float(np.mean(counts)) if counts else None,
            'most_people_in_a_frame': int(max(counts)) if counts else None}


def _commit():
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def _loads(values):
    return '/'.join(f'{v:.1f}' for v in values)


def _ms(value):
    return '-' if value is None else f'{value:.2f}'


def markdown(doc):
    lines = ['# BlazePose following several people (bench/pose_people.py)', '',
             f"- machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
             f"torch {doc['machine']['torch']} ({doc['machine']['threads']} thread), "
             f"Python {doc['machine']['python']}; load average (1, 5, 15 min) "
             f"{_loads(doc['machine']['load_average_before'])} before, "
             f"{_loads(doc['machine']['load_average_after'])} after",
             f"- git commit: {doc['commit']}",
             f"- command: `{doc['command']}`, {doc['seconds']:.0f} s",
             '- settings: the package defaults, `model.pose: blazepose_coco17`, '
             '`model.device: cpu`, `pose.max_people` and `pose.detect_windows` as given; with the '
             'segmentation head '
             '`pose.mask_proposal_height: 32`', '',
             '## COCO stills: PCK@0.2 of the person box over all 12 annotated people', '',
             '| heads | max_people | detect_windows | pipeline | PCK | joints scored | people '
             'found per image |', '|---|---|---|---|---|---|---|']
    for key, result in doc['coco'].items():
        heads, max_people, windows = (key.split(':') + ['0'])[:3]
        for name in ('dense', 'incremental'):
            r = result[name]
            found = ', '.join(f"{i['found']}/{i['annotated']}" for i in r['images'])
            lines.append(f"| {heads} | {max_people} | {windows} | {name} | {r['pck']:.4f} | "
                         f"{r['joints_scored']} | {found} |")
    lines += ['', 'People found / annotated, per image in file-name order: with every slot '
              'free the detector runs on each frame, so what is not found was not detected '
              '(MediaPipe pose_detection, score 0.5), nor proposed by the segmentation mask '
              '(selfie_segmentation) and confirmed by the landmark network.', '',
              '## Cost per person (pose head, ms per frame; COCO 785 twice, one above the '
              'other)', '',
              'The two pipelines of a scene ran each frame in turn.', '',
              '| scene | max_people | people found | p50 ms | mean ms |', '|---|---|---|---|---|']
    for r in doc['cost']:
        lines.append(f"| {r['scene']} | {r['max_people']} | {r['people_mean']:.2f} | "
                     f"{r['ms_p50']:.2f} | {r['ms_mean']:.2f} |")
    lines += ['', '## vtest: frames in which the incremental pipeline reports anybody '
              '(`sparsity.adaptive: false`)', '',
              '| heads | max_people | detect_windows | frames | frames with people | people per '
              'frame | most in a frame | pose head p50 / mean ms |',
              '|---|---|---|---|---|---|---|---|']
    for r in doc['vtest']:
        lines.append(f"| {r['heads']} | {r['max_people']} | {r.get('detect_windows', 0)} | "
                     f"{r['frames']} | "
                     f"{r['frames_with_people']} | {r['people_per_frame_mean']:.3f} | "
                     f"{r['most_people_in_a_frame']} | {_ms(r.get('pose_ms_p50'))} / "
                     f"{_ms(r.get('pose_ms_mean'))} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--max-people', type=int, default=4)
    parser.add_argument('--vtest-frames', type=int, default=795)
    parser.add_argument('--detect-windows', type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    start = time.perf_counter()
    doc = {'commit': _commit(),
           'command': 'python bench/pose_people.py ' + ' '.join(argv or sys.argv[1:]),
           'machine': {'cpu': cpu_model(), 'cores': os.cpu_count(), 'torch': torch.__version__,
                       'threads': st.PerceptionSettings().model.threads,
                       'python': platform.python_version(),
                       'load_average_before': list(os.getloadavg())}}
    variants = [(heads, n, w) for heads in (('pose',), ('segmentation', 'pose'))
                for n, w in ((1, 0), (args.max_people, 0), (args.max_people, args.detect_windows))]
    doc['coco'] = {f"{'+'.join(heads)}:{n}:{w}": coco_pck(n, heads, w)
                   for heads, n, w in variants}
    doc['cost'] = [row for scene in ('still', 'panning') for row in person_costs(scene)]
    doc['vtest'] = [vtest_people(n, args.vtest_frames, heads, w) for heads, n, w in variants]
    doc['seconds'] = time.perf_counter() - start
    doc['machine']['load_average_after'] = list(os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / 'pose_people.json', json.dumps(doc, indent=2) + '\n')
    write_atomic(RESULTS / 'pose_people.md', markdown(doc))
    print(markdown(doc))


if __name__ == '__main__':
    main()
