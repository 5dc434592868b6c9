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
The kernels compile for the benchmark's GPU (sm_90, H200) on this CPU-only machine.

The interpreter forgives what Triton's compiler does not, so the specialisations that the
engine launches (device mode in fp16 and fp32 with change tests, the eager backend's
primitives) are recorded under the interpreter and compiled to cubins in a child process
without it (Triton's wheel bundles ptxas). Numerics on a GPU are the gpu tier's business.
"""

import importlib.util
import os
from pathlib import Path
import subprocess
import sys

import kernel_networks as kn
import pytest
from sparse_perception.engine import EngineConfig, IncrementalModel
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1',
    reason='records the launches under the interpreter (the gpu tier compiles for real)')


def _has_cuda_backend() -> bool:
    spec = importlib.util.find_spec('triton')
    return spec is not None and (Path(spec.origin).parent / 'backends' / 'nvidia' / 'bin' /
                                 'ptxas').exists()


@pytest.mark.slow
@pytest.mark.skipif(not _has_cuda_backend(), reason='this Triton wheel has no CUDA backend')
def test_every_launched_specialisation_compiles_for_sm90(tmp_path):
    from sparse_perception.kernels import runtime
    from sparse_perception.kernels.aot import SpecRecorder

    recorder = SpecRecorder()
    runtime.RECORDERS.append(recorder)
    try:
        runs = [('mobile', torch.float16, 'device', EngineConfig(threshold_scale=0.1)),
                ('branches', torch.float32, 'device', EngineConfig(threshold_scale=0.1)),
                ('mobile_argmax', torch.float32, 'device', EngineConfig()),
                ('upsampler', torch.float16, 'device', EngineConfig(threshold_scale=0.1)),
                ('upsampler', torch.float32, 'device', EngineConfig()),
                ('branches', torch.float32, 'eager', EngineConfig(backend='kernels')),
                ('mobile', torch.float16, 'eager', EngineConfig(backend='kernels'))]
        for name, dtype, execution, config in runs:
            model = kn.build(name).to(dtype)
            engine = IncrementalModel(model, config, execution=execution, graph=False)
            state = engine.new_state()
            channels = 4 if name == 'branches' else 3
            for x, tiles in kn.frames(channels, 12, 12, 2):
                engine(x.to(dtype), tiles, state)
        from sparse_perception.kernels import masks, resample
        for dtype in (torch.float32, torch.float16):  # primitives these runs do not reach
            resample.resample_taps(torch.randn(5, 4, 3, dtype=dtype),
                                   torch.rand(5, 4, dtype=dtype))
        masks.list_tiles(torch.rand(5, 7) < 0.3)
    finally:
        runtime.RECORDERS.remove(recorder)
    specs = tmp_path / 'specs.json'
    count = recorder.dump(specs)
    kernels = {s['kernel'] for s in recorder.specs.values()}
    assert {'_conv1x1_kernel', '_conv_kernel', '_depthwise_kernel', '_pool_kernel',
            '_resample_tiles_kernel', '_copy_tiles_kernel', '_candidates_kernel',
            '_commit_tiles_kernel', '_intake_kernel', '_pool_sum_kernel',
            '_pool_commit_kernel', '_positionwise_kernel', '_store_rows_kernel',
            '_gather_rows_kernel', '_taps_kernel', '_tile_flags_kernel', '_list_kernel'} <= kernels
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['TRITON_CACHE_DIR'] = str(tmp_path / 'triton-cache')
    result = subprocess.run([sys.executable, '-m', 'sparse_perception.kernels.aot', str(specs),
                             '--arch', '90'], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'{count} of {count} kernel specialisations compiled for sm_90' in result.stdout
