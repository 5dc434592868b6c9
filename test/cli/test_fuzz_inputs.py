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
The fuzz tier: damaged bags, videos, parameter files and model files through the command line.

Each test starts from small valid files built here and lets hypothesis damage them (truncate,
flip bits, overwrite bytes and length fields, cut and insert, drop files, edit YAML
structure); the command line runs in this process, through :func:`cli.main`, with stdout and
stderr captured. Whatever the damage, the outcome is one of:

- exit status 0 and a correct result: every frame replayed is exactly one of the frames
  written (PNG frames, whose CRCs catch any damage to their pixels), none lost silently;
- exit status 1 and the package's own error: one line on stderr, naming the command, and no
  report or partial folder left behind.

A traceback (any exception out of ``cli.main``) fails the test, and so does a peak resident
memory above ``MEMORY_BOUND`` while one example runs (with the size limit lowered to
``MAX_PIXELS``, so that a frame the limit lets through cannot hide a bomb). Select the tier
with ``-m fuzz``; it is deterministic (``derandomize``) and its example counts keep it to a
couple of minutes on 2 CPU cores. ``SPARSE_PERCEPTION_FUZZ_SCALE=10`` runs ten times as many
examples (other ones: the seed changes with the count).
"""

import contextlib
import io
import json
import os
from pathlib import Path
import shutil
import struct
import tempfile

import cv2
from hypothesis import event, example, given
from hypothesis import HealthCheck, Phase, settings, strategies as st
from limits import MIB, PeakMemory
import numpy as np
import pytest
from replay_helpers import (
    COMPRESSED, compressed_message, frame_picture, IMAGE, image_message, write_bag)
from sparse_perception import cli
from support import IN_CI
import yaml

pytestmark = [pytest.mark.bag, pytest.mark.fuzz, pytest.mark.slow]

FRAMES = 4
PICTURES = [frame_picture(i) for i in range(FRAMES)]
MAX_PIXELS = 1_000_000  # input.max_megapixels for the fuzz: 1 megapixel (3 MB as RGB)
# Replaying a damaged input may add this much to the peak resident memory: the frames the
# limit admits and the replay's own working set fit many times over; the bombs these inputs
# can become (a JPEG header claiming 65535x65535, a PNG chunk claiming 4 GB) do not.
MEMORY_BOUND = 192 * MIB


# No 'explain' phase: on a failure it re-runs examples for minutes to name the lines involved.
FUZZ_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)


def _fuzz_settings(examples):
    scale = float(os.environ.get('SPARSE_PERCEPTION_FUZZ_SCALE', '1'))
    return settings(max_examples=max(1, round(examples * scale)), deadline=None,
                    derandomize=True, database=None, phases=FUZZ_PHASES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture
def bounded(monkeypatch):
    """Lower the image size limit; yield a checker of one example's peak memory."""
    from sparse_perception.media import images
    monkeypatch.setattr(images, 'default_max_pixels', lambda: MAX_PIXELS)
    probe = PeakMemory()
    if not probe.supported:
        if IN_CI:
            pytest.fail('the peak memory cannot be measured here (needs Linux >= 4.0)')
        pytest.skip('the peak memory cannot be measured here (needs Linux >= 4.0)')
    return PeakMemory


class Blob(bytes):
    """File contents, shown by size and digest when hypothesis reports a failing example."""

    def __repr__(self):
        import hashlib
        return f'Blob({len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:16]})'


class Seeds(dict):
    """Seed files by name; shown by name only when hypothesis reports a failing example."""

    def __repr__(self):
        return f'Seeds({", ".join(self)})'


def run_cli(argv):
    """
    Run the command line in this process: (status, stdout, stderr); exceptions propagate.

    stderr holds what Python wrote and what native code (libpng, FFmpeg) wrote to file
    descriptor 2, in that order.
    """
    from pipeline_double import PipelineDouble

    from sparse_perception.replay import job

    out, err = io.StringIO(), io.StringIO()
    # Replays build the pipeline double (test/pipeline_double.py), which computes quickly.
    real, job.default_pipeline = job.default_pipeline, lambda: PipelineDouble
    with tempfile.TemporaryFile() as native:
        saved = os.dup(2)
        os.dup2(native.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main([str(a) for a in argv])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            job.default_pipeline = real
        native.seek(0)
        printed = native.read().decode('utf-8', 'replace')
    return status, out.getvalue(), err.getvalue() + printed


def assert_own_error(err, command):
    """Check for the package's own error: exactly one line on stderr, naming the command."""
    assert err.startswith(f'sparse-perception {command}: error: '), err
    assert err.count('\n') == 1 and err.endswith('\n'), err


def assert_nothing_left(out):
    assert not (out / 'report.json').exists(), 'a failed run left a report'
    assert not list(out.parent.rglob('.*partial*')), 'a failed run left a partial folder'


def assert_bounded(peak):
    assert peak.added_bytes < MEMORY_BOUND, (
        f'peak memory rose by {peak.added_bytes / MIB:.0f} MiB (bound '
        f'{MEMORY_BOUND / MIB:.0f} MiB)')


# ---------------------------------------------------------------------------------------------
# Byte-level damage, shared by every kind of file
# ---------------------------------------------------------------------------------------------

# Values a hostile file puts in its length and size fields.
HOSTILE_INTS = [0, 1, 0x7F, 0xFF, 0xFFFF, 65000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFF]


@st.composite
def damaged(draw, data, max_edits=4):
    """Draw ``data`` with 1 to ``max_edits`` edits, or truncated."""
    data = bytearray(data)
    if draw(st.integers(0, 7)) == 0:
        return Blob(data[:draw(st.integers(0, max(0, len(data) - 1)))])
    for _ in range(draw(st.integers(1, max_edits))):
        if not data:
            break
        # Mostly bit flips and bytes set, the damage that leaves a file readable in part.
        kind = draw(st.sampled_from(['flip'] * 4 + ['set'] * 2 + ['cut', 'insert', 'int32',
                                                                  'truncate']))
        at = draw(st.integers(0, len(data) - 1))
        if kind == 'flip':
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == 'set':
            data[at] = draw(st.integers(0, 255))
        elif kind == 'cut':
            del data[at:at + draw(st.integers(1, 256))]
        elif kind == 'insert':
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == 'int32' and at + 4 <= len(data):
            order = draw(st.sampled_from('<>'))
            data[at:at + 4] = struct.pack(order + 'I', draw(st.sampled_from(HOSTILE_INTS)))
        elif kind == 'truncate':
            del data[at:]
    return Blob(data)


# ---------------------------------------------------------------------------------------------
# Bags
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def seed_bags(tmp_path_factory):
    """Write valid bags of FRAMES frames: PNG in mcap and sqlite3, raw Image in mcap."""
    root = tmp_path_factory.mktemp('seed_bags')
    png = [compressed_message(i) for i in range(FRAMES)]
    raw = [image_message(i) for i in range(FRAMES)]
    bags = {
        'mcap png': write_bag(root / 'mcap_png', {'/camera/image_raw/compressed':
                                                  (COMPRESSED, png)}, 'mcap'),
        'sqlite3 png': write_bag(root / 'sqlite3_png', {'/camera/image_raw/compressed':
                                                        (COMPRESSED, png)}, 'sqlite3'),
        'mcap raw': write_bag(root / 'mcap_raw', {'/camera/image_raw': (IMAGE, raw)}, 'mcap'),
    }
    # Warm up: the first replay imports the pipeline, plots and writers; that is no example's
    # memory.
    status, _, err = run_cli(['replay', bags['mcap png'], '--quiet',
                              '--out', root / 'warm-up'])
    assert status == 0, err
    return Seeds(bags)


YAML_VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HOSTILE_INTS + [-1, 2 ** 64, 10 ** 30]),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(['mcap', 'sqlite3', 'cdr', '/camera/image_raw/compressed', '/etc/passwd',
                     '../../escape', 'sensor_msgs/msg/Image', 'std_msgs/msg/String', '']),
    st.lists(st.integers(-2, 2), max_size=3), st.dictionaries(st.text(max_size=4),
                                                              st.integers(), max_size=2))


def _paths(node, prefix=()):
    """Every path to a value inside a YAML document (dict keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


@st.composite
def edited_metadata(draw, text):
    """Draw the metadata with 1 to 3 values replaced or keys removed, as YAML text."""
    document = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(YAML_VALUES)
    return yaml.safe_dump(document, allow_unicode=True)


@st.composite
def bag_damage(draw):
    """(seed bag, what to damage, replay arguments)."""
    name = draw(st.sampled_from(['mcap png', 'sqlite3 png', 'mcap raw']))
    target = draw(st.sampled_from(['storage', 'storage', 'metadata bytes', 'metadata yaml',
                                   'drop']))
    extra = draw(st.sampled_from([[], ['--no-bag'], ['--no-bag', '--no-dense'],
                                  ['--frames', '1:'], ['--bag-storage', 'sqlite3']]))
    return name, target, extra


def _apply_bag_damage(draw, copy, target):
    storage = next(p for p in copy.iterdir() if p.suffix in ('.mcap', '.db3'))
    metadata = copy / 'metadata.yaml'
    if target == 'storage':
        storage.write_bytes(draw(damaged(storage.read_bytes())))
    elif target == 'metadata bytes':
        metadata.write_bytes(draw(damaged(metadata.read_bytes(), 2)))
    elif target == 'metadata yaml':
        metadata.write_text(draw(edited_metadata(metadata.read_text())))
    else:
        draw(st.sampled_from([storage, metadata])).unlink()


def _check_replayed_frames(bag, raw):
    """Check that a replay that succeeded read only frames that were written, none lost."""
    from sparse_perception.replay.sources import Frame, open_source, SkippedFrame
    with open_source(bag) as source:
        items = list(source)
    assert len(items) <= FRAMES
    for item in items:
        assert isinstance(item, (Frame, SkippedFrame))
        if isinstance(item, Frame) and not raw:
            # PNG frames: their CRCs catch damage, so an accepted frame is a written one.
            assert any(np.array_equal(item.image, p) for p in PICTURES), item.index
        elif isinstance(item, Frame):
            assert item.image.shape == PICTURES[0].shape  # raw pixels carry no checksum
    return items


@_fuzz_settings(90)
@given(data=st.data())
def test_damaged_bags(seed_bags, bounded, data):
    name, target, extra = data.draw(bag_damage())
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / 'bag'
        shutil.copytree(seed_bags[name], copy)
        _apply_bag_damage(data.draw, copy, target)
        out = Path(scratch) / 'out'
        with bounded() as peak:
            status, _, err = run_cli(['replay', copy, '--quiet',
                                      '--contact-sheet', '2', *extra, '--out', out])
        assert_bounded(peak)
        event(f'{name}, {target}: exit {status}')
        if status == 1:
            assert_own_error(err, 'replay')
            assert_nothing_left(out)
            return
        assert status == 0, err
        report = json.loads((out / 'report.json').read_text())
        items = _check_replayed_frames(copy, raw=name.endswith('raw'))
        wanted = items[1:] if extra == ['--frames', '1:'] else items
        assert report['frames'] + report['skipped_frames'] == len(wanted)
        if target in ('storage', 'drop'):  # the index is intact: nothing may go missing
            assert len(items) == FRAMES


# ---------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def seed_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp('seed_videos')
    videos = {}
    for name, fourcc in (('clip.avi', 'MJPG'), ('clip.mp4', 'mp4v')):
        path = root / name
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
        for index in range(8):
            writer.write(np.ascontiguousarray(frame_picture(index)[..., ::-1]))
        writer.release()
        assert path.stat().st_size > 0
        videos[name] = path.read_bytes()
    return Seeds(videos)


@_fuzz_settings(60)
@given(name=st.sampled_from(['clip.avi', 'clip.mp4']), command=st.sampled_from(
    ['replay', 'make-bag']), data=st.data())
def test_damaged_videos(seed_videos, bounded, name, command, data):
    with tempfile.TemporaryDirectory() as scratch:
        video = Path(scratch) / name
        video.write_bytes(data.draw(damaged(seed_videos[name])))
        out = Path(scratch) / 'out'
        argv = (['replay', video, '--quiet', '--no-bag',
                 '--contact-sheet', '2', '--out', out] if command == 'replay'
                else ['make-bag', video, out])
        with bounded() as peak:
            status, printed, err = run_cli(argv)
        assert_bounded(peak)
        event(f'{name} {command}: exit {status}')
        if status == 1:
            assert_own_error(err, command)
            if command == 'replay':
                assert_nothing_left(out)
            else:
                assert not out.exists() and not list(Path(scratch).glob('.*partial*'))
            return
        assert status == 0, err
        from sparse_perception.replay.sources import open_source, SkippedFrame
        with open_source(video) as source:
            length = source.length
            items = list(source)
        if length is not None:  # the frames the header promises are all accounted for
            assert len(items) >= length
        if command == 'replay':
            report = json.loads((out / 'report.json').read_text())
            assert report['frames'] + report['skipped_frames'] == len(items)
            lost = [i for i in items if isinstance(i, SkippedFrame)]
            assert report['skipped_frames'] == len(lost)
        else:
            assert f'({sum(isinstance(i, SkippedFrame) for i in items)} skipped' in printed


# ---------------------------------------------------------------------------------------------
# Node parameters files
# ---------------------------------------------------------------------------------------------

# Section keys: the first four apply to a node named perception_node in the root namespace
# (rclpy's rules, checked against rclpy itself in test/core/test_params_merge_rclpy.py).
APPLYING = ('/**', 'perception_node', '/perception_node', '/**/perception_node')
NODE_KEYS = [*APPLYING, '/*/perception_node', 'pose_node', '/**/pose_node',
             '/ns/perception_node', '']
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.sampled_from([10 ** 400, -10 ** 30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
        ['cpu', 'cuda', 'tpu', 'auto', '2.0', 'true', '', 'segmentation', 'pose']),
    st.lists(st.sampled_from(['segmentation', 'pose', 'x', 1, None]), max_size=3),
    st.dictionaries(st.sampled_from(['a', 'threshold', 1]), st.integers(), max_size=2))


def _valid_values(spec):
    """Values the setting accepts (so that merging is exercised, not only refusals)."""
    info = spec.info
    if spec.kind is bool:
        return st.booleans()
    if spec.kind is int:
        return st.integers(info.low, min(info.high, info.low + 1000))
    if spec.kind is float:
        return st.floats(info.low, info.high)
    if spec.kind is tuple:
        return st.lists(st.sampled_from(info.choices or ('conv1',)), max_size=2)
    return st.sampled_from(info.choices or (spec.default,))


def _parameters():
    """(name, strategy of its values): the replay's settings, node-only ones, mistakes."""
    from sparse_perception import settings as st_module
    named = [(s.name, _valid_values(s)) for s in st_module.specs(st_module.NodeSettings)]
    mistakes = ['change.threshhold', 'heads', 'change', 'threshold', 'nonsense.key',
                'use_sim_time', 'qos_overrides./x.depth']
    return named, [(name, HOSTILE_VALUES) for name in mistakes]


PARAMETERS, MISTAKES = _parameters()


@st.composite
def parameter_sections(draw):
    """Draw a ros__parameters section: mostly valid values, one in eight hostile or misnamed."""
    chosen = draw(st.lists(st.sampled_from(PARAMETERS), max_size=4, unique_by=lambda p: p[0]))
    values = {}
    for name, valid in chosen:
        hostile = draw(st.integers(0, 7)) == 0
        values[name] = draw(HOSTILE_VALUES if hostile else valid)
    if draw(st.integers(0, 7)) == 0:
        name, hostile = draw(st.sampled_from(MISTAKES))
        values[name] = draw(hostile)
    return {'ros__parameters': _nest(values)}


def _nest(flat):
    tree = {}
    for name, value in flat.items():
        *path, last = name.split('.')
        node = tree
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return tree


@st.composite
def parameter_files(draw):
    """Draw a parameters file: sections with wrong types and keys, or damaged YAML."""
    malformed = st.sampled_from(['fast', None, 3, [], {'ros__parameters': 'x'},
                                 {'ros__parameters': {1: 2.0}}, {'other': {}}])
    sections = draw(st.lists(st.tuples(
        st.one_of(st.sampled_from(APPLYING), st.sampled_from(NODE_KEYS + [1, None])),
        st.one_of(parameter_sections(), parameter_sections(), parameter_sections(),
                  parameter_sections(), parameter_sections(), malformed)),
        min_size=0, max_size=3))
    document = dict(sections)
    text = yaml.safe_dump(document, allow_unicode=True) if document else ''
    if draw(st.integers(0, 7)) == 0:
        return draw(damaged(text.encode(), 3))
    return text.encode()


@pytest.fixture(scope='module')
def one_frame_bag(tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp('one_frame') / 'bag', {
        '/camera/image_raw/compressed': (COMPRESSED, [compressed_message(0)])})


def _section(text):
    return f'/**:\n  ros__parameters:\n{text}'.encode()


@_fuzz_settings(250)
@given(text=parameter_files(), node=st.sampled_from([None, 'perception_node']))
# Values that once escaped as OverflowError, TypeError and ValueError, and an alias bomb.
@example(text=_section('    change:\n      threshold: ' + '9' * 400 + '\n'), node=None)
@example(text=_section('    sparsity:\n      layer_thresholds: 5\n'), node=None)
@example(text=_section('    change:\n      threshold: 2001-13-01\n'), node=None)
@example(text=b'a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n'
         b'/**:\n  ros__parameters:\n    sparsity:\n      layer_thresholds: [*b, *b, *b]\n',
         node='perception_node')
def test_fuzzed_parameter_files(one_frame_bag, bounded, monkeypatch, text, node):
    from sparse_perception import settings as st_module
    from sparse_perception.replay import plots

    def no_plots(*args):  # the settings never reach the plots; the other tests draw them
        raise plots.PlotsUnavailable('plots are not drawn in this test')
    monkeypatch.setattr(plots, 'latency_plot', no_plots)
    with tempfile.TemporaryDirectory() as scratch:
        params = Path(scratch) / 'params.yaml'
        params.write_bytes(text)
        try:
            for_node = st_module.from_params_yaml(params, node, st_module.NodeSettings)
            expected = st_module.from_params_yaml(params, node) if for_node.node.heads else None
        except st_module.SettingError as exc:
            assert '\n' not in str(exc) and str(params) in str(exc), str(exc)
            expected = None
        if expected is not None:
            import pipeline_double
            # A name no model has (`null` is a string to ROS 2, as to the node): the settings
            # are read, the model is not found.
            expected = None if any(pipeline_double.model_problem(head, getattr(
                expected.model, head), expected) for head in st_module.HEADS) else expected
        out = Path(scratch) / 'out'
        argv = ['replay', one_frame_bag, '--quiet', '--no-bag',
                '--no-dense', '--contact-sheet', '0', '--params', params, '--out', out]
        if node:
            argv += ['--params-node', node]
        with bounded() as peak:
            status, _, err = run_cli(argv)
        assert_bounded(peak)
        event(f'exit {status}')
        if expected is None:
            assert status == 1
            assert_own_error(err, 'replay')
            assert_nothing_left(out)
            return
        assert status == 0, err
        report = json.loads((out / 'report.json').read_text())
        flat = {k: list(v) if isinstance(v, tuple) else v
                for k, v in st_module.flatten(expected).items()}
        assert report['settings'] == flat
        _check_against_merge(text, node, flat)


def _check_against_merge(text, node, flat):
    """Check an accepted file: each setting is the last value an applying section gives it."""
    from sparse_perception import settings as st_module

    # (Read with the values typed as ROS 2 types them, as the replay reads the file.)
    document = yaml.load(text.decode('utf-8'), Loader=st_module._parameters_loader()) or {}
    merged = {}
    for key, section in document.items():  # file order
        if (key in APPLYING if node else len(document) == 1):
            merged.update(_flatten_parameters(section['ros__parameters']))
    for name, value in merged.items():
        if name in flat:
            assert flat[name] == value, name


def _flatten_parameters(tree, prefix=''):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten_parameters(value, f'{prefix}{key}.'))
        else:
            out[prefix + key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def seed_models(tmp_path_factory):
    """Build a TFLite segmentation model and a checkpoint of an own architecture."""
    import torch
    from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
    from sparse_perception.models.checkpoints import save_checkpoint
    from tflite_writer import build, Op, T

    root = tmp_path_factory.mktemp('seed_models')
    rng = np.random.default_rng(0)
    tensors = [T((1, 16, 20, 3)), T((1, 16, 20, 4)),
               T((4, 3, 3, 3), data=rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]
    tflite = build(tensors, [Op('CONV_2D', [0, 2, -1], [1], 'Conv2DOptions', Padding=0,
                                StrideW=1, StrideH=1, FusedActivationFunction=0,
                                DilationWFactor=1, DilationHFactor=1)], [0], [1])
    torch.manual_seed(0)
    net = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25,
                                             aspp_channels=16)).eval()
    meta = {'kind': 'segmentation', 'decoder': 'class_map', 'labels': ['bg', 'a', 'b'],
            'normalise': [1 / 128, -1.0], 'resize': 'none', 'name': 'tiny'}
    checkpoint = save_checkpoint(net, root / 'tiny.pt', meta=meta).read_bytes()
    return Seeds({'seg.tflite': tflite, 'tiny.pt': checkpoint})


def _fetched(folder, name, data):
    """Put ``data`` in ``folder`` with a manifest, as `models fetch` leaves a model."""
    import hashlib
    (folder / name).write_bytes(data)
    manifest = {'wheel': 'mediapipe-0.10.21-py3-none-any.whl', 'files': {
        name: {'member': f'mediapipe/{name}', 'sha256': hashlib.sha256(data).hexdigest(),
               'bytes': len(data)}}}
    (folder / 'manifest.json').write_text(json.dumps(manifest))


@st.composite
def model_damage(draw, seeds):
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    mode = draw(st.integers(0, 5))
    if mode == 0:  # the wrong magic: another format's first bytes
        magic = draw(st.sampled_from([b'PK\x03\x04', b'\x89PNG\r\n\x1a\n', b'\x00' * 8,
                                      b'TFL3TFL3', b'\x80\x02}q\x00']))
        return name, Blob(magic + data[len(magic):])
    if mode == 1:  # flipped bits in the weights (the last third): the file still parses
        edited = bytearray(data)
        for _ in range(draw(st.integers(1, 10))):
            edited[draw(st.integers(len(data) * 2 // 3, len(data) - 1))] ^= 1 << draw(
                st.integers(0, 7))
        return name, Blob(edited)
    return name, draw(damaged(data, 8))


@_fuzz_settings(80)
@given(data=st.data(), fetched=st.booleans())
def test_damaged_model_files(seed_models, bounded, data, fetched):
    import torch
    from sparse_perception.models.registry import load_model
    name, damaged_bytes = data.draw(model_damage(seed_models))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / 'mediapipe'
        folder.mkdir()
        path = folder / name
        if fetched:
            _fetched(folder, name, seed_models[name])
        path.write_bytes(damaged_bytes)
        with bounded() as peak:
            status, printed, err = run_cli(['models', 'info', path])
        assert_bounded(peak)
        event(f'{name}{" (fetched)" if fetched else ""}: exit {status}')
        if status == 1:
            assert_own_error(err, 'models info')
            assert name in err, err  # the error names the file
            if fetched:
                assert 'is damaged' in err and 'models fetch --force' in err, err
            return
        assert status == 0, err
        # Loaded. A fetched file is verified: only an intact one loads.
        assert not fetched or damaged_bytes == seed_models[name]
        model = load_model(path)
        frame = np.random.default_rng(1).integers(0, 256, (30, 50, 3), np.uint8)
        with torch.no_grad():
            mask = model(frame)
        assert mask.shape == (30, 50)
