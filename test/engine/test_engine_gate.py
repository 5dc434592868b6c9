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
Spatial gates in the incremental engine: nothing lost, and no gate (or a full one) is exact.

A gate limits where layers recompute; changes outside it stay stale per layer until a gate
covers them. These tests draw random networks (every layer kind), change sequences and gates:
a full gate gives bit for bit the ungated result; after any gated sequence, one frame with a
full gate and no new change brings the output back to the dense model's on the input seen;
and a change entirely outside the gate leaves the output as it was.
"""

from engine_cases import (
    ALL_BLOCK_KINDS, change_sequence, effective_inputs, max_relative_difference, random_network)
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from sparse_perception.engine import EngineConfig, EngineError, IncrementalModel
from sparse_perception.engine.gate import Gate
from support import HypothesisChooser
import torch

TOLERANCE = 1e-4  # of the output scale, as the exactness tests

_SETTINGS = {'deadline': None,
             'suppress_health_check': [HealthCheck.too_slow, HealthCheck.filter_too_much]}


def _draw(c):
    height, width = c.integer(5, 29), c.integer(5, 29)
    channels = c.integer(1, 4)
    built = random_network(c, channels, height, width, c.integer(1, 4), ALL_BLOCK_KINDS)
    if built is None:
        return None
    g = torch.Generator().manual_seed(c.integer(0, 1000))
    x0 = torch.randn(1, channels, height, width, generator=g)
    config = EngineConfig(tile=c.pick((2, 4, 8)),
                          layer_dense_fallback=c.pick((0.3, 0.8, 1.0)),
                          window_dense_fallback=c.pick((0.0, 0.35, 1.0)))
    return built[0], x0, config


def _random_gate(c, height, width):
    tile = c.pick((1, 2, 4, 8))
    th, tw = -(-height // tile), -(-width // tile)
    g = torch.Generator().manual_seed(c.integer(0, 10 ** 6))
    return tile, torch.rand(th, tw, generator=g) < c.pick((0.0, 0.3, 0.7))


class _GateMap:
    """A gate given like a ChangeMap: a tile map and its tile size."""

    def __init__(self, tiles, tile_size):
        self.tiles, self.tile_size = tiles, tile_size


def _same(a, b):
    if isinstance(a, (tuple, list)):
        return all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


@settings(max_examples=25, **_SETTINGS)
@given(st.data())
def test_a_full_gate_is_bit_for_bit_the_ungated_engine(data):
    c = HypothesisChooser(data)
    drawn = _draw(c)
    if drawn is None:
        return
    model, x0, config = drawn
    sequence = change_sequence(c, x0, c.integer(1, 4))
    plain, gated = IncrementalModel(model, config), IncrementalModel(model, config)
    s_plain, s_gated = plain.new_state(), gated.new_state()
    h, w = x0.shape[-2:]
    full = _GateMap(torch.ones(-(-h // 4), -(-w // 4), dtype=torch.bool), 4)
    for i, (frame, tiles) in enumerate([(x0, None)] + sequence):
        a = plain(frame, tiles, s_plain)
        b = gated(frame, tiles, s_gated, gate=full)
        assert _same(a, b), f'frame {i}: a full gate changed the result'
    assert s_gated.stale_positions == 0


def test_a_full_gate_keeps_the_order_of_the_changed_positions():
    # A tile map lists the changed pixels tile by tile, not row by row, and a sigmoid on the
    # CPU rounds a row by its place in the batch (vectorised, or in the scalar tail): 81
    # rows leave a long tail, so a full gate that reordered the rows would show.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.Sigmoid()).eval()
    config = EngineConfig(layer_dense_fallback=1.0)  # the 1x1 convolution stays sparse
    plain, gated = IncrementalModel(model, config), IncrementalModel(model, config)
    s_plain, s_gated = plain.new_state(), gated.new_state()
    everything = torch.ones(6, 3, dtype=torch.bool)  # tiles of 3 over an 18x9 input
    # Half the tiles: a frame with most of them changed is stored whole, in raster order.
    half = torch.zeros(6, 3, dtype=torch.bool)
    half[:3] = True
    x = torch.randn(1, 3, 18, 9)
    plain(x, None, s_plain)
    gated(x, None, s_gated, gate=everything)
    for i in range(8):
        x = x + torch.randn(x.shape)
        a = plain(x, half, s_plain)
        b = gated(x, half, s_gated, gate=everything)
        assert plain.last_stats.layers[0].mode == 'sparse'
        assert torch.equal(a, b), f'frame {i + 1}: a full gate changed the result'


@settings(max_examples=30, **_SETTINGS)
@given(st.data())
def test_gated_changes_are_recomputed_when_the_gate_returns(data):
    c = HypothesisChooser(data)
    drawn = _draw(c)
    if drawn is None:
        return
    model, x0, config = drawn
    h, w = x0.shape[-2:]
    sequence = change_sequence(c, x0, c.integer(1, 5))
    inc = IncrementalModel(model, config)
    state = inc.new_state()
    inc(x0, None, state)
    for frame, tiles in sequence:
        tile, gate = _random_gate(c, h, w)
        inc(frame, tiles, state, gate=_GateMap(gate, tile))
    seen = ([x0] + effective_inputs(x0, sequence))[-1]
    # No new change: only the stale positions are recomputed, now that the gate covers them.
    still = torch.zeros(-(-h // 4), -(-w // 4), dtype=torch.bool)
    got = inc(seen, still, state, gate=torch.ones_like(still))
    assert state.stale_positions == 0
    with torch.no_grad():
        expected = model(seen)
    if expected.dtype.is_floating_point:
        diff = max_relative_difference(got, expected)
        assert diff <= TOLERANCE, f'max relative difference {diff:.3g} after the gate returned'
    else:  # argmax: ties may break either way
        assert (got.reshape(expected.shape) != expected).float().mean() <= 0.01


def _conv_chain():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1)).eval()


def test_a_change_outside_the_gate_waits_and_is_not_lost():
    model = _conv_chain()
    inc = IncrementalModel(model, EngineConfig(tile=2))
    state = inc.new_state()
    x0 = torch.randn(1, 3, 32, 32)
    first = inc(x0, None, state).clone()
    x1 = x0.clone()
    x1[..., 24:, 24:] += 1.0  # a change in the bottom-right corner
    tiles = torch.zeros(4, 4, dtype=torch.bool)
    tiles[3, 3] = True
    gate = torch.zeros(4, 4, dtype=torch.bool)
    gate[0, 0] = True  # the gate is top-left: the change must wait
    out = inc(x1, tiles, state, gate=gate)
    assert torch.equal(out, first)
    assert state.stale_positions > 0
    assert inc.last_stats.macs == 0
    assert inc.last_stats.gate_fraction == pytest.approx(1 / 16)
    # Nothing changes in the next frame, but the gate now covers the corner.
    gate = torch.zeros(4, 4, dtype=torch.bool)
    gate[2:, 2:] = True
    out = inc(x1, torch.zeros(4, 4, dtype=torch.bool), state, gate=gate)
    with torch.no_grad():
        expected = model(x1)
    assert state.stale_positions == 0
    assert max_relative_difference(out, expected) <= TOLERANCE
    assert 0 < inc.last_stats.macs < inc.last_stats.dense_macs


def test_a_dense_frame_drops_what_was_stale():
    model = _conv_chain()
    inc = IncrementalModel(model, EngineConfig(tile=2))
    state = inc.new_state()
    x0 = torch.randn(1, 3, 32, 32)
    inc(x0, None, state)
    x1 = x0 + 1.0
    inc(x1, torch.ones(4, 4, dtype=torch.bool), state, gate=torch.zeros(4, 4, dtype=torch.bool))
    assert state.stale_positions > 0
    out = inc(x1, None, state, gate=torch.zeros(4, 4, dtype=torch.bool))  # dense: no gate
    assert state.stale_positions == 0
    with torch.no_grad():
        assert max_relative_difference(out, model(x1)) <= TOLERANCE


def test_a_gate_of_the_wrong_shape_or_type_is_refused():
    inc = IncrementalModel(_conv_chain(), EngineConfig(tile=2))
    state = inc.new_state()
    x0 = torch.randn(1, 3, 32, 32)
    inc(x0, None, state)
    still = torch.zeros(4, 4, dtype=torch.bool)
    with pytest.raises(EngineError, match='gate has dtype'):
        inc(x0, still, state, gate=torch.zeros(4, 4))
    with pytest.raises(EngineError, match='does not match a 32x32 frame'):
        inc(x0, still, state, gate=torch.zeros(3, 5, dtype=torch.bool))

    class Map:  # what a ChangeMap gives the engine: tiles and their edge in pixels
        def __init__(self, tiles, tile_size=8):
            self.tiles, self.tile_size = tiles, tile_size

    # A map's tiles were not checked: uint8 ones gave -512 or 65152 stale positions (the
    # complement of 1 is 254), float ones a TypeError, an empty one a ZeroDivisionError.
    for bad, words in ((Map(torch.ones(4, 4, dtype=torch.uint8)), 'gate.tiles has dtype'),
                       (Map(torch.ones(4, 4)), 'gate.tiles has dtype'),
                       (Map(still, 0), 'gate.tile_size must be a whole number'),
                       (Map(still, 8.0), 'gate.tile_size must be a whole number'),
                       (Map(torch.ones(4, 4, 1, dtype=torch.bool)), r'gate.tiles must be a'),
                       (Map(np.ones((4, 4), dtype=object)), 'gate.tiles has dtype object'),
                       (torch.zeros(0, 4, dtype=torch.bool), 'a tile map holds at least one'),
                       (torch.zeros(4, 4, dtype=torch.bool, device='meta'), 'meta device')):
        with pytest.raises(EngineError, match=words):
            inc(x0, still, state, gate=bad)
        with pytest.raises(EngineError, match=words):  # a dense frame checks it too
            inc(x0, None, state, gate=bad)
    with pytest.raises(EngineError, match='tiles.tiles has dtype'):  # a change map as well
        inc(x0, Map(torch.ones(4, 4, dtype=torch.uint8)), state)
    assert state.stale_positions == 0
    inc(x0, Map(still), state, gate=Map(still))  # a good map still runs
    inc(x0, Map(np.ones((4, 4), bool)[::-1]), state, gate=Map(np.ones((4, 4), bool)[:, ::-1]))


def test_the_gate_at_a_layer_covers_every_position_over_a_gated_tile():
    tiles = torch.zeros(4, 5, dtype=torch.bool)
    tiles[1, 2] = True  # input pixels rows 8-15, columns 16-23 (tile 8 over 30x37)
    gate = Gate(tiles, 8, 30, 37)
    assert gate.at(30, 37).nonzero().tolist() == [
        [y, x] for y in range(8, 16) for x in range(16, 24)]
    half = gate.at(15, 19)  # a stride-2 layer: rows 4-7; columns 8-12 overlap 16-23
    ys, xs = half.nonzero().unbind(1)
    assert (ys.min(), ys.max()) == (4, 7)
    assert (xs.min(), xs.max()) == (8, 12)
    assert gate.at(1, 1).tolist() == [[True]]
    assert not Gate(torch.zeros(4, 5, dtype=torch.bool), 8, 30, 37).at(7, 9).any()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_gate_at_every_layer_size_is_the_overlap_of_its_pixels_with_gated_tiles(data):
    tile = data.draw(st.sampled_from([1, 3, 8, 16]))
    height, width = data.draw(st.integers(1, 70)), data.draw(st.integers(1, 70))
    th, tw = -(-height // tile), -(-width // tile)
    tiles = torch.tensor(data.draw(st.lists(st.booleans(), min_size=th * tw,
                                            max_size=th * tw))).reshape(th, tw)
    gate = Gate(tiles, tile, height, width)
    h, w = data.draw(st.integers(1, 2 * height)), data.draw(st.integers(1, 2 * width))
    # Position (i, j) stands for input rows [i*H/h, (i+1)*H/h) and columns likewise.
    pixels = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:height, :width]
    expected = torch.tensor([[bool(pixels[(i * height) // h:-(-(i + 1) * height // h),
                                          (j * width) // w:-(-(j + 1) * width // w)].any())
                              for j in range(w)] for i in range(h)]).reshape(h, w)
    assert torch.equal(gate.at(h, w), expected)
    assert gate.at(h, w) is gate.at(h, w)  # made once per frame and size


def test_an_ungated_frame_after_gated_ones_recomputes_what_was_stale():
    model = _conv_chain()
    inc = IncrementalModel(model, EngineConfig(tile=2))
    state = inc.new_state()
    x0 = torch.randn(1, 3, 32, 32)
    inc(x0, None, state)
    x1 = x0.clone()
    x1[..., :8, :8] -= 1.0
    tiles = torch.zeros(4, 4, dtype=torch.bool)
    tiles[0, 0] = True
    inc(x1, tiles, state, gate=torch.zeros(4, 4, dtype=torch.bool))
    assert state.stale_positions > 0
    out = inc(x1, torch.zeros(4, 4, dtype=torch.bool), state)  # the gate is switched off
    assert state.stale_positions == 0
    with torch.no_grad():
        assert max_relative_difference(out, model(x1)) <= TOLERANCE
