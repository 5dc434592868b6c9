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
Train the learned gate (gates/learned.py) on unlabelled video, by distillation.

The segmentation network runs dense on every frame of the sources (bags, videos, image
folders, read by the replay's frame sources); its person tiles are the labels. The target of
a frame is its person tiles or the previous frame's, grown by ``margin`` tiles (the gate's
own margin is added at run time, so 0 by default); the inputs are what the gate sees at run
time: the scaled frame, the difference to the last one and the last frame's person tiles.
The loss is binary cross-entropy with the person tiles weighted ``recall_weight`` times the
rest: a tile left out costs accuracy, one let in only compute.

Each frame also makes a second sample whose last frame is shifted by up to ``shift`` cells (a
camera that moved): without it a gate trained on a static camera takes all motion for people,
and on a hand-held camera lets in a scatter of tiles that its margin grows into most of the
frame.

Everything is seeded and single-threaded: the same sources, settings and seed give the same
weights, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from sparse_perception.settings import ChangeSettings, ModelSettings


class TrainingError(ValueError):
    """The sources or the model cannot make training data; the message says why."""


@dataclass(frozen=True)
class TrainingOptions:
    """How a gate is trained; the defaults are those of ``sparse-perception gate train``."""

    # The fully convolutional DeepLab: the gate's tiles lie over the network input, so a gate
    # is made for the model it gates, and this is the one a moving camera gains from gating
    # (it runs at the frame's size; the fixed-size default model sees a few dozen tiles).
    model_name: str = 'deeplabv3_mnv2_pascal_fcn'
    tile: int = ChangeSettings().tile_size  # the change.tile_size the gate is for
    epochs: int = 30
    max_frames: int = 300  # read from all the sources together
    seed: int = 0
    margin: int = 0  # tiles the targets grow by (sparsity.gate_margin is added at run time)
    shift: int = 8  # quarter tiles a shifted copy of the last frame moves, as a moving camera
    recall_weight: float = 4.0  # of person tiles in the loss against the rest
    topic: str | None = None  # a bag's image topic (None: its only one)
    # The model.fcn_max_megapixels the gate is for: a larger frame reaches the network, and
    # the gate, scaled down to it.
    fcn_max_megapixels: float = ModelSettings().fcn_max_megapixels


@dataclass
class TrainingReport:
    """What a training run read and how well the gate fits its own frames."""

    frames: int
    samples: int
    tiles_positive: float  # share of target tiles that are positive
    recall: float  # of the target tiles, at the threshold
    gated: float  # share of tiles the gate lets in, at the threshold
    losses: list[float] = field(default_factory=list)  # per epoch
    meta: dict = field(default_factory=dict)
    partly: str | None = None  # the source --max-frames stopped in
    unread: list[str] = field(default_factory=list)  # sources after it, not read


# The training samples the distillation may hold (each frame's scaled image, motion and
# tiles, in float32, about 1.2 MB per frame of 768x576): a long source at a small tile size
# would otherwise grow them past the machine's memory.
SAMPLE_BUDGET_BYTES = 4 * 2**30
# The largest --recall-weight (the default is 4).
MAX_RECALL_WEIGHT = 1000.0


def frames_of(sources: Sequence[str | Path], max_frames: int, topic: str | None = None,
              tally: dict | None = None) -> Any:
    """
    Yield (run, RGB frame) over the sources, at most ``max_frames`` in all.

    Frames of one run follow each other: a new source, or a damaged frame (skipped), starts
    a new run, so that no training pair spans a gap. ``tally`` (if given) gets 'damaged',
    the frames that could not be decoded, 'partly', the source ``max_frames`` stopped in
    with frames left (or None), and 'unread', the sources after it.
    """
    from sparse_perception.replay.sources import input_kind

    tally = {} if tally is None else tally
    tally.update(damaged=0, unread=[], partly=None)
    count, run = 0, 0
    for index, source in enumerate(sources):
        path = Path(source)
        if not path.exists():
            raise TrainingError(f'{path} does not exist')
        if count >= max_frames:
            tally['unread'] = [str(s) for s in sources[index:]]
            return
        kind, _ = input_kind(path)
        run += 1
        with _opened(path, kind, topic) as frames:
            for frame in frames:
                if count >= max_frames:
                    tally['partly'] = str(path)  # a frame was left: the source goes on
                    break
                if hasattr(frame, 'image'):
                    count += 1
                    yield run, frame.image
                else:
                    tally['damaged'] += 1
                    run += 1


def _opened(path: Path, kind: str, topic: str | None) -> Any:
    """Open a source as the replay does: ``topic`` is a bag's; a folder gets a rate."""
    from sparse_perception.replay.sources import BAG_KINDS, open_source

    # An image folder needs a rate for its stamps, which training does not read.
    return open_source(path, topic=topic if kind in BAG_KINDS else None,
                       rate=1.0 if kind == 'folder' else None)


def check_sources(sources: Sequence[str | Path], topic: str | None = None) -> None:
    """
    Open every source once, before any frame goes through the model: a bad one fails now.

    ``topic`` picks the image topic of the bags among them (videos and folders have one).
    """
    from sparse_perception.replay.errors import ReplayError
    from sparse_perception.replay.sources import BAG_KINDS, input_kind

    bags = 0
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise TrainingError(f'{path} does not exist')
        try:
            kind, _ = input_kind(path)
            with _opened(path, kind, topic):
                pass
        except ReplayError as exc:
            raise TrainingError(str(exc)) from None
        bags += kind in BAG_KINDS
    if topic is not None and not bags:
        raise TrainingError(f'--topic {topic} picks the image topic of a bag, and no source '
                            'is one')


def distil(sources: Sequence[str | Path], model: Any, tile: int, *, margin: int = 0,
           max_frames: int = 300, shift: int = 8, seed: int = 0, topic: str | None = None,
           progress: Callable[[str], None] | None = None, tally: dict | None = None
           ) -> tuple[list[tuple[Any, Any, Any]], int]:
    """
    Return (image and motion, last person tiles, target) per frame after each run's first.

    And the number of frames read. A run is a stretch of consecutive frames (see frames_of,
    which fills ``tally`` if given). Raises :class:`TrainingError` when the model found no
    person in any frame of a training pair: a gate learns from the people it is shown.

    ``model`` is a loaded segmentation model (models/registry.py) with a 'person' class.
    """
    import torch

    from sparse_perception.gates.maker import grow, person_class, person_map, to_tiles
    from sparse_perception.gates.learned import features, small_image

    person = person_class(tuple(model.labels))
    if person is None:
        raise TrainingError(f"the model's labels have no 'person' class: {model.labels}")
    samples = []
    moves = torch.Generator().manual_seed(seed)
    last_run, last_small, last_people = None, None, None
    frames, held, positives, resized = 0, 0, 0, 0
    tally = {} if tally is None else tally
    for run, image in frames_of(sources, max_frames, topic, tally):
        frames += 1
        with torch.no_grad():
            pixels, _ = model.prepare(image)
            x = model.to_tensor(pixels)
            outputs = model.module.tail(*[f.float() for f in model.module.trunk(x)])
        height, width = x.shape[-2:]
        people = to_tiles(person_map(outputs, model.decoder, person), height, width, tile)
        positives += int(people.sum())
        small = small_image(x.cpu(), tile)
        resized += run == last_run and last_people.shape != people.shape
        if run == last_run and last_people.shape == people.shape:
            inputs, prior = features(small, last_small, last_people)
            target = grow(people | last_people, margin)
            samples.append((inputs, prior, target.float()[None]))
            if shift > 0:  # the same frame from a camera that moved since the last one
                dy, dx = (torch.randint(-shift, shift + 1, (2,), generator=moves)).tolist()
                moved = torch.roll(last_small, (dy, dx), (2, 3))
                inputs, _ = features(small, moved, last_people)
                samples.append((inputs, prior, target.float()[None]))
            held = sum(t.nbytes for t in samples[-1]) * len(samples)
            if held > SAMPLE_BUDGET_BYTES:
                remedy = (f'pass --max-frames {frames - 1} or fewer (or a larger --tile-size)'
                          if frames > 2 else 'pass a larger --tile-size')  # (2 at least)
                raise TrainingError(
                    f'after {frames} frames the training samples take {held / 2**30:.1f} GiB, '
                    f'and all of them are held in memory: {remedy}')
        last_run, last_small, last_people = run, small, people
        if progress is not None and frames % 25 == 0:
            progress(f'{frames} frames through the model')
    if frames == 0:
        damaged = f' ({tally["damaged"]} could not be decoded)' if tally['damaged'] else ''
        raise TrainingError('no frame could be read from ' + ', '.join(str(s) for s in sources)
                            + damaged)
    if progress is not None and (tally['damaged'] or tally['unread']):
        damaged = tally['damaged']
        progress(f'{frames} frames read' + (
            f'; {damaged} damaged frame{"s" if damaged > 1 else ""} skipped' if damaged
            else '') + (
            f'; --max-frames reached before {", ".join(tally["unread"])}'
            if tally['unread'] else ''))
    if not positives:
        raise TrainingError(f'the model found no person in the {frames} frame(s) read, and a '
                            'gate learns where people are from them: give sources with people '
                            'in view (nothing was written)')
    if samples and not any(bool(target.any()) for _, _, target in samples):
        # The people were in frames no pair ends at or starts from (a one-frame source, a
        # frame between damaged ones): the targets the gate would learn from are empty.
        raise TrainingError(f'the model found people only in frames that make no training '
                            f'pair (of the {frames} frame(s) read; a pair is two frames in a row '
                            'from one source, of one size), and a gate learns where people are '
                            'from the pairs: give sources with people in view (nothing was '
                            'written)')
    if not samples and resized:
        raise TrainingError(f'{frames} frame(s), but every two in a row differ in size: the '
                            'gate learns from consecutive frames of one size')
    if not samples:
        raise TrainingError(f'{frames} frame(s) but no two in a row from one source: the '
                            'gate learns from consecutive frames')
    return samples, frames


def _model_file(name: str, models_dir: str | None) -> Path | None:
    """Return the teacher model's file, which --out must not overwrite (None: not found)."""
    from sparse_perception.models.registry import REGISTRY, resolve

    if name in REGISTRY:
        try:
            return resolve(REGISTRY[name], models_dir)
        except (OSError, ValueError):  # loading it says why
            return None
    path = Path(name).expanduser()
    return path if path.exists() else None


def fit(samples: list[tuple[Any, Any, Any]], *, epochs: int, seed: int,
        recall_weight: float = 4.0, threshold: float = 0.5, learning_rate: float = 3e-3,
        progress: Callable[[str], None] | None = None) -> tuple[dict, TrainingReport]:
    """Train a new gate network on ``samples``; return its state_dict and a report."""
    import torch
    import torch.nn.functional as F

    from sparse_perception.gates.learned import network

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: sums in one order, the same weights every run
    try:
        torch.manual_seed(seed)
        net = network()
        optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
        order = torch.Generator().manual_seed(seed)
        weight = torch.tensor(recall_weight)
        losses = []
        for epoch in range(epochs):
            total = 0.0
            for i in torch.randperm(len(samples), generator=order).tolist():
                inputs, prior, target = samples[i]
                logits = net(inputs, prior)
                loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach())
            losses.append(total / len(samples))
            if progress is not None:
                progress(f'epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}')
        net.eval()
        hits = positives = gated = tiles = 0
        with torch.no_grad():
            for inputs, prior, target in samples:
                on = torch.sigmoid(net(inputs, prior)) >= threshold
                truth = target > 0.5
                hits += int((on & truth).sum())
                positives += int(truth.sum())
                gated += int(on.sum())
                tiles += truth.numel()
    finally:
        torch.set_num_threads(threads)
    report = TrainingReport(frames=0, samples=len(samples), tiles_positive=positives / tiles,
                            recall=hits / positives if positives else 1.0,
                            gated=gated / tiles, losses=losses)
    return net.state_dict(), report


def train(sources: Sequence[str | Path], out: str | Path,
          options: TrainingOptions = TrainingOptions(), *, models_dir: str | None = None,
          progress: Callable[[str], None] | None = None) -> TrainingReport:
    """Distil the gate from the options' model on the sources and write it to ``out``."""
    from sparse_perception.gates.learned import CELLS, model_digest, model_key, save, VERSION
    from sparse_perception.models.registry import load_model

    import math

    from sparse_perception import settings as st
    from sparse_perception.output_files import (check_outputs, missing_folders, OutputError,
                                                remove_empty)

    o = options
    model_name = o.model_name
    if o.epochs < 1 or o.max_frames < 2:
        raise TrainingError('--epochs must be at least 1 and --max-frames at least 2')
    if o.shift < 0:
        raise TrainingError('--shift must be at least 0')
    # (Above 1000 the person tiles are all the loss sees; far above, the float32 loss
    # overflows and the training fails only at its end.)
    if not (math.isfinite(o.recall_weight) and 0 < o.recall_weight <= MAX_RECALL_WEIGHT):
        raise TrainingError(f'--recall-weight must be a number above 0 and at most '
                            f'{MAX_RECALL_WEIGHT:g}, got {o.recall_weight:g}')
    # The settings the gate is made for bound these: a gate file no pipeline could load, or
    # a tile map of gigabytes, fails here.
    try:
        st.check_flags([('--tile-size', 'change.tile_size', o.tile),
                        ('--margin', 'sparsity.gate_margin', o.margin),
                        ('--fcn-max-megapixels', 'model.fcn_max_megapixels',
                         o.fcn_max_megapixels)])
    except st.SettingError as exc:
        raise TrainingError(str(exc)) from None
    if not sources:
        raise TrainingError('no sources given')
    if models_dir is not None and not Path(models_dir).is_dir():
        raise TrainingError(f'--models-dir {models_dir}: no such folder')
    check_sources(sources, o.topic)
    model_file = _model_file(model_name, models_dir)
    out = Path(out)
    missing = missing_folders(out)
    try:  # before minutes of training: a path that cannot be written, or that is an input
        check_outputs([('--out', out)], [*sources, *([model_file] if model_file else [])],
                      create_folders=True)
    except OutputError as exc:
        raise TrainingError(str(exc)) from None
    finally:
        # The check made the missing folders to try a write there; save() makes them again,
        # so that a training that fails or is stopped leaves none behind.
        remove_empty(missing)
    try:
        model = load_model(model_name, 'cpu', models_dir=models_dir)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise TrainingError(f'cannot load the segmentation model {model_name!r}: {exc}') \
            from exc
    if model.kind != 'segmentation':
        raise TrainingError(f'{model_name!r} is a {model.kind} model, not a segmentation model')
    # The network input the pipeline would give a frame: a large one is scaled down.
    model.max_pixels = round(o.fcn_max_megapixels * 1e6)
    tally: dict = {}
    samples, frames = distil(sources, model, o.tile, margin=o.margin, max_frames=o.max_frames,
                             shift=o.shift, seed=o.seed, topic=o.topic, progress=progress,
                             tally=tally)
    state, report = fit(samples, epochs=o.epochs, seed=o.seed, recall_weight=o.recall_weight,
                        progress=progress)
    if not all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point()):
        raise TrainingError(f'training diverged (loss {report.losses[-1]:.4g} after the last '
                            'epoch): the weights are not finite numbers; nothing was written')
    report.frames, report.partly, report.unread = frames, tally['partly'], tally['unread']
    report.meta = {'version': VERSION, 'tile': o.tile, 'cells': CELLS,
                   'model': model_key(model_name), 'model_sha256': model_digest(model_name),
                   'margin': o.margin, 'shift': o.shift, 'seed': o.seed, 'epochs': o.epochs,
                   'samples': len(samples), 'recall_weight': o.recall_weight,
                   'fcn_max_megapixels': float(o.fcn_max_megapixels)}
    save(state, report.meta, out)
    return report
