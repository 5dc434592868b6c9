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
Checks of every Triton kernel against its reference, for the pure and gpu tiers.

The pure tier runs them on CPU tensors through Triton's interpreter, the gpu tier on CUDA.

Each ``check_*`` draws random shapes from a seed (channels not multiples of 8, odd sizes),
runs the kernel and its plain-torch reference, and asserts agreement with a tolerance that
follows the precision: fp32 within a few ulps of the output scale; fp16
within twice the error of the plain-torch fp16 path against an fp32 reference (at least two
fp16 ulps of the scale). The tile forms of the sync-free path are checked against dense
torch ops: candidates equal the dense result, every other cache row is untouched, and list
slots past the device-side count are ignored.
"""

from __future__ import annotations

import random

from sparse_perception.engine.backend import new_cache
from sparse_perception.engine.device import TILING
from sparse_perception.engine.executor import compute_tile, Tiling
from sparse_perception.kernels.steps import Step
import torch
import torch.nn.functional as F


def tolerance(dtype: torch.dtype, ref32: torch.Tensor, low: torch.Tensor | None) -> float:
    """Return the allowed max abs error against an fp32 reference for results in ``dtype``."""
    scale = float(ref32.abs().max()) if ref32.numel() else 1.0
    scale = max(scale, 1e-3)
    if dtype == torch.float32:
        return 1e-5 * scale
    unit = 2.0 ** -10 if dtype == torch.float16 else 2.0 ** -7
    torch_error = float((low.float() - ref32).abs().max()) if low is not None and \
        low.numel() else 0.0
    return max(2.0 * torch_error, 2.0 * unit * scale)


def assert_close(got: torch.Tensor, ref32: torch.Tensor, dtype: torch.dtype,
                 low: torch.Tensor | None = None, what: str = '') -> None:
    """Assert ``got`` (in ``dtype``) matches the fp32 reference (see :func:`tolerance`)."""
    assert got.shape == ref32.shape, (what, got.shape, ref32.shape)
    if not got.numel():
        return
    err = float((got.float() - ref32.float()).abs().max())
    allowed = tolerance(dtype, ref32.float(), low)
    assert err <= allowed, f'{what}: max error {err:.3g} > allowed {allowed:.3g} ({dtype})'


def _rng(seed: int) -> tuple[random.Random, torch.Generator]:
    return random.Random(seed), torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape, device='cpu') -> torch.Tensor:
    return torch.randn(*shape, generator=g).to(device)


# -- primitives of the eager backend ------------------------------------------------------------

def check_gather(device: str, dtype: torch.dtype, seed: int, empty: bool = False) -> None:
    from sparse_perception.kernels import gather

    r, g = _rng(seed)
    rows, channels = r.randint(1, 40), r.randint(1, 21)
    src = _randn(g, rows, channels, device=device).to(dtype)
    shape = (0,) if empty else (r.randint(1, 7), r.randint(1, 5))
    index = torch.randint(0, rows, shape, generator=g).to(device)
    got = gather.gather_rows(src, index)
    assert torch.equal(got, gather.gather_rows_ref(src, index))


def check_linear(device: str, dtype: torch.dtype, seed: int, empty: bool = False) -> None:
    from sparse_perception.kernels import conv1x1

    r, g = _rng(seed)
    n = 0 if empty else r.randint(1, 90)
    cin, cout = r.randint(1, 37), r.randint(1, 45)
    rows = _randn(g, n, cin, device=device)
    w = _randn(g, cin, cout, device=device) / cin ** 0.5
    b = _randn(g, cout, device=device) if r.random() < 0.7 else None
    ref = conv1x1.linear_rows_ref(rows.double(), w.double(), None if b is None else b.double())
    low = conv1x1.linear_rows_ref(rows.to(dtype), w.to(dtype), None if b is None else
                                  b.to(dtype))
    got = conv1x1.linear_rows(rows.to(dtype), w.to(dtype), None if b is None else b.to(dtype))
    assert_close(got, ref.float(), dtype, low, 'linear_rows')


def _patches(r, g, device, channels, kernel, stride, dilation, tile, count):
    ph = (tile - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    pw = (tile - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    x = _randn(g, count, channels, ph, pw, device=device)
    return x.contiguous(memory_format=torch.channels_last)


def check_depthwise(device: str, dtype: torch.dtype, seed: int, stride: int,
                    empty: bool = False) -> None:
    from sparse_perception.kernels import depthwise

    r, g = _rng(seed)
    cin = r.randint(1, 19)
    mult = r.choice((1, 1, 2))
    k = r.choice((3, 3, 5))
    dil = (r.choice((1, 2)),) * 2
    tile = r.choice((1, 2, 3, 4))
    p = _patches(r, g, device, cin, (k, k), (stride, stride), dil, tile,
                 0 if empty else r.randint(1, 6))
    w = _randn(g, cin * mult, 1, k, k, device=device) / k
    b = _randn(g, cin * mult, device=device)
    ref = depthwise.depthwise_patches_ref(p.double(), w.double(), b.double(), (stride,) * 2,
                                          dil)
    low = depthwise.depthwise_patches_ref(p.to(dtype), w.to(dtype), b.to(dtype),
                                          (stride,) * 2, dil)
    got = depthwise.depthwise_patches(p.to(dtype), w.to(dtype), b.to(dtype), (stride,) * 2,
                                      dil)
    assert_close(got, ref.float(), dtype, low, 'depthwise_patches')


def check_conv(device: str, dtype: torch.dtype, seed: int, empty: bool = False) -> None:
    from sparse_perception.kernels import conv

    r, g = _rng(seed)
    groups = r.choice((1, 1, 2, 3))
    cin, cout = groups * r.randint(1, 7), groups * r.randint(1, 9)
    k = (r.choice((1, 3, 5)), r.choice((1, 3)))
    stride = (r.choice((1, 2)), r.choice((1, 2)))
    dil = (r.choice((1, 2)), 1)
    tile = r.choice((1, 2, 4))
    p = _patches(r, g, device, cin, k, stride, dil, tile, 0 if empty else r.randint(1, 5))
    w = _randn(g, cout, cin // groups, *k, device=device) / (cin * k[0] * k[1] / groups) ** 0.5
    b = _randn(g, cout, device=device) if r.random() < 0.7 else None
    args = (stride, dil, groups)
    ref = conv.conv_patches_ref(p.double(), w.double(), None if b is None else b.double(),
                                *args)
    low = conv.conv_patches_ref(p.to(dtype), w.to(dtype), None if b is None else b.to(dtype),
                                *args)
    got = conv.conv_patches(p.to(dtype), w.to(dtype), None if b is None else b.to(dtype),
                            *args)
    assert_close(got, ref.float(), dtype, low, 'conv_patches')


def check_pool(device: str, dtype: torch.dtype, seed: int, mode: str,
               empty: bool = False) -> None:
    from sparse_perception.kernels import pool

    r, g = _rng(seed)
    channels = r.randint(1, 37)
    k = (r.choice((2, 3)), r.choice((2, 3)))
    stride = (r.choice((1, 2)), r.choice((1, 2)))
    dil = (r.choice((1, 2)), r.choice((1, 2))) if mode == 'max' else (1, 1)
    p = _patches(r, g, device, channels, k, stride, dil, r.choice((1, 2, 4)),
                 0 if empty else r.randint(1, 6))
    ref = pool.pool_patches_ref(p.double(), mode, k, stride, dil)
    low = pool.pool_patches_ref(p.to(dtype), mode, k, stride, dil)
    got = pool.pool_patches(p.to(dtype), mode, k, stride, dil)
    assert_close(got, ref.float(), dtype, low, f'pool_patches {mode}')


def check_resample_taps(device: str, dtype: torch.dtype, seed: int,
                        empty: bool = False) -> None:
    from sparse_perception.kernels import resample

    r, g = _rng(seed)
    n, k, channels = (0 if empty else r.randint(1, 50)), r.choice((1, 2, 4, 16)), \
        r.randint(1, 29)
    rows = _randn(g, n, k, channels, device=device)
    w = torch.rand(n, k, generator=g).to(device)
    ref = resample.resample_taps_ref(rows.double(), w.double())
    low = resample.resample_taps_ref(rows.to(dtype), w.to(dtype))
    got = resample.resample_taps(rows.to(dtype), w.to(dtype))
    assert_close(got, ref.float(), dtype, low, 'resample_taps')


def _epilogue_case(r, g, positions, channels, device, dtype):
    """Random epilogue steps with a residual operand cache; (steps, operands)."""
    operand = new_cache(positions, channels, dtype, device)
    operand[:positions] = _randn(g, positions, channels, device=device).to(dtype)
    pool_operand = new_cache(1, channels, dtype, device)
    pool_operand[:1] = torch.rand(1, channels, generator=g).to(device, dtype) + 0.5
    choices = [
        [Step('act', 'hardtanh', (0.0, 6.0))],
        [Step('binary', 'add', operand=1)],
        [Step('affine', 'affine', const=(torch.rand(1, channels, generator=g).to(device, dtype),
                                         _randn(g, 1, channels, device=device).to(dtype))),
         Step('act', r.choice(('relu', 'hardswish', 'silu', 'sigmoid', 'tanh')), ())],
        [Step('binary', 'mul', operand=2), Step('scalar', 'sub', const=0.25, reverse=True)],
        [Step('act', 'leaky_relu', (0.1,)), Step('binary', 'sub', operand=1, reverse=True),
         Step('act', 'clamp', (None, 1.5))],
        [],
    ]
    return r.choice(choices), {1: operand, 2: pool_operand}


def check_store(device: str, dtype: torch.dtype, seed: int, test: bool, threshold: float,
                indexed: bool = True, empty: bool = False) -> None:
    """Fused epilogue, change test and scatter against the engine's reference backend."""
    from sparse_perception.kernels import epilogue

    r, g = _rng(seed)
    positions, channels = r.randint(1, 60), r.randint(1, 70)
    steps, operands = _epilogue_case(r, g, positions, channels, device, dtype)
    cache = new_cache(positions, channels, dtype, device)
    cache[:positions] = _randn(g, positions, channels, device=device).to(dtype)
    if indexed:
        n = 0 if empty else r.randint(1, positions)
        index = torch.randperm(positions, generator=g)[:n].to(device)
    else:
        n, index = positions, None
    raw = (cache[index] if index is not None else cache[:positions]).clone()
    moved = torch.rand(n, generator=g) < 0.5  # half the rows move, by varying amounts
    raw[moved.to(device)] += (_randn(g, int(moved.sum()), channels, device=device) * 0.5).to(
        dtype)
    ref_cache = cache.clone()
    want_old = r.random() < 0.5
    ref_changed, ref_old = epilogue.store_rows_ref(ref_cache, index, raw, steps, operands,
                                                   threshold, test, want_old)
    ep = epilogue.encode(steps, operands)
    flags, old = epilogue.store_rows(cache, index, raw, ep, threshold, test,
                                     threshold == 0, want_old)
    rows = slice(0, positions)
    exact = dtype == torch.float32 and not steps
    if exact:  # a plain scatter: identical bits
        assert torch.equal(cache[rows], ref_cache[rows])
    else:
        assert_close(cache[rows], ref_cache[rows].float(), dtype, None, 'store cache')
    assert torch.equal(cache[positions:positions + 2], ref_cache[positions:positions + 2])
    if not test:
        return
    sel = flags.bool().nonzero().squeeze(1).cpu()
    got_rows = sel if index is None else index.cpu()[sel]
    want = torch.arange(positions) if index is None else index.cpu()
    want = want if ref_changed is None else ref_changed.cpu()
    # (At threshold 0 a row changed when any of its values did: the exact test.)
    if exact:
        assert sorted(got_rows.tolist()) == sorted(want.tolist())
    else:  # rows near the threshold may flip with rounding: compare the rest
        assert len(set(got_rows.tolist()) ^ set(want.tolist())) <= max(1, n // 10)
    if want_old and exact:
        assert ref_old is not None and torch.equal(old[sel], ref_old)


# -- masks ------------------------------------------------------------------------------------

def check_dilate(device: str, seed: int) -> None:
    from sparse_perception.kernels import masks

    r, g = _rng(seed)
    h, w = r.randint(1, 23), r.randint(1, 23)
    k = (r.choice((1, 2, 3, 5)), r.choice((1, 3, 7)))
    stride = (r.choice((1, 2)), r.choice((1, 2)))
    dil = (r.choice((1, 2)), r.choice((1, 2)))
    pads = (r.randint(0, k[0] // 2),) * 2 + (r.randint(0, k[1] // 2),) * 2
    ho = (h + pads[0] + pads[1] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + pads[2] + pads[3] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        return
    mask = (torch.rand(h, w, generator=g) < r.choice((0.0, 0.05, 0.3, 1.0))).to(device)
    got = masks.dilate_mask(mask, pads, k, stride, dil, (ho, wo))
    assert torch.equal(got, masks.dilate_mask_ref(mask, pads, k, stride, dil, (ho, wo)))


def check_tile_flags_and_lists(device: str, seed: int) -> None:
    from sparse_perception.kernels import masks

    r, g = _rng(seed)
    h, w = r.randint(1, 40), r.randint(1, 40)
    tile = r.choice((1, 2, 3, 4, 5, 8, 16, 17))
    mask = (torch.rand(h, w, generator=g) < r.choice((0.0, 0.02, 0.2, 1.0))).to(device)
    flags = masks.tile_flags(mask, tile)
    assert torch.equal(flags, masks.tile_flags_ref(mask, tile))
    listed, count = masks.list_tiles(flags)
    ref_list, ref_count = masks.list_tiles_ref(flags)
    n = int(count[0])
    assert n == int(ref_count[0])
    assert sorted(listed[:n].tolist()) == ref_list[:n].tolist()
    assert (listed[n:] == -1).all()


# -- the sync-free tile forms --------------------------------------------------------------------

def _tile_case(r, g, device, out_hw, tile, fraction):
    """Random candidate mask over a map and its tile list (with garbage past the count)."""
    cand = (torch.rand(out_hw, generator=g) < fraction).to(device)
    nty, ntx = -(-out_hw[0] // tile[0]), -(-out_hw[1] // tile[1])
    padded = F.pad(cand, (0, ntx * tile[1] - out_hw[1], 0, nty * tile[0] - out_hw[0]))
    flags = padded.view(nty, tile[0], ntx, tile[1]).any(3).any(1).reshape(-1)
    listed = flags.nonzero().squeeze(1).to(torch.int32)
    order = torch.randperm(listed.numel(), generator=g).to(device)
    capacity = nty * ntx
    tiles = torch.full((capacity,), 0, dtype=torch.int32, device=device)
    tiles[:listed.numel()] = listed[order]
    if listed.numel() < capacity:  # past the count: valid-looking ids that must be ignored
        tiles[listed.numel():] = torch.randint(0, capacity, (capacity - listed.numel(),),
                                               generator=g).to(device, torch.int32)
    count = torch.tensor([listed.numel()], dtype=torch.int32, device=device)
    return cand.reshape(-1).to(torch.uint8), tiles, count


def _check_tile_result(cache, before, dense_rows, cand, dtype, low_rows, what):
    """Candidates hold the dense result; every other row is untouched."""
    positions = cand.numel()
    sel = cand.bool()
    assert torch.equal(cache[:positions][~sel], before[:positions][~sel]), what + ': untouched'
    assert torch.equal(cache[positions:], before[positions:]), what + ': pad rows'
    assert_close(cache[:positions][sel], dense_rows[sel.cpu()].to(cache.device), dtype,
                 None if low_rows is None else low_rows[sel.cpu()].to(cache.device), what)


def _rows(y: torch.Tensor) -> torch.Tensor:
    return y[0].permute(1, 2, 0).reshape(-1, y.shape[1])


def check_conv_tiles(device: str, dtype: torch.dtype, seed: int, kind: str,
                     fraction: float) -> None:
    """1x1, depthwise, KxK convolution and pooling over listed tiles of a cache."""
    from sparse_perception.kernels import conv, conv1x1, depthwise, epilogue, pool, window
    from sparse_perception.kernels.runtime import launch

    r, g = _rng(seed)
    h, w = r.randint(1, 19), r.randint(1, 21)
    cin = r.randint(1, 21)
    if kind == 'conv1x1':
        k, stride, dil, groups, cout = (1, 1), (1, 1), (1, 1), 1, r.randint(1, 40)
    elif kind == 'depthwise':
        k, stride, dil, groups, cout = (3, 3), (r.choice((1, 2)),) * 2, (1, 1), cin, cin
    elif kind == 'conv':
        groups = r.choice((1, 1, 2))
        cin = groups * r.randint(1, 9)
        k = (r.choice((1, 3, 5)), r.choice((1, 3)))
        stride, dil = (r.choice((1, 2)), 1), (1, r.choice((1, 2)))
        cout = groups * r.randint(1, 9)
    else:
        k, stride, dil, groups, cout = (r.choice((2, 3)),) * 2, (r.choice((1, 2)),) * 2, \
            (1, 1), 1, cin
    pads = (r.randint(0, k[0] // 2), r.randint(0, k[1] // 2))
    x = _randn(g, 1, cin, h, w, device=device)
    ho = (h + 2 * pads[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pads[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        return
    src = new_cache(h * w, cin, dtype, device)
    src[:h * w] = _rows(x).to(dtype)
    weight = _randn(g, cout, cin // groups, *k, device=device) / (cin * k[0] * k[1]) ** 0.5
    bias = _randn(g, cout, device=device)
    if kind == 'pool':
        mode = r.choice(('max', 'avg'))
        fn = F.max_pool2d if mode == 'max' else F.avg_pool2d
        dense = _rows(fn(x.double(), k, stride, pads)).float()
        low = _rows(fn(x.to(dtype), k, stride, pads))
    else:
        dense = _rows(F.conv2d(x.double(), weight.double(), bias.double(), stride, pads, dil,
                               groups)).float()
        low = _rows(F.conv2d(x.to(dtype), weight.to(dtype), bias.to(dtype), stride, pads, dil,
                             groups))
    # The epilogue rides along: ReLU6 then a residual operand (read at the same positions).
    operand = new_cache(ho * wo, cout, dtype, device)
    operand[:ho * wo] = _randn(g, ho * wo, cout, device=device).to(dtype)
    steps = [Step('act', 'hardtanh', (0.0, 6.0)), Step('binary', 'add', operand=0)]
    ep = epilogue.encode(steps, {0: operand})
    dense = dense.cpu().clamp(0, 6) + operand[:ho * wo].cpu().float()
    low = (low.cpu().float().clamp(0, 6) + operand[:ho * wo].cpu().float()).to(dtype)
    tile = compute_tile((ho, wo), Tiling(8, r.choice((16, 64))))
    cand, tiles, count = _tile_case(r, g, device, (ho, wo), tile, fraction)
    out = new_cache(ho * wo, cout, dtype, device)
    out[:ho * wo] = _randn(g, ho * wo, cout, device=device).to(dtype)
    before = out.clone()
    geometry = window.Geometry((h, w), (ho, wo), k, stride, dil, pads)
    b = bias.to(dtype)
    if kind == 'conv1x1':
        wt = weight.reshape(cout, cin).t().contiguous().to(dtype)
        bound = conv1x1.conv1x1_tiles_args(src, wt, b, out, (ho, wo), tile, tiles, count,
                                           cand, ep)
    elif kind == 'depthwise':
        bound = depthwise.depthwise_args(src, depthwise.depthwise_weight(weight.to(dtype)), b,
                                         out, geometry, tile, tiles, count, cin, cand, ep)
    elif kind == 'conv':
        bound = conv.conv_args(src, conv.conv_weight(weight.to(dtype)), b, out, geometry,
                               groups, tile, tiles, count, cand, ep)
    else:
        divisors = pool.avg_divisors((h, w), k, stride, pads, False, True, None).to(device) \
            if mode == 'avg' else None
        bound = pool.pool_args(src, out, mode, geometry, tile, tiles, count, divisors, cand,
                               ep)
    kernel, grid, args, meta = bound
    launch(kernel, grid, *args, **meta)
    _check_tile_result(out, before, dense, cand, dtype, low, kind)


def check_resample_tiles(device: str, dtype: torch.dtype, seed: int, fraction: float) -> None:
    from sparse_perception.engine.canonical import _axis_matrix
    from sparse_perception.kernels import resample
    from sparse_perception.kernels.runtime import launch

    r, g = _rng(seed)
    h, w, channels = r.randint(1, 9), r.randint(1, 9), r.randint(1, 19)
    ho, wo = r.randint(1, 17), r.randint(1, 17)
    mode = r.choice(('nearest', 'bilinear', 'bicubic', 'area'))
    args = {'mode': mode, 'size': (ho, wo)}
    if mode in ('bilinear', 'bicubic'):
        args['align_corners'] = r.choice((True, False))
    rows = resample.tap_tables(_axis_matrix(args, h, ho, 0), h)
    cols = resample.tap_tables(_axis_matrix(args, w, wo, 1), w)
    rows, cols = tuple(t.to(device) for t in rows), tuple(t.to(device) for t in cols)
    x = _randn(g, 1, channels, h, w, device=device)
    src = new_cache(h * w, channels, dtype, device)
    src[:h * w] = _rows(x).to(dtype)
    kw = {k: v for k, v in args.items() if k != 'size'}
    dense = _rows(F.interpolate(x.double(), size=(ho, wo), **kw)).float().cpu()
    low = _rows(F.interpolate(x.to(dtype).float(), size=(ho, wo), **kw)).to(dtype).cpu()
    ref = resample.resample_tiles_ref(src, (h, w), (ho, wo), rows, cols).cpu()
    assert_close(ref.to(dtype), dense, dtype, low, 'resample_tiles_ref')
    tile = compute_tile((ho, wo), TILING)
    cand, tiles, count = _tile_case(r, g, device, (ho, wo), tile, fraction)
    out = new_cache(ho * wo, channels, dtype, device)
    before = out.clone()
    kernel, grid, a, meta = resample.resample_tiles_args(src, out, (h, w), (ho, wo), rows,
                                                         cols, tile, tiles, count, cand)
    launch(kernel, grid, *a, **meta)
    _check_tile_result(out, before, dense, cand, dtype, low, f'resample_tiles {mode}')


def check_copy_tiles(device: str, dtype: torch.dtype, seed: int, fraction: float) -> None:
    """Check padding (tables with a fill value) and concatenation (channel offset) over tiles."""
    from sparse_perception.kernels import gather

    r, g = _rng(seed)
    h, w, channels = r.randint(1, 11), r.randint(1, 11), r.randint(1, 19)
    pad = (r.randint(0, 2), r.randint(0, 2), r.randint(0, 2), r.randint(0, 2))
    mode = r.choice(('constant', 'reflect', 'replicate'))
    if mode == 'reflect' and (max(pad[2:]) >= h or max(pad[:2]) >= w):
        mode = 'replicate'
    value = r.choice((0.0, -1.5))
    x = _randn(g, 1, channels, h, w, device=device)
    if mode == 'constant':
        dense = F.pad(x, pad, mode='constant', value=value)
    else:
        dense = F.pad(x, pad, mode=mode)
    from sparse_perception.engine.canonical import _pad_map
    table = (_pad_map(h, pad[2], pad[3], mode).to(torch.int32).to(device),
             _pad_map(w, pad[0], pad[1], mode).to(torch.int32).to(device))
    ho, wo = dense.shape[-2:]
    offset = r.randint(0, 5)
    src = new_cache(h * w, channels, dtype, device)
    src[:h * w] = _rows(x).to(dtype)
    out = new_cache(ho * wo, channels + offset + 2, dtype, device)
    out[:ho * wo] = _randn(g, ho * wo, out.shape[1], device=device).to(dtype)
    before = out.clone()
    tile = compute_tile((ho, wo), TILING)
    cand, tiles, count = _tile_case(r, g, device, (ho, wo), tile, fraction)
    gather.copy_tiles(src, out, (ho, wo), tile, tiles, count, cand, table, w, offset, value)
    expected = before[:ho * wo].clone().cpu()
    sel = cand.bool().cpu()
    expected[sel, offset:offset + channels] = _rows(dense).to(dtype).cpu()[sel]
    assert torch.equal(out[:ho * wo].cpu(), expected)
    assert torch.equal(out[ho * wo:], before[ho * wo:])


def check_positionwise(device: str, dtype: torch.dtype, seed: int, fn: str) -> None:
    from sparse_perception.kernels import positionwise
    from sparse_perception.kernels.runtime import launch

    r, g = _rng(seed)
    h, w, channels = r.randint(1, 12), r.randint(1, 12), r.randint(1, 70)
    x = _randn(g, h * w, channels, device=device).to(dtype) * 3
    if fn == 'argmax':  # NaN is the maximum for torch: the first NaN of a row wins
        x[0, r.randrange(channels)] = float('nan')
        x[-1] = float('nan')
    src = new_cache(h * w, channels, dtype, device)
    src[:h * w] = x
    out = new_cache(h * w, 1 if fn == 'argmax' else channels,
                    torch.int64 if fn == 'argmax' else dtype, device)
    before = out.clone()
    tile = compute_tile((h, w), TILING)
    cand, tiles, count = _tile_case(r, g, device, (h, w), tile, 0.5)
    kernel, grid, a, meta = positionwise.positionwise_args(src, out, fn, (h, w), tile, tiles,
                                                           count, cand)
    launch(kernel, grid, *a, **meta)
    sel = cand.bool()
    assert torch.equal(out[:h * w][~sel], before[:h * w][~sel])
    ref = positionwise.positionwise_ref(x.float(), fn)
    if fn == 'argmax':
        assert torch.equal(out[:h * w][sel], ref[sel])
    else:
        low = positionwise.positionwise_ref(x, fn)
        assert_close(out[:h * w][sel], ref[sel], dtype, low[sel], fn)


def check_candidates(device: str, seed: int) -> None:
    """Check the candidate kernel: receptive field, operands, listing and device counts."""
    from sparse_perception.kernels import masks
    from sparse_perception.kernels.runtime import launch

    r, g = _rng(seed)
    h, w = r.randint(1, 23), r.randint(1, 23)
    k = (r.choice((1, 3, 5)), r.choice((1, 3)))
    stride, dil = (r.choice((1, 2)),) * 2, (r.choice((1, 2)), 1)
    pads = (r.randint(0, k[0] // 2), r.randint(0, k[1] // 2))
    ho = (h + 2 * pads[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pads[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        return
    fraction = r.choice((0.0, 0.03, 0.3, 1.0))
    src = (torch.rand(h * w, generator=g) < fraction).to(device, torch.uint8)
    src_count = src.sum().to(torch.int32).view(1)
    op = (torch.rand(ho * wo, generator=g) < 0.05).to(device, torch.uint8)
    op_count = op.sum().to(torch.int32).view(1)
    bcast = torch.tensor([r.random() < 0.2], dtype=torch.uint8, device=device)
    tile = compute_tile((ho, wo), Tiling(8, r.choice((16, 64))))
    capacity = masks.tile_grid((ho, wo), tile)
    cand = torch.zeros(ho * wo, dtype=torch.uint8, device=device)
    tiles = torch.full((capacity,), -1, dtype=torch.int32, device=device)
    count = torch.zeros(1, dtype=torch.int32, device=device)
    stats = torch.zeros(4, dtype=torch.int32, device=device)
    spatial = None
    if r.random() < 0.5:  # a spatial gate and the layer's stale positions
        where = (torch.rand(ho * wo, generator=g) < r.choice((0.0, 0.4, 1.0)))
        stale = (torch.rand(ho * wo, generator=g) < 0.2)
        spatial = (where.to(device, torch.uint8), stale.to(device, torch.uint8))
    kernel, grid, a, meta = masks.candidates_args(
        cand, (ho, wo), tile, src, src_count, (h, w), (k, stride, dil, pads), None,
        ((op, op_count), (bcast, bcast.int())), tiles, count, stats, count_changed=True,
        spatial=spatial)
    launch(kernel, grid, *a, **meta)
    expected = masks.dilate_mask_ref(src.bool().view(h, w), (pads[0], pads[0], pads[1],
                                                             pads[1]), k, stride, dil,
                                     (ho, wo)).reshape(-1)
    expected = expected | op.bool().cpu().to(expected.device) | bool(bcast[0])
    if spatial is not None:
        want = expected.cpu() | stale
        expected = want & where
        assert torch.equal(spatial[1].bool().cpu(), want & ~where)
    assert torch.equal(cand.bool().cpu(), expected.cpu())
    nty, ntx = -(-ho // tile[0]), -(-wo // tile[1])
    padded = F.pad(expected.view(ho, wo), (0, ntx * tile[1] - wo, 0, nty * tile[0] - ho))
    flags = padded.view(nty, tile[0], ntx, tile[1]).any(3).any(1).reshape(-1)
    n = int(count[0])
    assert n == int(flags.sum())
    assert sorted(tiles[:n].tolist()) == flags.nonzero().squeeze(1).tolist()
    inside = sum(min(tile[0], ho - (i // ntx) * tile[0]) * min(tile[1], wo - (i % ntx) * tile[1])
                 for i in flags.nonzero().squeeze(1).tolist())
    assert stats.tolist() == [0, int(expected.sum()), int(expected.sum()), inside]


def check_intake(device: str, dtype: torch.dtype, seed: int, threshold: float,
                 held: str = 'half') -> None:
    from sparse_perception.kernels import frame
    from sparse_perception.kernels.runtime import launch

    r, g = _rng(seed)
    h, w, channels = r.randint(1, 30), r.randint(1, 30), r.choice((1, 3, 4))
    tile = r.choice((1, 2, 3, 8))
    x = _randn(g, 1, channels, h, w, device=device).to(dtype)
    if r.random() < 0.5:
        x = x.contiguous(memory_format=torch.channels_last)
    cache = new_cache(h * w, channels, dtype, device)
    cache[:h * w] = _rows(x)
    moved = torch.rand(h * w, generator=g) < 0.3
    cache[:h * w][moved.to(device)] += (torch.rand(int(moved.sum()), channels, generator=g)
                                        .to(device, dtype))
    tiles = torch.rand(-(-h // tile), -(-w // tile), generator=g) < 0.5
    if held != 'half':  # a moving camera: every tile set, or all but one
        tiles[:] = True
        if held == 'one':
            tiles.view(-1)[r.randrange(tiles.numel())] = False
    # Bit for bit at threshold 0: a zero whose sign flipped changed, a NaN that stayed did not.
    flat = (x.view(channels, h * w) if x.is_contiguous()
            else x.permute(0, 2, 3, 1).view(-1, channels).t())
    signed, kept = moved.nonzero().squeeze(1)[:1], (~moved).nonzero().squeeze(1)[:1]
    flat[:, signed.to(device)] = 0.0
    cache[signed.to(device)] = -0.0
    flat[:, kept.to(device)] = float('nan')
    cache[kept.to(device)] = float('nan')
    ref_cache = cache.clone()
    ref_changed = frame.intake_ref(x, ref_cache, tiles.to(device), tile, threshold, False)
    in_tiles = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w].reshape(-1)
    if threshold == 0:
        assert ref_changed.cpu()[signed].tolist() == in_tiles[signed].tolist()
    assert not ref_changed.cpu()[kept].any()
    mask = torch.zeros(h * w, dtype=torch.uint8, device=device)
    stats = torch.zeros(4, dtype=torch.int32, device=device)
    kernel, grid, a, meta = frame.intake_args(x, cache, mask, tiles.to(device, torch.uint8),
                                              stats, tile, threshold, False)
    launch(kernel, grid, *a, **meta)
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
    assert torch.equal(cache.view(bits[dtype]), ref_cache.view(bits[dtype]))  # NaN equal too
    assert torch.equal(mask.bool().cpu(), ref_changed.cpu())
    assert int(stats[2]) == int(ref_changed.sum())


def check_global_pool(device: str, dtype: torch.dtype, seed: int, gate_open: bool) -> None:
    from sparse_perception.kernels import frame

    r, g = _rng(seed)
    positions, channels = r.randint(1, 700), r.randint(1, 80)
    x = new_cache(positions, channels, dtype, device)
    x[:positions] = _randn(g, positions, channels, device=device).to(dtype)
    out = new_cache(1, channels, dtype, device)
    sums = torch.zeros(channels, dtype=torch.float32, device=device)
    mask = torch.zeros(1, dtype=torch.uint8, device=device)
    stats = torch.zeros(4, dtype=torch.int32, device=device)
    in_count = torch.tensor([5 if gate_open else 0], dtype=torch.int32, device=device)
    frame.run(frame.global_pool_args(x, positions, out, sums, mask, stats, in_count, 0.0,
                                     True, True))
    ref = frame.global_pool_ref(x.double(), positions).float()
    if not gate_open:
        assert not out[:1].any() and int(mask[0]) == 0
        return
    low = x[:positions].mean(0, keepdim=True)
    assert_close(out[:1], ref, dtype, low, 'global pool')
    assert int(mask[0]) == 1 and stats.tolist()[1:3] == [1, 1]


def check_conv_transpose_tiles(device: str, dtype: torch.dtype, seed: int,
                               fraction: float) -> None:
    """Transposed convolution over listed tiles: the kernel, its reference and F's agree."""
    from sparse_perception.kernels import conv, epilogue, window
    from sparse_perception.kernels.runtime import launch

    r, g = _rng(seed)
    h, w = r.randint(1, 9), r.randint(1, 11)
    groups = r.choice((1, 1, 2))
    cin, cout = groups * r.randint(1, 9), groups * r.randint(1, 7)
    k = (r.choice((1, 2, 3, 4)), r.choice((2, 3)))
    stride = (r.choice((1, 2)), r.choice((2, 3)))
    dil = (1, r.choice((1, 2)))
    pads = (r.randint(0, (k[0] - 1) * dil[0] // 2), r.randint(0, (k[1] - 1) * dil[1] // 2))
    out_pad = (r.randint(0, stride[0] - 1), 0)
    x = _randn(g, 1, cin, h, w, device=device)
    weight = _randn(g, cin, cout // groups, *k, device=device) / (cin * k[0] * k[1]) ** 0.5
    bias = _randn(g, cout, device=device)
    dense = F.conv_transpose2d(x.double(), weight.double(), bias.double(), stride, pads,
                               out_pad, groups, dil)
    ho, wo = dense.shape[-2:]
    low = _rows(F.conv_transpose2d(x.to(dtype), weight.to(dtype), bias.to(dtype), stride, pads,
                                   out_pad, groups, dil)).cpu().float()
    dense = _rows(dense).float().cpu()
    src = new_cache(h * w, cin, dtype, device)
    src[:h * w] = _rows(x).to(dtype)
    geometry = window.Geometry((h, w), (ho, wo), k, stride, dil, pads)
    ref = conv.conv_tiles_ref(src, weight.to(dtype), bias.to(dtype), geometry, groups,
                              transposed=True, output_padding=out_pad).cpu()
    assert_close(ref.to(dtype), dense, dtype, low.to(dtype), 'conv_tiles_ref transposed')
    # The epilogue rides along (ReLU6) as in check_conv_tiles.
    steps = [Step('act', 'hardtanh', (0.0, 6.0))]
    ep = epilogue.encode(steps, {})
    tile = compute_tile((ho, wo), Tiling(8, r.choice((16, 64))))
    cand, tiles, count = _tile_case(r, g, device, (ho, wo), tile, fraction)
    out = new_cache(ho * wo, cout, dtype, device)
    out[:ho * wo] = _randn(g, ho * wo, cout, device=device).to(dtype)
    before = out.clone()
    kernel, grid, args, meta = conv.conv_args(
        src, conv.conv_transpose_weight(weight.to(dtype), groups), bias.to(dtype), out,
        geometry, groups, tile, tiles, count, cand, ep, transposed=True)
    launch(kernel, grid, *args, **meta)
    _check_tile_result(out, before, dense.clamp(0, 6), cand, dtype,
                       low.clamp(0, 6).to(dtype), 'conv transposed')
    # The candidate tap tables: output o reads input i at tap j iff i * s - p + j * d = o.
    for axis, (n_out, n_in) in enumerate(((ho, h), (wo, w))):
        taps = conv.transposed_taps(n_out, n_in, k[axis], stride[axis], dil[axis], pads[axis])
        for o in range(n_out):
            expected = {i for i in range(n_in) for j in range(k[axis])
                        if i * stride[axis] - pads[axis] + j * dil[axis] == o}
            assert set(taps[o].tolist()) - {n_in} == expected, (axis, o)


def check_shuffle_tiles(device: str, dtype: torch.dtype, seed: int, order: str,
                        fraction: float) -> None:
    """Depth-to-space over listed tiles: copy_tiles and copy_tiles_ref equal the dense op."""
    from sparse_perception.engine.ops import depth_to_space
    from sparse_perception.kernels import gather

    r, g = _rng(seed)
    h, w, depth, b = r.randint(1, 7), r.randint(1, 7), r.randint(1, 9), r.choice((2, 3))
    x = _randn(g, 1, depth * b * b, h, w, device=device).to(dtype)
    dense = F.pixel_shuffle(x, b) if order == 'torch' else depth_to_space(x, b)
    ho, wo = h * b, w * b
    table = ((torch.arange(ho) // b).to(torch.int32).to(device),
             (torch.arange(wo) // b).to(torch.int32).to(device))
    src = new_cache(h * w, x.shape[1], dtype, device)
    src[:h * w] = _rows(x)
    offset = r.randint(0, 3)
    out = new_cache(ho * wo, depth + offset, dtype, device)
    out[:ho * wo] = _randn(g, ho * wo, out.shape[1], device=device).to(dtype)
    before = out.clone()
    tile = compute_tile((ho, wo), TILING)
    cand, tiles, count = _tile_case(r, g, device, (ho, wo), tile, fraction)
    gather.copy_tiles(src, out, (ho, wo), tile, tiles, count, cand, table, w, offset,
                      shuffle=(b, order))
    ref = before.clone()
    gather.copy_tiles_ref(src, ref, (ho, wo), tile, tiles, count, cand, table, w, offset,
                          shuffle=(b, order))
    expected = before[:ho * wo].clone().cpu()
    sel = cand.bool().cpu()
    expected[sel, offset:offset + depth] = _rows(dense).cpu()[sel]
    assert torch.equal(out[:ho * wo].cpu(), expected)  # a copy: bit-exact
    assert torch.equal(ref.cpu(), out.cpu())
    assert torch.equal(out[ho * wo:], before[ho * wo:])
