"""Crafted hostile inputs for exercising a server's limits (tests and load tests).

A real client never sends these; they exist so that the server's refusal paths can be
driven from the test suite and from ``benchmarks/load_test.py`` with the same bytes.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZERO_ROWS = 2


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return struct.pack(">I", len(data)) + kind + data + crc


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few-hundred-byte PNG whose IHDR declares ``width x height`` 8-bit gray pixels.

    The IDAT holds only a few zero rows, so decoding would need ``width * height`` bytes
    while the file is tiny: a server must refuse it from the header alone.

    Args:
        width: Declared width in pixels.
        height: Declared height in pixels.

    Returns:
        The PNG file's bytes.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * ZERO_ROWS, 9)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
