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

"""ament_flake8 with ROS 2's own configuration (99 columns, single quotes, Google imports)."""

from pathlib import Path

import ament_flake8
from ament_flake8.main import main_with_errors
import pytest

pytestmark = pytest.mark.lint

REPO = Path(__file__).resolve().parents[2]
CHECKED = ['sparse_perception', 'launch', 'test', 'bench', 'tools', 'setup.py']


@pytest.mark.flake8
@pytest.mark.linter
@pytest.mark.slow
def test_flake8(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # ament_flake8 skips hidden folders below the working directory
    # ament's own rules, checked in this process: flake8's worker processes are forked, and a
    # fork taken while DDS or torch threads of earlier tests are alive can hang.
    rules = Path(ament_flake8.__file__).parent / 'configuration' / 'ament_flake8.ini'
    config = tmp_path / 'flake8.ini'
    config.write_text(rules.read_text() + 'jobs = 1\n')
    paths = [p for p in CHECKED if (REPO / p).exists()]
    rc, errors = main_with_errors(argv=['--config', str(config)] + paths)
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
