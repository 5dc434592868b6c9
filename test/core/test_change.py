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

"""Temporal change maps: thresholds, tiles, reference per tile, refresh."""

import numpy as np
import pytest
from sparse_perception import settings as st
from sparse_perception.change import ChangeDetector
from support import require_module
import torch


def frame(h=32, w=48, value=100, channels=3):
    return np.full((h, w, channels), value, dtype=np.uint8)


def test_first_frame_is_a_refresh_with_every_tile():
    det = ChangeDetector(tile_size=16)
    cm = det.update(frame(40, 50))
    assert cm.refresh and cm.frame_index == 0
    assert cm.tiles.shape == (3, 4) and bool(cm.tiles.all())
    assert cm.changed_fraction == 1.0


def test_changes_above_threshold_mark_their_tile_only():
    det = ChangeDetector(threshold=10, tile_size=16, min_pixels=1)
    det.update(frame())
    f = frame()
    f[20, 37, 1] = 111  # +11 in one channel of one pixel: above 10
    f[3, 3, 0] = 110  # +10: not above the threshold
    cm = det.update(f)
    assert not cm.refresh
    expected = torch.zeros(2, 3, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(cm.tiles, expected)
    assert cm.changed_fraction == pytest.approx(1 / 6)
    assert cm.pixel_fraction == pytest.approx(1 / (32 * 48))


def test_reference_is_last_propagated_so_slow_drift_is_not_lost():
    det = ChangeDetector(threshold=10, tile_size=8)
    det.update(frame(16, 16))
    changed = []
    for step in range(1, 8):  # +3 grey levels per frame: never 10 between two frames
        cm = det.update(frame(16, 16, 100 + 3 * step))
        changed.append(bool(cm.tiles.any()))
    assert changed == [False, False, False, True, False, False, False]
    # The reference took the frame where it crossed (100 + 12) and holds it since.
    assert int(det.reference[0, 0, 0]) == 112


def test_reference_updates_only_changed_tiles():
    det = ChangeDetector(threshold=5, tile_size=8)
    det.update(frame(16, 16, 50))
    f = frame(16, 16, 50)
    f[0:8, 0:8] = 90  # tile (0, 0) changes
    f[12, 12] = 53  # below threshold in tile (1, 1)
    det.update(f)
    ref = det.reference.numpy()
    assert (ref[0:8, 0:8] == 90).all()
    assert ref[12, 12, 0] == 50  # not propagated: the reference keeps the old value


def test_min_pixels_suppresses_isolated_noise():
    det = ChangeDetector(threshold=5, tile_size=8, min_pixels=3, neighbour_pixels=3)
    det.update(frame(16, 16))
    f = frame(16, 16)
    f[1, 1] = 200
    f[2, 2] = 200  # two pixels in tile (0, 0): below min_pixels
    f[9:11, 9:11] = 200  # four pixels in tile (1, 1)
    cm = det.update(f)
    assert cm.tiles.tolist() == [[False, False], [False, True]]


def test_default_noise_suppression_keeps_objects_and_drops_speckle():
    det = ChangeDetector(threshold=12, tile_size=16)  # the settings' defaults
    assert (det.min_pixels, det.neighbour_pixels) == (st.ChangeSettings().min_pixels,
                                                      st.ChangeSettings().neighbour_pixels)
    det.update(frame(64, 64))
    f = frame(64, 64)
    f[62, 62] = f[50, 3] = 0  # speckle: single pixels in tiles away from the object
    f[16:32, 16:33] = 0  # an object: tile (1, 1) and a one-pixel wide edge in tile (1, 2)
    cm = det.update(f)
    assert {tuple(v) for v in cm.tiles.nonzero().tolist()} == {(1, 1), (1, 2)}


def test_neighbour_rule_takes_the_edges_of_a_changed_tile_only():
    det = ChangeDetector(threshold=5, tile_size=4, min_pixels=8, neighbour_pixels=2)
    det.update(frame(12, 16))
    f = frame(12, 16)
    f[4:8, 4:8] = 0  # 16 pixels: tile (1, 1) is a core tile
    f[5:7, 8] = 0  # 2 pixels in tile (1, 2), next to it: taken
    f[0, 0] = 0  # 1 pixel in tile (0, 0), next to it: below neighbour_pixels
    f[10:12, 15] = 0  # 2 pixels in tile (2, 3), not next to a core tile: noise
    cm = det.update(f)
    assert {tuple(v) for v in cm.tiles.nonzero().tolist()} == {(1, 1), (1, 2)}
    # The reference took tiles (1, 1) and (1, 2); the speckle stays pending against it.
    ref = det.reference.numpy()
    assert (ref[4:8, 4:12] == f[4:8, 4:12]).all()
    assert ref[0, 0, 0] == 100 and ref[10, 15, 0] == 100


@pytest.mark.parametrize('opencv', [True, False])
@pytest.mark.parametrize('shape, tile, dilation', [
    ((48, 64, 3), 16, 0), ((45, 70, 3), 8, 0), ((30, 41), 4, 0), ((100, 90, 3), 8, 2),
    ((61, 83, 4), 4, 1), ((57, 75, 3), 12, 1)])
def test_uint8_fast_path_matches_the_torch_path(shape, tile, dilation, opencv, monkeypatch):
    from sparse_perception import change
    if opencv:
        require_module('cv2')
    else:
        monkeypatch.setattr(change, '_CV2', [None])
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8)]
    for _ in range(5):  # noise everywhere plus a moving block
        f = frames[-1].astype(np.int16) + rng.integers(-14, 15, shape)
        y = int(rng.integers(0, shape[0] - 10))
        f[y:y + 10, 5:20] += 60
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    kwargs = {'threshold': 12, 'tile_size': tile, 'min_pixels': 5, 'neighbour_pixels': 2,
              'dilation': dilation}
    fast, slow = ChangeDetector(**kwargs), ChangeDetector(**kwargs)
    for f in frames:
        a = fast.update(f)
        b = slow.update(torch.from_numpy(f).to(torch.int16))  # not uint8: the torch path
        assert torch.equal(a.tiles, b.tiles)
        assert a.pixel_fraction == pytest.approx(b.pixel_fraction)
        assert np.array_equal(fast.reference.numpy(), slow.reference.numpy().astype(np.uint8)
                              .reshape(fast.reference.shape))


@pytest.mark.parametrize('opencv', [True, False])
@pytest.mark.parametrize('threshold', [0, 1, 12, 12.5, 254, 255])
def test_one_channel_one_level_past_the_threshold_is_a_change(threshold, opencv, monkeypatch):
    from sparse_perception import change
    if opencv:
        require_module('cv2')
    else:
        monkeypatch.setattr(change, '_CV2', [None])
    level = int(threshold)  # grey levels are whole: 12.5 acts as 12
    for channel in range(3):  # blue counts least in a grey conversion, and still counts
        for step in (level, level + 1):
            if step > 255:
                continue
            det = ChangeDetector(threshold=threshold, tile_size=4, min_pixels=1)
            det.update(frame(8, 8, 0))
            f = frame(8, 8, 0)
            f[5, 6, channel] = step
            tiles = det.update(f).tiles.tolist()
            assert tiles == [[False, False], [False, step > threshold]], (channel, step)
    still = ChangeDetector(threshold=255, tile_size=4, min_pixels=1)
    still.update(frame(8, 8, 0))
    assert not still.update(frame(8, 8, 255)).tiles.any()  # nothing exceeds 255


def test_uint8_path_without_opencv(monkeypatch):
    from sparse_perception import change
    monkeypatch.setattr(change, '_CV2', [None])
    det = ChangeDetector(threshold=10, tile_size=4, min_pixels=1)
    det.update(frame(8, 8, 200))
    f = frame(8, 8, 200)
    f[6, 1, 2] = 189  # -11: would wrap around in uint8 subtraction
    assert det.update(f).tiles.tolist() == [[False, False], [True, False]]


def test_dilation_grows_by_whole_tiles():
    det = ChangeDetector(threshold=5, tile_size=4, dilation=1, min_pixels=1)
    det.update(frame(20, 20))
    f = frame(20, 20)
    f[9, 9] = 0  # tile (2, 2) of a 5x5 grid
    cm = det.update(f)
    assert cm.tiles.sum() == 9 and bool(cm.tiles[1:4, 1:4].all())


def test_periodic_and_requested_refresh_and_reset():
    det = ChangeDetector(tile_size=8, refresh_period=3)
    refreshes = [det.update(frame(16, 16)).refresh for _ in range(7)]
    assert refreshes == [True, False, False, True, False, False, True]
    det.request_refresh()
    assert det.update(frame(16, 16)).refresh
    assert not det.update(frame(16, 16)).refresh
    det.reset()
    cm = det.update(frame(16, 16))
    assert cm.refresh and cm.frame_index == 0


def test_size_change_refreshes():
    det = ChangeDetector(tile_size=8)
    det.update(frame(16, 16))
    assert det.update(frame(24, 16)).refresh


@pytest.mark.parametrize('kind', ['gray_uint8', 'float_hwc', 'tensor_nchw', 'tensor_hw'])
def test_frame_layouts_and_float_units(kind):
    det = ChangeDetector(threshold=12, tile_size=4, min_pixels=1)
    base = np.zeros((8, 8, 3), dtype=np.float32)
    changed = base.copy()
    changed[5, 6, 2] = 13 / 255  # above 12 grey levels
    changed[0, 0, 0] = 11 / 255  # below
    if kind == 'gray_uint8':
        a, b = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
        b[5, 6], b[0, 0] = 13, 11
    elif kind == 'float_hwc':
        a, b = base, changed
    elif kind == 'tensor_nchw':
        a = torch.from_numpy(base).permute(2, 0, 1)[None]
        b = torch.from_numpy(changed).permute(2, 0, 1)[None]
    else:
        a, b = torch.from_numpy(base[..., 2]), torch.from_numpy(changed[..., 2])
    det.update(a)
    cm = det.update(b)
    assert cm.tiles.tolist() == [[False, False], [False, True]]


def test_uint8_difference_does_not_wrap_around():
    det = ChangeDetector(threshold=10, tile_size=4, min_pixels=1)
    det.update(frame(4, 4, 200))
    assert not bool(det.update(frame(4, 4, 195)).tiles.any())  # 195 - 200 must not wrap
    assert bool(det.update(frame(4, 4, 250)).tiles.any())


def test_a_float_pixel_that_becomes_or_stops_being_nan_is_a_change():
    # A depth image's hole: NaN on one side of the difference is a change, on both none.
    det = ChangeDetector(threshold=0, tile_size=4, min_pixels=1)
    hole = np.zeros((8, 8, 1), np.float32)
    hole[5, 5] = np.nan
    det.update(hole)
    assert not bool(det.update(hole.copy()).tiles.any())
    filled = np.zeros((8, 8, 1), np.float32)
    assert det.update(filled).tiles.tolist() == [[False, False], [False, True]]
    assert not bool(det.update(filled.copy()).tiles.any())
    assert det.update(hole).tiles.tolist() == [[False, False], [False, True]]
    far = filled.copy()
    far[1, 1] = np.inf  # out of range (a depth image's +Inf): the same on both sides is no change
    assert det.update(far).tiles.tolist() == [[True, False], [False, True]]
    assert not bool(det.update(far.copy()).tiles.any())
    far[1, 1] = -np.inf
    assert det.update(far).tiles.tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize('opencv', [True, False])
@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_a_tile_the_frame_cuts_short_needs_its_share_of_min_pixels(opencv, dtype, monkeypatch):
    # 481 rows: the last tile row is one pixel tall, 16 pixels of a 16 px tile. At
    # min_pixels 32 it could never count; it needs 32 * 16 / 256 = 2 pixels.
    from sparse_perception import change
    if opencv:
        require_module('cv2')
    else:
        monkeypatch.setattr(change, '_CV2', [None])
    scale = 255 if dtype == np.uint8 else 1
    det = ChangeDetector(threshold=12, tile_size=16, min_pixels=32, neighbour_pixels=4)
    det.update(np.zeros((481, 64, 3), dtype))
    one = np.zeros((481, 64, 3), dtype)
    one[480, 3] = scale  # one pixel of the short tile: below its share
    assert not bool(det.update(one).tiles.any())
    two = one.copy()
    two[480, 4] = scale
    tiles = det.update(two).tiles
    assert bool(tiles[30, 0]) and int(tiles.sum()) == 1
    whole = two.copy()
    whole[0, :16] = whole[1, :15] = scale  # a whole tile still needs min_pixels: 31 are few
    assert not bool(det.update(whole).tiles[0, 0])
    whole[1, 15] = scale
    assert bool(det.update(whole).tiles[0, 0])


def test_pixel_mask_expands_tiles():
    det = ChangeDetector(threshold=1, tile_size=4, min_pixels=1)
    det.update(frame(6, 10))
    f = frame(6, 10)
    f[5, 9] = 0
    mask = det.update(f).pixel_mask(6, 10)
    assert mask.shape == (6, 10)
    assert bool(mask[4:, 8:].all()) and int(mask.sum()) == 4


def test_from_settings_and_overrides():
    settings = st.replace(st.PerceptionSettings(), {
        'change.tile_size': 8, 'change.threshold': 3.0, 'change.min_pixels': 2})
    det = ChangeDetector(settings.change, dilation=2)
    assert (det.tile_size, det.threshold, det.min_pixels, det.dilation) == (8, 3.0, 2, 2)


@pytest.mark.parametrize('kwargs, message', [
    ({'tile_size': 0}, 'tile_size=0'), ({'threshold': -1}, 'threshold=-1'),
    ({'tile_size': 4, 'min_pixels': 17}, 'min_pixels = 17 is more than the 16 pixels of a '
                                         'change.tile_size 4 tile'),
    ({'min_pixels': 0}, 'min_pixels=0'), ({'threshold': float('nan')}, 'threshold=nan'),
    # Read as 16, 2 and a threshold of 1 before:
    ({'tile_size': 16.9}, 'tile_size=16.9 must be a whole number'),
    ({'min_pixels': 2.5}, 'min_pixels=2.5 must be a whole number'),
    ({'threshold': True}, 'threshold=True must be a number'),
    ({'tile_size': '16'}, "tile_size='16' must be a whole number")])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChangeDetector(**kwargs)


@pytest.mark.parametrize('bad, message', [
    ('not a frame', 'numpy array or a torch tensor'),
    (np.zeros((2, 3, 4, 5), np.uint8), r'\(H, W\) or \(H, W, C\)'),
    (np.zeros((4, 4), np.int32), 'dtype int32'),
    # A tensor's pixels too: an int32 difference wraps, a complex one drops its imaginary part.
    (torch.zeros(4, 4, dtype=torch.int32), 'dtype torch.int32'),
    (torch.zeros(4, 4, dtype=torch.int64), 'dtype torch.int64'),
    (torch.zeros(4, 4, dtype=torch.complex64), 'dtype torch.complex64'),
    # No pixels (an OpenCV assertion, a ZeroDivisionError or NaN fractions before).
    (np.zeros((0, 64, 3), np.uint8), r'shape \(0, 64, 3\): no pixels'),
    (np.zeros((0, 64), np.uint8), 'no pixels'),
    (np.zeros((16, 16, 0), np.float32), 'no pixels'),
    # Channels first: read as an image 3 pixels high before.
    (torch.zeros(3, 48, 64, dtype=torch.uint8), r'\(3, 48, 64\), channels first'),
])
def test_bad_frames_are_named(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        ChangeDetector().update(bad)


def test_every_byte_order_and_sign_of_a_16_bit_frame_reads_alike():
    frame = np.random.default_rng(3).integers(0, 30000, (16, 16)).astype(np.uint16)
    moved = frame.copy()
    moved[4, 9] += 500
    maps = []
    for dtype in (np.uint16, np.dtype('>u2'), np.int16):
        detector = ChangeDetector(tile_size=8, min_pixels=1)
        detector.update(frame.astype(dtype))
        maps.append(detector.update(moved.astype(dtype)).tiles)
    assert maps[0].sum() == 1 and all(torch.equal(maps[0], m) for m in maps)


def test_a_read_only_frame_is_taken_without_a_warning():
    import warnings

    frame = np.zeros((32, 32, 3), np.uint8)
    frame.flags.writeable = False  # as a message's buffer arrives
    detector = ChangeDetector(threshold=0.0, tile_size=8, min_pixels=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        detector.update(frame)
        moved = frame.copy()
        moved[0, 0] = 9
        moved.flags.writeable = False
        assert detector.update(moved).tiles[0, 0]


# -- the change map of a resampled network input ------------------------------------------------

def _frame_map(detector, image):
    return detector.update(image)


def test_resampled_input_starts_with_a_refresh_and_then_follows_the_frame_map():
    from sparse_perception.change import ResampledChange
    from sparse_perception.models.transforms import ImageTransform

    frames = ChangeDetector(threshold=0, tile_size=16, min_pixels=1)
    shrink = ImageTransform.fit((96, 128), (48, 64), 'resize')  # half size: 3 x 4 input tiles
    resampled = ResampledChange(16)
    resampled.add(frames.update(frame(96, 128)))
    first = resampled.update(shrink)
    assert first.refresh and first.tiles.shape == (3, 4) and bool(first.tiles.all())
    still = frame(96, 128)
    resampled.add(frames.update(still))
    assert not resampled.update(shrink).tiles.any()  # nothing moved, nothing to run
    moved = still.copy()
    moved[70, 100] = 0  # frame tile (4, 6): input pixel (35, 50), in input tile (2, 3)
    resampled.add(frames.update(moved))
    tiles = resampled.update(shrink).tiles
    assert tiles[2, 3] and int(tiles.sum()) <= 2  # that tile (and at most a neighbour)


def test_resampled_input_refuses_a_transform_made_for_another_frame():
    from sparse_perception.change import ChangeMap, ResampledChange
    from sparse_perception.models.transforms import ImageTransform

    frames = ChangeDetector(threshold=0, tile_size=16, min_pixels=1)
    resampled = ResampledChange(16)
    resampled.add(frames.update(frame(96, 128)))
    resampled.update(ImageTransform.fit((96, 128), (48, 64), 'resize'))
    moved = frame(96, 128)
    moved[90, 120] = 0
    change = frames.update(moved)
    # The map of a uint8 tile map is taken as its truth values (numpy refused the |= before).
    resampled.add(ChangeMap(change.tiles.to(torch.uint8), False, 0.1, 0.1, 16, 1))
    with pytest.raises(ValueError, match=r'the transform is made for a frame of 48x64 pixels '
                                         r'\(height x width\), 3x4 tiles of 16 pixels; the '
                                         'change maps have 6x8'):
        resampled.update(ImageTransform.fit((48, 64), (48, 64), 'resize'))  # (missed it)
    with pytest.raises(ValueError, match='ResampledChange tile_size=1.7 must be a whole number'):
        ResampledChange(1.7)


def test_a_small_change_in_the_frame_reaches_a_shrunk_input():
    # The regression behind a tracked pose that parted from dense at change.threshold 12 and
    # min_pixels 32: a walking pedestrian changes about 40 camera pixels of a tile, a change
    # detector of the detector's own, 3.4 times smaller, input saw a tenth of that, below
    # min_pixels, and the detector kept answering for where people had been.
    from sparse_perception.change import ResampledChange
    from sparse_perception.models.transforms import ImageTransform, resize_image

    size = (576, 768)
    letterbox = ImageTransform.fit(size, (224, 224), 'letterbox')
    settings = {'threshold': 12, 'tile_size': 16, 'min_pixels': 32}
    frames, own = ChangeDetector(**settings), ChangeDetector(**settings)
    resampled = ResampledChange(16)
    before = frame(*size)
    after = before.copy()
    after[290:300, 400:404] = 160  # 40 pixels, 60 grey levels brighter: one frame tile
    for image in (before, after):
        change = frames.update(image)
        resampled.add(change)
        through_frame = resampled.update(letterbox)
        through_own = own.update(resize_image(image, letterbox))
    assert int(change.tiles.sum()) == 1
    assert not through_own.tiles.any()  # the input's own map misses it...
    x, y = letterbox.to_input(np.array([402.0, 295.0]))
    assert through_frame.tiles[int(y) // 16, int(x) // 16]  # ...the frame's map does not


def test_resampled_input_gathers_the_frames_it_did_not_run_and_refreshes_with_the_frame():
    from sparse_perception.change import ResampledChange
    from sparse_perception.models.transforms import ImageTransform

    frames = ChangeDetector(threshold=0, tile_size=16, min_pixels=1)
    same = ImageTransform.fit((64, 64), (64, 64), 'resize')
    resampled = ResampledChange(16)
    base = frame(64, 64)
    resampled.add(frames.update(base))
    resampled.update(same)
    for y, x in ((5, 5), (40, 50)):  # two frames the network did not run on
        base = base.copy()
        base[y, x] = 0
        resampled.add(frames.update(base))
    tiles = resampled.update(same).tiles
    assert tiles[0, 0] and tiles[2, 3]
    resampled.add(frames.update(base))
    assert not resampled.update(same).tiles.any()  # taken: gathering starts anew
    frames.request_refresh()
    resampled.add(frames.update(base))
    assert resampled.update(same).refresh
    resampled.add(frames.update(base))
    resampled.request_refresh()
    assert resampled.update(same).refresh
    resampled.reset()
    assert resampled.update(same).refresh  # made after the frame's map was handed out
