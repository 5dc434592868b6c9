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
Exactness on real footage: vtest (static camera) and DAVIS (moving camera).

The clips run through the MobileNetV2-DeepLabV3 benchmark network with the change detector in
front.

At thresholds 0 the incremental output must equal the dense output on the image the engine
has seen (the detector's reference: changed tiles of the new frame, the rest as last
propagated), fp32 max abs difference <= 1e-4 of the output scale, after every frame.
"""

import pytest
from sparse_perception.change import ChangeDetector
from sparse_perception.engine import EngineConfig, IncrementalModel
from sparse_perception.models.benchmark_network import (
    calibrate_batchnorm, mobilenet_v2_deeplabv3)
from support import require_module, require_shared, vtest_frames
import torch

cv2 = require_module('cv2', reason='OpenCV (the opencv extra) reads the clips')

TOLERANCE = 1e-4


def davis_frames(sequence, count, size):
    folder = require_shared(f'data/davis/DAVIS/JPEGImages/480p/{sequence}')
    paths = sorted(folder.glob('*.jpg'))[:count]
    return [cv2.resize(cv2.imread(str(p)), size[::-1], interpolation=cv2.INTER_AREA)
            for p in paths]


def to_input(frame):
    """BGR uint8 (H, W, 3) -> normalised RGB (1, 3, H, W) float."""
    return torch.from_numpy(frame[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@torch.no_grad()
def check_clip(frames, width, tile_size, config=None, argmax=False):
    model = mobilenet_v2_deeplabv3(width=width, seed=1, argmax=argmax)
    calibrate_batchnorm(model, [to_input(f) for f in frames[:2]])
    inc = IncrementalModel(model, config or EngineConfig())
    state = inc.new_state()
    detector = ChangeDetector(threshold=12, tile_size=tile_size)
    active = []
    for i, frame in enumerate(frames):
        cm = detector.update(frame)
        got = inc(to_input(frame), cm, state)
        expected = model(to_input(detector.reference.numpy()))
        if argmax:
            assert (got != expected).float().mean() < 1e-3, f'frame {i}'
        else:
            scale = float(expected.abs().max())
            diff = float((got - expected).abs().max())
            assert diff <= TOLERANCE * scale, f'frame {i}: {diff / scale:.3g}'
        active.append(inc.last_stats.active_fraction)
    return active


@pytest.mark.slow
def test_vtest_full_resolution_is_exact():
    active = check_clip(vtest_frames(4), width=1.0, tile_size=16)
    assert max(active[1:]) < 1.0  # the frames after the first ran incrementally


@pytest.mark.slow
@pytest.mark.parametrize('tile_size, cutoff', [(8, 0.5), (16, 1.0), (4, 0.2)])
def test_vtest_long_sequence_is_exact(tile_size, cutoff):
    frames = vtest_frames(12, size=(288, 384))
    check_clip(frames, width=0.5, tile_size=tile_size,
               config=EngineConfig(layer_dense_fallback=cutoff, window_dense_fallback=cutoff,
                                   tile=4))


@pytest.mark.slow
def test_vtest_class_map_tail():
    check_clip(vtest_frames(6, size=(144, 192)), width=0.5, tile_size=8, argmax=True)


@pytest.mark.slow
@pytest.mark.parametrize('sequence', ['parkour', 'breakdance'])
def test_davis_moving_camera_is_exact(sequence):
    check_clip(davis_frames(sequence, 6, (240, 426)), width=0.5, tile_size=8)
