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
The incremental sparse CNN engine: run a model frame by frame, recomputing only what changed.

An unmodified ``nn.Module`` is run so that each layer is recomputed only where its inputs
changed.

``IncrementalModel(module, EngineConfig(...), execution=...)`` wraps a model in eval mode;
``new_state()`` gives one stream's caches; ``model(x, tiles, state)`` runs a frame. See
executor.py for the frame contract and the choice of executor (eager.py and layers.py decide
per layer on the host; device.py runs sync-free on the kernels), canonical.py for what is
supported, and backend.py for the primitive interface GPU kernels implement.
"""

from sparse_perception.engine.backend import (available_backends, get_backend,
                                              ReferenceBackend, register_backend)
from sparse_perception.engine.config import EngineConfig, parse_layer_thresholds
from sparse_perception.engine.errors import EngineError, UnsupportedOpError
from sparse_perception.engine.executor import IncrementalModel, StreamState
from sparse_perception.engine.ops import depth_to_space
from sparse_perception.engine.stats import FrameStats, LayerStats

__all__ = [
    'available_backends', 'depth_to_space', 'EngineConfig', 'EngineError', 'FrameStats',
    'get_backend', 'IncrementalModel', 'LayerStats', 'parse_layer_thresholds', 'ReferenceBackend',
    'register_backend', 'StreamState', 'UnsupportedOpError',
]
