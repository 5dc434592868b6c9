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
sparse_perception.media.images on rosbags message types (no ROS needed).

Messages go through rosbags' CDR serializer, so what is checked is what a bag or a DDS peer
would see. References are independent of the code under test: raw bytes written here by hand,
OpenCV's cvtColor / imencode / imdecode, and numpy.
"""

import cv2
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from rosbags.typesys import get_typestore, Stores

from sparse_perception.media import images
from sparse_perception.media.images import (
    compressed_to_numpy, CompressedFormat, convert_encoding, encoding_info, ENCODINGS,
    image_to_numpy, ImageConversionError, numpy_to_compressed, numpy_to_image,
    parse_compressed_format)

TYPESTORE = get_typestore(Stores.LATEST)
Image = TYPESTORE.types['sensor_msgs/msg/Image']
CompressedImage = TYPESTORE.types['sensor_msgs/msg/CompressedImage']
Header = TYPESTORE.types['std_msgs/msg/Header']
Time = TYPESTORE.types['builtin_interfaces/msg/Time']
HEADER = Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id='camera')
RNG_SEED = 20260101


def _cdr_round_trip(msg):
    """Serialize and deserialize as a bag or a subscriber would (data becomes read-only)."""
    msgtype = type(msg).__msgtype__
    return TYPESTORE.deserialize_cdr(bytes(TYPESTORE.serialize_cdr(msg, msgtype)), msgtype)


def _random_image(encoding, height=3, width=5, seed=0):
    info = encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype.kind == 'f':
        return rng.normal(0, 100, shape).astype(info.dtype)
    limits = np.iinfo(info.dtype)
    return rng.integers(limits.min, limits.max, shape, dtype=info.dtype, endpoint=True)


def _raw_message(encoding, pixels, /, *, pad=0, big_endian=False, data=None, **overrides):
    """Build an Image by hand: rows of ``pixels`` in the given byte order, ``pad`` bytes after."""
    info = encoding_info(encoding)
    height, width = pixels.shape[:2]
    order = '>' if big_endian else '<'
    rows = pixels.astype(info.dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)
    padded = np.full((height, rows.shape[1] + pad), 0xAB, np.uint8)
    padded[:, :rows.shape[1]] = rows
    fields = {'header': HEADER, 'height': height, 'width': width, 'encoding': encoding,
              'is_bigendian': int(big_endian), 'step': rows.shape[1] + pad,
              'data': padded.reshape(-1) if data is None else data}
    fields.update(overrides)
    return Image(**fields)


# --------------------------------------------------------------------------------------------
# Encodings and round trips
# --------------------------------------------------------------------------------------------

def test_encoding_table_matches_cv_bridge():
    assert {'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', '8UC1', '8UC3', '16UC1',
            '32FC1', '8UC4', '16UC3', '32FC3'} <= set(ENCODINGS)
    # cv_bridge's getCvType: colour encodings map to the OpenCV type of their depth/channels.
    expected = {'rgb8': (np.uint8, 3), 'bgra8': (np.uint8, 4), 'mono16': (np.uint16, 1),
                'rgb16': (np.uint16, 3), 'bayer_rggb8': (np.uint8, 1), '8SC2': (np.int8, 2),
                '16SC1': (np.int16, 1), '32SC4': (np.int32, 4), '32FC1': (np.float32, 1),
                '64FC3': (np.float64, 3)}
    for name, (dtype, channels) in expected.items():
        info = encoding_info(name)
        assert (info.dtype, info.channels) == (np.dtype(dtype), channels), name


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_every_encoding(encoding):
    pixels = _random_image(encoding, seed=len(encoding))
    msg = numpy_to_image(pixels, encoding, HEADER, msg_type=Image)
    info = encoding_info(encoding)
    assert (msg.height, msg.width, msg.encoding) == (3, 5, encoding)
    assert msg.step == 5 * info.pixel_bytes and msg.is_bigendian == 0
    assert msg.header == HEADER
    assert msg.data.tobytes() == pixels.tobytes()
    back = image_to_numpy(_cdr_round_trip(msg))
    assert back.dtype == info.dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize('dtype, shape, expected', [
    (np.uint8, (2, 3), '8UC1'), (np.uint8, (2, 3, 1), '8UC1'), (np.uint8, (2, 3, 3), '8UC3'),
    (np.uint8, (2, 3, 4), '8UC4'), (np.int8, (2, 3, 2), '8SC2'), (np.uint16, (2, 3), '16UC1'),
    (np.int16, (2, 3, 3), '16SC3'), (np.int32, (2, 3), '32SC1'),
    (np.float32, (2, 3), '32FC1'), (np.float32, (2, 3, 3), '32FC3'),
    (np.float64, (2, 3, 4), '64FC4')])
def test_passthrough_names_the_opencv_type(dtype, shape, expected):
    msg = numpy_to_image(np.zeros(shape, dtype), header=HEADER, msg_type=Image)
    assert msg.encoding == expected
    channels = shape[2] if len(shape) == 3 else 1
    assert image_to_numpy(msg).shape == shape[:2] + ((channels,) if channels > 1 else ())


@pytest.mark.parametrize('encoding', ['mono8', 'rgb8', 'bgra8', 'mono16', 'rgb16', '16UC1',
                                      '32FC1', '64FC3', '8SC2'])
@pytest.mark.parametrize('pad', [1, 3, 8])
def test_padded_rows(encoding, pad):
    pixels = _random_image(encoding, height=4, width=3, seed=pad)
    msg = _cdr_round_trip(_raw_message(encoding, pixels, pad=pad))
    back = image_to_numpy(msg)
    np.testing.assert_array_equal(back, pixels)
    assert back.flags.c_contiguous and not np.shares_memory(back, msg.data)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '16SC1', 'rgb16', 'bgra16', '32SC1',
                                      '32FC1', '32FC3', '64FC1'])
@pytest.mark.parametrize('pad', [0, 2])
def test_big_endian_data_is_swapped_to_native(encoding, pad):
    pixels = _random_image(encoding, seed=7)
    msg = _cdr_round_trip(_raw_message(encoding, pixels, pad=pad, big_endian=True))
    back = image_to_numpy(msg)
    assert back.dtype == encoding_info(encoding).dtype  # native order, like cv_bridge
    np.testing.assert_array_equal(back, pixels)
    if encoding_info(encoding).dtype.itemsize > 1:
        # The same bytes read as little-endian would be different numbers: the flag matters.
        little = image_to_numpy(_raw_message(encoding, pixels, pad=pad, big_endian=True,
                                             is_bigendian=0))
        assert not np.array_equal(little, pixels, equal_nan=True)


def test_big_endian_flag_is_ignored_for_bytes():
    pixels = _random_image('rgb8')
    msg = _raw_message('rgb8', pixels, big_endian=True)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


@pytest.mark.parametrize('dtype', ['>u2', '>f4', '>i4', '>f8'])
def test_writing_a_big_endian_array_sets_the_flag(dtype):
    pixels = (np.arange(12).reshape(3, 4) * 3).astype(dtype)
    msg = numpy_to_image(pixels, header=HEADER, msg_type=Image)
    assert msg.is_bigendian == 1
    assert msg.data.tobytes() == pixels.tobytes()  # bytes as they are, in big-endian order
    back = image_to_numpy(_cdr_round_trip(msg))
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, pixels)


@settings(max_examples=150, deadline=None)
@given(encoding=st.sampled_from(['mono8', 'rgb8', 'bgra8', 'mono16', 'rgba16', '16SC3', '32SC2',
                                 '32FC1', '64FC2', '8UC2']),
       height=st.integers(1, 5), width=st.integers(1, 5), pad=st.integers(0, 9),
       big_endian=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_any_layout_reads_back(encoding, height, width, pad, big_endian, seed):
    pixels = _random_image(encoding, height, width, seed)
    msg = _cdr_round_trip(_raw_message(encoding, pixels, pad=pad, big_endian=big_endian))
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


# --------------------------------------------------------------------------------------------
# Desired-encoding conversions against OpenCV
# --------------------------------------------------------------------------------------------

# cv_bridge's conversion table, written out with OpenCV's names (reference for the tests).
_CV_CODES = {
    ('mono', 'rgb'): cv2.COLOR_GRAY2RGB, ('mono', 'bgr'): cv2.COLOR_GRAY2BGR,
    ('mono', 'rgba'): cv2.COLOR_GRAY2RGBA, ('mono', 'bgra'): cv2.COLOR_GRAY2BGRA,
    ('rgb', 'mono'): cv2.COLOR_RGB2GRAY, ('rgb', 'bgr'): cv2.COLOR_RGB2BGR,
    ('rgb', 'rgba'): cv2.COLOR_RGB2RGBA, ('rgb', 'bgra'): cv2.COLOR_RGB2BGRA,
    ('bgr', 'mono'): cv2.COLOR_BGR2GRAY, ('bgr', 'rgb'): cv2.COLOR_BGR2RGB,
    ('bgr', 'rgba'): cv2.COLOR_BGR2RGBA, ('bgr', 'bgra'): cv2.COLOR_BGR2BGRA,
    ('rgba', 'mono'): cv2.COLOR_RGBA2GRAY, ('rgba', 'rgb'): cv2.COLOR_RGBA2RGB,
    ('rgba', 'bgr'): cv2.COLOR_RGBA2BGR, ('rgba', 'bgra'): cv2.COLOR_RGBA2BGRA,
    ('bgra', 'mono'): cv2.COLOR_BGRA2GRAY, ('bgra', 'rgb'): cv2.COLOR_BGRA2RGB,
    ('bgra', 'bgr'): cv2.COLOR_BGRA2BGR, ('bgra', 'rgba'): cv2.COLOR_BGRA2RGBA,
}
_FAMILIES = ('mono', 'rgb', 'bgr', 'rgba', 'bgra')


def _opencv_reference(pixels, src, dst):
    """Compute what cv_bridge does: cvtColor at the source depth, then convertTo's scaling."""
    src_family, src_bits = src.rstrip('0123456789'), int(src.lstrip('monorgba'))
    dst_family, dst_bits = dst.rstrip('0123456789'), int(dst.lstrip('monorgba'))
    out = pixels if src_family == dst_family else cv2.cvtColor(pixels, _CV_CODES[
        (src_family, dst_family)])
    if src_bits != dst_bits:
        scale = 65535 / 255 if dst_bits == 16 else 255 / 65535
        out = cv2.multiply(out, np.ones_like(out), scale=scale,
                           dtype=cv2.CV_16U if dst_bits == 16 else cv2.CV_8U)
    return out


@pytest.fixture(params=['opencv', 'numpy'])
def color_backend(request, monkeypatch):
    """Run a test with cv2.cvtColor doing colour conversions, then with the numpy fallback."""
    if request.param == 'numpy':
        monkeypatch.setattr(images, '_opencv', lambda: None)
    else:
        assert images._opencv() is cv2
    return request.param


@pytest.mark.parametrize('src', [f + b for f in _FAMILIES for b in ('8', '16')])
@pytest.mark.parametrize('dst', [f + b for f in _FAMILIES for b in ('8', '16')])
def test_color_conversions_match_opencv(src, dst, color_backend):
    pixels = _random_image(src, height=32, width=48, seed=hash((src, dst)) % 1000)
    pixels.flat[:8] = np.iinfo(pixels.dtype).max  # extremes too
    pixels.flat[8:16] = 0
    msg = _cdr_round_trip(numpy_to_image(pixels, src, HEADER, msg_type=Image))
    got = image_to_numpy(msg, dst)
    expected = _opencv_reference(pixels, src, dst)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.flags.c_contiguous


@pytest.mark.parametrize('bits', [8, 16])
def test_grey_weights_are_opencvs_on_a_dense_colour_grid(bits, monkeypatch):
    # Every 8-bit (R, G) pair with a spread of B: the fixed-point weights must agree with
    # cv2.cvtColor everywhere, not just on random samples.
    r, g, b = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 15), indexing='ij')
    grid = np.stack([r, g, b], axis=-1).reshape(256, -1, 3)
    if bits == 16:
        grid = grid * 257 + np.random.default_rng(bits).integers(0, 257, grid.shape)
    grid = grid.astype(np.uint8 if bits == 8 else np.uint16)
    monkeypatch.setattr(images, '_opencv', lambda: None)  # the numpy fallback's weights
    got = convert_encoding(grid, f'rgb{bits}', f'mono{bits}')
    np.testing.assert_array_equal(got, cv2.cvtColor(grid, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize('src, dst', [('mono16', 'bgr16'), ('rgb16', 'mono16'),
                                      ('rgb8', 'bgr8'), ('rgba8', 'mono8'), ('mono8', 'rgba8'),
                                      ('bgr16', 'rgb8')])
@pytest.mark.parametrize('pad', [1, 2, 3])
def test_padded_rows_convert(src, dst, pad, color_backend):
    # Odd steps in 16-bit images cannot be viewed by a cv::Mat: the conversion must cope.
    pixels = _random_image(src, height=5, width=7, seed=pad)
    msg = _cdr_round_trip(_raw_message(src, pixels, pad=pad, big_endian=pad == 3))
    expected = _opencv_reference(pixels, src, dst)
    np.testing.assert_array_equal(image_to_numpy(msg, dst), expected)


def test_reversed_and_big_endian_arrays_convert(color_backend):
    pixels = _random_image('rgb16', 6, 8, seed=2)
    np.testing.assert_array_equal(convert_encoding(pixels[::-1, ::-1], 'rgb16', 'bgr16'),
                                  pixels[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(convert_encoding(pixels.astype('>u2'), 'rgb16', 'mono16'),
                                  cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))


def test_known_pixels(color_backend):
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255  # pure red in rgb8
    assert image_to_numpy(numpy_to_image(red, 'rgb8', HEADER, msg_type=Image),
                          'bgr8').tolist() == [[[0, 0, 255]]]
    assert image_to_numpy(numpy_to_image(red, 'rgb8', HEADER, msg_type=Image),
                          'mono8').tolist() == [[76]]  # round(0.299 * 255)
    grey = np.full((1, 1), 1000, np.uint16)
    assert image_to_numpy(numpy_to_image(grey, 'mono16', HEADER, msg_type=Image),
                          'bgra16').tolist() == [[[1000, 1000, 1000, 65535]]]


@pytest.mark.parametrize('src, dst, cv_depth, scale', [
    ('bgr8', '8UC3', cv2.CV_8U, 1), ('mono16', '16UC1', cv2.CV_16U, 1),
    ('8UC3', '16UC3', cv2.CV_16U, 65535 / 255), ('16UC1', '8UC1', cv2.CV_8U, 255 / 65535),
    ('16UC1', '32FC1', cv2.CV_32F, 1), ('32FC1', '16UC1', cv2.CV_16U, 1),
    ('32FC1', '8UC1', cv2.CV_8U, 1), ('64FC2', '32SC2', cv2.CV_32S, 1),
    ('32FC1', '16SC1', cv2.CV_16S, 1), ('8SC1', '16SC1', cv2.CV_16S, 65535 / 255),
    ('32SC1', '16UC1', cv2.CV_16U, 1), ('16SC3', '8UC3', cv2.CV_8U, 255 / 65535),
    ('rgba16', '16UC4', cv2.CV_16U, 1)])
def test_generic_conversions_follow_convert_to(src, dst, cv_depth, scale):
    pixels = _random_image(src, height=8, width=8, seed=3)
    if pixels.dtype.kind == 'f':
        pixels = pixels * 400  # reach beyond 16 bit to exercise saturation
        pixels.flat[:7] = [np.nan, np.inf, -np.inf, 0.5, 1.5, -0.5, 1e12]
    got = convert_encoding(pixels, src, dst)
    expected = cv2.multiply(pixels, np.ones_like(pixels), scale=scale, dtype=cv_depth)
    np.testing.assert_array_equal(got, expected)


def test_nan_depth_becomes_zero_in_16uc1():
    depth = np.array([[np.nan, 1.25, 65535.7]], np.float32)
    assert convert_encoding(depth, '32FC1', '16UC1').tolist() == [[0, 1, 65535]]


def test_same_encoding_and_passthrough_return_the_array():
    pixels = _random_image('rgb8')
    assert convert_encoding(pixels, 'rgb8', 'rgb8') is pixels
    assert convert_encoding(pixels, 'rgb8', 'passthrough') is pixels


@pytest.mark.parametrize('src, dst, words', [
    ('16UC1', 'mono8', 'carries no colour information'),
    ('8UC1', 'mono8', 'carries no colour information'),
    ('8UC3', '8UC1', 'keeps the channel count'),
    ('rgb8', '8UC1', 'keeps the channel count'),
    ('bayer_rggb8', 'bgr8', 'no demosaicing'),
    ('rgb8', 'hsv8', "unknown image encoding 'hsv8'"),
])
def test_impossible_conversions_are_named(src, dst, words):
    msg = numpy_to_image(_random_image(src), src, HEADER, msg_type=Image)
    with pytest.raises(ImageConversionError, match=words) as caught:
        image_to_numpy(msg, dst)
    assert src in str(caught.value) or dst in str(caught.value)


def test_convert_encoding_checks_the_array_fits():
    with pytest.raises(ImageConversionError, match=r'does not fit encoding rgb8.*uint8'):
        convert_encoding(np.zeros((2, 2, 3), np.uint16), 'rgb8', 'bgr8')
    with pytest.raises(ImageConversionError, match=r'\(H, W, 3\)'):
        convert_encoding(np.zeros((2, 2), np.uint8), 'rgb8', 'bgr8')


# --------------------------------------------------------------------------------------------
# Memory: zero copy where safe, copies where the message buffer may change
# --------------------------------------------------------------------------------------------

def test_immutable_message_buffer_is_shared_read_only():
    pixels = _random_image('rgb8', 40, 30)
    msg = _cdr_round_trip(numpy_to_image(pixels, 'rgb8', HEADER, msg_type=Image))
    back = image_to_numpy(msg)  # rosbags data: a read-only view of the serialized bytes
    assert np.shares_memory(back, msg.data) and not back.flags.writeable
    copied = image_to_numpy(msg, copy=True)
    assert not np.shares_memory(copied, msg.data) and copied.flags.writeable
    np.testing.assert_array_equal(copied, pixels)


def test_mutable_message_buffer_is_copied_unless_asked():
    pixels = _random_image('mono16', 6, 7)
    msg = numpy_to_image(pixels, 'mono16', HEADER, msg_type=Image, copy=True)
    assert msg.data.flags.writeable  # a buffer its owner may overwrite (or reuse)
    back = image_to_numpy(msg)
    assert not np.shares_memory(back, msg.data)
    msg.data[:] = 0
    np.testing.assert_array_equal(back, pixels)  # unaffected by later changes to the message
    shared = image_to_numpy(msg, copy=False)
    assert np.shares_memory(shared, msg.data)


@pytest.mark.parametrize('data', [bytearray, memoryview, list])
def test_other_buffer_types_are_read_and_copied(data):
    pixels = _random_image('bgr8')
    raw = _raw_message('bgr8', pixels)
    msg = _raw_message('bgr8', pixels, data=data(bytearray(raw.data.tobytes())))
    back = image_to_numpy(msg)
    np.testing.assert_array_equal(back, pixels)
    assert back.flags.writeable  # a copy: the bytearray/list may change


def test_bytes_buffer_is_shared():
    pixels = _random_image('mono8')
    msg = _raw_message('mono8', pixels, data=pixels.tobytes())
    back = image_to_numpy(msg)
    assert not back.flags.writeable  # a view of immutable bytes, not a copy
    np.testing.assert_array_equal(back, pixels)


def test_conversion_never_aliases_the_message():
    msg = numpy_to_image(_random_image('bgr8'), 'bgr8', HEADER, msg_type=Image, copy=True)
    for desired in ('8UC3', 'rgb8', 'mono8'):
        out = image_to_numpy(msg, desired)
        assert not np.shares_memory(out, msg.data), desired


def test_numpy_to_image_shares_only_read_only_arrays():
    pixels = _random_image('rgb8', 4, 4)
    msg = numpy_to_image(pixels, 'rgb8', HEADER, msg_type=Image)
    assert not np.shares_memory(msg.data, pixels)
    pixels[...] = 0  # the caller reuses its buffer: the message must not change
    assert msg.data.any()
    frozen = _random_image('rgb8', 4, 4)
    frozen.flags.writeable = False
    assert np.shares_memory(numpy_to_image(frozen, 'rgb8', HEADER, msg_type=Image).data, frozen)
    writable = _random_image('rgb8', 4, 4)
    assert np.shares_memory(
        numpy_to_image(writable, 'rgb8', HEADER, msg_type=Image, copy=False).data, writable)
    assert not np.shares_memory(
        numpy_to_image(frozen, 'rgb8', HEADER, msg_type=Image, copy=True).data, frozen)


def test_non_contiguous_arrays_are_written_in_c_order():
    pixels = _random_image('rgb8', 6, 8)
    flipped = pixels[::2, ::-1, ::-1]  # strided view, channels reversed
    msg = numpy_to_image(flipped, 'bgr8', HEADER, msg_type=Image, copy=False)
    np.testing.assert_array_equal(image_to_numpy(_cdr_round_trip(msg)), flipped)


class _PlainImage:
    """A message class with defaults and ``bytes`` data, like ROS 1 genpy messages."""

    def __init__(self, header=None, height=0, width=0, encoding='', is_bigendian=0, step=0,
                 data=b''):
        self.header, self.height, self.width, self.encoding = header, height, width, encoding
        self.is_bigendian, self.step, self.data = is_bigendian, step, data


def test_duck_typed_message_class_with_bytes_data():
    pixels = _random_image('32FC1')
    msg = numpy_to_image(pixels, '32FC1', msg_type=_PlainImage)
    assert isinstance(msg.data, bytes) and msg.header is None
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


# --------------------------------------------------------------------------------------------
# Bad input: every case names the problem
# --------------------------------------------------------------------------------------------

def _bad(**overrides):
    return _raw_message('rgb8', _random_image('rgb8', 4, 5), **overrides)


@pytest.mark.parametrize('overrides, pattern', [
    ({'encoding': 'rgb9'}, r"unknown image encoding 'rgb9'; supported: .*rgb8.*mono16.*32FC1"),
    ({'encoding': ''}, r"unknown image encoding ''"),
    ({'width': 0}, r'zero size \(0x4'),
    ({'height': 0}, r'zero size \(5x0'),
    ({'step': 14}, r'step 14 is smaller than a row of 5 rgb8 pixels \(5 \* 3 = 15 bytes\)'),
    ({'data': np.zeros(59, np.uint8)}, r'truncated: 59 bytes, but step \* height = 15 \* 4 = 60'),
    ({'data': np.zeros(0, np.uint8)}, r'truncated: 0 bytes'),
    ({'data': np.zeros(61, np.uint8)}, r'61 bytes, more than step \* height = 15 \* 4 = 60'),
    ({'height': -1}, r'Image.height must be a non-negative integer, got -1'),
    ({'step': 15.0}, r'Image.step must be a non-negative integer, got 15.0'),
    ({'data': np.zeros(30, np.uint16)}, r'1-D uint8 array, got dtype uint16'),
    ({'data': 'not bytes'}, r'bytes-like or a sequence of integers 0-255, got str'),
    ({'data': [0] * 59 + [256]}, r'sequence of integers 0-255'),
])
def test_bad_messages_are_named(overrides, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        image_to_numpy(_bad(**overrides))


def test_a_raw_image_over_max_pixels_is_refused_before_its_data_is_read():
    fits = _bad()  # 5x4
    assert image_to_numpy(fits, 'rgb8', max_pixels=20).shape == (4, 5, 3)
    with pytest.raises(ImageConversionError,
                       match=r'Image is 5x4 \(width x height\), 0.0 megapixels, more than the '
                       r'limit of 1.9e-05 \(input.max_megapixels\); refused before conversion'):
        image_to_numpy(fits, 'rgb8', max_pixels=19)
    # A message claiming 20000x20000 over a few bytes names its size, not its short data.
    claims = _bad(width=20000, height=20000, step=60000)
    with pytest.raises(ImageConversionError, match=r'20000x20000 .*400.0 megapixels'):
        image_to_numpy(claims, max_pixels=64_000_000)
    with pytest.raises(ImageConversionError, match=r'truncated'):
        image_to_numpy(claims)  # no bound: as cv_bridge, the data is checked


def test_not_a_message():
    with pytest.raises(ImageConversionError, match=r"no field 'encoding'.*sensor_msgs/Image"):
        image_to_numpy(object())


def test_error_is_a_value_error():
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize('array, encoding, pattern', [
    (np.zeros((2, 3), np.float32), 'rgb8',
     r'dtype float32 and shape \(2, 3\) does not fit encoding rgb8, which needs dtype uint8 '
     r'and shape \(H, W, 3\)'),
    (np.zeros((2, 3, 3), np.uint16), 'rgb8', r'does not fit encoding rgb8'),
    (np.zeros((2, 3, 4), np.uint8), 'rgb8', r'does not fit encoding rgb8'),
    (np.zeros((2, 3, 3), np.uint8), 'mono8', r'needs dtype uint8 and shape \(H, W\)'),
    (np.zeros((2, 3, 3), np.uint8), 'yuv9', r"unknown image encoding 'yuv9'"),
    (np.zeros((2, 3, 2, 1), np.uint8), 'passthrough', r'shape \(H, W\) or \(H, W, C\)'),
    (np.zeros((2, 3, 5), np.uint8), 'passthrough', r'C in 1..4, got \(2, 3, 5\)'),
    (np.zeros((0, 3), np.uint8), 'passthrough', r'zero size \(shape \(0, 3\)\)'),
    (np.zeros((2, 0, 3), np.uint8), 'bgr8', r'zero size'),
    (np.zeros((2, 3), np.int64), 'passthrough', r'dtype int64 has no ROS encoding; use one of'),
    (np.zeros((2, 3), bool), 'passthrough', r'dtype bool has no ROS encoding'),
    (np.zeros((2, 3), np.float16), 'passthrough', r'dtype float16 has no ROS encoding'),
    ([[0, 1], [2, 3]], 'mono8', r'expected a numpy array, got list'),
])
def test_bad_arrays_are_named(array, encoding, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        numpy_to_image(array, encoding, HEADER, msg_type=Image)


def test_bad_copy_argument():
    with pytest.raises(ImageConversionError, match="copy must be None, True or False, got 'no'"):
        image_to_numpy(_bad(), copy='no')


def test_rosbags_types_need_a_header():
    with pytest.raises(TypeError, match='no default header: pass header='):
        numpy_to_image(np.zeros((2, 2), np.uint8), msg_type=Image)


# --------------------------------------------------------------------------------------------
# CompressedImage
# --------------------------------------------------------------------------------------------

def _smooth_bgr(height=48, width=64):
    # Gradients: JPEG reproduces them closely, so tolerances can be tight.
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)],
                    axis=-1).astype(np.uint8)


def _compressed(data, fmt='jpeg'):
    return CompressedImage(header=HEADER, format=fmt, data=np.frombuffer(data, np.uint8))


@pytest.mark.parametrize('fmt', ['jpeg', 'jpg', 'png'])
def test_cv_bridge_style_round_trip(fmt):
    bgr = _smooth_bgr()
    msg = _cdr_round_trip(numpy_to_compressed(bgr, fmt, HEADER, msg_type=CompressedImage))
    assert msg.format == fmt and msg.header == HEADER
    extension = '.png' if fmt == 'png' else '.jpg'
    assert msg.data.tobytes() == cv2.imencode(extension, bgr)[1].tobytes()
    back = compressed_to_numpy(msg)
    assert back.shape == bgr.shape and back.dtype == np.uint8
    if fmt == 'png':
        np.testing.assert_array_equal(back, bgr)
    else:
        error = np.abs(back.astype(int) - bgr)
        assert error.mean() < 1.5 and error.max() <= 12
        np.testing.assert_array_equal(
            back, cv2.imdecode(msg.data, cv2.IMREAD_UNCHANGED))  # exactly OpenCV's decode


@pytest.mark.parametrize('encoding, fmt, expected_format', [
    ('rgb8', 'jpeg', 'rgb8; jpeg compressed bgr8'),
    ('bgr8', 'jpeg', 'bgr8; jpeg compressed bgr8'),
    ('rgba8', 'jpeg', 'rgba8; jpeg compressed bgr8'),
    ('mono8', 'jpeg', 'mono8; jpeg compressed mono8'),
    ('rgb16', 'jpeg', 'rgb16; jpeg compressed bgr8'),
    ('mono16', 'jpeg', 'mono16; jpeg compressed mono8'),
    ('rgb8', 'png', 'rgb8; png compressed bgr8'),
    ('rgba8', 'png', 'rgba8; png compressed bgra8'),
    ('bgra16', 'png', 'bgra16; png compressed bgra16'),
    ('rgb16', 'png', 'rgb16; png compressed bgr16'),
    ('mono8', 'png', 'mono8; png compressed '),
    ('mono16', 'png', 'mono16; png compressed '),
    ('16UC1', 'png', '16UC1; png compressed '),
])
def test_image_transport_format_strings(encoding, fmt, expected_format):
    pixels = _random_image(encoding, 8, 8)
    msg = numpy_to_compressed(pixels, fmt, HEADER, msg_type=CompressedImage, encoding=encoding)
    assert msg.format == expected_format
    assert parse_compressed_format(msg.format).codec == fmt


@pytest.mark.parametrize('encoding', ['mono8', 'mono16', 'rgb8', 'bgr8', 'rgba8', 'bgra8',
                                      'rgb16', 'bgra16'])
def test_png_is_lossless_in_every_grey_and_colour_encoding(encoding):
    pixels = _random_image(encoding, 9, 11)
    msg = _cdr_round_trip(numpy_to_compressed(pixels, 'png', HEADER, msg_type=CompressedImage,
                                              encoding=encoding))
    back = compressed_to_numpy(msg, encoding)
    assert back.dtype == pixels.dtype
    np.testing.assert_array_equal(back, pixels)


def test_png_of_16uc1_depth_is_lossless():
    depth = _random_image('16UC1', 9, 11)
    msg = numpy_to_compressed(depth, 'png', HEADER, msg_type=CompressedImage, encoding='16UC1')
    np.testing.assert_array_equal(compressed_to_numpy(msg), depth)


def test_a_compressed_image_converts_as_the_encoding_its_format_names():
    # image_transport labels the decoded image with the encoding that was compressed: a depth
    # map or a Bayer mosaic is not a grey picture, compressed or raw.
    depth = np.full((4, 4), 1500, np.uint16)
    mosaic = np.zeros((4, 4), np.uint8)
    mosaic[0::2, 0::2] = 255  # all red in an RGGB mosaic
    for pixels, encoding, said in ((depth, '16UC1', '16UC1 carries no colour information'),
                                   (mosaic, 'bayer_rggb8', 'no demosaicing here')):
        raw = numpy_to_image(pixels, encoding, HEADER, msg_type=Image)
        packed = numpy_to_compressed(pixels, 'png', HEADER, msg_type=CompressedImage,
                                     encoding=encoding)
        for msg, decode in ((raw, image_to_numpy), (packed, compressed_to_numpy)):
            with pytest.raises(ImageConversionError, match=said):
                decode(msg, 'rgb8')
        np.testing.assert_array_equal(compressed_to_numpy(packed), pixels)
    np.testing.assert_array_equal(compressed_to_numpy(packed, 'bayer_rggb8'), mosaic)
    # A payload the format says is in RGB order is not swapped as OpenCV's BGR would be.
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    rgb_payload = cv2.imencode('.png', red)[1].tobytes()  # written without a BGR swap
    for fmt, first in (('rgb8; png compressed rgb8', [255, 0, 0]),
                       ('rgb8; png compressed bgr8', [0, 0, 255])):
        got = compressed_to_numpy(_compressed(rgb_payload, fmt), 'rgb8')
        assert got[0, 0].tolist() == first


def test_rgb_jpeg_decodes_to_rgb_and_grey():
    rgb = _smooth_bgr()[..., ::-1].copy()
    msg = _cdr_round_trip(numpy_to_compressed(rgb, 'jpeg', HEADER, msg_type=CompressedImage,
                                              encoding='rgb8', quality=95))
    decoded_bgr = cv2.imdecode(msg.data, cv2.IMREAD_UNCHANGED)
    passthrough = compressed_to_numpy(msg)
    np.testing.assert_array_equal(passthrough, decoded_bgr)  # OpenCV order, like cv_bridge
    as_rgb = compressed_to_numpy(msg, 'rgb8')
    np.testing.assert_array_equal(as_rgb, decoded_bgr[..., ::-1])
    assert np.abs(as_rgb.astype(int) - rgb).mean() < 1.5
    np.testing.assert_array_equal(compressed_to_numpy(msg, 'mono8'),
                                  cv2.cvtColor(decoded_bgr, cv2.COLOR_BGR2GRAY))
    assert compressed_to_numpy(msg, 'mono16').dtype == np.uint16


def test_grey_jpeg_decodes_two_dimensional():
    grey = _smooth_bgr()[..., 1].copy()
    msg = numpy_to_compressed(grey, 'jpeg', HEADER, msg_type=CompressedImage, encoding='mono8')
    back = compressed_to_numpy(msg)
    assert back.shape == grey.shape and np.abs(back.astype(int) - grey).mean() < 1.5
    assert compressed_to_numpy(msg, 'bgr8').shape == grey.shape + (3,)


def test_sixteen_bit_jpeg_is_scaled_to_eight():
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    msg = numpy_to_compressed(ramp, 'jpeg', HEADER, msg_type=CompressedImage, encoding='mono16',
                              quality=100)
    back = compressed_to_numpy(msg)
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - np.rint(ramp / 257)).max() <= 3


def test_quality_is_applied():
    bgr = np.random.default_rng(RNG_SEED).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sizes = [numpy_to_compressed(bgr, 'jpeg', HEADER, msg_type=CompressedImage,
                                 quality=q).data.size for q in (10, 95)]
    assert sizes[0] < sizes[1] / 2
    levels = [numpy_to_compressed(_smooth_bgr(256, 256), 'png', HEADER,
                                  msg_type=CompressedImage, quality=q).data.size for q in (0, 9)]
    assert levels[1] < levels[0]


def test_empty_format_is_sniffed():
    png = cv2.imencode('.png', _smooth_bgr())[1].tobytes()
    np.testing.assert_array_equal(compressed_to_numpy(_compressed(png, '')), _smooth_bgr())


def test_compressed_buffer_types():
    jpeg = cv2.imencode('.jpg', _smooth_bgr())[1].tobytes()
    expected = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    for data in (jpeg, bytearray(jpeg), memoryview(jpeg)):
        msg = CompressedImage(header=HEADER, format='jpeg', data=data)
        np.testing.assert_array_equal(compressed_to_numpy(msg), expected)


@pytest.mark.parametrize('fmt, expected', [
    ('', CompressedFormat(None)),
    ('jpeg', CompressedFormat('jpeg')), ('JPG', CompressedFormat('jpeg')),
    (' png ', CompressedFormat('png')), ('jpe', CompressedFormat('jpeg')),
    ('rgb8; jpeg compressed bgr8', CompressedFormat('jpeg', 'rgb8', 'bgr8')),
    ('bgr8; jpeg compressed bgr8', CompressedFormat('jpeg', 'bgr8', 'bgr8')),
    ('mono8; jpeg compressed ', CompressedFormat('jpeg', 'mono8', None)),
    ('rgba16; png compressed bgra16', CompressedFormat('png', 'rgba16', 'bgra16')),
    ('16UC1; png compressed', CompressedFormat('png', '16UC1', None)),
])
def test_parse_compressed_format(fmt, expected):
    assert parse_compressed_format(fmt) == expected


@pytest.mark.parametrize('fmt, pattern', [
    ('h264', r"unknown compression format 'h264'; supported: \"jpeg\""),
    ('tiff', r"unknown compression format 'tiff'"),
    ('rgb8; tiff compressed ', r"unknown compression format 'rgb8; tiff compressed '"),
    ('bgr8', r"unknown compression format 'bgr8'"),
    ('16UC1; compressedDepth png', r'compressed_depth_image_transport, which is not supported'),
    (None, r'format must be a string, got NoneType'),
])
def test_unknown_formats_are_named(fmt, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        parse_compressed_format(fmt)
    if isinstance(fmt, str):
        jpeg = cv2.imencode('.jpg', _smooth_bgr())[1].tobytes()
        with pytest.raises(ImageConversionError, match=pattern):
            compressed_to_numpy(_compressed(jpeg, fmt))


def _jpeg_bytes():
    return cv2.imencode('.jpg', _smooth_bgr())[1].tobytes()


def _png_bytes():
    return cv2.imencode('.png', _smooth_bgr())[1].tobytes()


@pytest.mark.parametrize('data, fmt, pattern', [
    (b'', 'jpeg', r'data is empty'),
    (bytes(range(200)), 'jpeg', r'corrupt or not JPEG/PNG: it starts with 00 01 02 03'),
    (b'GIF89a' + bytes(100), '', r'corrupt or not JPEG/PNG'),
    (_jpeg_bytes()[:-200], 'jpeg', r'JPEG of \d+ bytes is truncated or corrupt'),
    (_jpeg_bytes()[:len(_jpeg_bytes()) // 2], 'rgb8; jpeg compressed bgr8', r'truncated'),
    (_jpeg_bytes()[:3] + bytes(300) + _jpeg_bytes()[303:], 'jpeg',
     r'JPEG is corrupt or truncated: segment ff 00 at byte 2 claims 0 bytes'),
    (_png_bytes()[:len(_png_bytes()) // 2], 'png',
     r"PNG is corrupt or truncated: chunk 'IDAT' at byte \d+ claims \d+ bytes"),
    (_png_bytes(), 'jpeg', r'format says jpeg but the data is png'),
    (_jpeg_bytes(), 'bgr8; png compressed bgr8', r'format says png but the data is jpeg'),
])
def test_bad_compressed_data_is_named(data, fmt, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        compressed_to_numpy(_compressed(data, fmt))


@pytest.mark.parametrize('trailer', [bytes(16), b'\xff' * 7, b'\r\n', b'EXTRA', b'x' * 64])
def test_jpeg_with_trailing_padding_or_a_short_trailer_is_accepted(trailer):
    padded = _jpeg_bytes() + trailer
    assert compressed_to_numpy(_compressed(padded)).shape == (48, 64, 3)


@pytest.mark.parametrize('trailer', [b'x' * 65, b'\r\n\xff\xd8'])
def test_jpeg_with_more_after_its_end_is_refused(trailer):
    with pytest.raises(ImageConversionError, match='truncated or corrupt'):
        compressed_to_numpy(_compressed(_jpeg_bytes() + trailer))


@pytest.mark.parametrize('kwargs, pattern', [
    ({'fmt': 'bmp'}, r"unknown compression format 'bmp'; use \"jpeg\""),
    ({'fmt': 'jpeg', 'quality': 0}, r'jpeg quality must be an integer in 1..100, got 0'),
    ({'fmt': 'jpeg', 'quality': 101}, r'in 1..100, got 101'),
    ({'fmt': 'jpeg', 'quality': 9.5}, r'got 9.5'),
    ({'fmt': 'png', 'quality': 10}, r'png quality must be an integer in 0..9, got 10'),
    ({'image': np.zeros((4, 4), np.float32)}, r'jpeg cannot store an array of dtype float32'),
    ({'image': np.zeros((4, 4), np.uint16)}, r'jpeg cannot store .* uint16'),
    ({'image': np.zeros((4, 4, 4), np.uint8)}, r'jpeg cannot store .*expected uint8 grey'),
    ({'image': np.zeros((4, 4, 2), np.uint8), 'fmt': 'png'}, r'png cannot store'),
    ({'image': np.zeros((0, 4), np.uint8)}, r'zero size'),
    ({'image': np.zeros(4, np.uint8)}, r'shape \(H, W\) or \(H, W, C\), got \(4,\)'),
    ({'image': np.zeros((4, 4), np.uint16), 'encoding': '16UC1'},
     r'jpeg compression needs a grey or colour encoding .*got 16UC1'),
    ({'image': np.zeros((4, 4), np.float32), 'encoding': '32FC1', 'fmt': 'png'},
     r'png compression needs an 8- or 16-bit unsigned encoding, got 32FC1'),
    ({'image': np.zeros((4, 4, 3), np.uint8), 'encoding': 'rgba8'},
     r'does not fit encoding rgba8'),
])
def test_bad_compression_requests_are_named(kwargs, pattern):
    kwargs = {'image': _smooth_bgr(), 'fmt': 'jpeg', **kwargs}
    with pytest.raises(ImageConversionError, match=pattern):
        numpy_to_compressed(kwargs.pop('image'), kwargs.pop('fmt'), HEADER,
                            msg_type=CompressedImage, **kwargs)


def test_decoded_encoding_names():
    assert images.decoded_encoding(np.zeros((2, 2), np.uint8)) == 'mono8'
    assert images.decoded_encoding(np.zeros((2, 2, 4), np.uint16)) == 'bgra16'
    with pytest.raises(ImageConversionError, match='no grey or colour encoding'):
        images.decoded_encoding(np.zeros((2, 2, 2), np.uint8))


def test_big_endian_sixteen_bit_png():
    depth = _random_image('mono16', 6, 9, seed=4)
    msg = numpy_to_compressed(depth.astype('>u2'), 'png', HEADER, msg_type=CompressedImage,
                              encoding='mono16')
    np.testing.assert_array_equal(compressed_to_numpy(msg), depth)
    msg = numpy_to_compressed(depth.astype('>u2'), 'png', HEADER, msg_type=CompressedImage)
    np.testing.assert_array_equal(compressed_to_numpy(msg), depth)


def test_strided_data_array_is_read():
    pixels = _random_image('mono8', 2, 3)
    spread = np.zeros(12, np.uint8)
    spread[::2] = pixels.reshape(-1)
    msg = _raw_message('mono8', pixels, data=spread[::2])
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
