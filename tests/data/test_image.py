"""Tests of utils/image.py: reading any image file as RGB, input sizes, letterbox."""

import cv2
import numpy as np
import pytest
from PIL import Image

from utils.config import PAD_VALUE
from utils.image import (
    ImageLoadError,
    check_input_size,
    letterbox,
    letterbox_geometry,
    load_image,
    shrink,
    stretch,
)

W, H = 40, 24


def _check_rgb(arr, shape=(H, W)):
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == (*shape, 3)


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    rgb = load_image(path)
    _check_rgb(rgb)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[:, : W // 2] = (255, 0, 0, 255)  # opaque red
    rgba[:, W // 2 :] = (0, 0, 255, 0)  # fully transparent blue
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb = load_image(path)
    _check_rgb(rgb)
    np.testing.assert_array_equal(rgb[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(rgb[0, -1], (255, 255, 255))


def test_palette_png_maps_its_colours(tmp_path):
    image = Image.new("P", (W, H), 0)
    palette = [0, 0, 0] * 256
    palette[3:6] = [10, 200, 30]
    palette[6:9] = [250, 5, 120]
    image.putpalette(palette)
    image.paste(1, (0, 0, W // 2, H))
    image.paste(2, (W // 2, 0, W, H))
    path = tmp_path / "palette.png"
    image.save(path)
    assert Image.open(path).mode == "P"
    rgb = load_image(path)
    _check_rgb(rgb)
    np.testing.assert_array_equal(rgb[3, 3], (10, 200, 30))
    np.testing.assert_array_equal(rgb[3, -3], (250, 5, 120))


def test_16bit_png_is_scaled_to_8_bits(tmp_path):
    deep = np.zeros((H, W), np.uint16)
    deep[:, : W // 3] = 0
    deep[:, W // 3 : 2 * W // 3] = 32768
    deep[:, 2 * W // 3 :] = 65535
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_image(path)
    _check_rgb(rgb)
    np.testing.assert_array_equal(rgb[0, 0], (0, 0, 0))
    assert np.all(np.abs(rgb[0, W // 2].astype(int) - 128) <= 1)
    np.testing.assert_array_equal(rgb[0, -1], (255, 255, 255))
    # A dark 16-bit image stays dark: 16-bit values are not read as 8-bit ones.
    dark_path = tmp_path / "dark16.png"
    Image.fromarray(np.full((H, W), 200, np.uint16)).save(dark_path)
    assert load_image(dark_path).max() <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (W, H), (230, 20, 40)).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    rgb = load_image(path)
    _check_rgb(rgb)
    assert np.all(np.abs(rgb[H // 2, W // 2].astype(int) - (230, 20, 40)) <= 12)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:, : W // 2] = (255, 0, 0)  # left half red
    stored[:, W // 2 :] = (0, 0, 255)  # right half blue
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    rgb = load_image(path)
    _check_rgb(rgb, shape=(W, H))  # height and width swapped
    # Turned clockwise, the stored left half is on top.
    assert rgb[2, H // 2, 0] > 200 and rgb[2, H // 2, 2] < 60
    assert rgb[-3, H // 2, 2] > 200 and rgb[-3, H // 2, 0] < 60


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_raises_naming_the_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=f"cut\\{suffix}"):
        load_image(path)


def test_non_image_and_missing_files_raise_naming_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match="notes.jpg"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    # An ImageLoadError is a ValueError, so callers catching ValueError also see it.
    assert issubclass(ImageLoadError, ValueError)


def test_an_image_over_pils_pixel_limit_is_read_and_reported_once(tmp_path, monkeypatch, caplog):
    import logging
    import warnings

    from utils.data.annotation import Annotation
    from utils.data.dataset import check_annotations
    from utils.image import displayed_size, image_size

    # 1,600 pixels against a limit of 1,000: warned about by PIL, under the 2,000 it refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "large.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(path)
    annotation = Annotation(str(path), np.array([[1, 1, 20, 20]], np.float32), np.zeros(1, np.int32),
                            np.zeros(1, bool))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="utils.image"):
        warnings.simplefilter("always")
        usable, problems = check_annotations([annotation], 1)  # the training check reads the header
        assert displayed_size(path) == image_size(path) == (40, 40)
        _check_rgb(load_image(path), (40, 40))  # prediction and evaluation decode it
        _check_rgb(load_image(path), (40, 40))
    assert len(usable) == 1 and problems == []
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    said = [r.getMessage() for r in caplog.records if r.name == "utils.image"]
    assert said == [f"{path}: 40x40 image (1,600 pixels), more than PIL's limit of 1,000 pixels against "
                    "decompression bombs; it is read anyway, which takes much memory (images over 2,000 pixels "
                    "are refused)"]

    Image.new("RGB", (50, 50)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageLoadError, match=r"bomb\.png: image too large"):
        load_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("bad", [100, 0, -32, 33.5, "abc", None])
def test_check_input_size_rejects_with_the_value(bad):
    with pytest.raises(ValueError, match="multiple of 32") as info:
        check_input_size(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("good", [64, 416, 608, "320", 64.0])
def test_check_input_size_accepts_multiples_of_32(good):
    assert check_input_size(good) == int(float(good))
    assert isinstance(check_input_size(good), int)


@pytest.mark.parametrize(
    "image_hw, size, expected",
    [
        ((100, 200), 64, (0.32, (32, 64), (16, 0))),  # wide: bands top and bottom
        ((200, 100), 64, (0.32, (64, 32), (0, 16))),  # tall: bands left and right
        ((50, 50), 64, (1.28, (64, 64), (0, 0))),  # square, enlarged
        ((480, 640), 416, (0.65, (312, 416), (52, 0))),
    ],
)
def test_letterbox_geometry(image_hw, size, expected):
    scale, new_hw, offset = letterbox_geometry(image_hw, size)
    assert scale == pytest.approx(expected[0])
    assert new_hw == expected[1]
    assert offset == expected[2]


def test_letterbox_places_the_image_on_a_grey_canvas():
    image = np.full((100, 200, 3), 255, np.uint8)  # h 100, w 200
    canvas = letterbox(image, 64)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert np.all(canvas[:16] == PAD_VALUE) and np.all(canvas[48:] == PAD_VALUE)
    assert np.all(canvas[16:48] == 255)
    tall = letterbox(np.zeros((200, 100, 3), np.uint8), 64)
    assert np.all(tall[:, :16] == PAD_VALUE) and np.all(tall[:, 48:] == PAD_VALUE)
    assert np.all(tall[:, 16:48] == 0)
    assert stretch(image, 64).shape == (64, 64, 3)


def _scene(height, width, seed=0):
    """A gradient with overlapping discs of random colours: edges at every scale."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    for _ in range(60):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(5, height // 6)), color, -1, cv2.LINE_AA)
    return image


@pytest.mark.parametrize("size, out", [((720, 1280), (234, 416)), ((1080, 1920), (234, 416)), ((481, 641), (150, 200)),
                                       ((100, 100), (99, 99))])
def test_shrink_averages_areas_like_one_resize(size, out):
    # A whole-factor first step where both sides divide by one (OpenCV's fast path),
    # then the rest: the same as one area resize to a fraction of a grey level.
    image = _scene(*size)
    got = shrink(image, out[1], out[0])
    direct = cv2.resize(image, (out[1], out[0]), interpolation=cv2.INTER_AREA)
    assert got.shape == direct.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - direct).mean() < 0.6
    if size[0] % 2 or size == (100, 100):  # no whole factor: the one resize itself
        assert np.array_equal(got, direct)
