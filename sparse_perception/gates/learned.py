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
The ``learned`` gate: a tiny tile-level network that says where the people will be.

It sees the network input scaled to :data:`CELLS` pixels per change tile, the difference to
the last frame's (what moved) and the last frame's person tiles, and gives one logit per
change tile: two strided convolutions bring the image to tile resolution, two more mix in the
neighbours. About 7 million multiply-accumulates on an 854x480 frame, a few thousandths of
DeepLab's. It is distilled from a segmentation network on unlabelled video
(:mod:`sparse_perception.gates.training`, ``sparse-perception gate train``).

A gate file holds weights only: ``{'state': state_dict, 'meta': {...}}``, read with
``torch.load(weights_only=True)``; the metadata names the format version, the change tile
size it was trained for and the input scale, and a file that does not match is refused.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

# A gate file holds about 30 KB; anything much larger is another file, read whole by torch.
MAX_FILE_BYTES = 16 * 2 ** 20
# How a file torch wrote begins: a zip archive (torch.save), or a pickle (its older format,
# ``_use_new_zipfile_serialization=False``, whose records are read as they are stored); torch
# reads any other pickle far enough to say what it holds.
ZIP_START = b'PK\x03\x04'
PICKLE_START = b'\x80'
# Metadata nested deeper than this is no metadata training writes (and a report could not
# write it out: JSON writers recurse).
MAX_META_DEPTH = 16
VERSION = 1
CELLS = 4  # pixels per change tile edge in the gate's input (1/4 at 16-pixel tiles)
WIDTH = 16  # channels of the tile-level features


class GateFileError(ValueError):
    """A gate file is missing, not a gate, or made for other settings."""


def network() -> Any:
    """Return a new, untrained gate network."""
    import torch
    from torch import nn

    class TileGate(nn.Module):
        """Image, motion and last frame's person tiles -> one logit per change tile."""

        def __init__(self):
            super().__init__()
            self.image = nn.Sequential(  # two stride-2 steps: CELLS (4) pixels -> one tile
                nn.Conv2d(6, 8, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(8, WIDTH, 3, 2, 1), nn.ReLU())
            self.tiles = nn.Sequential(  # the neighbourhood: motion reaches across tiles
                nn.Conv2d(WIDTH + 1, WIDTH, 3, 1, 1), nn.ReLU(),
                nn.Conv2d(WIDTH, WIDTH, 3, 1, 1), nn.ReLU(),
                nn.Conv2d(WIDTH, 1, 1))

        def forward(self, image: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
            features = self.image(image)
            return self.tiles(torch.cat([features, previous], 1))[:, 0]

    return TileGate()


def macs(tiles_h: int, tiles_w: int) -> int:
    """Multiply-accumulates of one pass over (tiles_h, tiles_w) change tiles."""
    half = (2 * tiles_h) * (2 * tiles_w)
    tile = tiles_h * tiles_w
    return (half * 8 * 6 * 9 + tile * WIDTH * 8 * 9 + tile * WIDTH * (WIDTH + 1) * 9
            + tile * WIDTH * WIDTH * 9 + tile * WIDTH)


def small_image(x: Any, tile: int) -> Any:
    """Scale a (1, C, H, W) network input to CELLS pixels per tile, standardised, 3 channels."""
    import torch.nn.functional as F

    height, width = x.shape[-2:]
    th, tw = -(-height // tile), -(-width // tile)
    image = x[:, :3].float()
    if image.shape[1] < 3:  # a grey input: the same channel three times
        image = image[:, :1].expand(-1, 3, -1, -1)
    small = F.interpolate(image, size=(th * CELLS, tw * CELLS), mode='area')
    # Networks take their inputs in different ranges ([0, 1], [-1, 1], ...): standardise.
    mean = small.mean(dim=(2, 3), keepdim=True)
    return (small - mean) / (small.std() + 1e-6)


def features(small: Any, last_small: Any, previous: Any) -> tuple[Any, Any]:
    """Return the network's inputs: image and motion (1, 6, ...), last person tiles (1, 1, ...)."""
    import torch

    motion = small - last_small if last_small is not None else torch.zeros_like(small)
    return torch.cat([small, motion], 1), previous.float()[None, None]


def save(state: dict, meta: dict, path: str | Path) -> Path:
    """Write a gate file whole or not at all (a temporary file beside it, then renamed)."""
    import torch

    from sparse_perception.output_files import write_atomic

    blob = {'state': {k: v.detach().clone() for k, v in state.items()}, 'meta': dict(meta)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory (about 30 KB), then written as bytes: torch's own file writer
    # reports a full disk as a RuntimeError of its internals, a plain write as an OSError.
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    return write_atomic(path, buffer.getvalue())


def model_key(model: str) -> str:
    """Return what names a segmentation model: a registered name, else its file, resolved."""
    from sparse_perception.models.registry import REGISTRY

    return model if model in REGISTRY else str(Path(model).expanduser().resolve())


def model_digest(model: str) -> str | None:
    """
    Return the SHA-256 of a model given as a file (hex), None for a registered name.

    A gate names a model file by its content as well as its path: the file copied to a robot
    is the same model under another path, and another file written over the path is not.
    """
    from sparse_perception.models.registry import REGISTRY

    return None if model in REGISTRY else file_sha256(model)


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file (hex), read a megabyte at a time."""
    import hashlib

    digest = hashlib.sha256()
    with open(Path(path).expanduser(), 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _same_model(meta: dict, model: str) -> bool:
    """Whether ``model`` is the one the gate's metadata names (see :func:`model_digest`)."""
    from sparse_perception.models.registry import REGISTRY

    trained = meta.get('model_sha256')
    if trained is None or model in REGISTRY or meta['model'] in REGISTRY:
        return model_key(meta['model']) == model_key(model)  # (older gate files: no digest)
    try:
        return model_digest(model) == trained
    except OSError:  # no such file: loading the model says so
        return model_key(meta['model']) == model_key(model)


def _not_plain(value: Any, depth: int = 0) -> str | None:
    """Say what in ``value`` a JSON report cannot hold ('is of type Tensor'); None: nothing."""
    if value is None or type(value) in (str, int, float, bool):
        return None
    if depth >= MAX_META_DEPTH:
        return f'is nested deeper than {MAX_META_DEPTH} levels'
    if type(value) is list:
        items = value
    elif type(value) is dict:
        keys = [type(k).__name__ for k in value if type(k) is not str]
        if keys:
            return f'holds a key of type {keys[0]}'
        items = list(value.values())
    else:
        kind = type(value).__name__
        return f'holds a value of type {kind}' if depth else f'is of type {kind}'
    for item in items:
        found = _not_plain(item, depth + 1)
        if found is not None:
            return found
    return None


def _unpacked_size(path: Path, data: bytes) -> int:
    """Return what a torch zip file's records take once read; refuse compressed or damaged ones."""
    import zipfile

    from sparse_perception.models.checkpoints import unmatched_record

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            records = archive.infolist()
        # (A compressed record is refused below before it is inflated.)
        packed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
        bad = None if packed else unmatched_record(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as exc:
        raise GateFileError(f'{path} is not a gate file: torch cannot read it as saved '
                            f'weights (not a whole zip archive: {exc})') from None
    # torch.save stores every record as it is; torch.load would still inflate a compressed
    # one, to any size: a small file could take gigabytes of memory.
    if packed:
        raise GateFileError(f'{path} is not a gate file: its record {packed[0]!r} is '
                            'compressed, which torch never writes (and which could unpack to '
                            'far more memory than the file takes)')
    if bad is not None:
        raise GateFileError(f'{path} is a damaged gate file: its record {bad!r} does not '
                            'match its checksum (changed or missing bytes); copy or train it '
                            'again')
    return sum(r.file_size for r in records)


def _read(path: str | Path, tile: int, model: str | None = None) -> tuple[Any, dict, str]:
    """Return the gate network in a file, its metadata and the SHA-256 of the bytes read."""
    import hashlib
    import pickle
    import warnings

    import torch

    path = Path(path).expanduser()  # as model paths are
    if path.is_dir():
        raise GateFileError(f'gate file {str(path)!r} is a folder; expected the file that '
                            '`sparse-perception gate train` wrote')
    if not path.exists():
        raise GateFileError(f'gate file {str(path)!r} does not exist (train one with '
                            '`sparse-perception gate train`)')
    if not path.is_file():  # a device or a pipe: reading it could wait for ever
        raise GateFileError(f'gate file {str(path)!r} is not a regular file; expected the '
                            'file that `sparse-perception gate train` wrote')
    try:
        # Read once: the bytes hashed for the report are the bytes loaded, even when the
        # file is replaced meanwhile; at most one byte past the bound, should it grow.
        with open(path, 'rb') as file:
            size = os.fstat(file.fileno()).st_size
            if size <= MAX_FILE_BYTES:
                data = file.read(MAX_FILE_BYTES + 1)
                size = len(data)
    except OSError as exc:
        raise GateFileError(f'gate file {str(path)!r} cannot be read: '
                            f'{exc.strerror or exc}') from None
    if size == 0:
        raise GateFileError(f'{path} is not a gate file: it is empty')
    if size > MAX_FILE_BYTES:  # read whole by torch.load: refuse a wrong file before that
        raise GateFileError(f'{path} is not a gate file: it holds {size} bytes, and a gate '
                            f'file about 30 KB (at most {MAX_FILE_BYTES} bytes are read)')
    if data.startswith(ZIP_START):
        unpacked = _unpacked_size(path, data)
        if unpacked > MAX_FILE_BYTES:
            raise GateFileError(f'{path} is not a gate file: its records unpack to {unpacked} '
                                f'bytes, and a gate file holds about 30 KB (at most '
                                f'{MAX_FILE_BYTES} bytes are read)')
    elif not data.startswith(PICKLE_START):
        raise GateFileError(f'{path} is not a gate file: it is not a torch file at all (a gate '
                            'file is what `sparse-perception gate train` writes)')
    try:
        with warnings.catch_warnings():  # torch's notes on a foreign pickle: the error says it
            warnings.simplefilter('ignore')
            blob = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests loading it with weights_only=False, which runs whatever
        # code the file holds: not advice to pass on about a file that is not a gate.
        raise GateFileError(f'{path} is not a gate file: it holds objects other than '
                            'weights and plain values, and was not read') from None
    except MemoryError:
        raise
    except Exception as exc:  # torch's readers raise many kinds on bad bytes (KeyError, ...)
        reason = ' '.join(str(exc).split())[:200] or type(exc).__name__
        raise GateFileError(f'{path} is not a gate file: torch cannot read it as saved '
                            f'weights ({reason})') from None
    if not isinstance(blob, dict) or set(blob) != {'state', 'meta'} \
            or not isinstance(blob['meta'], dict):
        raise GateFileError(f'{path} is not a gate file (expected weights and metadata)')
    meta = blob['meta']
    # A report holds the metadata as it is (JSON): a tensor or bytes there would stop the
    # report from being written, after the whole run.
    for key, value in meta.items():
        found = (_not_plain(value) if type(key) is str
                 else f'holds a key of type {type(key).__name__}')
        if found is not None:
            name = f' {key!r}' if type(key) is str else ''
            raise GateFileError(f'{path} is not a gate file: its metadata{name} {found}; a gate '
                                "file's metadata holds plain values only (text, numbers, "
                                'true/false, none, and lists and mappings of those)')
    # Plain values, as training writes them: a tensor or a bool here is no gate's metadata.
    for key, kind in (('version', int), ('cells', int), ('tile', int), ('model', str),
                      ('model_sha256', str), ('fcn_max_megapixels', float)):
        if meta.get(key) is not None and type(meta[key]) is not kind:
            raise GateFileError(f'{path} is not a gate file: its metadata {key!r} is a '
                                f'{type(meta[key]).__name__}, not {kind.__name__}')
    if meta.get('version') != VERSION:
        raise GateFileError(f'{path}: gate format version {meta.get("version")!r}, this '
                            f'package reads version {VERSION}; train it again')
    if meta.get('cells') != CELLS:
        raise GateFileError(f'{path}: input scale of {meta.get("cells")!r} pixels per tile, '
                            f'this package uses {CELLS}; train it again')
    if model is not None and meta.get('model') is None:
        raise GateFileError(f'{path}: its metadata names no segmentation model, and a gate '
                            'holds to the model it was trained on: train it again with '
                            f'`sparse-perception gate train --model {model}`')
    if model is not None and not _same_model(meta, model):
        if model_key(meta['model']) == model_key(model):
            raise GateFileError(f'{path}: trained for the model file {model!r} as it was then, '
                                'and its content has changed since: train the gate again with '
                                f'`sparse-perception gate train --model {model}`')
        raise GateFileError(f'{path}: trained for the segmentation model '
                            f'{meta["model"]!r}, but this one is {model!r}: set '
                            f'model.segmentation to {meta["model"]!r}, or train one for it '
                            f'with `sparse-perception gate train --model {model}`')
    if meta.get('tile') != tile:
        raise GateFileError(f'{path}: trained for change tiles of {meta.get("tile")!r} '
                            f'pixels, but change.tile_size is {tile}; train it with that '
                            'tile size')
    state = blob['state']
    # load_state_dict casts any dtype into the float weights: integers would load as a
    # gate of zeros, complex numbers lose their imaginary part.
    wrong = [(k, v.dtype) for k, v in (state.items() if isinstance(state, dict) else ())
             if isinstance(v, torch.Tensor) and not v.is_floating_point()]
    if wrong:
        name, dtype = wrong[0]
        raise GateFileError(f'{path} is not a gate file: its weights {name!r} are '
                            f'{str(dtype).removeprefix("torch.")}, not floating point (training '
                            'writes float32)')
    net = network()
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise GateFileError(f'{path}: weights do not fit the gate network: '
                            f'{" ".join(str(exc).split())[:200]}') from None
    if not all(bool(p.isfinite().all()) for p in net.state_dict().values()
               if p.is_floating_point()):
        raise GateFileError(f'{path}: holds weights that are not finite numbers (a training '
                            'that diverged); train it again')
    return net.eval(), meta, hashlib.sha256(data).hexdigest()


def load(path: str | Path, tile: int, model: str | None = None) -> tuple[Any, dict]:
    """
    Return the gate network in a file (eval mode) and its metadata; refuse a bad file.

    ``model``: the segmentation model it is to gate (None: not checked). A gate learns the
    person tiles of the model it was trained on, over that model's input: on another model
    they would lie elsewhere.
    """
    net, meta, _ = _read(path, tile, model)
    return net, meta


# The gate each path last gave a LearnedGate: (SHA-256 of the bytes read, metadata). The
# reports are written at the end of a run, by code that holds no gate, and the file may have
# been replaced since the run's gate was read from it.
_IN_USE: dict[str, tuple[str, dict]] = {}


def _use_key(path: str | Path) -> str:
    """Return the key of ``path`` in :data:`_IN_USE`: absolute, with ``~`` expanded."""
    return str(Path(path).expanduser().absolute())


def describe(settings: Any) -> dict | None:
    """
    Return what identifies the learned gate a run uses, for its report; None without one.

    The path alone does not: a gate trained again in place keeps it. The report holds the
    SHA-256 of the bytes the last gate taken from the path was read from, and the metadata
    training wrote; a path no gate was taken from is read now (None where it cannot be).
    """
    sparsity = settings.sparsity
    if sparsity.gate != 'learned' or not sparsity.gate_model:
        return None
    path = Path(sparsity.gate_model).expanduser()
    if _use_key(path) in _IN_USE:
        digest, meta = _IN_USE[_use_key(path)]
        return {'file': str(path), 'sha256': digest, 'meta': dict(meta)}
    try:
        _, meta, digest = _read(path, settings.change.tile_size)
    except (OSError, GateFileError):
        return {'file': str(path), 'sha256': None, 'meta': None}
    return {'file': str(path), 'sha256': digest, 'meta': dict(meta)}


def file_stamp(path: str | Path) -> tuple[int, int, int] | None:
    """Return what tells a file changed on disk (inode, size, modification time), or None."""
    try:
        info = Path(path).expanduser().stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class LearnedGate:
    """A loaded gate network that follows one stream: call :meth:`tiles` once per frame."""

    def __init__(self, path: str | Path, tile: int, model: str | None = None):
        self.path = str(path)
        self.tile = tile
        self.stamp = file_stamp(path)  # before reading: a write meanwhile reads as a change
        self.unread: object = False  # the file's stamp (None: gone) when it last failed to read
        self.net, self.meta, self.sha256 = _read(path, tile, model)
        _IN_USE[_use_key(path)] = (self.sha256, self.meta)
        self.reset()

    def reset(self) -> None:
        """Forget the last frame (a new stream)."""
        self.last_small: Any = None

    def tiles(self, x: Any, previous: Any, threshold: float) -> Any:
        """Return bool tiles where the person probability is at least ``threshold``."""
        import torch

        # On the input's device: on a GPU the frame never goes to the host for the gate.
        if next(self.net.parameters()).device != x.device:
            self.net.to(x.device)
        small = small_image(x, self.tile)
        th, tw = small.shape[-2] // CELLS, small.shape[-1] // CELLS
        if previous is None or tuple(previous.shape) != (th, tw):
            previous = torch.zeros(th, tw, dtype=torch.bool, device=x.device)
        last = self.last_small
        if last is not None and (last.shape != small.shape or last.device != small.device):
            last = None
        image, prior = features(small, last, previous.to(x.device))
        self.last_small = small
        with torch.no_grad():
            prob = torch.sigmoid(self.net(image, prior))[0]
        return prob >= threshold
