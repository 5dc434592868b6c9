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

"""The sparsity sweep's pure parts: points, their settings, the choice and the tables."""

import argparse
import json

import pytest

from sparse_perception import cli, settings as st
from sparse_perception.cli import eval as eval_command
from sparse_perception.evaluation import accuracy, sweep
from sparse_perception.replay.sources import FrameRange
from sparse_perception.scheduling import PathChoice
from support import require_shared


def test_assignments_take_the_settings_types():
    assert sweep.parse_assignment('change.threshold=4') == ('change.threshold', 4.0)
    assert sweep.parse_assignment('change.min_pixels=16') == ('change.min_pixels', 16)
    assert sweep.parse_assignment('sparsity.layer_thresholds=a=0.1;b=2') == (
        'sparsity.layer_thresholds', ('a=0.1', 'b=2'))
    for word, value in (('true', True), ('Off', False), ('yes', True), ('0', False)):
        # The words a settings flag takes.
        assert sweep.parse_assignment(f'sparsity.adaptive={word}') == ('sparsity.adaptive',
                                                                       value)
    with pytest.raises(accuracy.EvaluationError, match="sparsity.adaptive='maybe': expected"):
        sweep.parse_assignment('sparsity.adaptive=maybe')
    with pytest.raises(accuracy.EvaluationError, match='is not NAME=VALUE'):
        sweep.parse_assignment('change.threshold')
    with pytest.raises(accuracy.EvaluationError, match=r"change.min_pixels='2.5': expected int"):
        sweep.parse_assignment('change.min_pixels=2.5')
    with pytest.raises(st.SettingError, match='out of range'):
        sweep.parse_assignment('change.threshold=300')
    with pytest.raises(st.SettingError, match="unknown setting 'change.thresh'"):
        sweep.parse_assignment('change.thresh=3')


def test_points_start_from_the_exact_base_whatever_the_defaults():
    settings = sweep.point_settings({'sparsity.scale': 0.02})
    assert settings.change.threshold == 0.0 and settings.change.min_pixels == 1
    assert settings.sparsity.scale == 0.02
    assert settings.model.segmentation == accuracy.SEGMENTATION_MODEL
    assert settings.model.pose == accuracy.POSE_MODEL
    assert settings.change.tile_size == st.PerceptionSettings().change.tile_size
    models = {'model.segmentation': 'selfie_segmentation'}
    assert sweep.point_settings({}, models).model.segmentation == 'selfie_segmentation'
    # A point's change settings reach the pose head's own too, unless it names them.
    assert (settings.pose.change_threshold, settings.pose.change_min_pixels) == (0.0, 1)
    settings = sweep.point_settings({'change.threshold': 12.0, 'change.min_pixels': 32})
    assert (settings.pose.change_threshold, settings.pose.change_min_pixels) == (12.0, 32)
    settings = sweep.point_settings({'change.threshold': 12.0, 'pose.change_threshold': 2.0})
    assert (settings.change.threshold, settings.pose.change_threshold) == (12.0, 2.0)
    # The path choice is off unless a point turns it on: its dense passes follow the timings,
    # and the MACs that choose the point must not.
    assert not settings.sparsity.adaptive and st.PerceptionSettings().sparsity.adaptive
    assert sweep.point_settings({'sparsity.adaptive': True}).sparsity.adaptive


def test_grid_and_labels():
    points = sweep.grid([('change.threshold', [0.0, 2.0]), ('sparsity.scale', [0.0, 0.01])])
    assert points == [{'change.threshold': 0.0, 'sparsity.scale': 0.0},
                      {'change.threshold': 0.0, 'sparsity.scale': 0.01},
                      {'change.threshold': 2.0, 'sparsity.scale': 0.0},
                      {'change.threshold': 2.0, 'sparsity.scale': 0.01}]
    assert sweep.label(points[0]) == 'exact (threshold 0, scale 0)'
    assert sweep.label(points[3]) == 'threshold=2, scale=0.01'
    assert sweep.label({'change.min_pixels': 4}) == 'min_pixels=4'


def _args(*argv):
    parser = argparse.ArgumentParser()
    eval_command.register(parser.add_subparsers())
    return parser.parse_args(['eval', 'sweep', '--json', 'x.json', *argv])


def test_command_line_points():
    assert eval_command.points_from_args(_args()) == [dict(p) for p in sweep.DEFAULT_POINTS]
    args = _args('--point', 'change.threshold=2', 'change.min_pixels=4',
                 '--axis', 'sparsity.scale', '0', '0.05')
    assert eval_command.points_from_args(args) == [
        {'change.threshold': 2.0, 'change.min_pixels': 4},
        {'sparsity.scale': 0.0}, {'sparsity.scale': 0.05}]
    with pytest.raises(accuracy.EvaluationError, match='at least one value'):
        eval_command.points_from_args(_args('--axis', 'sparsity.scale'))


@pytest.mark.parametrize('argv, message', [
    (['--point', 'change.threshold=2', 'change.threshold=4'],
     '--point change.threshold=2 change.threshold=4: change.threshold is given twice'),
    (['--axis', 'change.threshold', '0', '2', '--axis', 'change.threshold', '4'],
     '--axis change.threshold is given twice; give all its values in one --axis'),
])
def test_a_setting_given_twice_is_refused(argv, message):
    with pytest.raises(accuracy.EvaluationError) as error:
        eval_command.points_from_args(_args(*argv))
    assert str(error.value) == message


def _clip(drop, agreement, macs, active):
    return {'iou_drop_points': drop, 'agreement': agreement, 'macs_saved': macs,
            'active_fraction_after_first': active, 'latency_ms': {
                'dense': {'p50': 100.0}, 'incremental': {'p50': 50.0}}, 'speedup': 2.0,
            'dense_iou': 0.5, 'frames_scored': 3}


def _point(name, drop, agreement, macs, active=0.5):
    clips = {'davis/a': _clip(drop, agreement, macs, active),
             'jhmdb': {**_clip(None, None, macs, active), 'pck_drop_points': 0.0,
                       'agreement_keypoint_px': 0.1, 'dense_iou': None, 'dense_pck': 0.8}}
    del clips['jhmdb']['agreement']
    return {'label': name, 'point': {}, 'settings': {}, 'clips': clips,
            'criteria': sweep.check(clips), 'macs_saved_mean': macs,
            'active_fraction_mean': active}


def test_choice_is_the_passing_point_that_saves_most():
    points = [_point('exact', 0.0, 1.0, 0.1), _point('good', 0.4, 0.996, 0.3),
              _point('too lossy', 0.6, 0.999, 0.5), _point('disagrees', 0.0, 0.99, 0.6),
              {'label': 'crashed', 'error': 'IndexError: ...',
               'criteria': {'passed': False, 'failures': ['the run failed']}}]
    assert [p['criteria']['passed'] for p in points] == [True, True, False, False, False]
    assert sweep.choose(points)['label'] == 'good'
    tie = _point('good but busier', 0.4, 0.996, 0.3, active=0.6)
    assert sweep.choose([tie, points[1]])['label'] == 'good'
    assert sweep.choose(points[2:]) is None


def test_markdown_tables():
    points = [_point('exact', 0.0, 1.0, 0.1), _point('good', 0.4, 0.996, 0.3),
              {'label': 'crashed', 'error': 'IndexError: boom', 'point': {},
               'criteria': {'passed': False, 'failures': ['the run failed']}}]
    document = {
        'points': points, 'chosen': {'label': 'good'}, 'base': dict(sweep.BASE),
        'models': {'segmentation': 'seg', 'pose': 'pose'}, 'wall_s': 12.0,
        'conditions': {'davis': {'sequences': ['a'], 'frames': ':'},
                       'jhmdb': {'frames': ':'}, 'vtest40': 'not run', 'timing': 't',
                       'choice': 'c'},
        'environment': {'versions': {'torch': '2.13.0'}, 'device': {'cpu': 'X', 'cores': 2},
                        'source': {'commit': 'abcdef0123456789', 'tracked_files_modified': 1}}}
    text = sweep.markdown(document, 'sparse-perception eval sweep --json s.json')
    assert '- source: commit abcdef012345 with modified files' in text
    assert '**Chosen: good**' in text
    assert '| good | +0.40 / 99.60% | +0.00 / 0.10 px | **yes** |' in text
    assert '| exact | +0.00 / 100.00% | +0.00 / 0.10 px | yes |' in text
    assert '| crashed | failed | failed | no: IndexError: boom |' in text
    assert '| good | 30.0% | 0.50 / 30% / 50 (2.00x) | 0.50 / 30% / 50 (2.00x) |' in text


def test_every_point_runs_beside_the_dense_pipeline(monkeypatch):
    # A pipeline that runs alone keeps its caches and times faster than one that alternates:
    # each point's incremental run alternates with the dense one, not only the first.
    class Fake:
        class_names = ('background', 'person')

        def __init__(self, settings, head, incremental):
            self.incremental = incremental

        def update(self, settings):
            pass

        def close(self):
            pass

    runs = []
    monkeypatch.setattr(accuracy, '_pipeline', Fake)
    monkeypatch.setattr(accuracy.loop, 'warm', lambda pipelines, frame: None)
    monkeypatch.setattr(accuracy, 'run_head', lambda pipelines, head, frames: runs.append(
        [p.incremental for p in pipelines]) or [accuracy.HeadRun() for _ in pipelines])
    monkeypatch.setattr(accuracy, 'score', lambda *args: {})
    monkeypatch.setattr(accuracy, '_brief', lambda result: '')
    clip = accuracy.ClipData(accuracy.davis_clip('parkour'), [argparse.Namespace(index=0)],
                             None)
    evaluator = accuracy.Evaluator(sweep.point_settings({}), log=lambda line: None)
    evaluator.clip(clip)
    evaluator.update(sweep.point_settings({'sparsity.gate': 'glance'}))
    evaluator.clip(clip)
    assert runs == [[True, False], [True, False]]


def test_a_point_whose_settings_do_not_go_together_fails_before_any_runs(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError('clips were read before every point was checked')
    monkeypatch.setattr(accuracy, 'load_clips', never)
    with pytest.raises(st.SettingError, match='sparsity.gate_model'):
        sweep.sweep([{'change.threshold': 2.0}, {'sparsity.gate': 'learned'}], log=lambda _: None)
    with pytest.raises(accuracy.EvaluationError, match='point gate=learned, gate_model=no.pt: '
                       "gate file 'no.pt' does not exist"):
        sweep.sweep([{'change.threshold': 2.0},
                     {'sparsity.gate': 'learned', 'sparsity.gate_model': 'no.pt'}],
                    log=lambda _: None)


def _runs_nothing(monkeypatch):
    """Make every point's run an empty one: the sweep's document without the minutes."""
    class Evaluator:
        def __init__(self, settings, log):
            pass

        def discard_incremental(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(accuracy, 'load_clips', lambda *args: {'davis': [], 'jhmdb': []})
    monkeypatch.setattr(accuracy, 'Evaluator', Evaluator)
    monkeypatch.setattr(sweep, 'run_point', lambda evaluator, clips, settings: {})
    monkeypatch.setattr(sweep, '_macs_saved', lambda scores: 0.0)
    monkeypatch.setattr(sweep, '_active', lambda scores: 1.0)


@pytest.mark.parametrize('name, value', [
    ('model.segmentation', 'deeplabv3_mnv2_dm05_pascal_fcn'), ('model.device', 'cuda'),
    ('pose.max_people', 2)])
def test_a_point_that_sets_more_than_sparsity_is_refused_before_any_runs(monkeypatch, name,
                                                                         value):
    # The dense reference and the models are shared by every point: a point that changed
    # them would be compared with a dense run of other settings, or never run.
    def never(*args, **kwargs):
        raise AssertionError('clips were read before every point was checked')
    monkeypatch.setattr(accuracy, 'load_clips', never)
    short = name.split('.')[-1]
    with pytest.raises(accuracy.EvaluationError, match=(
            f'point {short}={value}: {name}={value}: a sweep point may set only change and '
            r'sparsity settings \(change.\*, sparsity.\*, pose.gate\*, pose.change_\*\)')):
        sweep.sweep([{}, {name: value}], log=lambda _: None)
    evaluator = accuracy.Evaluator(sweep.point_settings({}), log=lambda _: None)
    with pytest.raises(accuracy.EvaluationError, match=f'{name} differs'):
        evaluator.update(st.replace(sweep.point_settings({}), {name: value}))


def test_the_document_names_the_models_every_point_ran(monkeypatch):
    _runs_nothing(monkeypatch)
    document = sweep.sweep([{}, {'change.threshold': 2.0}], vtest=False, default_models=False,
                           log=lambda _: None)
    assert document['models'] == {'segmentation': 'deeplabv3_mnv2_pascal_fcn',
                                  'pose': 'movenet_lightning'}


def test_a_learned_gate_point_names_its_file_by_content(monkeypatch, tmp_path):
    import hashlib

    from sparse_perception.gates.learned import CELLS, network, save, VERSION

    _runs_nothing(monkeypatch)
    gate = tmp_path / 'gate.pt'
    save(network().state_dict(), {'version': VERSION, 'tile': 16, 'cells': CELLS,
                                  'model': 'deeplabv3_mnv2_pascal_fcn'}, gate)
    document = sweep.sweep([{}, {'sparsity.gate': 'learned', 'sparsity.gate_model': str(gate)}],
                           vtest=False, default_models=False, log=lambda _: None)
    plain, learned = document['points']
    assert 'gate_file' not in plain
    assert learned['gate_file']['sha256'] == hashlib.sha256(gate.read_bytes()).hexdigest()


def test_the_default_models_skip_a_point_whose_gate_holds_to_another_model(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError('the default models ran with a gate made for another model')
    monkeypatch.setattr(accuracy, 'Evaluator', never)
    out = sweep._default_models({'sparsity.gate': 'learned', 'sparsity.gate_model': 'g.pt'},
                                [], log=lambda _: None)
    assert 'trained for another segmentation model' in out['skipped']


def test_a_sweep_with_a_point_that_failed_to_run_exits_with_an_error(monkeypatch, tmp_path,
                                                                     capsys):
    # The document is written with the failure in it, and a script can tell from the status.
    _runs_nothing(monkeypatch)

    def run_point(evaluator, clips, settings):
        if settings.change.threshold == 3.0:
            raise RuntimeError('the engine broke')
        return {}
    monkeypatch.setattr(sweep, 'run_point', run_point)
    out = tmp_path / 'sweep.json'
    assert cli.main(['eval', 'sweep', '--quiet', '--json', str(out), '--no-vtest',
                     '--no-default-models', '--point', 'change.threshold=2',
                     '--point', 'change.threshold=3']) == 1
    err = capsys.readouterr().err
    assert '1 of 2 points failed to run: threshold=3' in err, err
    points = json.loads(out.read_text())['points']
    assert [('error' in p) for p in points] == [False, True]
    monkeypatch.setattr(sweep, 'run_point', lambda evaluator, clips, settings: {})
    assert cli.main(['eval', 'sweep', '--quiet', '--json', str(out), '--no-vtest',
                     '--no-default-models', '--point', 'change.threshold=2']) == 0


class _FixedCosts(PathChoice):
    """A path choice that times the engine at ten times the dense pass, whatever the load."""

    def record(self, path, ms):
        super().record(path, 10.0 if path == 'engine' else 1.0)


def test_a_point_gives_the_figures_of_a_run_of_its_own(monkeypatch):
    # A pipeline's reset keeps what its path choice measured (MoveNet's input size is fixed):
    # a point must not start on the path the points before it chose.
    require_shared('data/jhmdb/ReadJHMDBAnnotations')
    from sparse_perception import scheduling

    monkeypatch.setattr(scheduling, 'PathChoice', _FixedCosts)  # the same choice every run
    load_clips = accuracy.load_clips
    monkeypatch.setattr(accuracy, 'load_clips', lambda sections, davis, jhmdb: {
        'davis': [], **load_clips(('jhmdb',), davis, jhmdb)})

    def figures(*thresholds):
        document = sweep.sweep([{'change.threshold': t} for t in thresholds],
                               jhmdb_frames=FrameRange(0, 6), vtest=False,
                               default_models=False, log=lambda _: None)
        keys = ('active_fraction', 'active_fraction_after_first', 'macs_saved', 'macs_ratio',
                'dense_frames', 'agreement_keypoint_px', 'incremental_pck')
        return [{k: p['clips']['jhmdb'][k] for k in keys} for p in document['points']]

    four, eight, four_again = figures(4.0, 8.0, 4.0)
    assert four_again == four
    assert figures(8.0, 4.0) == [eight, four]
