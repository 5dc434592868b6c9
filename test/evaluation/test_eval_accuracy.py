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

"""``sparse-perception eval accuracy``: the result contract on a few real frames, bad input."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sparse_perception import cli
from sparse_perception.evaluation import accuracy
from sparse_perception.replay.metrics import PersonTruth
from sparse_perception.replay.sources import Frame
from sparse_perception.settings import PerceptionSettings
from support import require_module, require_shared


def _eval(*args):
    return cli.main(['eval', 'accuracy', '--quiet', *map(str, args)])


@pytest.fixture(scope='module')
def short_run(tmp_path_factory):
    """Run the command on 3 frames of each clip, parity with the two smallest Coral models."""
    require_shared('data/davis/DAVIS')
    require_shared('data/jhmdb/ReadJHMDBAnnotations')
    require_shared('models/coral')
    out = tmp_path_factory.mktemp('eval')
    path = out / 'accuracy.json'
    status = _eval('--json', path, '--markdown', out / 'accuracy.md', '--davis-frames', '0:3',
                   '--jhmdb-frames', '10:13', '--sequences', 'parkour', '--parity-frames', 1, 2,
                   '--parity-models', 'deeplabv3_mnv2_dm05_pascal', 'movenet_lightning',
                   '--anchor', 'deeplabv3_mnv2_dm05_pascal')
    assert status == 0
    return json.loads(path.read_text()), (out / 'accuracy.md').read_text()


@pytest.mark.slow
def test_result_contract(short_run):
    result, _ = short_run
    assert {'parity', 'davis', 'jhmdb', 'settings'} <= set(result)
    seg = result['parity']['deeplabv3_mnv2_dm05_pascal']
    pose = result['parity']['movenet_lightning']
    assert seg['frames'] == 1 and 0.9 < seg['agreement'] <= 1.0  # 1 of each --sequences
    assert pose['frames'] == 2 and 0.0 <= pose['median_px'] < 5.0
    parkour = result['davis']['parkour']
    for key in ('dense_iou', 'incremental_iou', 'agreement'):
        assert 0.0 <= parkour[key] <= 1.0
    for section in (parkour, result['jhmdb']):
        assert 0.0 < section['macs_ratio'] <= 1.0 and section['speedup'] > 0.0
    assert parkour['frames'] == 3 and parkour['frame_indices'] == [0, 2]
    assert parkour['class_id'] == 15 and parkour['frame_size'] == [854, 480]
    jhmdb = result['jhmdb']
    assert jhmdb['frames'] == 3 and jhmdb['frame_indices'] == [10, 12]
    assert 0.0 <= jhmdb['dense_pck'] <= 1.0 and 0.0 <= jhmdb['incremental_pck'] <= 1.0
    assert jhmdb['joints_scored'] == 3 * 12  # the 12 joints JHMDB shares with COCO-17
    settings = result['settings']
    defaults = PerceptionSettings()
    assert settings['change.threshold'] == defaults.change.threshold
    assert settings['pose.change_threshold'] == defaults.pose.change_threshold
    assert settings['sparsity.scale'] == defaults.sparsity.scale
    assert settings['package_defaults'] is True
    assert set(settings['active_fraction']) == {'davis/parkour', 'jhmdb'}
    assert 0.0 < settings['active_fraction']['davis/parkour'] <= 1.0
    assert result['conditions']['davis_frames'] == '0:3'
    assert result['conditions']['models']['segmentation']['network_input'] == \
        'the frame size, up to 2.1 megapixels (fully convolutional)'
    assert result['environment']['versions']['torch']
    # The anchor: a fixed-size model run dense on the same frames, scored on its own labels.
    anchor = parkour['anchor']
    assert anchor['model'] == 'deeplabv3_mnv2_dm05_pascal'
    assert 0.0 <= anchor['iou'] <= 1.0 and anchor['speedup'] > 0.0
    assert anchor['latency_ms']['p50'] > 0.0
    assert 'anchor' not in result['jhmdb']  # no pose anchor was asked for
    assert result['conditions']['anchors'] == {'segmentation': {
        'name': 'deeplabv3_mnv2_dm05_pascal', 'network_input': '513x513 (resize)'}}


@pytest.mark.slow
def test_default_settings_keep_the_bounds_on_real_frames(short_run):
    # The first frame of a stream runs dense; the two after it are the incremental ones.
    result, _ = short_run
    assert result['criteria']['passed'], result['criteria']['failures']
    assert result['davis']['parkour']['dense_frames'] == 1


@pytest.mark.slow
def test_markdown_names_every_section(short_run):
    _, text = short_run
    for heading in ('## DAVIS', '## JHMDB', '## Parity', 'parkour', 'movenet_lightning',
                    '## Beside an anchor', '| parkour | deeplabv3_mnv2_dm05_pascal | IoU '):
        assert heading in text


@pytest.mark.parametrize('command, models', [
    (['eval', 'accuracy'], (accuracy.SEGMENTATION_MODEL, accuracy.POSE_MODEL)),
    (['replay'], (PerceptionSettings().model.segmentation, PerceptionSettings().model.pose))])
def test_the_help_shows_the_models_the_command_runs_by_default(capsys, command, models):
    with pytest.raises(SystemExit):
        cli.main(command + ['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for flag, model in zip(('--model.segmentation', '--model.pose'), models):
        described = text.split(f'{flag} ', 2)[2]  # the flag's own line, after the usage
        assert described.split(' --', 1)[0].endswith(f'[{model!r}]'), (flag, described[:200])


def test_missing_shared_folder_is_named(tmp_path, monkeypatch, capsys):
    missing = tmp_path / 'nowhere'
    monkeypatch.setenv('SPARSE_PERCEPTION_SHARED', str(missing))
    assert _eval('--json', tmp_path / 'out.json', '--sections', 'davis') == 1
    error = capsys.readouterr().err
    assert 'sparse-perception eval accuracy: error:' in error
    assert str(missing) in error and 'SPARSE_PERCEPTION_SHARED' in error
    assert not (tmp_path / 'out.json').exists()


def test_incomplete_shared_folder_is_named(tmp_path, monkeypatch, capsys):
    # DAVIS frames without their masks.
    (tmp_path / 'data/davis/DAVIS/JPEGImages/480p/parkour').mkdir(parents=True)
    monkeypatch.setenv('SPARSE_PERCEPTION_SHARED', str(tmp_path))
    assert _eval('--json', tmp_path / 'out.json', '--sections', 'davis',
                 '--sequences', 'parkour') == 1
    assert 'Annotations/480p/parkour not found' in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--sections', 'davis,coco'], "--sections 'davis,coco'"),
    (['--sections', 'davis', '--sequences', 'parkour', '--davis-frames', '500:600'],
     'selects none of its frames'),
    (['--sections', 'davis', '--sequences', 'parkour,parkour', '--davis-frames', '0:2'],
     "--sequences 'parkour,parkour': parkour is given twice"),
    (['--sections', 'davis', '--sequences', 'no_such_sequence'],
     "DAVIS has no sequence 'no_such_sequence'"),  # a typo, not a missing data folder
    (['--change.threshold', '-1'], 'change.threshold = -1.0 is out of range'),
    (['--parity-frames', '0', '3'], '--parity-frames 0 3'),
    (['--sections', 'davis', '--anchor', 'no_such_model'], '--anchor no_such_model'),
    (['--sections', 'davis', '--anchor', 'movenet_lightning'],
     '--anchor movenet_lightning is a pose model, and the jhmdb section'),
    (['--sections', 'davis', '--anchor', 'deeplabv3_mnv2_pascal', '--anchor',
      'deeplabv3_mnv2_dm05_pascal'], 'deeplabv3_mnv2_pascal is already the segmentation anchor'),
])
def test_bad_options_are_named(tmp_path, capsys, args, message):
    require_shared('data/davis/DAVIS')
    assert _eval('--json', tmp_path / 'out.json', *args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out.json').exists()


def test_a_gate_file_no_gate_reads_is_noted(tmp_path, capsys):
    require_shared('data/davis/DAVIS')
    # (Stopped by a frame range past the sequence's end, after the settings were read.)
    assert _eval('--json', tmp_path / 'out.json', '--sections', 'davis', '--sequences',
                 'parkour', '--davis-frames', '500:600', '--sparsity.gate_model',
                 tmp_path / 'gate.pt') == 1
    assert f'note: sparsity.gate_model {tmp_path / "gate.pt"} is not read' in \
        capsys.readouterr().err


def test_bad_json_path_is_named(tmp_path, capsys):
    assert _eval('--json', tmp_path, '--sections', 'davis') == 1
    assert 'is a folder' in capsys.readouterr().err
    assert _eval('--json', tmp_path / 'no' / 'out.json', '--sections', 'davis') == 1
    assert 'does not exist' in capsys.readouterr().err


@pytest.mark.parametrize('command', ['accuracy', 'sweep'])
def test_unwritable_json_folder_is_named_before_the_evaluation(capsys, monkeypatch, command):
    from sparse_perception.evaluation import sweep

    def never(*args, **kwargs):
        raise AssertionError('the evaluation ran before the output was checked')
    monkeypatch.setattr(accuracy, 'evaluate', never)
    monkeypatch.setattr(sweep, 'sweep', never)
    # /proc takes no new files, not even from root (a chmod would not stop root).
    target = Path('/proc/sparse_perception_out.json')
    if not target.parent.is_dir():
        pytest.skip('needs Linux /proc')
    assert cli.main(['eval', command, '--quiet', '--json', str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert f'{target}: cannot write into /proc: ' in err and 'choose another place' in err


def test_unknown_parity_model_is_named_before_any_section_runs(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError('the evaluation ran before the models were checked')
    monkeypatch.setattr(accuracy, 'evaluate', never)
    assert _eval('--json', tmp_path / 'out.json', '--sections', 'jhmdb,parity',
                 '--parity-models', 'no_such_model') == 1
    assert '--parity-models: no_such_model not registered' in capsys.readouterr().err


@pytest.mark.parametrize('command', ['accuracy', 'sweep'])
def test_outputs_that_would_replace_each_other_or_the_data_are_refused(
        tmp_path, capsys, monkeypatch, command):
    from sparse_perception.evaluation import sweep
    from sparse_perception.shared_data import SHARED_ENV

    def never(*args, **kwargs):
        raise AssertionError('the evaluation ran before the outputs were checked')
    monkeypatch.setattr(accuracy, 'evaluate', never)
    monkeypatch.setattr(sweep, 'sweep', never)
    shared = tmp_path / 'shared'
    (shared / 'data').mkdir(parents=True)
    monkeypatch.setenv(SHARED_ENV, str(shared))
    same = tmp_path / 'out.json'
    assert cli.main(['eval', command, '--quiet', '--json', str(same),
                     '--markdown', str(same)]) == 1
    assert '--markdown' in (err := capsys.readouterr().err) and 'is also where --json' in err
    inside = shared / 'data' / 'out.json'
    assert cli.main(['eval', command, '--quiet', '--json', str(inside)]) == 1
    assert 'lies inside the input' in capsys.readouterr().err
    assert not inside.exists() and not same.exists()


def test_outputs_may_not_replace_the_model_or_gate_files_the_run_reads(
        tmp_path, capsys, monkeypatch):
    from sparse_perception.evaluation import sweep

    def never(*args, **kwargs):
        raise AssertionError('the evaluation ran before the outputs were checked')
    monkeypatch.setattr(accuracy, 'evaluate', never)
    monkeypatch.setattr(sweep, 'sweep', never)
    gate, model = tmp_path / 'gate.pt', tmp_path / 'pose.tflite'
    gate.write_bytes(b'weights')
    model.write_bytes(b'model')
    learned = ['--sparsity.gate', 'learned', '--sparsity.gate_model', str(gate)]
    for args in (['--json', gate, *learned], ['--json', tmp_path / 'a.json', '--markdown',
                                              gate, *learned],
                 ['--json', model, '--model.pose', model], ['--json', model, '--anchor', model]):
        assert _eval(*args) == 1
        assert 'is the input' in capsys.readouterr().err
    assert cli.main(['eval', 'sweep', '--quiet', '--json', str(model), '--point',
                     f'model.pose={model}']) == 1
    assert 'is the input' in capsys.readouterr().err
    # A registered anchor, found in model.models_dir.
    from sparse_perception.models.registry import REGISTRY

    entry = REGISTRY['deeplabv3_mnv2_dm05_pascal']
    anchor = tmp_path / entry.filename
    anchor.write_bytes(b'model')
    assert _eval('--json', anchor, '--model.models_dir', tmp_path, '--anchor', entry.name) == 1
    assert 'is the input' in capsys.readouterr().err and anchor.read_bytes() == b'model'
    assert gate.read_bytes() == b'weights' and model.read_bytes() == b'model'


@pytest.mark.parametrize('command', ['accuracy', 'sweep'])
def test_a_failed_write_leaves_no_json_without_its_markdown(tmp_path, capsys, monkeypatch,
                                                            command):
    from sparse_perception import output_files
    from sparse_perception.evaluation import sweep

    monkeypatch.setattr(accuracy, 'evaluate', lambda *a, **k: {'timing': {'total_s': 0}})
    monkeypatch.setattr(accuracy, 'markdown', lambda *a, **k: 'table')
    monkeypatch.setattr(sweep, 'sweep', lambda *a, **k: {'chosen': None})
    monkeypatch.setattr(sweep, 'markdown', lambda *a, **k: 'table')
    written = output_files.write_aside

    def full_disk(path, data):
        if str(path).endswith('.md'):
            raise OSError(28, 'No space left on device', str(path))
        return written(path, data)
    monkeypatch.setattr(output_files, 'write_aside', full_disk)
    out, md = tmp_path / 'out.json', tmp_path / 'out.md'
    md.write_text('an older run')
    assert cli.main(['eval', command, '--quiet', '--json', str(out), '--markdown',
                     str(md)]) == 1
    assert f'{md}: No space left on device' in capsys.readouterr().err
    assert not out.exists() and md.read_text() == 'an older run'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.md']  # no temporary left


# -- scoring, with the replay's metrics, on outputs made up here --------------------------------

class _Masks:
    """Ground truth by position: frame i's foreground is the left i+1 columns."""

    def for_frame(self, index, name=''):
        mask = np.zeros((2, 4), bool)
        mask[:, :index + 1] = True
        return mask


def _frames(count, first=0):
    return [Frame(first + i, np.zeros((2, 4, 3), np.uint8), 0, 'camera', 0) for i in
            range(count)]


def _run(masks=(), keypoints=()):
    run = accuracy.HeadRun(masks=list(masks), keypoints=list(keypoints))
    run.ms = [10.0] * max(len(masks), len(keypoints))
    run.active = [1.0] + [0.5] * (len(run.ms) - 1)
    run.changed = list(run.active)
    run.macs, run.dense_macs = 75, 100
    return run


def test_segmentation_scores_by_hand():
    clip = accuracy.Clip('toy', 'segmentation', Path('.'), Path('.'), 24.0)
    names = ['background'] * 15 + ['person']
    frames = _frames(2, first=1)  # truth: frame 1 -> 2 columns, frame 2 -> 3 columns
    dense = [np.full((2, 4), 15, np.uint8)] * 2  # all person
    incremental = [np.full((2, 4), 15, np.uint8), np.zeros((2, 4), np.uint8)]
    result = accuracy.score(clip, frames, _Masks(), _run(incremental), _run(dense), names)
    assert result['dense_iou'] == pytest.approx(np.mean([4 / 8, 6 / 8]))
    assert result['incremental_iou'] == pytest.approx(np.mean([4 / 8, 0.0]))
    assert result['iou_drop_points'] == pytest.approx(100 * 6 / 8 / 2)
    assert result['agreement'] == pytest.approx(8 / 16)
    assert result['class_id'] == 15 and result['frame_indices'] == [1, 2]
    assert result['macs_saved'] == pytest.approx(0.25)
    assert result['active_fraction_after_first'] == pytest.approx(0.5)


def test_a_model_without_a_person_class_is_named_as_such():
    from sparse_perception.replay.errors import ReplayError

    clip = accuracy.Clip('toy', 'segmentation', Path('.'), Path('.'), 24.0)
    masks = [np.zeros((2, 4), np.uint8)] * 2
    with pytest.raises(ReplayError, match="scores the 'person' class") as caught:
        accuracy.score(clip, _frames(2), _Masks(), _run(masks), _run(masks), [])
    assert '--gt-class' not in str(caught.value)  # a replay's flag: eval has none


class _People:
    def for_frame(self, index, name=''):
        points = np.full((17, 2), np.nan)
        visible = np.zeros(17, bool)
        points[5:7] = [[10.0, 10.0], [20.0, 10.0]]  # the shoulders
        visible[5:7] = True
        return [PersonTruth(points, visible, 100.0, float('nan'))]


def test_pose_scores_by_hand():
    clip = accuracy.Clip('toy', 'pose', Path('.'), Path('.'), 30.0)
    joints = ['left_shoulder', 'right_shoulder']
    good = np.array([[[10.0, 10.0, 0.9], [20.0, 10.0, 0.9]]], np.float32)
    off = np.array([[[10.0, 10.0, 0.9], [60.0, 10.0, 0.9]]], np.float32)  # 40 px > 0.2 x 100
    result = accuracy.score(clip, _frames(2), _People(), _run(keypoints=[good, off]),
                            _run(keypoints=[good, good]), joints)
    assert result['dense_pck'] == 1.0 and result['incremental_pck'] == pytest.approx(3 / 4)
    assert result['pck_drop_points'] == pytest.approx(25.0)
    assert result['joints_scored'] == 4
    assert result['agreement_keypoint_px'] == pytest.approx(40.0 / 4)


def test_criteria_name_every_miss():
    davis = {'a': {'iou_drop_points': 0.6, 'agreement': 0.99},
             'b': {'iou_drop_points': -1.0, 'agreement': 0.996}}
    check = accuracy.criteria(davis, {'pck_drop_points': 0.5})
    assert not check['passed'] and len(check['failures']) == 2
    assert 'davis/a: IoU drop 0.600' in check['failures'][0]
    assert 'davis/a: agreement 99.000%' in check['failures'][1]
    assert accuracy.criteria({'b': davis['b']}, {'pck_drop_points': 0.4})['passed']


def test_anchor_is_scored_on_its_own_labels_and_timed_against_incremental():
    clip = accuracy.Clip('toy', 'segmentation', Path('.'), Path('.'), 24.0)
    frames = _frames(3)  # truth: frame i -> i + 1 columns of 4
    # A selfie-like anchor: class 1 is "person". Frame 0 (dense for every pipeline) is not
    # timed; the p50s of frames 1 and 2 give the speedup.
    anchor = _run([np.ones((2, 4), np.uint8)] * 3)
    anchor.ms = [99.0, 30.0, 50.0]
    incremental = _run([np.zeros((2, 4), np.uint8)] * 3)
    incremental.ms = [99.0, 10.0, 10.0]
    result = accuracy.anchor_score(clip, frames, _Masks(), anchor, incremental,
                                   ['background', 'person'], 'toy_anchor')
    assert result['model'] == 'toy_anchor'
    assert result['iou'] == pytest.approx(np.mean([1 / 4, 2 / 4, 3 / 4]))
    assert result['latency_ms']['p50'] == pytest.approx(40.0)
    assert result['speedup'] == pytest.approx(4.0)
    pose = accuracy.Clip('toy', 'pose', Path('.'), Path('.'), 30.0)
    off = np.array([[[10.0, 10.0, 0.9], [60.0, 10.0, 0.9]]], np.float32)
    result = accuracy.anchor_score(pose, _frames(1), _People(), _run(keypoints=[off]),
                                   _run(keypoints=[off]), ['left_shoulder', 'right_shoulder'],
                                   'toy_pose')
    assert result['pck'] == pytest.approx(0.5)


def test_anchors_serve_the_head_of_their_model():
    assert accuracy.anchor_heads(['deeplabv3_mnv2_pascal', 'movenet_lightning'],
                                 ('davis', 'jhmdb')) == {
        'segmentation': 'deeplabv3_mnv2_pascal', 'pose': 'movenet_lightning'}
    assert accuracy.anchor_heads([], ('davis',)) == {}


def test_a_segmentation_anchor_without_a_person_class_is_refused(monkeypatch):
    from sparse_perception.models.registry import REGISTRY

    cars = dataclasses.replace(REGISTRY['deeplabv3_mnv2_pascal'], name='cars',
                               labels=('background', 'car'))
    monkeypatch.setitem(REGISTRY, 'cars', cars)
    with pytest.raises(accuracy.EvaluationError, match='--anchor cars: its classes have no'):
        accuracy.anchor_heads(['cars'], ('davis',))


def test_anchor_table_compares_each_anchored_clip():
    result = {'conditions': {'anchors': {'segmentation': {
                  'name': 'a', 'network_input': '513x513 (resize)'}}},
              'davis': {'parkour': {'incremental_iou': 0.75,
                                    'latency_ms': {'incremental': {'p50': 50.0}},
                                    'anchor': {'model': 'a', 'iou': 0.8,
                                               'latency_ms': {'p50': 100.0}, 'speedup': 2.0}},
                        'breakdance': {'incremental_iou': 0.1,
                                       'latency_ms': {'incremental': {'p50': 50.0}}}}}
    lines = accuracy._anchor_table(result)
    assert '- segmentation: a, network input 513x513 (resize)' in lines
    rows = [line for line in lines if line.startswith('| parkour') or
            line.startswith('| breakdance')]
    assert rows == ['| parkour | a | IoU 0.8000 | IoU 0.7500 | -5.00 | 100 | 50 | 2.00x |']
    assert accuracy._anchor_table({'davis': {'parkour': {}}}) == []


@pytest.mark.parametrize('section, frames', [('davis', '0:1'), ('davis', '0:200:150'),
                                             ('jhmdb', '0:1')])
def test_a_range_of_one_frame_is_refused(tmp_path, capsys, section, frames):
    # The incremental figures are of the frames after the first: a single frame has none.
    require_shared('data/davis/DAVIS')
    require_shared('data/jhmdb/ReadJHMDBAnnotations')
    assert _eval('--json', tmp_path / 'out.json', '--sections', section, '--sequences',
                 'parkour', f'--{section}-frames', frames) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert f'the frame range {frames} selects 1 frame of ' in err
    assert 'so at least 2 are needed' in err
    assert not (tmp_path / 'out.json').exists()


def test_latency_without_frames_after_the_first_is_none():
    incremental, dense = accuracy.HeadRun(ms=[80.0], active=[1.0]), accuracy.HeadRun(ms=[90.0])
    figures = accuracy.activity(incremental, dense)
    assert figures['latency_ms'] == {'dense': None, 'incremental': None}
    assert figures['speedup'] is None and figures['active_fraction_after_first'] is None
    clip = accuracy.Clip('a', 'pose', Path('.'), None, None)
    anchor = accuracy.anchor_score(clip, [], None, accuracy.HeadRun(ms=[70.0]), incremental,
                                   (), 'm')
    assert anchor['latency_ms'] is None and anchor['speedup'] is None


def _annotated_only_at_the_start(tmp_path):
    """Return a shared folder whose parkour has all its frames but masks for frames 0-1."""
    source = require_shared('data/davis/DAVIS')
    frames = tmp_path / 'data/davis/DAVIS/JPEGImages/480p/parkour'
    masks = tmp_path / 'data/davis/DAVIS/Annotations/480p/parkour'
    frames.parent.mkdir(parents=True)
    frames.symlink_to(source / 'JPEGImages/480p/parkour')
    masks.mkdir(parents=True)
    for name in ('00000.png', '00001.png'):
        (masks / name).symlink_to(source / 'Annotations/480p/parkour' / name)
    return tmp_path


def test_frames_without_ground_truth_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('SPARSE_PERCEPTION_SHARED', str(_annotated_only_at_the_start(tmp_path)))
    out = tmp_path / 'out.json'
    assert _eval('--json', out, '--markdown', tmp_path / 'out.md', '--sections', 'davis',
                 '--sequences', 'parkour', '--davis-frames', '10:13') == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert ('parkour: no ground truth for the frames 10:13 (frames 10-12); its annotations '
            'cover frames 0-1 only') in err
    assert not out.exists()


def test_nothing_scored_misses_the_bounds_and_is_shown_as_such():
    davis = {'a': {'iou_drop_points': None, 'agreement': 1.0}}
    check = accuracy.criteria(davis, {'pck_drop_points': None})
    assert not check['passed']
    assert check['failures'] == ['davis/a: nothing scored against the ground truth',
                                 'jhmdb: nothing scored against the ground truth']
    from sparse_perception.cli import eval as eval_command

    # The active fraction printed is the markdown's: over the frames after the first.
    result = {'davis': {'a': {'dense_iou': None, 'incremental_iou': None, 'agreement': 1.0,
                              'active_fraction': 0.5, 'active_fraction_after_first': 0.25}},
              'jhmdb': {'clip': 'c', 'dense_pck': None, 'incremental_pck': None,
                        'active_fraction': 0.5, 'active_fraction_after_first': None},
              'criteria': check, 'timing': {'total_s': 1.0}}
    text = eval_command.summary(result, Path('out.json'))
    assert 'davis a: IoU dense -, incremental -, agreement 100.000%, active 0.250' in text
    assert 'jhmdb: PCK dense -, incremental -, active -' in text
    assert 'accuracy bounds: MISSED: davis/a: nothing scored' in text


def _parkour_only(tmp_path):
    """Return a shared folder with the models, JHMDB and DAVIS's parkour, and nothing else."""
    shared = tmp_path / 'shared'
    davis = shared / 'data/davis/DAVIS'
    for kind in ('JPEGImages', 'Annotations'):
        (davis / kind / '480p').mkdir(parents=True)
        (davis / kind / '480p/parkour').symlink_to(
            require_shared(f'data/davis/DAVIS/{kind}/480p/parkour'))
    (shared / 'data/jhmdb').symlink_to(require_shared('data/jhmdb'))
    (shared / 'models').symlink_to(require_shared('models'))
    return shared


def test_parity_reads_only_the_sequences_and_data_it_is_given(tmp_path, monkeypatch):
    require_module('ai_edge_litert')
    monkeypatch.setenv('SPARSE_PERCEPTION_SHARED', str(_parkour_only(tmp_path)))
    out = tmp_path / 'out.json'
    assert _eval('--json', out, '--sections', 'parity', '--sequences', 'parkour',
                 '--parity-models', 'movenet_lightning', '--parity-frames', 1, 2) == 0
    assert json.loads(out.read_text())['parity']['movenet_lightning']['frames'] == 2
    # A pose model alone reads no DAVIS frames, of any sequence.
    assert _eval('--json', out, '--sections', 'parity', '--sequences', 'breakdance',
                 '--parity-models', 'movenet_lightning', '--parity-frames', 1, 2) == 0


def test_parity_data_is_checked_before_the_other_sections_run(tmp_path, monkeypatch, capsys):
    require_module('ai_edge_litert')

    def never(*args, **kwargs):
        raise AssertionError('a section ran before the parity data was checked')
    monkeypatch.setattr(accuracy, 'Evaluator', never)
    monkeypatch.setenv('SPARSE_PERCEPTION_SHARED', str(_parkour_only(tmp_path)))
    assert _eval('--json', tmp_path / 'out.json', '--sections', 'jhmdb,parity', '--sequences',
                 'breakdance', '--parity-models', 'deeplabv3_mnv2_dm05_pascal') == 1
    assert "DAVIS has no sequence 'breakdance'" in capsys.readouterr().err


def test_the_conditions_are_those_of_the_sections_that_ran(tmp_path):
    require_shared('data/jhmdb/ReadJHMDBAnnotations')
    out, md = tmp_path / 'out.json', tmp_path / 'out.md'
    assert _eval('--json', out, '--markdown', md, '--sections', 'jhmdb',
                 '--jhmdb-frames', '0:3') == 0
    conditions = json.loads(out.read_text())['conditions']
    assert conditions['jhmdb_frames'] == '0:3'
    for key in ('davis_frames', 'davis_sequences', 'parity_frames'):
        assert key not in conditions
    assert '- frames: JHMDB [0:3]; ground truth matched by frame position' in md.read_text()
