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
Spatial gates: where a network recomputes on a frame, beyond what changed.

``maker.py`` makes each frame's gate of a segmentation network (``sparsity.gate``:
previous, glance or learned) for the pipeline; ``track.py`` that of a single-person pose
network (``pose.gate track``); ``learned.py`` is the learned gate's small network and its
file; ``training.py`` trains it by distillation (``sparse-perception gate train``).
"""
