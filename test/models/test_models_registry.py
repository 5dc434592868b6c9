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

"""The registry, load_model by name and by path, checkpoints, and the models command."""

import dataclasses
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sparse_perception import cli
from sparse_perception.models import registry
from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
from sparse_perception.models.checkpoints import CheckpointError, load_checkpoint
from sparse_perception.models.checkpoints import save_checkpoint
from sparse_perception.models.fetch import fetch_mediapipe, FetchError
from sparse_perception.models.registry import load_model, ModelNotFound, REGISTRY
from support import require_shared
from tflite_writer import build, conv_segmentation, Op, T
import torch
from torch import fx


def test_registered_names_and_their_facts():
    assert {'deeplabv3_mnv2_pascal', 'deeplabv3_mnv2_dm05_pascal',
            'movenet_lightning'} <= set(REGISTRY)
    for entry in REGISTRY.values():
        assert entry.kind in registry.KINDS and entry.decoder in registry.DECODERS
        assert (entry.labels if entry.kind == 'segmentation' else entry.joints)


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv('SPARSE_PERCEPTION_SHARED', str(tmp_path / 'nowhere'))
    with pytest.raises(ModelNotFound) as info:
        load_model('movenet_lightning', models_dir=tmp_path)
    message = str(info.value)
    assert 'movenet_single_pose_lightning_ptq.tflite' in message
    assert str(tmp_path) in message and 'SPARSE_PERCEPTION_SHARED' in message
    with pytest.raises(ModelNotFound, match='neither a registered model'):
        load_model(tmp_path / 'absent.tflite')
    with pytest.raises(ValueError, match="device 'tpu'"):
        load_model('movenet_lightning', device='tpu')


def test_user_folder_is_searched_first(tmp_path):
    source = require_shared('models/coral/movenet_single_pose_lightning_ptq.tflite')
    shutil.copy(source, tmp_path / source.name)
    model = load_model('movenet_lightning', models_dir=tmp_path)
    assert model.source == tmp_path / source.name


def test_a_file_path_is_decoded_like_the_registered_model_of_that_name():
    path = require_shared('models/coral/movenet_single_pose_lightning_ptq.tflite')
    model = load_model(path)
    assert model.kind == 'pose' and model.decoder == 'single_pose'
    assert model.input_size == (192, 192) and model.resize == 'letterbox'
    assert model.joints == REGISTRY['movenet_lightning'].joints
    summary = model.describe()
    assert summary['tflite_ops']['CONV_2D'] == 50 and summary['trunk']['Conv2d'] == 50
    assert len(summary['trunk_outputs']) == 4


def _segmentation_tflite(tmp_path, channels):
    """Write a tiny float model: one 3x3 conv to ``channels`` maps at the input's size."""
    path = tmp_path / f'seg{channels}.tflite'
    path.write_bytes(conv_segmentation(channels))
    return path


def test_unregistered_tflite_is_decoded_from_its_outputs(tmp_path):
    scores = load_model(_segmentation_tflite(tmp_path, 4))
    assert scores.kind == 'segmentation' and scores.decoder == 'class_scores'
    frame = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mask = scores(frame)
    assert mask.shape == (30, 50) and mask.max() < 4
    assert scores.normalise == (1 / 255, 0.0)  # a float input: [0, 1]
    probability = load_model(_segmentation_tflite(tmp_path, 1))
    assert probability.decoder == 'probability'


def test_undecodable_tflite_is_refused(tmp_path):
    tensors = [T((1, 4, 4, 3)), T((1, 48)), T((2,), np.int32, data=np.array([1, 48], np.int32))]
    path = tmp_path / 'vector.tflite'
    path.write_bytes(build(tensors, [Op('RESHAPE', [0, 2], [1])], [0], [1]))
    with pytest.raises(ValueError, match=r'cannot tell how to decode.*\(1, 48\)'):
        load_model(path)


def _small_deeplab():
    torch.manual_seed(0)
    return DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25,
                                              aspp_channels=16)).eval()


_GOOD_META = {'kind': 'segmentation', 'decoder': 'class_map', 'labels': ['bg', 'a', 'b']}


@pytest.mark.parametrize('change, refused', [
    ({'labels': 5}, 'labels must be a list of names; got 5'),
    ({'normalise': 5}, 'normalise must be two finite numbers'),
    ({'normalise': [1.0]}, 'normalise must be two finite numbers'),
    ({'normalise': 'ab'}, 'normalise must be two finite numbers'),
    ({'skeleton': [1, 2]}, 'skeleton must be a list of pairs of joint indices'),
    ({'decoder': 'blazepose'}, "says decoder 'blazepose', which a segmentation checkpoint"),
    ({'decoder': 'single_pose'}, "says decoder 'single_pose', which a segmentation"),
    ({'kind': 'pose', 'decoder': 'class_map'}, "says decoder 'class_map', which a pose"),
    ({'resize': 'bogus'}, "resize must be one of resize, letterbox, none; got 'bogus'"),
    ({'input_size': 'abc'}, 'input_size must be two positive whole numbers (height, width); '
                            "got 'abc'"),
    ({'input_size': [-5, 0]}, 'input_size must be two positive whole numbers'),
    ({'name': 7}, 'name must be a non-empty text; got 7'),
])
def test_checkpoint_meta_is_checked_when_loaded(tmp_path, change, refused):
    path = save_checkpoint(_small_deeplab(), tmp_path / 'tiny.pt', meta={**_GOOD_META, **change})
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    assert str(raised.value).startswith(f'{path}: its meta {refused}')
    assert save_checkpoint(_small_deeplab(), tmp_path / 'good.pt', meta=_GOOD_META)
    assert load_model(tmp_path / 'good.pt').labels == ('bg', 'a', 'b')


def test_checkpoint_round_trip(tmp_path):
    model = _small_deeplab()
    meta = {'kind': 'segmentation', 'decoder': 'class_map', 'labels': ['bg', 'a', 'b'],
            'normalise': [1 / 128, -1.0], 'resize': 'none', 'name': 'tiny'}
    path = save_checkpoint(model, tmp_path / 'sub' / 'tiny.pt', meta=meta)
    assert path.is_file() and not list(path.parent.glob('*.part'))
    loaded = load_model(path)
    assert loaded.name == 'tiny' and loaded.fully_convolutional
    assert loaded.labels == ('bg', 'a', 'b')
    x = torch.rand(1, 3, 37, 53) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.trunk(x)[0], model.trunk(x)[0], rtol=0, atol=0)
    frame = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert loaded(frame).shape == (37, 53)
    fx.symbolic_trace(loaded.module.trunk)  # the engine can convert it


def test_bare_state_dict_needs_its_architecture(tmp_path):
    model = _small_deeplab()
    path = tmp_path / 'bare.pt'
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match='bare state_dict'):
        load_checkpoint(path)
    config = {'num_classes': 3, 'depth_multiplier': 0.25, 'aspp_channels': 16}
    again, meta = load_checkpoint(path, architecture='deeplabv3_mobilenetv2', config=config)
    assert meta == {} and torch.equal(again.trunk.logits[0].weight,
                                      model.trunk.logits[0].weight)
    with pytest.raises(CheckpointError, match=r'logits.0.weight has shape \(3, 16, 1, 1\).*'
                                              r'expects \(5, 16, 1, 1\)'):
        load_checkpoint(path, architecture='deeplabv3_mobilenetv2',
                        config=dict(config, num_classes=5))
    with pytest.raises(CheckpointError, match='unknown architecture'):
        load_checkpoint(path, architecture='resnet')


def test_checkpoints_never_unpickle_code(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save({'format': 'x', 'payload': _Opaque()}, path)
    with pytest.raises(CheckpointError, match='refused: it holds pickled objects') as info:
        load_checkpoint(path)
    # One line, and no advice to turn the safety off.
    assert '\n' not in str(info.value) and 'weights_only=False' not in str(info.value)
    with pytest.raises(CheckpointError, match='is not one of the package'):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / 'linear.pt')


class _Opaque:
    pass


@pytest.mark.parametrize('edit, message', [
    (lambda p: p.pop('architecture'), 'damaged checkpoint: its architecture, config'),
    (lambda p: p.update(state_dict=[1, 2]), 'damaged checkpoint'),
    (lambda p: p.update(meta='x'), 'damaged checkpoint'),
    (lambda p: p['config'].update(depth_multiplier='x'), 'bad config for architecture'),
    (lambda p: p['config'].update(num_classes=-3), 'num_classes must be >= 1'),
    (lambda p: p['config'].update(depth_multiplier=1e9), "cannot build 'deeplabv3_mobilenetv2' "
                                                         'from the config .*overflowed'),
    # Checked without allocating: this one cost 600 MB before the shapes were compared.
    (lambda p: p['config'].update(aspp_channels=10 ** 6),
     r'has shape \(16, 80, 1, 1\), the architecture expects \(1000000, 80, 1, 1\)'),
])
def test_checkpoint_with_damaged_fields_is_one_error(tmp_path, edit, message):
    # Edited fields of the pickle pass torch's reader: found here, never a KeyError.
    path = save_checkpoint(_small_deeplab(), tmp_path / 'tiny.pt')
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_model(path)
    assert str(path) in str(caught.value) and '\n' not in str(caught.value)


def test_the_same_model_saves_to_the_same_bytes(tmp_path):
    first = save_checkpoint(_small_deeplab(), tmp_path / 'a.pt').read_bytes()
    assert save_checkpoint(_small_deeplab(), tmp_path / 'b.pt').read_bytes() == first


def _fake_model(name):
    """Return stand-in bytes for a model file: the TFLite identifier, then its name."""
    return b'\0\0\0\0TFL3 fake ' + name.encode()


def _fake_wheel(path, *, complete=True):
    with zipfile.ZipFile(path, 'w') as archive:
        for name, member in registry.MEDIAPIPE_FILES.items():
            if complete or 'pose' not in name:
                archive.writestr(member, _fake_model(name))
        info = f'mediapipe-{registry.MEDIAPIPE_VERSION}.dist-info'
        archive.writestr(f'{info}/METADATA', 'Metadata-Version: 2.1\nName: mediapipe\n'
                         f'Version: {registry.MEDIAPIPE_VERSION}\n')
        archive.writestr(f'{info}/WHEEL', 'Wheel-Version: 1.0\nRoot-Is-Purelib: true\n'
                         'Tag: py3-none-any\n')
        archive.writestr(f'{info}/RECORD', '')
    return path


def test_fetch_extracts_the_files_from_a_wheel(tmp_path):
    wheel = _fake_wheel(tmp_path / 'mediapipe.whl')
    files = fetch_mediapipe(tmp_path / 'cache', wheel=str(wheel), log=lambda _: None)
    assert sorted(files) == sorted(registry.MEDIAPIPE_FILES)
    manifest = json.loads((tmp_path / 'cache' / 'manifest.json').read_text())
    assert manifest['files']['pose_detection.tflite']['bytes'] == len(
        _fake_model('pose_detection.tflite'))
    with pytest.raises(FetchError, match='lacks'):
        fetch_mediapipe(tmp_path / 'other', wheel=str(_fake_wheel(tmp_path / 'part.whl',
                                                                  complete=False)))


def test_fetch_replaces_nothing_it_cannot_write_and_leaves_no_vouched_mix(
        tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / 'mediapipe.whl')
    cache = tmp_path / 'cache'
    fetch_mediapipe(cache, wheel=str(wheel), log=lambda _: None)
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    (cache / 'selfie_segmentation.tflite').unlink()
    (cache / 'selfie_segmentation.tflite').mkdir()  # in the way of one of the files
    with pytest.raises(FetchError, match='selfie_segmentation.tflite is a folder'):
        fetch_mediapipe(cache, wheel=str(wheel), log=lambda _: None)
    after = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
    assert after == {name: data for name, data in before.items()
                     if name != 'selfie_segmentation.tflite'}  # the manifest too
    # Interrupted between two replacements: no temporary file is left behind, and no
    # manifest vouches for the mix of old and new files.
    (cache / 'selfie_segmentation.tflite').rmdir()
    replace = os.replace
    calls = []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        replace(src, dst)
    monkeypatch.setattr(os, 'replace', interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_mediapipe(cache, wheel=str(wheel), log=lambda _: None, force=True)
    assert not [p for p in cache.iterdir() if p.name.endswith('.part')]
    assert not (cache / 'manifest.json').exists()  # what is there fails verification
    with pytest.raises(FetchError, match='does not exist'):
        fetch_mediapipe(tmp_path / 'never', wheel=str(tmp_path / 'none.whl'))
    assert not (tmp_path / 'never').exists()


@pytest.mark.slow
def test_fetch_goes_through_pip_download(tmp_path):
    # pip download from a local package folder: the real command path, without a network.
    index = tmp_path / 'index'
    index.mkdir()
    _fake_wheel(index / f'mediapipe-{registry.MEDIAPIPE_VERSION}-py3-none-any.whl')
    files = fetch_mediapipe(tmp_path / 'cache', log=lambda _: None,
                            pip_args=['--no-index', '--find-links', str(index)])
    assert (tmp_path / 'cache' / 'selfie_segmentation.tflite').read_bytes() == \
        _fake_model('selfie_segmentation.tflite')
    assert len(files) == 4
    with pytest.raises(FetchError, match='could not download mediapipe==0.0.1'):
        fetch_mediapipe(tmp_path / 'cache', version='0.0.1', log=lambda _: None,
                        pip_args=['--no-index', '--find-links', str(index)])


@pytest.mark.slow
def test_fetch_skips_a_verified_cache_and_repairs_a_damaged_one(tmp_path):
    index, empty = tmp_path / 'index', tmp_path / 'empty'
    index.mkdir()
    empty.mkdir()
    _fake_wheel(index / f'mediapipe-{registry.MEDIAPIPE_VERSION}-py3-none-any.whl')
    cache = tmp_path / 'cache'
    fetch_mediapipe(cache, log=lambda _: None, pip_args=['--no-index', '--find-links', str(index)])
    lines = []
    # An index with nothing in it: only a cache hit can succeed.
    files = fetch_mediapipe(cache, log=lines.append,
                            pip_args=['--no-index', '--find-links', str(empty)])
    assert len(files) == 4 and 'already present' in lines[0]
    (cache / 'pose_detection.tflite').write_bytes(b'damaged')
    with pytest.raises(FetchError, match='could not download'):
        fetch_mediapipe(cache, log=lambda _: None,
                        pip_args=['--no-index', '--find-links', str(empty)])
    fetch_mediapipe(cache, log=lambda _: None, pip_args=['--no-index', '--find-links', str(index)])
    assert (cache / 'pose_detection.tflite').read_bytes() == _fake_model('pose_detection.tflite')


def test_models_command(tmp_path, capsys):
    assert cli.main(['models', 'list']) == 0
    listing = capsys.readouterr().out
    assert 'movenet_lightning' in listing and 'deeplabv3_mnv2_pascal_fcn' in listing
    require_shared('models/coral')
    assert cli.main(['models', 'info', 'deeplabv3_mnv2_pascal', '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['kind'] == 'segmentation' and info['input_size'] == [513, 513]
    assert info['labels'][15] == 'person' and info['tflite_ops']['ARG_MAX'] == 1
    assert cli.main(['models', 'info', str(tmp_path / 'nope.tflite')]) == 1
    assert 'neither a registered model' in capsys.readouterr().err
    for action in (['list'], ['info', 'movenet_lightning']):
        assert cli.main(['models', *action, '--models-dir', str(tmp_path / 'none')]) == 1
        assert f'--models-dir {tmp_path / "none"}: no such folder' in capsys.readouterr().err
    wheel = _fake_wheel(tmp_path / 'mp.whl')
    assert cli.main(['models', 'fetch', '--wheel', str(wheel), '--cache-dir',
                     str(tmp_path / 'c')]) == 0
    assert (tmp_path / 'c' / 'mediapipe' / 'pose_landmark_full.tflite').is_file()


def test_models_list_json_says_what_the_device_mode_runs(tmp_path, capsys, monkeypatch):
    require_shared('models/coral')
    movenet = registry.REGISTRY['movenet_lightning']
    missing = dataclasses.replace(movenet, name='absent', filename='absent.tflite')
    monkeypatch.setattr(registry, 'REGISTRY', {'movenet_lightning': movenet, 'absent': missing})
    assert cli.main(['models', 'list', '--json', '--models-dir', str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing == [
        {'name': 'movenet_lightning', 'kind': 'pose', 'available': True, 'device_mode': True,
         'device_reason': None},
        {'name': 'absent', 'kind': 'pose', 'available': False, 'device_mode': False,
         'device_reason': 'model file missing (absent.tflite); not checked'}]


def test_command_line_entry_point():
    result = subprocess.run([sys.executable, '-m', 'sparse_perception.cli', 'models', 'list'],
                            capture_output=True, text=True, check=True)
    assert 'movenet_lightning' in result.stdout


def test_importing_the_registry_and_command_stays_light():
    code = ('import sys, sparse_perception.models, sparse_perception.models.registry, '
            'sparse_perception.cli.models, sparse_perception.models.decoders; '
            "heavy = [m for m in ('torch', 'tflite', 'ai_edge_litert', 'cv2') "
            'if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _wheel_with(path, contents):
    """Write a mediapipe wheel whose model members hold ``contents`` (file name -> bytes)."""
    with zipfile.ZipFile(path, 'w') as archive:
        for name, member in registry.MEDIAPIPE_FILES.items():
            archive.writestr(member, contents.get(name, _fake_model(name)))
    return path


def test_fetched_models_are_verified_at_load(tmp_path):
    model = _segmentation_tflite(tmp_path, 1).read_bytes()
    wheel = _wheel_with(tmp_path / 'mp.whl', {'selfie_segmentation.tflite': model})
    target = tmp_path / 'cache' / 'mediapipe'
    fetch_mediapipe(target, wheel=str(wheel), log=lambda _: None)
    path = target / 'selfie_segmentation.tflite'
    assert load_model(path).decoder == 'probability'
    damaged = bytearray(model)
    damaged[-200] ^= 0x10  # one flipped bit in the weights: loads, computes something else
    path.write_bytes(bytes(damaged))
    with pytest.raises(registry.DamagedModelError,
                       match=rf'model file {path} is damaged: .*sha256 .*recorded {len(model)} '
                       rf'bytes .*`sparse-perception models fetch --force --cache-dir '
                       rf'{tmp_path / "cache"}`'):
        load_model(path)
    path.write_bytes(model[:len(model) // 2])
    with pytest.raises(registry.DamagedModelError, match='is damaged'):
        load_model(path)


def test_truncated_model_without_a_manifest_is_named(tmp_path):
    path = _segmentation_tflite(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=rf'{path}') as caught:
        load_model(path)
    assert '\n' not in str(caught.value)


def test_damaged_wheel_leaves_nothing_half_extracted(tmp_path):
    wheel = _wheel_with(tmp_path / 'mp.whl',
                        {'pose_detection.tflite': _fake_model('x') + bytes(5000)})
    data = bytearray(wheel.read_bytes())
    start = data.index(b'pose_detection.tflite') + 40
    data[start:start + 8] = b'\xde\xad\xbe\xef' * 2  # inside the stored member
    wheel.write_bytes(bytes(data))
    target = tmp_path / 'cache'
    with pytest.raises(FetchError, match='not an intact wheel'):
        fetch_mediapipe(target, wheel=str(wheel), log=lambda _: None)
    assert list(target.iterdir()) == []


def test_cache_that_is_a_file_is_one_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    wheel = _wheel_with(tmp_path / 'mp.whl', {})
    with pytest.raises(FetchError, match=rf'cannot use {blocker / "mediapipe"} as the model '
                       'cache: .*choose another folder with --cache-dir'):
        fetch_mediapipe(blocker / 'mediapipe', wheel=str(wheel), log=lambda _: None)


def test_unwritable_cache_is_one_line(tmp_path, capsys):
    wheel = _wheel_with(tmp_path / 'mp.whl', {})
    # /proc takes no new folders, not even from root (a chmod would not stop root).
    places = [Path('/proc/sparse_perception_cache')] if Path('/proc/self').is_dir() else []
    if os.geteuid() != 0:
        locked = tmp_path / 'locked'
        locked.mkdir(0o500)
        places.append(locked)
    if not places:
        pytest.skip('needs Linux /proc or a user that permission bits stop')
    for place in places:
        assert cli.main(['models', 'fetch', '--wheel', str(wheel), '--cache-dir',
                         str(place)]) == 1
        err = capsys.readouterr().err
        assert err.startswith('sparse-perception models fetch: error: cannot use '
                              f'{place / "mediapipe"} as the model cache: ') and \
            err.count('\n') == 1, err
        assert 'choose another folder with --cache-dir' in err


def test_full_disk_leaves_no_partial_files_and_no_manifest(tmp_path):
    from limits import run_cli_limited
    payload = _fake_model('x') + np.random.default_rng(0).integers(
        0, 256, 50_000, np.uint8).tobytes()
    wheel = _wheel_with(tmp_path / 'mp.whl', {'pose_detection.tflite': payload})
    cache = tmp_path / 'cache'
    # Files cannot grow past 20 KB: the model of 50 KB fails midway, as on a full disk.
    run = run_cli_limited(['models', 'fetch', '--wheel', wheel, '--cache-dir', cache], 20_000)
    assert run.returncode == 1 and run.stderr.count('\n') == 1, run.stderr
    assert run.stderr.startswith('sparse-perception models fetch: error: cannot write the '
                                 f'models into {cache / "mediapipe"}: File too large; no '
                                 'manifest was written')
    assert sorted(p.name for p in (cache / 'mediapipe').iterdir()) == []


@pytest.mark.parametrize('size, bound, want', [
    ((1080, 1920), 2_100_000, None),  # within the bound: the frame's own size
    ((2160, 3840), 2_100_000, (1086, 1932)),
    ((1, 5_000_000), 2_100_000, (1, 2_100_000)),  # a line of pixels stays within it too
    ((5_000, 3), 100, (100, 1)),
    ((480, 854), None, None)])
def test_a_fully_convolutional_input_stays_within_its_bound(size, bound, want):
    got = registry.fcn_input_size(size, bound)
    assert got == want
    if got is not None:
        assert got[0] * got[1] <= bound
        assert abs(got[0] / got[1] - size[0] / size[1]) < 0.01 or min(got) == 1  # aspect kept
