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
Images and messages in and out, without ROS: camera messages to numpy, results to messages.

Used by the nodes and the replay alike, so a bag decodes exactly as a live topic does. The
message classes are passed in (rclpy's in a node, rosbags' in the replay); nothing here imports
rclpy or a message package.
"""
