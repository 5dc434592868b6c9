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
How long a gated output takes to come back to dense once the camera stops.

    .venv/bin/python bench/gate_staleness.py [--gate previous] [--moving 8] [--still 48]
        [--set sparsity.gate_refresh=32 ...] [--out bench/results/NAME.json]

The fully convolutional DeepLab, every threshold at 0 (so that only the gate leaves anything
out), the path choice off, the refresh cells at ``sparsity.gate_refresh``: ``--moving`` frames
of DAVIS parkour (every other one from frame 10: the camera and the runner move), then the
last of them held for ``--still`` frames. On each still frame, the pixels of the gated class
map that differ from the dense pass of that frame. Under a gate every layer recomputes each
position at least once in ``gate_refresh`` frames, but from its inputs as they are then, and
a global pooling sees any change: the output needs several rounds of cells. With ``--out`` it
writes the figures with the machine, versions and commit, and a markdown table beside them.
"""

import argparse
import json
from pathlib import Path
import sys

import numpy as np

from sparse_perception.evaluation import accuracy
from sparse_perception.evaluation.sweep import finish_script, script_setup
from sparse_perception.pipeline import Pipeline
from sparse_perception.replay.sources import FrameRange
from sparse_perception.settings import PerceptionSettings

# The still frames reported: the first, each round of 16 cells and the one after it, the end.
REPORTED = (1, 8, 16, 17, 24, 32, 48, 64, 96)


def measure(frames: list, settings: PerceptionSettings, still: int) -> list[dict]:
    """Run gated and dense; return, per reported still frame, the pixels that differ."""
    gated = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    for frame in frames:
        gated.process(frame.image)
    held = frames[-1].image
    want = dense.process(held).segmentation.mask
    rows = []
    for k in range(1, still + 1):
        got = gated.process(held).segmentation.mask
        if k in REPORTED or k == still:
            differ = int(np.count_nonzero(got != want))
            rows.append({'still_frame': k, 'pixels_differing': differ,
                         'share': differ / want.size})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--gate', default='previous', choices=('previous', 'glance'))
    parser.add_argument('--moving', type=int, default=8, help='moving frames first (>= 2)')
    parser.add_argument('--still', type=int, default=48, help='then this many still ones')
    parser.add_argument('--set', nargs='*', default=[],
                        help='setting=value pairs on top of the conditions above')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    if args.moving < 2 or not 1 <= args.still <= 1000:
        parser.error('--moving must be at least 2 and --still 1 to 1000')
    changes = {'model.segmentation': accuracy.SEGMENTATION_MODEL, 'model.pose': '',
               'sparsity.adaptive': False, 'sparsity.gate': args.gate,
               'change.threshold': 0.0, 'change.min_pixels': 1}
    # The settings (--set NAME=VALUE typed as eval sweep's --point) and the outputs, checked
    # before the measuring and never over the shared data.
    settings, md, changes = script_setup(parser, changes, args.set, args.out)
    clip = accuracy.davis_clip('parkour')
    span = f'10:{10 + 2 * args.moving}:2'
    frames = accuracy.read_frames(clip, FrameRange.parse(span))
    rows = measure(frames, settings, args.still)
    finish_script('gate_staleness', argv, {
        'sequence': 'parkour', 'moving_frames': span, 'still_frames': args.still,
        'settings': changes, 'rows': rows}, args.out, md, markdown)
    return 0


def markdown(result: dict) -> str:
    """Return the result as a markdown page: its provenance, then a row per still frame."""
    lines = ['# A gated output after the camera stops: DAVIS parkour', '',
             f"- command: `{result['command']}`",
             f"- frames: [{result['moving_frames']}] moving, then the last held for "
             f"{result['still_frames']} frames",
             f"- settings on top of the defaults: {result['settings']}",
             f"- source: commit {(result['source']['commit'] or 'unknown')[:12]}",
             f"- machine: {result['device'].get('cpu', '')}, torch "
             f"{result['versions'].get('torch')}, {result['when']}", '',
             '| still frames | pixels of the class map differing from dense | share |',
             '|---|---|---|']
    for row in result['rows']:
        lines.append(f"| {row['still_frame']} | {row['pixels_differing']} | "
                     f"{100 * row['share']:.3f}% |")
    lines += ['', 'Every threshold at 0: with no gate the engine equals the dense pass on '
              'every frame, so what differs is what the gate left for the refresh cells.']
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
