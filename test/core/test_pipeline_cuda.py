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

"""The pipeline on CUDA with the path choice on, in fp32 and fp16: both paths run and agree."""

import numpy as np
import pytest
from sparse_perception import settings as st
from sparse_perception.pipeline import Pipeline
from support import require_shared, vtest_frames

# TF32 off: the two paths then compute in float32 alike (conftest's no_tf32 says why).
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures('no_tf32')]


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_the_path_choice_runs_both_paths_on_cuda(cuda, precision):
    frames = vtest_frames(12, (144, 192), rgb=True)
    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': 'deeplabv3_mnv2_pascal_fcn', 'model.device': 'cuda',
        'model.precision': precision, 'model.models_dir': str(require_shared('models/coral')),
        'change.threshold': 0.0, 'sparsity.scale': 0.0})
    pipeline = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    net = pipeline._heads['segmentation'].net
    assert net.choice is not None  # timed with a synchronisation on CUDA
    paths = []
    for frame in frames:
        got, want = pipeline.process(frame), dense.process(frame)
        paths.append(net.path)
        agreement = float(np.mean(got.segmentation.mask == want.segmentation.mask))
        assert agreement >= (0.999 if precision == 'fp32' else 0.99), (len(paths), agreement)
    # Its first frame timed the dense pass too (in fp16 it must take the frame in fp16).
    assert net.choice.estimates()['dense'] is not None
