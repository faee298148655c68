"""Images to WebP, scaled to fit a size cap: a full-screen PNG screenshot shrinks ~5-10x and
stays readable. Only still raster images Pillow opens; anything else (or a conversion that
does not help, or fails) is kept as sent."""

import io
import os

CONVERTIBLE = {"image/png", "image/jpeg", "image/bmp", "image/tiff"}
MAX_PIXELS = 50_000_000  # Pillow refuses larger images (decompression bombs): kept as sent


def to_webp(name: str, media_type: str, content: bytes, max_side: int) -> tuple[str, str, bytes]:
    """(name, media type, content): as WebP, or unchanged."""
    if media_type not in CONVERTIBLE or max_side <= 0:
        return name, media_type, content
    try:
        from PIL import Image
    except ImportError:  # Pillow is optional (e.g. the Lambda package): keep the original
        return name, media_type, content
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(content)) as image:
            if getattr(image, "is_animated", False):
                return name, media_type, content
            image.thumbnail((max_side, max_side))
            out = io.BytesIO()
            image.save(out, "WEBP", quality=85, method=4)
    except Exception:  # a broken or hostile image: stored as sent, never decoded again here
        return name, media_type, content
    webp = out.getvalue()
    if len(webp) >= len(content):
        return name, media_type, content
    return f"{os.path.splitext(name)[0]}.webp", "image/webp", webp
