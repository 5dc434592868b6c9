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

"""Imported models on CUDA give the CPU's answers (skipped without a GPU)."""

import numpy as np
import pytest
from sparse_perception.models.parity import read_rgb
from sparse_perception.models.registry import load_model
from support import require_shared
import torch

# TF32 off: the dense references are float32 (conftest's no_tf32 says why).
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures('no_tf32')]

FRAME = 'data/davis/DAVIS/JPEGImages/480p/parkour/00030.jpg'


@pytest.mark.parametrize('name', ['deeplabv3_mnv2_pascal', 'deeplabv3_mnv2_pascal_fcn',
                                  'movenet_lightning'])
def test_cuda_matches_cpu(name):
    models_dir = require_shared('models/coral')
    frame = read_rgb(require_shared(FRAME))
    cpu = load_model(name, device='cpu', models_dir=models_dir)
    cuda = load_model(name, device='cuda', models_dir=models_dir)
    tensor, transform = cpu.preprocess(frame)
    with torch.no_grad():
        expected = cpu.module(tensor)
        got = cuda.module(tensor.to('cuda'))
    if cpu.kind == 'segmentation':
        assert (got.cpu() == expected).float().mean() > 0.999
        assert cuda(frame).shape == frame.shape[:2]
    else:
        np.testing.assert_allclose(got.cpu().numpy(), expected.numpy(), atol=2e-3)
        (person,) = cuda(frame)
        assert len(person) == 17
