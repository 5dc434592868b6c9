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
Per-layer incremental execution: change propagation, sparse and dense paths.

Each lowered :class:`~sparse_perception.engine.ir.Layer` becomes one ``Run`` object built
once per input size, holding everything that does not change between frames (weights in the
compute layout, index tables of tiles and taps). Per frame, a run

1. turns its inputs' :class:`Change` sets into the *candidates*: the receptive-field image
   of the changed input positions, united with changed epilogue operands;
2. computes its core there (sparse: gathered rows or tiles with halo; dense fallback: the
   whole map from the cached inputs, when candidates exceed the layer's cut-off);
3. stores through the backend: values that moved by more than the layer threshold are
   written to the cache and become the change set its consumers see.
"""

from __future__ import annotations

from typing import Any

from sparse_perception.engine import ops
from sparse_perception.engine.backend import as_nchw, dump_row, low_row, zero_row
from sparse_perception.engine.executor import ConvForm, LayerGeometry
from sparse_perception.engine.ir import Kind, Value
import torch
import torch.nn.functional as F


class Change:
    """The positions of one tensor that changed in this frame: all, or a mask / an index."""

    __slots__ = ('height', 'width', 'full', '_mask', '_idx', '_ext', '_count', 'inside')

    def __init__(self, height: int, width: int, *, full: bool = False,
                 mask: torch.Tensor | None = None, idx: torch.Tensor | None = None,
                 count: int | None = None):
        self.height = height
        self.width = width
        self.full = full
        self._mask = mask  # bool (H, W)
        self._idx = idx  # int64 (n,)
        self._ext = None  # bool (P + 3,): the mask with the cache's extra rows unset
        self._count = count  # known without counting the mask
        # This frame's gate map of this size when the positions are known to lie inside it
        # (a layer of this size gated them): the next layer of that size need not test them.
        self.inside: torch.Tensor | None = None

    @property
    def positions(self) -> int:
        """Return H * W."""
        return self.height * self.width

    @property
    def idx(self) -> torch.Tensor:
        """Flat positions, int64 (n,)."""
        if self._idx is None:
            self._idx = self.mask.reshape(-1).nonzero().squeeze(1)
        return self._idx

    @property
    def mask(self) -> torch.Tensor:
        """Bool (H, W)."""
        if self._mask is None:
            mask = torch.zeros(self.positions, dtype=torch.bool, device=self._idx.device)
            mask[self._idx] = True
            self._mask = mask.view(self.height, self.width)
        return self._mask

    @property
    def ext(self) -> torch.Tensor:
        """Bool (P + 3,): the flat mask followed by False for the cache's extra rows."""
        if self._ext is None:
            flat = self.mask.reshape(-1)
            self._ext = torch.cat([flat, flat.new_zeros(3)])
        return self._ext

    @property
    def count(self) -> int:
        """Return the number of changed positions."""
        if self.full:
            return self.positions
        if self._count is None:
            self._count = int(self.idx.numel())
        return self._count


def any_set(mask: torch.Tensor) -> bool:
    """
    Whether a bool tensor holds a True.

    Read as bytes: over a 480x854 mask torch's bool any() took 215 us on one CPU thread, the
    bytes' maximum 7 us (hand-run).
    """
    return mask.numel() > 0 and bool(mask.view(torch.uint8).amax())


def full_change(value: Value, device: torch.device) -> Change:
    """Return a Change with every position set (index and mask precomputed)."""
    p = value.positions
    return Change(value.height, value.width, full=True,
                  mask=torch.ones(value.height, value.width, dtype=torch.bool, device=device),
                  idx=torch.arange(p, device=device))


def union(parts: list[Change], full: Change) -> Change | None:
    """Unite change sets of one size; ``full`` is returned when any of them is full."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if any(p.full for p in parts):
        return full
    if len(parts) == 1:
        return parts[0]
    mask = parts[0].mask
    for p in parts[1:]:
        mask = mask | p.mask
    change = Change(full.height, full.width, mask=mask)
    if all(p.inside is parts[0].inside for p in parts):
        change.inside = parts[0].inside
    return change


class Run:
    """Base: one layer's per-frame work (see the module docstring)."""

    kind: str  # what the layer's statistics call it

    def __init__(self, g: LayerGeometry, values: list[Value], device: torch.device,
                 dtype: torch.dtype):
        self.index = g.index
        self.layer = g.layer
        self.name = g.name
        self.names = g.layer.names
        self.out = g.layer.output
        self.value = g.value
        self.inputs = list(g.layer.inputs)
        self.in_values = g.in_values
        self.positions = self.value.positions
        self.channels = self.value.channels
        self.device = device
        self.dtype = dtype
        self.steps = g.steps
        self.operand_ids = g.operand_ids
        self.broadcast = {v: values[v].positions == 1 and self.positions > 1
                          for v in self.operand_ids}
        self.macs_per_position = g.macs_per_position
        self.full = full_change(self.value, device)
        self.want_old = False  # a global pooling reads this output's deltas
        self.terminal = g.terminal  # no layer reads the output (only the output / tail)
        self.untested = g.untested  # no change test (see LayerGeometry)

    # Subclasses: core_candidates(f, changes), sparse(f, cand) -> (index, values),
    # dense_values(f) -> values (P, C).

    def candidates(self, f: Any, changes: dict) -> Change | None:
        """Positions whose inputs or epilogue operands changed."""
        parts = [self.core_candidates(f, changes)]
        for v in self.operand_ids:
            ch = changes.get(v)
            if ch is None:
                continue
            if self.broadcast[v]:
                return self.full
            parts.append(ch)
        return union(parts, self.full)

    def to_recompute(self, f: Any, changes: dict) -> Change | None:
        """Return the candidates, under the frame's gate when it has one (see :meth:`gated`)."""
        cand = self.candidates(f, changes)
        if f.gate is not None and self.positions > 1:
            cand = self.gated(f, cand)
        return cand

    def operands(self, f: Any) -> dict:
        """Return the caches read by the epilogue, by value id."""
        return {v: f.caches[v] for v in self.operand_ids}

    def dense_into(self, f: Any) -> None:
        """Compute the whole map from the cached inputs straight into the cache."""
        out = f.caches[self.out][:self.positions]
        f.backend.epilogue(self.dense_values(f), self.steps, self.operands(f), None, out)
        if self.want_old:
            f.deltas[self.out] = (None, None)

    def step(self, f: Any, changes: dict, stats: Any) -> Change | None:
        """Do this layer's work for one frame; return the change set of its output."""
        if f.dense:
            self.dense_into(f)
            stats.mode, stats.active = 'full', self.positions
            stats.computed = stats.changed = self.positions
            stats.macs = self.positions * self.macs_per_position
            return self.full
        cand = self.to_recompute(f, changes)
        if cand is None:
            return None
        count = cand.count
        if count == 0:
            return None
        stats.active = count
        threshold = f.thresholds[self.index]
        # At threshold 0 every recomputed candidate counts as changed unless the exact test
        # is asked for (it rarely finds a bit-identical row and costs a compare). An output
        # no layer reads, or only a final class arg-max, is never held back: it always shows
        # what its inputs give.
        test = (threshold > 0 or f.test_exact) and not self.untested
        f.direct = not test and not self.steps and not self.want_old
        f.tested = test
        work = None if cand.full else self.sparse_work(f, cand)
        if work is None:
            stats.mode, stats.computed = 'dense', self.positions
            stats.macs = self.positions * self.macs_per_position
            if not test:
                # Every row is recomputed from the cached inputs, so rows outside the
                # candidates equal their cached value up to rounding: write them all and
                # report only the candidates (the receptive field) as changed.
                self.dense_into(f)
                stats.changed = count
                return cand
            values = self.dense_values(f)
            if cand.full or count * 2 > self.positions:
                # Test every row: outside the candidates the inputs did not change, so those
                # rows move by rounding noise only, far below a threshold.
                changed = self.store(f, None, values, True, threshold)
            else:  # few candidates: test (and write) just those
                index = cand.idx
                changed = self.store(f, index, values.index_select(0, index), True, threshold)
                changed = index if changed is None else changed
            return self._changed(changed, stats)
        stats.mode = 'sparse'
        # Rows computed outside the candidates (tile corners) are written too, which is
        # harmless (same inputs, same value up to rounding) unless an exact test or a global
        # pooling's running sum looks at exactly these rows.
        precise = (test and threshold == 0) or self.want_old
        index, values = self.sparse(f, cand, stats, precise, work)
        if index is None:  # stored by the run itself (f.direct allowed it)
            stats.changed = count
            return cand
        if not test:
            self.store(f, index, values, False)
            stats.changed = count
            return cand
        changed = self.store(f, index, values, True, threshold)
        return self._changed(index if changed is None else changed, stats)

    def gated(self, f: Any, cand: Change | None) -> Change | None:
        """
        Return the positions to recompute under the frame's gate: (changed or stale), gated.

        Candidates outside the gate join this layer's stale positions, which keep their
        cached values until a frame's gate covers them (see gate.py).
        """
        stale = f.stream.stale[self.index]
        if cand is None and stale is None:
            return None
        gate = f.gate.at(self.value.height, self.value.width)
        if stale is None and cand is not None and cand.inside is gate:
            return cand  # gated by a layer of this size: nothing to leave out
        if cand is None:
            want = stale
        elif cand.full:
            want = None  # every position: the gate alone decides
        else:
            want = cand.mask if stale is None else cand.mask | stale
        keep = gate if want is None else want & gate
        left = ~gate if want is None else want > gate  # wanted, not gated
        f.stream.stale[self.index] = left if any_set(left) else None
        if f.stream.stale[self.index] is None and (want is None or stale is None):
            # The gate keeps exactly the candidates: hand them on as they came, in their
            # order. A mask would list them row-major, and the order of the rows in a batch
            # moves the rounding of some ops (a vectorised sigmoid, say): a gate over
            # everything must compute bit for bit what no gate does.
            if not cand.full:  # (a full change is the layer's own, kept across frames)
                cand.inside = gate
            return cand
        if not any_set(keep):
            return None
        change = Change(self.value.height, self.value.width, mask=keep)
        change.inside = gate
        return change

    def sparse_work(self, f: Any, cand: Change) -> Any:
        """
        Decide between the sparse path and the dense fallback for these candidates.

        Returns None for dense, else what :meth:`sparse` needs (here: nothing more). Rows are
        computed exactly at the candidates, so the sparse path wins up to a high share.
        """
        return None if cand.count > f.rows_cutoff * self.positions else True

    def store(self, f: Any, index: torch.Tensor | None, values: torch.Tensor, test: bool,
              threshold: float = 0.0) -> torch.Tensor | None:
        """Epilogue, change test and scatter; returns the changed index (None: all)."""
        changed, old = f.backend.store_epilogue(
            f.caches[self.out], index, values, self.steps, self.operands(f), threshold, test,
            self.want_old)
        if self.want_old:
            f.deltas[self.out] = (index if changed is None else changed, old)
        return changed

    def _changed(self, changed: torch.Tensor | None, stats: Any) -> Change | None:
        """Turn a changed index (None: every position) into a Change, with stats."""
        if changed is None or changed.numel() == self.positions:
            stats.changed = self.positions
            return self.full
        stats.changed = changed.numel()
        if changed.numel() == 0:
            return None
        return Change(self.value.height, self.value.width, idx=changed)


class RowsConv(Run):
    """1x1 convolution, stride 1, no padding, one group (or Linear): a GEMM on rows."""

    kind = ConvForm.CONV1X1

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        a = self.layer.attrs
        w = a.weight
        self.weight_t = w.reshape(w.shape[0], -1).t().contiguous().to(self.device)
        self.bias = None if a.bias is None else a.bias.to(self.device)

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        return changes.get(self.inputs[0])

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        index = cand.idx
        stats.computed = index.numel()
        stats.macs = index.numel() * self.macs_per_position
        rows = f.backend.gather(f.caches[self.inputs[0]], index)
        return index, f.backend.linear(rows, self.weight_t, self.bias)

    def dense_values(self, f: Any) -> torch.Tensor:
        src = self.in_values[0]
        return f.backend.linear(f.caches[self.inputs[0]][:src.positions], self.weight_t,
                                self.bias)

    def dense_into(self, f: Any) -> None:
        out = f.caches[self.out][:self.positions]
        src = self.in_values[0]
        f.backend.linear(f.caches[self.inputs[0]][:src.positions], self.weight_t, self.bias,
                         out=out)
        f.backend.epilogue(out, self.steps, self.operands(f), None)
        if self.want_old:
            f.deltas[self.out] = (None, None)


# A convolution reading at most this many values per output runs on gathered taps, not tiles.
POINT_TAPS = 32


class Window(Run):
    """KxK convolution (any stride, dilation, groups), pooling, transposed convolution."""

    def __init__(self, g: LayerGeometry, *args: Any):
        super().__init__(g, *args)
        self.kind = g.kind  # conv, depthwise, pool or conv_transpose, as the device executor
        layer, src, out = self.layer, self.in_values[0], self.value
        a = layer.attrs
        dev = self.device
        self.transposed = layer.kind == Kind.CONV_TRANSPOSE
        self.pool = a.pool if layer.kind == Kind.POOL else None
        self.kernel = tuple(a.kernel)
        self.stride = tuple(a.stride)
        self.dilation = tuple(a.dilation)
        if layer.kind in (Kind.CONV, Kind.CONV_TRANSPOSE):
            self.weight = a.weight.to(dev)
            if layer.kind == Kind.CONV:
                self.weight = self.weight.contiguous(memory_format=torch.channels_last)
            self.bias = None if a.bias is None else a.bias.to(dev)
            self.groups = a.groups
        if self.transposed:
            self.crop = tuple(a.crop)
            self.output_padding = tuple(a.output_padding)
        else:
            self.pads = tuple(a.padding)
            self.ceil_mode = a.ceil_mode if self.pool else False
        self.tile = g.tile[0]  # square (compute_tile)
        self._build_tables(src, out, dev)
        self.point_weight = None
        if (layer.kind == Kind.CONV and self.groups == 1
                and src.channels * self.kernel[0] * self.kernel[1] <= POINT_TAPS):
            # A convolution reading few values per output (a stem on the frame's three
            # channels) computes exactly its candidates: each output's taps gathered, then one
            # product. Tiles with their halo would gather up to five times as many rows.
            w = a.weight.permute(2, 3, 1, 0)  # (kh, kw, Cin, Cout): the order of the taps
            self.point_weight = w.reshape(-1, w.shape[-1]).contiguous().to(dev)
            self.point_taps = self._point_taps(src, out).to(dev)
        self.factor = None
        if self.pool == 'avg':
            self._avg_factor(src, out, dev)

    def _build_tables(self, src: Value, out: Value, dev: torch.device) -> None:
        t = self.tile
        nty, ntx = -(-out.height // t), -(-out.width // t)
        ty, tx = torch.meshgrid(torch.arange(nty), torch.arange(ntx), indexing='ij')
        ty, tx = ty.reshape(-1, 1), tx.reshape(-1, 1)
        pad_row = low_row(src.positions) if self.pool == 'max' else zero_row(src.positions)
        if self.transposed:
            rows, crop_h = _transposed_axis(t, self.kernel[0], self.stride[0],
                                            self.dilation[0], self.crop[0])
            cols, crop_w = _transposed_axis(t, self.kernel[1], self.stride[1],
                                            self.dilation[1], self.crop[1])
            self.tile_crop = (crop_h, crop_w)
            iy = ty * t // self.stride[0] + rows[0] + torch.arange(rows[1]).view(1, -1)
            ix = tx * t // self.stride[1] + cols[0] + torch.arange(cols[1]).view(1, -1)
            ph, pw = rows[1], cols[1]
        else:
            ph = (t - 1) * self.stride[0] + (self.kernel[0] - 1) * self.dilation[0] + 1
            pw = (t - 1) * self.stride[1] + (self.kernel[1] - 1) * self.dilation[1] + 1
            iy = ty * t * self.stride[0] - self.pads[0] + torch.arange(ph).view(1, -1)
            ix = tx * t * self.stride[1] - self.pads[2] + torch.arange(pw).view(1, -1)
        iy, ix = iy[:, :, None], ix[:, None, :]  # (tiles, ph, 1), (tiles, 1, pw)
        inside = (iy >= 0) & (iy < src.height) & (ix >= 0) & (ix < src.width)
        self.patch_shape = (ph, pw)
        self.patch_table = torch.where(inside, iy * src.width + ix,
                                       torch.tensor(pad_row)).view(nty * ntx, ph * pw).to(dev)
        oy = ty * t + torch.arange(t).view(1, -1)
        ox = tx * t + torch.arange(t).view(1, -1)
        oy, ox = oy[:, :, None], ox[:, None, :]
        inside = (oy < out.height) & (ox < out.width)
        self.out_table = torch.where(inside, oy * out.width + ox,
                                     torch.tensor(dump_row(out.positions))).view(
            nty * ntx, t * t).to(dev)
        self.all_inside = bool(inside.all())

    def _avg_factor(self, src: Value, out: Value, dev: torch.device) -> None:
        # Sparse tiles divide by kh * kw (the halo holds zero rows for padding); the model
        # divides by torch's own divisor. factor = kh * kw / divisor, per output position.
        a = self.layer.attrs
        ones = torch.ones(1, 1, src.height, src.width, dtype=torch.float64)
        kw = {'kernel_size': self.kernel, 'stride': self.stride,
              'padding': a.padding.torch_pair(),
              'ceil_mode': a.ceil_mode}
        mean = F.avg_pool2d(ones, count_include_pad=a.count_include_pad,
                            divisor_override=a.divisor_override, **kw)
        count = F.avg_pool2d(ones, count_include_pad=True, divisor_override=1, **kw)
        factor = self.kernel[0] * self.kernel[1] * mean / count.clamp(min=1)
        factor = factor.view(-1)
        if not torch.all(factor == 1):
            self.factor = torch.cat([factor, factor.new_ones(3)]).to(dev, self.dtype)

    # -- per frame -----------------------------------------------------------------------------

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        ch = changes.get(self.inputs[0])
        if ch is None:
            return None
        out = self.value
        if ch.full:  # conservative: outputs that read only padding never change anyway
            return self.full
        if self.transposed:
            m = ch.mask.to(torch.float32)[None, None]
            ones = torch.ones(1, 1, *self.kernel, device=m.device)
            grown = F.conv_transpose2d(m, ones, None, self.stride, self.crop,
                                       self.output_padding, 1, self.dilation)
            mask = grown[0, 0] > 0
        else:
            mask = f.backend.dilate(ch.mask, self.pads, self.kernel, self.stride, self.dilation,
                                    self.ceil_mode, (out.height, out.width))
        return Change(out.height, out.width, mask=mask)

    def transposed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Run the transposed convolution on patches (t, C, ph, pw) -> (t, C', T, T)."""
        y = F.conv_transpose2d(patches, self.weight, None, self.stride, 0, 0,
                               self.groups, self.dilation)
        (c0, c1), t = self.tile_crop, self.tile
        if y.shape[2] < c0 + t or y.shape[3] < c1 + t:  # outputs no tap reaches
            y = F.pad(y, (0, max(0, c1 + t - y.shape[3]), 0, max(0, c0 + t - y.shape[2])))
        y = y[:, :, c0:c0 + t, c1:c1 + t]
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def sparse_work(self, f: Any, cand: Change) -> Any:
        """Tiles holding candidates, or None when they cover too much of the map."""
        if self.point_weight is not None:
            return None if cand.count > f.rows_cutoff * self.positions else 'points'
        tiles = f.backend.active_tiles(cand.mask, self.tile)
        if tiles.numel() * self.tile * self.tile > f.window_cutoff * self.positions:
            return None
        return tiles

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        if isinstance(work, str):
            return self._sparse_points(f, cand, stats)
        backend = f.backend
        tiles = work
        nt = tiles.numel()
        t = self.tile
        stats.computed = nt * t * t
        stats.macs = stats.computed * self.macs_per_position
        src = self.in_values[0]
        patches = backend.gather(f.caches[self.inputs[0]], self.patch_table.index_select(0, tiles))
        ph, pw = self.patch_shape
        patches = patches.view(nt, ph, pw, src.channels).permute(0, 3, 1, 2)
        y = backend.window(patches, self)  # (nt, C', T, T)
        rows = y.permute(0, 2, 3, 1).reshape(nt * t * t, y.shape[1])
        pos = self.out_table.index_select(0, tiles).view(-1)
        if f.tested and not precise and not self.all_inside:  # never report the dump row
            inside = (pos < self.positions).nonzero().squeeze(1)
            pos, rows = pos.index_select(0, inside), rows.index_select(0, inside)
        if precise:
            keep = cand.ext.index_select(0, pos).nonzero().squeeze(1)
            if keep.numel() != pos.numel():
                pos = pos.index_select(0, keep)
                rows = rows.index_select(0, keep)
        if self.factor is not None:
            rows = rows * self.factor.index_select(0, pos).unsqueeze(1)
        return pos, rows

    def _point_taps(self, src: Value, out: Value) -> torch.Tensor:
        """Return the input rows each output reads, int32 (P, kh * kw): the zero row outside."""
        (kh, kw), (sy, sx), (dy, dx) = self.kernel, self.stride, self.dilation
        iy = (torch.arange(out.height) * sy - self.pads[0]).view(-1, 1, 1, 1) \
            + (torch.arange(kh) * dy).view(1, 1, -1, 1)
        ix = (torch.arange(out.width) * sx - self.pads[2]).view(1, -1, 1, 1) \
            + (torch.arange(kw) * dx).view(1, 1, 1, -1)
        inside = (iy >= 0) & (iy < src.height) & (ix >= 0) & (ix < src.width)
        taps = torch.where(inside, iy * src.width + ix, zero_row(src.positions))
        # int32 halves the table (index_select takes it); it is computed once, at plan time.
        return taps.view(out.positions, kh * kw).to(torch.int32)

    def _sparse_points(self, f: Any, cand: Change, stats: Any):
        """Compute exactly the candidates: each one's taps gathered, then one product."""
        index = cand.idx
        stats.computed = index.numel()
        stats.macs = stats.computed * self.macs_per_position
        taps = self.point_taps.index_select(0, index).long()
        rows = f.backend.gather(f.caches[self.inputs[0]], taps)  # (n, kh * kw, Cin)
        values = f.backend.linear(rows.view(index.numel(), -1), self.point_weight, self.bias)
        return index, values

    def dense_values(self, f: Any) -> torch.Tensor:
        src = self.in_values[0]
        x = as_nchw(f.caches[self.inputs[0]], src.height, src.width)
        a = self.layer.attrs
        if self.pool == 'max':
            y = F.max_pool2d(x, self.kernel, self.stride, a.padding.torch_pair(), self.dilation,
                             self.ceil_mode)
        elif self.pool == 'avg':
            y = F.avg_pool2d(x, self.kernel, self.stride, a.padding.torch_pair(), self.ceil_mode,
                             a.count_include_pad, a.divisor_override)
        elif self.transposed:
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.crop,
                                   self.output_padding, self.groups, self.dilation)
        else:
            top, bottom, left, right = self.pads
            if top == bottom and left == right:
                y = F.conv2d(x, self.weight, self.bias, self.stride, (top, left),
                             self.dilation, self.groups)
            else:
                y = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias,
                             self.stride, 0, self.dilation, self.groups)
        return _rows(y)


class Resample(Run):
    """Separable linear resampling (nearest, bilinear, bicubic, area) with torch's weights."""

    kind = Kind.RESAMPLE

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        a = self.layer.attrs
        src, dev, dtype = self.in_values[0], self.device, self.dtype
        self.ah = a.ah.to(dev, dtype)  # (Ho, Hi)
        self.aw = a.aw.to(dev, dtype)  # (Wo, Wi)
        self.th, self.wh = _taps(a.ah, src.height)
        self.tw, self.ww = _taps(a.aw, src.width)
        self.th, self.tw = self.th.to(dev), self.tw.to(dev)
        self.wh, self.ww = self.wh.to(dev, dtype), self.ww.to(dev, dtype)
        self.row_valid = self.th < src.height
        self.col_valid = self.tw < src.width
        self.bands = _bands(a.ah, dev, dtype)
        if self.bands is not None:
            self.band_of_row = torch.repeat_interleave(  # (Ho,) the band of each output row
                torch.arange(len(self.bands)), torch.tensor([b[1] - b[0] for b in self.bands])
            ).to(dev)
        # Weights >= 0, every output reading some input: a weighted sum of score vectors that
        # all rank one class first ranks it first too (see Positionwise.fold).
        self.convex = all(bool((m >= 0).all()) and bool((m.sum(1) > 0).all())
                          for m in (a.ah, a.aw))
        self.folded = False  # the class arg-max reading this output alone computes it

    def step(self, f: Any, changes: dict, stats: Any) -> Change | None:
        if not self.folded:
            return super().step(f, changes, stats)
        # The arg-max computes what it needs of this output (see Positionwise.fold): hand on
        # the positions to recompute, gated as any layer's; the cache is never written.
        if f.dense:
            stats.mode, stats.active, stats.changed = 'full', self.positions, self.positions
            return self.full
        cand = self.to_recompute(f, changes)
        if cand is None or cand.count == 0:
            return None
        stats.mode = 'dense' if cand.full else 'sparse'
        stats.active = stats.changed = cand.count
        return cand

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        ch = changes.get(self.inputs[0])
        if ch is None:
            return None
        if ch.full:
            return self.full
        out = self.value
        if self.terminal and not self.steps:
            # Nothing reads this output: whole changed rows are a fine (conservative) change
            # set, and far cheaper to find than the exact one at the output's resolution.
            changed = F.pad(ch.mask.any(1), (0, 1))[self.th].any(1)  # (Ho,)
            return Change(out.height, out.width, count=int(changed.sum()) * out.width,
                          mask=changed.view(-1, 1).expand(out.height, out.width))
        mask = F.pad(ch.mask, (0, 1, 0, 1))  # a False row and column for empty taps
        # Across first, at the input's few rows; then down, copying whole rows per tap: at
        # 30x54 -> 480x854 that took 0.2 against 2.4 ms down first.
        cols = mask[:, self.tw].any(2)  # (Hi + 1, Wo)
        m = cols.index_select(0, self.th[:, 0])
        for tap in range(1, self.th.shape[1]):
            m |= cols.index_select(0, self.th[:, tap])
        return Change(out.height, out.width, mask=m)

    def sparse_work(self, f: Any, cand: Change) -> Any:
        """
        Pick the sparse form, or None for dense.

        Output rows (whole rows from the needed input rows, the separable way), single
        positions (their taps gathered), or, written straight into the cache, the changed
        column span of each band of rows.
        """
        count = cand.count
        if count > f.rows_cutoff * self.positions:
            return None
        if f.direct and self.bands is not None:
            spans = self._band_spans(cand.mask)
            work = sum((self.bands[i][1] - self.bands[i][0]) * (hi - lo) for i, lo, hi in spans)
            return spans if work <= 0.6 * self.positions else None
        rows = cand.mask.any(1).nonzero().squeeze(1)
        taps = self.th.shape[1] * self.tw.shape[1]
        # A gathered tap costs about as much as ten outputs of a row computed separably.
        if count * taps * 10 < rows.numel() * self.value.width:
            return 'points'
        if rows.numel() > (0.6 if self.bands is not None else 0.3) * self.value.height:
            return None
        return rows

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        if isinstance(work, list):
            return self._sparse_bands(f, stats, work)
        if isinstance(work, torch.Tensor):
            return self._sparse_rows(f, cand, stats, precise, work)
        index = cand.idx
        src = self.in_values[0]
        stats.computed = index.numel()
        wo = self.value.width
        ho_i, wo_i = index // wo, index % wo
        th, tw = self.th[ho_i], self.tw[wo_i]  # (n, kh), (n, kw)
        valid = self.row_valid[ho_i][:, :, None] & self.col_valid[wo_i][:, None, :]
        taps = torch.where(valid, th[:, :, None] * src.width + tw[:, None, :],
                           zero_row(src.positions)).view(index.numel(), -1)
        weights = (self.wh[ho_i][:, :, None] * self.ww[wo_i][:, None, :]).view(
            index.numel(), -1)
        rows = f.backend.gather(f.caches[self.inputs[0]], taps)
        return index, f.backend.resample(rows, weights)

    def _sparse_rows(self, f: Any, cand: Change, stats: Any, precise: bool,
                     rows: torch.Tensor):
        """Whole output rows: interpolate the needed input rows across, then down."""
        src, out = self.in_values[0], self.value
        taps = self.th.index_select(0, rows)  # (r, kh), src.height where empty
        needed = taps[taps < src.height].unique()
        x = f.caches[self.inputs[0]][:src.positions].view(src.height, src.width, -1)
        channels = x.shape[2]
        across = torch.zeros(src.height + 1, out.width * channels, dtype=x.dtype,
                             device=x.device)  # + a zero row for empty taps
        across.index_copy_(0, needed, torch.matmul(self.aw, x.index_select(0, needed)).view(
            needed.numel(), -1))
        values = torch.empty(rows.numel(), out.width * channels, dtype=x.dtype,
                             device=x.device)
        if self.bands is not None:  # the rows of a band are a run of ``rows`` (sorted)
            k = self.bands[0][3].shape[1]
            starts = torch.tensor([b[0] for b in self.bands] + [out.height],
                                  device=rows.device)
            bounds = torch.searchsorted(rows, starts).tolist()
            for (start, _, first, weights), a, b in zip(self.bands, bounds, bounds[1:]):
                if a < b:
                    torch.mm(weights.index_select(0, rows[a:b] - start),
                             across[first:first + k], out=values[a:b])
        else:
            torch.mm(self.ah.index_select(0, rows), across[:src.height], out=values)
        stats.computed = rows.numel() * out.width
        if f.direct:  # whole rows are contiguous in the cache: copy them row by row
            cache = f.caches[self.out][:self.positions].view(out.height, -1)
            cache.index_copy_(0, rows, values)
            return None, None
        values = values.view(-1, channels)  # (r * Wo, C)
        index = (rows.view(-1, 1) * out.width
                 + torch.arange(out.width, device=rows.device).view(1, -1)).view(-1)
        if precise:
            keep = cand.ext.index_select(0, index).nonzero().squeeze(1)
            index, values = index.index_select(0, keep), values.index_select(0, keep)
        return index, values

    def _band_spans(self, mask: torch.Tensor) -> list[tuple[int, int, int]]:
        """
        Return (band, first column, end column) of each band holding a changed position.

        A band is computed only between its first and last changed column: under a gate a
        moving camera changes a few columns of most rows.
        """
        flags = mask.to(torch.uint8)
        hit = flags.new_zeros(len(self.bands), mask.shape[1]).scatter_reduce_(
            0, self.band_of_row.view(-1, 1).expand_as(flags), flags, 'amax')  # (bands, Wo)
        lo = hit.argmax(1)  # the first changed column
        hi = hit.shape[1] - hit.flip(1).argmax(1)
        touched = hit.any(1).nonzero().squeeze(1)
        return list(zip(touched.tolist(), lo[touched].tolist(), hi[touched].tolist()))

    def _sparse_bands(self, f: Any, stats: Any, spans: list[tuple[int, int, int]]):
        """Compute the changed column span of each band straight into the cache."""
        src, out = self.in_values[0], self.value
        k = self.bands[0][3].shape[1]
        needed = sorted({r for i, _, _ in spans
                         for r in range(self.bands[i][2], self.bands[i][2] + k)})
        left, right = min(lo for _, lo, _ in spans), max(hi for _, _, hi in spans)
        x = f.caches[self.inputs[0]][:src.positions].view(src.height, src.width, -1)
        channels = x.shape[2]
        index = torch.tensor(needed, device=x.device)
        across = torch.empty(src.height, (right - left) * channels, dtype=x.dtype,
                             device=x.device)
        across.index_copy_(0, index, torch.matmul(self.aw[left:right],
                                                  x.index_select(0, index)).view(len(needed), -1))
        cache = f.caches[self.out][:self.positions].view(out.height, -1)
        for i, lo, hi in spans:
            start, stop, first, weights = self.bands[i]
            taps = across[first:first + k, (lo - left) * channels:(hi - left) * channels]
            if hi - lo == out.width:  # whole rows are contiguous: the product lands in place
                torch.mm(weights, taps, out=cache[start:stop])
            else:
                cache[start:stop, lo * channels:hi * channels] = torch.mm(weights, taps)
        stats.computed = sum((self.bands[i][1] - self.bands[i][0]) * (hi - lo)
                             for i, lo, hi in spans)
        return None, None

    def dense_values(self, f: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        src = self.in_values[0]
        x = f.caches[self.inputs[0]][:src.positions].view(src.height, src.width, -1)
        across = torch.matmul(self.aw, x)  # (Hi, Wo, C)
        if out is None:
            out = torch.empty(self.positions, x.shape[2], dtype=x.dtype, device=x.device)
        rows = across.reshape(src.height, -1)
        out2d = out.view(self.value.height, -1)  # (Ho, Wo * C)
        if self.bands is None:
            torch.mm(self.ah, rows, out=out2d)
        else:  # output rows that read the same few input rows: one small product each
            k = self.bands[0][3].shape[1]
            for start, stop, first, weights in self.bands:
                torch.mm(weights, rows[first:first + k], out=out2d[start:stop])
        return out

    def dense_into(self, f: Any) -> None:
        out = self.dense_values(f, f.caches[self.out][:self.positions])
        f.backend.epilogue(out, self.steps, self.operands(f), None)
        if self.want_old:
            f.deltas[self.out] = (None, None)


class Pad(Run):
    """Constant, reflect, replicate or circular padding (and cropping): one tap per output."""

    kind = Kind.PAD

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        a = self.layer.attrs
        src = self.in_values[0]
        rows, cols = a.rows.view(-1, 1), a.cols.view(1, -1)
        inside = (rows >= 0) & (cols >= 0)
        self.source = torch.where(inside, rows * src.width + cols,
                                  zero_row(src.positions)).view(-1).to(self.device)
        self.value_fill = float(a.value)
        self.constant = (~inside).view(-1, 1).to(self.device) if self.value_fill else None

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        ch = changes.get(self.inputs[0])
        if ch is None:
            return None
        mask = ch.ext.index_select(0, self.source).view(self.value.height, self.value.width)
        return Change(self.value.height, self.value.width, mask=mask)

    def _values(self, f: Any, source: torch.Tensor, constant: torch.Tensor | None):
        rows = f.backend.gather(f.caches[self.inputs[0]], source)
        if constant is not None:
            rows = rows.masked_fill(constant, self.value_fill)
        return rows

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        index = cand.idx
        stats.computed = index.numel()
        constant = None if self.constant is None else self.constant.index_select(0, index)
        return index, self._values(f, self.source.index_select(0, index), constant)

    def dense_values(self, f: Any) -> torch.Tensor:
        return self._values(f, self.source, self.constant)


class DepthToSpace(Run):
    """
    Depth-to-space (pixel shuffle): an index copy, one input row and one channel per output.

    Output (y, x) reads input row (y // b, x // b) at channel ``c * cs + phase * ps`` with
    phase ``(y % b) * b + x % b`` (PyTorch order: cs = b * b, ps = 1; TF: cs = 1, ps = C).
    """

    kind = Kind.DEPTH_TO_SPACE

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        a = self.layer.attrs
        src, out = self.in_values[0], self.value
        b = self.block = a.block
        self.tf_order = a.order == 'tf'
        y = torch.arange(out.height).view(-1, 1)
        x = torch.arange(out.width).view(1, -1)
        self.source = ((y // b) * src.width + x // b).view(-1).to(self.device)
        self.phase = ((y % b) * b + x % b).view(-1).to(self.device)

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        ch = changes.get(self.inputs[0])
        if ch is None:
            return None
        if ch.full:
            return self.full
        mask = ch.ext.index_select(0, self.source).view(self.value.height, self.value.width)
        return Change(self.value.height, self.value.width, mask=mask)

    def _pick(self, rows: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(n, b * b * C) input rows -> (n, C): the channels of each row's phase."""
        n, bb = rows.shape[0], self.block * self.block
        blocks = rows.view(n, bb, -1) if self.tf_order else rows.view(n, -1, bb).transpose(1, 2)
        return blocks[torch.arange(n, device=rows.device), phase]

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        index = cand.idx
        stats.computed = index.numel()
        rows = f.backend.gather(f.caches[self.inputs[0]], self.source.index_select(0, index))
        return index, self._pick(rows, self.phase.index_select(0, index))

    def dense_values(self, f: Any) -> torch.Tensor:
        src, b = self.in_values[0], self.block
        x = f.caches[self.inputs[0]][:src.positions]
        if self.tf_order:  # (Hi, Wi, i, j, C) -> (Hi, i, Wi, j, C)
            x = x.view(src.height, src.width, b, b, -1).permute(0, 2, 1, 3, 4)
        else:  # (Hi, Wi, C, i, j) -> (Hi, i, Wi, j, C)
            x = x.view(src.height, src.width, -1, b, b).permute(0, 3, 1, 4, 2)
        return x.reshape(self.positions, self.channels)


class Cat(Run):
    """Concatenation along channels."""

    kind = Kind.CAT

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        return union([changes.get(v) for v in self.inputs], self.full)

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        index = cand.idx
        stats.computed = index.numel()
        parts = [f.backend.gather(f.caches[v], index) for v in self.inputs]
        return index, torch.cat(parts, 1)

    def dense_values(self, f: Any) -> torch.Tensor:
        return torch.cat([f.caches[v][:self.positions] for v in self.inputs], 1)


class Pointwise(Run):
    """The identity core: a standalone epilogue (activation, residual add, broadcast mul)."""

    kind = Kind.POINTWISE

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        return changes.get(self.inputs[0])  # the main operand has the output's size

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        index = cand.idx
        stats.computed = index.numel()
        return index, f.backend.gather(f.caches[self.inputs[0]], index)

    def dense_values(self, f: Any) -> torch.Tensor:
        return f.caches[self.inputs[0]][:self.positions].clone()


class Positionwise(Run):
    """Softmax, log-softmax or argmax over the channels of each position."""

    kind = Kind.POSITIONWISE
    source: Resample | None = None  # the resampling folded into this arg-max (see fold)

    def fold(self, source: Resample) -> None:
        """
        Compute the class arg-max of a resampling's output from the resampling's input.

        The resampling's output (scores upsampled to the frame: 21 classes at 480x854) is
        read by this arg-max alone, and most of it is far from any class boundary: where
        every input position a tap reads ranks the same class first by a margin, the
        weighted sum (weights >= 0) ranks it first too, by a margin far above the rounding of
        that sum, so that class is the arg-max the scores would give. Only the other
        positions get their scores computed and their maximum taken. The resampling's own
        run then only hands on where to recompute.
        """
        self.source = source
        source.folded = True
        src, dev = source.in_values[0], self.device
        # Each output row's (column's) input taps, the empty ones pointed at the first tap.
        self.fold_rows = torch.where(source.th < src.height, source.th, source.th[:, :1]).to(dev)
        self.fold_cols = torch.where(source.tw < src.width, source.tw, source.tw[:, :1]).to(dev)

    def step(self, f: Any, changes: dict, stats: Any) -> Change | None:
        if self.source is None:
            return super().step(f, changes, stats)
        cand = None
        if not f.dense:
            cand = self.to_recompute(f, changes)
            if cand is None or cand.count == 0:
                return None
        whole = cand is None or cand.full
        computed = self._folded(f, None if whole else cand.mask)
        stats.mode = 'full' if f.dense else ('dense' if whole else 'sparse')
        stats.active = stats.changed = self.positions if whole else cand.count
        stats.computed = computed
        stats.macs = computed * (self.source.macs_per_position + self.macs_per_position)
        return self.full if whole else cand

    def _folded(self, f: Any, mask: torch.Tensor | None) -> int:
        """Write the arg-max at ``mask`` (None: everywhere); return the positions scored."""
        source, out = self.source, self.value
        src = source.in_values[0]
        scores = f.caches[source.inputs[0]][:src.positions]
        top = scores.topk(2, dim=1)
        # Taps and sums round by a few units in the last place of the largest score; a
        # margin of 2**-12 of it (64 units at least) leaves a wide berth. NaN or infinity:
        # no margin holds.
        berth = max(2.0 ** -12, 64 * torch.finfo(scores.dtype).eps)
        margin = top.values[:, 0] - top.values[:, 1]
        sure = (margin > scores.abs().amax() * berth).view(src.height, src.width)
        narrow = torch.int16 if scores.shape[1] <= 2 ** 15 else torch.int64
        first = top.indices[:, 0].to(narrow).view(src.height, src.width)
        # Separably: along each input row, then down the output rows.
        cols = self.fold_cols
        best = first[:, cols[:, 0]]  # (Hi, Wo)
        agree = sure[:, cols[:, 0]]
        for tap in range(1, cols.shape[1]):
            agree &= sure[:, cols[:, tap]] & (first[:, cols[:, tap]] == best)
        rows = self.fold_rows
        label = best.index_select(0, rows[:, 0])  # (Ho, Wo)
        settled = agree.index_select(0, rows[:, 0])
        for tap in range(1, rows.shape[1]):
            settled &= agree.index_select(0, rows[:, tap]) & (
                best.index_select(0, rows[:, tap]) == label)
        ids = f.caches[self.out][:self.positions].view(out.height, out.width)
        write = settled if mask is None else settled & mask
        torch.where(write, label, ids, out=ids)
        rest = (~settled if mask is None else mask & ~settled).view(-1).nonzero().squeeze(1)
        if rest.numel() * 4 > self.positions:  # scores near no boundary (NaN, say): all of them
            values = source.dense_values(f)  # a temporary: the source keeps no cache
            ids.view(-1).index_copy_(0, rest, ops.argmax(values.index_select(0, rest), 1))
        elif rest.numel():
            ids.view(-1).index_copy_(0, rest, ops.argmax(self._scores(f, rest), 1))
        return rest.numel()

    def _scores(self, f: Any, index: torch.Tensor) -> torch.Tensor:
        """Return the resampled scores at flat output positions ``index``: across, then down."""
        source, out = self.source, self.value
        src = source.in_values[0]
        x = f.caches[source.inputs[0]][:src.positions].view(src.height, src.width, -1)
        # Across every input row at once (30 x 54 -> 30 x 854 is cheap), then each position's
        # rows: two gathers of a row's scores where whole taps would take four. A zero row
        # stands for the empty taps, whose weight is 0.
        across = x.new_zeros(src.height + 1, out.width, x.shape[2])
        torch.matmul(source.aw, x, out=across[:src.height])
        across = across.view(-1, x.shape[2])
        row = torch.div(index, out.width, rounding_mode='floor')
        column = index - row * out.width
        taps = source.th.index_select(0, row)  # (n, kh): input rows, src.height where empty
        weights = source.wh.index_select(0, row)
        values = across.index_select(0, taps[:, 0] * out.width + column).mul_(weights[:, :1])
        for tap in range(1, taps.shape[1]):
            values.addcmul_(across.index_select(0, taps[:, tap] * out.width + column),
                            weights[:, tap:tap + 1])
        return values

    def core_candidates(self, f: Any, changes: dict) -> Change | None:
        return changes.get(self.inputs[0])

    def _apply(self, rows: torch.Tensor) -> torch.Tensor:
        fn = self.layer.attrs.fn
        if fn == 'softmax':
            return torch.softmax(rows, 1)
        if fn == 'log_softmax':
            return torch.log_softmax(rows, 1)
        return ops.argmax(rows, 1, keepdim=True)

    def sparse(self, f: Any, cand: Change, stats: Any, precise: bool, work: Any):
        index = cand.idx
        stats.computed = index.numel()
        return index, self._apply(f.backend.gather(f.caches[self.inputs[0]], index))

    def dense_values(self, f: Any) -> torch.Tensor:
        return self._apply(f.caches[self.inputs[0]][:self.positions])


class GlobalPool(Run):
    """Global average pooling from a running float64 sum updated with the input's deltas."""

    kind = Kind.GAP

    def step(self, f: Any, changes: dict, stats: Any) -> Change | None:
        src = self.in_values[0]
        cache = f.caches[self.inputs[0]]
        sums = f.stream.sums
        stats.computed = 1
        if f.dense:
            sums[self.index] = cache[:src.positions].sum(0, dtype=torch.float64)
            stats.mode, stats.active, stats.changed = 'full', 1, 1
            self.store(f, None, self._mean(sums[self.index]), False)
            return self.full
        ch = changes.get(self.inputs[0])
        if ch is None:
            return None
        stats.mode, stats.active = 'sparse', 1
        index, old = f.deltas.get(self.inputs[0], (None, None))
        if index is None or old is None or index.numel() * 4 > src.positions:
            # Beyond a quarter of the rows, a fresh sum is cheaper than two gathers.
            stats.mode = 'dense'
            sums[self.index] = cache[:src.positions].sum(0, dtype=torch.float64)
        else:
            new = f.backend.gather(cache, index)
            sums[self.index] += (new.sum(0, dtype=torch.float64)
                                 - old.sum(0, dtype=torch.float64))
        changed = self.store(f, None, self._mean(sums[self.index]), True,
                             f.thresholds[self.index])
        return self._changed(changed, stats)

    def _mean(self, total: torch.Tensor) -> torch.Tensor:
        return (total / self.in_values[0].positions).to(self.value.dtype).view(1, -1)


# The run of each compute kind (a kind without one is a KeyError naming it).
_RUNS = {ConvForm.CONV1X1: RowsConv, Kind.CONV: Window, ConvForm.DEPTHWISE: Window,
         Kind.CONV_TRANSPOSE: Window, Kind.POOL: Window, Kind.RESAMPLE: Resample, Kind.PAD: Pad,
         Kind.DEPTH_TO_SPACE: DepthToSpace, Kind.CAT: Cat, Kind.POINTWISE: Pointwise,
         Kind.POSITIONWISE: Positionwise, Kind.GAP: GlobalPool}


def make_run(g: LayerGeometry, values: list[Value], device: torch.device,
             dtype: torch.dtype) -> Run:
    """Pick the run class for a layer's compute kind."""
    return _RUNS[g.kind](g, values, device, dtype)


# -- helpers ----------------------------------------------------------------------------------

def _rows(y: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H * W, C) rows (a view for channels_last tensors)."""
    return y[0].permute(1, 2, 0).reshape(-1, y.shape[1])


def _transposed_axis(tile: int, kernel: int, stride: int, dilation: int,
                     crop: int) -> tuple[tuple[int, int], int]:
    """Input rows of an output tile of a transposed convolution: (first offset, count), crop."""
    reach = (kernel - 1) * dilation
    # Output o reads inputs i with i * stride + j * dilation = o + crop. For an output
    # tile [o0, o0 + tile) with o0 a multiple of tile (hence of stride) that is
    # i_lo = floor((o0 + crop - reach) / stride) to i_hi = floor((o0 + tile - 1 + crop)
    # / stride); the transposed convolution of that patch without a crop puts output o at
    # o + crop - i_lo * stride, an offset (the patch's crop) that is the same for every tile.
    first = (crop - reach) // stride  # i_lo - o0 / stride
    last = (tile - 1 + crop) // stride  # i_hi - o0 / stride
    return (first, last - first + 1), crop - first * stride


def _bands(matrix: torch.Tensor, device: torch.device, dtype: torch.dtype) -> list | None:
    """
    Split a (n_out, n_in) resampling matrix into bands of output rows.

    The rows of a band read the same ``k`` consecutive input rows; a band is
    (start, stop, first input, weights (rows, k)).

    Upsampling by 16 with 2 taps turns one (576 x 36) product into 35 products with k = 2:
    the same result with an eighteenth of the arithmetic. None when bands would not pay.
    """
    n_out, n_in = matrix.shape
    nonzero = matrix != 0
    if not bool(nonzero.any(1).all()):
        return None
    first = nonzero.float().argmax(1)
    last = n_in - 1 - nonzero.flip(1).float().argmax(1)
    k = int((last - first).max()) + 1
    first = first.clamp(max=n_in - k)
    bands = []
    start = 0
    for row in range(1, n_out + 1):
        if row == n_out or first[row] != first[start]:
            i = int(first[start])
            bands.append((start, row, i, matrix[start:row, i:i + k].to(device, dtype)))
            start = row
    if k * 2 > n_in or len(bands) * 2 > n_out:
        return None
    return bands


def _taps(matrix: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonzero taps of each row of a (n_out, n_in) resampling matrix, padded with n_in."""
    nonzero = matrix != 0
    k = max(1, int(nonzero.sum(1).max()))
    order = torch.argsort((~nonzero).to(torch.int8), dim=1, stable=True)[:, :k]
    weights = torch.gather(matrix, 1, order)
    valid = torch.gather(nonzero, 1, order)
    return torch.where(valid, order, n_in), torch.where(valid, weights, 0.0)
