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
``sparse-perception bench gpu`` without a GPU.

Argument handling, the exit code, and the result contract built from a fake timing source
(no figure from here is ever committed).
"""

import json
import os

import pytest
from sparse_perception import cli
from sparse_perception.benchmarks import gpu
from support import require_module, require_shared
import torch


def test_listed_in_the_bench_group(capsys):
    with pytest.raises(SystemExit):
        cli.main(['bench', '--help'])
    assert 'gpu' in capsys.readouterr().out


def test_without_cuda_it_says_so_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    target = tmp_path / 'gpu.json'
    assert cli.main(['bench', 'gpu', '--json', str(target)]) == 2
    assert 'needs a CUDA GPU' in capsys.readouterr().err
    assert not target.exists()


@pytest.mark.parametrize('argv, message', [
    (['--resolutions', '576x'], "'576x' is not HxW"),
    (['--resolutions', '16x16'], 'smaller than 32x32'),
    (['--frames', '0'], '--frames 0: expected at least 1'),
    (['--warmup', '-1'], '--warmup -1'),
    (['--tile-size', '3'], '--tile-size: change.min_pixels = 16 is more than the 9 pixels'),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(['bench', 'gpu'] + argv) == 2
    assert message in capsys.readouterr().err


def test_summary_statistics_and_break_even():
    # The package's one percentile: p90 of 1, 2, 3, 10 interpolates to 3 + 0.7 * 7.
    assert gpu.summarize([3.0, 1.0, 2.0, 10.0]) == {'median_ms': 2.5,
                                                    'p90_ms': pytest.approx(7.9)}
    assert gpu.summarize([]) == {'median_ms': None, 'p90_ms': None}
    curve = [{'p': 0.01, 'us': 5.0}, {'p': 0.1, 'us': 20.0}, {'p': 0.5, 'us': 60.0},
             {'p': 1.0, 'us': 110.0}]
    assert gpu.break_even(curve, 40.0) == pytest.approx(0.3)
    assert gpu.break_even(curve, 200.0) == 1.0
    assert gpu.break_even(curve, 4.0) == 0.0
    assert gpu.break_even([], 4.0) is None


class FakeTimer:
    """Stands in for CUDA events: each region 'takes' the next number of a script."""

    script: list = []

    def start(self):
        pass

    def stop(self):
        return FakeTimer.script.pop(0)


def test_result_contract_from_a_fake_timing_source(tmp_path):
    runs = []
    for engine, times in (('dense_eager', [9.0, 4.0, 4.2, 3.8]),
                          ('dense_graph', [9.0, 2.0, 2.1, 1.9]),
                          ('incremental_reference', [9.0, 8.0, 8.0, 8.0]),
                          ('incremental_kernels', [9.0, 1.0, 1.2, 0.8]),
                          ('incremental_kernels_graph', [9.0, 0.5, 0.6, 0.4])):
        FakeTimer.script = list(times)
        seen = []
        measured = gpu.time_frames(lambda i: i, 4, 1, FakeTimer,
                                   lambda i, out: seen.append(out))
        assert seen == [0, 1, 2, 3] and measured == times[1:]
        runs.append(gpu.run_entry(engine, (1080, 1920), measured,
                                  0.05 if engine.startswith('inc') else 1.0, 0.001))
    gpu.add_speedups(runs)
    # dense_graph's p50 (2.0 ms) over each one's: slower engines below 1.
    assert [r['speedup_vs_dense_graph'] for r in runs] == pytest.approx(
        [2.0 / 4.0, 1.0, 2.0 / 8.0, 2.0, 4.0])
    result = {'gpu': 'fake', 'torch': torch.__version__, 'triton': 'x', 'runs': runs,
              'layers': [{'layer': 'conv1x1 fake', 'kind': 'conv1x1', 'input_hw': [8, 8],
                          'cin': 3, 'cout': 5, 'stride': 1, 'dense_us': 10.0,
                          'fixed_cost_us': 2.0, 'break_even_p': 0.5,
                          'curve': [{'p': 0.0, 'us': 2.0, 'ratio_vs_dense': 0.2}]}],
              'sweep': [], 'quick': True}
    gpu.write_outputs(result, str(tmp_path / 'r.json'), str(tmp_path / 'r.md'))
    loaded = json.loads((tmp_path / 'r.json').read_text())
    assert set(loaded) >= {'gpu', 'torch', 'triton', 'runs', 'layers'}
    assert [r['engine'] for r in loaded['runs']] == list(gpu.ENGINES)
    for r in loaded['runs']:
        assert set(r) >= {'engine', 'resolution', 'median_ms', 'p90_ms',
                          'speedup_vs_dense_graph', 'active_fraction', 'max_rel_diff'}
        assert r['resolution'] == [1080, 1920]
    graph = loaded['runs'][-1]
    assert graph['median_ms'] == 0.5 and graph['speedup_vs_dense_graph'] == pytest.approx(4.0)
    report = (tmp_path / 'r.md').read_text()
    assert '| 1080x1920 | incremental_kernels_graph | 0.500 |' in report
    assert 'QUICK: not for results' in report
    assert not list(tmp_path.glob('*.tmp'))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') != '1',
                    reason='the dry run needs the kernels on the CPU (the interpreter)')
def test_dry_run_on_the_cpu_goes_through_every_part(tmp_path):
    """Every code path but CUDA graphs and events, tiny sizes; the figures mean nothing."""
    require_shared('data/vtest/vtest.avi')
    require_module('cv2')
    layers = [('conv1x1 tiny', 'conv1x1', (16, 24), 5, 7, 1),
              ('depthwise3x3 tiny', 'depthwise3x3', (16, 24), 6, 6, 2),
              ('conv3x3 tiny', 'conv3x3', (16, 24), 4, 5, 1)]
    saved = []  # what a run stopped at a time limit would have left, step by step
    result = gpu.run(resolutions=[(32, 48)], frames=2, warmup=1,
                     model_name='kernel_networks:tiny_segmenter', dtype_name='fp32',
                     tile_size=8,
                     sweep_frames=1, layer_repeats=1, diff_every=1, device='cpu',
                     layers=layers, sweep_p=(0.5,), layer_p=(0.0, 0.25, 1.0),
                     checkpoint=lambda partial: saved.append(json.loads(json.dumps(partial))))
    assert result['gpu'].startswith('none: a dry run') and result['quick']
    # After the resolution, the sweep and each of the three curves; each holds all before it.
    assert [(len(p['runs']), len(p['sweep']), len(p['layers'])) for p in saved] == \
        [(5, 0, 0), (5, 2, 0), (5, 2, 1), (5, 2, 2), (5, 2, 3)]
    assert not any(p['complete'] for p in saved) and result['complete']
    assert [r['engine'] for r in result['runs']] == list(gpu.ENGINES)
    dense_graph = result['runs'][list(gpu.ENGINES).index('dense_graph')]['median_ms']
    for r in result['runs']:
        assert r['frames'] == 2 and r['median_ms'] > 0 and r['max_rel_diff'] is not None
        assert r['speedup_vs_dense_graph'] == pytest.approx(dense_graph / r['median_ms'])
        assert r['max_rel_diff'] <= 1e-4, r  # every engine agrees with dense
    assert [s['engine'] for s in result['sweep']] == list(gpu.SWEEP_ENGINES)
    assert {s['tile_size'] for s in result['sweep']} == {8}  # --tile-size reaches the sweep
    assert [c['layer'] for c in result['layers']] == [spec[0] for spec in layers]
    for curve in result['layers']:
        assert [c['p'] for c in curve['curve']] == [0.0, 0.25, 1.0]
        assert curve['curve'][0]['active_fraction'] == 0.0
        assert curve['curve'][-1]['active_fraction'] == 1.0
    gpu.write_outputs(result, str(tmp_path / 'dry.json'), str(tmp_path / 'dry.md'))
    assert json.loads((tmp_path / 'dry.json').read_text())['runs']
    assert 'changed fraction (random 8 px tiles)' in (tmp_path / 'dry.md').read_text()


def test_a_fixed_size_network_is_refused_at_any_other_resolution(mediapipe_cache, monkeypatch):
    require_shared('data/vtest/vtest.avi')
    require_module('cv2')
    from sparse_perception.models.registry import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(mediapipe_cache))
    with pytest.raises(SystemExit, match='fixed 144x256 input; pass only that in'):
        gpu.run(resolutions=[(144, 256), (96, 128)], frames=1, warmup=0,
                model_name='registry:selfie_segmentation_landscape', dtype_name='fp32',
                device='cpu')
