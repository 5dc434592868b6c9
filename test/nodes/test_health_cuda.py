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

"""CUDA memory as the nodes report it (/diagnostics) and release it (lifecycle deactivate)."""

import pytest
from sparse_perception.nodes import health
import torch

pytestmark = pytest.mark.gpu


def test_gpu_memory_is_reported_and_released():
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device='cuda')
    assert health.gpu_memory_bytes() >= 64 * 2**20
    del block
    assert torch.cuda.memory_reserved() >= 64 * 2**20  # cached by torch after the free
    health.release_device_memory()
    assert torch.cuda.memory_reserved() < 64 * 2**20
