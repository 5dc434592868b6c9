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
Reproduce bench/results/engine_<device>.json and .md with one command.

    .venv/bin/python bench/engine.py            # CPU, the committed results
    .venv/bin/python bench/engine.py --device cuda
    .venv/bin/python bench/engine.py --model registry:deeplabv3_mnv2_pascal_fcn
                                                # the trained Coral weights (needs
                                                # sparse_perception.models and ../shared)

Extra arguments go to ``sparse-perception bench engine`` (see its --help). Run it on a quiet
machine: other processes on the same cores make every number worse and noisier.
"""

import argparse
from pathlib import Path
import sys

from sparse_perception import cli

RESULTS = Path(__file__).resolve().parent / 'results'


def main(argv: list[str]) -> int:
    """Run the engine benchmark, writing the results beside this script."""
    # The flags that name the result files, in any form the command takes (--device=cuda,
    # --dev cuda); everything else goes through as it is.
    flags = argparse.ArgumentParser(add_help=False)
    for flag in ('--device', '--model', '--json', '--markdown'):
        flags.add_argument(flag)
    known, _ = flags.parse_known_args(argv)
    name = f'engine_{known.device or "cpu"}'
    if known.model:  # another network: its own result files
        name += '_' + ''.join(c if c.isalnum() else '_' for c in known.model.split(':')[-1])
    out = []
    if known.json is None and known.markdown is None:  # one named: that one alone
        out = ['--json', str(RESULTS / f'{name}.json'), '--markdown', str(RESULTS / f'{name}.md')]
    return cli.main(['bench', 'engine'] + out + argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
