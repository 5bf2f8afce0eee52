"""Image files -> 8-bit pixels: the one reader for `classify` (camera-like frames from
PNG/JPEG/...) and for data sets given as image-folder trees.

- More than 8 bits per sample (16-bit grayscale PNG or PGM: Pillow's modes I;16* and I,
  values 0..65535) is scaled to 0..255, v * 255 / 65535 rounded, never clipped: clipping
  would turn every pixel above 255/65535 of full scale white. (16-bit RGB PNGs Pillow
  already reduces to their high bytes.) An 8-bit image saved at 16 bits (v * 257) reads
  back as exactly the same pixels.
- An image of more than MAX_PIXELS is refused from its header, before any decoding: a
  small file can declare a huge size (a decompression bomb).
"""

import warnings

import numpy as np

from .errors import UserError

# 8192 x 4096 (8K UHD fits): far above any camera frame or photo these models are given,
# far below what would exhaust memory (4 bytes a pixel while scaling 16-bit samples).
MAX_PIXELS = 8192 * 4096


class ImageError(UserError):
    """An image file that cannot be used; the message starts with the file's name."""


def read_image(source, mode: str, name=None) -> np.ndarray:
    """A path or binary file object -> uint8 pixels: mode "L" (H, W) or "RGB" (H, W, 3).
    `name` (default: source) names the file in errors. A missing file raises the usual
    FileNotFoundError; anything else that cannot be read raises ImageError."""
    from PIL import Image, UnidentifiedImageError

    name = source if name is None else name
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (~89M pixels); MAX_PIXELS below decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: refused: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (PNG, JPEG, BMP, PGM/PPM, ...)") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ImageError(f"{name}: refused: {w}x{h} is {w * h:,} pixels, more than the "
                             f"limit of {MAX_PIXELS:,} (a decompression bomb?)")
        try:
            im.load()
        except (OSError, ValueError, EOFError, SyntaxError) as exc:
            raise ImageError(f"{name}: cannot decode the image ({exc})") from None
        if im.mode == "F":
            raise ImageError(f"{name}: floating-point pixels are not supported; save the "
                             "image with 8 or 16 bits per sample")
        if im.mode == "I" or im.mode.startswith("I;16"):
            wide = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
            im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # mode L
        return np.asarray(im.convert(mode), dtype=np.uint8)


def is_greyscale(path) -> bool:
    """Whether an image file holds one channel (read from its header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.mode in ("1", "L", "LA", "I", "F") or im.mode.startswith("I;16")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        return False   # read_image then names the file and says why


def fit(pixels, size) -> np.ndarray:
    """uint8 pixels (H, W) or (H, W, 3), centre-cropped to the aspect ratio of size = (w, h)
    and resized to it (Lanczos); unchanged when already that size."""
    from PIL import Image

    w, h = size
    ih, iw = pixels.shape[:2]
    if (iw, ih) == (w, h):
        return pixels
    if iw * h > ih * w:                      # too wide: keep the full height
        cw, ch = max(1, round(ih * w / h)), ih
    else:
        cw, ch = iw, max(1, round(iw * h / w))
    x0, y0 = (iw - cw) // 2, (ih - ch) // 2
    im = Image.fromarray(np.ascontiguousarray(pixels[y0:y0 + ch, x0:x0 + cw]))
    return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
