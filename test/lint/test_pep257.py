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

"""ament_pep257: docstring conventions as ROS 2 packages check them."""

from pathlib import Path

from ament_pep257.main import main
import pytest

pytestmark = pytest.mark.lint

REPO = Path(__file__).resolve().parents[2]
CHECKED = ['sparse_perception', 'launch', 'test', 'bench', 'tools', 'setup.py']


@pytest.mark.linter
@pytest.mark.pep257
@pytest.mark.slow
def test_pep257(monkeypatch):
    monkeypatch.chdir(REPO)
    paths = [p for p in CHECKED if (REPO / p).exists()]
    assert main(argv=paths) == 0, 'Found code style errors / warnings'
