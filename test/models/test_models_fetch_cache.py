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

"""The model cache that ``models fetch`` fills: what it keeps, what it refuses, what it says."""

import json
import os
import zipfile

from limits import MIB, probe_memory
import numpy as np
import pytest
from sparse_perception import cli
from sparse_perception.models import fetch, registry
from sparse_perception.models.fetch import fetch_mediapipe, FetchError
from sparse_perception.models.registry import DamagedModelError, load_model
from tflite_writer import build, conv_segmentation, Op, T


def _wheel(path, contents=None):
    """Write a mediapipe wheel whose model members hold ``contents`` (file name -> bytes)."""
    model = conv_segmentation()
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, member in registry.MEDIAPIPE_FILES.items():
            archive.writestr(member, (contents or {}).get(name, model))
    return path


def _quiet(_):
    pass


@pytest.mark.parametrize('manifest', [
    '[]', 'null', '"text"', '{"wheel": "mediapipe-0.10.21-x.whl", "files": []}',
    '{"wheel": "mediapipe-0.10.21-x.whl", "files": {"selfie_segmentation.tflite": "abc"}}',
])
def test_a_malformed_manifest_is_not_trusted(tmp_path, monkeypatch, manifest):
    cache = tmp_path / 'mediapipe'
    fetch_mediapipe(cache, wheel=str(_wheel(tmp_path / 'mp.whl')), log=_quiet)
    (cache / registry.MANIFEST).write_text(manifest)
    # Not verified: the next plain fetch extracts again (here from the wheel pip would give).
    monkeypatch.setattr(fetch, '_download', lambda *args: tmp_path / 'mp.whl')
    lines = []
    assert len(fetch_mediapipe(cache, log=lines.append)) == 4
    assert not any('already present' in line for line in lines)
    assert json.loads((cache / registry.MANIFEST).read_text())['files']
    # Loading refuses what such a manifest cannot vouch for, naming the manifest.
    (cache / registry.MANIFEST).write_text(manifest)
    path = cache / 'selfie_segmentation.tflite'
    with pytest.raises(DamagedModelError,
                       match=rf'{path} is unverified: .*manifest.json') as caught:
        load_model(path)
    assert 'models fetch' in str(caught.value) and '\n' not in str(caught.value)


def test_an_empty_cache_dir_is_refused(tmp_path, monkeypatch, capsys):
    # An unset shell variable gives ''; it must not mean the default cache.
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / 'default'))
    wheel = _wheel(tmp_path / 'mp.whl')
    assert cli.main(['models', 'fetch', '--wheel', str(wheel), '--cache-dir', '']) == 1
    err = capsys.readouterr().err
    assert err == ('sparse-perception models fetch: error: --cache-dir is empty; give a folder, '
                   'or leave the flag out for the default cache\n')
    assert not (tmp_path / 'default').exists()


def _bomb_wheel(path, size):
    """Write a wheel whose selfie model member is ``size`` bytes (TFL3, then zeros)."""
    model = conv_segmentation()
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, member in registry.MEDIAPIPE_FILES.items():
            if name != 'selfie_segmentation.tflite':
                archive.writestr(member, model)
                continue
            with archive.open(member, 'w', force_zip64=True) as stream:
                stream.write(model[:8])
                zeros = bytes(MIB)
                for _ in range(size // MIB):
                    stream.write(zeros)
    return path


def test_a_member_far_larger_than_any_model_is_refused(tmp_path):
    wheel = _bomb_wheel(tmp_path / 'mediapipe-0.10.21-bomb-none-any.whl', 80 * MIB)
    assert wheel.stat().st_size < 2 * MIB  # compresses to almost nothing
    cache = tmp_path / 'cache'
    with pytest.raises(FetchError, match=r'selfie_segmentation.tflite holds 8388\d+ bytes, more '
                       r'than the 64 MiB limit for a model'):
        fetch_mediapipe(cache, wheel=str(wheel), log=_quiet)
    assert list(cache.iterdir()) == []


def test_a_member_that_is_not_tflite_is_refused(tmp_path):
    wheel = _wheel(tmp_path / 'mp.whl', {'pose_detection.tflite': bytes(5000)})
    cache = tmp_path / 'cache'
    with pytest.raises(FetchError, match=rf'{wheel}: .*pose_detection.tflite is not a TFLite '
                       r'flatbuffer \(no TFL3 identifier at byte 4\)'):
        fetch_mediapipe(cache, wheel=str(wheel), log=_quiet)
    assert list(cache.iterdir()) == []


def test_a_large_file_that_is_not_tflite_is_not_read_whole(tmp_path):
    big = tmp_path / 'big.tflite'
    with open(big, 'wb') as stream:  # sparse: takes no disk space
        stream.truncate(512 * MIB)
    probe = probe_memory('from sparse_perception.models.tflite.importer import load_tflite',
                         f'load_tflite({str(big)!r})')
    assert probe['added_bytes'] < 64 * MIB, probe
    assert probe.get('error') == 'TFLiteImportError', probe
    assert probe['message'] == f'{big} is not a TFLite flatbuffer (no TFL3 identifier at byte 4)'


def test_a_tiny_sparse_tensor_cannot_claim_a_huge_shape(tmp_path):
    # One stored value in a 24000 x 24000 tensor: a file of a few hundred bytes that would
    # make the reader allocate gigabytes.
    layout = {'traversal_order': [0, 1],
              'levels': [('csr', [0, 1], [0]), ('csr', [0, 1], [0])]}
    tensors = [T((1, 4, 4, 3)), T((1, 4, 4, 3)),
               T((24000, 24000), data=np.ones(1, np.float32), sparsity=layout, name='pruned')]
    path = tmp_path / 'sparse.tflite'
    path.write_bytes(build(tensors, [Op('RELU', [0], [1])], [0], [1]))
    assert path.stat().st_size < 2000
    probe = probe_memory('from sparse_perception.models.tflite.importer import load_tflite',
                         f'load_tflite({str(path)!r})')
    assert probe.get('error') == 'TFLiteImportError', probe
    assert probe['message'].startswith(f"{path}: sparse tensor 'pruned' of shape (24000, 24000) "
                                       'would expand 1 stored values to 576000000 elements')
    assert probe['added_bytes'] < 64 * MIB


def test_temporaries_of_a_killed_fetch_are_removed_by_the_next(tmp_path):
    wheel = _wheel(tmp_path / f'mediapipe-{registry.MEDIAPIPE_VERSION}-py3-none-any.whl')
    cache = tmp_path / 'cache'
    fetch_mediapipe(cache, wheel=str(wheel), log=_quiet)
    # What a fetch killed outright leaves (write_aside's names), and files that only look so.
    stale = ['.pose_detection.tflite.k2_9xq0a.part', '.manifest.json.abcdefgh.part',
             '.selfie_segmentation_landscape.tflite.0123abcd.part']
    kept = ['.notes.abcdefgh.part', '.pose_detection.tflite.part', 'mine.tflite.abcdefgh.part',
            '.pose_detection.tflite.toolongname.part']
    for name in stale + kept:
        (cache / name).write_bytes(b'x' * 100)
    fetch_mediapipe(cache, wheel=str(wheel), log=_quiet)
    assert sorted(p.name for p in cache.iterdir() if p.name.endswith('.part')) == sorted(kept)
    # A cache found complete is tidied too.
    (cache / stale[0]).write_bytes(b'x')
    lines = []
    fetch_mediapipe(cache, log=lines.append)
    assert 'already present' in lines[0] and not (cache / stale[0]).exists()


def _interrupted_fetch(cache, wheel, monkeypatch):
    """Run a fetch that is interrupted (Ctrl-C) after its first file was replaced."""
    replace, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        replace(src, dst)
    with monkeypatch.context() as patch:
        patch.setattr(os, 'replace', interrupted)
        with pytest.raises(KeyboardInterrupt):
            fetch_mediapipe(cache, wheel=str(wheel), log=_quiet, force=True)


def test_files_of_an_interrupted_fetch_are_not_served(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path / 'mp.whl')
    cache = tmp_path / 'models' / 'mediapipe'
    fetch_mediapipe(cache, wheel=str(wheel), log=_quiet)
    _interrupted_fetch(cache, wheel, monkeypatch)
    path = cache / 'selfie_segmentation.tflite'
    with pytest.raises(DamagedModelError, match=rf'model file {path} is unverified: a `models '
                       'fetch` into .* did not finish .*files may come from two versions; '
                       rf'fetch it again with `sparse-perception models fetch --force '
                       rf'--cache-dir {tmp_path / "models"}`'):
        load_model(path)
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / 'models'))
    with pytest.raises(DamagedModelError, match='did not finish'):
        load_model('selfie_segmentation')
    # The next fetch does the work again, and the files load.
    fetch_mediapipe(cache, wheel=str(wheel), log=_quiet)
    assert not (cache / registry.FETCH_MARKER).exists()
    assert load_model('selfie_segmentation').decoder == 'probability'
    # A folder of the user's own (no manifest, no marker) is served as it is.
    own = tmp_path / 'own'
    own.mkdir()
    (own / 'selfie_segmentation.tflite').write_bytes(conv_segmentation())
    assert load_model(own / 'selfie_segmentation.tflite').decoder == 'probability'


def test_models_list_shows_damaged_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / 'models'))
    cache = tmp_path / 'models' / 'mediapipe'
    fetch_mediapipe(cache, wheel=str(_wheel(tmp_path / 'mp.whl')), log=_quiet)
    damaged = cache / 'selfie_segmentation.tflite'
    damaged.write_bytes(b'')
    assert cli.main(['models', 'list']) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith('selfie_segmentation '))
    assert row.endswith(f'damaged ({damaged})')
    landscape = next(line for line in lines if line.startswith('selfie_segmentation_landscape'))
    assert landscape.endswith(str(cache / 'selfie_segmentation_landscape.tflite'))
    assert any(line.startswith(f'model file {damaged} is damaged: 0 bytes') for line in lines)
    entries = {'selfie_segmentation': registry.REGISTRY['selfie_segmentation'],
               'selfie_segmentation_landscape':
                   registry.REGISTRY['selfie_segmentation_landscape']}
    monkeypatch.setattr(registry, 'REGISTRY', entries)
    assert cli.main(['models', 'list', '--json']) == 0
    listing = {item['name']: item for item in json.loads(capsys.readouterr().out)}
    assert listing['selfie_segmentation']['available'] is False
    assert listing['selfie_segmentation']['device_reason'].startswith(
        f'model file {damaged} is damaged: 0 bytes')
    assert listing['selfie_segmentation_landscape']['available'] is True


def _versioned_wheel(path, version):
    """Write a wheel like _wheel's whose dist-info declares mediapipe ``version``."""
    _wheel(path)
    with zipfile.ZipFile(path, 'a') as archive:
        archive.writestr(f'mediapipe-{version}.dist-info/METADATA',
                         f'Metadata-Version: 2.1\nName: mediapipe\nVersion: {version}\n')
    return path


def test_the_version_is_the_wheels_not_its_file_name(tmp_path, monkeypatch):
    cache = tmp_path / 'mediapipe'
    renamed = _versioned_wheel(tmp_path / 'my-download.zip', registry.MEDIAPIPE_VERSION)
    assert len(fetch_mediapipe(cache, wheel=str(renamed), log=_quiet)) == 4

    def no_download(*args):
        raise AssertionError('the cache holds the files already')
    monkeypatch.setattr(fetch, '_download', no_download)
    lines = []
    assert len(fetch_mediapipe(cache, log=lines.append)) == 4
    assert any('already present' in line for line in lines)
    other = _versioned_wheel(tmp_path / 'mediapipe-0.10.20-py3-none-any.whl', '0.10.20')
    with pytest.raises(FetchError, match=f'holds mediapipe 0.10.20, not '
                       f'{registry.MEDIAPIPE_VERSION}: the model files differ'):
        fetch_mediapipe(tmp_path / 'other', wheel=str(other), log=_quiet)
    assert not (tmp_path / 'other' / 'selfie_segmentation.tflite').exists()
    assert len(fetch_mediapipe(tmp_path / 'asked', wheel=str(other), version='0.10.20',
                               log=_quiet)) == 4
