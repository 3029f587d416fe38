"""The tf.data pipeline: annotation checks, output contract, determinism, letterbox."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from utils.config import DEFAULT_ANCHORS, MAX_GT_BOXES, STRIDES
from utils.data import augment
from utils.data.annotation import Annotation
from utils.data.dataset import build_dataset, check_annotations, steps_per_epoch
from utils.image import letterbox_geometry
from utils.model_data import load_anchors

SIZE = 64
NUM_CLASSES = 3
ANCHORS = load_anchors(DEFAULT_ANCHORS) * (SIZE / 416.0)


def _annotation(path, boxes, classes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Annotation(str(path), boxes, np.asarray(classes, np.int32), np.zeros(len(classes), bool))


@pytest.fixture
def image_set(tmp_path):
    """Five small images (JPEG and PNG, assorted sizes) with one to three boxes each."""
    rng = np.random.default_rng(0)
    annotations = []
    for i, (w, h) in enumerate([(80, 60), (50, 90), (120, 70), (64, 64), (70, 100)]):
        pixels = rng.integers(60, 140, (h, w, 3)).astype(np.uint8)
        boxes, classes = [], []
        for j in range(1 + i % 3):
            x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x2, y2 = x1 + int(rng.integers(8, w // 2)), y1 + int(rng.integers(8, h // 2))
            pixels[y1:y2, x1:x2] = (220, 30 * j, 20)
            boxes.append([x1, y1, x2, y2])
            classes.append((i + j) % NUM_CLASSES)
        path = tmp_path / (f"img{i}.png" if i % 2 else f"img{i}.jpg")
        Image.fromarray(pixels).save(path)
        annotations.append(_annotation(path, boxes, classes))
    return annotations


def _batches(dataset):
    return [(x.numpy(), [t.numpy() for t in y]) for x, y in dataset]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        for ta, tb in zip(ya, yb):
            np.testing.assert_array_equal(ta, tb)


# ----------------------------------------------------------------- check_annotations


def test_check_annotations_reports_and_skips_bad_images(tmp_path, image_set):
    (tmp_path / "broken.jpg").write_bytes(b"this is not an image")
    Image.new("RGB", (40, 30)).save(tmp_path / "scan.tiff")
    bad = [
        _annotation(tmp_path / "missing.jpg", [[1, 1, 5, 5]], [0]),
        _annotation(tmp_path / "broken.jpg", [[1, 1, 5, 5]], [0]),
        _annotation(tmp_path / "scan.tiff", [[1, 1, 5, 5]], [0]),
    ]
    usable, problems = check_annotations(bad + image_set, NUM_CLASSES)
    assert [a.path for a in usable] == [a.path for a in image_set]
    assert len(problems) == 3
    assert "missing.jpg" in problems[0] and "not found" in problems[0]
    assert "broken.jpg" in problems[1] and "cannot read" in problems[1]
    assert "scan.tiff" in problems[2] and "'TIFF'" in problems[2]


def test_check_annotations_clips_and_drops_boxes(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (40, 30), (90, 90, 90)).save(path)
    ann = _annotation(
        path,
        [[-5, 2, 20, 10], [10, 10, 50, 40], [45, 5, 60, 9], [1, 1, 9, 9], [2, 2, 8, 8]],
        [0, 1, 2, 5, -1],
    )
    usable, problems = check_annotations([ann], NUM_CLASSES)
    assert len(usable) == 1
    np.testing.assert_array_equal(usable[0].boxes, [[0, 2, 20, 10], [10, 10, 40, 30]])
    assert usable[0].classes.tolist() == [0, 1]
    assert len(problems) == 5
    assert sum("clipped to" in p for p in problems) == 2
    assert sum("empty" in p for p in problems) == 1
    assert sum("class id" in p for p in problems) == 2


def test_check_annotations_reads_exif_orientation_and_the_displayed_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "rotated.jpg", exif=exif)
    Image.new("RGB", (40, 20)).save(tmp_path / "upright.jpg")
    anns = [_annotation(tmp_path / n, [[1, 1, 18, 30]], [0]) for n in ("rotated.jpg", "upright.jpg")]
    usable, problems = check_annotations(anns, 1)
    assert [a.orientation for a in usable] == [6, 1]
    # Displayed, the rotated image is 20x40: its box fits; the upright 40x20 one is clipped.
    np.testing.assert_array_equal(usable[0].boxes, [[1, 1, 18, 30]])
    np.testing.assert_array_equal(usable[1].boxes, [[1, 1, 18, 20]])
    assert len(problems) == 2
    assert "rotated.jpg" in problems[0] and "EXIF orientation 6" in problems[0] and "20x40" in problems[0]
    assert "upright.jpg" in problems[1] and "clipped" in problems[1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_pipeline_turns_images_as_prediction_does(tmp_path, orientation):
    from utils.data.dataset import to_displayed_orientation
    from utils.image import load_image

    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "im.png"  # lossless, so the pixels compare exactly
    Image.fromarray(pixels).save(path, exif=exif)
    expected = load_image(path)  # PIL's exif_transpose
    assert expected.shape == ((7, 5, 3) if orientation >= 5 else (5, 7, 3))
    turned = to_displayed_orientation(tf.constant(pixels), tf.constant(orientation)).numpy()
    np.testing.assert_array_equal(turned, expected)


def test_rotated_jpeg_trains_as_displayed_with_boxes_of_the_displayed_image(tmp_path):
    # Displayed 60 wide x 100 high with a red block at x 10-30, y 50-90; the file stores
    # it turned a quarter (100 wide x 60 high) with EXIF orientation 6, as phones do.
    displayed = np.full((100, 60, 3), 90, np.uint8)
    displayed[50:90, 10:30] = (230, 20, 20)
    stored = np.ascontiguousarray(np.rot90(displayed, 1))  # orientation 6 turns it back clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    usable, _ = check_annotations([_annotation(tmp_path / "phone.jpg", [[10, 50, 30, 90]], [1])], NUM_CLASSES)
    assert usable[0].orientation == 6
    for cache in (False, True):
        dataset = build_dataset(usable, NUM_CLASSES, SIZE, ANCHORS, batch_size=1, training=False, cache=cache)
        (images, targets), = _batches(dataset)
        image, gt = images[0], targets[3][0, 0]
        # The letterboxed canvas holds the image upright: 60x100 -> 38x64 at x 13.
        cx, cy, w, h = gt * SIZE
        x1, y1, x2, y2 = (int(round(v)) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        assert (x1, y1, x2, y2) == (19, 32, 32, 58)
        inside = image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
        assert inside[..., 0].min() > 180 and inside[..., 1].max() < 80
        outside = image[5:25, 20:45]
        assert np.all(np.abs(outside - 90) < 20)
    # Training samples hold the red block where the boxes say, whatever the augmentation.
    train = build_dataset(usable, NUM_CLASSES, SIZE, ANCHORS, batch_size=1, training=True, seed=3)
    for images, targets in train.take(3):
        cx, cy, w, h = targets[3].numpy()[0, 0] * SIZE
        if w < 6 or h < 6:
            continue
        patch = images.numpy()[0, int(cy - h / 4) : int(cy + h / 4), int(cx - w / 4) : int(cx + w / 4)]
        assert patch[..., 0].mean() > patch[..., 1].mean() + 60


def test_check_annotations_resolves_relative_paths(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "rel.png")
    usable, problems = check_annotations([_annotation("rel.png", [[1, 1, 5, 5]], [0])], 1, image_root=tmp_path)
    assert problems == []
    assert usable[0].path == str(tmp_path / "rel.png")


# ------------------------------------------------------------------- output contract


def _check_training_batches(batches, batch_size):
    """Asserts the (images, (y_true_32, y_true_16, y_true_8, gt_boxes)) contract."""
    positives = 0
    for images, (y32, y16, y8, gt) in batches:
        assert images.shape == (batch_size, SIZE, SIZE, 3) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 255.0
        for target, stride in zip((y32, y16, y8), STRIDES):
            assert target.shape == (batch_size, SIZE // stride, SIZE // stride, 3, 5 + NUM_CLASSES)
            assert target.dtype == np.float32
            obj = target[..., 4]
            assert set(np.unique(obj)) <= {0.0, 1.0}
            # One-hot class exactly where objectness is set, nothing elsewhere.
            np.testing.assert_array_equal(target[..., 5:].sum(-1), obj)
            assert not target[obj == 0].any()
            xywh = target[obj == 1][:, :4]
            assert np.all((xywh >= 0) & (xywh <= 1)) and np.all(xywh[:, 2:] > 0)
            positives += int(obj.sum())
        assert gt.shape == (batch_size, MAX_GT_BOXES, 4) and gt.dtype == np.float32
        for row in range(batch_size):
            count = int(np.any(gt[row] != 0, axis=-1).sum())
            assert not gt[row, count:].any(), "gt_boxes must be zero after the boxes"
            n_pos = sum(int(t[row, ..., 4].sum()) for t in (y32, y16, y8))
            assert n_pos <= count
    assert positives > 0


def test_training_batches_follow_the_contract(image_set):
    dataset = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, batch_size=2, training=True)
    assert dataset.cardinality().numpy() == 2  # five images, remainder dropped
    batches = _batches(dataset)
    assert len(batches) == 2
    _check_training_batches(batches, 2)


def test_validation_letterboxes_and_keeps_every_image(image_set):
    dataset = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, batch_size=2, training=False)
    batches = _batches(dataset)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert steps_per_epoch(5, 2, drop_remainder=False) == 3
    images = np.concatenate([b[0] for b in batches])
    gts = np.concatenate([b[1][3] for b in batches])
    for ann, image, gt in zip(image_set, images, gts):
        with Image.open(ann.path) as im:
            width, height = im.size
        _, (new_h, new_w), (dy, dx) = letterbox_geometry((height, width), SIZE)
        canvas = np.ones((SIZE, SIZE), bool)
        canvas[dy : dy + new_h, dx : dx + new_w] = False
        assert np.all(image[canvas] == 128.0)
        xyxy = augment.letterbox_boxes(ann.boxes, (width, height), SIZE)
        expected = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1) / SIZE
        np.testing.assert_allclose(gt[: len(ann)], expected, rtol=1e-5)
        assert not gt[len(ann) :].any()


def test_validation_is_repeatable_and_cache_gives_the_same(image_set):
    plain = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, batch_size=3, training=False)
    cached = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, batch_size=3, training=False, cache=True)
    first = _batches(plain)
    _assert_same(first, _batches(plain))
    _assert_same(first, _batches(cached))


def test_training_without_augmentation_sees_the_validation_images_shuffled(image_set):
    plain = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, batch_size=len(image_set), training=False)
    unaugmented = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, batch_size=len(image_set), training=True,
                                seed=3, augment_images=False, mosaic=True)
    (expected_images, *_), = [(b[0],) for b in _batches(plain)]
    images = _batches(unaugmented)[0][0]
    # The same letterboxed images (no flip, colour change or placement), in another order.
    key = lambda batch: sorted(float(x) for x in batch.reshape(len(batch), -1).sum(axis=1))  # noqa: E731
    assert key(images) == key(expected_images)
    assert not np.array_equal(images, expected_images)


# ----------------------------------------------------------------------- determinism


def test_same_seed_same_batches_and_epochs_differ(image_set):
    def make(seed):
        return build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, 2, True, seed=seed)

    a, b = make(5), make(5)
    a1, a2 = _batches(a), _batches(a)
    b1, b2 = _batches(b), _batches(b)
    _assert_same(a1, b1)
    _assert_same(a2, b2)
    assert not np.array_equal(a1[0][0], a2[0][0]), "a new epoch should draw new augmentations"
    c1 = _batches(make(6))
    assert not np.array_equal(a1[0][0], c1[0][0]), "another seed should give other batches"


def test_mosaic_mixup_pipeline_is_deterministic_and_follows_the_contract(image_set):
    def make():
        return build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, 2, True, seed=9, mosaic=True, mixup=True)

    a = make()
    a1, a2 = _batches(a), _batches(a)
    _check_training_batches(a1, 2)
    _assert_same(a1, _batches(make()))
    assert not np.array_equal(a1[0][0], a2[0][0])
    # Mosaic/MixUp samples gather boxes from several images: more than any one holds.
    most_in_one_image = max(len(ann) for ann in image_set)
    gt_counts = [int(np.any(gt != 0, axis=-1).sum()) for _, y in a1 + a2 for gt in y[3]]
    assert max(gt_counts) > most_in_one_image


# ----------------------------------------------------------------- limits and errors


def test_too_many_boxes_are_truncated_in_gt_boxes_with_a_warning(tmp_path):
    path = tmp_path / "many.png"
    Image.new("RGB", (64, 64), (100, 100, 100)).save(path)
    boxes = [[4 * k, 4 * k, 4 * k + 10, 4 * k + 10] for k in range(6)]
    ann = _annotation(path, boxes, [0] * 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset([ann], 1, SIZE, ANCHORS, 1, training=False, max_boxes=4)
    assert any("more than 4 boxes" in str(w.message) for w in caught)
    _, (_, _, _, gt) = next(iter(dataset))
    assert gt.shape == (1, 4, 4)
    np.testing.assert_allclose(gt[0, :, :2].numpy() * SIZE, [[5 + 4 * k] * 2 for k in range(4)], rtol=1e-5)


def test_bad_arguments_raise_clear_errors(image_set):
    with pytest.raises(ValueError, match="no full batch of 8"):
        build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, 8, training=True)
    with pytest.raises(ValueError, match="training only"):
        build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, 2, training=False, mosaic=True)
    with pytest.raises(ValueError, match="class id 2 out of range for 2 classes"):
        build_dataset(image_set, 2, SIZE, ANCHORS, 2, training=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_dataset(image_set, NUM_CLASSES, 70, ANCHORS, 2, training=False)
    with pytest.raises(ValueError, match="no annotations"):
        build_dataset([], NUM_CLASSES, SIZE, ANCHORS, 2, training=False)


def test_element_spec_has_static_batch_and_target_shapes(image_set):
    """Training batches have fully known shapes: (x, y) with y a 4-tuple, as fit() takes."""
    dataset = build_dataset(image_set, NUM_CLASSES, SIZE, ANCHORS, 2, training=True, seed=1)
    x, y = next(iter(dataset))
    assert isinstance(y, tuple) and len(y) == 4
    spec = dataset.element_spec
    assert spec[0].shape.as_list() == [2, SIZE, SIZE, 3]
    expected = [[2, SIZE // s, SIZE // s, 3, 5 + NUM_CLASSES] for s in STRIDES] + [[2, MAX_GT_BOXES, 4]]
    assert [s.shape.as_list() for s in spec[1]] == expected
    assert all(s.dtype == tf.float32 for s in (spec[0], *spec[1]))
    assert tf.reduce_all(tf.math.is_finite(x))


def test_augmentation_strength_follows_jitter_and_scale_range(tmp_path):
    """With no aspect jitter and scale fixed at 1, the longer side always becomes the
    input size, so box sizes equal the letterbox's whatever the placement and flip."""
    pixels = np.full((50, 100, 3), 90, np.uint8)
    pixels[10:30, 20:60] = (230, 40, 30)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    annotations = [_annotation(path, [[20, 10, 60, 30]], [1])] * 4
    dataset = build_dataset(annotations, NUM_CLASSES, SIZE, ANCHORS, 4, training=True, seed=5,
                            jitter=0.0, scale_range=(1.0, 1.0))
    _, targets = next(iter(dataset))
    sizes = targets[3].numpy()[:, 0, 2:] * SIZE  # (w, h) in input pixels of each image's box
    np.testing.assert_allclose(sizes, np.tile([[40 * 0.64, 20 * 0.64]], (4, 1)), atol=1.0)
    # The default range rescales: sizes then differ between samples.
    default = build_dataset(annotations * 2, NUM_CLASSES, SIZE, ANCHORS, 8, training=True, seed=5)
    _, targets = next(iter(default))
    assert np.ptp(targets[3].numpy()[:, 0, 2]) > 2.0 / SIZE
