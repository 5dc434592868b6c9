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
``perception_node``: segmentation and pose on one subscription and one decoded frame.

Both heads share the image conversion and the change map: the usual robot setup of one
camera and one GPU. ``node.heads`` (read-only) can narrow it to one head.

Topics, parameters and the life cycle are described in
:mod:`sparse_perception.nodes.perception_base` and the README.
"""

import sys

from sparse_perception.node_config import PERCEPTION
from sparse_perception.nodes.perception_base import PerceptionLifecycleNode, run


class PerceptionNode(PerceptionLifecycleNode):
    """Lifecycle node running both heads on one subscription and one decoded frame."""

    KIND = PERCEPTION


def main(args=None):
    """Run the node until shutdown (console script ``perception_node``)."""
    return run(PerceptionNode, args)


if __name__ == '__main__':
    sys.exit(main())
