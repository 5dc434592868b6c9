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
Every source file carries the project's copyright and Apache-2.0 notice.

ament_copyright is not installable from PyPI, so this applies its rule here: the notice opens
the file (after a shebang). Files copied from elsewhere keep their own notices and are listed.
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.lint

REPO = Path(__file__).resolve().parents[2]
CHECKED = ['sparse_perception', 'launch', 'test', 'bench', 'scripts', '.ci', 'tools']
NOTICE = (REPO / 'test' / 'lint' / 'test_copyright.py').read_text().split('\n\n', 1)[0]


def _sources():
    yield REPO / 'setup.py'
    for folder in CHECKED:
        for path in sorted((REPO / folder).rglob('*')):
            if path.is_file() and (path.suffix == '.py' or _is_script(path)):
                yield path


def _is_script(path: Path) -> bool:
    with open(path, 'rb') as stream:
        return stream.read(2) == b'#!'


def test_every_source_file_has_the_notice():
    missing = []
    for path in _sources():
        text = path.read_text(encoding='utf-8')
        if text.startswith('#!'):
            text = text.split('\n', 1)[1]
        if not text.startswith(NOTICE):
            missing.append(str(path.relative_to(REPO)))
    assert not missing, 'missing the copyright/licence notice:\n' + '\n'.join(missing)


def test_notice_is_the_apache_header():
    assert NOTICE.startswith('# Copyright ')
    assert 'Licensed under the Apache License, Version 2.0' in NOTICE
