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
Hostile JPEG and PNG files, built by hand from small valid ones.

Headers claiming huge sizes and chunk lengths beyond the data: a few hundred bytes that make an
unchecked decoder allocate gigabytes. Importable in child processes (test/ is on the path).
"""

import struct
import zlib

import cv2
import numpy as np

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC).
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def picture(height=96, width=128):
    """Return an RGB test picture of gradients (any JPEG quality keeps it recognisable)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)


def jpeg(image=None):
    return cv2.imencode('.jpg', picture() if image is None else image)[1].tobytes()


def png(image=None):
    return cv2.imencode('.png', picture() if image is None else image)[1].tobytes()


def chunk(kind, payload):
    """One PNG chunk with a correct length and CRC."""
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload)))


def png_claiming(width, height, rows=4):
    """Return a PNG whose IHDR says width x height (8-bit grey) but that holds a few rows."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes((width + 1) * rows), 9)
    return PNG_MAGIC + chunk(b'IHDR', ihdr) + chunk(b'IDAT', pixels) + chunk(b'IEND', b'')


def png_bomb(width, height):
    """Return a complete, valid PNG of width x height black pixels (deflate keeps it small)."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then black
    pixels = b''.join(packer.compress(row) for _ in range(height)) + packer.flush()
    return PNG_MAGIC + chunk(b'IHDR', ihdr) + chunk(b'IDAT', pixels) + chunk(b'IEND', b'')


def png_with_idat_length(data, length):
    """Return ``data`` (a PNG) with its first IDAT chunk's length field set to ``length``."""
    edited = bytearray(data)
    struct.pack_into('>I', edited, edited.index(b'IDAT') - 4, length)
    return bytes(edited)


def sof_offset(data):
    """Byte offset of a JPEG's frame header (SOF) marker."""
    offset = 2
    while True:
        marker, length = data[offset + 1], struct.unpack_from('>H', data, offset + 2)[0]
        if marker in JPEG_SOF:
            return offset
        offset += 2 + length


def jpeg_claiming(width, height, data=None):
    """Return a small valid JPEG whose frame header is edited to say width x height."""
    edited = bytearray(jpeg() if data is None else data)
    struct.pack_into('>HH', edited, sof_offset(edited) + 5, height, width)
    return bytes(edited)
