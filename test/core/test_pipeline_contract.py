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
The pipeline double keeps the real Pipeline's contract, so the tests run on it mean something.

The same checks run on the real Pipeline (a tiny segmentation checkpoint on the CPU) and on
test/pipeline_double.py's PipelineDouble: constructor and methods, public attributes, result
types, and the behaviour every caller relies on (dense first frame, exact at thresholds 0,
size changes and resets, bad frames, bad models, close).
"""

import dataclasses
import inspect

import numpy as np
from pipeline_double import OBSERVED, PipelineDouble
import pytest
from sparse_perception import settings as st
from sparse_perception.pipeline import ModelLoadError, Pipeline
from sparse_perception.results import (
    FrameResult, HeadStats, PipelineStats, PoseResult, SegmentationResult)
from support import with_pose_change

HEIGHT, WIDTH = 24, 32
META = {'kind': 'segmentation', 'decoder': 'class_map', 'labels': ['bg', 'a', 'b'],
        'normalise': [1 / 128, -1.0], 'resize': 'none', 'name': 'tiny'}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Save a tiny fully convolutional segmentation model (random weights); return its path."""
    import torch

    from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
    from sparse_perception.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25,
                                               aspp_channels=8)).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp('models') / 'tiny.pt', meta=META)


@pytest.fixture(params=['real', 'double'])
def make(request, checkpoint):
    """Return a builder of either pipeline: keyword arguments are heads, incremental, settings."""
    cls = Pipeline if request.param == 'real' else PipelineDouble
    # Thresholds 0 and one pixel per tile: the incremental result must equal the dense one.
    base = {'model.segmentation': str(checkpoint) if cls is Pipeline else 'tiny-seg',
            'model.device': 'cpu', 'sparsity.adaptive': False, 'change.threshold': 0.0,
            'change.min_pixels': 1, 'change.tile_size': 8}

    def build(heads=('segmentation',), incremental=True, **changes):
        settings = st.replace(st.PerceptionSettings(), with_pose_change({**base, **changes}))
        return cls(settings, heads=heads, incremental=incremental)
    build.cls = cls
    return build


def _frames(count, seed=0, shape=(HEIGHT, WIDTH)):
    """Return a random first frame, then frames that each repaint one small patch."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8)]
    for _ in range(count - 1):
        frame = out[-1].copy()
        y, x = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        frame[y:y + 5, x:x + 5] = rng.integers(0, 256, (5, 5, 3))
        out.append(frame)
    return out


def _public(obj) -> set:
    return {name for name in dir(obj) if not name.startswith('_')}


def test_same_constructor_methods_and_attributes(make):
    def shape(function):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(function).parameters.values()]

    for name in ('__init__', 'process', 'update', 'reset', 'close'):
        assert shape(getattr(PipelineDouble, name)) == shape(getattr(Pipeline, name)), name
    assert _public(PipelineDouble) == _public(Pipeline)
    for name in ('settings', 'class_names', 'joint_names', 'skeleton'):
        assert isinstance(getattr(Pipeline, name), property)
        assert isinstance(getattr(PipelineDouble, name), property)
    pipeline = make()
    assert _public(pipeline) - set(OBSERVED if make.cls is PipelineDouble else ()) == \
        _public(Pipeline) | {'incremental', 'keep_change_maps'}


def _check_result(result, heads, shape, tile):
    assert isinstance(result, FrameResult) and isinstance(result.stats, PipelineStats)
    assert result.tile_size == tile and isinstance(result.tile_size, int)
    tiles = result.change_tiles
    assert isinstance(tiles, np.ndarray) and tiles.dtype == bool
    assert tiles.shape == (-(-shape[0] // tile), -(-shape[1] // tile))
    assert result.stats.changed_fraction == pytest.approx(tiles.mean())
    assert set(result.stats.heads) == set(heads)
    for head in result.stats.heads.values():
        assert isinstance(head, HeadStats)
        assert 0.0 <= head.active_fraction <= 1.0 and isinstance(head.dense, bool)
        assert isinstance(head.macs, int) and isinstance(head.dense_macs, int)
        assert 0 <= head.macs <= head.dense_macs and head.ms >= 0.0
        assert all(isinstance(k, str) and 0.0 <= v <= 1.0 for k, v in head.layers.items())
    if 'segmentation' in heads:
        segmentation = result.segmentation
        assert isinstance(segmentation, SegmentationResult)
        assert segmentation.mask.shape == shape and segmentation.mask.dtype == np.uint8
        assert isinstance(segmentation.class_names, tuple) and segmentation.class_names
        labelled = segmentation.mask[segmentation.mask != 255]
        assert labelled.size == 0 or labelled.max() < len(segmentation.class_names)
    else:
        assert result.segmentation is None
    if 'pose' in heads:
        pose = result.pose
        assert isinstance(pose, PoseResult) and pose.keypoints.dtype == np.float32
        assert pose.keypoints.ndim == 3 and pose.keypoints.shape[1:] == (
            len(pose.joint_names), 3)
        assert all(0 <= a < len(pose.joint_names) and 0 <= b < len(pose.joint_names)
                   for a, b in pose.skeleton)
    else:
        assert result.pose is None


def test_results_have_the_contract_types_and_are_exact_at_thresholds_zero(make):
    incremental, dense = make(), make(incremental=False)
    assert incremental.class_names and incremental.joint_names == ()
    assert incremental.skeleton == () and incremental.incremental and not dense.incremental
    sparse = 0
    for index, frame in enumerate(_frames(4)):
        got, want = incremental.process(frame), dense.process(frame)
        _check_result(got, ('segmentation',), (HEIGHT, WIDTH), 8)
        _check_result(want, ('segmentation',), (HEIGHT, WIDTH), 8)
        np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
        assert want.stats.dense and want.stats.changed_fraction == 1.0
        assert got.stats.dense == (index == 0)  # only the first frame runs dense
        sparse += 0 < got.stats.heads['segmentation'].active_fraction < 1
    assert sparse == 3


def test_pose_results_of_the_double_have_the_contract_types():
    # The real pose models are files too large for this tier; the double's pose output is held
    # to the result types (test_pipeline.py runs the real pose models).
    double = PipelineDouble(heads=('segmentation', 'pose'))
    for frame in _frames(2):
        _check_result(double.process(frame), ('segmentation', 'pose'), (HEIGHT, WIDTH), 16)
    assert len(double.joint_names) == 17 and double.skeleton


def test_size_change_and_reset_run_dense(make):
    pipeline = make()
    first, second = _frames(2)
    assert pipeline.process(first).stats.dense and not pipeline.process(second).stats.dense
    small = np.ascontiguousarray(second[:16, :16])
    assert pipeline.process(small).stats.dense
    assert not pipeline.process(small).stats.dense
    pipeline.reset()
    assert pipeline.process(small).stats.dense


def test_update_applies_on_the_next_frame(make):
    pipeline = make()
    first, second = _frames(2)
    pipeline.process(first)
    quiet = st.replace(pipeline.settings, {'change.threshold': 255.0})
    pipeline.update(quiet)
    assert pipeline.settings == quiet
    result = pipeline.process(second)
    assert not result.stats.dense and not result.change_tiles.any()


@pytest.mark.parametrize('frame', [
    np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((HEIGHT, WIDTH, 3), np.float32),
    np.zeros((0, WIDTH, 3), np.uint8), [[0, 0, 0]]])
def test_bad_frames_are_named_alike(make, frame):
    with pytest.raises(ValueError, match=r'a frame must be a non-empty \(H, W, 3\) uint8 RGB'):
        make().process(frame)


def test_bad_heads_and_models_are_named_alike(make):
    with pytest.raises(ValueError, match='heads must be distinct names from'):
        make(heads=('segmentation', 'segmentation'))
    with pytest.raises(ValueError, match='heads must be distinct names from'):
        make(heads=())
    with pytest.raises(ModelLoadError, match='missing'):
        make(**{'model.segmentation': 'missing'})
    pipeline = make()
    before = pipeline.settings
    with pytest.raises(ModelLoadError):
        pipeline.update(st.replace(before, {'model.segmentation': 'missing'}))
    assert pipeline.settings == before  # a failed update changes nothing


def test_close_releases_the_heads(make):
    pipeline = make()
    pipeline.process(_frames(1)[0])
    pipeline.close()
    assert pipeline.class_names == ()
    # Afterwards it says so (it answered frames with no outputs at all before).
    for call in (lambda: pipeline.process(_frames(1)[0]), pipeline.warm_up,
                 lambda: pipeline.update(pipeline.settings)):
        with pytest.raises(RuntimeError, match='the pipeline is closed'):
            call()


def test_observed_attributes_count_what_happened():
    double = PipelineDouble(heads=('pose',))
    frames = _frames(3)
    for frame in frames:
        double.process(frame)
    double.reset()
    changed = dataclasses.replace(double.settings, sparsity=dataclasses.replace(
        double.settings.sparsity, scale=0.5))
    double.update(changed)
    double.close()
    assert (double.frames, double.resets, double.updates, double.closed) == (
        3, 1, [changed], True)
