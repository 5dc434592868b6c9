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
Deterministic replay evaluation: recordings in, per-frame metrics, reports and output bags out.

``sparse-perception replay`` feeds every frame of a rosbag (rosbag2 mcap or sqlite3, ROS 1), a
video file or an image folder through the incremental pipeline and its dense reference, and
scores speed, sparsity, agreement with dense and, where given, ground truth.
``sparse-perception make-bag`` turns a video or image folder into an evaluation bag.

Modules, each importable without torch, OpenCV or rosbags (they are imported on first use):

- :mod:`.sources`: frame sources (bags, videos, image folders), topic detection, frame ranges;
- :mod:`.groundtruth`: mask folders (DAVIS layout), COCO-17 keypoint JSON, JHMDB ``.mat``;
- :mod:`.metrics`: agreement with dense, IoU and PCK;
- :mod:`.runner`: the per-frame loop and its results;
- :mod:`.report`, :mod:`.plots`, :mod:`.pictures`, :mod:`.outbag`: what a run writes;
- :mod:`.makebag`: video or image folder -> rosbag2.
"""
