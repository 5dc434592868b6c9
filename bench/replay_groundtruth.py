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
The full DAVIS and JHMDB data as bags, replayed with ground truth, against eval accuracy.

    .venv/bin/python bench/replay_groundtruth.py [--accuracy bench/results/accuracy.json]

Reads an ``eval accuracy`` result (default: the committed one), turns the DAVIS sequences and
the JHMDB clip it scored into rosbag2 files with ``sparse-perception make-bag`` (JPEG and PNG
byte for byte), replays each with ``--gt`` at the result's settings and frame ranges, and
writes bench/results/replay_groundtruth.json and .md: every ground-truth score of the
replay beside the evaluation's, and whether they are equal.
"""

import argparse
import json
from pathlib import Path
import sys
import tempfile
import time

from sparse_perception import cli
from sparse_perception.evaluation import accuracy, provenance
from sparse_perception.output_files import check_outputs, OutputError, report_pair, write_atomic

RESULTS = Path(__file__).resolve().parent / 'results'


def _replay(bag: Path, out: Path, head: str, model: str, truth: Path, frames: str,
            settings: dict) -> dict:
    flags = [f'--{name}={value}' for name, value in settings.items()
             if not isinstance(value, list)]
    flags += [f'--{name}' for name, value in settings.items() if isinstance(value, list)
              and not value]  # an empty list: the flag with no values
    status = cli.main(['replay', str(bag), '--out', str(out), '--quiet', '--heads', head,
                       f'--model.{head}', model,
                       '--gt', str(truth), '--frames', frames, '--no-bag', '--contact-sheet',
                       '0', *flags])
    if status != 0:
        raise SystemExit(f'replay of {bag} failed with status {status}')
    return json.loads((out / 'report.json').read_text())


def _pairs(kind: str, report: dict, expected: dict) -> list[tuple[str, float, float]]:
    truth = report['ground_truth']
    if kind == 'davis':
        return [('incremental IoU', truth['iou'], expected['incremental_iou']),
                ('dense IoU', truth['dense']['iou'], expected['dense_iou']),
                ('mask agreement', report['agreement']['mask_pixel'], expected['agreement'])]
    return [('incremental PCK', truth['pck'], expected['incremental_pck']),
            ('dense PCK', truth['dense']['pck'], expected['dense_pck']),
            ('incremental PCKh', truth['pckh'], expected['incremental_pckh']),
            ('dense PCKh', truth['dense']['pckh'], expected['dense_pckh'])]


def main(argv: list[str]) -> int:
    """Make the bags, replay them, compare, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--accuracy', type=Path, default=RESULTS / 'accuracy.json',
                        help='eval accuracy result to compare with [%(default)s]')
    parser.add_argument('--out', type=Path, default=RESULTS / 'replay_groundtruth',
                        help='result files without suffix [%(default)s]')
    args = parser.parse_args(argv)
    json_path, markdown_path = report_pair(args.out)
    try:  # before the replays; never over the result it compares with
        check_outputs([('--out (.json)', json_path), ('--out (.md)', markdown_path)],
                      [args.accuracy], create_folders=True)
        result = json.loads(args.accuracy.read_text())
    except OutputError as exc:
        parser.error(str(exc))
    except (OSError, ValueError) as exc:
        parser.error(f'--accuracy {args.accuracy}: {exc}')
    started = time.perf_counter()
    settings = {k: v for k, v in result['settings'].items()
                if k.startswith(accuracy.SPARSITY_SECTIONS)}
    models = result['conditions']['models']
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        jobs = [('davis', accuracy.davis_clip(name), 'segmentation', result['davis'][name],
                 result['conditions']['davis_frames'], '24', 'jpeg')
                for name in result.get('davis', {})]
        if 'jhmdb' in result:
            jobs.append(('jhmdb', accuracy.jhmdb_clip(), 'pose', result['jhmdb'],
                         result['conditions']['jhmdb_frames'], '30', 'png'))
        for kind, clip, head, expected, frames, rate, fmt in jobs:
            bag = work / f'{clip.name}_bag'
            # The whole sequence goes into the bag: annotations are matched by position.
            if cli.main(['make-bag', str(clip.frames_dir), str(bag), '--rate', rate,
                         '--format', fmt]) != 0:
                raise SystemExit(f'make-bag of {clip.frames_dir} failed')
            model = models[head]['name']
            report = _replay(bag, work / f'{clip.name}_run', head, model, clip.truth, frames,
                             settings)
            for name, replayed, evaluated in _pairs(kind, report, expected):
                rows.append({'clip': f'{kind}/{clip.name}', 'score': name,
                             'replay': replayed, 'eval_accuracy': evaluated,
                             'equal': replayed == evaluated, 'frames': report['frames']})
            print(f'{kind}/{clip.name}: ' + ', '.join(
                f'{r["score"]} {r["replay"]:.6f} vs {r["eval_accuracy"]:.6f}'
                for r in rows if r['clip'] == f'{kind}/{clip.name}'), flush=True)
    document = {'accuracy_result': str(args.accuracy), 'settings': settings,
                'rows': rows, 'all_equal': all(r['equal'] for r in rows),
                'environment': provenance.environment('auto'),
                'wall_s': time.perf_counter() - started}
    write_atomic(json_path, json.dumps(document, indent=2) + '\n')
    lines = ['# Replay with ground truth vs eval accuracy', '',
             f'- eval accuracy result: `{args.accuracy.name}`; the bags: '
             '`sparse-perception make-bag` of the whole sequence (JPEG / PNG byte for byte), '
             'replayed with `--gt` at the same settings and frame range',
             f'- command: `bench/replay_groundtruth.py`, {document["wall_s"]:.0f} s, '
             f'{document["environment"]["device"]["cpu"]}, commit '
             f'{document["environment"]["source"]["commit"]}', '',
             '| clip | frames | score | replay | eval accuracy | equal |',
             '|---|---|---|---|---|---|']
    lines += [f'| {r["clip"]} | {r["frames"]} | {r["score"]} | {r["replay"]:.6f} | '
              f'{r["eval_accuracy"]:.6f} | {"yes" if r["equal"] else "**no**"} |'
              for r in rows]
    write_atomic(markdown_path, '\n'.join(lines) + '\n')
    print('all equal' if document['all_equal'] else 'DIFFERENCES: see the table')
    return 0 if document['all_equal'] else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
