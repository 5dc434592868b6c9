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

"""What a gate file is read for: plain metadata, bounded memory, its own digest, clear reasons."""

import hashlib
import io
import json
import os
import struct
import zipfile

import pytest
from sparse_perception import settings as st
from sparse_perception.gates.learned import (CELLS, describe, GateFileError, LearnedGate, load,
                                             network, save, VERSION)
import torch

META = {'version': VERSION, 'tile': 16, 'cells': CELLS}


def _gate(path, meta=None, **more):
    return save(network().state_dict(), {**META, **(meta or {}), **more}, path)


def test_metadata_a_report_cannot_hold_is_refused_naming_its_key(tmp_path):
    deep = 0
    for _ in range(40):
        deep = [deep]
    for meta, said in (({'seed': torch.tensor(0)}, "metadata 'seed' is of type Tensor"),
                       ({'note': b'\x00\x01'}, "metadata 'note' is of type bytes"),
                       ({'note': {'a': [1, torch.zeros(1)]}},
                        "metadata 'note' holds a value of type Tensor"),
                       ({'note': {5: 'five'}}, "metadata 'note' holds a key of type int"),
                       ({7: 'seven'}, 'metadata holds a key of type int'),
                       ({'note': deep}, "metadata 'note' is nested deeper than 16 levels")):
        _gate(tmp_path / 'odd.pt', meta)
        with pytest.raises(GateFileError, match=f'not a gate file: its {said}; a gate file'):
            load(tmp_path / 'odd.pt', 16)
    plain = {'note': {'a': [1, 2.5, None, True, 'x']}, 'seed': 3}
    _, meta = load(_gate(tmp_path / 'plain.pt', plain), 16)
    assert json.loads(json.dumps(meta)) == dict(META, **plain)


def test_a_report_names_the_gate_read_not_the_file_there_later(tmp_path):
    path = _gate(tmp_path / 'gate.pt', seed=1)
    read = hashlib.sha256(path.read_bytes()).hexdigest()
    settings = st.replace(st.PerceptionSettings(), {'sparsity.gate': 'learned',
                                                    'sparsity.gate_model': str(path)})
    gate = LearnedGate(path, 16)  # as a run's pipeline takes it
    _gate(path, seed=2)  # trained again in place while the run goes on
    got = describe(settings)
    assert got['sha256'] == read and got['meta']['seed'] == 1
    path.unlink()
    assert describe(settings)['sha256'] == read
    assert gate.sha256 == read


def _zip_records(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info.filename)) for info in archive.infolist()]


def test_a_zip_that_unpacks_to_more_than_a_gate_is_refused_before_torch_reads_it(tmp_path):
    data = _gate(tmp_path / 'gate.pt').read_bytes()
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, 'w', zipfile.ZIP_DEFLATED) as archive:
        for info, content in _zip_records(data):
            archive.writestr(info.filename, content)
    (tmp_path / 'packed.pt').write_bytes(packed.getvalue())
    with pytest.raises(GateFileError, match="record 'archive/data.pkl' is compressed, which torch "
                       'never writes'):
        load(tmp_path / 'packed.pt', 16)
    # A record whose size in the archive's directory is far more than the file holds.
    at = data.index(b'PK\x01\x02') + 24  # its first record's size, unpacked
    lying = data[:at] + struct.pack('<I', 2 ** 31) + data[at + 4:]
    (tmp_path / 'lying.pt').write_bytes(lying)
    with pytest.raises(GateFileError, match='its records unpack to 2147'):
        load(tmp_path / 'lying.pt', 16)


def _flip_a_weight_byte(data):
    """Return a torch zip file's bytes with one byte of its largest record flipped."""
    info = max((info for info, _ in _zip_records(data)), key=lambda info: info.file_size)
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 5
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:], info.filename


def test_a_gate_with_a_changed_byte_is_refused_not_run(tmp_path):
    # torch.load reads a record without its checksum: the gate would load, a little off.
    flipped, record = _flip_a_weight_byte(_gate(tmp_path / 'gate.pt').read_bytes())
    (tmp_path / 'flipped.pt').write_bytes(flipped)
    with pytest.raises(GateFileError, match=f"is a damaged gate file: its record '{record}' "
                       'does not match its checksum'):
        load(tmp_path / 'flipped.pt', 16)


def test_what_is_not_a_torch_file_or_not_a_regular_file_is_named_so(tmp_path):
    (tmp_path / 'noise.pt').write_bytes(bytes(range(1, 256)) * 20)
    (tmp_path / 'text.pt').write_text('sparsity:\n  gate: learned\n')
    for name in ('noise.pt', 'text.pt'):
        with pytest.raises(GateFileError, match='is not a gate file: it is not a torch file'):
            load(tmp_path / name, 16)
    os.mkfifo(tmp_path / 'pipe')
    for path in (tmp_path / 'pipe', '/dev/null'):
        with pytest.raises(GateFileError, match='is not a regular file'):
            load(path, 16)


def test_weights_that_are_not_floating_point_are_refused(tmp_path):
    state = network().state_dict()
    for dtype in (torch.int64, torch.complex64, torch.bool):
        save({k: v.to(dtype) for k, v in state.items()}, META, tmp_path / 'odd.pt')
        name = str(dtype).removeprefix('torch.')
        with pytest.raises(GateFileError, match=f"weights 'image.0.weight' are {name}, not "
                           'floating point'):
            load(tmp_path / 'odd.pt', 16)
    save({k: v.half() for k, v in state.items()}, META, tmp_path / 'half.pt')
    load(tmp_path / 'half.pt', 16)  # floating point all the same


def test_a_bad_gate_file_is_blamed_on_the_setting_not_the_model(tmp_path):
    from types import SimpleNamespace

    from sparse_perception.pipeline import _gates, ModelLoadError

    settings = st.replace(st.PerceptionSettings(), {
        'sparsity.gate': 'learned', 'sparsity.gate_model': str(tmp_path / 'none.pt')})
    model = SimpleNamespace(fully_convolutional=False, decoder='class_map',
                            labels=('background', 'person'))
    with pytest.raises(ModelLoadError) as caught:
        _gates('segmentation', model, settings, "segmentation model 'x'")
    assert str(caught.value).startswith('sparsity.gate_model: gate file ')
