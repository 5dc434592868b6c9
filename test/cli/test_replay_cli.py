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
``sparse-perception replay`` end to end on real bags, with the pipeline test double.

The double (test/pipeline_double.py, built through the replay_double fixture) computes for
real, so every figure in the report can be checked against the same pipelines run here
directly on the same frames.
"""

import json
import os
from pathlib import Path
import re
import subprocess
import sys

import cv2
import numpy as np
from pipeline_double import PipelineDouble
import pytest
from replay_helpers import (
    COMPRESSED, compressed_message, frame_picture, IMAGE, PERIOD_NS, START_NS, TYPESTORE,
    write_bag)
from rosbags.highlevel import AnyReader
from scipy.io import savemat
from sparse_perception import cli
from sparse_perception.media.images import image_to_numpy
from sparse_perception.media.messages import cloud_to_keypoints
from sparse_perception.replay.job import ReplayJob, run_job
from sparse_perception.replay.metrics import binary_iou
from sparse_perception.settings import PerceptionSettings, replace
from sparse_perception.shared_data import bundled_clip
from support import REPO

FRAMES = 8
pytestmark = [pytest.mark.bag, pytest.mark.usefixtures('replay_double')]


def _replay(out, *args):
    return cli.main(['replay', '--quiet', *map(str, args), '--out', str(out)])


def _report(out):
    return json.loads((Path(out) / 'report.json').read_text())


@pytest.fixture
def bag(tmp_path):
    return write_bag(tmp_path / 'input', {
        '/camera/image_raw/compressed': (COMPRESSED, [compressed_message(i)
                                                      for i in range(FRAMES)])})


def _direct(settings, frames=FRAMES):
    """Run the double directly, incremental and dense, on the frames of the test bag."""
    incremental = PipelineDouble(settings)
    dense = PipelineDouble(settings, incremental=False)
    return [(incremental.process(frame_picture(i)), dense.process(frame_picture(i)))
            for i in range(frames)]


def test_report_contract(bag, tmp_path, capsys):
    out = tmp_path / 'out'
    assert _replay(out, bag, '--change.threshold', '40') == 0
    report = _report(out)
    assert report['frames'] == FRAMES and report['skipped_frames'] == 0
    for name in ('dense', 'incremental'):
        assert set(report['latency_ms'][name]) >= {'mean', 'p50', 'p90', 'p99'}
        assert 0 < report['latency_ms'][name]['p50'] <= report['latency_ms'][name]['p99']
    assert report['speedup'] == pytest.approx(
        report['latency_ms']['dense']['p50'] / report['latency_ms']['incremental']['p50'])
    assert report['ground_truth'] is None and report['sweep'] == []
    assert report['settings']['change.threshold'] == 40.0
    assert report['environment']['versions']['rosbags'] and report['environment']['device']
    assert report['input']['kind'] == 'rosbag2' and report['input']['storage'] == 'mcap'
    assert report['pipeline'] == 'pipeline_double:PipelineDouble'  # what built the pipelines
    assert report['command'] == (f'sparse-perception replay --quiet {bag} --change.threshold 40 '
                                 f'--out {out}')  # as run (here by cli.main)
    assert f"Command: `{report['command']}`" in (out / 'report.md').read_text()

    # The figures are those of the same pipelines run here on the same frames.
    settings = replace(PerceptionSettings(), {'change.threshold': 40.0})
    results = _direct(settings)
    fractions = [incremental.stats.active_fraction for incremental, _ in results]
    assert report['active_fraction'] == pytest.approx(np.mean(fractions))
    assert 0 < report['active_fraction'] < 1 and fractions[0] == 1.0
    equal = sum((i.segmentation.mask == d.segmentation.mask).sum() for i, d in results)
    assert report['agreement']['mask_pixel'] == pytest.approx(equal / (FRAMES * 48 * 64))
    assert report['agreement']['mask_pixel'] < 1.0  # threshold 40 makes them differ
    errors = [np.hypot(*(i.pose.keypoints[0, :, :2] - d.pose.keypoints[0, :, :2]).T)
              for i, d in results]
    assert report['agreement']['keypoint_px'] == pytest.approx(np.mean(errors), rel=1e-5)
    macs = sum(i.stats.heads[h].macs for i, _ in results for h in ('segmentation', 'pose'))
    dense_macs = sum(i.stats.heads[h].dense_macs for i, _ in results
                     for h in ('segmentation', 'pose'))
    assert report['activity']['macs_saved'] == pytest.approx(1 - macs / dense_macs)
    assert set(report['activity']['per_layer']['pose']) == {'conv1', 'conv2'}

    # Everything else the run promises, written and readable.
    outputs = report['outputs']
    for key in ('latency_plot', 'activity_plot', 'contact_sheet'):
        picture = cv2.imread(str(out / outputs[key]))
        assert picture is not None and picture.std() > 0, key
    rows = (out / 'frames.csv').read_text().splitlines()
    assert len(rows) == FRAMES + 1 and rows[0].startswith('index,stamp_ns,incremental_ms')
    markdown = (out / 'report.md').read_text()
    assert '| pipeline | mean | p50 | p90 | p99 |' in markdown and '![Latency' in markdown
    assert not list(out.glob('.partial-*'))
    printed = capsys.readouterr().out
    assert f'replayed {FRAMES} frames (0 skipped' in printed and 'speedup' in printed
    assert str(out / 'report.md') in printed


def test_output_bag(bag, tmp_path):
    out = tmp_path / 'out'
    assert _replay(out, bag, '--change.threshold', '40', '--bag-storage', 'sqlite3') == 0
    report = _report(out)
    topics = report['outputs']['bag']['topics']
    assert {t: v['messages'] for t, v in topics.items()} == {
        '/camera/image_raw/compressed': FRAMES, '/sparse_perception/mask': FRAMES,
        '/sparse_perception/keypoints': FRAMES}
    results = _direct(replace(PerceptionSettings(), {'change.threshold': 40.0}))
    with AnyReader([bag], default_typestore=TYPESTORE) as reader:
        inputs = [(t, bytes(raw)) for _, t, raw in reader.messages()]
    seen = {'input': [], 'mask': [], 'keypoints': []}
    with AnyReader([out / 'output_bag'], default_typestore=TYPESTORE) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            '/camera/image_raw/compressed': COMPRESSED,
            '/sparse_perception/mask': IMAGE,
            '/sparse_perception/keypoints': 'sensor_msgs/msg/PointCloud2'}
        for connection, timestamp, raw in reader.messages():
            key = connection.topic.rsplit('/', 1)[-1]
            seen['input' if key == 'compressed' else key].append(
                (timestamp, bytes(raw), reader.deserialize(raw, connection.msgtype)))
    assert [(t, raw) for t, raw, _ in seen['input']] == inputs  # inputs copied byte for byte
    for index, (incremental, _) in enumerate(results):
        stamp = START_NS + index * PERIOD_NS
        timestamp, _, mask = seen['mask'][index]
        assert timestamp == stamp and mask.header.frame_id == 'camera'
        assert mask.header.stamp.sec * 10 ** 9 + mask.header.stamp.nanosec == stamp
        assert mask.encoding == 'mono8'
        np.testing.assert_array_equal(image_to_numpy(mask), incremental.segmentation.mask)
        timestamp, _, cloud = seen['keypoints'][index]
        points = cloud_to_keypoints(cloud)
        assert timestamp == stamp and len(points) == 17
        np.testing.assert_allclose(points['x'], incremental.pose.keypoints[0, :, 0])
        np.testing.assert_allclose(points['score'], incremental.pose.keypoints[0, :, 2])


def _coco_json(path, keypoint_sets):
    images, annotations = [], []
    for index, keypoints in enumerate(keypoint_sets):
        images.append({'id': index + 1, 'file_name': f'{index:05d}.jpg'})
        flat = np.concatenate([keypoints[:, :2], np.full((17, 1), 2)], 1).ravel().tolist()
        annotations.append({'id': index + 1, 'image_id': index + 1, 'keypoints': flat,
                            'bbox': [0, 0, 64, 48]})
    path.write_text(json.dumps({'images': images, 'annotations': annotations,
                                'categories': [{'id': 1, 'name': 'person'}]}))
    return path


def test_ground_truth(bag, tmp_path):
    # Annotations made from the dense pipeline's own answers: dense scores 1 exactly, and the
    # incremental scores are what this test computes itself.
    settings = replace(PerceptionSettings(), {'change.threshold': 40.0})
    results = _direct(settings)
    masks = tmp_path / 'masks'
    masks.mkdir()
    for index, (_, dense) in enumerate(results):
        cv2.imwrite(str(masks / f'{index:05d}.png'),
                    (dense.segmentation.mask == 1).astype(np.uint8) * 255)
    keypoints = _coco_json(tmp_path / 'people.json',
                           [dense.pose.keypoints[0] for _, dense in results])
    out = tmp_path / 'out'
    assert _replay(out, bag, '--change.threshold', '40', '--gt', masks, '--gt', keypoints,
                   '--gt-class', 'person', '--pck-alpha', '0.02') == 0
    truth = _report(out)['ground_truth']
    assert truth['dense']['iou'] == 1.0 and truth['dense']['pck'] == 1.0
    expected_iou = np.mean([binary_iou(i.segmentation.mask == 1, d.segmentation.mask == 1)
                            for i, d in results])
    assert truth['iou'] == pytest.approx(expected_iou)
    threshold = 0.02 * 64
    hits = [np.hypot(*(i.pose.keypoints[0, :, :2] - d.pose.keypoints[0, :, :2]).T) <= threshold
            for i, d in results]
    assert truth['pck'] == pytest.approx(np.mean(hits))
    assert truth['masks']['frames_scored'] == FRAMES and truth['masks']['class_id'] == 1
    assert truth['keypoints']['joints_scored'] == FRAMES * 17
    lines = [r.split(',') for r in (out / 'frames.csv').read_text().splitlines()]
    column = lines[0].index('gt_iou_dense')
    assert {row[column] for row in lines[1:]} == {'1.0'}


def test_masks_for_some_frames_of_a_recording_go_to_those_frames(bag, tmp_path):
    # DAVIS names each mask by its frame's number: masks for frames 0, 2 and 5 of a bag are
    # scored against those frames, not the first three.
    settings = replace(PerceptionSettings(), {'change.threshold': 40.0})
    results = _direct(settings)
    masks = tmp_path / 'masks'
    masks.mkdir()
    for index in (0, 2, 5):
        cv2.imwrite(str(masks / f'{index:05d}.png'),
                    (results[index][1].segmentation.mask == 1).astype(np.uint8) * 255)
    out = tmp_path / 'out'
    assert _replay(out, bag, '--change.threshold', '40', '--gt', masks) == 0
    truth = _report(out)['ground_truth']
    assert truth['masks']['frames_scored'] == 3 and truth['dense']['iou'] == 1.0
    assert truth['masks']['matched_by'] == 'frame number'
    assert truth['iou'] == pytest.approx(np.mean([
        binary_iou(results[i][0].segmentation.mask == 1, results[i][1].segmentation.mask == 1)
        for i in (0, 2, 5)]))
    assert 'frames scored, matched by frame number.' in (out / 'report.md').read_text()


def test_jhmdb_ground_truth(bag, tmp_path):
    results = _direct(PerceptionSettings())
    positions = np.zeros((2, 15, FRAMES))
    # JHMDB order, 1-based; shared joints from the dense answers, the rest anywhere.
    jhmdb_to_coco = {3: 6, 4: 5, 5: 12, 6: 11, 7: 8, 8: 7, 9: 14, 10: 13, 11: 10, 12: 9,
                     13: 16, 14: 15}
    for index, (_, dense) in enumerate(results):
        for joint, coco in jhmdb_to_coco.items():
            positions[:, joint, index] = dense.pose.keypoints[0, coco, :2] + 1
        positions[:, :3, index] = [[5, 60, 30], [5, 40, 2]]
    mat = tmp_path / 'joint_positions.mat'
    savemat(mat, {'pos_img': positions})
    out = tmp_path / 'out'
    assert _replay(out, bag, '--heads', 'pose', '--gt', mat) == 0
    report = _report(out)
    truth = report['ground_truth']
    assert truth['dense']['pck'] == 1.0 and truth['keypoints']['format'] == 'jhmdb'
    assert truth['keypoints']['joints_scored'] == FRAMES * 12
    assert report['agreement']['mask_pixel'] is None and report['heads'] == ['pose']


def test_no_dense(bag, tmp_path, capsys):
    out = tmp_path / 'out'
    assert _replay(out, bag, '--no-dense', '--video') == 0
    report = _report(out)
    assert report['latency_ms']['dense'] is None and report['speedup'] is None
    assert report['agreement'] is None and report['latency_ms']['incremental']['p50'] > 0
    assert 'no dense run' in capsys.readouterr().out
    # A bag has no nominal rate: the annotated video plays at the rate of its stamps.
    capture = cv2.VideoCapture(str(out / 'annotated.mp4'))
    assert capture.get(cv2.CAP_PROP_FPS) == 10.0
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
    capture.release()


def test_sweep(bag, tmp_path):
    out = tmp_path / 'out'
    assert _replay(out, bag, '--change.threshold', '0', '--sweep', '0,3') == 0
    report = _report(out)
    low, high = report['sweep']
    assert (low['scale'], high['scale']) == (0.0, 3.0)
    # At scale 0 and threshold 0 the double is exact, as the real engine must be.
    assert low['agreement']['mask_pixel'] == 1.0 and low['agreement']['keypoint_px'] == 0.0
    assert high['active_fraction'] < low['active_fraction']
    assert high['agreement']['keypoint_px'] > 0
    assert report['outputs']['sweep_plot'] == 'sweep.png'
    assert cv2.imread(str(out / 'sweep.png')) is not None
    assert '## Sweep over sparsity.scale' in (out / 'report.md').read_text()


def test_each_sweep_point_runs_beside_the_dense_reference(bag, tmp_path, monkeypatch):
    # Timed beside the dense pass as the main run is (a pipeline timed alone runs faster),
    # and no dense output is kept from the main run for later: a long recording would hold
    # every frame's mask.
    from sparse_perception.replay import job

    built = []

    class Recorded(PipelineDouble):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(job, 'default_pipeline', lambda: Recorded)
    assert _replay(tmp_path / 'plain', bag) == 0
    alone = {p.incremental: (p.frames, p.resets) for p in built}
    built.clear()
    assert _replay(tmp_path / 'swept', bag, '--sweep', '0,3') == 0
    swept = {p.incremental: (p.frames, p.resets) for p in built}
    assert len(built) == 2 and set(swept) == {True, False}
    for incremental in (True, False):  # each of the two points replays every frame, from a reset
        assert swept[incremental][0] == alone[incremental][0] + 2 * FRAMES
        assert swept[incremental][1] >= alone[incremental][1] + 2
    points = _report(tmp_path / 'swept')['sweep']
    assert all(p['latency_ms']['dense'] is not None and p['speedup'] for p in points)
    # With the path choice on, a network it put on its dense pass would ignore the scale.
    (incremental,) = [p for p in built if p.incremental]
    *passes, restored = incremental.updates
    assert [(u.sparsity.scale, u.sparsity.adaptive) for u in passes] == [(0.0, False),
                                                                         (3.0, False)]
    assert restored.sparsity.adaptive and restored.sparsity.scale == 0.0
    assert 'replays the input again beside the dense reference' in (
        tmp_path / 'swept' / 'report.md').read_text()
    assert _replay(tmp_path / 'alone', bag, '--sweep', '0,3', '--no-dense') == 0
    assert 'replays the input again without a dense reference (--no-dense)' in (
        tmp_path / 'alone' / 'report.md').read_text()


def test_params_file(bag, tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text('segmentation_node:\n  ros__parameters:\n    change:\n      threshold: 0.0\n'
                      '    sparsity:\n      scale: 0.0\n    diagnostics:\n      period: 2.0\n')
    out = tmp_path / 'out'
    assert _replay(out, bag, '--params', params) == 0
    report = _report(out)
    assert report['settings']['change.threshold'] == 0.0
    assert report['agreement']['mask_pixel'] == 1.0  # exact at threshold 0
    assert _replay(out, bag, '--params', params, '--change.threshold', '30') == 0
    assert _report(out)['settings']['change.threshold'] == 30.0  # flags override the file


def test_an_output_never_replaces_the_parameters_file_the_run_reads(bag, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    params = out / 'report.json'  # a name the run writes
    text = 'segmentation_node:\n  ros__parameters:\n    change:\n      threshold: 3.0\n'
    params.write_text(text)
    assert _replay(out, bag, '--params', params) == 1
    assert 'writes its report.json over' in capsys.readouterr().err
    assert params.read_text() == text
    kept = out / 'my_params.yaml'  # any other name in --out is left alone
    kept.write_text(text)
    assert _replay(out, bag, '--params', kept) == 0
    assert kept.read_text() == text and _report(out)['settings']['change.threshold'] == 3.0


def test_node_settings_of_a_params_file_that_do_not_hold_together_are_refused(bag, tmp_path,
                                                                              capsys):
    # As the node would refuse the file, so does the replay that reads it as the node would.
    params = tmp_path / 'params.yaml'
    params.write_text('segmentation_node:\n  ros__parameters:\n    diagnostics:\n'
                      '      latency_warn_ms: 5000.0\n')
    assert _replay(tmp_path / 'out', bag, '--params', params) == 1
    assert (f'{params}: diagnostics.latency_warn_ms = 5000.0 is above '
            'diagnostics.latency_error_ms = 1000.0') in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_a_params_file_short_of_a_setting_names_itself_and_the_flags(bag, tmp_path, capsys):
    params = tmp_path / 'params.yaml'
    params.write_text('segmentation_node:\n  ros__parameters:\n    sparsity:\n'
                      '      gate: learned\n')
    assert _replay(tmp_path / 'out', bag, '--params', params) != 0
    err = capsys.readouterr().err
    assert "'learned' needs sparsity.gate_model" in err and f'--params {params}' in err


def test_a_params_file_is_read_as_the_node_reads_it(bag, tmp_path, capsys):
    # Its node.heads chooses the heads unless --heads does; a value the node would refuse
    # is refused here too.
    params = tmp_path / 'params.yaml'
    params.write_text('perception_node:\n  ros__parameters:\n    node:\n      heads: [pose]\n')
    out = tmp_path / 'out'
    assert _replay(out, bag, '--params', params) == 0
    assert _report(out)['heads'] == ['pose']
    assert _replay(out, bag, '--params', params, '--heads', 'both') == 0
    assert _report(out)['heads'] == ['segmentation', 'pose']
    # A node of one head runs that head, whatever the file's node.heads says.
    params.write_text('/**:\n  ros__parameters:\n    node:\n      heads: [segmentation, pose]\n')
    assert _replay(out, bag, '--params', params, '--params-node', 'pose_node') == 0
    assert _report(out)['heads'] == ['pose']
    assert _replay(out, bag, '--params', params, '--params-node', 'perception_node') == 0
    assert _report(out)['heads'] == ['segmentation', 'pose']
    params.write_text('perception_node:\n  ros__parameters:\n    input:\n      depth: lots\n')
    assert _replay(out, bag, '--params', params) == 1
    assert "input.depth must be an integer, got 'lots'" in capsys.readouterr().err


def test_a_path_argument_has_its_tilde_expanded_and_is_never_empty(bag, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert _replay('~/out', bag) == 0  # one word: the shell would not expand it
    assert (tmp_path / 'out' / 'report.json').is_file() and not (tmp_path / '~').exists()
    with pytest.raises(SystemExit):
        _replay('', bag)
    assert 'argument --out: is empty (an unset shell variable?)' in capsys.readouterr().err


def test_corrupt_frames_are_reported(tmp_path):
    messages = [compressed_message(i, fmt='jpeg') for i in range(5)]
    messages[2].data = messages[2].data[:100]
    bag = write_bag(tmp_path / 'input', {'/c': (COMPRESSED, messages)})
    out = tmp_path / 'out'
    assert _replay(out, bag) == 0
    report = _report(out)
    assert report['frames'] == 4 and report['skipped_frames'] == 1
    skipped, = report['skipped']
    assert skipped['index'] == 2 and 'truncated' in skipped['reason']
    assert skipped['stamp_ns'] == START_NS + 2 * PERIOD_NS
    assert '## Skipped frames' in (out / 'report.md').read_text()
    assert report['outputs']['bag']['topics']['/sparse_perception/mask']['messages'] == 4


@pytest.mark.parametrize('args, message', [
    (['{missing}'], 'no such file or folder'),
    (['{bag}', '--topic', '/nope'], "topic '/nope' is not in .*image topics: "
                                    '/camera/image_raw/compressed'),
    (['{bag}', '--model.segmentation', 'missing'],
     "cannot create the incremental pipeline: model.segmentation = 'missing': no registered "
     'model of that name'),
    (['{bag}', '--change.threshold', '300'], r'change.threshold = 300.0 is out of range'),
    (['{bag}', '--gt', '{masks}', '--gt-class', 'dog'], "class 'dog' is not one of"),
    (['{bag}', '--gt', '{masks}', '--heads', 'pose'], 'mask ground truth needs the '
                                                      'segmentation head'),
    (['{bag}', '--frames', '100:'], r'no frame could be replayed \(it holds 8 frames; frame '
                                    r'range 100:\)'),
    (['{bag}', '--sweep', '0,x'], "--sweep '0,x' is not a comma-separated list"),
    (['{bag}', '--sweep', ''], "--sweep '': expected sparsity scales from 0 to 100"),
    (['{bag}', '--params', '{missing}'], 'no such file'),
    (['{bag}', '--params', '{masks}'], 'masks: a folder, not a parameters file'),
    (['{bag}', '--params-node', 'pose_node'], '--params-node pose_node needs --params'),
])
def test_bad_input_is_one_line(bag, tmp_path, capsys, args, message):
    masks = tmp_path / 'masks'
    masks.mkdir()
    cv2.imwrite(str(masks / '00000.png'), np.zeros((48, 64), np.uint8))
    names = {'bag': bag, 'missing': tmp_path / 'missing.bag', 'masks': masks}
    out = tmp_path / 'out'
    assert _replay(out, *[a.format(**names) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('sparse-perception replay: error: ')
    assert re.search(message, err), err
    assert not (out / 'report.json').exists() and not list(tmp_path.rglob('.partial-*'))


@pytest.mark.parametrize('argv, said', [
    (['replay', '--out', 'o', '--frames', '5:2'],
     "argument --frames: frame range '5:2' selects no frames"),
    (['replay', '--out', 'o', '--rate', '0'], 'argument --rate: 0 Hz is out of range'),
    (['make-bag', 'in', 'out', '--rate', 'fast'],
     "argument --rate: expected a number of Hz, got 'fast'"),
    (['make-bag', 'in', 'out', '--frames=-1:'], "argument --frames: frame range '-1:'"),
    (['eval', 'accuracy', '--json', 'x.json', '--davis-frames', '0:4', '--jhmdb-frames', '0:0'],
     "argument --jhmdb-frames: frame range '0:0' selects no frames"),
    (['eval', 'sweep', '--json', 'x.json', '--davis-frames', 'a:b'],
     "argument --davis-frames: frame range 'a:b' is not START:STOP"),
])
def test_a_bad_flag_value_is_a_usage_error_naming_the_flag(argv, said, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert said in capsys.readouterr().err


def test_a_ctrl_c_while_the_command_line_is_read_is_no_traceback(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, 'build_parser', interrupted)
    assert cli.main(['replay', '--out', 'o']) == 130
    assert capsys.readouterr().err == '\nsparse-perception: interrupted\n'


def test_a_bag_namespace_that_makes_no_ros_topic_is_refused_before_running(bag, tmp_path,
                                                                           capsys):
    with pytest.raises(SystemExit) as stopped:
        _replay(tmp_path / 'out', bag, '--bag-namespace', 'bad name!')
    assert stopped.value.code == 2
    assert ("argument --bag-namespace: a namespace 'bad name!' is not a valid ROS topic name"
            in capsys.readouterr().err)
    assert not (tmp_path / 'out').exists()
    assert _replay(tmp_path / 'out', bag, '--bag-namespace', '/front/') == 0
    with AnyReader([tmp_path / 'out' / 'output_bag']) as reader:
        assert {'/front/mask', '/front/keypoints'} <= {c.topic for c in reader.connections}


class _FailingPipeline(PipelineDouble):
    """Breaks on its fourth frame, as a crashing model would."""

    def process(self, image):
        self.count = getattr(self, 'count', 0) + 1
        if self.count == 4:
            raise RuntimeError('CUDA error: an illegal memory access was encountered')
        return super().process(image)


def test_failure_midway_leaves_no_report(bag, tmp_path):
    out = tmp_path / 'out'
    assert _replay(out, bag) == 0
    previous = (out / 'report.json').read_text()
    job = ReplayJob(source=bag, out=out, settings=PerceptionSettings(),
                    pipeline=_FailingPipeline)
    with pytest.raises(RuntimeError, match='illegal memory access'):
        run_job(job)
    assert (out / 'report.json').read_text() == previous  # the earlier run's, untouched
    assert not list(out.glob('.partial-*'))


def test_bundled_clip_is_the_default_input(tmp_path):
    out = tmp_path / 'out'
    assert cli.main(['replay', '--frames', '0:3', '--out', str(out), '--quiet']) == 0
    report = _report(out)
    assert Path(report['input']['path']) == bundled_clip()
    assert report['frames'] == 3
    with AnyReader([bundled_clip()], default_typestore=TYPESTORE) as reader:
        source = [bytes(raw) for _, _, raw in reader.messages()][:3]
    with AnyReader([out / 'output_bag'], default_typestore=TYPESTORE) as reader:
        copied = [bytes(raw) for c, _, raw in reader.messages()
                  if c.topic == '/camera/image_raw/compressed']
    assert copied == source


def test_video_input_and_annotated_video(tmp_path):
    video = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 8.0, (64, 48))
    for index in range(6):
        writer.write(np.ascontiguousarray(frame_picture(index)[..., ::-1]))
    writer.release()
    out = tmp_path / 'out'
    assert _replay(out, video, '--video') == 0
    report = _report(out)
    assert report['input']['kind'] == 'video' and report['input']['rate_hz'] == 8.0
    capture = cv2.VideoCapture(str(out / 'annotated.mp4'))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 6 and capture.get(cv2.CAP_PROP_FPS) == 8.0
    capture.release()
    with AnyReader([out / 'output_bag'], default_typestore=TYPESTORE) as reader:
        stamps = [(c.topic, t) for c, t, _ in reader.messages()
                  if c.topic == '/camera/image_raw/compressed']
    assert [t for _, t in stamps] == [round(i * 1e9 / 8) for i in range(6)]


def test_annotations_matched_by_position_to_another_count_are_warned_of(bag, tmp_path, capsys):
    # A recording keeps no file names: its frame i takes the mask numbered i (or, where the
    # masks are not numbered, the i-th). Masks of a whole sequence against a bag of some of
    # its frames score the wrong pairs; the numbers (or the counts) tell.
    masks = tmp_path / 'masks'
    masks.mkdir()
    for index in range(FRAMES + 3):
        cv2.imwrite(str(masks / f'{index:05d}.png'), np.zeros((48, 64), np.uint8))
    assert _replay(tmp_path / 'out', bag, '--gt', masks) == 0
    said = capsys.readouterr()
    assert (f'holds {FRAMES + 3} annotated frames, numbered up to {FRAMES + 2}, but the input '
            f'{FRAMES}; they are matched by frame number') in said.err, said
    for extra in sorted(masks.iterdir())[FRAMES:]:
        extra.unlink()
    assert _replay(tmp_path / 'out', bag, '--gt', masks) == 0
    said = capsys.readouterr()
    assert 'annotated frames' not in said.out + said.err
    for index, path in enumerate(sorted(masks.iterdir())):  # names without numbers
        path.rename(masks / f'frame_{index:05d}.png')
    cv2.imwrite(str(masks / 'frame_extra.png'), np.zeros((48, 64), np.uint8))
    assert _replay(tmp_path / 'out', bag, '--gt', masks) == 0
    said = capsys.readouterr()
    assert (f'holds {FRAMES + 1} annotated frames but the input {FRAMES}; they are matched by '
            'position') in said.err, said


def test_image_folder_input(tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for index in range(4):
        cv2.imwrite(str(folder / f'{index:05d}.png'), frame_picture(index)[..., ::-1])
    out = tmp_path / 'out'
    assert _replay(out, folder, '--rate', '2', '--no-bag', '--contact-sheet', '0') == 0
    report = _report(out)
    assert report['input']['kind'] == 'folder' and report['frames'] == 4
    assert 'bag' not in report['outputs'] and 'contact_sheet' not in report['outputs']
    assert not (out / 'output_bag').exists()
    # Masks are matched to folder frames by name: other names match nothing, and it is said.
    masks = tmp_path / 'masks'
    masks.mkdir()
    cv2.imwrite(str(masks / 'mask_0.png'), np.zeros((48, 64), np.uint8))
    notes = []
    report = run_job(ReplayJob(source=folder, out=out, settings=PerceptionSettings(), rate=2.0,
                               bag=False, ground_truth=[masks], pipeline=PipelineDouble,
                               log=notes.append))
    assert report['ground_truth']['masks']['frames_scored'] == 0
    assert report['ground_truth']['iou'] is None
    assert any('matched no frame' in note for note in notes)


def test_console_script_exit_status(tmp_path):
    # The installed command, in its own process: a bad input is one line and status 1.
    script = Path(sys.executable).with_name('sparse-perception')
    command = [str(script)] if script.exists() else [sys.executable, '-m', 'sparse_perception.cli']
    run = subprocess.run(command + ['replay', str(tmp_path / 'nothing.mcap'), '--out',
                                    str(tmp_path / 'out')], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO / 'test')))
    assert run.returncode == 1 and run.stdout == ''
    assert run.stderr.strip().splitlines() == [
        f'sparse-perception replay: error: {tmp_path / "nothing.mcap"}: no such file or folder; '
        'expected a rosbag2 folder (mcap or sqlite3), a ROS 1 .bag file, a video file (.avi, '
        '.mp4, .mkv, .mov, .webm, .mpg, .mpeg, .m4v, .wmv) or a folder of images (.png, .jpg, '
        '.jpeg, .bmp, .tif, .tiff, .webp, .ppm, .pgm)']


def test_console_script_whose_reader_stops_early(tmp_path):
    # `sparse-perception models list | head -1`: the reader is gone before the table is out.
    script = Path(sys.executable).with_name('sparse-perception')
    command = [str(script)] if script.exists() else [sys.executable, '-m', 'sparse_perception.cli']
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, 'wb') as stdout:
        run = subprocess.run(command + ['models', 'list', '--models-dir', str(tmp_path)],
                             stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert run.returncode == 141 and run.stderr == ''
