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
sensor_msgs/Image and CompressedImage <-> numpy, with the semantics of ROS 2 cv_bridge.

Our own implementation (PyPI ``cv-bridge`` is a ROS 1 shim; a robot's cv_bridge may be missing
or built against another numpy), written for both kinds of message object this project meets:

- rclpy messages, whose ``data`` is an ``array.array('B')``;
- rosbags messages (bag replay, tests), whose ``data`` is a numpy ``uint8`` array.

Fields are read by duck typing, so neither rclpy nor rosbags is imported here. To build a
message, the caller passes the message class (``sensor_msgs.msg.Image`` in a node, the rosbags
type in the replay) and the header to copy.

The cv_bridge counterparts:

==================================  =============================================
cv_bridge                           here
==================================  =============================================
``imgmsg_to_cv2``                   :func:`image_to_numpy`
``cv2_to_imgmsg``                   :func:`numpy_to_image`
``compressed_imgmsg_to_cv2``        :func:`compressed_to_numpy`
``cv2_to_compressed_imgmsg``        :func:`numpy_to_compressed`
``cvtColor2``                       :func:`convert_encoding`
==================================  =============================================

Semantics kept from cv_bridge: single-channel images are 2-D ``(H, W)``, others
``(H, W, C)``; ``desired_encoding='passthrough'`` returns the data as it is; row padding is read
through ``step``; ``is_bigendian`` data is byte-swapped to native order; colour conversions
follow cv_bridge's table (grey/RGB/BGR with and without alpha, 8 and 16 bit, with the same
8 <-> 16 bit scaling), and a decoded compressed image is in OpenCV's channel order (BGR).
Differences: bad input raises :class:`ImageConversionError` (a ``ValueError``) naming the
problem, including data whose length is not ``step * height`` (as C++ cv_bridge, unlike its
Python side); a decoded array never aliases a message buffer that may change unless the caller
asks for it (``copy=False``); a compressed image converts from the encoding it actually decodes
to (cv_bridge assumes bgr8, which fails for grey JPEGs); the compressed ``format`` is checked
against the data; Bayer images pass through but are not demosaiced, and compressedDepth is not
supported.

Raw images need only numpy (colour conversions use ``cv2.cvtColor`` when OpenCV is installed,
an equivalent numpy path otherwise); compressed ones need OpenCV (``python3-opencv`` on a
robot, the ``opencv`` extra with pip). OpenCV is imported on first use.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
import functools
import os
import re
import struct
import sys
import tempfile
import threading
from typing import Any, Callable
import zlib

import numpy as np

PASSTHROUGH = 'passthrough'


class ImageConversionError(ValueError):
    """An image message or array cannot be converted; the message says why and what to do."""


@dataclass(frozen=True)
class EncodingInfo:
    """What one ``sensor_msgs/Image`` encoding stores per pixel."""

    name: str
    dtype: np.dtype  # element type, native byte order
    channels: int
    # Colour family for cv_bridge's conversions: 'mono', 'rgb', 'bgr', 'rgba', 'bgra' or
    # 'bayer'; None for the generic OpenCV types (8UC3, 32FC1, ...), which carry no colour.
    color: str | None

    @property
    def bit_depth(self) -> int:
        """Bits per channel value (cv_bridge's bitDepth)."""
        return self.dtype.itemsize * 8

    @property
    def pixel_bytes(self) -> int:
        """Bytes per pixel, all channels."""
        return self.dtype.itemsize * self.channels


# OpenCV depth names and their numpy types (cv_bridge's numpy_type_to_cvtype).
_CV_DEPTHS = (('8U', np.uint8), ('8S', np.int8), ('16U', np.uint16), ('16S', np.int16),
              ('32S', np.int32), ('32F', np.float32), ('64F', np.float64))


def _encoding_table() -> dict[str, EncodingInfo]:
    table = {}

    def add(name, dtype, channels, color):
        table[name] = EncodingInfo(name, np.dtype(dtype), channels, color)

    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        add(f'mono{bits}', dtype, 1, 'mono')
        for color in ('rgb', 'bgr', 'rgba', 'bgra'):
            add(f'{color}{bits}', dtype, len(color), color)
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        for pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
            add(f'bayer_{pattern}{bits}', dtype, 1, 'bayer')
    for depth, dtype in _CV_DEPTHS:
        for channels in (1, 2, 3, 4):
            add(f'{depth}C{channels}', dtype, channels, None)
    return table


_ENCODINGS = _encoding_table()
#: Every encoding this module reads and writes (sensor_msgs/image_encodings names).
ENCODINGS = tuple(_ENCODINGS)
_COLOR_ENCODINGS = tuple(name for name, info in _ENCODINGS.items()
                         if info.color not in (None, 'bayer'))
_CVTYPE_OF_DTYPE = {np.dtype(dtype): depth for depth, dtype in _CV_DEPTHS}


def encoding_info(encoding: str) -> EncodingInfo:
    """Return element type, channel count and colour family of an image encoding."""
    try:
        return _ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise ImageConversionError(
            f'unknown image encoding {encoding!r}; supported: {", ".join(ENCODINGS)} '
            '(see sensor_msgs/image_encodings.hpp)') from None


# ---------------------------------------------------------------------------------------------
# Encoding conversion (cv_bridge's cvtColor2)
# ---------------------------------------------------------------------------------------------

# Colour conversions use cv2.cvtColor where OpenCV is importable (it is SIMD and threaded:
# about 0.15 ms instead of 3.5 ms for a 1080p RGB <-> BGR swap) and an equivalent numpy path
# where it is not, so raw images never need OpenCV. test_images checks both against cvtColor.
_CV_COLOR_CODES = {
    (src, dst): f'COLOR_{_src_name}2{_dst_name}'
    for src, _src_name in (('mono', 'GRAY'), ('rgb', 'RGB'), ('bgr', 'BGR'), ('rgba', 'RGBA'),
                           ('bgra', 'BGRA'))
    for dst, _dst_name in (('mono', 'GRAY'), ('rgb', 'RGB'), ('bgr', 'BGR'), ('rgba', 'RGBA'),
                           ('bgra', 'BGRA'))
    if src != dst}


@functools.lru_cache(maxsize=1)
def _opencv():
    """Return the cv2 module, or None where OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


# OpenCV's fixed-point grey weights (RGB2GRAY: 0.299 R + 0.587 G + 0.114 B in 15 bits), which
# reproduce cv2.cvtColor bit-exactly for 8- and 16-bit images (test_images checks this).
_GRAY_SHIFT = 15
_GRAY_R, _GRAY_G, _GRAY_B = 9798, 19235, 3735
# Channel indices of R, G, B in each colour family.
_RGB_INDEX = {'rgb': (0, 1, 2), 'rgba': (0, 1, 2), 'bgr': (2, 1, 0), 'bgra': (2, 1, 0)}


def convert_encoding(image: np.ndarray, src_encoding: str, dst_encoding: str) -> np.ndarray:
    """
    Convert an image array from one encoding to another, as cv_bridge does.

    The rules are cv_bridge's: grey and colour encodings (mono8/16, rgb8/16, bgr8/16, rgba8/16,
    bgra8/16) convert into each other, with 8 <-> 16 bit values scaled by 257; a generic type
    (8UC3, 16UC1, 32FC1, ...) converts only to one with the same channel count, changing the
    element type (scaled by 257 between 8 and 16 bit, saturated otherwise); a colour encoding
    converts to a generic one with its channel count. Element types change as OpenCV's
    ``convertTo`` does: float to integer rounds half to even and saturates, with NaN, infinity
    and values beyond int32 going through INT32_MIN (so NaN depth becomes 0 in 16UC1). Returns
    ``image`` itself when nothing changes.
    """
    src = encoding_info(src_encoding)
    if dst_encoding == PASSTHROUGH:
        return image
    dst = encoding_info(dst_encoding)
    _check_fits(image, src)
    if src.name == dst.name:
        return image
    if not image.dtype.isnative:
        image = image.astype(image.dtype.newbyteorder('='))
    if src.color is None or dst.color is None:
        if src.color is None and dst.color is not None:
            raise ImageConversionError(
                f'cannot convert {src.name} to {dst.name}: {src.name} carries no colour '
                f'information but {dst.name} does; ask for "passthrough" or a generic encoding '
                f'with {src.channels} channel(s), such as '
                f'{_generic_name(dst.dtype, src.channels)}')
        if src.channels != dst.channels:
            raise ImageConversionError(
                f'cannot convert {src.name} ({src.channels} channel(s)) to {dst.name} '
                f'({dst.channels} channel(s)): a generic encoding keeps the channel count')
        return _convert_depth(image, src, dst)
    if 'bayer' in (src.color, dst.color):
        raise ImageConversionError(
            f'conversion from {src.name} to {dst.name} is not supported (no demosaicing here); '
            'debayer upstream (image_proc) or ask for "passthrough"')
    converted = _convert_color(image, src.color, dst.color)
    if src.bit_depth != dst.bit_depth:
        converted = _convert_depth(converted, src, dst)
    return converted


def _generic_name(dtype: np.dtype, channels: int) -> str:
    return f'{_CVTYPE_OF_DTYPE[np.dtype(dtype)]}C{channels}'


def _check_fits(image: Any, info: EncodingInfo) -> None:
    if not isinstance(image, np.ndarray):
        raise ImageConversionError(
            f'expected a numpy array for a {info.name} image, got {type(image).__name__}')
    channels = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else None)
    if image.dtype.newbyteorder('=') != info.dtype or channels != info.channels:
        raise ImageConversionError(
            f'array of dtype {image.dtype} and shape {image.shape} does not fit encoding '
            f'{info.name}, which needs dtype {info.dtype} and shape '
            f'{_shape_text(info.channels)}')


def _shape_text(channels: int) -> str:
    return '(H, W)' if channels == 1 else f'(H, W, {channels})'


def _convert_color(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    if src == dst:
        return image
    cv2 = _opencv()
    if cv2 is not None:
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        return cv2.cvtColor(_opencv_layout(image), getattr(cv2, _CV_COLOR_CODES[(src, dst)]))
    alpha_max = np.iinfo(image.dtype).max
    if src == 'mono':
        gray = image.reshape(image.shape[:2])
        channels = [gray, gray, gray] + ([np.full_like(gray, alpha_max)] if len(dst) == 4 else [])
        return np.stack(channels, axis=-1)
    r, g, b = (image[..., i] for i in _RGB_INDEX[src])
    if dst == 'mono':
        acc = (r.astype(np.uint32) * _GRAY_R + g.astype(np.uint32) * _GRAY_G
               + b.astype(np.uint32) * _GRAY_B + (1 << (_GRAY_SHIFT - 1)))
        return (acc >> _GRAY_SHIFT).astype(image.dtype)
    by_name = {'r': r, 'g': g, 'b': b}
    channels = [by_name[c] for c in dst[:3]]
    if len(dst) == 4:
        channels.append(image[..., 3] if len(src) == 4 else np.full_like(r, alpha_max))
    return np.stack(channels, axis=-1)


def _opencv_layout(image: np.ndarray) -> np.ndarray:
    """
    Return ``image`` in a layout a cv::Mat can view: packed pixels, rows whole elements apart.

    Padded rows are fine when the row stride is a multiple of the element size; an odd step in a
    16-bit image (allowed by sensor_msgs) or a reversed or strided view is copied first.
    """
    itemsize = image.itemsize
    packed = image.strides[-1] == itemsize and (
        image.ndim == 2 or image.strides[1] == itemsize * image.shape[2])
    rows_ok = image.strides[0] > 0 and image.strides[0] % itemsize == 0
    return image if packed and rows_ok else np.ascontiguousarray(image)


def _convert_depth(image: np.ndarray, src: EncodingInfo, dst: EncodingInfo) -> np.ndarray:
    if image.dtype == dst.dtype:
        return image
    # cv_bridge scales between 8- and 16-bit encodings (by bit depth, whatever the sign).
    bits = (src.bit_depth, dst.bit_depth)
    if image.dtype == np.uint8 and dst.dtype == np.uint16:
        return image.astype(np.uint16) * np.uint16(257)
    if image.dtype == np.uint16 and dst.dtype == np.uint8:
        # round(v * 255 / 65535) == round(v / 257); no ties occur.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    scale = {(8, 16): 65535.0 / 255.0, (16, 8): 255.0 / 65535.0}.get(bits, 1.0)
    if dst.dtype.kind == 'f':  # 32 or 64 bit: never scaled
        return image.astype(dst.dtype)
    values = np.rint(image * scale if scale != 1.0 else image.astype(np.float64))
    if image.dtype.kind == 'f' or scale != 1.0:
        # OpenCV's saturate_cast rounds through int32 (cvRound): NaN, infinities and values
        # beyond int32 come out as INT32_MIN, which then saturates (to 0 for unsigned types).
        int32 = np.iinfo(np.int32)
        values[~((values >= int32.min) & (values <= int32.max))] = int32.min
    limits = np.iinfo(dst.dtype)
    return np.clip(values, limits.min, limits.max).astype(dst.dtype)


# ---------------------------------------------------------------------------------------------
# Message buffers
# ---------------------------------------------------------------------------------------------

def _field(msg: Any, name: str, what: str = 'sensor_msgs/Image') -> Any:
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ImageConversionError(
            f'{type(msg).__name__} has no field {name!r}: expected a {what} message '
            '(rclpy or rosbags)') from None


def _int_field(msg: Any, name: str) -> int:
    value = _field(msg, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ImageConversionError(
            f'Image.{name} must be a non-negative integer, got {value!r}')
    return int(value)


def _byte_array(data: Any, what: str) -> np.ndarray:
    """View ``data`` (numpy array, bytes, bytearray, array.array, memoryview) as uint8."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ImageConversionError(
                f'{what}.data must be a 1-D uint8 array, got dtype {data.dtype} and shape '
                f'{data.shape}')
        return np.ascontiguousarray(data)  # the same array unless it is a strided view
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        pass
    try:  # a plain sequence of ints (a list, as some message libraries use)
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageConversionError(
            f'{what}.data must be bytes-like or a sequence of integers 0-255, got '
            f'{type(data).__name__}: {exc}') from None


def _is_immutable(data: Any) -> bool:
    """Whether nobody can change ``data`` in place: bytes, or read-only views ending in bytes."""
    obj = data
    for _ in range(64):  # views of views; the chain is short in practice
        if isinstance(obj, bytes):
            return True
        if isinstance(obj, memoryview):
            if not obj.readonly:
                return False
            obj = obj.obj
        elif isinstance(obj, np.ndarray):
            if obj.flags.writeable:
                return False
            if obj.base is None:
                return True  # a read-only array owning its memory
            obj = obj.base
        else:
            return False  # array.array, bytearray, mmap, ...: may change under us
    return False


def _finish(result: np.ndarray, buffer: np.ndarray, share: bool) -> np.ndarray:
    """Return ``result`` C-contiguous, copied if it would alias ``buffer`` and may not."""
    if not result.flags.c_contiguous or (not share and np.may_share_memory(result, buffer)):
        return np.array(result, order='C', copy=True)
    return result


def _check_copy(copy: Any) -> None:
    if copy not in (None, True, False):
        raise ImageConversionError(f'copy must be None, True or False, got {copy!r}')


# ---------------------------------------------------------------------------------------------
# sensor_msgs/Image
# ---------------------------------------------------------------------------------------------

def image_to_numpy(msg: Any, desired_encoding: str = PASSTHROUGH, *,
                   copy: bool | None = None, max_pixels: int | None = None) -> np.ndarray:
    """
    Return the pixels of a ``sensor_msgs/Image`` as a C-contiguous numpy array.

    Like cv_bridge's ``imgmsg_to_cv2``: ``(H, W)`` for one channel, ``(H, W, C)`` otherwise, in
    native byte order (``is_bigendian`` data is swapped), rows read through ``step`` (padding
    dropped), converted to ``desired_encoding`` unless that is ``'passthrough'`` or the
    message's own encoding (see :func:`convert_encoding`).

    ``copy``: ``None`` (default) shares memory with the message only where its buffer cannot
    change (bytes, or the read-only arrays rosbags deserializes into) and copies otherwise (an
    rclpy message's ``array.array``); the shared array is then read-only. ``True`` always
    copies. ``False`` shares whenever the layout allows (no padding, native byte order, no
    conversion), even a mutable buffer: fastest, but the array changes if the message does.

    ``max_pixels`` (default None: no bound) bounds width x height, checked before anything is
    converted: the message holds its pixels already, but what follows it (a conversion, the
    networks' caches) grows with them.

    Raises :class:`ImageConversionError` for an unknown encoding, zero width or height, an
    image larger than ``max_pixels``, a ``step`` shorter than a row, data shorter or longer
    than ``step * height``, or an impossible conversion.
    """
    _check_copy(copy)
    encoding = _field(msg, 'encoding')
    info = encoding_info(encoding)
    height, width, step = (_int_field(msg, name) for name in ('height', 'width', 'step'))
    if height == 0 or width == 0:
        raise ImageConversionError(
            f'Image has zero size ({width}x{height}, width x height): there are no pixels to '
            'convert; check the publisher')
    if max_pixels is not None and width * height > max_pixels:
        raise ImageConversionError(
            f'Image is {width}x{height} (width x height), {width * height / 1e6:.1f} '
            f'megapixels, more than the limit of {max_pixels / 1e6:g} (input.max_megapixels); '
            'refused before conversion. Raise the limit if frames this large are expected')
    row_bytes = width * info.pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f'Image.step {step} is smaller than a row of {width} {encoding} pixels '
            f'({width} * {info.pixel_bytes} = {row_bytes} bytes): step, width or encoding is '
            'wrong')
    raw = _field(msg, 'data')
    buffer = _byte_array(raw, 'Image')
    expected = step * height
    if buffer.size < expected:
        raise ImageConversionError(
            f'Image data is truncated: {buffer.size} bytes, but step * height = {step} * '
            f'{height} = {expected}')
    if buffer.size > expected:
        raise ImageConversionError(
            f'Image data has {buffer.size} bytes, more than step * height = {step} * {height} '
            f'= {expected}: height or step is wrong')
    big_endian = bool(_field(msg, 'is_bigendian'))
    dtype = info.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder('>' if big_endian else '<')
    view = np.ndarray(shape=(height, width, info.channels), dtype=dtype, buffer=buffer,
                      strides=(step, info.pixel_bytes, dtype.itemsize))
    if info.channels == 1:
        view = view[:, :, 0]
    if dtype != info.dtype:  # stored in the other byte order: swap (copies)
        view = view.astype(info.dtype)
    share = copy is False or (copy is None and _is_immutable(raw))
    result = convert_encoding(view, encoding, desired_encoding)
    return _finish(result, buffer, share)


def numpy_to_image(image: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, *,
                   msg_type: type, copy: bool | None = None) -> Any:
    """
    Build a ``sensor_msgs/Image`` of class ``msg_type`` holding ``image``.

    Like cv_bridge's ``cv2_to_imgmsg``: ``image`` is ``(H, W)`` or ``(H, W, C)`` with C 1 to
    4; with ``encoding='passthrough'`` the encoding is the OpenCV type of the array (``8UC3``,
    ``16UC1``, ...), otherwise the array must fit the encoding (dtype and channels; no
    conversion happens). Rows are written without padding; a big-endian array (dtype ``>u2``)
    is written as it is with ``is_bigendian`` set. ``header`` is copied into the message (it is
    required for message classes without defaults, such as rosbags types).

    ``msg_type`` is ``sensor_msgs.msg.Image`` (rclpy) or a rosbags ``Image`` type; the data is
    stored in the container that class uses. ``copy``: with numpy containers (rosbags), ``None``
    shares the array's memory only if it is read-only and contiguous, ``False`` whenever it is
    contiguous, ``True`` never; ``array.array`` containers (rclpy) always hold a copy.
    """
    _check_copy(copy)
    if not isinstance(image, np.ndarray):
        raise ImageConversionError(
            f'expected a numpy array, got {type(image).__name__}')
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        raise ImageConversionError(
            f'image array must have shape (H, W) or (H, W, C) with C in 1..4, got {image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(
            f'image array has zero size (shape {image.shape}): nothing to publish')
    channels = 1 if image.ndim == 2 else image.shape[2]
    native = image.dtype.newbyteorder('=')
    if native not in _CVTYPE_OF_DTYPE:
        raise ImageConversionError(
            f'image dtype {image.dtype} has no ROS encoding; use one of '
            f'{", ".join(str(np.dtype(d)) for _, d in _CV_DEPTHS)}')
    if encoding == PASSTHROUGH:
        encoding = _generic_name(native, channels)
    else:
        _check_fits(image, encoding_info(encoding))
    big_endian = image.dtype.byteorder == '>' or (
        image.dtype.byteorder == '=' and sys.byteorder == 'big')
    height, width = image.shape[:2]
    share = copy is False or (copy is None and _is_immutable(image))
    payload = _payload(image, share)
    fields = {'height': height, 'width': width, 'encoding': encoding,
              'is_bigendian': int(big_endian), 'step': width * channels * image.dtype.itemsize}
    return build_message(msg_type, header, fields, payload)


def _payload(image: np.ndarray, share: bool) -> np.ndarray:
    """Bytes of ``image`` in C order as a 1-D uint8 array (shared with it if allowed)."""
    if share and image.flags.c_contiguous:
        contiguous = image
    else:
        contiguous = np.array(image, order='C', copy=True)
    return contiguous.reshape(-1).view(np.uint8)


@functools.lru_cache(maxsize=None)
def _data_container(msg_type: type) -> str:
    """
    Return the container ``msg_type`` keeps ``data`` in: 'numpy', 'array' or 'bytes'.

    Classes whose every field has a default (rclpy, genpy) are probed with an instance; classes
    that need every field (rosbags dataclasses) store numpy arrays.
    """
    try:
        probe = msg_type()
    except TypeError:
        return 'numpy'
    data = getattr(probe, 'data', None)
    if isinstance(data, array.array):
        return 'array'
    if isinstance(data, np.ndarray):
        return 'numpy'
    if isinstance(data, (bytes, bytearray)):
        return 'bytes'
    raise TypeError(
        f'{msg_type.__name__} keeps data as {type(data).__name__}; expected an rclpy or rosbags '
        'sensor_msgs message class')


def build_message(msg_type: type, header: Any, fields: dict, payload: np.ndarray) -> Any:
    """
    Build a message with a ``uint8[] data`` field from any message class this project meets.

    ``fields`` are the other fields as keyword arguments; ``payload`` is a 1-D uint8 array,
    stored the way ``msg_type`` keeps ``data`` (array.array for rclpy, numpy for rosbags).
    """
    container = _data_container(msg_type)
    if header is not None:
        fields = dict(fields, header=header)
    if container == 'numpy':
        if header is None:
            raise TypeError(
                f'{msg_type.__name__} has no default header: pass header= (for example the '
                "input message's header)")
        return msg_type(**fields, data=payload)
    msg = msg_type(**fields)
    if container == 'array':
        data = array.array('B')
        data.frombytes(payload)
    else:
        data = payload.tobytes()
    msg.data = data
    return msg


# ---------------------------------------------------------------------------------------------
# sensor_msgs/CompressedImage
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``CompressedImage.format``."""

    codec: str | None  # 'jpeg' or 'png'; None when the format names none (then sniffed)
    # image_transport's "<encoding>; <codec> compressed <payload>" form: the encoding of the
    # raw image that was compressed and the one the compressed payload holds (OpenCV order);
    # None for a bare "jpeg"/"png".
    encoding: str | None = None
    payload_encoding: str | None = None


_CODEC_NAMES = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'jpe': 'jpeg', 'png': 'png'}
_TRANSPORT_FORMAT = re.compile(
    r'^(?P<encoding>[^;]*);\s*(?P<codec>[a-z]+)\s+compressed(?:\s+(?P<payload>\S+))?\s*$',
    re.IGNORECASE)
_FORMAT_HELP = ('supported: "jpeg" (or "jpg"), "png", or image_transport\'s "<encoding>; jpeg '
                'compressed <encoding>" and "<encoding>; png compressed <encoding>"')


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """
    Parse ``CompressedImage.format`` as cv_bridge and image_transport write it.

    Accepts ``''`` (codec sniffed from the data), ``'jpeg'``/``'jpg'``/``'png'`` (cv_bridge) and
    ``'rgb8; jpeg compressed bgr8'``-style strings (compressed_image_transport). Raises
    :class:`ImageConversionError` for anything else, including compressedDepth and video codecs.
    """
    if not isinstance(fmt, str):
        raise ImageConversionError(
            f'CompressedImage.format must be a string, got {type(fmt).__name__}')
    text = fmt.strip()
    if not text:
        return CompressedFormat(None)
    codec = _CODEC_NAMES.get(text.lower())
    if codec:
        return CompressedFormat(codec)
    match = _TRANSPORT_FORMAT.match(text)
    if match and match['codec'].lower() in ('jpeg', 'png'):
        return CompressedFormat(match['codec'].lower(), match['encoding'].strip() or None,
                                match['payload'] or None)
    if 'compresseddepth' in text.lower():
        raise ImageConversionError(
            f'compression format {fmt!r} is compressed_depth_image_transport, which is not '
            f'supported; subscribe to the raw depth topic instead ({_FORMAT_HELP})')
    raise ImageConversionError(f'unknown compression format {fmt!r}; {_FORMAT_HELP}')


_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def sniff_codec(data: np.ndarray) -> str | None:
    """Return 'jpeg' or 'png' from the first bytes of encoded image ``data`` (None: neither)."""
    head = data[:8].tobytes()
    if head.startswith(_JPEG_MAGIC):
        return 'jpeg'
    if head.startswith(_PNG_MAGIC):
        return 'png'
    return None


def default_max_pixels() -> int:
    """Largest input image (compressed or raw): the ``input.max_megapixels`` default."""
    from sparse_perception.settings import InputSettings
    return int(InputSettings().max_megapixels * 1_000_000)


# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic coded);
# C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frame headers.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7 (SOI and EOI are handled apart).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """
    Width and height from a JPEG's frame header, walking the marker segments before it.

    Reads only the headers (a few hundred bytes): the image size is known before anything is
    allocated. Raises ImageConversionError when the segments do not chain up to a frame header.
    """
    size = len(data)
    offset = 2  # after SOI
    while offset < size:
        if data[offset] != 0xFF:
            raise ImageConversionError(
                f'CompressedImage JPEG is corrupt: expected a marker at byte {offset}, found '
                f'{data[offset]:02x}')
        while offset < size and data[offset] == 0xFF:  # fill bytes
            offset += 1
        if offset >= size:
            break
        marker = data[offset]
        offset += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise ImageConversionError(
                f'CompressedImage JPEG is corrupt: marker ff {marker:02x} at byte {offset - 2} '
                'comes before any frame header (SOF)')
        if offset + 2 > size:
            break
        length = (data[offset] << 8) | data[offset + 1]
        if length < 2 or offset + length > size:
            raise ImageConversionError(
                f'CompressedImage JPEG is corrupt or truncated: segment ff {marker:02x} at byte '
                f'{offset - 2} claims {length} bytes, {size - offset} remain')
        if marker in _JPEG_SOF:
            if length < 8:
                raise ImageConversionError(
                    f'CompressedImage JPEG is corrupt: frame header of {length} bytes, '
                    'expected at least 8')
            height, width = struct.unpack_from('>HH', data, offset + 3)
            if height == 0 or width == 0:
                raise ImageConversionError(
                    f'CompressedImage JPEG states a size of {width}x{height} (width x height); '
                    'a zero or deferred (DNL) size is not supported')
            return width, height
        offset += length
    raise ImageConversionError(
        f'CompressedImage JPEG of {size} bytes is truncated or corrupt: no frame header (SOF) '
        'found')


def _png_size(data: bytes) -> tuple[int, int]:
    """
    Width and height from a PNG's IHDR, after checking every chunk's length and CRC.

    A chunk length beyond the data (which makes decoders allocate gigabytes before failing),
    a CRC mismatch (a flipped bit anywhere, pixels included) or a missing IEND chunk raises
    ImageConversionError; nothing is decompressed here.
    """
    size = len(data)
    view = memoryview(data)
    offset = 8  # after the signature
    width = height = 0
    while True:
        if offset + 12 > size:
            raise ImageConversionError(
                f'CompressedImage PNG of {size} bytes is truncated: it ends at byte {offset} '
                'before the IEND chunk')
        length, kind = struct.unpack_from('>I4s', data, offset)
        end = offset + 12 + length
        name = kind.decode('latin-1')
        if end > size:
            raise ImageConversionError(
                f'CompressedImage PNG is corrupt or truncated: chunk {name!r} at byte {offset} '
                f'claims {length} bytes, {max(0, size - offset - 12)} remain')
        (crc,) = struct.unpack_from('>I', data, end - 4)
        if zlib.crc32(view[offset + 4:end - 4]) != crc:
            raise ImageConversionError(
                f'CompressedImage PNG is corrupt: chunk {name!r} at byte {offset} fails its CRC '
                'check (damaged data)')
        if offset == 8:
            if kind != b'IHDR' or length != 13:
                raise ImageConversionError(
                    f'CompressedImage PNG is corrupt: it starts with chunk {name!r} of {length} '
                    'bytes, expected IHDR of 13')
            width, height = struct.unpack_from('>II', data, offset + 8)
            if width == 0 or height == 0:
                raise ImageConversionError(
                    f'CompressedImage PNG states a size of {width}x{height} (width x height)')
        if kind == b'IEND':
            return width, height
        offset = end


def _check_size(codec: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageConversionError(
            f'CompressedImage {codec} is {width}x{height} (width x height), '
            f'{width * height / 1e6:.1f} megapixels, more than the limit of '
            f'{max_pixels / 1e6:g} (input.max_megapixels); refused before decoding. Raise the '
            'limit if frames this large are expected')


# libjpeg's warnings for damaged data that still decodes (to wrong pixels); it prints them on
# the C library's stderr and OpenCV returns the image regardless.
_JPEG_CORRUPT_WARNINGS = ('Corrupt JPEG data', 'Premature end of JPEG file',
                          'Invalid SOS parameters', 'Inconsistent progression sequence')
_STDERR_LOCK = threading.Lock()


def native_stderr_of(call: Callable[[], Any]) -> tuple[Any, str]:
    """
    Run ``call()`` with the native stderr (file descriptor 2) captured: (its result, the text).

    C libraries (libjpeg, FFmpeg) report damaged data only by printing; this is how the package
    hears them. One capture at a time (a lock); where file descriptor 2 cannot be redirected,
    ``call()`` runs without capturing and the text is empty.
    """
    with _STDERR_LOCK:
        sink = None
        try:
            sink = tempfile.TemporaryFile()
            saved = os.dup(2)
        except OSError:  # no stderr to redirect, or no room for the capture
            if sink is not None:
                sink.close()
            return call(), ''
        try:
            with sink:
                try:
                    sys.stderr.flush()
                except (AttributeError, OSError, ValueError):
                    pass
                os.dup2(sink.fileno(), 2)
                try:
                    result = call()
                finally:
                    os.dup2(saved, 2)
                sink.seek(0)
                text = sink.read().decode('utf-8', 'replace')
        finally:
            os.close(saved)
    return result, text


def pass_on_stderr(lines: list[str]) -> None:
    """Write captured lines that were not the package's business back to stderr."""
    if lines:
        os.write(2, ''.join(lines).encode('utf-8', 'replace'))


def _decode_with_warnings(cv2: Any, data: np.ndarray) -> tuple[Any, str]:
    """
    ``cv2.imdecode`` with the native stderr captured: (image or None, libjpeg's warnings).

    Anything else written to stderr meanwhile (another thread's log line) is passed on after
    the decode.
    """
    image, text = native_stderr_of(lambda: cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    warnings, others = [], []
    for line in text.splitlines(keepends=True):
        (warnings if line.startswith(_JPEG_CORRUPT_WARNINGS) else others).append(line)
    pass_on_stderr(others)
    return image, ' '.join(line.strip() for line in warnings)


# Bytes a camera may write after a JPEG's end-of-image marker (a line end, a short trailer).
JPEG_TRAILER_BYTES = 64


def _jpeg_is_complete(data: np.ndarray) -> bool:
    """
    Whether the JPEG ends with its EOI marker (FF D9), allowing padding or a short trailer.

    After the marker: zero or FF padding, or up to JPEG_TRAILER_BYTES without an FF (no JPEG
    marker: a cut scan never holds FF D9, so a marker that close to the end is the image's).
    """
    tail = data[-65536:].tobytes()
    end = tail.rfind(b'\xff\xd9')
    if end < 0:
        return False
    rest = tail[end + 2:]
    return not rest.strip(b'\x00\xff') or (len(rest) <= JPEG_TRAILER_BYTES
                                           and b'\xff' not in rest)


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            'compressed images need OpenCV: on a robot `apt install python3-opencv` (rosdep '
            "does this), with pip `pip install 'sparse_perception[opencv]'`") from exc
    return cv2


_DECODED_ENCODINGS = {(np.dtype(np.uint8), 1): 'mono8', (np.dtype(np.uint8), 3): 'bgr8',
                      (np.dtype(np.uint8), 4): 'bgra8', (np.dtype(np.uint16), 1): 'mono16',
                      (np.dtype(np.uint16), 3): 'bgr16', (np.dtype(np.uint16), 4): 'bgra16'}


def decoded_encoding(image: np.ndarray) -> str:
    """Return the encoding of an array as OpenCV decodes it: mono8/16, bgr8/16 or bgra8/16."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    try:
        return _DECODED_ENCODINGS[(image.dtype, channels)]
    except KeyError:
        raise ImageConversionError(
            f'decoded image of dtype {image.dtype} with {channels} channel(s) has no grey or '
            'colour encoding') from None


def compressed_to_numpy(msg: Any, desired_encoding: str = PASSTHROUGH, *,
                        max_pixels: int | None = None) -> np.ndarray:
    """
    Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) into a new numpy array.

    Like cv_bridge's ``compressed_imgmsg_to_cv2``: with ``'passthrough'`` the array is what
    OpenCV decodes (``cv2.IMREAD_UNCHANGED``: grey ``(H, W)``, colour in the channel order the
    payload was written in, BGR or BGRA from image_transport and cv_bridge, 8 or 16 bit). Any
    other ``desired_encoding`` converts from that decoded encoding (mono8, bgr8,
    bgra8, or their 16-bit forms) as image_transport reads its format string
    (``'rgb8; jpeg compressed bgr8'``): channels in RGB order where it says ``compressed
    rgb8``, and an encoding without colour (``'16UC1; png compressed '``, a Bayer mosaic)
    converted as it is raw, so that asking it for a colour encoding is refused. The original
    raw encoding is available from :func:`parse_compressed_format`.

    ``max_pixels`` (default :func:`default_max_pixels`, 64 megapixels) bounds width x height,
    read from the JPEG frame header or the PNG IHDR before anything is decoded.

    Raises :class:`ImageConversionError` for an unknown format, empty data, data that is not
    the JPEG/PNG the format names, an image larger than ``max_pixels``, a truncated or damaged
    JPEG or PNG (broken marker or chunk structure, a PNG CRC mismatch, libjpeg's corrupt-data
    warnings), or data OpenCV cannot decode.
    """
    fmt = parse_compressed_format(_field(msg, 'format', 'sensor_msgs/CompressedImage'))
    data = _byte_array(_field(msg, 'data', 'sensor_msgs/CompressedImage'), 'CompressedImage')
    if data.size == 0:
        raise ImageConversionError('CompressedImage data is empty: nothing to decode')
    codec = sniff_codec(data)
    if codec is None:
        raise ImageConversionError(
            f'CompressedImage data is corrupt or not JPEG/PNG: it starts with '
            f'{data[:8].tobytes().hex(" ")} (JPEG starts ff d8 ff, PNG 89 50 4e 47)')
    if fmt.codec is not None and fmt.codec != codec:
        raise ImageConversionError(
            f'CompressedImage format says {fmt.codec} but the data is {codec}; fix the '
            "publisher's format string")
    if codec == 'jpeg' and not _jpeg_is_complete(data):
        raise ImageConversionError(
            f'CompressedImage JPEG of {data.size} bytes is truncated or corrupt: it does not '
            'end with the end-of-image marker ff d9')
    if max_pixels is None:
        max_pixels = default_max_pixels()
    raw = data.tobytes()
    width, height = _jpeg_size(raw) if codec == 'jpeg' else _png_size(raw)
    _check_size(codec, width, height, max_pixels)
    cv2 = _cv2()
    try:
        if codec == 'jpeg':
            image, warnings = _decode_with_warnings(cv2, data)
        else:
            image, warnings = cv2.imdecode(data, cv2.IMREAD_UNCHANGED), ''
    except cv2.error as exc:
        raise ImageConversionError(
            f'CompressedImage {codec} data of {data.size} bytes ({width}x{height}) cannot be '
            f'decoded: {" ".join(str(exc).split())[-200:]}') from None
    if image is None or image.size == 0:
        raise ImageConversionError(
            f'CompressedImage {codec} data of {data.size} bytes is corrupt: OpenCV cannot '
            'decode it')
    if warnings:
        raise ImageConversionError(
            f'CompressedImage JPEG of {data.size} bytes is corrupt (it decodes, to wrong '
            f'pixels): libjpeg says "{warnings[:200]}"')
    if image.shape[:2] != (height, width):
        raise ImageConversionError(
            f'CompressedImage {codec} decodes to {image.shape[1]}x{image.shape[0]} but its '
            f'header says {width}x{height}: corrupt')
    if desired_encoding == PASSTHROUGH:
        return image
    return np.ascontiguousarray(convert_encoding(image, _payload_encoding(image, fmt),
                                                 desired_encoding))


def _payload_encoding(image: np.ndarray, fmt: CompressedFormat) -> str:
    """
    Return the encoding of a decoded image, as image_transport reads its format string.

    Its subscriber labels the decoded image with the encoding that was compressed: one without
    colour (a depth map in a 16-bit PNG, a Bayer mosaic) converts as it would arrive raw, so
    asking it for a colour encoding is refused, not answered with a grey picture. It takes the
    decoded channels as BGR only when the format says ``compressed bgr...``; one that says
    ``compressed rgb8`` holds them in RGB order.
    """
    decoded = decoded_encoding(image)
    original = _ENCODINGS.get(fmt.encoding or '')
    if original is not None and original.color is None:  # no colour, whatever the codec held
        return _generic_name(image.dtype, 1 if image.ndim == 2 else image.shape[2])
    if original is not None and original.color == 'bayer':
        return original.name
    if decoded.startswith('bgr') and (fmt.payload_encoding or '').lower().startswith('rgb'):
        return 'rgb' + decoded[3:]
    return decoded


def numpy_to_compressed(image: np.ndarray, fmt: str = 'jpeg', header: Any = None, *,
                        msg_type: type, encoding: str = PASSTHROUGH,
                        quality: int | None = None) -> Any:
    """
    Compress ``image`` into a ``sensor_msgs/CompressedImage`` of class ``msg_type``.

    With ``encoding='passthrough'`` this is cv_bridge's ``cv2_to_compressed_imgmsg``: the array
    is in OpenCV order (grey, BGR or BGRA) and ``format`` is ``fmt`` itself. With a named
    encoding it is compressed_image_transport's publisher: the array (in that encoding) is
    converted to what the codec stores (JPEG: bgr8 for colour, mono8 for grey; PNG: bgr/bgra of
    the same depth for colour, unchanged otherwise) and ``format`` becomes
    ``'<encoding>; <codec> compressed <payload encoding>'``, which image_transport's
    subscribers and :func:`compressed_to_numpy` understand.

    ``fmt`` is ``'jpeg'`` (or ``'jpg'``) or ``'png'``. ``quality`` is the JPEG quality 1-100
    or the PNG compression level 0-9 (OpenCV's defaults when None).
    """
    codec = _CODEC_NAMES.get(fmt.lower()) if isinstance(fmt, str) else None
    if codec is None:
        raise ImageConversionError(
            f'unknown compression format {fmt!r}; use "jpeg" (or "jpg") or "png"')
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ImageConversionError(
            'image must be a numpy array of shape (H, W) or (H, W, C), got '
            f'{getattr(image, "shape", type(image).__name__)}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(
            f'image array has zero size (shape {image.shape}): nothing to compress')
    if encoding == PASSTHROUGH:
        payload_image, format_string = image, fmt
    else:
        info = encoding_info(encoding)
        _check_fits(image, info)
        if info.bit_depth not in (8, 16) or info.dtype.kind != 'u':
            raise ImageConversionError(
                f'{codec} compression needs an 8- or 16-bit unsigned encoding, got {encoding}')
        # compressed_image_transport's choices; it leaves the payload part of the format empty
        # where PNG stores the image unchanged ('mono16; png compressed ').
        if codec == 'jpeg':
            if info.color is None or info.color == 'bayer':
                raise ImageConversionError(
                    'jpeg compression needs a grey or colour encoding '
                    f'({", ".join(_COLOR_ENCODINGS)}), got {encoding}')
            target = 'mono8' if info.color == 'mono' else 'bgr8'
            stated = target
        elif info.color in ('rgb', 'bgr', 'rgba', 'bgra'):
            target = ('bgra' if len(info.color) == 4 else 'bgr') + str(info.bit_depth)
            stated = target
        else:
            target, stated = encoding, ''
        payload_image = convert_encoding(image, encoding, target)
        format_string = f'{encoding}; {codec} compressed {stated}'
    payload_image = payload_image.astype(payload_image.dtype.newbyteorder('='), copy=False)
    _check_codec_input(payload_image, codec)
    cv2 = _cv2()
    params = []
    if quality is not None:
        low, high, flag = ((1, 100, cv2.IMWRITE_JPEG_QUALITY) if codec == 'jpeg'
                           else (0, 9, cv2.IMWRITE_PNG_COMPRESSION))
        if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= high:
            raise ImageConversionError(
                f'{codec} quality must be an integer in {low}..{high}, got {quality!r}')
        params = [flag, quality]
    try:
        ok, encoded = cv2.imencode('.jpg' if codec == 'jpeg' else '.png',
                                   np.ascontiguousarray(payload_image), params)
    except cv2.error as exc:  # e.g. a JPEG side beyond 65535 pixels
        raise ImageConversionError(
            f'OpenCV could not {codec}-encode an array of shape {payload_image.shape}: '
            f'{" ".join(str(exc).split())[-200:]}') from None
    if not ok:
        raise ImageConversionError(
            f'OpenCV could not {codec}-encode an array of dtype {payload_image.dtype} and shape '
            f'{payload_image.shape}')
    return build_message(msg_type, header, {'format': format_string}, encoded.reshape(-1))


def _check_codec_input(image: np.ndarray, codec: str) -> None:
    channels = 1 if image.ndim == 2 else image.shape[2]
    if codec == 'jpeg':
        fits = image.dtype == np.uint8 and channels in (1, 3)
        expected = 'uint8 grey (H, W) or BGR (H, W, 3)'
    else:
        fits = image.dtype in (np.uint8, np.uint16) and channels in (1, 3, 4)
        expected = 'uint8 or uint16 grey (H, W), BGR (H, W, 3) or BGRA (H, W, 4)'
    if not fits:
        raise ImageConversionError(
            f'{codec} cannot store an array of dtype {image.dtype} and shape {image.shape}; '
            f'expected {expected}')
