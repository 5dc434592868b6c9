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
``model.runtime: litert``: the dense pipeline on the TFLite interpreter decodes what torch does.

Each registered TFLite model runs in two dense pipelines, torch and LiteRT, on the same real
frames; the decoded outputs must agree within the parity bounds the torch import is held to
against the same interpreter (test_models_parity.py, test_models_mediapipe.py,
bench/results/accuracy.md): the interpreter is the reference both ways.
"""

import os
import sys

import numpy as np
import pytest

from sparse_perception import settings as st
from sparse_perception.models.parity import read_rgb
from sparse_perception.models.registry import load_model
from sparse_perception.pipeline import ModelLoadError, Pipeline
from support import require_module, require_shared
from torch import fx

require_module('ai_edge_litert')

DAVIS = 'data/davis/DAVIS/JPEGImages/480p'
JHMDB = 'data/jhmdb/ReadJHMDBAnnotations/data/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2'


def _segmentation_frames():
    return [read_rgb(require_shared(f'{DAVIS}/{sequence}/{index:05d}.jpg'))
            for sequence, index in (('parkour', 10), ('parkour', 11), ('parkour', 12),
                                    ('breakdance', 10), ('breakdance', 11))]


def _pose_frames(indices=range(1, 7)):
    return [read_rgb(require_shared(f'{JHMDB}/{i:05d}.png')) for i in indices]


def _pipelines(kind, name, models_dir):
    base = st.replace(st.PerceptionSettings(), {
        f'model.{kind}': name, 'model.device': 'cpu', 'model.models_dir': str(models_dir)})
    torch_run = Pipeline(base, heads=(kind,), incremental=False)
    litert_run = Pipeline(st.replace(base, {'model.runtime': 'litert'}), heads=(kind,),
                          incremental=False)
    return torch_run, litert_run


def _mask_agreement(kind, name, models_dir):
    torch_run, litert_run = _pipelines(kind, name, models_dir)
    agreement = []
    for frame in _segmentation_frames():
        want = torch_run.process(frame).segmentation
        got = litert_run.process(frame).segmentation
        assert got.mask.shape == want.mask.shape and got.mask.dtype == np.uint8
        assert got.class_names == want.class_names
        agreement.append(float((got.mask == want.mask).mean()))
    return agreement


def _keypoint_errors(name, models_dir, frames):
    """Return the distance (frame pixels) of every keypoint of every frame."""
    torch_run, litert_run = _pipelines('pose', name, models_dir)
    errors = []
    for frame in frames:
        want = torch_run.process(frame).pose
        got = litert_run.process(frame).pose
        assert got.joint_names == want.joint_names and got.people == want.people == 1
        errors.append(np.hypot(*(got.keypoints[..., :2] - want.keypoints[..., :2]).T).ravel())
    return np.concatenate(errors)


@pytest.mark.parametrize('name', ['selfie_segmentation_landscape', 'selfie_segmentation'])
def test_selfie_segmentation_on_litert_decodes_the_torch_mask(name, mediapipe_cache):
    agreement = _mask_agreement('segmentation', name, mediapipe_cache)
    # The import's own bound against the interpreter (network output, thresholded at 0.5).
    assert np.mean(agreement) >= 0.999 and min(agreement) >= 0.995, agreement


@pytest.mark.parametrize('name', ['deeplabv3_mnv2_pascal', 'deeplabv3_mnv2_dm05_pascal'])
@pytest.mark.slow
def test_deeplab_on_litert_decodes_the_torch_labels(name):
    agreement = _mask_agreement('segmentation', name, require_shared('models/coral'))
    # The integer kernels against the float import: pooled >= 98%, a looser bound per frame
    # (a quantisation step flips the arg-max where classes are close).
    assert np.mean(agreement) >= 0.98 and min(agreement) >= 0.95, agreement


@pytest.mark.parametrize('name', ['blazepose', 'blazepose_coco17'])
@pytest.mark.slow
def test_blazepose_on_litert_tracks_the_torch_keypoints(name, mediapipe_cache):
    errors = _keypoint_errors(name, mediapipe_cache, _pose_frames())  # tracked frame to frame
    # Both stages agree with the interpreter within 0.05 px of the crop on the same crop. The
    # crop follows the landmarks, so those differences move it a little from the second frame
    # on and the resampled crop carries them further: measured over these six frames median
    # 0.03 px, worst keypoint 1.8 px (frame 320x240).
    assert np.median(errors) <= 0.25 and errors.max() <= 3.0, errors


def test_movenet_on_litert_keeps_the_torch_keypoints():
    # The parity test's frames (a goalkeeper moving between them).
    errors = _keypoint_errors('movenet_lightning', require_shared('models/coral'),
                              _pose_frames((1, 8, 15, 22, 29, 36)))
    # The int8 model against its float import: median <= 2 px at the model's 192 px input
    # (its offsets are on a 0.8 px grid), here in frame pixels (320 px wide: x 5/3).
    assert np.median(errors) <= 2.0 * 320 / 192, errors


@pytest.mark.slow
def test_torch_and_litert_runtimes_give_the_same_network_interface(mediapipe_cache):
    from sparse_perception.models.tflite.litert import use_litert
    import torch

    reference = load_model('blazepose', models_dir=mediapipe_cache)
    model = load_model('blazepose', models_dir=mediapipe_cache)
    use_litert(model, 0)
    assert 'litert' in model.details['runtime']
    assert model.module.threads == model.detector.threads == len(os.sched_getaffinity(0))
    use_litert(model, 1)  # again: a new interpreter, the same torch tail behind it
    assert model.module.threads == 1 and isinstance(model.module.tail.torch_tail, fx.GraphModule)
    pixels, _ = reference.prepare(_pose_frames()[0])
    x = model.to_tensor(pixels)
    with torch.no_grad():
        want_features = reference.module.trunk(x)
        want = reference.module.tail(*want_features)
        features = model.module.trunk(x)
        got = model.module.tail(*[f.float() for f in features])
        # Features that did not come from this interpreter run go through the torch tail.
        copied = model.module.tail(*[f.clone() for f in features])
        detector_input = torch.rand(1, 3, 224, 224) * 2 - 1
        want_detections = reference.detector(detector_input)
        detections = model.detector(detector_input)
    for ours, theirs in zip(features, want_features):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))
    for group in (got, copied):
        assert [(o.shape, o.dtype) for o in group] == [(o.shape, o.dtype) for o in want]
        for ours, theirs in zip(group, want):
            torch.testing.assert_close(ours, theirs, rtol=0,
                                       atol=1e-5 * float(theirs.abs().max()))
    for ours, theirs in zip(detections, want_detections):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4 * float(theirs.abs().max()))


def test_a_model_not_from_a_tflite_file_is_refused(tmp_path):
    from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
    from sparse_perception.models.checkpoints import save_checkpoint

    model = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25,
                                               aspp_channels=16)).eval()
    path = save_checkpoint(model, tmp_path / 'tiny.pt', meta={
        'kind': 'segmentation', 'decoder': 'class_map', 'labels': ['bg', 'a', 'b'],
        'resize': 'none', 'name': 'tiny'})
    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': str(path), 'model.device': 'cpu', 'model.runtime': 'litert'})
    with pytest.raises(ModelLoadError, match=r"'tiny' cannot run on LiteRT.*not imported from "
                       r"a \.tflite file.*tiny\.pt.*model\.runtime 'torch'"):
        Pipeline(settings, heads=('segmentation',), incremental=False)
    with pytest.raises(ModelLoadError, match=r"'tiny' cannot run on LiteRT"):
        Pipeline(settings, heads=('segmentation',))  # its dense passes would run LiteRT too
    # 'auto' runs such a model on torch, dense and incremental alike.
    auto = st.replace(settings, {'model.runtime': 'auto'})
    for incremental in (False, True):
        head = Pipeline(auto, heads=('segmentation',), incremental=incremental)._heads
        assert head['segmentation'].model.dense_module is head['segmentation'].model.module


def test_the_fully_convolutional_conversion_is_refused():
    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': 'deeplabv3_mnv2_pascal_fcn', 'model.device': 'cpu',
        'model.models_dir': str(require_shared('models/coral')), 'model.runtime': 'litert'})
    with pytest.raises(ModelLoadError, match=r'fully convolutional.*fixed input'):
        Pipeline(settings, heads=('segmentation',), incremental=False)


def test_a_missing_interpreter_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'ai_edge_litert.interpreter', None)  # import fails
    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': 'deeplabv3_mnv2_pascal', 'model.device': 'cpu',
        'model.models_dir': str(require_shared('models/coral')), 'model.runtime': 'litert'})
    with pytest.raises(ModelLoadError, match=r'pip install ai-edge-litert.*litert extra'):
        Pipeline(settings, heads=('segmentation',), incremental=False)


def test_with_outputs_makes_an_intermediate_tensor_readable():
    from sparse_perception.models.tflite.edit import with_outputs
    from tflite_writer import build, Op, run_reference, T

    # x -> RELU -> hidden -> TANH -> y; XNNPACK runs both, so hidden is only readable as an
    # output.
    model = build([T((1, 4, 4, 3)), T((1, 4, 4, 3)), T((1, 4, 4, 3))],
                  [Op('RELU', [0], [1]), Op('TANH', [1], [2])], [0], [2])
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32)
    y, hidden = run_reference(with_outputs(model, [2, 1]), [x])
    np.testing.assert_allclose(hidden, np.maximum(x, 0), rtol=0, atol=0)
    np.testing.assert_allclose(y, np.tanh(np.maximum(x, 0)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='tensor indices of the first subgraph'):
        with_outputs(model, [3])
