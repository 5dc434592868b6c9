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
Run perception_node on the pipeline double in a process of its own (the two-process test).

Usage: python test/nodes/node_process.py --ros-args -p model.segmentation:=tiny-seg ...
It runs through the same run() as the console scripts; only the pipeline factory differs.
"""

from pathlib import Path
import sys

# test/, for pipeline_double
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline_double  # noqa: E402
from sparse_perception.nodes.node_config import PERCEPTION  # noqa: E402
from sparse_perception.nodes.perception_node import run  # noqa: E402


if __name__ == '__main__':
    sys.exit(run(PERCEPTION, sys.argv, pipeline_factory=pipeline_double.factory(),
                 model_check=pipeline_double.model_problem))
