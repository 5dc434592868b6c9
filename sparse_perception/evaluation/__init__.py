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
Evaluation on real footage with ground truth (``sparse-perception eval``).

:mod:`.accuracy` measures what sparsity costs in accuracy: the real models against the TFLite
interpreter (parity), and dense against incremental on DAVIS (segmentation IoU) and JHMDB
(pose PCK), scored with the replay's metric code so that a replay of the same frames matches.
"""
