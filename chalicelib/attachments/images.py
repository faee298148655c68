"""Images to WebP, scaled to fit a size cap: a full-screen PNG screenshot shrinks ~5-10x and
stays readable. Only still raster images Pillow opens; anything else (or a conversion that
does not help, or fails) is kept as sent. An image of more than MAX_PIXELS is refused before
it is decoded: a few hundred kB of PNG can decode to gigabytes (a decompression bomb)."""

import io
import os
import warnings
from functools import lru_cache

from ..errors import InvalidArgument

CONVERTIBLE = {"image/png", "image/jpeg", "image/bmp", "image/tiff"}
FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # what Pillow may take the content for: not whatever it guesses
MAX_PIXELS = 50_000_000


class ImageTooLarge(InvalidArgument):
    """An image with more pixels than MAX_PIXELS: decoding it could take gigabytes."""


def to_webp(name: str, media_type: str, content: bytes, max_side: int) -> tuple[str, str, bytes]:
    """(name, media type, content): as WebP, or unchanged. ImageTooLarge over MAX_PIXELS."""
    if media_type not in CONVERTIBLE or max_side <= 0:
        return name, media_type, content
    image_module = pillow()
    if image_module is None:  # Pillow is optional (e.g. the Lambda package): keep the original
        return name, media_type, content
    try:
        with image_module.open(io.BytesIO(content), formats=FORMATS) as image:  # reads the header only
            check_pixels(name, *image.size)
            if getattr(image, "is_animated", False):
                return name, media_type, content
            image.thumbnail((max_side, max_side))
            out = io.BytesIO()
            image.save(out, "WEBP", quality=85, method=4)
    except (image_module.DecompressionBombError, image_module.DecompressionBombWarning):  # over 2x (1x) the limit
        raise too_many_pixels(name) from None
    except ImageTooLarge:
        raise
    except Exception:  # a broken or hostile image: stored as sent, never decoded again here
        return name, media_type, content
    webp = out.getvalue()
    if len(webp) >= len(content):
        return name, media_type, content
    return f"{os.path.splitext(name)[0]}.webp", "image/webp", webp


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
