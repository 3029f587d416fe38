"""Augmentation ops: boxes stay on their objects, clipping, HSV, letterbox geometry."""

import numpy as np
import pytest
import tensorflow as tf

from utils.config import PAD_VALUE
from utils.data import augment
from utils.image import letterbox_geometry

SIZE = 96
GREY = 100
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _seed(k):
    return tf.constant([k, 1000 + k], tf.int64)


def _picture(width, height, box, colour, stripe=None):
    """Grey image with a filled rectangle (xyxy pixels); optionally a second colour
    over the rectangle's left quarter, to tell a mirrored copy."""
    image = np.full((height, width, 3), GREY, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour
    if stripe is not None:
        image[y1:y2, x1 : x1 + (x2 - x1) // 4] = stripe
    return image


def _colour_mask(image, colour):
    """Pixels closer to ``colour`` than to the grey background (projection > 0.5)."""
    direction = np.asarray(colour, np.float32) - GREY
    score = (np.asarray(image, np.float32) - GREY) @ direction / (direction @ direction)
    return score > 0.5


def _mask_box(mask):
    """xyxy pixel box around a boolean mask's true pixels, or None."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def test_random_place_keeps_boxes_on_the_object_and_flips():
    box = (30, 20, 70, 60)
    image = _picture(120, 90, box, RED, stripe=GREEN)
    flips, kept = set(), 0
    for k in range(12):
        out, boxes, classes = augment.random_place(
            tf.constant(image), tf.constant([box], tf.float32), tf.constant([3]), SIZE, _seed(k)
        )
        out = out.numpy()
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 255.0
        mask = _colour_mask(out, RED) | _colour_mask(out, GREEN)
        found = _mask_box(mask)
        if boxes.shape[0] == 0:
            # Dropped: the object is off the canvas or at most a sliver of it shows.
            assert found is None or min(found[2] - found[0], found[3] - found[1]) <= 3
            continue
        assert classes.numpy().tolist() == [3]
        np.testing.assert_allclose(boxes.numpy()[0], found, atol=2.0, err_msg=f"seed {k}")
        kept += 1
        red_cols = np.nonzero(_colour_mask(out, RED))[1]
        green_cols = np.nonzero(_colour_mask(out, GREEN))[1]
        if red_cols.size and green_cols.size:
            flips.add(bool(green_cols.mean() > red_cols.mean()))
    assert kept >= 6, "too few boxes survived to test anything"
    assert flips == {True, False}, "expected both flipped and unflipped samples over 12 seeds"


@pytest.mark.parametrize("flip", [False, True])
def test_render_samples_like_tf_image_resize(flip):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
    for new_w, new_h, dx, dy in [(9, 7, 2, 1), (18, 14, 3, 0), (5, 4, 6, 2)]:
        window = (tf.constant(0), tf.constant(0), tf.constant(24), tf.constant(20))
        f = [tf.constant(float(v)) for v in (new_w, new_h, dx, dy)]
        out = augment._render(tf.constant(image), window, *f, tf.constant(flip)).numpy()
        resized = tf.image.resize(image, [new_h, new_w], method="bilinear").numpy()
        if flip:
            resized = resized[:, ::-1]
        expected = np.full((20, 24, 3), float(PAD_VALUE), np.float32)
        expected[dy : dy + new_h, dx : dx + new_w] = resized
        np.testing.assert_allclose(out, expected, atol=1e-3, err_msg=f"{(new_w, new_h, dx, dy)}")
        # A window of the canvas is the same pixels as that part of the whole canvas.
        part = augment._render(
            tf.constant(image), (tf.constant(5), tf.constant(3), tf.constant(7), tf.constant(6)), *f, tf.constant(flip)
        ).numpy()
        np.testing.assert_allclose(part, out[3:9, 5:12], atol=1e-3)


def test_random_place_is_deterministic_per_seed():
    image = tf.constant(_picture(80, 60, (10, 10, 40, 40), RED))
    boxes = tf.constant([[10, 10, 40, 40]], tf.float32)
    a = augment.random_place(image, boxes, tf.constant([0]), SIZE, _seed(3))
    b = augment.random_place(image, boxes, tf.constant([0]), SIZE, _seed(3))
    c = augment.random_place(image, boxes, tf.constant([0]), SIZE, _seed(4))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_random_place_scale_range_and_grey_canvas():
    # A uniform white image: the non-grey area is the placed image itself.
    image = tf.constant(np.full((50, 100, 3), 255, np.uint8))
    whole = tf.constant([[0, 0, 100, 50]], tf.float32)
    for k in range(8):
        out, boxes, _ = augment.random_place(image, whole, tf.constant([0]), SIZE, _seed(k))
        found = _mask_box(_colour_mask(out.numpy(), WHITE))
        assert found is not None
        # A box around the whole image is exactly the placed image's pixels.
        np.testing.assert_array_equal(boxes.numpy(), [found])
        # Longer side = U(0.25, 2) · S before cropping by the canvas.
        assert found[2] - found[0] >= 0.25 * SIZE - 2
        # Everything more than a pixel away from the placed image is the pad grey.
        x1, y1, x2, y2 = found.astype(int)
        outside = np.ones((SIZE, SIZE), bool)
        outside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = False
        assert np.all(out.numpy()[outside] == PAD_VALUE)


def test_mosaic_keeps_each_tiles_boxes_on_its_object():
    colours = [RED, GREEN, BLUE, WHITE]
    rects = [(10, 10, 50, 40), (30, 20, 90, 70), (5, 30, 45, 60), (20, 5, 60, 55)]
    sizes = [(80, 60), (110, 90), (70, 100), (90, 90)]
    images = [tf.constant(_picture(w, h, r, c)) for (w, h), r, c in zip(sizes, rects, colours)]
    boxes = [tf.constant([r], tf.float32) for r in rects]
    classes = [tf.constant([k], tf.int32) for k in range(4)]
    kept_total = 0
    for k in range(6):
        out, out_boxes, out_classes = augment.mosaic(images, boxes, classes, SIZE, _seed(k))
        out, out_boxes, out_classes = out.numpy(), out_boxes.numpy(), out_classes.numpy()
        assert out.shape == (SIZE, SIZE, 3)
        assert len(set(out_classes.tolist())) == len(out_classes), "one box per tile expected"
        for cls, colour in enumerate(colours):
            found = _mask_box(_colour_mask(out, colour))
            rows = np.flatnonzero(out_classes == cls)
            if rows.size == 0:
                assert found is None or min(found[2] - found[0], found[3] - found[1]) <= 3, (k, cls)
                continue
            kept_total += 1
            np.testing.assert_allclose(out_boxes[rows[0]], found, atol=2.0, err_msg=f"seed {k} tile {cls}")
    assert kept_total >= 12, "too few boxes survived to test anything"


def test_mosaic_needs_four_images():
    image = tf.zeros((10, 10, 3), tf.uint8)
    with pytest.raises(ValueError, match="four images.*got 3"):
        augment.mosaic([image] * 3, [tf.zeros((0, 4))] * 3, [tf.zeros((0,), tf.int32)] * 3, SIZE, _seed(0))


def test_mixup_blends_and_unions():
    a = (tf.fill((4, 4, 3), 200.0), tf.constant([[0, 0, 2, 2]], tf.float32), tf.constant([1]))
    b = (tf.fill((4, 4, 3), 100.0), tf.constant([[1, 1, 3, 3], [0, 1, 4, 2]], tf.float32), tf.constant([2, 0]))
    image, boxes, classes = augment.mixup(a, b)
    np.testing.assert_allclose(image.numpy(), 150.0)
    np.testing.assert_array_equal(boxes.numpy(), [[0, 0, 2, 2], [1, 1, 3, 3], [0, 1, 4, 2]])
    assert classes.numpy().tolist() == [1, 2, 0]


def test_clip_boxes_clips_and_drops_thin_boxes():
    boxes = tf.constant(
        [
            [-10, 5, 20, 30],  # clipped on the left
            [90, 10, 120, 40],  # clipped on the right, 6 px left
            [95, 0, 200, 10],  # 1 px wide after clipping: dropped
            [10, 10, 11.5, 50],  # 1.5 px wide: kept
            [10, 10, 40, 11],  # 1 px high: dropped
            [200, 200, 300, 300],  # fully outside: dropped
        ],
        tf.float32,
    )
    out, classes = augment.clip_boxes(boxes, tf.constant([0, 1, 2, 3, 4, 5]), (0, 0, 96, 96))
    np.testing.assert_allclose(out.numpy(), [[0, 5, 20, 30], [90, 10, 96, 40], [10, 10, 11.5, 50]])
    assert classes.numpy().tolist() == [0, 1, 3]


def test_hsv_keeps_shape_range_and_grey():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (20, 30, 3)), tf.float32)
    grey = tf.fill((5, 5, 3), 128.0)
    outputs = []
    for k in range(5):
        out = augment.random_hsv(image, _seed(k)).numpy()
        assert out.shape == (20, 30, 3) and out.dtype == np.float32
        assert out.min() >= -1e-3 and out.max() <= 255.0 + 1e-3
        outputs.append(out)
        # Grey has no saturation: it stays grey (only its value may change).
        g = augment.random_hsv(grey, _seed(k)).numpy()
        assert np.ptp(g, axis=-1).max() < 1e-3
    assert not np.allclose(outputs[0], outputs[1])
    same = augment.random_hsv(image, _seed(0), gains=(0.0, 0.0, 0.0)).numpy()
    np.testing.assert_allclose(same, image.numpy(), atol=0.05)


def test_hsv_matches_the_tf_image_conversions():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (16, 24, 3)).astype(np.float32)
    image[:4] = 128.0  # grey rows: zero saturation
    image[4:8] = np.round(image[4:8] / 255.0) * 255.0  # saturated primaries and black/white
    for k in range(4):
        factors = 1.0 + tf.random.stateless_uniform([3], _seed(k), -1.0, 1.0).numpy() * np.array([0.1, 0.7, 0.4])
        hsv = tf.image.rgb_to_hsv(image / 255.0).numpy()
        hsv[..., 0] = np.mod(hsv[..., 0] * factors[0], 1.0)
        hsv[..., 1:] = np.clip(hsv[..., 1:] * factors[1:], 0.0, 1.0)
        expected = tf.image.hsv_to_rgb(hsv).numpy() * 255.0
        got = augment.random_hsv(tf.constant(image), _seed(k)).numpy()
        np.testing.assert_allclose(got, expected, atol=0.05, err_msg=f"seed {k}")


def test_hsv_hue_wraps_around():
    # Hue factor 1.1 on a hue near 0.95 wraps to about 0.045 (an orange-red), never > 1.
    colour = tf.constant([[[255.0, 0.0, 76.5]]])  # hue 0.95
    hsv = tf.image.rgb_to_hsv(colour / 255.0).numpy()[0, 0]
    assert hsv[0] == pytest.approx(0.95, abs=1e-3)
    for k in range(10):
        out = augment.random_hsv(colour, _seed(k), gains=(0.1, 0.0, 0.0))
        hue = tf.image.rgb_to_hsv(out / 255.0).numpy()[0, 0, 0]
        assert 0.0 <= hue < 1.0
    factors = 1.0 + tf.random.stateless_uniform([3], _seed(0), -1.0, 1.0).numpy() * np.array([0.1, 0, 0])
    out = augment.random_hsv(colour, _seed(0), gains=(0.1, 0.0, 0.0))
    hue = tf.image.rgb_to_hsv(out / 255.0).numpy()[0, 0, 0]
    assert hue == pytest.approx((0.95 * factors[0]) % 1.0, abs=2e-3)


@pytest.mark.parametrize(
    "width,height,expected",
    [
        (200, 100, (64, 32, 0, 16)),
        (100, 300, (21, 64, 21, 0)),
        (64, 64, (64, 64, 0, 0)),
        (30, 20, (64, 43, 0, 10)),
    ],
)
def test_letterbox_geometry(width, height, expected):
    new_w, new_h, dx, dy = expected
    assert letterbox_geometry((height, width), 64)[1:] == ((new_h, new_w), (dy, dx))


def test_letterbox_geometry_keeps_a_sliver_one_pixel_wide():
    # 1000x3 would round to 0 rows; the canvas still gets one.
    assert letterbox_geometry((3, 1000), 64)[1:] == ((1, 64), (31, 0))
    with pytest.raises(ValueError, match="0x5"):
        letterbox_geometry((5, 0), 64)


def test_letterbox_places_image_and_boxes():
    width, height = 100, 300
    box = (20, 60, 80, 240)
    image = _picture(width, height, box, RED)
    out, boxes, classes = augment.letterbox(
        tf.constant(image), tf.constant([box], tf.float32), tf.constant([5]), 64
    )
    out = out.numpy()
    _, (new_h, new_w), (dy, dx) = letterbox_geometry((height, width), 64)
    assert (new_w, new_h, dx, dy) == (21, 64, 21, 0)
    assert np.all(out[:, :dx] == PAD_VALUE) and np.all(out[:, dx + new_w :] == PAD_VALUE)
    assert not np.any(out[:, dx : dx + new_w] == PAD_VALUE)
    expected = augment.letterbox_boxes([box], (width, height), 64)
    np.testing.assert_allclose(boxes.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(expected[0], [dx + 20 * 0.21, 60 * 64 / 300, dx + 80 * 0.21, 240 * 64 / 300], rtol=1e-5)
    assert classes.numpy().tolist() == [5]
    found = _mask_box(_colour_mask(out, RED))
    np.testing.assert_allclose(boxes.numpy()[0], found, atol=1.5)


def test_letterbox_geometry_agrees_with_the_tf_op():
    rng = np.random.default_rng(3)
    for width, height in rng.integers(5, 300, (12, 2)):
        _, (new_h, new_w), (dy, dx) = letterbox_geometry((int(height), int(width)), 64)
        image = tf.fill((int(height), int(width), 3), tf.constant(255, tf.uint8))
        out, _, _ = augment.letterbox(image, tf.zeros((0, 4)), tf.zeros((0,), tf.int32), 64)
        found = _mask_box(_colour_mask(out.numpy(), WHITE))
        np.testing.assert_array_equal(found, [dx, dy, dx + new_w, dy + new_h], err_msg=f"{width}x{height}")
