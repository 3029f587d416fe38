"""Request bodies to images: the formats a client may send and the limits a public service needs.

An upload is decoded from memory, never from a path a client names. The header is
read first: a file that is not an image, or not one of ``UPLOAD_FORMATS``, is refused
before any pixel is decoded, and so is one with more pixels than the server allows
(a decompression bomb: a small file that would fill the memory once decoded). The
pixels are then read as ``utils.image.load_image`` reads a file: EXIF orientation
applied, any mode converted to RGB.
"""

import io
import warnings

from PIL import Image, UnidentifiedImageError

from utils.image import to_rgb, upright

# PIL format names of the images a client may send, and how to say them.
UPLOAD_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP", "WEBP": "WebP"}
ACCEPTED = ", ".join(UPLOAD_FORMATS.values())


class UploadError(ValueError):
    """A request body that cannot be used; ``status`` is the HTTP status to answer with.

    Args:
        status: 400 (corrupt), 413 (too large) or 415 (not an accepted image).
        message: what is wrong and what to send instead.
    """

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data, max_pixels):
    """Decodes an uploaded image.

    Args:
        data: the file's bytes.
        max_pixels: the largest width × height accepted.

    Returns:
        RGB uint8 (H, W, 3), EXIF orientation applied.

    Raises:
        UploadError: 415 for what is not an image of ``UPLOAD_FORMATS``, 413 above
            ``max_pixels``, 400 for a corrupt or truncated image.
    """
    if not data:
        raise UploadError(400, "the request has no image: send the image file as the body or as a multipart field")
    with warnings.catch_warnings():
        # The pixel limit is checked below, with this server's own message.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(UPLOAD_FORMATS))
        except UnidentifiedImageError:
            raise UploadError(415, f"the upload is not an image of an accepted format ({ACCEPTED})") from None
        except Image.DecompressionBombError:
            raise UploadError(413, _too_large(None, max_pixels)) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UploadError(400, f"the image is corrupt or truncated: its header cannot be read ({exc})") from None
    with image:
        if image.width * image.height > max_pixels:
            raise UploadError(413, _too_large(image.size, max_pixels))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                rgb = to_rgb(upright(image))
        except Image.DecompressionBombError:
            raise UploadError(413, _too_large(image.size, max_pixels)) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UploadError(400, f"the {UPLOAD_FORMATS[image.format]} image is corrupt or truncated "
                                   f"({exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UploadError(400, f"the image is empty (shape {rgb.shape})")
    return rgb


def _too_large(size, max_pixels):
    what = f"{size[0]}x{size[1]} ({size[0] * size[1]:,} pixels)" if size else "larger than PIL decodes safely"
    return (f"the image is {what}, more than the {max_pixels:,} pixels this server decodes (a guard against "
            "decompression bombs); send a smaller image")
