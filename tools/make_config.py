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
Write config/perception.yaml from the typed settings (every node parameter and its default).

Run it after changing sparse_perception/settings.py; test/nodes/test_node_config.py fails while
the committed file and the settings disagree. Usage, from the repository root::

    .venv/bin/python tools/make_config.py          # rewrites config/perception.yaml
    .venv/bin/python tools/make_config.py --check  # exit 1 if it is out of date
"""

import argparse
import os
from pathlib import Path
import sys
import tempfile

from sparse_perception.nodes.node_config import render_config

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'perception.yaml'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='only check that the file is up to date')
    args = parser.parse_args()
    text = render_config()
    current = CONFIG.read_text(encoding='utf-8') if CONFIG.is_file() else None
    if args.check:
        if current != text:
            print(f'{CONFIG} is out of date: run tools/make_config.py', file=sys.stderr)
            return 1
        return 0
    CONFIG.parent.mkdir(exist_ok=True)
    # Write beside the target and rename: never a half-written config.
    with tempfile.NamedTemporaryFile('w', encoding='utf-8', dir=CONFIG.parent,
                                     suffix='.tmp', delete=False) as stream:
        stream.write(text)
    os.replace(stream.name, CONFIG)
    print(f'wrote {CONFIG}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
