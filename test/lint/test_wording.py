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
Code, comments, messages and data speak of the product, not of how work on it was organised.

A docstring says what a thing is and does; a tracker number or a pointer to a planning
document outside the repository means nothing to a reader of the package. Markdown documents
are left out: they describe the repository and may name its tracker.
"""

from pathlib import Path
import re
import subprocess

import pytest

pytestmark = pytest.mark.lint

REPO = Path(__file__).resolve().parents[2]
# Tracker numbers and planning documents that are not part of the package.
PROCESS_WORDS = re.compile(
    r'\bissue\s*#?\d+|\bSTYLE\.md\b|\bARCHITECTURE\.md\b|\bdesign card\b|\bbrief\b',
    re.IGNORECASE)
# Folders walked when the tree is not a git checkout (an unpacked sdist, a colcon build).
FOLDERS = ['sparse_perception', 'launch', 'config', 'test', 'bench', 'scripts',
           'tools', 'resource', '.ci']
SELF = Path(__file__).resolve()


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True,
                                check=True).stdout.decode().split('\0')
        return [REPO / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in REPO.iterdir() if p.is_file()]
        for folder in FOLDERS:
            files += [p for p in (REPO / folder).rglob('*') if p.is_file()]
        return files


def _text(path: Path) -> str | None:
    """Return the file's text, or None for binary files and what cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:  # listed by git but deleted in the working tree
        return None
    if b'\0' in data[:8192]:
        return None
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return None


def find_process_words(files: list[Path]) -> list[str]:
    """Return ``path:line: text`` for each line of ``files`` that holds a process word."""
    hits = []
    for path in files:
        if path.suffix == '.md' or path.resolve() == SELF:
            continue
        text = _text(path)
        if text is None or not PROCESS_WORDS.search(text):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if PROCESS_WORDS.search(line):
                name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                hits.append(f'{name}:{number}: {line.strip()}')
    return hits


@pytest.mark.linter
def test_no_process_words_in_tracked_files():
    hits = find_process_words(_tracked_files())
    assert not hits, (
        'tracker numbers or planning documents named outside the docs; say what the thing is '
        'or does instead:\n' + '\n'.join(hits))


def test_the_check_finds_a_planted_word(tmp_path):
    # Assembled here, so that this file does not hold the words it looks for.
    tracker = 'iss' + 'ue'
    planted = tmp_path / 'planted.py'
    planted.write_text(f'x = 1\n# as {tracker} 12 asks\n')
    clean = tmp_path / 'clean.py'
    clean.write_text('"""Issues of the tracker are not numbered here; briefly, nothing."""\n')
    notes = tmp_path / 'notes.md'
    notes.write_text(f'See {tracker} 3.\n')
    assert find_process_words([planted, clean, notes]) == [
        f'{planted}:2: # as {tracker} 12 asks']
