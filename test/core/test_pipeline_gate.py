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

"""Spatial gates in the pipeline, on the Coral DeepLab and a moving camera (DAVIS parkour)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from sparse_perception import settings as st
from sparse_perception.gates.maker import (bound, grow, person_map, refresh_cell, resize_outputs,
                                           to_tiles)
from sparse_perception.pipeline import ModelLoadError, Pipeline
from support import require_shared

SEGMENTATION = 'deeplabv3_mnv2_pascal_fcn'
PERSON = 15


@pytest.fixture(scope='module')
def parkour():
    """Four frames of DAVIS parkour: a moving camera following one person."""
    folder = require_shared('data/davis/DAVIS/JPEGImages/480p/parkour')
    # At their own size: a network at stride 16 sees a person shrunk to half size through a
    # handful of positions, and a gate's margin of 2 tiles is then too thin to hold them.
    return [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            for path in sorted(folder.glob('*.jpg'))[10:18:2]]


def _settings(**changes):
    base = {'model.segmentation': SEGMENTATION, 'model.device': 'cpu', 'model.pose': '',
            'model.models_dir': str(require_shared('models/coral')), 'sparsity.adaptive': False,
            'change.threshold': 0.0, 'change.min_pixels': 1}
    base.update(changes)
    return st.replace(st.PerceptionSettings(), base)


def _run(settings, frames):
    incremental = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    rows = []
    for frame in frames:
        got, want = incremental.process(frame), dense.process(frame)
        head = got.stats.heads['segmentation']
        rows.append((got.segmentation.mask, want.segmentation.mask, head.macs, head.dense_macs))
    return incremental, rows


@pytest.mark.slow
@pytest.mark.parametrize('gate', ['previous', 'glance'])
def test_a_gate_computes_around_the_person_and_keeps_the_person(parkour, gate):
    incremental, rows = _run(_settings(**{'sparsity.gate': gate}), parkour)
    macs = sum(r[2] for r in rows[1:]) / sum(r[3] for r in rows[1:])
    assert macs < 0.6  # ungated, a moving camera recomputes everything (ratio 1)
    # The class arg-max is the engine's last layer: it too runs inside the gate only.
    argmax = incremental._heads['segmentation'].net.engine.last_stats.layers[-1]
    assert argmax.kind == 'positionwise' and 0 < argmax.computed < argmax.positions / 2
    for i, (got, want, _, _) in enumerate(rows):
        person_got, person_want = got == PERSON, want == PERSON
        assert person_want.sum() > 500, 'the test needs a visible person'
        iou = (person_got & person_want).sum() / (person_got | person_want).sum()
        assert iou > 0.9, f'frame {i}: person IoU against dense {iou:.3f}'


@pytest.mark.slow
def test_between_glances_the_gate_follows_the_last_frames_person(parkour):
    settings = _settings(**{'sparsity.gate': 'glance', 'sparsity.glance_period': 2})
    incremental = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    glanced = []
    for i, frame in enumerate(parkour):
        got, want = incremental.process(frame), dense.process(frame)
        head = got.stats.heads['segmentation']
        glanced.append('glance' in head.layers)
        assert i == 0 or head.macs < 0.6 * head.dense_macs
        person_got, person_want = got.segmentation.mask == PERSON, want.segmentation.mask == PERSON
        iou = (person_got & person_want).sum() / (person_got | person_want).sum()
        assert iou > 0.9, f'frame {i}: person IoU against dense {iou:.3f}'
    # Counted where it ran: the first frame (nobody followed yet), the second (no motion
    # measured yet), then every other one.
    assert glanced == [True, True, False, True]


@pytest.mark.slow
def test_gate_none_is_the_ungated_engine_bit_for_bit(parkour):
    _, rows = _run(_settings(), parkour[:3])
    for got, want, macs, dense_macs in rows:
        np.testing.assert_array_equal(got, want)  # thresholds 0: exact


@pytest.fixture(scope='module')
def gate_file(tmp_path_factory):
    """Write a learned gate whose network sees nobody: the gate is the last frame's people."""
    import torch

    from sparse_perception.gates.learned import CELLS, network, save, VERSION

    torch.manual_seed(0)
    state = network().state_dict()
    state['tiles.4.bias'].fill_(-50.0)  # the last layer's: probability 0 everywhere
    path = tmp_path_factory.mktemp('gate') / 'gate.pt'
    return str(save(state, {'version': VERSION, 'tile': 16, 'cells': CELLS,
                            'model': SEGMENTATION}, path))


@pytest.mark.slow
@pytest.mark.parametrize('gate', ['previous', 'learned'])
def test_switching_the_gate_off_recomputes_what_it_left_stale(parkour, gate, gate_file):
    settings = _settings(**{'sparsity.gate': gate, 'sparsity.gate_model': gate_file,
                            'sparsity.gate_refresh': 0})
    pipeline = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    for frame in parkour[:3]:
        stats = pipeline.process(frame).stats.heads['segmentation']
    assert stats.macs < stats.dense_macs  # the gate left something out
    pipeline.update(st.replace(settings, {'sparsity.gate': 'none'}))
    got = pipeline.process(parkour[2])  # the same frame, now ungated
    np.testing.assert_array_equal(got.segmentation.mask,
                                  dense.process(parkour[2]).segmentation.mask)


def test_a_bad_gate_file_set_on_a_running_pipeline_is_blamed_on_the_setting(tmp_path):
    settings = _settings(**{'sparsity.gate': 'previous'})
    pipeline = Pipeline(settings, heads=('segmentation',))
    with pytest.raises(ModelLoadError) as caught:
        pipeline.update(st.replace(settings, {'sparsity.gate': 'learned',
                                              'sparsity.gate_model': str(tmp_path / 'none.pt')}))
    assert str(caught.value).startswith('sparsity.gate_model: gate file ')


def test_a_pipeline_says_when_its_bound_is_not_the_learned_gates(gate_file, caplog):
    from sparse_perception.gates.learned import load, save

    state, meta = load(gate_file, 16)
    path = str(Path(gate_file).with_name('bound.pt'))
    save(state.state_dict(), dict(meta, fcn_max_megapixels=2.1), path)
    settings = _settings(**{'sparsity.gate': 'learned', 'sparsity.gate_model': path})
    with caplog.at_level('WARNING'):
        pipeline = Pipeline(settings, heads=('segmentation',))
        assert not [r for r in caplog.records if 'another scale' in r.getMessage()]
        pipeline.update(st.replace(settings, {'model.fcn_max_megapixels': 1.5}))
    said = [r.getMessage() for r in caplog.records if 'another scale' in r.getMessage()]
    assert len(said) == 1 and 'model.fcn_max_megapixels 2.1 and this pipeline has 1.5' in said[0]


@pytest.fixture(scope='module')
def jhmdb():
    """Four frames of the JHMDB clip: a goalkeeper filmed by a panning camera."""
    folder = require_shared(
        'data/jhmdb/ReadJHMDBAnnotations/data/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2')
    return [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            for path in sorted(folder.glob('*.png'))[:8:2]]


def _pose_settings(**changes):
    return _settings(**{'model.segmentation': '', 'model.pose': 'movenet_lightning',
                        'model.runtime': 'torch', **changes})


@pytest.mark.slow
def test_switching_the_pose_gate_off_recomputes_what_it_left_stale(jhmdb):
    settings = _pose_settings(**{'pose.gate': 'track', 'sparsity.gate_refresh': 0})
    pipeline = Pipeline(settings, heads=('pose',))
    ungated = Pipeline(st.replace(settings, {'pose.gate': 'none'}), heads=('pose',))
    dense = Pipeline(settings, heads=('pose',), incremental=False)
    for frame in jhmdb[:3]:
        got, want = pipeline.process(frame), dense.process(frame)
        ungated.process(frame)
    stats = got.stats.heads['pose']
    assert stats.macs < 0.8 * stats.dense_macs  # the gate left something out
    moved = np.abs(got.pose.keypoints - want.pose.keypoints)[..., :2].max()
    assert moved > 0.5, 'the test needs a gate that changed the keypoints'
    pipeline.update(st.replace(settings, {'pose.gate': 'none'}))
    got = pipeline.process(jhmdb[2])  # the same frame, now ungated
    # What the engine ungated all along gives (its fp32 sums differ from a dense pass by
    # about 1e-4 px), and dense's keypoints.
    np.testing.assert_array_equal(got.pose.keypoints, ungated.process(jhmdb[2]).pose.keypoints)
    np.testing.assert_allclose(got.pose.keypoints, want.pose.keypoints, atol=1e-3)


def test_the_pose_gate_needs_a_single_person_network(mediapipe_cache):
    blazepose = {'model.segmentation': '', 'model.pose': 'blazepose',
                 'model.models_dir': str(mediapipe_cache)}
    with pytest.raises(ModelLoadError, match="pose.gate 'track'.*single-person"):
        Pipeline(_settings(**blazepose, **{'pose.gate': 'track'}), heads=('pose',))
    pipeline = Pipeline(_settings(**blazepose), heads=('pose',))
    with pytest.raises(ModelLoadError, match="pose.gate 'track'"):
        pipeline.update(_settings(**blazepose, **{'pose.gate': 'track'}))


@pytest.mark.slow
def test_the_glance_answers_a_frame_without_people_alone(parkour):
    settings = _settings(**{'sparsity.gate': 'glance'})
    pipeline = Pipeline(settings, heads=('segmentation',))
    grey = np.full((480, 854, 3), 118, np.uint8)
    first = pipeline.process(grey)  # a stream's first frame runs in full
    assert first.stats.heads['segmentation'].dense
    noise = np.random.default_rng(0).integers(110, 126, grey.shape, dtype=np.uint8)
    second = pipeline.process(noise).stats.heads['segmentation']
    # Only the glance ran: a sixteenth of the network's work at scale 1/4.
    assert 0 < second.macs < 0.1 * second.dense_macs
    assert not (pipeline.process(noise).segmentation.mask == PERSON).any()
    # The engine missed those frames: it reads its whole input again when it next runs.
    result = pipeline.process(parkour[0])
    dense = Pipeline(settings, heads=('segmentation',), incremental=False).process(parkour[0])
    person_got = result.segmentation.mask == PERSON
    person_want = dense.segmentation.mask == PERSON
    assert (person_got & person_want).sum() / (person_got | person_want).sum() > 0.9


@pytest.mark.slow
def test_the_glance_answers_alone_at_most_gate_refresh_minus_one_frames_in_a_row(parkour):
    # A runner shrunk to 0.35 on a grey frame: the dense network sees them, the glance at
    # 1/4 does not. Every 4th frame in a row without anybody runs the full pass, which finds
    # them, ungated (the caches are older everywhere), so at thresholds 0 exactly. The last
    # frame repeats the one before: a still input counts as a frame the glance answered.
    settings = _settings(**{'sparsity.gate': 'glance', 'sparsity.gate_refresh': 4})
    grey = np.full((480, 854, 3), 110, np.uint8)
    small = []
    for frame in parkour[:3]:
        small.append(grey.copy())
        small[-1][-168:, :299] = cv2.resize(frame, (299, 168), interpolation=cv2.INTER_AREA)
    incremental = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    frames = [grey, *small, small[-1]]
    got = [incremental.process(frame) for frame in frames]
    want = dense.process(small[-1]).segmentation.mask
    assert (want == PERSON).sum() > 500, 'the test needs a runner the full pass sees'
    macs = [r.stats.heads['segmentation'].macs / r.stats.heads['segmentation'].dense_macs
            for r in got]
    assert macs[0] > 0.99 and all(m < 0.1 for m in macs[1:4]), macs  # glance only: 1..3
    assert not (got[3].segmentation.mask == PERSON).any()  # the glance missed the runner
    assert macs[4] > 0.2  # the engine ran (where its input changed since it last ran)
    np.testing.assert_array_equal(got[4].segmentation.mask, want)


def test_the_glance_needs_a_fully_convolutional_model(parkour):
    path = require_shared('models/coral')
    fixed = {'model.segmentation': 'deeplabv3_mnv2_pascal', 'model.models_dir': str(path)}
    with pytest.raises(ModelLoadError, match='fully convolutional'):
        Pipeline(_settings(**fixed, **{'sparsity.gate': 'glance'}), heads=('segmentation',))
    pipeline = Pipeline(_settings(**fixed, **{'sparsity.gate': 'previous'}),
                        heads=('segmentation',))
    with pytest.raises(ModelLoadError, match='fully convolutional'):
        pipeline.update(_settings(**fixed, **{'sparsity.gate': 'glance'}))
    assert pipeline.settings.sparsity.gate == 'previous'
    pipeline.process(parkour[0])  # the old head still runs


def test_gate_maps_from_each_kind_of_output():
    import torch

    ids = torch.zeros(1, 8, 12, dtype=torch.int64)
    ids[0, 2:4, 5:7] = PERSON
    assert person_map(ids, 'class_map', PERSON).sum() == 4
    prob = torch.zeros(1, 8, 12, 1)
    prob[0, 0, 0, 0] = 0.7
    assert person_map(prob, 'probability', 1).nonzero().tolist() == [[0, 0]]
    scores = torch.zeros(1, 8, 12, 3)
    scores[0, 7, 11, 2] = 5.0
    assert person_map(scores, 'class_scores', 2).nonzero().tolist() == [[7, 11]]
    # An 8x12 map over a 32x48 input in tiles of 16: the person lies in tile (0, 1).
    tiles = to_tiles(person_map(ids, 'class_map', PERSON), 32, 48, 16)
    assert tiles.nonzero().tolist() == [[0, 1]]
    assert grow(tiles, 1).sum() == 6  # 2 rows x 3 columns inside the 2x3 map
    assert resize_outputs(ids, 'class_map', 16, 24).shape == (1, 16, 24)
    assert resize_outputs(prob, 'probability', 16, 24).shape == (1, 16, 24, 1)
    with pytest.raises(ValueError, match='no person map'):
        person_map(ids, 'single_pose', 0)


@pytest.mark.parametrize('map_hw, input_hw, tile', [
    ((120, 214), (480, 854), 16),  # a glance at 1/4 of a DAVIS frame
    ((480, 854), (480, 854), 16),  # a full-size output
    ((30, 54), (480, 854), 16),  # coarser than the tiles
    ((100, 300), (37, 41), 8),  # larger than the input: rows and columns skipped
    ((17, 23), (100, 61), 7),  # neither a multiple of the other
    ((3, 5), (3, 5), 1),
])
def test_tiles_are_the_map_scaled_to_the_input_by_nearest_then_pooled(map_hw, input_hw, tile):
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(3)
    for share in (0.001, 0.05, 0.5):
        mask = torch.rand(map_hw, generator=generator) < share
        scaled = F.interpolate(mask[None, None].float(), size=input_hw, mode='nearest')
        th, tw = -(-input_hw[0] // tile), -(-input_hw[1] // tile)
        padded = F.pad(scaled, (0, tw * tile - input_hw[1], 0, th * tile - input_hw[0]))
        expected = F.max_pool2d(padded, tile)[0, 0] > 0
        assert torch.equal(to_tiles(mask, *input_hw, tile), expected)


@pytest.mark.parametrize('rows, columns', [(30, 54), (4, 4), (1, 1), (3, 100), (100, 3), (7, 9)])
@pytest.mark.parametrize('period', [1, 2, 3, 7, 16, 17, 64, 1000])
def test_the_refresh_cells_of_a_period_cover_every_tile_once(rows, columns, period):
    import torch

    covered = torch.zeros(rows, columns, dtype=torch.int64)
    for frame in range(period, 2 * period):  # any period's frames, in any order
        top, bottom, left, right = refresh_cell(rows, columns, period, frame)
        covered[top:bottom, left:right] += 1
    assert torch.equal(covered, torch.ones_like(covered))  # never staler than the period


def test_the_refresh_cells_are_about_square():
    # DAVIS's 854x480 in tiles of 16 at the default period: 3 rows of cells, 10 tiles tall
    # and 9 to 11 wide, where a band of rows across the frame would be 1 or 2 tiles tall.
    shapes = {(bottom - top, right - left) for top, bottom, left, right in
              (refresh_cell(30, 54, 16, frame) for frame in range(16))}
    assert shapes == {(10, 9), (10, 10), (10, 11)}


def test_a_gate_holds_its_frames_refresh_cell_unless_it_is_dropped():
    import torch

    people = torch.zeros(30, 54, dtype=torch.bool)
    people[12, 20] = True
    gate = bound(people.clone(), 1, 0.5, 16, 17)  # frame 17: the second cell
    cell = torch.zeros_like(people)
    cell[0:10, 9:18] = True
    assert torch.equal(gate, grow(people, 1) | cell)
    assert torch.equal(bound(people.clone(), 1, 0.5, 0, 17), grow(people, 1))  # no cell
    crowd = torch.ones_like(people)
    assert bound(crowd, 1, 0.5, 16, 17) is None  # a crowd: ungated, no cell needed


@pytest.mark.slow
def test_a_dropped_gate_is_the_ungated_engine_bit_for_bit(parkour):
    # At 0 every gate that holds somebody is dropped: the frames run ungated, without a glance.
    settings = _settings(**{'sparsity.gate': 'glance', 'sparsity.gate_dense_above': 0.0})
    _, rows = _run(settings, parkour[:3])
    _, ungated = _run(_settings(), parkour[:3])
    for got, want, _, _ in rows:
        np.testing.assert_array_equal(got, want)  # thresholds 0: exact
    # A stream's first frame glances (nobody seen before); after it, no glance is counted.
    assert [r[2] for r in rows[1:]] == [r[2] for r in ungated[1:]]


def _maker(**changes):
    """Return a glance GateMaker over a 64x64 input in tiles of 16 whose glance sees nobody."""
    import torch

    from sparse_perception.gates.maker import GateMaker

    calls = []

    def glance_pass(small):
        calls.append(tuple(small.shape[-2:]))
        return torch.zeros(1, *small.shape[-2:], dtype=torch.int64)  # sees nobody

    values = {'sparsity.gate': 'glance', 'sparsity.gate_margin': 0,
              'sparsity.gate_refresh': 0, 'sparsity.glance_period': 1, **changes}
    sparsity = st.replace(st.PerceptionSettings(), values).sparsity
    return GateMaker(sparsity, 16, 'class_map', PERSON, glance_pass), calls


def _people(rows):
    """Return the class ids of a 64x64 frame whose person fills the given tile rows."""
    import torch

    ids = torch.zeros(1, 64, 64, dtype=torch.int64)
    ids[0, rows[0] * 16:rows[1] * 16] = PERSON
    return ids


def test_the_previous_gate_runs_a_frame_after_one_without_people_ungated():
    maker, _ = _maker(**{'sparsity.gate': 'previous', 'sparsity.gate_refresh': 16})
    assert maker.gate(64, 64) is None  # nothing seen yet (a stream's first frame: dense)
    maker.observe(_people((1, 2)), 64, 64)
    assert maker.gate(64, 64).float().mean() > 0.25  # a row of tiles and the refresh cell
    maker.observe(_people((0, 0)), 64, 64)  # nobody: not even the refresh cell gates
    assert maker.gate(64, 64) is None
    maker.observe(_people((3, 4)), 64, 64)  # somebody again
    assert maker.gate(64, 64)[3].all()


@pytest.mark.slow
def test_the_previous_gate_finds_who_enters_a_scene_without_people(parkour):
    # Two grey frames (nobody), then the parkour runner: with nobody to follow that frame
    # runs ungated, and at thresholds 0 it is the dense mask exactly. Gated to the refresh
    # cell alone it would miss the runner.
    grey = np.full_like(parkour[0], 110)
    _, rows = _run(_settings(**{'sparsity.gate': 'previous'}), [grey, grey, parkour[0]])
    got, want, _, _ = rows[-1]
    assert (want == PERSON).sum() > 500, 'the test needs a visible person'
    np.testing.assert_array_equal(got, want)


def test_the_glance_answers_alone_for_at_most_gate_refresh_minus_one_frames():
    import torch

    x = torch.zeros(1, 3, 64, 64)
    maker, _ = _maker(**{'sparsity.gate_refresh': 4})
    answers = []
    for _ in range(9):
        early = maker.glance(x)
        answers.append(early is not None)
        maker.observe(early if early is not None else _people((0, 0)), 64, 64)
    # The first frame, then every 4th in a row: the full pass.
    assert answers == [False, True, True, True, False, True, True, True, False]
    maker, _ = _maker()  # gate_refresh 0: no bound
    maker.observe(_people((0, 0)), 64, 64)
    assert all(maker.glance(x) is not None for _ in range(40))


def test_a_gate_whose_look_and_last_frame_show_nobody_runs_the_frame_ungated():
    import torch

    x = torch.zeros(1, 3, 64, 64)
    maker, calls = _maker(**{'sparsity.glance_exit': False, 'sparsity.gate_refresh': 16})
    assert maker.glance(x) is None and maker.gate(64, 64) is None  # nothing seen yet
    maker.observe(_people((0, 0)), 64, 64)
    # Not the refresh cell alone: the glance sees nobody, whom the cell may miss too.
    assert maker.glance(x) is None and len(calls) == 2
    assert maker.gate(64, 64) is None
    maker.observe(_people((1, 2)), 64, 64)
    maker.glance(x)
    assert maker.gate(64, 64)[1].all()


def test_the_glance_is_not_run_when_the_full_pass_is_due():
    import torch

    x = torch.zeros(1, 3, 64, 64)
    maker, calls = _maker(**{'sparsity.gate_refresh': 3})
    maker.observe(_people((0, 0)), 64, 64)
    assert maker.glance(x) is not None and maker.glance(x) is not None  # two answers
    assert len(calls) == 2
    assert maker.glance(x) is None and len(calls) == 2  # due: the frame runs ungated
    assert maker.glance(x) is not None and len(calls) == 3


def test_while_people_are_followed_the_glance_runs_every_glance_period_frames():
    import torch

    x = torch.zeros(1, 3, 64, 64)
    maker, calls = _maker(**{'sparsity.glance_period': 3, 'sparsity.gate_refresh': 16})
    looked = []
    for frame in range(7):
        maker.glance(x)
        looked.append(maker.seen is not None)
        # Between glances the gate is the last frame's people (and the refresh cell).
        assert frame == 0 or maker.gate(64, 64)[1:3].all()
        maker.observe(_people((1, 3)), 64, 64)
    # The first frame (nobody followed yet), the second (no motion measured yet), then every
    # third.
    assert looked == [True, True, False, False, True, False, False]
    assert len(calls) == 3
    # Nobody followed: the glance looks at every frame (it is what finds people).
    maker.observe(_people((0, 0)), 64, 64)
    for _ in range(3):
        maker.glance(x)
    assert len(calls) == 6
    # Nor does a frame of another size follow the last frame's people unglanced.
    maker.observe(_people((1, 3)), 64, 64)
    maker.glance(x)  # (after nobody: a move)
    maker.observe(_people((1, 3)), 64, 64)
    assert not maker.moved and len(calls) == 7
    maker.glance(torch.zeros(1, 3, 96, 64))
    assert len(calls) == 8


def test_people_who_outran_the_margin_are_glanced_at_on_the_next_frame():
    import torch

    x = torch.zeros(1, 3, 64, 64)
    maker, calls = _maker(**{'sparsity.glance_period': 8, 'sparsity.gate_margin': 1,
                             'sparsity.gate_refresh': 16})
    maker.glance(x)  # the first frame
    maker.observe(_people((0, 1)), 64, 64)
    maker.glance(x)  # the second: the frame before showed nobody to measure from
    maker.observe(_people((1, 2)), 64, 64)  # one tile row down: within the margin
    maker.glance(x)
    assert len(calls) == 2 and maker.seen is None
    maker.observe(_people((3, 4)), 64, 64)  # two rows down: beyond it
    maker.glance(x)
    assert len(calls) == 3 and maker.seen is not None
    maker.observe(_people((3, 4)), 64, 64)  # still
    maker.glance(x)
    assert len(calls) == 3


def test_a_move_made_under_a_period_of_1_is_not_taken_as_none():
    import torch

    def period(n):
        values = {'sparsity.gate': 'glance', 'sparsity.gate_margin': 0,
                  'sparsity.gate_refresh': 16, 'sparsity.glance_period': n}
        return st.replace(st.PerceptionSettings(), values).sparsity

    maker, calls = _maker(**{'sparsity.glance_period': 2, 'sparsity.gate_refresh': 16})
    maker.observe(_people((0, 1)), 64, 64)
    maker.observe(_people((0, 1)), 64, 64)  # still
    assert not maker.moved
    maker.configure(period(1))
    maker.observe(_people((3, 4)), 64, 64)  # a jump, which a period of 1 does not measure
    maker.configure(period(2))
    maker.glance(torch.zeros(1, 3, 64, 64))
    assert len(calls) == 1


def test_a_glance_answer_stands_for_a_still_input_only_under_the_same_glance():
    for change in ({'sparsity.gate': 'none'}, {'sparsity.glance_exit': False},
                   {'sparsity.glance_scale': 0.5}):  # (a larger glance may see somebody)
        maker, _ = _maker(**{'sparsity.gate_refresh': 16})
        maker.observe(_people((0, 0)), 64, 64)
        assert maker.may_repeat()
        values = {'sparsity.gate': 'glance', 'sparsity.gate_margin': 0,
                  'sparsity.gate_refresh': 16, **change}
        maker.configure(st.replace(st.PerceptionSettings(), values).sparsity)
        assert not maker.may_repeat(), change


def test_another_gate_or_tile_starts_the_gate_from_nothing_seen():
    import torch

    x = torch.zeros(1, 3, 64, 64)
    maker, _ = _maker()
    maker.observe(_people((1, 2)), 64, 64)
    none = st.replace(st.PerceptionSettings(), {'sparsity.gate': 'none'}).sparsity
    maker.configure(none)
    maker.observe(_people((0, 0)), 64, 64)  # under none the last frame is not followed
    glance = st.replace(st.PerceptionSettings(), {'sparsity.gate': 'glance'}).sparsity
    maker.configure(glance)
    # Back on the glance: nothing seen yet, so no answer alone and no gate.
    assert maker.previous is None and maker.glance(x) is None
    assert maker.gate(64, 64) is None
    maker.observe(_people((1, 2)), 64, 64)
    maker.configure(glance, 8)
    assert maker.tile == 8 and maker.previous is None
    maker.observe(_people((1, 2)), 32, 32)
    other = {'sparsity.gate': 'glance', 'sparsity.glance_scale': 0.5}
    maker.configure(st.replace(st.PerceptionSettings(), other).sparsity, 8)
    assert maker.previous is None  # what a glance at another scale would see is not known
    maker.observe(_people((1, 2)), 32, 32)
    other = {'sparsity.gate': 'previous', 'sparsity.glance_scale': 0.75}
    maker.configure(st.replace(st.PerceptionSettings(), other).sparsity, 8)
    previous = {'sparsity.gate': 'previous', 'sparsity.glance_scale': 0.5}
    maker.observe(_people((1, 2)), 32, 32)
    maker.configure(st.replace(st.PerceptionSettings(), previous).sparsity, 8)
    assert maker.previous is not None  # the previous gate takes no glance


def test_the_engine_reads_a_gate_in_the_change_tiles(monkeypatch):
    # 100x100 in tiles of 16 is 7x7 tiles, which the shapes alone would read as tiles of 15.
    from sparse_perception.gates.maker import GateMaker

    pipeline = Pipeline(_settings(**{'sparsity.gate': 'previous'}), heads=('segmentation',))
    net = pipeline._heads['segmentation'].net
    monkeypatch.setattr(GateMaker, 'gate', lambda self, h, w: _all_tiles_of(h, w, 16))
    seen = []
    engine = net.engine

    class Watch:
        def __call__(self, x, tiles, state, gate=None):
            seen.append(gate)
            return engine(x, tiles, state, gate=gate)

        def __getattr__(self, name):
            return getattr(engine, name)

    net.engine = Watch()
    frame = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    pipeline.process(frame)
    pipeline.process(255 - frame)
    assert seen[-1].tile_size == 16 and tuple(seen[-1].tiles.shape) == (7, 7)


def _all_tiles_of(height, width, tile):
    import torch

    return torch.ones(-(-height // tile), -(-width // tile), dtype=torch.bool)


def test_a_gate_over_most_of_the_frame_runs_it_ungated_without_a_glance():
    import torch

    maker, calls = _maker(**{'sparsity.gate_dense_above': 0.5})
    x = torch.zeros(1, 3, 64, 64)
    maker.observe(_people((0, 1)), 64, 64)  # a quarter of the tiles: gated
    assert maker.glance(x) is None and len(calls) == 1
    assert maker.gate(64, 64).float().mean() == 0.25
    maker.observe(_people((0, 3)), 64, 64)  # three quarters (a crowd): ungated
    assert maker.glance(x) is None and len(calls) == 1  # the glance was skipped
    assert maker.seen is None and maker.gate(64, 64) is None
    # At 1 a gate is never dropped, however much it covers.
    maker.configure(st.replace(st.PerceptionSettings(), {
        'sparsity.gate': 'glance', 'sparsity.gate_margin': 0, 'sparsity.gate_refresh': 0,
        'sparsity.gate_dense_above': 1.0, 'sparsity.glance_period': 1}).sparsity)
    maker.glance(x)
    assert len(calls) == 2 and maker.gate(64, 64).float().mean() == 0.75


def test_frames_of_ever_new_sizes_keep_a_bounded_number_of_glance_figures():
    # A fully convolutional network runs at the frame's size, and so does its glance: the
    # figures kept per size (and the engine's plans) must not grow with every size seen.
    settings = _settings(**{'model.segmentation': 'deeplabv3_mnv2_dm05_pascal_fcn',
                            'sparsity.gate': 'glance'})
    pipeline = Pipeline(settings, heads=('segmentation',))
    rng = np.random.default_rng(0)
    for step in range(20):
        frame = rng.integers(0, 255, (64 + 8 * step, 96, 3), dtype=np.uint8)
        pipeline.process(frame)
        got = pipeline.process(np.roll(frame, 4, axis=1))
        assert got.stats.heads['segmentation'].macs > 0
    net = pipeline._heads['segmentation'].net
    assert len(net._glance_stats) <= 16 and len(net.engine._plans) <= 4
