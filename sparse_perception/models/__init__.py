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
Pretrained models: importers (TFLite, checkpoints), the registry and the decoders.

- :mod:`.tflite`: a TFLite flatbuffer -> ``TFLiteNet`` (``trunk`` + ``tail`` fx graphs of
  stock torch layers), and the LiteRT dense runtime;
- :mod:`.architectures`, :mod:`.checkpoints`: the package's own networks and their files;
- :mod:`.registry`: :func:`load_model` (name or path -> :class:`LoadedModel`);
- :mod:`.transforms`, :mod:`.decoders`: frame <-> network input, outputs -> masks/keypoints;
- :mod:`.fetch`, :mod:`.command`: ``sparse-perception models list|fetch|info``;
- :mod:`.parity`: agreement with the TFLite interpreter.

Importing this package is cheap: torch and the TFLite schema load when first used.
"""

_LAZY = {
    'load_model': 'sparse_perception.models.registry',
    'LoadedModel': 'sparse_perception.models.registry',
    'REGISTRY': 'sparse_perception.models.registry',
    'load_tflite': 'sparse_perception.models.tflite.importer',
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
