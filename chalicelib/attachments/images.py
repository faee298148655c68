"""Images to WebP, scaled to fit a size cap: a full-screen PNG screenshot shrinks ~5-10x and
stays readable. Only still raster images of 8 bits a channel that Pillow opens; anything else
(or a conversion that does not help, or fails) is kept as sent. An image of more than
MAX_PIXELS is refused before it is decoded: a few hundred kB of PNG can decode to gigabytes
(a decompression bomb); a JPEG past headers.py's scan budget is kept as sent, never decoded.
`viewable` says whether content may be shown as an image."""

import io
import os
import warnings
from functools import lru_cache

from ..errors import InvalidArgument
from . import headers

CONVERTIBLE = {"image/png", "image/jpeg", "image/bmp", "image/tiff"}
FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # what Pillow may take the content for: not whatever it guesses
# The modes WebP holds faithfully (8 bits a channel). Pillow clips the others (16-bit grey, 32-bit
# integers, floats) into 8-bit RGB: a 16-bit depth map came out white, a float TIFF black.
WEBP_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK"}
MAX_PIXELS = 50_000_000
MAX_NAME = 255  # intake.FileName's
# What browsers and multimodal clients are handed as images (when viewable: headers.py reads their sizes).
VIEWABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class ImageTooLarge(InvalidArgument):
    """An image with more pixels than MAX_PIXELS: decoding it could take gigabytes."""


def to_webp(name: str, media_type: str, content: bytes, max_side: int) -> tuple[str, str, bytes]:
    """(name, media type, content): as WebP, or unchanged. ImageTooLarge over MAX_PIXELS."""
    if media_type not in CONVERTIBLE or max_side <= 0 or not headers.jpeg_within_budget(content):
        return name, media_type, content  # (a JPEG under any image type's name: Pillow takes it by its signature)
    image_module = pillow()
    if image_module is None:  # Pillow is optional (e.g. the Lambda package): keep the original
        return name, media_type, content
    from PIL import ImageOps

    try:
        with image_module.open(io.BytesIO(content), formats=FORMATS) as image:  # reads the header only
            check_pixels(name, *image.size)
            if getattr(image, "is_animated", False) or image.mode not in WEBP_MODES or _deep_colour(image, content):
                return name, media_type, content
            icc = image.info.get("icc_profile") or b""
            if image.mode == "RGB" and "transparency" in image.info:  # a colour key (PNG's tRNS): WebP's saver drops it
                image = image.convert("RGBA")  # (before scaling: the edges of what is transparent blend right)
            image.thumbnail((max_side, max_side))  # (a JPEG decodes at a reduced size: before any other work)
            ImageOps.exif_transpose(image, in_place=True)  # a phone photo tagged "rotate 90": its EXIF is not kept
            out = io.BytesIO()
            # The colour profile, when it describes RGB (WebP's data): a P3 screenshot keeps its colours. No EXIF (GPS).
            image.save(out, "WEBP", quality=85, method=4, icc_profile=icc if icc[16:20] == b"RGB " else b"", exif=b"")
    except (image_module.DecompressionBombError, image_module.DecompressionBombWarning):  # over 2x (1x) the limit
        raise too_many_pixels(name) from None
    except ImageTooLarge:
        raise
    except Exception:  # a broken or hostile image: stored as sent, never decoded again here
        return name, media_type, content
    webp = out.getvalue()
    if len(webp) >= len(content):
        return name, media_type, content
    stem = os.path.splitext(name)[0][:MAX_NAME - len(".webp")]  # a name get_attachment takes back
    return f"{stem}.webp", "image/webp", webp


def _deep_colour(image, content: bytes) -> bool:
    """A colour image of 16 bits a channel, which Pillow opens as mode RGB, already cut to 8: its
    header says (a PNG's IHDR bit depth, a TIFF's BitsPerSample)."""
    if image.format == "PNG":
        return content[24:25] == b"\x10"  # IHDR comes first: 8 bytes of signature, then length, type, width, height
    return image.format == "TIFF" and max(image.tag_v2.get(258) or (8,)) > 8


def viewable(media_type: str, content: bytes) -> bool:
    """Whether content may be shown as an image of its media type (an <img>, an MCP image block):
    its header is that type's and declares at most MAX_PIXELS, and a JPEG is within the scan
    budget. An upload or keep_original is stored as sent: a 312-byte PNG declaring 20000x20000
    pixels, or bytes that are no image at all. Read by headers.py, in work bounded whatever the
    file: Pillow's GIF reader took minutes "only opening" a 2 MB GIF."""
    size = headers.declared_size(media_type, content) if media_type in VIEWABLE else None
    return size is not None and 0 < size[0] * size[1] <= MAX_PIXELS and headers.jpeg_within_budget(content)


def check_pixels(name: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise too_many_pixels(name, f" ({width}x{height})")


def too_many_pixels(name: str, size: str = "") -> ImageTooLarge:
    return ImageTooLarge(
        f"Image {name!r}{size} has more than {MAX_PIXELS // 1_000_000} megapixels: refused, it is not decoded here.",
        "Scale it down (e.g. to 8000x6000 pixels at most), or send it with keep_original: true to store it as sent.",
    )


@lru_cache(maxsize=1)
def pillow():
    """PIL.Image with its guard at MAX_PIXELS and its over-the-limit warning made an error
    (Pillow only warns between 1x and 2x its limit, and decodes anyway); None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)  # once, for the process: no race
    return Image
