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
What the path choice's engine trials cost, with and without the scene's changed share.

    .venv/bin/python bench/path_trials.py [INPUT ...] [--out PATH.md]

Each INPUT (a video, bag or image folder; default: the shared vtest clip and DAVIS parkour)
runs through three pipelines at the package defaults, both heads, alternating frame by frame
on the same frames: the incremental pipeline as shipped (its path choice is given each
frame's changed share and lets a due engine trial wait while the scene changes as much as
when the engine lost), the same pipeline with the share withheld (every due trial runs), and
the dense reference on LiteRT. Counts, per network, the frames the engine ran (the first
frames' samples, then each trial's refresh and samples) and reports the p50 and mean ms per
frame of each pipeline. With ``--out`` writes a markdown file with the machine, versions and
commit.
"""

import argparse
import collections
from pathlib import Path
import statistics
import sys
import time

from sparse_perception import pipeline as pipeline_module
from sparse_perception import settings as st
from sparse_perception.evaluation.provenance import environment
from sparse_perception.output_files import check_outputs, OutputError, write_atomic
from sparse_perception.replay.sources import Frame, input_kind, open_source
from sparse_perception.shared_data import shared_path

VARIANTS = ('shared', 'withheld', 'litert')


class _EngineCount:
    """Counts the engine's runs per network of the pipelines it was installed in."""

    def __init__(self):
        self.runs: collections.Counter = collections.Counter()
        self._call = pipeline_module._IncrementalNet.__call__
        count, call = self.runs, self._call

        def counted(net, *args, **kwargs):
            count[id(net)] += 1
            return call(net, *args, **kwargs)
        pipeline_module._IncrementalNet.__call__ = counted

    def close(self):
        pipeline_module._IncrementalNet.__call__ = self._call


class _Withheld:
    """Makes the path choices of one pipeline's networks blind to the scene (no share)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self._run = pipeline_module._IncrementalNet.run
        blind, run = self._nets, self._run

        def unshared(net, *args, **kwargs):
            if id(net) in blind():
                net.scene, net.own_share = None, False
            return run(net, *args, **kwargs)
        pipeline_module._IncrementalNet.run = unshared

    def _nets(self):
        # Looked up on every call: networks made later (another person) are blind too.
        return {id(net) for head in self.pipeline._heads.values() for net in head.nets}

    def close(self):
        pipeline_module._IncrementalNet.run = self._run


def _frames(path: Path):
    rate = 1.0 if input_kind(path)[0] == 'folder' else None
    with open_source(path, rate=rate) as opened:
        for item in opened:
            if isinstance(item, Frame):
                yield item.image


def measure(path: Path) -> dict:
    base = st.replace(st.PerceptionSettings(), {'model.device': 'cpu'})
    counter, withheld = _EngineCount(), None
    try:
        pipelines = {
            'shared': pipeline_module.Pipeline(base),
            'withheld': pipeline_module.Pipeline(base),
            'litert': pipeline_module.Pipeline(st.replace(base, {'model.runtime': 'litert'}),
                                               incremental=False)}
        withheld = _Withheld(pipelines['withheld'])
        ms = {name: [] for name in VARIANTS}
        frames = 0
        for index, image in enumerate(_frames(path)):
            order = VARIANTS[index % 3:] + VARIANTS[:index % 3]
            for name in order:
                start = time.perf_counter()
                pipelines[name].process(image)
                ms[name].append((time.perf_counter() - start) * 1e3)
            frames += 1
        engine = {}
        for name in ('shared', 'withheld'):
            for head in pipelines[name]._heads.values():
                for net, prefix in zip(head.nets, head._prefixes):
                    # Each further person followed has a landmark network state of its own.
                    what = net.what + (f', {prefix[:-1]}' if prefix.startswith('person') else '')
                    engine.setdefault(what, {})[name] = counter.runs[id(net)]
    finally:
        if withheld is not None:
            withheld.close()
        counter.close()
    return {'input': path, 'frames': frames, 'engine': engine,
            'ms': {name: (statistics.median(v), statistics.fmean(v)) for name, v in ms.items()}}


def markdown(results: list, command: str) -> str:
    env = environment('cpu')
    device, versions, source = env['device'], env['versions'], env['source']
    lines = [
        '# Engine trials of the path choice, with and without the scene (bench/path_trials.py)',
        '',
        f'- machine: {device.get("cpu")}, {device.get("cores")} cores; torch '
        f'{versions.get("torch")} with {device.get("torch_threads")} thread(s), ai-edge-litert '
        f'{versions.get("ai_edge_litert")}, Python {versions.get("python")}',
        f'- source: commit {(source.get("commit") or "unknown")[:12]}'
        + (' with modified files' if source.get('tracked_files_modified') else ''),
        f'- command: `{command}`',
        '- pipelines, alternating frame by frame on the same frames: `shared`, the incremental '
        'pipeline at the package defaults (both heads); `withheld`, the same with every '
        "network's path choice given no changed share (each due trial runs); `litert`, the "
        'dense reference on LiteRT. Engine frames: how often each network ran on the engine '
        "(its first samples, then each trial's refresh and samples).", '']
    for result in results:
        lines += [f'## {result["input"].name} ({result["frames"]} frames)', '',
                  '| network | engine frames, share given | engine frames, share withheld |',
                  '|---|---|---|',
                  *(f'| {what} | {runs.get("shared", 0)} | {runs.get("withheld", 0)} |'
                    for what, runs in result['engine'].items()), '',
                  '| pipeline | p50 ms | mean ms |', '|---|---|---|',
                  *(f'| {name} | {p50:.2f} | {mean:.2f} |'
                    for name, (p50, mean) in result['ms'].items()), '']
    return '\n'.join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('inputs', nargs='*', type=Path)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    inputs = args.inputs or [shared_path('data/vtest/vtest.avi'),
                             shared_path('data/davis/DAVIS/JPEGImages/480p/parkour')]
    try:  # before the measuring
        check_outputs([('--out', args.out)], inputs)
    except OutputError as exc:
        parser.error(str(exc))
    results = []
    for path in inputs:
        result = measure(path)
        results.append(result)
        engine = ', '.join(f'{what}: {runs.get("shared", 0)} / {runs.get("withheld", 0)}'
                           for what, runs in result['engine'].items())
        times = ', '.join(f'{name} {p50:.2f} / {mean:.2f}'
                          for name, (p50, mean) in result['ms'].items())
        print(f'{path.name}: {result["frames"]} frames; engine frames (given / withheld) '
              f'{engine}; p50 / mean ms {times}')
    if args.out:
        command = 'python bench/path_trials.py ' + ' '.join(
            [str(p) for p in args.inputs] + ['--out', str(args.out)])
        write_atomic(args.out, markdown(results, command))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
