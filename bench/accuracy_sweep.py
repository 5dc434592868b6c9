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

r"""
Reproduce bench/results/accuracy_sweep.json and .md (the sweep behind the default settings).

    .venv/bin/python bench/accuracy_sweep.py
    .venv/bin/python bench/accuracy_sweep.py --axis change.threshold 0 2 4 \\
        --axis sparsity.scale 0 0.01          # another grid (any setting by its name)

Extra arguments go to ``sparse-perception eval sweep`` (see its --help). It needs the shared
folder (DAVIS, JHMDB, the Coral models) and, for the default-models check, the MediaPipe
models (`sparse-perception models fetch`). Run it on a quiet machine; the points' accuracy
and MACs do not depend on the load, their latencies do. After the sweep, set the chosen
point's values as the defaults in sparse_perception/settings.py and regenerate
config/perception.yaml (`.venv/bin/python tools/make_config.py`).
"""

import argparse
from pathlib import Path
import sys

from sparse_perception import cli

RESULTS = Path(__file__).resolve().parent / 'results'


def main(argv: list[str]) -> int:
    """Run the sweep, writing the results beside this script unless told otherwise."""
    # Both committed files, unless an output is named in any form the command takes (then
    # that one alone: the other would no longer match it).
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument('--json')
    flags.add_argument('--markdown')
    named, _ = flags.parse_known_args(argv)
    out = [] if named.json or named.markdown else [
        '--json', str(RESULTS / 'accuracy_sweep.json'),
        '--markdown', str(RESULTS / 'accuracy_sweep.md')]
    return cli.main(['eval', 'sweep'] + out + argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
