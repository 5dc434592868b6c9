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

"""What loading a wrong model file says: the file's path and what it really is, in one line."""

import numpy as np
import pytest
from sparse_perception import cli
from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
from sparse_perception.models.checkpoints import CheckpointError, load_checkpoint, \
    save_checkpoint
from sparse_perception.models.registry import DamagedModelError, load_model, ModelNotFound
from sparse_perception.models.tflite.importer import load_tflite
from sparse_perception.models.tflite.reader import TFLiteImportError
from tflite_writer import conv_segmentation
import torch


def _one_line(caught) -> str:
    text = str(caught.value)
    assert '\n' not in text, text
    return text


def test_random_bytes_are_not_called_unsafe(tmp_path):
    path = tmp_path / 'random.pt'
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    text = _one_line(caught)
    assert text.startswith(f'{path}: not a torch checkpoint (random or damaged bytes')
    assert 'could run code' not in text and 'weights_only' not in text


def test_an_unsafe_object_is_still_refused(tmp_path):
    import datetime

    path = tmp_path / 'object.pt'
    torch.save({'when': datetime.date(2026, 1, 1)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    text = _one_line(caught)
    assert 'refused: it holds pickled objects' in text and 'datetime.date' in text
    assert 'weights_only' not in text and 'add_safe_globals' not in text


class _System:
    """A pickled call of os.system: the loader must refuse it, and say why."""

    def __reduce__(self):
        import os

        return os.system, ('true',)


@pytest.mark.parametrize('form', ['zip', 'legacy', 'pickle'])
def test_a_pickle_that_calls_code_is_called_so_in_every_form(tmp_path, form):
    import pickle

    path = tmp_path / f'{form}.pt'
    if form == 'pickle':
        path.write_bytes(pickle.dumps(_System(), protocol=2))
    else:
        torch.save({'state_dict': _System()}, path, _use_new_zipfile_serialization=form == 'zip')
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    text = _one_line(caught)
    assert 'refused: it holds pickled objects' in text and 'system' in text
    assert 'weights_only' not in text and 'damaged' not in text


def _saved_deeplab(path, change=None):
    """Save a small DeepLab checkpoint, its state_dict first passed through ``change``."""
    save_checkpoint(DeepLabV3MobileNetV2(DeepLabConfig(depth_multiplier=0.5, num_classes=3)),
                    path)
    if change is not None:
        payload = torch.load(path, weights_only=True)
        payload['state_dict'] = change(payload['state_dict'])
        torch.save(payload, path)
    return path


def test_weights_that_would_load_and_answer_wrongly_are_refused(tmp_path):
    def nan(state):
        state = dict(state)
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = state[key].clone().fill_(float('nan'))
        return state

    def integers(state):
        return {k: v.long() for k, v in state.items()}

    with pytest.raises(CheckpointError, match='holds NaN or infinite values'):
        load_checkpoint(_saved_deeplab(tmp_path / 'nan.pt', nan))
    with pytest.raises(CheckpointError, match='holds torch.int64 values where the '
                       'architecture has torch.float32 weights'):
        load_checkpoint(_saved_deeplab(tmp_path / 'int.pt', integers))
    good = _saved_deeplab(tmp_path / 'good.pt')
    load_checkpoint(good)
    # One changed byte in the weights: torch.load does not look at the zip's checksums.
    import zipfile

    data = good.read_bytes()
    with zipfile.ZipFile(good) as archive:
        info = max(archive.infolist(), key=lambda info: info.file_size)
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 1001
    (tmp_path / 'flipped.pt').write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / 'flipped.pt')
    assert _one_line(caught) == (
        f"{tmp_path / 'flipped.pt'}: damaged checkpoint: its record {info.filename!r} does not "
        'match its checksum (changed or missing bytes); copy or save it again')


def test_an_empty_checkpoint_says_it_is_empty(tmp_path):
    path = tmp_path / 'empty.pt'
    path.write_bytes(b'')
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert _one_line(caught) == f'{path}: not a torch checkpoint: the file is empty (0 bytes)'


def test_torchs_advice_to_drop_the_safety_is_never_passed_on(tmp_path):
    path = tmp_path / 'zeros.pt'
    with open(path, 'wb') as stream:
        stream.truncate(1 << 20)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    text = _one_line(caught)
    assert text.startswith(f'{path}: not a readable torch checkpoint (random or damaged bytes')
    assert 'weights_only' not in text and 'arbitrary code' not in text


def test_an_empty_dict_is_not_called_a_dict_of_the_wrong_kind(tmp_path):
    path = tmp_path / 'empty_dict.pt'
    torch.save({}, path)
    with pytest.raises(CheckpointError, match=r'expected a sparse_perception.checkpoint file or '
                       r'a state_dict \(a dict of tensors\), got an empty dict$'):
        load_model(path)


def test_a_tflite_file_under_a_checkpoint_suffix_loads_as_tflite(tmp_path):
    path = tmp_path / 'model.pt'
    path.write_bytes(conv_segmentation())
    model = load_model(path)
    assert model.decoder == 'probability' and model.input_size == (16, 20)


def test_a_checkpoint_under_another_suffix_loads_as_a_checkpoint(tmp_path):
    from sparse_perception.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    net = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25,
                                             aspp_channels=16)).eval()
    path = save_checkpoint(net, tmp_path / 'tiny.pt', meta={'kind': 'segmentation',
                                                            'decoder': 'class_map'})
    renamed = path.rename(tmp_path / 'tiny.bin')
    assert load_model(renamed).decoder == 'class_map'


def test_a_folder_is_called_a_folder(tmp_path, capsys):
    folder = tmp_path / 'models'
    folder.mkdir()
    with pytest.raises(ModelNotFound) as caught:
        load_model(folder)
    assert _one_line(caught).startswith(f'{str(folder)!r} is a folder; expected a model file')
    assert cli.main(['models', 'fetch', '--wheel', str(folder), '--cache-dir',
                     str(tmp_path / 'cache')]) == 1
    assert capsys.readouterr().err == (
        f'sparse-perception models fetch: error: wheel {str(folder)!r} is a folder; expected a '
        'mediapipe wheel file\n')
    assert not (tmp_path / 'cache').exists()


@pytest.mark.parametrize('content, what', [
    (b'', 'it is empty: 0 bytes'), (b'x' * 300, '300 bytes, no TFL3 identifier at byte 4')])
def test_a_tflite_file_that_is_not_one_is_named_by_its_path(tmp_path, content, what):
    path = tmp_path / 'sub' / 'model.tflite'
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(DamagedModelError) as caught:
        load_model(path)
    assert _one_line(caught) == (f'model file {path} is not a TFLite flatbuffer ({what}); '
                                 'replace it with an intact copy')
    with pytest.raises(TFLiteImportError) as caught:
        load_tflite(path)
    assert _one_line(caught).startswith(f'{path} is not a TFLite flatbuffer (')
    assert 'expected a .tflite file' not in str(caught.value)


def test_an_intact_model_of_another_kind_is_not_called_damaged(tmp_path):
    # A one-output model saved under BlazePose's landmark file name (its detector beside it).
    path = tmp_path / 'pose_landmark_full.tflite'
    path.write_bytes(conv_segmentation())
    (tmp_path / 'pose_detection.tflite').write_bytes(conv_segmentation())
    with pytest.raises(ValueError) as caught:
        load_model(path)
    text = _one_line(caught)
    assert not isinstance(caught.value, DamagedModelError) and 'damaged' not in text
    assert text.startswith(f'{path}: outputs=[0, 1, 3] must name some of the model')


def test_a_file_named_like_a_registered_model_is_decoded_by_what_it_holds(tmp_path):
    # A one-map float model under the name of the 21-class DeepLab file: its outputs are no
    # class map, so it is decoded from them, not as DeepLab.
    path = tmp_path / 'deeplabv3_mnv2_pascal_quant.tflite'
    path.write_bytes(conv_segmentation())
    model = load_model(path)
    assert model.decoder == 'probability' and model.name == 'deeplabv3_mnv2_pascal_quant'
    assert model.labels == ()
    frame = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    assert model(frame).shape == (30, 50)


def test_another_model_found_under_a_registered_name_is_refused_naming_the_file(tmp_path):
    # By name, a model's file is looked for in model.models_dir: another model's file there
    # would run and be decoded as the named one (a 256-class mask of a one-map model).
    path = tmp_path / 'deeplabv3_mnv2_pascal_quant.tflite'
    path.write_bytes(conv_segmentation())
    for name in ('deeplabv3_mnv2_pascal', 'deeplabv3_mnv2_pascal_fcn'):
        with pytest.raises(DamagedModelError) as caught:
            load_model(name, models_dir=tmp_path)
        assert _one_line(caught).startswith(
            f"model file {path} does not hold '{name}': its outputs [(1, 16, 20, 1)] are not "
            'what its class_map decoder takes')
