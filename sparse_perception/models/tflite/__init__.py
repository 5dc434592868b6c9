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
TFLite models: read, imported as torch modules, edited, and run on the TFLite interpreter.

- :mod:`.reader`: a flatbuffer -> tensors, constant buffers and operators (:class:`FlatModel`);
- :mod:`.converters`: one converter per TFLite operator, and the table from operator to
  converter;
- :mod:`.importer`: :func:`load_tflite` -> ``TFLiteNet`` (``trunk`` + ``tail`` fx graphs of
  stock torch layers), the graph assembly and the numerics the parity with TFLite rests on;
- :mod:`.edit`: flatbuffer rewrites that let a stock interpreter run a model (the parity
  reference);
- :mod:`.litert`: the dense runtime ``model.runtime: litert`` (the interpreter behind the
  torch ``trunk``/``tail`` interface).
"""
