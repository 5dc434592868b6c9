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
Exactness of the incremental engine against the dense model.

Property-based: hypothesis draws small networks over every supported layer type (convolutions
with kernels 1/3/5/7, strides 1/2, dilations, groups and padding modes, depthwise,
transposed convolutions, pooling, resampling, padding, residual adds, squeeze-excitation,
image pooling, concatenation, activations, affine arithmetic, pixel shuffles in both channel
orders, softmax/argmax tails), odd image sizes and random change sequences; after every frame
the incremental output must equal the dense output on the input the engine has seen (fp32: max
abs difference <= 1e-4 of the output scale).
"""

from engine_cases import (
    ALL_BLOCK_KINDS, change_sequence, effective_inputs, max_relative_difference, random_network)
from hypothesis import given, HealthCheck, settings, strategies as st
from sparse_perception.engine import EngineConfig, IncrementalModel
from support import HypothesisChooser
import torch

TOLERANCE = 1e-4


def check_sequence(model, x0, sequence, config=None, device='cpu'):
    """Run x0 then the sequence; compare with dense after every frame."""
    model = model.to(device)
    inc = IncrementalModel(model, config or EngineConfig())
    state = inc.new_state()
    frames = [(x0, None)] + sequence
    wanted = effective_inputs(x0, sequence)
    wanted = [x0] + wanted
    for i, ((frame, tiles), seen) in enumerate(zip(frames, wanted)):
        frame = frame.to(device)
        if tiles is not None and hasattr(tiles, 'tiles'):
            tiles = type(tiles)(tiles.tiles.to(device), *list(vars(tiles).values())[1:])
        elif tiles is not None:
            tiles = tiles.to(device)
        got = inc(frame, tiles, state)
        with torch.no_grad():
            expected = model(seen.to(device))
        assert_matches(got, expected, f'frame {i}')
    return inc


def assert_matches(got, expected, where):
    if not expected.dtype.is_floating_point:  # argmax: ties may break either way
        assert got.shape == expected.shape, where
        mismatch = (got.reshape(expected.shape) != expected).float().mean().item()
        assert mismatch <= 0.01, f'{where}: {mismatch:.3%} of class ids differ'
        return
    assert got.shape == expected.shape, f'{where}: shape {got.shape} != {expected.shape}'
    diff = max_relative_difference(got, expected)
    assert diff <= TOLERANCE, f'{where}: max relative difference {diff:.3g}'


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_random_networks_match_dense_after_any_sequence(data):
    c = HypothesisChooser(data)
    height, width = c.integer(5, 29), c.integer(5, 29)
    channels = c.integer(1, 4)
    built = random_network(c, channels, height, width, c.integer(1, 4), ALL_BLOCK_KINDS)
    if built is None:
        return  # the drawn shapes do not fit this image size
    model, kinds = built
    g = torch.Generator().manual_seed(c.integer(0, 1000))
    x0 = torch.randn(1, channels, height, width, generator=g)
    sequence = change_sequence(c, x0, c.integer(1, 5))
    config = EngineConfig(tile=c.pick((2, 4, 8)),
                          layer_dense_fallback=c.pick((0.0, 0.3, 0.8, 1.0)),
                          window_dense_fallback=c.pick((0.0, 0.35, 1.0)),
                          exact_change_test=c.pick((False, True)))
    check_sequence(model, x0, sequence, config)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_tiny_thresholds_stay_close_to_dense(data):
    # Thresholds > 0 take other paths than 0 (change tests on every computed row, tiles
    # that cross the map's border): they must run on any network and, when tiny, stay close.
    c = HypothesisChooser(data)
    height, width = c.integer(5, 29), c.integer(5, 29)
    channels = c.integer(1, 4)
    built = random_network(c, channels, height, width, c.integer(1, 4), ALL_BLOCK_KINDS)
    if built is None:
        return
    model, _ = built
    g = torch.Generator().manual_seed(c.integer(0, 1000))
    x0 = torch.randn(1, channels, height, width, generator=g)
    sequence = change_sequence(c, x0, c.integer(1, 4))
    config = EngineConfig(threshold_scale=1e-7, tile=c.pick((2, 4, 8)),
                          window_dense_fallback=c.pick((0.35, 1.0)))
    inc = IncrementalModel(model, config)
    state = inc.new_state()
    wanted = [x0] + effective_inputs(x0, sequence)
    for i, ((frame, tiles), seen) in enumerate(zip([(x0, None)] + sequence, wanted)):
        got = inc(frame, tiles, state)
        with torch.no_grad():
            expected = model(seen)
        if expected.dtype.is_floating_point:
            diff = max_relative_difference(got, expected)
            assert diff <= 1e-3, f'frame {i}: max relative difference {diff:.3g}'
