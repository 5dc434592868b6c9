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
``sparse-perception bench engine`` keeps its result contract (a smoke run, not a measurement).

No timing is asserted: the numbers come from a tiny run on whatever machine runs the tests.
"""

import json

import pytest
from sparse_perception import cli
from support import require_module, require_shared

require_module('cv2', reason='OpenCV (the opencv extra) reads vtest.avi')

CONTRACT = ('device', 'model', 'resolution', 'frames', 'dense_ms', 'incremental_ms', 'speedup',
            'active_fraction', 'max_rel_diff', 'sweep')


@pytest.mark.slow
def test_bench_engine_writes_the_contract(tmp_path, capsys):
    require_shared('data/vtest/vtest.avi')
    out, md = tmp_path / 'r.json', tmp_path / 'r.md'
    rc = cli.main(['bench', 'engine', '--quick', '--resolution', '96x128', '--json', str(out),
                   '--markdown', str(md), '--threads', '1', '--tile-size', '8'])
    assert rc == 0
    result = json.loads(out.read_text())
    assert all(key in result for key in CONTRACT)
    assert result['resolution'] == [96, 128] and result['frames'] == 4
    assert [s['p'] for s in result['sweep']] == [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]
    assert all(s['ratio'] > 0 for s in result['sweep'])
    assert result['max_rel_diff'] <= 1e-4  # thresholds 0: exact against dense
    assert 0 < result['active_fraction'] <= 1
    # Dense over incremental (whatever the machine made of them: no time is asserted).
    assert result['speedup'] == pytest.approx(result['dense_ms'] / result['incremental_ms'])
    assert result['details']['cache_bytes']['720x1280'] > 0
    assert 'Threshold scale sweep' in md.read_text()
    # The synthetic sweep changes tiles of --tile-size too.
    assert result['details']['change_detector']['tile_size'] == 8
    assert result['details']['synthetic_sweep_tile_size'] == 8
    assert 'changed fraction (random 8 px tiles)' in md.read_text()
    assert 'speedup' in capsys.readouterr().out.lower()


@pytest.mark.parametrize('argv, message', [
    (['--resolution', '12x9000'], 'expected HxW with both at least 16'),
    (['--scales', 'a,b'], 'comma-separated numbers'),
    (['--scales', '0.1,0.3'], '0 among them'),
    (['--scales', '0,-1'], 'numbers from 0 to 100'),
    (['--scales', '0,101'], 'numbers from 0 to 100 (the range of sparsity.scale)'),
    (['--scales', '0,nan'], 'numbers from 0 to 100'),
    (['--frames', '0'], '--frames 0: expected at least 1'),
    (['--frames', '1', '--warmup', '0'], 'calibrates on two frames'),
    (['--threads', '0'], '--threads 0: expected at least 1'),
    (['--tile-size', '0'], '--tile-size: change.tile_size = 0 is out of range'),
    (['--change-threshold', 'nan'], '--change-threshold: change.threshold must be a number'),
    (['--tile-size', '4', '--change-min-pixels', '17'],
     '--change-min-pixels = 17 is more than the 16 pixels of a change.tile_size 4 tile'),
    (['--frames', '100000'], 'GiB of frames'),
])
def test_bench_engine_bad_arguments(argv, message, capsys, monkeypatch):
    from sparse_perception.benchmarks import engine

    def never(*args, **kwargs):
        raise AssertionError('the benchmark ran')
    monkeypatch.setattr(engine, 'run', never)
    assert cli.main(['bench', 'engine'] + argv) == 2
    assert message in capsys.readouterr().err


def test_bench_engine_outputs_are_checked_before_it_runs(tmp_path, capsys, monkeypatch):
    from sparse_perception.benchmarks import engine
    from sparse_perception.shared_data import SHARED_ENV

    def never(*args, **kwargs):
        raise AssertionError('the benchmark ran')
    monkeypatch.setattr(engine, 'run', never)
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / 'shared'))
    same = tmp_path / 'r.out'
    assert cli.main(['bench', 'engine', '--json', str(same), '--markdown', str(same)]) == 2
    assert 'is also where --json writes' in capsys.readouterr().err
    clip = tmp_path / 'shared' / 'data' / 'vtest' / 'vtest.avi'
    assert cli.main(['bench', 'engine', '--json', str(clip)]) == 2
    assert 'lies inside the input' in capsys.readouterr().err and not clip.exists()


@pytest.mark.parametrize('shared', ['empty', 'a_file'])
def test_bench_engine_without_the_shared_clip_says_so(tmp_path, capsys, monkeypatch, shared):
    from sparse_perception.benchmarks import engine
    from sparse_perception.shared_data import SHARED_ENV

    def never(*args, **kwargs):
        raise AssertionError('the benchmark ran')
    monkeypatch.setattr(engine, 'run', never)
    folder = tmp_path / shared
    folder.mkdir() if shared == 'empty' else folder.write_text('not a folder')
    monkeypatch.setenv(SHARED_ENV, str(folder))
    assert cli.main(['bench', 'engine', '--quick']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert err.startswith(f'bench engine: data/vtest/vtest.avi not found under {folder}; ')
    # The folders made for its outputs go with the run that wrote nothing.
    out = tmp_path / 'new' / 'deeper' / 'r.json'
    assert cli.main(['bench', 'engine', '--quick', '--json', str(out)]) == 1
    assert not (tmp_path / 'new').exists()


def test_bench_engine_cuda_without_cuda(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    assert cli.main(['bench', 'engine', '--device', 'cuda']) == 2
    assert 'CUDA is not available' in capsys.readouterr().err


def test_bench_without_a_benchmark_prints_help(capsys):
    assert cli.main(['bench']) == 2
    assert 'engine' in capsys.readouterr().out


def test_a_fixed_size_network_runs_at_its_own_size_only(mediapipe_cache, monkeypatch):
    import numpy as np
    from sparse_perception.benchmarks.engine import _model
    from sparse_perception.models.registry import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(mediapipe_cache))
    name = 'registry:selfie_segmentation_landscape'
    with pytest.raises(SystemExit, match='fixed 144x256 input; pass --resolution 144x256'):
        _model(name, [np.zeros((96, 128, 3), np.uint8)], 'cpu')
    with pytest.raises(SystemExit, match='pass --resolutions 144x256'):
        _model(name, [np.zeros((96, 128, 3), np.uint8)], 'cpu', flag='--resolutions')
    assert _model(name, [np.zeros((144, 256, 3), np.uint8)], 'cpu')[3]  # fixed, accepted


def test_class_agreement_is_measured_where_outputs_are_class_scores_only():
    from sparse_perception.benchmarks import engine

    assert engine._gives_class_scores('mobilenet_v2_deeplabv3')
    assert engine._gives_class_scores('registry:deeplabv3_mnv2_pascal_fcn')
    assert not engine._gives_class_scores('registry:blazepose')  # features, not classes
    assert not engine._gives_class_scores('registry:selfie_segmentation_landscape')
