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
``pose_node``: human pose only: keypoints of every person per frame.

Topics, parameters and the life cycle are described in
:mod:`sparse_perception.nodes.perception_base` and the README.
"""

import sys

from sparse_perception.node_config import POSE
from sparse_perception.nodes.perception_base import PerceptionLifecycleNode, run


class PoseNode(PerceptionLifecycleNode):
    """Lifecycle node running human pose only."""

    KIND = POSE


def main(args=None):
    """Run the node until shutdown (console script ``pose_node``)."""
    return run(PoseNode, args)


if __name__ == '__main__':
    sys.exit(main())
