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
The model registry and :func:`load_model`: one object per model, ready for a camera frame.

A registered name says where the file comes from (the shared folder for the Coral models, the
``models fetch`` cache for the MediaPipe ones), how to preprocess a frame, how to decode the
outputs, and the label or joint names. Any file path works too: a ``.tflite`` file (decoded
as the registered model of the same file name, or by what its outputs look like) or a
checkpoint of the package's own architectures (``.pt``).

BlazePose, a two-stage model, loads as a :class:`~sparse_perception.models.blazepose.BlazePose`:
a :class:`LoadedModel` whose preprocessing detects the person and crops a rotated region for
its landmark network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparse_perception.models import decoders
from sparse_perception.models.transforms import check_frame, ImageTransform, resize_image
from sparse_perception.settings import HEADS
from sparse_perception.shared_data import SHARED_ENV, shared_root

CACHE_ENV = 'SPARSE_PERCEPTION_MODEL_CACHE'
KINDS = HEADS  # a model serves one head
DECODERS = ('class_map', 'class_scores', 'probability', 'single_pose', 'blazepose')
CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.ckpt')


class ModelNotFound(FileNotFoundError):
    """A registered model's file is not where it was looked for."""


class DamagedModelError(ValueError):
    """A model file differs from what was fetched, or cannot be read as a model at all."""


# The file `models fetch` writes beside the models: each file's sha256 and size.
MANIFEST = 'manifest.json'
# The file `models fetch` keeps beside the models while it replaces them: left behind by a
# fetch cut short, it says that the files there may come from two versions.
FETCH_MARKER = 'fetch-in-progress'


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: where its file is and how to run and decode it."""

    name: str
    kind: str  # 'segmentation' or 'pose'
    filename: str
    location: str  # 'shared' (under the shared folder) or 'cache' (the models fetch cache)
    folder: str  # sub-folder of that location
    decoder: str  # one of DECODERS
    resize: str = 'resize'  # 'resize', 'letterbox', 'none' or 'roi' (BlazePose's rotated crop)
    convert: str = ''  # '' = the imported graph; 'deeplab' = the own fully convolutional arch
    # TFLite import mode for quantised models (see load_tflite), chosen by measured agreement
    # with the TFLite interpreter (python -m sparse_perception.models.parity): 'tail' for
    # DeepLab (its arg-max then sees the quantised logits' ties: 98.80% vs 98.65% of pixels
    # on 46 DAVIS frames), 'none' for MoveNet (no fake-quant at all; 'tail' is within noise
    # of it: median 1.85 vs 1.76 px, worst confident keypoint 19.9 vs 22.1 px on 41 frames).
    fake_quant: str = 'tail'
    labels: tuple[str, ...] = ()
    joints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    description: str = ''
    licence: str = ''
    detector: str = ''  # BlazePose: the person detector's file, found like ``filename``


_CORAL = 'models/coral'
_CORAL_NOTE = 'google-coral/test_data, Apache-2.0; read from the shared folder'
_MEDIAPIPE = 'mediapipe'
_MEDIAPIPE_NOTE = ('MediaPipe 0.10.21 wheel, Apache-2.0; `sparse-perception models fetch` puts it '
                   'in the model cache')

REGISTRY: dict[str, ModelEntry] = {entry.name: entry for entry in (
    ModelEntry('deeplabv3_mnv2_pascal', 'segmentation', 'deeplabv3_mnv2_pascal_quant.tflite',
               'shared', _CORAL, 'class_map', labels=decoders.PASCAL_VOC_LABELS,
               description='DeepLabV3 MobileNetV2, PASCAL VOC 21 classes, 513x513, uint8 '
               'quantised (dequantised to float on import)', licence=_CORAL_NOTE),
    ModelEntry('deeplabv3_mnv2_dm05_pascal', 'segmentation',
               'deeplabv3_mnv2_dm05_pascal_quant.tflite', 'shared', _CORAL, 'class_map',
               labels=decoders.PASCAL_VOC_LABELS,
               description='DeepLabV3 MobileNetV2 depth 0.5, PASCAL VOC, 513x513, uint8 '
               'quantised', licence=_CORAL_NOTE),
    ModelEntry('deeplabv3_mnv2_pascal_fcn', 'segmentation', 'deeplabv3_mnv2_pascal_quant.tflite',
               'shared', _CORAL, 'class_map', resize='none', convert='deeplab',
               labels=decoders.PASCAL_VOC_LABELS,
               description='The same weights in the own DeepLabV3MobileNetV2 architecture: '
               "fully convolutional, runs at the frame's own size (up to "
               'model.fcn_max_megapixels)', licence=_CORAL_NOTE),
    ModelEntry('deeplabv3_mnv2_dm05_pascal_fcn', 'segmentation',
               'deeplabv3_mnv2_dm05_pascal_quant.tflite', 'shared', _CORAL, 'class_map',
               resize='none', convert='deeplab', labels=decoders.PASCAL_VOC_LABELS,
               description='Depth 0.5 weights in the own fully convolutional architecture',
               licence=_CORAL_NOTE),
    ModelEntry('movenet_lightning', 'pose', 'movenet_single_pose_lightning_ptq.tflite',
               'shared', _CORAL, 'single_pose', resize='letterbox', fake_quant='none',
               joints=decoders.COCO17_JOINTS, skeleton=decoders.COCO17_SKELETON,
               description='MoveNet SinglePose Lightning, COCO-17 keypoints, 192x192, int8 '
               'quantised', licence=_CORAL_NOTE),
    ModelEntry('selfie_segmentation', 'segmentation', 'selfie_segmentation.tflite', 'cache',
               _MEDIAPIPE, 'probability', labels=decoders.PERSON_LABELS,
               description='MediaPipe selfie segmentation (general), 256x256, float: person '
               'probability thresholded at 0.5 into background/person', licence=_MEDIAPIPE_NOTE),
    ModelEntry('selfie_segmentation_landscape', 'segmentation',
               'selfie_segmentation_landscape.tflite', 'cache', _MEDIAPIPE, 'probability',
               labels=decoders.PERSON_LABELS,
               description='MediaPipe selfie segmentation (landscape), 256x144, float: person '
               'probability thresholded at 0.5', licence=_MEDIAPIPE_NOTE),
    ModelEntry('blazepose', 'pose', 'pose_landmark_full.tflite', 'cache', _MEDIAPIPE,
               'blazepose', resize='roi', detector='pose_detection.tflite',
               joints=decoders.BLAZEPOSE33_JOINTS, skeleton=decoders.BLAZEPOSE33_SKELETON,
               description='MediaPipe BlazePose (full): person detector 224x224, then 33 '
               'landmarks on a rotated 256x256 crop that stays still while the person stays '
               'in it', licence=_MEDIAPIPE_NOTE),
    ModelEntry('blazepose_coco17', 'pose', 'pose_landmark_full.tflite', 'cache', _MEDIAPIPE,
               'blazepose', resize='roi', detector='pose_detection.tflite',
               joints=decoders.COCO17_JOINTS, skeleton=decoders.COCO17_SKELETON,
               description='BlazePose with its COCO-17 joints only', licence=_MEDIAPIPE_NOTE),
)}

# Files `sparse-perception models fetch` extracts from the MediaPipe wheel (Apache-2.0) into
# the cache (the registry entries above with location 'cache').
MEDIAPIPE_VERSION = '0.10.21'
MEDIAPIPE_FILES = {
    'selfie_segmentation.tflite':
        'mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite',
    'selfie_segmentation_landscape.tflite':
        'mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite',
    'pose_detection.tflite': 'mediapipe/modules/pose_detection/pose_detection.tflite',
    'pose_landmark_full.tflite': 'mediapipe/modules/pose_landmark/pose_landmark_full.tflite',
}


def cache_dir() -> Path:
    """Return the folder ``models fetch`` fills ($SPARSE_PERCEPTION_MODEL_CACHE or XDG)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'sparse_perception' / 'models'


def candidate_paths(entry: ModelEntry, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where a registered model's file is looked for, in order."""
    paths = []
    if models_dir:
        folder = Path(models_dir).expanduser()
        paths += [folder / entry.filename, folder / entry.folder / entry.filename]
    if entry.location == 'shared':
        paths.append(shared_root() / entry.folder / entry.filename)
    else:
        paths.append(cache_dir() / entry.folder / entry.filename)
    return paths


def resolve(entry: ModelEntry, models_dir: str | os.PathLike | None = None) -> Path:
    """Return the first existing file of ``entry``, or raise :class:`ModelNotFound`."""
    if models_dir and not Path(models_dir).expanduser().is_dir():
        # Searched first: a mistyped folder would silently give the cache's file instead.
        raise ModelNotFound(f'model.models_dir {str(models_dir)!r} is not a folder; give the '
                            'folder that holds the model files, or leave it empty')
    paths = candidate_paths(entry, models_dir)
    for path in paths:
        if path.is_file():
            return path
    where = ', '.join(str(p) for p in paths)
    if entry.location == 'shared':
        hint = (f'set {SHARED_ENV} to the folder holding models/coral, pass a models folder, '
                'or give the file path instead of the name')
    else:
        cache = cache_dir() / entry.folder
        empty = not cache.is_dir() or not any(cache.glob('*.tflite'))
        hint = (f'the model cache {cache} is {"empty" if empty else "incomplete"}: run '
                f'`sparse-perception models fetch` once (it downloads mediapipe=='
                f'{MEDIAPIPE_VERSION} from PyPI with pip and extracts its models; '
                f'${CACHE_ENV} moves the cache), or give the file path instead of the name')
    raise ModelNotFound(f'model {entry.name!r} needs {entry.filename}; looked in: {where}; '
                        f'{hint}')


_SCALED_SAID: list[tuple] = []  # the last frame size scaled down that a warning named


def _say_scaled(name: str, transform: ImageTransform, max_pixels: int | None) -> None:
    """Warn once per frame size that a fully convolutional model scales frames down."""
    import logging

    key = (name, transform.image_size, transform.input_size)
    if _SCALED_SAID[-1:] == [key]:
        return
    _SCALED_SAID[:] = [key]
    (h, w), (net_h, net_w) = transform.image_size, transform.input_size
    logging.getLogger(__name__).warning(
        'the model %r runs %dx%d frames at %dx%d: model.fcn_max_megapixels is %g (its memory '
        'grows with its input)', name, w, h, net_w, net_h, (max_pixels or 0) / 1e6)


def fcn_input_size(image_size: tuple[int, int],
                   max_pixels: int | None) -> tuple[int, int] | None:
    """
    Return the input size of a fully convolutional model for a frame (None: the frame's own).

    A frame of more than ``max_pixels`` is scaled down, its aspect ratio kept, to fit.
    """
    h, w = (int(v) for v in image_size)
    if max_pixels is None or h * w <= max_pixels:
        return None
    scale = math.sqrt(max_pixels / (h * w))
    # (Each side clamped so that the product stays within: a frame a pixel or two across.)
    height = max(1, min(int(h * scale), max_pixels))
    return height, max(1, min(int(w * scale), max_pixels // height))


@dataclass
class LoadedModel:
    """
    A model ready for camera frames: the torch module plus everything around it.

    ``module`` has ``trunk`` (NCHW input -> tuple of feature maps; what the incremental
    engine runs) and ``tail`` (feature maps -> outputs, dense); ``module(x)`` runs both.
    """

    name: str
    kind: str  # 'segmentation' or 'pose'
    module: Any  # torch.nn.Module with .trunk and .tail
    source: Path
    decoder: str
    input_size: tuple[int, int] | None  # (H, W); None when fully convolutional
    resize: str  # how frames are fitted: 'resize', 'letterbox' or 'none'
    normalise: tuple[float, float]  # tensor = pixel * normalise[0] + normalise[1]
    device: str = 'cpu'
    labels: tuple[str, ...] = ()
    joints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    info: Any = None  # TFLiteInfo for imported models, checkpoint meta otherwise
    details: dict[str, Any] = field(default_factory=dict)
    # The largest input of a fully convolutional model, in pixels (model.fcn_max_megapixels;
    # None: any size): a larger frame is scaled down to it.
    max_pixels: int | None = None

    @property
    def fully_convolutional(self) -> bool:
        return self.input_size is None

    def transform(self, image_size: tuple[int, int]) -> ImageTransform:
        """Return how a frame of ``image_size`` (H, W) is placed in this model's input."""
        if self.input_size is None:
            return ImageTransform.fit(image_size, fcn_input_size(image_size, self.max_pixels),
                                      'resize')
        return ImageTransform.fit(image_size, self.input_size, self.resize)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """Resize/letterbox an (H, W, 3) uint8 RGB frame to the network's uint8 input."""
        check_frame(image)
        transform = self.transform(image.shape[:2])
        if self.input_size is None and transform.mode != 'none':
            _say_scaled(self.name, transform, self.max_pixels)
        return resize_image(image, transform), transform

    def to_tensor(self, pixels: np.ndarray):
        """Turn a prepared (h, w, 3) uint8 input into the normalised (1, 3, h, w) tensor."""
        import torch

        # A frame straight from a message's buffer is read-only, which torch warns about
        # even for a tensor only read (as here: .float() copies); a copy then, once per frame.
        # To a GPU without waiting for the work queued there (from pageable memory the driver
        # stages the bytes before the call returns, so the array may go at once).
        tensor = torch.from_numpy(np.require(pixels, requirements=('C', 'W'))).to(
            self.device, non_blocking=True)
        tensor = tensor.permute(2, 0, 1)[None].float()
        scale, offset = self.normalise
        return tensor * scale + offset if (scale, offset) != (1.0, 0.0) else tensor

    def preprocess(self, image: np.ndarray):
        """Frame -> ``(tensor, transform)``: the network input and how to map outputs back."""
        pixels, transform = self.prepare(image)
        return self.to_tensor(pixels), transform

    def decode(self, outputs, transform: ImageTransform, **options):
        """
        Decode network outputs for the frame that ``transform`` describes.

        Segmentation gives a uint8 class-id mask of the frame; pose a list of persons, each a
        list of (x, y, score) keypoints in frame pixels. ``options`` go to the decoder.
        """
        if self.decoder == 'class_map':
            return decoders.class_mask(outputs, transform,
                                       num_classes=len(self.labels) or None, **options)
        if self.decoder == 'class_scores':
            return decoders.class_mask(_nhwc_to_nchw(outputs), transform, **options)
        if self.decoder == 'probability':
            return decoders.probability_mask(outputs, transform, **options)
        if self.decoder == 'single_pose':
            return decoders.single_pose(outputs, transform, **options)
        raise ValueError(f'unknown decoder {self.decoder!r}')

    def __call__(self, image: np.ndarray, **options):
        """Run the whole model densely on one frame and decode it."""
        import torch

        tensor, transform = self.preprocess(image)
        with torch.no_grad():
            outputs = self.module(tensor)
        return self.decode(outputs, transform, **options)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (what ``sparse-perception models info`` prints)."""
        from sparse_perception.models.tflite.importer import graph_summary

        summary = {
            'name': self.name, 'kind': self.kind, 'source': str(self.source),
            'decoder': self.decoder, 'input_size': list(self.input_size or []) or None,
            'fully_convolutional': self.fully_convolutional, 'resize': self.resize,
            'normalise': list(self.normalise), 'device': self.device,
        }
        if self.labels:
            summary['labels'] = list(self.labels)
        if self.joints:
            summary['joints'] = list(self.joints)
            summary['skeleton'] = [list(e) for e in self.skeleton]
        try:
            summary['trunk'] = graph_summary(_as_graph(self.module.trunk))
            summary['tail'] = graph_summary(_as_graph(self.module.tail))
        except Exception as exc:  # a module that fx cannot trace: say so, do not fail
            summary['trunk'] = summary['tail'] = f'not traceable by torch.fx: {exc}'
        if hasattr(self.info, 'tflite_op_counts'):
            summary['tflite_ops'] = self.info.tflite_op_counts
            summary['trunk_outputs'] = [{'tensor': t.name, 'shape_nhwc': list(t.shape)}
                                        for t in self.info.trunk_outputs]
            summary['fake_quant'] = self.info.fake_quant
        summary.update(self.details)
        return summary


# Input size at which a fully convolutional model is lowered to check its layers.
FCN_CHECK_SIZE = (96, 128)


def engine_network(module: Any) -> tuple[Any, Any]:
    """
    Return what the engine runs of a network (trunk and tail), and the tail left after it.

    A class arg-max tail joins the engine's network: it then runs only where the class scores
    changed, instead of over the whole frame. The outputs then share memory with the engine's
    caches, as a trunk's do: consume them before the next frame.
    """
    from sparse_perception.models.architectures import ClassArgmax, with_class_argmax

    if isinstance(module.tail, ClassArgmax):
        return with_class_argmax(module.trunk), _only_output
    return module.trunk, module.tail


def _only_output(output: Any) -> Any:
    """Return the output of a network whose tail the engine runs, as it came (its tail)."""
    return output


def engine_networks(model: LoadedModel) -> list[tuple[str, Any, tuple[int, int]]]:
    """
    Return the networks of ``model`` that the engine runs: (what, network, input size).

    The network (:func:`engine_network`), and a two-stage model's person detector; a fully
    convolutional network is given :data:`FCN_CHECK_SIZE`.
    """
    nets = [('network', engine_network(model.module)[0], model.input_size or FCN_CHECK_SIZE)]
    detector = getattr(model, 'detector', None)
    if detector is not None:
        size = model.detector_settings.input_size
        nets.append(('detector', detector.trunk, (size, size)))
    return nets


def device_mode_reason(model: LoadedModel) -> str | None:
    """
    Return why the sync-free device mode cannot run ``model``, or None when it can.

    Checked by lowering every engine network for the device mode (no kernel runs, so this
    works on any machine with Triton installed; without it, that is the reason).
    """
    import torch
    from sparse_perception.engine import EngineError
    from sparse_perception.engine.device import check_lowering

    for what, trunk, size in engine_networks(model):
        first = next(iter(trunk.parameters()), None)
        dtype = first.dtype if first is not None else torch.float32
        try:
            check_lowering(trunk, torch.zeros(1, 3, *size, dtype=dtype,
                                              device=first.device if first is not None
                                              else 'cpu'))
        except EngineError as exc:  # UnsupportedOpError is one
            return f'{what}: {exc}'
    return None


def load_model(name_or_path: str | os.PathLike, device: str = 'cpu', *,
               models_dir: str | os.PathLike | None = None, fake_quant: str | None = None,
               resize: str | None = None) -> LoadedModel:
    """
    Load a registered model by name, or any model file by path.

    ``device`` is 'cpu', 'cuda', 'cuda:N' or 'auto'. ``models_dir`` is a folder searched first
    for registered names. ``fake_quant`` overrides the TFLite import mode ('none', 'tail',
    'all'); ``resize`` the frame fitting ('resize', 'letterbox'). Raises
    :class:`ModelNotFound` (with where it looked) or ValueError for files it cannot decode.
    """
    device = _device(device)
    text = str(name_or_path)
    if text in REGISTRY:
        entry = REGISTRY[text]
        path = resolve(entry, models_dir)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            raise ModelNotFound(f'{text!r} is a folder; expected a model file (.tflite or a '
                                'checkpoint) or a registered name')
        if not path.is_file():
            known = ', '.join(sorted(REGISTRY))
            raise ModelNotFound(f'{text!r} is neither a registered model ({known}) nor an '
                                'existing file')
        entry = next((e for e in REGISTRY.values() if e.filename == path.name and
                      not e.convert), None)
    verify_model_file(path)
    if resize is not None and resize not in ('resize', 'letterbox'):
        raise ValueError(f"resize={resize!r} is not one of 'resize', 'letterbox'")
    if entry is not None and entry.decoder == 'blazepose':
        if resize is not None:
            raise ValueError(f'{entry.name} crops a rotated region around the person; '
                             f'resize={resize!r} does not apply to it')
        return _load_blazepose(path, entry, device, models_dir)
    # By content first: a TFLite file under a checkpoint's suffix is still a TFLite file.
    head = _head(path)
    if head[4:8] == b'TFL3' or (path.suffix == '.tflite' and head[:4] != ZIP_MAGIC):
        model = _load_tflite_model(path, entry, device, fake_quant,
                                   by_file_name=text not in REGISTRY)
    elif path.suffix in CHECKPOINT_SUFFIXES or head[:4] == ZIP_MAGIC:
        model = _load_checkpoint_model(path, device)
    else:
        raise ValueError(f'{path}: unknown model format; expected .tflite or a checkpoint '
                         f'({", ".join(CHECKPOINT_SUFFIXES)})')
    if resize is not None and model.input_size is not None:
        model.resize = resize
    model.module.to(device)
    return model


def _refetch_hint(path: Path) -> str:
    if (path.parent / MANIFEST).is_file() or (path.parent / FETCH_MARKER).exists():
        where = ('' if path.parent == cache_dir() / _MEDIAPIPE
                 else f' --cache-dir {path.parent.parent}')
        return f'fetch it again with `sparse-perception models fetch --force{where}`'
    return 'replace it with an intact copy'


def verify_model_file(path: Path) -> None:
    """
    Check a model file against the size and sha256 that ``models fetch`` recorded for it.

    Files without a manifest beside them (the shared folder, a user's own file) are not
    checked here; a damaged one fails when it is read. A folder that ``models fetch`` owns
    (its manifest or its marker is there) serves no file it cannot vouch for: one left by a
    fetch cut short, or beside a manifest that is not the one it writes. Raises
    :class:`DamagedModelError`.
    """
    import hashlib
    import json

    if (path.parent / FETCH_MARKER).exists():
        raise DamagedModelError(
            f'model file {path} is unverified: a `models fetch` into {path.parent} did not '
            f'finish ({FETCH_MARKER} is still there), so its files may come from two '
            f'versions; {_refetch_hint(path)}')
    manifest_path = path.parent / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        if not manifest_path.is_file():
            return  # no manifest: not a folder that models fetch filled
        manifest = None
    files = manifest.get('files') if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise DamagedModelError(
            f'model file {path} is unverified: {manifest_path} is damaged (not the manifest '
            f'that `models fetch` writes); {_refetch_hint(path)}')
    if path.name not in files:
        return  # a file of the user's own beside the fetched ones
    record = files[path.name]
    try:
        expected_bytes, expected_sha = int(record['bytes']), str(record['sha256'])
    except (ValueError, KeyError, TypeError):
        raise DamagedModelError(
            f'model file {path} is unverified: its record in {manifest_path} is damaged; '
            f'{_refetch_hint(path)}') from None
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, 'rb') as stream:
            # In pieces: a file grown huge (damaged, or not the model) must not fill memory.
            for block in iter(lambda: stream.read(1 << 20), b''):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise DamagedModelError(f'model file {path} cannot be read: {exc.strerror}') from None
    digest = digest.hexdigest()
    if size != expected_bytes or digest != expected_sha:
        raise DamagedModelError(
            f'model file {path} is damaged: {size} bytes with sha256 {digest[:16]}..., '
            f'but {MANIFEST} recorded {expected_bytes} bytes with sha256 {expected_sha[:16]}... '
            f'when it was fetched; {_refetch_hint(path)}')


def _read_tflite(path: Path, *, fake_quant: str = 'none', outputs: Sequence[int] | None = None):
    """``load_tflite``, with a file that is not a readable flatbuffer named as damaged."""
    from sparse_perception.models.tflite.importer import FAKE_QUANT_MODES, load_tflite
    from sparse_perception.models.tflite.reader import TFLiteImportError

    if fake_quant not in FAKE_QUANT_MODES:  # an argument, not the file: said before reading
        raise ValueError(f'fake_quant={fake_quant!r} is not one of '
                         f'{", ".join(FAKE_QUANT_MODES)}')
    if _head(path)[4:8] != b'TFL3':  # said here, where the way to a good copy is known
        size = path.stat().st_size
        what = ('it is empty: 0 bytes' if size == 0
                else f'{size} bytes, no TFL3 identifier at byte 4')
        raise DamagedModelError(f'model file {path} is not a TFLite flatbuffer ({what}); '
                                f'{_refetch_hint(path)}')
    try:
        return load_tflite(path, fake_quant=fake_quant, outputs=outputs)
    except (TFLiteImportError, ImportError):
        raise  # the importer's own errors already name the file and the problem
    except Exception as exc:  # struct.error, IndexError, numpy's ValueError, ...: a damaged file
        text = ' '.join(str(exc).split())[:120] or type(exc).__name__
        raise DamagedModelError(
            f'model file {path} is damaged or truncated ({path.stat().st_size} bytes; reading '
            f'it failed with {type(exc).__name__}: {text}); {_refetch_hint(path)}') from None


def _load_tflite_model(path: Path, entry: ModelEntry | None, device: str,
                       fake_quant: str | None, *, by_file_name: bool = False) -> LoadedModel:
    mode = fake_quant or (entry.fake_quant if entry else 'tail')
    net = _read_tflite(path, fake_quant=mode)
    if not by_file_name and entry is not None and not _outputs_fit(entry, net):
        # Found under a registered model's file name (model.models_dir): another model's file
        # would run, and be decoded as this one, wrongly.
        shapes = [tuple(o.shape) for o in net.info.outputs]
        raise DamagedModelError(f'model file {path} does not hold {entry.name!r}: its outputs '
                                f'{shapes} are not what its {entry.decoder} decoder takes; '
                                f'{_refetch_hint(path)}')
    if by_file_name and entry is not None and not _outputs_fit(entry, net):
        # Only the file name matched: the file is another model, decoded by what it holds.
        entry = None
        if mode != (fake_quant or 'tail'):
            net = _read_tflite(path, fake_quant=fake_quant or 'tail')
    spec = net.info.inputs[0]
    _, height, width, channels = spec.shape
    if channels != 3:
        raise ValueError(f'{path}: the input has {channels} channels; only RGB models are '
                         'supported')
    normalise = _tflite_normalise(spec)
    if entry is None:
        entry = _guess_entry(path, net)
    module, input_size, info, details = net, (height, width), net.info, {}
    if entry.convert == 'deeplab':
        from sparse_perception.models.architectures import deeplab_from_tflite

        module, input_size, info = deeplab_from_tflite(net), None, None
        details = {'architecture': module.architecture, 'config': module.config_dict(),
                   'converted_from_tflite_ops': net.info.tflite_op_counts}
    return LoadedModel(
        name=entry.name, kind=entry.kind, module=module.eval(), source=path,
        decoder=entry.decoder, input_size=input_size, resize=entry.resize, normalise=normalise,
        device=device, labels=entry.labels, joints=entry.joints, skeleton=entry.skeleton,
        info=info, details=details)


def _load_blazepose(path: Path, entry: ModelEntry, device: str,
                    models_dir: str | os.PathLike | None) -> LoadedModel:
    """Both BlazePose stages: the landmark model at ``path``, the detector beside it or found."""
    from dataclasses import replace

    from sparse_perception.models.blazepose import BlazePose, DetectorSettings
    from sparse_perception.models.blazepose import LANDMARK_OUTPUTS

    beside = path.parent / entry.detector
    detector_path = beside if beside.is_file() else resolve(
        replace(entry, filename=entry.detector), models_dir)
    verify_model_file(detector_path)
    landmarks = _read_tflite(path, outputs=LANDMARK_OUTPUTS)
    detector = _read_tflite(detector_path)
    settings = DetectorSettings()
    for net, source, expected in ((landmarks, path, None),
                                  (detector, detector_path, settings.input_size)):
        _, height, width, channels = net.info.inputs[0].shape
        if channels != 3 or height != width or (expected and height != expected):
            raise ValueError(f'{source}: input {net.info.inputs[0].shape} is not the square RGB '
                             f'input {entry.name} expects')
    if len(landmarks.info.outputs) != len(LANDMARK_OUTPUTS) or \
            landmarks.info.outputs[0].shape[-1] != 195:
        raise ValueError(f'{path}: outputs {[o.shape for o in landmarks.info.outputs]} are not '
                         'the BlazePose landmark outputs (39 x 5 landmarks, presence, heatmaps)')
    size = landmarks.info.inputs[0].shape[1]
    return BlazePose(
        name=entry.name, kind='pose', module=landmarks.eval().to(device), source=path,
        decoder='blazepose', input_size=(size, size), resize='roi',
        normalise=_tflite_normalise(landmarks.info.inputs[0]), device=device,
        joints=entry.joints, skeleton=entry.skeleton, info=landmarks.info,
        detector=detector.eval().to(device), detector_source=detector_path,
        detector_settings=settings)


def _tflite_normalise(spec) -> tuple[float, float]:
    """Pixel -> real input units of the TFLite input tensor."""
    if spec.quantization is not None and spec.dtype in ('uint8', 'int8'):
        scale, zero = spec.quantization.scale[0], spec.quantization.zero_point[0]
        if spec.dtype == 'int8':  # int8 inputs hold pixel - 128
            zero += 128
        return float(scale), float(-zero * scale)
    if spec.dtype in ('uint8', 'int8', 'int16'):
        return 1.0, 0.0  # raw pixels (the graph normalises them itself)
    return 1.0 / 255.0, 0.0  # float inputs: [0, 1], the common convention


def _outputs_fit(entry: ModelEntry, net) -> bool:
    """Say whether a TFLite network's outputs are what ``entry``'s decoder takes."""
    height, width = net.info.inputs[0].shape[1:3]
    if len(net.info.outputs) != 1:
        return False
    shape, dtype = tuple(net.info.outputs[0].shape), net.info.outputs[0].dtype
    if entry.decoder == 'class_map':
        return shape == (1, height, width) and 'int' in dtype
    if entry.decoder == 'probability':
        return shape == (1, height, width, 1) and dtype.startswith('float')
    if entry.decoder == 'single_pose':
        return shape == (1, 1, 17, 3)
    if entry.decoder == 'class_scores':
        return len(shape) == 4 and shape[:3] == (1, height, width)
    return True


def _guess_entry(path: Path, net) -> ModelEntry:
    """Describe an unregistered TFLite file from what its outputs look like."""
    inputs, outputs = net.info.inputs[0], net.info.outputs
    height, width = inputs.shape[1:3]
    shapes = [tuple(o.shape) for o in outputs]
    name = path.stem
    if len(outputs) == 1:
        shape, dtype = shapes[0], outputs[0].dtype
        if shape == (1, height, width) and dtype.startswith('int'):
            return ModelEntry(name, 'segmentation', path.name, 'file', '', 'class_map')
        if shape[:3] == (1, height, width) and len(shape) == 4:
            decoder = 'probability' if shape[3] == 1 else 'class_scores'
            return ModelEntry(name, 'segmentation', path.name, 'file', '', decoder)
        if len(shape) == 4 and shape[:2] == (1, 1) and shape[3] == 3 and shape[2] == 17:
            return ModelEntry(name, 'pose', path.name, 'file', '', 'single_pose',
                              resize='letterbox', joints=decoders.COCO17_JOINTS,
                              skeleton=decoders.COCO17_SKELETON)
    raise ValueError(f'{path}: cannot tell how to decode a model with outputs {shapes}; use a '
                     'registered name, or a segmentation model with a (1, H, W) class map or '
                     '(1, H, W, C) scores, or a single-pose model with (1, 1, 17, 3) keypoints')


def _load_checkpoint_model(path: Path, device: str) -> LoadedModel:
    from sparse_perception.models.checkpoints import load_checkpoint

    module, meta = load_checkpoint(path)
    fields = _checkpoint_meta(path, meta)
    return LoadedModel(module=module, source=path, device=device, info=meta,
                       details={'architecture': module.architecture,
                                'config': module.config_dict()}, **fields)


# The decoders a checkpoint may name for each kind ('blazepose' needs its detector's file).
_CHECKPOINT_DECODERS = {'segmentation': ('class_map', 'class_scores', 'probability'),
                        'pose': ('single_pose',)}


def _checkpoint_meta(path: Path, meta: dict) -> dict[str, Any]:
    """
    Return the LoadedModel fields a checkpoint's meta gives, checked.

    The meta is whatever the file's writer put there: a wrong value must be refused here,
    naming the field, not fail as a traceback once frames run.
    """
    from sparse_perception.models.checkpoints import CheckpointError
    from sparse_perception.models.transforms import RESIZE_MODES

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f'{path}: its meta {what}')

    kind, decoder = meta.get('kind'), meta.get('decoder')
    if kind not in KINDS or decoder not in DECODERS:
        raise refuse(f'must say kind (one of {KINDS}) and decoder (one of {DECODERS}); got '
                     f'kind={kind!r}, decoder={decoder!r}')
    if decoder not in _CHECKPOINT_DECODERS[kind]:
        raise refuse(f'says decoder {decoder!r}, which a {kind} checkpoint cannot use (one of '
                     f'{", ".join(_CHECKPOINT_DECODERS[kind])})')
    size = meta.get('input_size')
    if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)):
        raise refuse(f'input_size must be two positive whole numbers (height, width); got '
                     f'{size!r}')
    resize = meta.get('resize', 'resize')
    if resize not in RESIZE_MODES:
        raise refuse(f'resize must be one of {", ".join(RESIZE_MODES)}; got {resize!r}')
    normalise = meta.get('normalise', (1.0 / 255.0, 0.0))
    if not (isinstance(normalise, (list, tuple)) and len(normalise) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in normalise)):
        raise refuse(f'normalise must be two finite numbers (scale, offset); got {normalise!r}')
    names = {}
    for key in ('labels', 'joints'):
        value = meta.get(key, ())
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise refuse(f'{key} must be a list of names; got {value!r}')
        names[key] = tuple(value)
    skeleton = meta.get('skeleton', ())
    joints = len(names['joints']) or None  # without names, any index
    if not (isinstance(skeleton, (list, tuple)) and all(
            isinstance(e, (list, tuple)) and len(e) == 2
            and all(isinstance(j, int) and 0 <= j < (joints or j + 1) for j in e)
            for e in skeleton)):
        raise refuse('skeleton must be a list of pairs of joint indices'
                     + (f' (below {joints})' if joints else '') + f'; got {skeleton!r}')
    name = meta.get('name', path.stem)
    if not isinstance(name, str) or not name:
        raise refuse(f'name must be a non-empty text; got {name!r}')
    return {'name': name, 'kind': kind, 'decoder': decoder,
            'input_size': tuple(size) if size else None, 'resize': resize,
            'normalise': (float(normalise[0]), float(normalise[1])), **names,
            'skeleton': tuple(tuple(e) for e in skeleton)}


# What torch.save writes: a zip archive.
ZIP_MAGIC = b'PK\x03\x04'


def _head(path: Path) -> bytes:
    """Return the first 8 bytes of a model file, which tell its format."""
    try:
        with open(path, 'rb') as stream:
            return stream.read(8)
    except OSError as exc:
        raise DamagedModelError(f'model file {path} cannot be read: {exc.strerror}') from None


def _device(device: str) -> str:
    if device == 'auto':
        import torch

        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device != 'cpu' and not str(device).startswith('cuda'):
        raise ValueError(f"device {device!r} is not one of 'cpu', 'cuda', 'cuda:N', 'auto'")
    return str(device)


def _nhwc_to_nchw(outputs):
    import torch

    tensor = torch.as_tensor(outputs)
    return tensor.permute(0, 3, 1, 2) if tensor.dim() == 4 else tensor


def _as_graph(module):
    from torch import fx

    from sparse_perception.engine.tracing import forget_source_when_gone

    if isinstance(module, fx.GraphModule):
        return module
    return forget_source_when_gone(fx.symbolic_trace(module))
