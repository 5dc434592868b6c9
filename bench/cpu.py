#!/usr/bin/env python3
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
Reproduce bench/results/cpu.json and cpu.md with one command.

    .venv/bin/python bench/cpu.py               # the bundled clip, default models and settings
    .venv/bin/python bench/cpu.py my_bag/ --topic /camera/image_raw

Extra arguments go to ``sparse-perception bench cpu`` (see its --help). It needs the default
models (``sparse-perception models fetch``) and ai-edge-litert (the ``litert`` extra), no GPU.
Run it on a quiet machine: other processes on the same cores make every number worse and
noisier (the contended pass starts its own busy processes).
"""

from pathlib import Path
import sys

from sparse_perception import cli

RESULTS = Path(__file__).resolve().parent / 'results'


def main(argv: list[str]) -> int:
    """Run the CPU benchmark, writing the results beside this script."""
    out = [] if '--json' in argv else ['--json', str(RESULTS / 'cpu.json')]
    return cli.main(['bench', 'cpu'] + out + argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
