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


"""``segmentation_node``: the perception node with segmentation only, a class-id mask a frame."""

import sys

from sparse_perception.nodes.node_config import SEGMENTATION
from sparse_perception.nodes.perception_node import run


def main(args=None):
    """Run ``segmentation_node`` until shutdown (its console script)."""
    return run(SEGMENTATION, args)


if __name__ == '__main__':
    sys.exit(main())
