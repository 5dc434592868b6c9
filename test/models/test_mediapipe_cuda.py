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

"""The MediaPipe models on CUDA give the CPU's answers (skipped without a GPU)."""

import numpy as np
import pytest
from sparse_perception.models.parity import read_rgb
from sparse_perception.models.registry import load_model
from support import require_shared
import torch

pytestmark = pytest.mark.gpu

DAVIS = 'data/davis/DAVIS/JPEGImages/480p/parkour/00030.jpg'
COCO = 'data/coco-stills/tests/data/coco/000000000785.jpg'


@pytest.mark.parametrize('name', ['selfie_segmentation', 'selfie_segmentation_landscape'])
def test_selfie_cuda_matches_cpu(name, mediapipe_cache):
    frame = read_rgb(require_shared(DAVIS))
    cpu = load_model(name, device='cpu', models_dir=mediapipe_cache)
    cuda = load_model(name, device='cuda', models_dir=mediapipe_cache)
    tensor, _ = cpu.preprocess(frame)
    with torch.no_grad():
        expected = cpu.module(tensor)
        got = cuda.module(tensor.to('cuda')).cpu()
    assert ((got >= 0.5) == (expected >= 0.5)).float().mean() > 0.999
    assert (cuda(frame) == cpu(frame)).mean() > 0.999


def test_blazepose_cuda_matches_cpu(mediapipe_cache):
    frame = read_rgb(require_shared(COCO))
    cpu = load_model('blazepose', device='cpu', models_dir=mediapipe_cache)
    cuda = load_model('blazepose', device='cuda', models_dir=mediapipe_cache)
    for _ in range(3):  # detection, then tracking
        (expected,) = cpu(frame)
        (got,) = cuda(frame)
        np.testing.assert_allclose(np.array(got)[:, :2], np.array(expected)[:, :2], atol=2.0)
    assert cuda.counters == cpu.counters
