"""What an image's bytes declare, read without decoding them and in work bounded whatever the
file: its size (PNG, GIF, JPEG, WebP), looked for in its first HEADER_BYTES only, and whether a
JPEG stays within a decoding budget (its scans). Pillow's readers walk more than they need:
its GIF reader joined a comment of 1-byte sub-blocks with bytes += while opening the file, minutes
of CPU for 2 MB; and a 700 kB progressive JPEG repeating one scan 6,000 times took 30 s to
decode (QA, session 32)."""

import re
import struct

HEADER_BYTES = 256 * 1024  # where an image's size must be declared (a photo's EXIF and ICC come first)
MAX_JPEG_SCANS = 64  # ordinary progressive JPEGs have at most ~20; each scan is a pass over every block
MAX_JPEG_SEGMENTS = 1_000  # markers before and between scans: tables, EXIF, comments (a photo has ~20)

_JPEG_SIGNATURE = b"\xff\xd8\xff"
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length: TEM, RST0-7
_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-15 but DHT, JPG and DAC
# The marker that ends a scan's entropy-coded data: 0xFF then anything but stuffing (00), RSTn or a fill byte.
_END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")


def declared_size(media_type: str, content: bytes) -> tuple[int, int] | None:
    """(width, height) as the content's header declares it for its media type, None if it is not
    that type's or the header is not within its first HEADER_BYTES."""
    reader = _READERS.get(media_type)
    return reader(content[:HEADER_BYTES]) if reader else None


def _png(head: bytes) -> tuple[int, int] | None:
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[8:16] != b"\x00\x00\x00\x0dIHDR" or len(head) < 24:
        return None
    return struct.unpack(">II", head[16:24])


def _gif(head: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to the first image's extent (as Pillow and browsers grow it): the
    blocks before it are skipped by their lengths, never joined."""
    if head[:6] not in (b"GIF87a", b"GIF89a") or len(head) < 13:
        return None
    width, height, flags = struct.unpack("<HHB", head[6:11])
    at, end = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), len(head)  # after the global colour table
    while at < end:
        if head[at] == 0x2C:  # the first image descriptor: left, top, width, height
            if at + 9 > end:
                return None
            left, top, image_width, image_height = struct.unpack("<HHHH", head[at + 1:at + 9])
            return max(width, left + image_width), max(height, top + image_height)
        if head[at] != 0x21:  # no extension: the trailer before any image, or no GIF
            return None
        at += 2  # the introducer and the label, then sub-blocks, each led by its length, to a 0
        while at < end and head[at]:
            at += head[at] + 1
        at += 1
    return None


def _jpeg(head: bytes) -> tuple[int, int] | None:
    """The frame header's size (SOFn), reached by the segments' lengths; None after a scan or an end."""
    for marker, at in _segments(head):
        if marker in _FRAMES:
            if at + 9 > len(head):
                return None
            height, width = struct.unpack(">HH", head[at + 5:at + 9])
            return width, height
        if marker == 0xDA:
            return None
    return None


def _webp(head: bytes) -> tuple[int, int] | None:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: after the frame tag and its start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and head[20] == 0x2F:  # lossless: 14 bits each, less one
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended (animation, alpha, ICC): the canvas, 24 bits each, less one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


_READERS = {"image/png": _png, "image/gif": _gif, "image/jpeg": _jpeg, "image/webp": _webp}


def jpeg_within_budget(content: bytes) -> bool:
    """Whether a JPEG has at most MAX_JPEG_SCANS scans and MAX_JPEG_SEGMENTS segments before its
    end (or its first image's end): decoding costs a pass over every block per scan, and libjpeg
    takes a repeated scan with only a warning. Content that is no JPEG is within it (not ours to judge)."""
    if not content.startswith(_JPEG_SIGNATURE):
        return True
    scans = 0
    for count, (marker, _) in enumerate(_segments(content), 1):
        scans += marker == 0xDA
        if scans > MAX_JPEG_SCANS or count > MAX_JPEG_SEGMENTS:
            return False
    return True


def _segments(content: bytes):
    """(marker, offset) of each segment of a JPEG after its SOI, to its EOI or the first break:
    the segments by their lengths, a scan's entropy-coded data by a search for its end (in C)."""
    at = 2
    while at + 4 <= len(content) and content[at] == 0xFF:
        marker = content[at + 1]
        if marker == 0xFF:  # fill bytes before a marker: to the last of them
            at = _FILL.match(content, at).end() - 1
            continue
        if marker == 0xD9:  # EOI
            return
        yield marker, at
        if marker in _STANDALONE:
            at += 2
            continue
        length = int.from_bytes(content[at + 2:at + 4], "big")
        if length < 2:
            return
        at += 2 + length
        if marker == 0xDA:
            end = _END_OF_SCAN.search(content, at)
            if end is None:
                return
            at = end.start()
