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
Whether a gate finds a small person who enters an empty scene, frame by frame.

    .venv/bin/python bench/gate_newcomer.py [--scale 0.35] [--frames 40]
        [--set sparsity.gate_refresh=8 ...] [--out bench/results/NAME.json]

The scene: three grey 854x480 frames (nobody), then DAVIS parkour (every other frame) shrunk
by ``--scale`` into the grey frame's bottom-left corner: a small runner. The fully
convolutional DeepLab runs dense and incremental on each frame (the glance gate, the path
choice off so that every frame runs the engine, package defaults otherwise, and ``--set``).
The script counts each frame's person pixels in both masks and reports the frames where the
dense pass sees the runner (over 500 pixels) and the incremental one shows nobody; with
``--out`` it writes them with the machine, versions and commit, and a markdown table beside
the JSON.
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

SEEN = 500  # person pixels of the dense mask from which the runner counts as visible


def scene(scale: float, frames: int) -> list:
    """Return the grey frames, then the shrunk runner's (replay Frames)."""
    clip = accuracy.davis_clip('parkour')
    source = accuracy.read_frames(clip, FrameRange(0, 2 * frames, 2))
    grey = np.full_like(source[0].image, 110)
    height, width = grey.shape[:2]
    small_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    out = [dataclasses.replace(source[0], image=grey.copy()) for _ in range(3)]
    for frame in source:
        image = grey.copy()
        image[height - small_hw[0]:, :small_hw[1]] = cv2.resize(
            frame.image, small_hw[::-1], interpolation=cv2.INTER_AREA)
        out.append(dataclasses.replace(frame, image=image))
    return out


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--scale', type=float, default=0.35)
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--set', nargs='*', default=[],
                        help='setting=value pairs on top of the glance gate and defaults')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1 or args.frames < 1:
        parser.error('--scale must be in (0, 1] and --frames at least 1')
    changes = {'model.segmentation': accuracy.SEGMENTATION_MODEL, 'model.pose': '',
               'sparsity.adaptive': False, 'sparsity.gate': 'glance'}
    # The settings (--set NAME=VALUE typed as eval sweep's --point) and the outputs, checked
    # before the measuring and never over the shared data.
    settings, md, changes = script_setup(parser, changes, args.set, args.out)
    frames = scene(args.scale, args.frames)
    pipelines = [Pipeline(settings, heads=('segmentation',), incremental=incremental)
                 for incremental in (True, False)]
    runs = accuracy.run_head(pipelines, 'segmentation', frames)
    person = person_class(pipelines[0].class_names)
    pixels = [[int((mask == person).sum()) for mask in run.masks] for run in runs]
    missed = [i for i, (got, want) in enumerate(zip(*pixels)) if want > SEEN and got == 0]
    visible = sum(want > SEEN for want in pixels[1])
    print(json.dumps({'visible_frames': visible, 'missed_frames': missed}))
    finish_script('gate_newcomer', argv, {
        'scale': args.scale, 'frames': len(frames), 'settings': changes,
        'person_pixels': {'incremental': pixels[0], 'dense': pixels[1]},
        'visible_frames': visible, 'missed_frames': missed}, args.out, md, markdown)
    return 0


def markdown(result: dict) -> str:
    """Return the result as a markdown page: its provenance, then a row per frame."""
    env, pixels = result, result['person_pixels']
    lines = [f"# A runner shrunk to {result['scale']} entering an empty scene", '',
             f"- command: `{result['command']}`",
             f"- settings on top of the defaults: {result['settings']}",
             f"- source: commit {(env['source']['commit'] or 'unknown')[:12]}",
             f"- machine: {env['device'].get('cpu', '')}, torch "
             f"{env['versions'].get('torch')}, {result['when']}",
             f'- frames where dense sees the runner (over {SEEN} person pixels): '
             f"{result['visible_frames']}; where the incremental mask shows nobody then: "
             f"{len(result['missed_frames'])}", '',
             '| frame | person pixels dense | incremental |', '|---|---|---|']
    lines += [f'| {i} | {want} | {got} |'
              for i, (got, want) in enumerate(zip(pixels['incremental'], pixels['dense']))]
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
