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
of ``--batch``, alternating, ``--repeats`` times each, then the same on LiteRT (the model's
stock .tflite file on the interpreter and XNNPACK delegate the CPU's dense passes use, its
input resized to the batch; where ai-edge-litert is installed), and prints the median of
each and the ratio (batch time / one crop's time: ``--batch`` means batching saves nothing,
1 that extra people are free). The first crop of a LiteRT batch must give the outputs it
gives alone. With ``--out`` it writes a markdown file with the machine, versions and
commit. Needs the MediaPipe models (``sparse-perception models fetch``).
"""

import argparse
from pathlib import Path
import sys
import time

from sparse_perception.evaluation.provenance import environment
from sparse_perception.evaluation.stats import median
from sparse_perception.models.registry import load_model
from sparse_perception.output_files import check_outputs, OutputError, write_atomic
import torch


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 2 or args.threads < 1:
        parser.error('--repeats and --threads must be at least 1, --batch at least 2')
    try:  # before the measuring
        check_outputs([('--out', args.out)])
    except OutputError as exc:
        parser.error(str(exc))
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
    rows = [('torch trunk', median(times[1]), median(times[args.batch]))]
    litert = _litert(model.source, args)
    if litert is not None:
        rows.append(('LiteRT, whole network', *litert))
    for runtime, single, batched in rows:
        print(f'{runtime}: one crop {single:.2f} ms, {args.batch} crops in a batch '
              f'{batched:.2f} ms ({batched / single:.2f}x one)')
    if args.out:
        env = environment('cpu')
        device, versions, source = env['device'], env['versions'], env['source']
        lines = [
            '# BlazePose landmark network: one crop vs a batch (bench/landmark_batch.py)', '',
            f'- machine: {device.get("cpu")}, {device.get("cores")} cores, torch '
            f'{versions.get("torch")} with {args.threads} thread(s), Python '
            f'{versions.get("python")}',
            f'- source: commit {(source.get("commit") or "unknown")[:12]}'
            + (' with modified files' if source.get('tracked_files_modified') else ''),
            f'- command: `python bench/landmark_batch.py --repeats {args.repeats} --batch '
            f'{args.batch} --threads {args.threads} --out {args.out}`',
            f'- LiteRT: ai-edge-litert {versions.get("ai_edge_litert")}, XNNPACK, '
            f'{args.threads} thread(s), the input of {model.source.name} resized to the batch; '
            'the first crop of the batch gave the outputs it gives alone'
            if litert is not None else '- LiteRT: not installed, not measured',
            '- 256x256 crops (random), dense, one and a batch alternating; medians', '',
            '| runtime | crops | p50 ms | vs one crop | per crop |', '|---|---|---|---|---|',
            *(line for runtime, single, batched in rows for line in (
                f'| {runtime} | 1 | {single:.2f} | 1.00x | {single:.2f} |',
                f'| {runtime} | {args.batch} (one batch) | {batched:.2f} | '
                f'{batched / single:.2f}x | {batched / args.batch:.2f} |')), '']
        write_atomic(args.out, '\n'.join(lines))
    return 0


def _litert(path: Path, args) -> tuple[float, float] | None:
    """Return LiteRT's p50 ms (one crop, a batch), or None where it is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    import numpy as np

    runners = {}
    for size in (1, args.batch):
        runner = Interpreter(model_path=str(path), num_threads=args.threads)
        detail = runner.get_input_details()[0]
        if size > 1:
            runner.resize_tensor_input(detail['index'], [size, *detail['shape'][1:]])
        runner.allocate_tensors()
        runners[size] = (runner, detail['index'])
    crops = np.random.default_rng(0).random((args.batch, 256, 256, 3), dtype=np.float32)

    def run(size):
        runner, index = runners[size]
        runner.set_tensor(index, crops[:size])
        runner.invoke()
        return [runner.get_tensor(o['index']) for o in runner.get_output_details()]
    alone = [run(1)[k][0] for k in range(len(runners[1][0].get_output_details()))]
    together = run(args.batch)
    for k, value in enumerate(alone):
        if not np.allclose(together[k][0], value, rtol=1e-4, atol=1e-4):
            raise SystemExit(f'LiteRT output {k}: the first crop of a batch differs from it '
                             'alone')
    times = {1: [], args.batch: []}
    for _ in range(args.repeats):
        for size in (1, args.batch):
            start = time.perf_counter()
            run(size)
            times[size].append((time.perf_counter() - start) * 1e3)
    return median(times[1]), median(times[args.batch])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
