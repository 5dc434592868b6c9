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
The pipeline on the sync-free device mode (``model.execution``), through Triton's interpreter.

- 'device' with the kernels backend on CPU tensors gives the dense outputs at thresholds 0
  over frames with changes, fills the statistics the node diagnostics read, and takes a live
  threshold change through ``Pipeline.update`` (caches kept; a lowered threshold refreshes);
- 'auto' falls back to the eager executor, with a warning naming the layer, for a model the
  device mode cannot run; an explicit 'device' then raises ModelLoadError naming it;
- 'device' with the 'reference' backend is a contradiction and a clear ModelLoadError;
- 'auto' on the CPU is the eager executor.

The network is a real DeepLabV3-MobileNetV2 checkpoint of the package's own architecture at
width 0.25 on 24x32 frames (the interpreter runs every kernel program in Python).
"""

import logging
import os

from engine_cases import max_relative_difference
import numpy as np
import pytest
from sparse_perception import pipeline as pipeline_module
from sparse_perception import settings as st
from sparse_perception.engine import executor as executor_module
from sparse_perception.models import registry
from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
from sparse_perception.models.checkpoints import save_checkpoint
from sparse_perception.nodes.health import HealthMonitor
from sparse_perception.pipeline import ModelLoadError, Pipeline
import torch
from torch import nn

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1',
    reason='the kernels run on CPU tensors only under the interpreter; on CUDA the nodes use '
           'this path by default')

HEIGHT, WIDTH = 24, 32
META = {'kind': 'segmentation', 'decoder': 'class_map', 'labels': ['bg', 'a', 'b'],
        'normalise': [1 / 128, -1.0], 'resize': 'none', 'name': 'tiny'}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Save a tiny fully convolutional segmentation model (random weights); return its path."""
    torch.manual_seed(0)
    model = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25,
                                               aspp_channels=8)).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp('models') / 'tiny.pt', meta=META)


def frames(count, seed=0):
    """Return a random first frame, then frames that each repaint one small patch."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)]
    for _ in range(count - 1):
        frame = out[-1].copy()
        y, x = rng.integers(0, HEIGHT - 5), rng.integers(0, WIDTH - 5)
        frame[y:y + 5, x:x + 5] = rng.integers(0, 256, (5, 5, 3))
        out.append(frame)
    return out


def settings(model, **changes):
    # Change threshold 0 and one pixel per tile: the engine's input is exactly the frame.
    base = {'model.segmentation': str(model), 'model.device': 'cpu',
            'model.backend': 'kernels', 'model.execution': 'device',
            'change.threshold': 0.0, 'change.min_pixels': 1, 'change.tile_size': 8}
    base.update(changes)
    return st.replace(st.PerceptionSettings(), base)


class Recorder(nn.Module):
    """Wraps a head's dense tail to keep a copy of the trunk features it is given."""

    def __init__(self, tail):
        super().__init__()
        self.tail = tail
        self.seen = []

    def forward(self, *features):
        self.seen.append([f.detach().clone() for f in features])
        return self.tail(*features)


def record(pipeline):
    head = pipeline._heads['segmentation']
    # The engine's network keeps the tail it was built with: wrap that one.
    head.net.tail = head.model.module.tail = Recorder(head.model.module.tail)
    return head.net.tail


def dense_logits(pipeline, frame):
    model = pipeline._heads['segmentation'].model
    with torch.no_grad():
        return model.module.trunk(model.to_tensor(frame))[0]


@pytest.mark.slow
def test_device_mode_equals_dense_and_takes_live_thresholds(checkpoint, monkeypatch):
    # The engine runs the trunk alone here, so that the tail sees the logits to compare.
    monkeypatch.setattr(registry, 'engine_network', lambda module: (module.trunk, module.tail))
    pipeline = Pipeline(settings(checkpoint), heads=('segmentation',))
    head = pipeline._heads['segmentation']
    assert head.net.engine.execution == 'device' and not head.net.engine.use_graph
    seen = record(pipeline)
    sequence = frames(7)
    active = []
    for frame in sequence[:4]:
        result = pipeline.process(frame)
        got = seen.seen[-1][0]
        assert max_relative_difference(got, dense_logits(pipeline, frame)) <= 1e-4
        stats = result.stats.heads['segmentation']
        active.append(stats.active_fraction)
        assert stats.layers and 0 < stats.macs <= stats.dense_macs
    assert result.stats.heads['segmentation'].dense is False
    assert active[0] == 1.0 and all(0 < a < 1 for a in active[1:])

    # What the node diagnostics read of these statistics.
    health = HealthMonitor(st.DiagnosticsSettings(), now=0.0)
    health.processed(1.0, result.stats, None, stamp_ns=0)
    report = health.report(1.0)
    assert float(report.value('active fraction (last frame)')) == pytest.approx(
        result.stats.active_fraction, abs=1e-4)
    assert report.value('processing p50 (ms)') != 'n/a'
    assert 0 < result.stats.active_fraction < 1

    # A live threshold change reaches the engine: no reload, the caches stay (no dense
    # frame), and large thresholds hold the same kind of change back.
    model = head.model
    pipeline.update(settings(checkpoint, **{'sparsity.scale': 50.0}))
    result = pipeline.process(sequence[4])
    stats = result.stats.heads['segmentation']
    assert pipeline._heads['segmentation'].model is model
    assert not stats.dense and stats.active_fraction < min(active[1:]) / 2
    assert max(head.net.state.thresholds) > 0
    # Back to exact: thresholds went down, so the next frame runs dense and is exact again.
    pipeline.update(settings(checkpoint, **{'sparsity.scale': 0.0}))
    result = pipeline.process(sequence[5])
    assert result.stats.heads['segmentation'].dense
    assert max_relative_difference(seen.seen[-1][0], dense_logits(pipeline, sequence[5])) <= 1e-4
    result = pipeline.process(sequence[6])
    assert not result.stats.heads['segmentation'].dense
    assert max_relative_difference(seen.seen[-1][0], dense_logits(pipeline, sequence[6])) <= 1e-4


@pytest.mark.slow
def test_device_mode_runs_the_class_argmax_and_takes_live_thresholds(checkpoint):
    pipeline = Pipeline(settings(checkpoint), heads=('segmentation',))
    head = pipeline._heads['segmentation']
    sequence = frames(6, seed=3)

    def check(frame):
        result = pipeline.process(frame)
        logits = dense_logits(pipeline, frame)[0]
        top2 = logits.topk(2, dim=0).values
        # Device mode agrees with dense to 1e-4: the classes agree wherever the top two are
        # further apart than that.
        sure = (top2[0] - top2[1]).numpy() > 1e-4 * top2.abs().amax().item()
        np.testing.assert_array_equal(result.segmentation.mask[sure],
                                      logits.argmax(0).numpy()[sure])
        return result.stats.heads['segmentation']
    for frame in sequence[:3]:
        check(frame)
    # The arg-max is the engine's last layer, not a dense pass over the engine's outputs.
    assert head.net.engine.last_stats.layers[-1].kind == 'positionwise'
    active = head.net.engine.last_stats.active_fraction
    pipeline.update(settings(checkpoint, **{'sparsity.scale': 50.0}))
    result = pipeline.process(sequence[3])
    assert pipeline._heads['segmentation'] is head  # no reload
    assert not result.stats.heads['segmentation'].dense
    assert head.net.engine.last_stats.active_fraction < active / 2  # changes held back
    pipeline.update(settings(checkpoint, **{'sparsity.scale': 0.0}))
    assert check(sequence[4]).dense  # thresholds went down: a dense frame, exact again
    assert not check(sequence[5]).dense


def with_unfusable_logits(monkeypatch, input_size=None):
    """Make the loader give the tiny model logits whose epilogue the kernels cannot fuse."""
    load = registry.load_model

    def loader(*args, **kwargs):
        model = load(*args, **kwargs)
        torch.manual_seed(1)
        # Five pointwise steps after the convolution: the kernels fuse at most four.
        model.module.trunk.logits = nn.Sequential(
            nn.Conv2d(8, 3, 1), nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(),
            nn.ReLU()).eval()
        if input_size is not None:  # a fixed input size: lowered when it loads
            model.input_size, model.resize = input_size, 'resize'
        return model
    monkeypatch.setattr(registry, 'load_model', loader)


@pytest.mark.parametrize('input_size', [None, (HEIGHT, WIDTH)])
def test_auto_falls_back_to_eager_with_a_warning(checkpoint, monkeypatch, caplog, input_size):
    with_unfusable_logits(monkeypatch, input_size)
    # On the CPU 'auto' never picks the device mode; pretend this is CUDA with the kernels.
    monkeypatch.setattr(executor_module, 'auto_picks_device', lambda config, device: True)
    caplog.set_level(logging.WARNING, logger=pipeline_module.LOG.name)
    pipeline = Pipeline(settings(checkpoint, **{'model.execution': 'auto',
                                                'model.backend': 'auto'}),
                        heads=('segmentation',))
    sequence = frames(2)
    for frame in sequence:
        result = pipeline.process(frame)
    net = pipeline._heads['segmentation'].net
    assert net.engine.execution == net.execution == 'eager'
    assert "'logits.0'" in net.engine.fallback
    assert not result.stats.heads['segmentation'].dense  # the eager engine runs sparse
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'logits.0'" in warnings[0] and 'eager' in warnings[0]


@pytest.mark.parametrize('input_size', [None, (HEIGHT, WIDTH)])
def test_explicit_device_names_the_layer_it_cannot_run(checkpoint, monkeypatch, input_size):
    with_unfusable_logits(monkeypatch, input_size)
    match = r"device mode.*layer 'logits.0' \(conv\).*epilogue steps.*model.execution 'eager'"
    with pytest.raises(ModelLoadError, match=match):
        pipeline = Pipeline(settings(checkpoint), heads=('segmentation',))
        pipeline.process(frames(1)[0])  # fully convolutional: lowered at the first frame


def test_device_with_the_reference_backend_is_a_clear_error(checkpoint, monkeypatch):
    # Explicitly: the settings refuse the combination before anything loads.
    with pytest.raises(st.SettingError, match="execution 'device'.*resolves to 'reference'"):
        settings(checkpoint, **{'model.backend': 'reference'})
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')  # the environment switch, under auto
    with pytest.raises(ModelLoadError, match='SPARSE_PERCEPTION_BACKEND'):
        Pipeline(settings(checkpoint, **{'model.backend': 'auto'}), heads=('segmentation',))
    # 'auto' with the reference backend is simply the eager executor.
    pipeline = Pipeline(settings(checkpoint, **{'model.execution': 'auto',
                                                'model.backend': 'auto'}),
                        heads=('segmentation',))
    net = pipeline._heads['segmentation'].net
    assert net.execution == 'eager' and net.engine.fallback is None


def test_auto_is_eager_on_the_cpu_and_a_change_reloads(checkpoint):
    pipeline = Pipeline(settings(checkpoint, **{'model.execution': 'auto'}),
                        heads=('segmentation',))
    engine = pipeline._heads['segmentation'].net.engine
    assert engine.execution == 'eager' and engine.fallback is None
    pipeline.update(settings(checkpoint))  # 'device': a new engine, so the model reloads
    assert pipeline._heads['segmentation'].net.engine is not engine
    assert pipeline._heads['segmentation'].net.engine.execution == 'device'
    assert pipeline.settings.model.execution == 'device'
