"""A placeholder PNG of the requested size (what the sim executor returns), with no imaging library."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from functools import lru_cache
from typing import Any, Mapping


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


@lru_cache(maxsize=64)
def _solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    row = b"\x00" + bytes(rgb) * width
    raw = row * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b""))


def placeholder_png(width: int, height: int, prompt: str = "", parameters: Mapping[str, Any] | None = None) -> bytes:
    """A solid-colour RGB PNG; the colour comes from the prompt, from a small palette (cacheable).
    `parameters`: what the image was asked to be (prompt, seed, guidance, negative prompt), kept in a
    `tEXt` chunk named "parameters" as JSON, as image UIs record generation settings in their PNGs."""
    palette = ((70, 110, 160), (160, 90, 70), (90, 150, 90), (150, 140, 70), (120, 90, 150), (90, 90, 90))
    i = hashlib.sha256(prompt.encode()).digest()[0] % len(palette)
    png = _solid_png(width, height, palette[i])
    if parameters is None:
        return png
    text = _chunk(b"tEXt", b"parameters\0" + json.dumps(dict(parameters), sort_keys=True).encode("ascii"))
    return png[:33] + text + png[33:]  # after the signature and IHDR (8 + 25 bytes)


def png_text(data: bytes) -> dict[str, str]:
    """The PNG's `tEXt` chunks, keyword -> text."""
    out, at = {}, 8
    while at + 8 <= len(data):
        n, tag = struct.unpack(">I4s", data[at:at + 8])
        if tag == b"tEXt":
            key, _, value = data[at + 8:at + 8 + n].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + n
    return out


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def encode_image(png: bytes, fmt: str, compression: int | None = None) -> bytes:
    """The PNG re-encoded as `fmt` (jpeg/webp need Pillow); `compression` 0..100 as OpenAI's
    output_compression (100 = least compression, i.e. the highest quality)."""
    if fmt == "png":
        return png
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format=fmt.upper(),
                                                    quality=100 if compression is None else max(1, compression))
    return out.getvalue()
