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
Time the depth-to-space layers of the BlazePose person detector on the eager executor.

    .venv/bin/python bench/depth_to_space.py [--frames 20] [--out bench/results/NAME.json]

The detector (MediaPipe pose_detection.tflite, 224x224) has three depth-to-space layers.
Each frame is a dense pass (``EngineConfig(profile=True)``), so every layer runs on every
frame; the script prints the median per-frame time of those layers, of the whole frame, and
the multiply-accumulates they count, and with ``--out`` writes them with the machine,
versions and commit.
"""

import argparse
import json
from pathlib import Path
import sys
import time

from sparse_perception.engine import EngineConfig, IncrementalModel
from sparse_perception.evaluation.provenance import environment
from sparse_perception.evaluation.stats import median
from sparse_perception.models.registry import cache_dir
from sparse_perception.models.tflite.importer import load_tflite
from sparse_perception.output_files import check_outputs, OutputError, write_atomic
import torch


def depth_to_space_names(engine, x):
    """Names of the layers that lower a depth-to-space."""
    program = engine.plan_for(x).program
    return {layer.name for layer in program.layers if layer.kind == 'depth_to_space'}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--model',
                        default=str(cache_dir() / 'mediapipe' / 'pose_detection.tflite'))
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    try:  # before the measuring
        check_outputs([('--out', args.out)])
    except OutputError as exc:
        parser.error(str(exc))
    torch.manual_seed(0)
    net = load_tflite(args.model).eval()
    engine = IncrementalModel(net, EngineConfig(profile=True))
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    names = depth_to_space_names(engine, x)
    state = engine.new_state()
    layer_ms, frame_ms = [], []
    engine(x, None, state)  # warm-up
    for _ in range(args.frames):
        state.request_refresh()
        engine(x, None, state)
        stats = engine.last_stats
        layer_ms.append(sum(s.time_ms for s in stats.layers if s.name in names))
        frame_ms.append(stats.time_ms)
    macs = sum(s.dense_macs for s in engine.last_stats.layers if s.name in names)
    kinds = sorted({s.kind for s in engine.last_stats.layers if s.name in names})
    env = environment('cpu')
    commit = env['source']['commit']
    result = {'model': Path(args.model).name, 'input': [1, 3, 224, 224],
              'frames': args.frames, 'layers': len(names), 'layer_kinds': kinds,
              'depth_to_space_ms_p50': median(layer_ms),
              'frame_ms_p50': median(frame_ms), 'depth_to_space_macs': macs,
              'commit': commit, 'when': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              **env}
    print(json.dumps({k: result[k] for k in ('layers', 'layer_kinds', 'depth_to_space_ms_p50',
                                             'frame_ms_p50', 'depth_to_space_macs', 'commit')}))
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
