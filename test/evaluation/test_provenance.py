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

"""Which source a result came from: the checkout's commit, or the one a copy names."""

import os
from pathlib import Path
import shutil
import subprocess

import pytest

from sparse_perception.evaluation import provenance


def test_the_running_checkout_names_its_commit():
    repo = Path(provenance.__file__).resolve().parents[2]
    if not (repo / '.git').exists() or shutil.which('git') is None:
        pytest.skip('not a git checkout (an installed package)')
    commit, dirty = provenance.source_commit()
    expected = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert commit == expected
    assert isinstance(dirty, bool)


def test_a_changed_result_file_is_not_a_changed_source(tmp_path):
    if shutil.which('git') is None:
        pytest.skip('git is not installed')

    def git(*args):
        subprocess.run(['git', *args], cwd=tmp_path, check=True, capture_output=True,
                       env={**os.environ, 'GIT_AUTHOR_NAME': 'a', 'GIT_AUTHOR_EMAIL': 'a@b',
                            'GIT_COMMITTER_NAME': 'a', 'GIT_COMMITTER_EMAIL': 'a@b'})
    (tmp_path / 'bench' / 'results').mkdir(parents=True)
    (tmp_path / 'bench' / 'results' / 'run.md').write_text('old\n')
    (tmp_path / 'code.py').write_text('x = 1\n')
    git('init', '-q')
    git('add', '.')
    git('commit', '-q', '-m', 'first')
    assert provenance.source_commit(tmp_path)[1] is False
    (tmp_path / 'bench' / 'results' / 'run.md').write_text('new\n')  # a run before this one
    assert provenance.source_commit(tmp_path)[1] is False
    (tmp_path / 'code.py').write_text('x = 2\n')
    assert provenance.source_commit(tmp_path)[1] is True


def test_a_copy_without_git_names_no_commit_unless_told(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.SOURCE_COMMIT_ENV, raising=False)
    assert provenance.source_commit(tmp_path) == (None, None)
    monkeypatch.setenv(provenance.SOURCE_COMMIT_ENV, ' 0123abcd \n')
    # Whether the copy differs from the named commit cannot be known: None, not False.
    assert provenance.source_commit(tmp_path) == ('0123abcd', None)
    monkeypatch.setenv(provenance.SOURCE_COMMIT_ENV, '')
    assert provenance.source_commit(tmp_path) == (None, None)


def test_the_allocator_settings_are_recorded(monkeypatch):
    for name in provenance.ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert provenance.machine()['allocator'] == 'defaults'
    monkeypatch.setenv('MALLOC_MMAP_THRESHOLD_', '4294967296')
    monkeypatch.setenv('MALLOC_TOP_PAD_', '536870912')
    assert provenance.allocator() == 'MALLOC_MMAP_THRESHOLD_=4294967296, MALLOC_TOP_PAD_=536870912'
