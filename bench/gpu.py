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
Reproduce bench/results/gpu.json and gpu.md with one command, on a CUDA machine.

    .venv/bin/python bench/gpu.py            # fp16, vtest at 576x768 and 1080x1920

Extra arguments go to ``sparse-perception bench gpu`` (see its --help). It needs CUDA and
Triton (the ``gpu`` or ``test`` extra; a CUDA build of torch: SPARSE_PERCEPTION_TORCH in
scripts/env.sh) and ../shared/data/vtest/vtest.avi (or SPARSE_PERCEPTION_SHARED). The first
run compiles the Triton kernels (cached by Triton afterwards). It should finish within 8
minutes on an H200.
"""

import argparse
from pathlib import Path
import sys

from sparse_perception import cli

RESULTS = Path(__file__).resolve().parent / 'results'


def main(argv: list[str]) -> int:
    """Run the GPU benchmark, writing the results beside this script."""
    # Both committed files, unless an output is named in any form the command takes (then
    # that one alone: the other would no longer match it).
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument('--json')
    flags.add_argument('--markdown')
    named, _ = flags.parse_known_args(argv)
    out = [] if named.json or named.markdown else [
        '--json', str(RESULTS / 'gpu.json'), '--markdown', str(RESULTS / 'gpu.md')]
    return cli.main(['bench', 'gpu'] + out + argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
