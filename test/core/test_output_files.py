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

"""Output files of the command-line tools: checked first, written whole or not at all."""

import pytest
from sparse_perception.output_files import check_outputs, OutputError, write_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_atomic(tmp_path / 'r.json', '{"old": 1}')
    assert path.read_text() == '{"old": 1}'

    def failing(temp):
        with open(temp, 'w') as stream:
            stream.write('{"half')
        raise OSError(28, 'No space left on device')
    with pytest.raises(OSError, match='No space'):
        write_atomic(path, failing)
    assert path.read_text() == '{"old": 1}' and sorted(tmp_path.iterdir()) == [path]
    write_atomic(path, b'new')
    assert path.read_bytes() == b'new'


def test_outputs_are_checked_against_the_inputs_and_each_other(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'clip.avi').write_bytes(b'x')
    clip = data / 'clip.avi'
    check_outputs([('--json', tmp_path / 'a.json'), ('--markdown', None)], [data, clip])
    for outputs, message in (
            ([('--json', clip)], 'is the input'),
            ([('--json', data / 'new.json')], 'lies inside the input'),
            ([('--json', tmp_path)], 'contains the input'),
            ([('--json', tmp_path / 'a.json'), ('--markdown', tmp_path / 'a.json')],
             '--markdown .* is also where --json writes'),
            ([('--json', '')], 'expected a file name'),
            ([('--json', tmp_path / 'no' / 'a.json')], 'does not exist')):
        with pytest.raises(OutputError, match=message):
            check_outputs(outputs, [clip, data])
    check_outputs([('--json', tmp_path / 'made' / 'a.json')], [data], create_folders=True)
    assert (tmp_path / 'made').is_dir()


def test_a_report_pair_adds_its_suffixes():
    from pathlib import Path

    from sparse_perception.output_files import report_pair

    assert report_pair('runs/2026.12.04') == (Path('runs/2026.12.04.json'),
                                              Path('runs/2026.12.04.md'))
    assert report_pair('r.md') == report_pair('r.json') == (Path('r.json'), Path('r.md'))


def test_a_write_error_names_the_file_not_its_temporary(tmp_path):
    target = tmp_path / 'gone' / 'r.json'
    with pytest.raises(OSError) as raised:
        write_atomic(target, 'x')
    assert raised.value.filename == str(target)
    with pytest.raises(TypeError, match='must be str, bytes or a function'):
        write_atomic(tmp_path / 'r.json', bytearray(b'x'))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM', 'SIGHUP'])
def test_interrupts_held_are_reported_not_acted_on(signal_name):
    import os
    import signal

    from sparse_perception.output_files import interrupts_held

    signum = getattr(signal, signal_name)

    def stop(number, frame):
        raise KeyboardInterrupt

    before = signal.signal(signum, stop)
    try:
        done = []
        with interrupts_held() as caught:
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler runs between bytecodes, soon after the kill
                done.append(1)
        assert len(done) == 1000 and caught == [signum]
        assert signal.getsignal(signum) is stop  # put back after the block
        with pytest.raises(KeyboardInterrupt):  # and acted on again
            os.kill(os.getpid(), signum)
            for _ in range(1000):
                done.append(1)
    finally:
        signal.signal(signum, before)


def test_files_written_together_are_not_split_by_a_ctrl_c(tmp_path, monkeypatch):
    import os
    import signal

    from sparse_perception import output_files

    first, second = tmp_path / 'r.json', tmp_path / 'r.md'
    first.write_text('old'), second.write_text('old')
    replace = os.replace

    def interrupted(source, target):
        replace(source, target)
        if target == first:  # Ctrl-C between the two renames
            os.kill(os.getpid(), signal.SIGINT)

    def stop(number, frame):  # (not KeyboardInterrupt, which would stop the test run)
        raise RuntimeError('interrupted')

    monkeypatch.setattr(output_files.os, 'replace', interrupted)
    before = signal.signal(signal.SIGINT, stop)
    try:
        output_files.write_together([(first, 'new'), (second, 'new')])
    finally:
        signal.signal(signal.SIGINT, before)
    assert first.read_text() == second.read_text() == 'new'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['r.json', 'r.md']
