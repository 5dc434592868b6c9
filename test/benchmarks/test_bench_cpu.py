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

"""``sparse-perception bench cpu``: its result schema on a tiny run (no time is asserted)."""

import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest

from sparse_perception import cli
from sparse_perception.benchmarks import cpu
from sparse_perception.models.registry import CACHE_ENV
from sparse_perception.replay.sources import Frame
from support import require_module

RUN_KEYS = {'engine', 'head', 'p50_ms', 'p90_ms', 'mean_ms', 'contended_p50_ms', 'macs_ratio',
            'agreement', 'keypoint_px_p50', 'count_mismatch_frames', 'unchanged_p50_ms'}


def test_a_tiny_run_writes_the_result_schema_and_a_report(mediapipe_cache, tmp_path,
                                                          monkeypatch, capsys):
    require_module('ai_edge_litert')
    monkeypatch.setenv(CACHE_ENV, str(mediapipe_cache))  # the default models, fetched
    out = tmp_path / 'out' / 'cpu.json'
    assert cli.main(['bench', 'cpu', '--frames', '3', '--passes', '1', '--no-contention',
                     '--heads', 'segmentation', '--size', '384x288', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert {'machine', 'torch', 'commit', 'threads', 'runs', 'speedup_vs_dense',
            'speedup_vs_litert'} <= set(result)
    assert result['threads'] == 1  # the settings default
    runs = result['runs']
    assert [r['engine'] for r in runs] == list(cpu.ENGINES)
    for run in runs:
        assert set(run) == RUN_KEYS and run['head'] == 'segmentation'
        for key in ('p50_ms', 'p90_ms', 'mean_ms'):
            assert isinstance(run[key], float) and run[key] > 0
        assert run['contended_p50_ms'] is None  # --no-contention
        if run['engine'] in ('dense_torch', 'litert'):
            assert run['macs_ratio'] is None  # not counted, never a constant 1
        else:
            assert 0 < run['macs_ratio'] <= 1.0
        assert run['keypoint_px_p50'] is None and run['count_mismatch_frames'] is None
        # Only the incremental pipeline has a cheaper frame when nothing moved.
        assert (run['unchanged_p50_ms'] is None) == (run['engine'] != 'incremental')
    by_engine = {r['engine']: r for r in runs}
    assert by_engine['dense_torch']['agreement'] == 1.0
    # At the shipped defaults the incremental masks are the dense ones but for noise.
    assert by_engine['incremental']['agreement'] >= 0.995
    assert by_engine['engine_dense']['agreement'] >= 0.995
    assert by_engine['litert']['agreement'] >= 0.995
    # The speedups are those of both heads together, which this run did not measure.
    assert result['speedup_vs_dense'] is None and result['speedup_vs_litert'] is None
    assert result['details']['frames'] == 3 and result['details']['passes'] == 1
    assert result['details']['frame_size'] == [288, 384]  # --size, from the clip's 768x576
    assert len(result['commit'] or 'x' * 40) == 40
    report = out.with_suffix('.md').read_text()
    assert '| segmentation | incremental |' in report and result['machine']['cpu'] in report
    assert 'bench cpu --frames 3 --size 384x288 --passes 1 --heads segmentation' in report
    assert 'resized to 384x288 (bilinear)' in report
    assert '--no-contention' in report and '## Settings' in report
    assert report in capsys.readouterr().out


def test_an_image_folder_needs_no_frame_rate(tmp_path):
    cv2 = require_module('cv2')
    for index in range(3):
        picture = np.full((48, 64, 3), 40 * index, np.uint8)
        cv2.imwrite(str(tmp_path / f'{index:03d}.png'), picture)
    frames, label = cpu._frames(str(tmp_path), None, None)
    assert [f.image[0, 0, 0] for f in frames] == [0, 40, 80] and str(tmp_path) in label


def test_frames_are_resized_to_the_size_asked(tmp_path):
    cv2 = require_module('cv2')
    for index in range(2):
        cv2.imwrite(str(tmp_path / f'{index:03d}.png'), np.full((48, 64, 3), 90, np.uint8))
    frames, label = cpu._frames(str(tmp_path), None, None, (96, 40))
    assert [f.image.shape for f in frames] == [(40, 96, 3)] * 2
    assert label.endswith('resized to 96x40 (bilinear)')
    assert (frames[0].image == 90).all()  # the picture, not a crop or a border


@pytest.mark.parametrize('size, message', [
    ('1920', "'1920': expected WIDTHxHEIGHT"), ('axb', "'axb': expected WIDTHxHEIGHT"),
    ('16x16', "'16x16': each side from 32 to 8192 pixels"),
    ('100000x1080', "'100000x1080': each side from 32 to 8192 pixels")])
def test_a_bad_size_is_refused_before_any_work(capsys, monkeypatch, size, message):
    def never(*args, **kwargs):
        raise AssertionError('the benchmark ran')
    monkeypatch.setattr(cpu, '_frames', never)
    with pytest.raises(SystemExit) as exited:
        cli.main(['bench', 'cpu', '--size', size])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_bad_arguments_are_refused(capsys):
    assert cli.main(['bench', 'cpu', '--heads', 'segmentation,face']) == 2
    assert "--heads 'segmentation,face'" in capsys.readouterr().err
    assert cli.main(['bench', 'cpu', '--passes', '0']) == 2
    assert '--passes 0: expected at least 1' in capsys.readouterr().err
    assert cli.main(['bench', 'cpu', '--threads', '999']) == 2
    assert '--threads: model.threads = 999 is out of range' in capsys.readouterr().err


def test_a_head_group_given_twice_is_refused(capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError('the benchmark ran')
    monkeypatch.setattr(cpu, '_frames', never)
    assert cli.main(['bench', 'cpu', '--frames', '2', '--passes', '1', '--no-contention',
                     '--heads', 'pose,pose']) == 2
    assert capsys.readouterr().err == "--heads 'pose,pose': pose is given twice\n"


def test_the_busy_processes_are_stopped_even_when_a_pipeline_fails(monkeypatch):
    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    class Failing:
        def reset(self):
            pass

        def process(self, frame):
            raise RuntimeError('boom')

    monkeypatch.setattr(cpu.subprocess, 'Popen', recording_popen)
    monkeypatch.setattr(cpu, 'BUSY_SETTLE_S', 0.0)
    with pytest.raises(RuntimeError, match='boom'):
        cpu._contended({name: Failing() for name in cpu.ENGINES},
                       [Frame(0, np.zeros((8, 8, 3), np.uint8), 0, 'camera', 0)])
    assert len(started) == cpu.BUSY_PROCESSES
    assert all(process.poll() is not None for process in started)


def test_outputs_that_would_be_lost_or_destroy_the_input_are_refused_first(
        tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError('the benchmark ran')
    monkeypatch.setattr(cpu, 'run', never)  # every refusal comes before any measuring
    video = tmp_path / 'in.avi'
    video.write_bytes(b'a video')
    folder = tmp_path / 'folder'
    folder.mkdir()
    blocker = tmp_path / 'blocker'
    blocker.write_text('a file')
    for out, message in ((video, 'is the input'), (video / 'r.json', 'lies inside the input'),
                         (folder, 'is a folder'),
                         (tmp_path / 'report.md', 'is also where --json writes'),
                         (blocker / 'x' / 'r.json', 'cannot make the folder')):
        assert cli.main(['bench', 'cpu', str(video), '--json', str(out)]) == 1
        assert message in capsys.readouterr().err
    assert video.read_bytes() == b'a video'
    # A run that fails after making the folders of its outputs leaves none of them.

    def failing(*args, **kwargs):
        raise OSError('the disk went away')
    monkeypatch.setattr(cpu, 'run', failing)
    out = tmp_path / 'new' / 'deeper' / 'r.json'
    assert cli.main(['bench', 'cpu', str(video), '--json', str(out)]) == 1
    assert 'the disk went away' in capsys.readouterr().err
    assert not (tmp_path / 'new').exists()


def test_the_frames_held_are_bounded(monkeypatch):
    from sparse_perception.replay.sources import ReplayError

    monkeypatch.setattr(cpu, 'FRAME_BUDGET_BYTES', 3 * 768 * 576 * 3)
    with pytest.raises(ReplayError, match='pass --frames 3 or fewer'):
        cpu._frames(None, None, None)


def test_a_busy_process_ends_with_the_benchmark_that_started_it():
    # Started by a process that then dies at once (as a benchmark killed outright would).
    start = ('import os, subprocess, sys; print(subprocess.Popen([sys.executable, "-c", '
             f'{cpu.BUSY_LOOP!r}, str(os.getpid())]).pid)')
    starter = subprocess.Popen([sys.executable, '-c', start], stdout=subprocess.PIPE, text=True)
    pid = int(starter.stdout.readline())  # the busy process holds the pipe while it runs
    starter.wait()
    starter.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.05)
    assert not _running(pid)


def _running(pid):
    try:
        state = Path(f'/proc/{pid}/status').read_text()
    except OSError:
        return False
    return 'State:\tZ' not in state  # a zombie has ended; its reaper may be slow


def test_persons_are_paired_nearest_first():
    person = np.zeros((1, 3, 3), np.float32)
    far = person + [[[100.0, 0.0, 1.0]]]
    near = person + [[[1.0, 0.0, 1.0]]]
    # Found: far and near; dense found one person at the origin: the near one is paired.
    distances = cpu._matched_distances(np.concatenate([far, near]), person)
    assert distances == [1.0, 1.0, 1.0]
    assert cpu._matched_distances(person[:0], person) == []
