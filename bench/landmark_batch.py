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
What batching people's crops would buy: BlazePose's landmark trunk on one crop vs a batch.

    .venv/bin/python bench/landmark_batch.py [--repeats 30] [--batch 2] [--out PATH.md]

Each person followed runs the landmark network on a crop of their own, one at a time. The
script times the imported torch trunk (256x256 crops, dense) on a batch of one and on a batch
of ``--batch``, alternating, ``--repeats`` times each, and prints the median of each and the
ratio (batch time / one crop's time: ``--batch`` means batching saves nothing, 1 that extra
people are free). With ``--out`` it writes a markdown file with the machine, versions and
commit. Needs the MediaPipe models (``sparse-perception models fetch``).
"""

import argparse
from pathlib import Path
import sys
import time

from sparse_perception.evaluation.provenance import environment
from sparse_perception.evaluation.stats import median
from sparse_perception.models.registry import load_model
import torch


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model('blazepose', 'cpu')
    trunk = model.module.trunk.eval()
    one = torch.rand(1, 3, *model.input_size)
    batch = torch.rand(args.batch, 3, *model.input_size)
    times: dict[int, list[float]] = {1: [], args.batch: []}
    with torch.no_grad():
        trunk(one), trunk(batch)  # first calls: allocations
        for _ in range(args.repeats):
            for x in (one, batch):
                start = time.perf_counter()
                trunk(x)
                times[len(x)].append((time.perf_counter() - start) * 1e3)
    single, batched = median(times[1]), median(times[args.batch])
    ratio = batched / single
    print(f'one crop {single:.2f} ms, {args.batch} crops in a batch {batched:.2f} ms '
          f'({ratio:.2f}x one)')
    if args.out:
        env = environment('cpu')
        device, versions, source = env['device'], env['versions'], env['source']
        lines = [
            '# BlazePose landmark trunk: one crop vs a batch (bench/landmark_batch.py)', '',
            f'- machine: {device.get("cpu")}, {device.get("cores")} cores, torch '
            f'{versions.get("torch")} with {args.threads} thread(s), Python '
            f'{versions.get("python")}',
            f'- source: commit {(source.get("commit") or "unknown")[:12]}'
            + (' with modified files' if source.get('tracked_files_modified') else ''),
            f'- command: `python bench/landmark_batch.py --repeats {args.repeats} --batch '
            f'{args.batch} --threads {args.threads} --out {args.out}`',
            '- dense torch trunk, 256x256 crops, one and a batch alternating; medians', '',
            '| crops | p50 ms | vs one crop |', '|---|---|---|',
            f'| 1 | {single:.2f} | 1.00x |',
            f'| {args.batch} (one batch) | {batched:.2f} | {ratio:.2f}x |', '']
        args.out.write_text('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
