"""What an image file's header declares, read from its first bytes without decoding it: the size (so that a
gigapixel file is refused before it is decoded) and the stored colour layout (what `clf check` reports).

PNG, JPEG, BMP, GIF, WebP and TIFF; anything else, or a header that does not parse, is None. Torch-free and
OpenCV-free: the standard library only.
"""

from __future__ import annotations

import struct


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, BMP, GIF, WebP or TIFF header; None when unknown or unparsable.

    Reads a few bytes only: the point is to know the decoded size before paying for it.
    """
    try:
        for magic, parse in _HEADER_PARSERS:
            if data.startswith(magic):
                return parse(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _gif_size(data: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", data[6:10])


def _bmp_size(data: bytes) -> tuple[int, int]:
    if struct.unpack("<I", data[14:18])[0] == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range
_JPEG_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The first SOFn's frame header: precision, height, width."""
    pos = _jpeg_frame(data)
    if pos is None:
        return None
    height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
    return width, height


def _jpeg_frame(data: bytes) -> int | None:
    """Walk the marker segments to the first SOFn; its offset, or None."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            return pos
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 3-byte frame tag, 3-byte start code, then 14-bit sizes
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature byte, then 14 bits each of width-1 and height-1
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset : offset + 2])[0]
    found: dict[int, int] = {}
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            found[tag] = struct.unpack(order + fmt, data[entry + 8 : entry + 8 + struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


_HEADER_PARSERS = (
    (b"\x89PNG\r\n\x1a\n", _png_size),
    (b"\xff\xd8", _jpeg_size),
    (b"GIF87a", _gif_size),
    (b"GIF89a", _gif_size),
    (b"BM", _bmp_size),
    (b"II*\x00", _tiff_size),
    (b"MM\x00*", _tiff_size),
)


_PNG_MODES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_JPEG_MODES = {1: "grey", 3: "RGB", 4: "CMYK"}
_BMP_MODES = {1: "palette", 4: "palette", 8: "palette", 16: "RGB", 24: "RGB", 32: "RGBA"}


def header_mode(data: bytes) -> str | None:
    """The colour layout a PNG, JPEG, BMP or WebP header declares: grey, grey+alpha, RGB, RGBA, palette or CMYK.

    None when the format or header is not one of those (decoding gives RGB whatever the file holds: this is what
    the file itself stores, for `clf check`'s channel statistics).
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return _PNG_MODES.get(data[25])
        if data.startswith(b"\xff\xd8"):
            pos = _jpeg_frame(data)
            return None if pos is None else _JPEG_MODES.get(data[pos + 9])
        if data.startswith(b"BM"):
            return _BMP_MODES.get(struct.unpack("<H", data[28:30])[0])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_mode(data)
    except (struct.error, IndexError):
        return None
    return None


def _webp_mode(data: bytes) -> str | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        return "RGB"
    if chunk == b"VP8L":  # the alpha hint: bit 28 of the size word
        return "RGBA" if struct.unpack("<I", data[21:25])[0] >> 28 & 1 else "RGB"
    if chunk == b"VP8X":  # the alpha flag of the extended header
        return "RGBA" if data[20] & 0x10 else "RGB"
    return None
