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
PyTorch checkpoints of the package's own architectures (state_dict plus what rebuilds them).

A checkpoint is a ``torch.save``'d dict: ``format`` (:data:`CHECKPOINT_FORMAT`), ``version``,
``architecture`` (a name in :data:`~sparse_perception.models.architectures.ARCHITECTURES`),
``config`` (its hyper-parameters), ``state_dict``, and ``meta`` (kind, label or joint names,
input normalisation: whatever :func:`~sparse_perception.models.registry.load_model` needs).
It is read with ``torch.load(weights_only=True)``, so loading never runs pickled code. A bare
state_dict works too when the caller names the architecture.
"""

from __future__ import annotations

import os
from pathlib import Path
import pickle
import tempfile
from typing import Any

from sparse_perception.models.architectures import build_architecture
import torch
from torch import nn

CHECKPOINT_FORMAT = 'sparse_perception.checkpoint'
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit its architecture."""


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *,
                    meta: dict[str, Any] | None = None) -> Path:
    """
    Write ``model`` (an own architecture: it has ``architecture`` and ``config_dict()``).

    ``meta`` holds plain data (str, numbers, lists, dicts). The file appears only when
    complete: it is written to a temporary name beside ``path`` and renamed.
    """
    architecture = getattr(model, 'architecture', None)
    if architecture is None or not hasattr(model, 'config_dict'):
        raise CheckpointError(f"{type(model).__name__} is not one of the package's own "
                              'architectures; save its state_dict with torch.save instead')
    path = Path(path)
    payload = {
        'format': CHECKPOINT_FORMAT,
        'version': CHECKPOINT_VERSION,
        'architecture': architecture,
        'config': model.config_dict(),
        'state_dict': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'meta': dict(meta or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + '.', suffix='.part',
                                         dir=path.parent)
    os.close(handle)
    try:
        # Through a stream, not the path: torch names the archive's records after a path, and
        # the temporary name would make the same model's file differ from one save to the next.
        with open(temporary, 'wb') as stream:
            torch.save(payload, stream)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def load_checkpoint(path: str | os.PathLike, *, architecture: str | None = None,
                    config: dict | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """
    Rebuild a model from a checkpoint file; return ``(model, meta)`` with the model in eval mode.

    For a bare state_dict, pass ``architecture`` (and ``config`` if not the defaults). Raises
    :class:`CheckpointError` naming the file and what does not fit.
    """
    path = Path(path)
    try:
        empty = path.is_file() and path.stat().st_size == 0
    except OSError:
        empty = False  # torch.load says what is wrong
    if empty:
        raise CheckpointError(f'{path}: not a torch checkpoint: the file is empty (0 bytes)')
    _check_records(path)
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {str(path)!r} does not exist') from None
    except pickle.UnpicklingError as exc:
        # torch's own message runs to several lines and suggests weights_only=False, which
        # would run whatever code the file holds: name the refusal in one line instead.
        reason = _unpickler_reason(str(exc))
        if 'unsupported global' not in reason.lower():  # an opcode no torch pickle holds
            try:
                with open(path, 'rb') as stream:
                    pickled = stream.read(1) == b'\x80'  # the protocol mark opening a pickle
            except OSError:
                pickled = False
            what = 'a plain pickle' if pickled else 'random or damaged bytes'
            raise CheckpointError(f'{path}: not a torch checkpoint ({what}: '
                                  f'{reason[:200]})') from None
        raise CheckpointError(
            f'{path}: refused: it holds pickled objects beyond tensors and plain data, which '
            f'could run code when loaded ({reason[:200]}); save the model with '
            'sparse_perception.models.checkpoints.save_checkpoint, or its state_dict') from None
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f'{path}: not a readable torch checkpoint '
                              f'({_torch_reason(exc)})') from None
    if isinstance(payload, dict) and payload.get('format') == CHECKPOINT_FORMAT:
        if payload.get('version') != CHECKPOINT_VERSION:
            raise CheckpointError(f'{path}: checkpoint version {payload.get("version")!r}; this '
                                  f'package reads version {CHECKPOINT_VERSION}')
        name = architecture or payload.get('architecture')
        config = payload.get('config') if config is None else config
        state = payload.get('state_dict')
        meta = payload.get('meta') or {}
        if not (isinstance(name, str) and isinstance(config, (dict, type(None)))
                and isinstance(meta, dict) and isinstance(state, dict)
                and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise CheckpointError(
                f'{path}: damaged checkpoint: its architecture, config, state_dict or meta is '
                'missing or of the wrong kind; save it again')
        meta = dict(meta)
    elif isinstance(payload, dict) and payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()):
        if architecture is None:
            raise CheckpointError(f'{path} is a bare state_dict; say which architecture it is '
                                  '(architecture=...)')
        name, state, meta = architecture, payload, {}
    else:
        got = ('an empty dict' if payload == {} else 'a dict of other things than tensors'
               if isinstance(payload, dict) else f'a {type(payload).__name__}')
        raise CheckpointError(f'{path}: expected a {CHECKPOINT_FORMAT} file or a state_dict '
                              f'(a dict of tensors), got {got}')
    # First without memory (the meta device): a config edited to say 10**6 channels must not
    # allocate gigabytes before the weights are found not to fit it.
    try:
        with torch.device('meta'):
            skeleton = build_architecture(name, config)
    except ValueError as exc:
        raise CheckpointError(f'{path}: {exc}') from None
    except Exception as exc:  # a config value of the wrong type or sign (a damaged file)
        raise CheckpointError(f'{path}: cannot build {name!r} from the config {config!r}'[:300]
                              + f': {type(exc).__name__}: {" ".join(str(exc).split())[:200]}') \
            from None
    _check_state(skeleton, state, path)
    model = build_architecture(name, config)  # as large as the weights the file holds
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def _unpickler_reason(text: str) -> str:
    """Return the line of torch's weights-only error that says what it met."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        # "Unsupported global: ..." or "Trying to load unsupported GLOBAL posix.system whose
        # module posix is blocked": torch's advice on allowing the object follows, left out.
        if 'unsupported' in line.lower():
            return line.split('WeightsUnpickler error:')[-1].split('. ')[0].strip()
    # Never torch's opening advice to load with weights_only=False (it would run the code).
    kept = [line for line in lines
            if 'weights_only' not in line and 'Weights only load failed' not in line]
    return kept[0] if kept else 'no reason given'


def unmatched_record(file: Any) -> str | None:
    """
    Return the name of a record of a torch zip file that fails its checksum, else None.

    ``file`` is a path or a binary stream. torch.load does not look at the checksums: a flipped
    byte in the weights would load as a slightly different network, and answer wrongly without
    a word. Raises zipfile.BadZipFile (or OSError) for what is no readable zip archive.
    """
    import zipfile

    with zipfile.ZipFile(file) as archive:
        return archive.testzip()


def _check_records(path: Path) -> None:
    """Raise CheckpointError if a record of a zip checkpoint fails its checksum."""
    import zipfile

    try:
        bad = unmatched_record(path)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return  # not a readable zip (the legacy format, or damaged): torch.load says what
    if bad is not None:
        raise CheckpointError(f'{path}: damaged checkpoint: its record {bad!r} does not match '
                              'its checksum (changed or missing bytes); copy or save it again')


def _torch_reason(exc: Exception) -> str:
    """Return torch's reason in one line, without its advice to load with weights_only=False."""
    text = ' '.join(str(exc).split())
    if 'legacy .tar format' in text:  # what torch makes of any file it cannot place
        return 'random or damaged bytes, or the legacy .tar format, which is not read'
    kept = [sentence for sentence in text.split('. ') if 'weights_only' not in sentence]
    return ('. '.join(kept)[:200] or type(exc).__name__) if text else type(exc).__name__


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise CheckpointError unless ``state`` has exactly the model's names and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f'{path} does not fit {type(model).__name__}: missing {missing[:5]}'
            f'{" ..." if len(missing) > 5 else ""}, unexpected {unexpected[:5]}'
            f'{" ..." if len(unexpected) > 5 else ""}; check the architecture and config')
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f'{path}: {key} has shape {tuple(value.shape)}, the '
                                  f'architecture expects {tuple(own[key].shape)}; check the '
                                  'config (e.g. depth_multiplier, num_classes)')
        # load_state_dict would cast integers into float weights, and copy NaNs: either way
        # a network that runs and answers wrongly.
        if own[key].is_floating_point() and not value.is_floating_point():
            raise CheckpointError(f'{path}: {key} holds {value.dtype} values where the '
                                  f'architecture has {own[key].dtype} weights; save it again')
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise CheckpointError(f'{path}: {key} holds NaN or infinite values; the weights '
                                  'are damaged or the training diverged')
