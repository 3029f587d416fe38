"""Reading images as RGB arrays and fitting them to the network input.

Every reader returns RGB uint8 (H, W, 3) with EXIF orientation applied, whatever the
file holds (grayscale, RGBA, palette, 16-bit, CMYK).

PIL guards against decompression bombs: above ``Image.MAX_IMAGE_PIXELS`` (about 89
million pixels) it warns each time a file is opened, above twice that it refuses.
Files are opened through ``open_image``, which reads such a large image but replaces
PIL's repeated warning with one message per file, logged under ``utils.image``.
"""

import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.config import INPUT_MULTIPLE, PAD_VALUE

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# EXIF tag of the orientation: 1 as stored; 2–8 the flips and quarter turns that show
# the image upright (5–8 swap width and height).
EXIF_ORIENTATION = 0x0112


class ImageLoadError(ValueError):
    """An image file that cannot be read; the message names the file and why."""


# Files already reported as above PIL's pixel limit, and the lock that keeps the
# process-wide warning filters of concurrent opens from undoing each other.
_REPORTED_LARGE = set()
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def open_image(path):
    """``PIL.Image.open`` (header only, pixels read on demand), closed on exit.

    An image above ``Image.MAX_IMAGE_PIXELS`` is opened without PIL's
    ``DecompressionBombWarning``; instead the first open of each file logs one
    warning that says the image is read anyway. Above twice the limit PIL still
    raises ``Image.DecompressionBombError``.

    Args:
        path: image file path.

    Yields:
        the open ``PIL.Image.Image``.
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        _report_large(path, image.size)
        yield image


def _report_large(path, size):
    limit = Image.MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if not limit or pixels <= limit:
        return
    key = os.path.abspath(path)
    if key in _REPORTED_LARGE:
        return
    _REPORTED_LARGE.add(key)
    logger.warning(
        "%s: %dx%d image (%s pixels), more than PIL's limit of %s pixels against decompression bombs; it is "
        "read anyway, which takes much memory (images over %s pixels are refused)",
        path, size[0], size[1], f"{pixels:,}", f"{limit:,}", f"{2 * limit:,}",
    )


def to_rgb(image):
    """Converts a PIL image of any mode to an RGB uint8 array (H, W, 3).

    16-bit and 32-bit integer images are scaled to 8 bits by their range; images with
    transparency are composited on white.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":  # convert() copies even an RGB image: 0.5 ms at 640x480
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def upright(image):
    """A loaded PIL image with its EXIF orientation applied, turned in place (an image
    without one is returned as it is, not copied); returns it."""
    ImageOps.exif_transpose(image, in_place=True)
    return image


def load_image(path):
    """Reads an image file as RGB with its EXIF orientation applied.

    Args:
        path: image file path.

    Returns:
        uint8 array (H, W, 3), RGB.

    Raises:
        ImageLoadError: missing, unreadable, truncated or not an image; names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: file not found")
    try:
        with open_image(path) as image:
            image.load()
            rgb = to_rgb(upright(image))
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{path}: image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageLoadError(f"{path}: empty image of shape {rgb.shape}")
    return rgb


def image_size(path):
    """Reads (width, height) from an image file header without decoding the pixels.

    Raises:
        OSError: the file is missing, not an image PIL can read, or too large.
    """
    try:
        with open_image(path) as image:
            return image.size
    except Image.DecompressionBombError as exc:
        raise OSError(str(exc)) from None


def exif_orientation(image):
    """The EXIF orientation (1–8) of an open PIL image; 1 when absent or not a valid value."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION)
    except (OSError, SyntaxError, ValueError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(path):
    """(width, height) of an image as displayed, i.e. with its EXIF orientation applied
    (the header size, swapped for orientations 5–8), read from the header only.

    Raises:
        OSError: the file is missing, not an image PIL can read, or too large.
    """
    try:
        with open_image(path) as image:
            width, height = image.size
            turned = exif_orientation(image) >= 5
    except Image.DecompressionBombError as exc:
        raise OSError(str(exc)) from None
    return (height, width) if turned else (width, height)


def check_input_size(size):
    """Validates a network input side: a positive multiple of 32.

    Returns:
        the size as int.
    """
    if isinstance(size, float) and not size.is_integer():
        value = None
    else:
        try:
            value = int(size)
        except (TypeError, ValueError):
            value = None
    if value is None or value <= 0 or value % INPUT_MULTIPLE:
        raise ValueError(
            f"Input size must be a positive multiple of {INPUT_MULTIPLE} (e.g. 320, 416, 608), got {size!r}"
        )
    return value


def letterbox_geometry(image_hw, input_size):
    """Where the letterbox puts an image on the square network input.

    The one definition of the letterbox used by prediction (``letterbox``), the
    validation pipeline (``utils.data.augment.letterbox``, the same arithmetic as
    TensorFlow ops) and the drawing code: scale = min(S / w, S / h); resized side =
    round(side · scale) (round half to even), kept within [1, S]; offset =
    (S − resized side) // 2.

    Args:
        image_hw: (height, width) of the original image in pixels.
        input_size: side S of the square network input.

    Returns:
        (scale, (new_h, new_w), (top, left)): the resize factor, the resized image
        size (ints), and where its top-left corner sits on the S×S canvas (ints).

    Raises:
        ValueError: the image size is not positive.
    """
    h, w = image_hw
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h} (width x height)")
    scale = min(input_size / w, input_size / h)
    new_w = max(1, min(input_size, round(w * scale)))
    new_h = max(1, min(input_size, round(h * scale)))
    return scale, (new_h, new_w), ((input_size - new_h) // 2, (input_size - new_w) // 2)


def shrink(image, width, height):
    """Downsizes an image by pixel-area averaging (OpenCV's ``INTER_AREA``).

    OpenCV averages whole k×k blocks several times faster than it resamples by a
    factor that is not a whole number (1280×720 to 416×234: ~1 ms against ~3 ms
    on one core), so an image whose sides both divide by a whole factor k ≥ 2 that
    is at most the reduction is first averaged by k, then resized the rest of the
    way. Both steps average areas, and the result differs from one ``INTER_AREA``
    resize by a fraction of a grey level on average. Other images take the single
    resize.

    Args:
        image: uint8 (H, W, C).
        width, height: the output size, at most the image's.

    Returns:
        uint8 (height, width, C).
    """
    h, w = image.shape[:2]
    for k in range(int(min(w / width, h / height)), 1, -1):
        if w % k == 0 and h % k == 0:
            image = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
            break
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def letterbox(image, input_size):
    """Resizes keeping the aspect ratio and centres the result on a grey canvas.

    Args:
        image: uint8 (H, W, 3) RGB.
        input_size: side S of the square network input.

    Returns:
        uint8 (S, S, 3) canvas.
    """
    _, (new_h, new_w), (top, left) = letterbox_geometry(image.shape[:2], input_size)
    if new_w < image.shape[1]:
        resized = shrink(image, new_w, new_h)
    else:
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((input_size, input_size, 3), PAD_VALUE, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def stretch(image, input_size):
    """Plain resize to S×S, ignoring the aspect ratio. uint8 (H, W, 3) -> (S, S, 3)."""
    return cv2.resize(image, (input_size, input_size), interpolation=cv2.INTER_LINEAR)


def boxes_to_image(boxes, image_hw, input_size, letterboxed=True):
    """Maps boxes from the network input back onto the original image, clipped to it.

    The inverse of ``letterbox`` (or of ``stretch`` when ``letterboxed`` is False).

    Args:
        boxes: (N, 4) xyxy pixels of the S×S network input.
        image_hw: (height, width) of the original image in pixels.
        input_size: side S of the square network input.
        letterboxed: whether the image was letterboxed (True) or stretched (False).

    Returns:
        float32 (N, 4) xyxy pixels of the original image.
    """
    h, w = image_hw
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if letterboxed:
        scale, _, (top, left) = letterbox_geometry(image_hw, input_size)
        mapped = (boxes - np.array([left, top, left, top], np.float32)) / np.float32(scale)
    else:
        mapped = boxes / np.array([input_size / w, input_size / h] * 2, np.float32)
    return np.clip(mapped, 0.0, np.array([w, h, w, h], np.float32)).astype(np.float32)


def list_images(folder):
    """All files in a folder (sorted, not recursive) with an image extension."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
