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
How a spatial gate's accuracy holds at smaller frames than DAVIS's 854x480.

    .venv/bin/python bench/gate_resolution.py [--sizes 854x480 640x360 427x240 320x180]
        [--sequence parkour] [--set sparsity.gate_margin=3 ...] [--out bench/results/NAME.json]

Each size: the DAVIS sequence (every other frame, as ``eval accuracy``) and its masks resized
to it, the fully convolutional DeepLab dense and incremental (the glance gate, the path choice
off so that every frame runs the engine, package defaults otherwise, and ``--set``) in
alternation, scored as ``eval accuracy`` scores them (person IoU against the masks, MACs,
p50 speedup); and, frame by frame, the IoU of the incremental person mask against the dense
one. With ``--out`` it writes them with the machine, versions and commit, and a markdown table
beside the JSON.
"""

import argparse
import dataclasses
import json
from pathlib import Path
import sys

import cv2
import numpy as np

from sparse_perception.evaluation import accuracy
from sparse_perception.evaluation.sweep import finish_script, script_setup
from sparse_perception.gates.maker import person_class
from sparse_perception.pipeline import Pipeline
from sparse_perception.replay.sources import FrameRange


class _ResizedTruth:
    """A clip's masks at another size (nearest neighbour: a mask stays a mask)."""

    def __init__(self, truth, size: tuple[int, int]):
        self.truth, self.size = truth, size

    def for_frame(self, index: int, name: str = ''):
        mask = self.truth.for_frame(index, name)
        if mask is None:
            return None
        return cv2.resize(mask.astype(np.uint8), self.size, interpolation=cv2.INTER_NEAREST) > 0


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition('x')
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected WIDTHxHEIGHT') from None
    if min(size) < 32:
        raise argparse.ArgumentTypeError(f'{text!r}: at least 32 pixels each way')
    return size


def measure(clip, frames, truth, settings, size) -> dict:
    """Run dense and incremental on ``frames`` resized to ``size``; return the scores."""
    small = [dataclasses.replace(f, image=cv2.resize(f.image, size, interpolation=cv2.INTER_AREA))
             for f in frames]
    pipelines = [Pipeline(settings, heads=('segmentation',), incremental=incremental)
                 for incremental in (True, False)]
    names = pipelines[0].class_names
    runs = accuracy.run_head(pipelines, 'segmentation', small)
    scores = accuracy.score(clip, small, _ResizedTruth(truth, size), runs[0], runs[1], names)
    person = person_class(tuple(names))
    versus = []
    for gated, dense in zip(runs[0].masks, runs[1].masks):
        a, b = gated == person, dense == person
        union = int(np.count_nonzero(a | b))
        versus.append(np.count_nonzero(a & b) / union if union else 1.0)
    keys = ('dense_iou', 'incremental_iou', 'iou_drop_points', 'agreement', 'macs_ratio',
            'speedup')
    return {'size': list(size), **{k: scores[k] for k in keys},
            'person_iou_vs_dense': {'mean': float(np.mean(versus)), 'min': float(min(versus)),
                                    'per_frame': [round(float(v), 4) for v in versus]}}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', type=_size,
                        default=[(854, 480), (640, 360), (427, 240), (320, 180)])
    parser.add_argument('--sequence', default='parkour')
    parser.add_argument('--set', nargs='*', default=[],
                        help='setting=value pairs on top of the glance gate and defaults')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    changes = {'model.segmentation': accuracy.SEGMENTATION_MODEL, 'model.pose': '',
               'sparsity.adaptive': False, 'sparsity.gate': 'glance'}
    # The settings (--set NAME=VALUE typed as eval sweep's --point) and the outputs, checked
    # before the measuring and never over the shared data.
    settings, md, changes = script_setup(parser, changes, args.set, args.out)
    clip = accuracy.davis_clip(args.sequence)
    frames = accuracy.read_frames(clip, FrameRange.parse(accuracy.DAVIS_FRAMES))
    truth = accuracy.load_truth(clip)
    rows = []
    for size in args.sizes:
        rows.append(measure(clip, frames, truth, settings, size))
        row = rows[-1]
        print(json.dumps({k: row[k] for k in ('size', 'dense_iou', 'incremental_iou',
                                              'macs_ratio', 'speedup')}
                         | {'person_iou_vs_dense': row['person_iou_vs_dense']['mean']}),
              flush=True)
    finish_script('gate_resolution', argv, {
        'sequence': args.sequence, 'frames': accuracy.DAVIS_FRAMES, 'settings': changes,
        'sizes': rows}, args.out, md, markdown)
    return 0


def markdown(result: dict) -> str:
    """Return the result as a markdown page: its provenance, then a row per size."""
    env = result
    lines = [f"# A spatial gate at smaller frames: DAVIS {result['sequence']} "
             f"[{result['frames']}]", '',
             f"- command: `{result['command']}`",
             f"- settings on top of the defaults: {result['settings']}",
             f"- source: commit {(env['source']['commit'] or 'unknown')[:12]}",
             f"- machine: {env['device'].get('cpu', '')}, torch "
             f"{env['versions'].get('torch')}, {result['when']}", '',
             '| frame size | person IoU dense / gated | drop (points) | agreement | MACs / '
             'dense | p50 speedup | gated person mask vs dense: mean IoU (worst frame) |',
             '|---|---|---|---|---|---|---|']
    for row in result['sizes']:
        versus = row['person_iou_vs_dense']
        lines.append(f"| {row['size'][0]}x{row['size'][1]} | {row['dense_iou']:.4f} / "
                     f"{row['incremental_iou']:.4f} | {row['iou_drop_points']:+.2f} | "
                     f"{100 * row['agreement']:.3f}% | {row['macs_ratio']:.3f} | "
                     f"{row['speedup']:.2f}x | {versus['mean']:.3f} ({versus['min']:.3f}) |")
    lines += ['', 'Drop: dense IoU minus gated, in points (the bound is 0.5); agreement: '
              'pixels where the gated and dense class maps agree (the bound is 99.5%); speedup: '
              'p50 wall time of Pipeline.process, dense over incremental, in alternation, with '
              'the path choice off (every frame through the engine).']
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
