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
The command line against hostile input: one line on stderr and exit 1, never a lost input.

Covers make-bag and replay outputs that overlap their inputs, outputs that cannot be written,
stamps beyond what a ROS message holds, damaged frames in a bag, and stale outputs of an
earlier run in a reused --out.
"""

import json
import os
from pathlib import Path
import re

import cv2
from limits import run_cli_limited
import numpy as np
from pipeline_double import PipelineDouble
import pytest
from replay_helpers import (
    COMPRESSED, compressed_message, frame_picture, IMAGE, image_message, TYPESTORE, write_bag)
from sparse_perception import cli

# Replays in this module build the pipeline double.
pytestmark = [pytest.mark.bag, pytest.mark.usefixtures('replay_double')]


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f'sparse-perception {command}: error: ') and err.count('\n') == 1, err
    return err


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / 'frames'
    path.mkdir()
    for index in range(4):
        cv2.imwrite(str(path / f'{index:03d}.png'), frame_picture(index)[..., ::-1])
    return path


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


# ---------------------------------------------------------------------------------------------
# make-bag
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('output, relation', [
    ('{input}', 'is the input'),
    ('{parent}', 'contains the input'),
    ('{input}/bag', 'lies inside the input'),
])
def test_make_bag_never_overwrites_its_input(folder, tmp_path, capsys, output, relation):
    before = _snapshot(tmp_path)
    out = output.format(input=folder, parent=tmp_path)
    assert cli.main(['make-bag', str(folder), out, '--rate', '10', '--overwrite']) == 1
    assert relation in _one_line_error(capsys, 'make-bag')
    assert _snapshot(tmp_path) == before


def test_make_bag_never_overwrites_its_video(tmp_path, capsys):
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 48))
    for index in range(3):
        writer.write(np.ascontiguousarray(frame_picture(index)[..., ::-1]))
    writer.release()
    data = video.read_bytes()
    link = tmp_path / 'link.avi'
    link.symlink_to(video)
    for out in (video, link):
        assert cli.main(['make-bag', str(video), str(out), '--overwrite']) == 1
        assert 'is the input' in _one_line_error(capsys, 'make-bag')
    assert video.read_bytes() == data


def test_make_bag_overwrites_an_earlier_bag_only(folder, tmp_path, capsys, monkeypatch):
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'keep.txt').write_text('mine')
    link = tmp_path / 'link'
    link.symlink_to(notes)
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    for out, message in ((notes, 'not a rosbag2 (no metadata.yaml)'),
                         (link, 'is a symbolic link'), ('.', 'the working folder')):
        assert cli.main(['make-bag', str(folder), str(out), '--rate', '10', '--overwrite']) == 1
        assert message in _one_line_error(capsys, 'make-bag')
    assert (notes / 'keep.txt').read_text() == 'mine' and work.is_dir()


@pytest.mark.parametrize('start, message', [
    ('3e9', r'--start-time 3e\+09 is out of range; expected 0 to 2147483647 seconds'),
    ('1e300', 'out of range'),
    ('inf', 'out of range'),
    ('nan', 'out of range'),
    ('-1', 'out of range'),
])
def test_make_bag_start_time_beyond_a_ros_stamp(folder, tmp_path, capsys, start, message):
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10',
                     '--start-time', start]) == 1
    assert re.search(message, _one_line_error(capsys, 'make-bag'))
    assert not out.exists()


def test_make_bag_last_stamps_beyond_2038(folder, tmp_path, capsys):
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '1',
                     '--start-time', '2147483646']) == 1
    assert 'outside what a ROS stamp holds' in _one_line_error(capsys, 'make-bag')
    assert not out.exists() and not list(tmp_path.glob('.*partial*'))


def test_make_bag_output_under_a_file(folder, tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    assert cli.main(['make-bag', str(folder), str(blocker / 'bag'), '--rate', '10']) == 1
    assert f'bag lies under the file {blocker}; expected a folder' in \
        _one_line_error(capsys, 'make-bag')


def test_make_bag_output_that_is_a_dangling_link(folder, tmp_path, capsys):
    link = tmp_path / 'bag'
    link.symlink_to(tmp_path / 'gone')
    assert cli.main(['make-bag', str(folder), str(link), '--rate', '10']) == 1
    assert f'{link} exists already' in _one_line_error(capsys, 'make-bag')
    assert link.is_symlink() and not list(tmp_path.glob('.*partial*'))


def test_make_bag_names_the_output_when_its_folder_cannot_be_written(folder, tmp_path, capsys,
                                                                     monkeypatch):
    from sparse_perception.replay import makebag

    def refused(prefix, **where):  # as in a folder that refuses new entries
        raise PermissionError(13, 'Permission denied', f'{where["dir"]}/{prefix}x1y2z3')
    monkeypatch.setattr(makebag.tempfile, 'mkdtemp', refused)
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10']) == 1
    assert _one_line_error(capsys, 'make-bag') == (
        f'sparse-perception make-bag: error: cannot write the bag {out} into {tmp_path}: '
        'Permission denied\n')


def _limited_error(run, command):
    assert run.returncode == 1 and run.stdout == '', run.stderr
    assert run.stderr.startswith(f'sparse-perception {command}: error: '), run.stderr
    assert run.stderr.count('\n') == 1, run.stderr  # nothing else on stderr: no native noise
    return run.stderr


def test_make_bag_on_a_full_disk(folder, tmp_path):
    # Files cannot grow past 2 KB: the storage file fails midway, as on a disk that fills up.
    out = tmp_path / 'bag'
    err = _limited_error(run_cli_limited(['make-bag', folder, out, '--rate', '10'], 2000),
                         'make-bag')
    assert f'cannot write {out}: File too large; nothing was written' in err
    assert not out.exists() and not list(tmp_path.glob('.*partial*'))


# ---------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------

def _replay(out, *args):
    return cli.main(['replay', '--quiet', *map(str, args), '--out', str(out)])


@pytest.fixture
def bag(tmp_path):
    return write_bag(tmp_path / 'input', {
        '/camera/image_raw/compressed': (COMPRESSED, [compressed_message(i)
                                                      for i in range(6)])})


@pytest.mark.parametrize('where, relation', [
    ('{bag}', 'is the input'),
    ('{bag}/out', 'lies inside the input'),
    ('{parent}', 'contains the input'),
])
def test_replay_out_apart_from_its_inputs(bag, tmp_path, capsys, where, relation):
    before = _snapshot(tmp_path)
    assert _replay(where.format(bag=bag, parent=tmp_path), bag) == 1
    assert relation in _one_line_error(capsys, 'replay')
    assert _snapshot(tmp_path) == before


def test_replay_out_apart_from_the_ground_truth(bag, tmp_path, capsys):
    masks = tmp_path / 'masks'
    masks.mkdir()
    cv2.imwrite(str(masks / '00000.png'), np.zeros((48, 64), np.uint8))
    assert _replay(masks / 'run', bag, '--gt', masks) == 1
    assert 'lies inside the input' in _one_line_error(capsys, 'replay')


def test_replay_out_under_a_file_or_unwritable(bag, tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    assert _replay(blocker / 'run', bag) == 1
    assert f'lies under the file {blocker}' in _one_line_error(capsys, 'replay')
    # /proc takes no new folders, not even from root, whom permission bits do not stop: the
    # replay tries to write there before any work (others are stopped by the permissions).
    if Path('/proc/self').is_dir():
        assert _replay(Path('/proc/sparse_perception_run/out'), bag) == 1
        said = ('cannot write there (/proc/sparse_perception_run: No such file or directory)'
                if os.geteuid() == 0 else '/proc is not writable')
        assert said in _one_line_error(capsys, 'replay')
    if os.geteuid() == 0:
        return  # root writes into a folder without write permission
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _replay(locked / 'run', bag) == 1
        assert 'is not writable' in _one_line_error(capsys, 'replay')
    finally:
        locked.chmod(0o700)


@pytest.mark.slow
def test_replay_out_on_a_full_disk(bag, tmp_path):
    # The output bag, the contact sheet or a plot fails midway (files cannot grow past 8 KB).
    out = tmp_path / 'out'
    err = _limited_error(run_cli_limited(['replay', bag, '--quiet', '--out', out], 8000,
                                         double=True), 'replay')
    assert f'cannot write into {out}: File too large; no report written' in err
    assert not (out / 'report.json').exists() and not list(out.glob('.partial-*'))


@pytest.mark.slow
def test_annotated_video_cut_short_by_a_full_disk_is_an_error(tmp_path):
    # OpenCV's video writer reports failed writes only as warnings and leaves a file without
    # its index: the replay must notice, not report success beside an unplayable video.
    video = tmp_path / 'noise.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(20):
        writer.write(rng.integers(0, 256, (120, 160, 3), np.uint8))  # incompressible
    writer.release()
    out = tmp_path / 'out'
    args = ['replay', video, '--quiet', '--no-bag', '--contact-sheet', '0', '--video', '--out',
            out]
    # 100 KB: room for the plots and tables, not for the video.
    err = _limited_error(run_cli_limited(args, 100_000, double=True), 'replay')
    assert 'the annotated video annotated.mp4 was not written completely (no moov box)' in err
    assert not (out / 'report.json').exists() and not list(out.glob('.partial-*'))


def test_whole_mp4_files_pass_the_completeness_check(tmp_path):
    from sparse_perception.replay.pictures import mp4_problem
    path = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (64, 48))
    for index in range(5):
        writer.write(np.ascontiguousarray(frame_picture(index)[..., ::-1]))
    writer.release()
    assert mp4_problem(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 10])
    assert 'is cut short' in mp4_problem(path)


def test_reused_out_keeps_no_outputs_of_an_earlier_run(bag, tmp_path):
    out = tmp_path / 'out'
    assert _replay(out, bag, '--video') == 0
    assert (out / 'output_bag').is_dir() and (out / 'annotated.mp4').exists()
    assert (out / 'contact_sheet.png').exists()
    (out / 'mine.txt').write_text('not an output')
    assert _replay(out, bag, '--no-bag', '--contact-sheet', '0') == 0
    names = {p.name for p in out.iterdir()}
    assert not names & {'output_bag', 'annotated.mp4', 'contact_sheet.png'}
    assert 'mine.txt' in names and 'report.json' in names
    report = json.loads((out / 'report.json').read_text())
    assert set(report['outputs']) <= {'frames_csv', 'latency_plot', 'activity_plot',
                                      'plots_missing'}


def test_damaged_frames_of_a_bag_are_counted_not_fatal(tmp_path, capsys):
    store = TYPESTORE
    messages = [compressed_message(i, fmt='jpeg') for i in range(5)]
    jpeg = bytes(messages[1].data)
    damaged = jpeg[:len(jpeg) // 2] + b'\xff\xd9'  # decodes, to wrong pixels
    messages[1] = store.types[COMPRESSED](header=messages[1].header, format='jpeg',
                                          data=np.frombuffer(damaged, np.uint8))
    big = cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    sof = big.index(b'\xff\xc0')
    big = big[:sof + 5] + (65000).to_bytes(2, 'big') * 2 + big[sof + 9:]
    messages[3] = store.types[COMPRESSED](header=messages[3].header, format='jpeg',
                                          data=np.frombuffer(big, np.uint8))
    bag = write_bag(tmp_path / 'input', {'/camera/image_raw/compressed': (COMPRESSED, messages)})
    out = tmp_path / 'out'
    assert _replay(out, bag, '--no-bag') == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['frames'] == 3 and report['skipped_frames'] == 2
    reasons = {s['index']: s['reason'] for s in report['skipped']}
    assert 'Corrupt JPEG data' in reasons[1]
    assert '65000x65000' in reasons[3] and 'refused before decoding' in reasons[3]
    assert '(2 skipped as corrupt)' in capsys.readouterr().out


def test_bag_metadata_that_is_not_utf8(bag, tmp_path, capsys):
    metadata = Path(bag) / 'metadata.yaml'
    metadata.write_bytes(metadata.read_bytes() + b'# \xff\xfe\n')
    assert _replay(tmp_path / 'out', bag) == 1
    assert 'metadata.yaml is not rosbag2 metadata' in _one_line_error(capsys, 'replay')


# Ctrl-C, a service stop, a closed terminal
@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM', 'SIGHUP'])
def test_make_bag_interrupted_leaves_nothing(folder, tmp_path, capsys, monkeypatch,
                                             signal_name):
    import signal

    from sparse_perception.replay import makebag
    calls = []
    header = makebag.ros_header

    def interrupted_midway(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), getattr(signal, signal_name))
        return header(*args)
    monkeypatch.setattr(makebag, 'ros_header', interrupted_midway)
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10']) == 130
    assert 'make-bag: interrupted; nothing was written' in capsys.readouterr().err
    assert len(calls) == 2  # it stopped there
    assert not out.exists() and not list(tmp_path.glob('.*partial*'))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM', 'SIGHUP'])
def test_replay_interrupted_keeps_the_earlier_report(bag, tmp_path, capsys, monkeypatch,
                                                     signal_name):
    import signal

    out = tmp_path / 'out'
    assert _replay(out, bag) == 0
    earlier = (out / 'report.json').read_bytes()
    calls = []
    process = PipelineDouble.process

    def interrupted_midway(self, image):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), getattr(signal, signal_name))
        return process(self, image)
    monkeypatch.setattr(PipelineDouble, 'process', interrupted_midway)
    capsys.readouterr()
    assert _replay(out, bag) == 130
    assert 'replay: interrupted; no report written' in capsys.readouterr().err
    assert len(calls) == 3
    assert (out / 'report.json').read_bytes() == earlier and not list(out.glob('.partial-*'))


def test_make_bag_that_writes_nothing_leaves_no_folder_it_made(folder, tmp_path, capsys):
    for path in folder.iterdir():
        path.write_bytes(b'\x89PNG\r\n\x1a\n')  # every frame corrupt
    out = tmp_path / 'new' / 'sub' / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10']) == 1
    assert 'no frame could be read (4 corrupt)' in _one_line_error(capsys, 'make-bag')
    assert not (tmp_path / 'new').exists()


def _frames_in(bag):
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        return reader.message_count


def _interrupt_when_touched(monkeypatch, module, path, signal_name):
    """Send a signal to this process right after ``module`` moves or removes ``path``."""
    import shutil
    import signal

    sent = []

    def interrupting(touch):
        def touched(target, *args, **kwargs):
            result = touch(target, *args, **kwargs)
            if Path(target) == path and not sent:
                sent.append(signal_name)
                os.kill(os.getpid(), getattr(signal, signal_name))
            return result
        return touched
    monkeypatch.setattr(module.shutil, 'rmtree', interrupting(shutil.rmtree))
    monkeypatch.setattr(module.os, 'replace', interrupting(os.replace))
    return sent


@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM'])
def test_make_bag_interrupted_while_replacing_the_old_bag_keeps_a_whole_one(
        folder, tmp_path, capsys, monkeypatch, signal_name):
    from sparse_perception.replay import makebag

    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10', '--frames', '0:2']) == 0
    # The moment the old bag is moved or removed, the new one not yet in place.
    sent = _interrupt_when_touched(monkeypatch, makebag, out, signal_name)
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10', '--overwrite']) == 0
    assert sent and 'wrote 4 frames' in capsys.readouterr().out
    assert _frames_in(out) == 4 and not list(tmp_path.glob('.*partial*'))


@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM'])
def test_replay_interrupted_while_replacing_old_outputs_leaves_the_new_ones_whole(
        bag, tmp_path, capsys, monkeypatch, signal_name):
    from sparse_perception.replay import report

    out = tmp_path / 'out'
    assert _replay(out, bag, '--frames', '0:3') == 0
    sent = _interrupt_when_touched(monkeypatch, report, out / 'output_bag', signal_name)
    assert _replay(out, bag) == 0
    assert sent
    assert json.loads((out / 'report.json').read_text())['frames'] == 6
    assert 'frames processed | 6' in (out / 'report.md').read_text()
    assert _frames_in(out / 'output_bag') == 18  # the input, the mask, the keypoints
    assert not list(out.glob('.partial-*'))


def test_replay_interrupted_again_while_stopping_leaves_no_staging_folder(
        bag, tmp_path, capsys, monkeypatch):
    import signal

    closed = []
    close = PipelineDouble.close

    def interrupted(self, image):
        raise KeyboardInterrupt

    def interrupted_again(self):
        closed.append(1)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C pressed twice
        return close(self)
    monkeypatch.setattr(PipelineDouble, 'process', interrupted)
    monkeypatch.setattr(PipelineDouble, 'close', interrupted_again)
    out = tmp_path / 'out'
    assert _replay(out, bag) == 130
    assert closed and not list(out.glob('.partial-*'))
    assert 'interrupted' in capsys.readouterr().err


def test_staging_folders_of_killed_runs_are_named(folder, bag, tmp_path, capsys):
    (tmp_path / '.bag.partial-k1ll3d').mkdir()  # what a run killed outright leaves
    assert cli.main(['make-bag', str(folder), str(tmp_path / 'bag'), '--rate', '10']) == 0
    assert f'note: {tmp_path}/.bag.partial-k1ll3d is the staging folder of a run that was ' \
        'killed' in capsys.readouterr().out
    out = tmp_path / 'out'
    (out / '.partial-k1ll3d').mkdir(parents=True)
    assert _replay(out, bag) == 0
    assert f'note: {out}/.partial-k1ll3d is the staging folder of a run that was killed' in \
        capsys.readouterr().err


def test_a_gate_file_no_gate_reads_is_noted(bag, tmp_path, capsys):
    gate = tmp_path / 'gate.pt'
    assert _replay(tmp_path / 'out', bag, '--sparsity.gate_model', gate) == 0
    assert f'note: sparsity.gate_model {gate} is not read: only sparsity.gate learned uses ' \
        "it, and sparsity.gate is 'none'" in capsys.readouterr().err
    assert _replay(tmp_path / 'out', bag) == 0
    assert 'gate_model' not in capsys.readouterr().err


def test_a_full_disk_under_sqlite3_storage_is_one_line(folder, bag, tmp_path, capsys,
                                                       monkeypatch):
    import sqlite3

    from sparse_perception.replay import makebag

    def full(*args):  # what sqlite3 raises when a write does not fit
        raise sqlite3.OperationalError('database or disk is full')
    monkeypatch.setattr(makebag, 'ros_header', full)
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10',
                     '--storage', 'sqlite3']) == 1
    assert 'disk is full; nothing was written' in _one_line_error(capsys, 'make-bag')
    assert not out.exists() and not list(tmp_path.glob('.*partial*'))
    monkeypatch.setattr(PipelineDouble, 'process', full)
    assert _replay(tmp_path / 'out', bag, '--bag-storage', 'sqlite3') == 1
    assert 'disk is full; no report written' in _one_line_error(capsys, 'replay')


@pytest.mark.parametrize('namespace, clash', [('/sparse_perception', 'mask'),
                                              ('cam', 'keypoints')])
def test_replay_refuses_an_output_topic_that_is_the_input(tmp_path, capsys, namespace, clash):
    topic = f'/{namespace.strip("/")}/{clash}'
    bag = write_bag(tmp_path / 'input', {topic: (COMPRESSED, [compressed_message(0)])})
    out = tmp_path / 'out'
    assert _replay(out, bag, '--bag-namespace', namespace) == 1
    assert f'the input topic {topic} is where the output bag puts the {clash}' in \
        _one_line_error(capsys, 'replay')
    assert _replay(out, bag, '--bag-namespace', 'other') == 0


def test_replay_refuses_a_topic_of_two_message_types(tmp_path, capsys):
    topic = '/camera/image'
    bag = write_bag(tmp_path / 'input', {topic: (COMPRESSED, [compressed_message(0)])})
    merged = write_bag(tmp_path / 'merged', {topic: (IMAGE, [image_message(0)])})
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.LATEST)
    both = tmp_path / 'both'
    with Writer(both, version=8) as writer:
        for source in (bag, merged):
            with Reader(source) as reader:
                for connection, stamp, data in reader.messages():
                    added = writer.add_connection(topic, connection.msgtype, typestore=store)
                    writer.write(added, stamp, data)
    assert _replay(tmp_path / 'out', both) == 1
    assert 'carries both sensor_msgs/msg/CompressedImage and sensor_msgs/msg/Image' in \
        _one_line_error(capsys, 'replay')


def test_make_bag_stores_an_image_by_what_its_bytes_are_not_its_name(folder, tmp_path):
    from rosbags.rosbag2 import Reader

    (folder / '001.png').rename(folder / '001.jpg')  # PNG data under a JPEG name
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10']) == 0
    with Reader(out) as reader:
        stored = [bytes(data[-40:]) for _, _, data in reader.messages()]
    # Each message ends with its data: JPEG data ends with the end-of-image marker.
    assert len(stored) == 4 and stored[1].endswith(b'\xff\xd9')
    assert _replay(tmp_path / 'out', out) == 0
    assert json.loads((tmp_path / 'out' / 'report.json').read_text())['skipped_frames'] == 0


def test_replay_reports_a_file_name_that_is_not_utf8(folder, tmp_path):
    (Path(os.fsdecode(os.fsencode(folder) + b'/002\xff.png'))).write_bytes(b'junk')
    out = tmp_path / 'out'
    assert _replay(out, folder, '--rate', '10') == 0
    report = json.loads((out / 'report.json').read_text(encoding='utf-8'))
    assert report['skipped'][0]['reason'].startswith('002\\udcff.png: ')
    assert '002\\udcff.png' in (out / 'report.md').read_text(encoding='utf-8')


@pytest.mark.parametrize('topic', ['camera image', '/camera//image', '/camera/', '/1cam', ''])
def test_make_bag_refuses_invalid_topic_names(folder, tmp_path, capsys, topic):
    out = tmp_path / 'bag'
    assert cli.main(['make-bag', str(folder), str(out), '--rate', '10', '--topic', topic]) == 1
    assert 'is not a valid ROS topic name' in _one_line_error(capsys, 'make-bag')
    assert not out.exists()


def test_stamps_jumping_back_reset_the_temporal_state(tmp_path):
    import csv
    messages = [compressed_message(i) for i in (0, 1, 2, 0, 1)]  # a bag recorded in a loop
    bag = write_bag(tmp_path / 'input', {'/camera/image_raw/compressed': (COMPRESSED, messages)})
    out = tmp_path / 'out'
    assert _replay(out, bag, '--no-bag') == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['state_resets'] == 1
    with open(out / 'frames.csv') as stream:
        active = [float(row['active_fraction']) for row in csv.DictReader(stream)]
    assert active[0] == 1.0 and active[3] == 1.0 and active[4] < 1.0
