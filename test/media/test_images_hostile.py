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
Hostile and damaged compressed images: bounded work, the package's own error, never wrong pixels.

Every file here is built in the test: small valid images from OpenCV, then edited by hand
(headers claiming huge sizes, chunk lengths beyond the data, damaged entropy-coded data). A
fuzz test over mutated messages asserts that decoding gives a correct frame or
ImageConversionError, nothing else.
"""

import struct

import cv2
from hostile_files import (
    chunk as _chunk, jpeg as _jpeg, jpeg_claiming as _jpeg_claiming, picture as _picture,
    png as _png, png_claiming as _png_claiming)
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from rosbags.typesys import get_typestore, Stores

from sparse_perception.media import images
from sparse_perception.media.images import compressed_to_numpy, ImageConversionError

TYPESTORE = get_typestore(Stores.LATEST)
CompressedImage = TYPESTORE.types['sensor_msgs/msg/CompressedImage']
Header = TYPESTORE.types['std_msgs/msg/Header']
Time = TYPESTORE.types['builtin_interfaces/msg/Time']
HEADER = Header(stamp=Time(sec=1, nanosec=2), frame_id='camera')


def _msg(data, fmt=''):
    return CompressedImage(header=HEADER, format=fmt, data=np.frombuffer(bytes(data), np.uint8))


# ---------------------------------------------------------------------------------------------
# Sizes are checked from the header, before anything is allocated
# ---------------------------------------------------------------------------------------------

def test_header_sizes_are_read_without_decoding():
    assert images._jpeg_size(_jpeg()) == (128, 96)
    assert images._png_size(_png()) == (128, 96)
    assert images._png_size(_png_claiming(32768, 32768)) == (32768, 32768)


def test_png_claiming_32768_squared_is_refused_before_decoding():
    with pytest.raises(ImageConversionError,
                       match=r'png is 32768x32768 .*1073.7 megapixels, more than the limit of 64 '
                       r'\(input.max_megapixels\); refused before decoding'):
        compressed_to_numpy(_msg(_png_claiming(32768, 32768), 'png'))


def test_jpeg_claiming_20000_squared_is_refused_before_decoding():
    with pytest.raises(ImageConversionError, match=r'jpeg is 20000x20000 .*400.0 megapixels'):
        compressed_to_numpy(_msg(_jpeg_claiming(20000, 20000), 'jpeg'), 'rgb8')


def test_size_limit_is_a_setting_and_an_argument():
    from sparse_perception.settings import InputSettings
    assert images.default_max_pixels() == round(InputSettings().max_megapixels * 1e6)
    assert images.default_max_pixels() == 64_000_000
    with pytest.raises(ImageConversionError, match='more than the limit of 0.01'):
        compressed_to_numpy(_msg(_jpeg(_picture(120, 100))), max_pixels=10_000)
    assert compressed_to_numpy(_msg(_jpeg()), max_pixels=128 * 96).shape == (96, 128, 3)


def test_opencv_own_limit_becomes_image_conversion_error():
    # Above OpenCV's CV_IO_MAX_IMAGE_PIXELS (2**30) imdecode raises cv2.error.
    with pytest.raises(ImageConversionError, match=r'65000x65000\) cannot be decoded'):
        compressed_to_numpy(_msg(_jpeg_claiming(65000, 65000)), max_pixels=2 ** 40)


def test_png_chunk_length_beyond_the_data_is_refused_before_decoding():
    data = bytearray(_png())
    idat = data.index(b'IDAT') - 4
    struct.pack_into('>I', data, idat, 0xFFFFFFF0)
    with pytest.raises(ImageConversionError,
                       match=r"chunk 'IDAT' at byte \d+ claims 4294967280 bytes"):
        compressed_to_numpy(_msg(data, 'png'))


# ---------------------------------------------------------------------------------------------
# Damaged data that still decodes is refused, not returned as a good frame
# ---------------------------------------------------------------------------------------------

def test_jpeg_with_lost_entropy_data_is_corrupt_though_it_decodes():
    data = _jpeg()
    damaged = data[:len(data) // 2] + b'\xff\xd9'  # the end of the scan lost, EOI kept
    assert cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(ImageConversionError,
                       match=r'JPEG of \d+ bytes is corrupt \(it decodes, to wrong pixels\): '
                       r'libjpeg says "Corrupt JPEG data'):
        compressed_to_numpy(_msg(damaged, 'jpeg'))


def test_jpeg_with_extraneous_bytes_is_corrupt():
    data = _jpeg()
    damaged = data[:-2] + bytes(range(1, 151)) + b'\xff\xd9'
    with pytest.raises(ImageConversionError, match='extraneous bytes'):
        compressed_to_numpy(_msg(damaged, 'jpeg'))


def test_other_stderr_output_during_a_decode_is_passed_on(capfd):
    # Only libjpeg's corrupt-data warnings are taken; nothing else written meanwhile is lost.
    class Noisy:
        error = cv2.error
        IMREAD_UNCHANGED = cv2.IMREAD_UNCHANGED

        @staticmethod
        def imdecode(data, flags):
            import os
            os.write(2, b'another thread says hello\n')
            return cv2.imdecode(data, flags)

    image, warnings = images._decode_with_warnings(Noisy, np.frombuffer(_jpeg(), np.uint8))
    assert image.shape == (96, 128, 3) and warnings == ''
    assert 'another thread says hello' in capfd.readouterr().err


def test_png_with_a_damaged_ancillary_chunk_is_corrupt():
    data = _png()
    text = _chunk(b'tEXt', b'Comment\x00hello')
    damaged = bytearray(data[:33] + text + data[33:])
    damaged[33 + 12] ^= 0x01  # a flipped bit libpng would only warn about
    assert cv2.imdecode(np.frombuffer(bytes(damaged), np.uint8), cv2.IMREAD_UNCHANGED) \
        is not None
    with pytest.raises(ImageConversionError, match=r"chunk 'tEXt' at byte 33 fails its CRC"):
        compressed_to_numpy(_msg(damaged, 'png'))


def test_good_jpeg_and_png_still_decode_exactly():
    np.testing.assert_array_equal(compressed_to_numpy(_msg(_png())), _picture())
    jpeg = _jpeg()
    np.testing.assert_array_equal(
        compressed_to_numpy(_msg(jpeg)),
        cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED))


# ---------------------------------------------------------------------------------------------
# Fuzz: mutated messages give the right frame or ImageConversionError, never anything else
# ---------------------------------------------------------------------------------------------

_SEEDS = {'jpeg': _jpeg(_picture(24, 32)), 'png': _png(_picture(24, 32))}
_EXPECTED = {codec: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
             for codec, data in _SEEDS.items()}


@st.composite
def _mutated(draw):
    codec = draw(st.sampled_from(sorted(_SEEDS)))
    data = bytearray(_SEEDS[codec])
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(['flip', 'set', 'cut', 'insert', 'int32']))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == 'flip' and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == 'set' and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == 'cut':
            del data[position:position + draw(st.integers(1, 64))]
        elif kind == 'insert':
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 'int32' and len(data) >= position + 4:
            # Lengths and sizes: the fields a hostile file edits.
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFF, 65000]))
            data[position:position + 4] = struct.pack('>I', value)
    fmt = draw(st.sampled_from(['', codec, 'rgb8; ' + codec + ' compressed bgr8']))
    return codec, bytes(data), fmt


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(), st.sampled_from(['passthrough', 'rgb8', 'mono8']))
def test_fuzzed_compressed_messages_decode_right_or_raise_our_error(case, encoding):
    codec, data, fmt = case
    try:
        image = compressed_to_numpy(_msg(data, fmt), encoding, max_pixels=1_000_000)
    except ImageConversionError:
        return
    # Accepted: it must be what an intact OpenCV decode of the same bytes gives.
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and image.shape[:2] == decoded.shape[:2]
    if data == _SEEDS[codec] and encoding == 'passthrough':
        np.testing.assert_array_equal(image, _EXPECTED[codec])


def test_opencv_encoder_errors_become_image_conversion_error():
    from sparse_perception.media.images import numpy_to_compressed
    wide = np.zeros((1, 70000), np.uint8)  # beyond JPEG's 65535-pixel side
    with pytest.raises(ImageConversionError, match='could not jpeg-encode'):
        numpy_to_compressed(wide, 'jpeg', HEADER, msg_type=CompressedImage)
