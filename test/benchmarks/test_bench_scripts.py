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

"""The committed benchmark scripts under bench/ still import against the package."""

import importlib.util

import pytest
from support import REPO

SCRIPTS = sorted((REPO / 'bench').glob('*.py'))


def test_there_are_scripts():
    assert SCRIPTS


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda path: path.name)
def test_a_benchmark_script_imports(script):
    # Scripts run only by hand: a package change that breaks their imports would otherwise
    # show up the next time someone regenerates a committed result.
    spec = importlib.util.spec_from_file_location(f'bench_{script.stem}', script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, 'main', None)), f'{script.name} has no main()'
