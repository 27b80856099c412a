"""Hard limits checked before any work: body size (declared and streamed) and pixel count.

The pixel count comes from the image header (see :func:`segflow.serving.codecs.open_lazily`),
so a decompression bomb, a tiny file declaring 100000x100000 pixels, is refused before a
single pixel is decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from segflow.serving.errors import BadImage, PayloadTooLarge

BYTES_PER_MB = 1024 * 1024


def check_content_length(header_value: str | None, max_bytes: int) -> None:
    """Refuses a request whose declared ``Content-Length`` exceeds ``max_bytes``.

    Args:
        header_value: The raw header, or None when absent (chunked bodies are counted while read).
        max_bytes: Largest accepted body.

    Raises:
        PayloadTooLarge: The declared length is too large.
        BadImage: The header is not a non-negative integer.
    """
    if header_value is None:
        return
    try:
        declared = int(header_value)
    except ValueError:
        raise BadImage(f"Content-Length header {header_value!r} is not an integer") from None
    if declared < 0:
        raise BadImage(f"Content-Length header {header_value!r} is negative")
    if declared > max_bytes:
        raise PayloadTooLarge(_too_large_message(declared, max_bytes))


async def read_limited(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """Reads a streamed body, stopping as soon as it grows past ``max_bytes``.

    A client may lie in ``Content-Length`` or send a chunked body, so the bytes are counted
    as they arrive and at most ``max_bytes`` plus one chunk is ever held in memory.

    Raises:
        PayloadTooLarge: More than ``max_bytes`` arrived.
    """
    parts: list[bytes] = []
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLarge(_too_large_message(received, max_bytes, at_least=True))
        parts.append(chunk)
    return b"".join(parts)


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """Refuses an image whose header declares more than ``max_pixels`` pixels.

    Raises:
        PayloadTooLarge: ``width * height > max_pixels``.
    """
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image declares {width}x{height} = {width * height} pixels, more than the server's "
            f"limit of {max_pixels} (--max-pixels); downscale it or send it in parts"
        )


def _too_large_message(size: int, max_bytes: int, at_least: bool = False) -> str:
    qualifier = "more than " if at_least else ""
    return (
        f"upload of {qualifier}{size} bytes exceeds the server's limit of {max_bytes} bytes "
        f"({max_bytes / BYTES_PER_MB:g} MB, --max-upload-mb); send a smaller or compressed image"
    )
