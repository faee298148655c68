"""What an image's bytes declare (attachments/headers.py), read in work bounded whatever the file:
the size images.viewable judges an image by, and a JPEG's scan budget before any conversion."""

import io
import sys
import warnings

import pytest
from PIL import Image

from chalicelib.attachments import headers, images


def encoded(format: str, size=(333, 77), mode="RGB", **options) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode != "L" else 3).save(out, format, **options)
    return out.getvalue()


def commented_gif(pieces: int) -> bytes:
    """A valid 1x1 GIF whose comment is `pieces` sub-blocks of one byte each, before its image:
    Pillow's reader joined them one by one (bytes +=) only opening the file, O(n²)."""
    screen = b"GIF89a" + (1).to_bytes(2, "little") * 2 + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    comment = b"\x21\xfe" + b"\x01A" * pieces + b"\x00"
    image = b"\x2c" + b"\x00\x00\x00\x00" + b"\x01\x00\x01\x00" + b"\x00" + b"\x02\x02\x44\x01\x00"
    return screen + comment + image + b"\x3b"


def calls_made(read, *arguments) -> tuple[object, int]:
    """read(*arguments), and how many function calls (Python or C) it made: its work, counted
    the same whatever the machine's load."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        answer = read(*arguments)
    finally:
        sys.setprofile(None)
    return answer, calls


@pytest.mark.parametrize("format, media_type, options", [
    ("PNG", "image/png", {}), ("GIF", "image/gif", {}), ("JPEG", "image/jpeg", {}), ("JPEG", "image/jpeg", {"progressive": True}),
    ("JPEG", "image/jpeg", {"exif": b"Exif\x00\x00" + b"\x00" * 64, "icc_profile": b"p" * 70_000}),  # segments before the frame
    ("WEBP", "image/webp", {}), ("WEBP", "image/webp", {"lossless": True}), ("WEBP", "image/webp", {"icc_profile": b"p" * 100}),
])
@pytest.mark.parametrize("size", [(1, 1), (333, 77), (5000, 3)])
def test_the_size_a_header_declares_is_the_one_pillow_reads(format, media_type, options, size):
    content = encoded(format, size, **options)
    assert headers.declared_size(media_type, content) == Image.open(io.BytesIO(content)).size == size
    assert images.viewable(media_type, content)


def test_animated_images_declare_their_canvas_and_a_gif_its_first_frames_extent():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue")]
    for format, media_type in (("GIF", "image/gif"), ("WEBP", "image/webp"), ("PNG", "image/png")):
        out = io.BytesIO()
        frames[0].save(out, format, save_all=True, append_images=frames[1:])
        assert headers.declared_size(media_type, out.getvalue()) == (40, 30), format
    # A 1x1 screen whose first image lies at (8000, 8000), 1x1: browsers and Pillow grow the screen to it.
    grown = commented_gif(0).replace(b"\x2c\x00\x00\x00\x00", b"\x2c\x40\x1f\x40\x1f")
    with warnings.catch_warnings():  # (over the 50 MP images.pillow() sets, once another test has called it)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(io.BytesIO(grown)).size
    assert headers.declared_size("image/gif", grown) == (8001, 8001) == opened
    assert not images.viewable("image/gif", grown)  # 64 megapixels


def test_a_gifs_comment_of_one_byte_pieces_costs_no_more_to_read_than_a_short_one():
    """QA, session 32: viewable() opened a GIF with Pillow "for its header", and Pillow joined the
    comment before its first image one sub-block at a time: a 2 MB GIF took minutes of server CPU
    on each read (MCP get_attachment, the web UI's <img>). The size is now read by skipping the
    blocks, and looked for in the first HEADER_BYTES only."""
    shown, small = calls_made(images.viewable, "image/gif", commented_gif(10))
    assert shown is True
    for pieces in (20_000, 120_000):  # 40 kB, 240 kB: within HEADER_BYTES
        shown, calls = calls_made(images.viewable, "image/gif", commented_gif(pieces))
        assert shown is True and calls == small, pieces
    past = commented_gif(headers.HEADER_BYTES)  # its image starts past the first HEADER_BYTES: not judged, not shown
    shown, calls = calls_made(images.viewable, "image/gif", past)
    assert shown is False and calls <= small
    assert images.viewable("image/gif", past[:6] + b"x" * 7) is False and images.viewable("image/gif", b"GIF89a") is False


def repeating_a_scan(repeats: int, side: int = 64) -> bytes:
    """A progressive grey JPEG whose first AC scan (with its Huffman table) comes `repeats` times
    more: libjpeg decodes each again (a pass over every block), with a warning only."""
    data = encoded("JPEG", (side, side), "L", progressive=True, quality=90)
    segments, at = [], 2
    while data[at + 1] != 0xD9:
        end = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if data[at + 1] == 0xDA:  # the scan's entropy-coded data runs to the next marker
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        segments.append((data[at + 1], at, end))
        at = end
    first = next(index for index, (marker, _, _) in enumerate(segments) if marker == 0xDA)
    (table, table_at, _), (scan, _, scan_end) = segments[first + 1], segments[first + 2]
    assert (table, scan) == (0xC4, 0xDA)
    return data[:scan_end] + data[table_at:scan_end] * repeats + data[scan_end:]


def test_a_jpegs_scans_and_segments_are_counted_without_decoding_it():
    ordinary = encoded("JPEG", (800, 600), progressive=True)
    assert headers.jpeg_within_budget(ordinary) and headers.jpeg_within_budget(encoded("JPEG", (800, 600)))
    assert ordinary.count(b"\xff\xda") < headers.MAX_JPEG_SCANS  # (a count of every SOS marker, and more)
    within, past = repeating_a_scan(headers.MAX_JPEG_SCANS - 20), repeating_a_scan(headers.MAX_JPEG_SCANS)
    assert headers.jpeg_within_budget(within) and not headers.jpeg_within_budget(past)
    commented = ordinary[:2] + b"\xff\xfe\x00\x02" * headers.MAX_JPEG_SEGMENTS + ordinary[2:]  # empty comments
    assert Image.open(io.BytesIO(commented)).size == (800, 600) and not headers.jpeg_within_budget(commented)
    assert headers.jpeg_within_budget(b"not a jpeg")  # not this check's to judge
