"""The pictures a run draws of its data: training batches with the boxes read back from
the targets, the validation batch, and labels.png."""

import functools

import numpy as np
import pytest
from PIL import Image

from utils.config import DEFAULT_ANCHORS
from utils.data import augment
from utils.data.annotation import Annotation
from utils.data.dataset import build_dataset
from utils.model_data import load_anchors
from utils.train.previews import (
    TRAIN_PREVIEW_NAME,
    ValidationPreview,
    batch_boxes,
    draw_batch,
    mosaic_layout,
    plot_labels,
    save_training_previews,
)

SIZE = 64
NAMES = ["circle", "square"]
# A white rectangle on black, on the left of the image: class 1.
BOX = [4, 8, 20, 40]
FLIPPED = [SIZE - 20, 8, SIZE - 4, 40]


@pytest.fixture()
def one_image(tmp_path):
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[BOX[1]:BOX[3], BOX[0]:BOX[2]] = 255
    path = tmp_path / "one.png"
    Image.fromarray(pixels).save(path)
    return Annotation(str(path), [BOX], [1])


def _bright_box(image):
    """xyxy pixel edges of the bright pixels of an (S, S, 3) image."""
    ys, xs = np.nonzero(np.asarray(image).mean(axis=-1) > 100)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_training_preview_shows_the_boxes_where_a_forced_flip_put_them(one_image, tmp_path, monkeypatch):
    # Scale 1 and no jitter keep the image in place; the flip is forced.
    monkeypatch.setattr(augment, "random_place", functools.partial(augment.random_place, flip_prob=1.0))
    dataset = build_dataset([one_image], len(NAMES), SIZE, load_anchors(DEFAULT_ANCHORS), 1, training=True,
                            seed=0, jitter=0.0, scale_range=(1.0, 1.0))
    images, targets = next(iter(dataset))
    boxes, classes = batch_boxes(targets, SIZE)
    assert classes[0].tolist() == [1]
    np.testing.assert_allclose(boxes[0], [FLIPPED], atol=1e-3)
    # The box read from the targets is where the rectangle's pixels went.
    np.testing.assert_allclose(_bright_box(images[0].numpy()), FLIPPED, atol=1)

    written = save_training_previews(dataset, NAMES, SIZE, tmp_path, count=1)
    assert [p.name for p in written] == [TRAIN_PREVIEW_NAME.format(0)]
    assert written[0].read_bytes()[:2] == b"\xff\xd8"

    # Drawn as PNG to check the pixels: the box outline runs along the flipped
    # rectangle's left edge, and nothing is drawn at the unflipped one.
    from utils.predict.visualize import class_color

    drawn = np.asarray(Image.open(draw_batch(images.numpy(), boxes, classes, NAMES, tmp_path / "b.png")))[..., :3]
    tile = mosaic_layout(1, SIZE)[2]
    scale = tile / SIZE  # one tile, enlarged; no title: the mosaic fills the picture
    assert drawn.shape[:2] == (tile, tile)
    color = np.asarray(class_color(1), np.float64)
    rows = slice(int(20 * scale), int(36 * scale))

    def distance(column):
        column = int(round(column * scale))
        return np.abs(drawn[rows, column - 2:column + 3].astype(np.float64) - color).sum(axis=-1).min()

    assert distance(FLIPPED[0]) < 60
    assert distance(BOX[0]) > 200


def test_validation_preview_draws_the_letterboxed_targets_and_predictions(one_image, tmp_path):
    dataset = build_dataset([one_image, one_image], len(NAMES), SIZE, load_anchors(DEFAULT_ANCHORS), 2,
                            training=False)
    preview = ValidationPreview.from_dataset(dataset, NAMES, tmp_path)
    np.testing.assert_allclose(preview.boxes[0], [BOX], atol=1e-3)
    assert preview.save_labels().is_file()

    class Fixed:
        """A predictor finding the rectangle at two scores."""

        def predict_batch(self, images):
            from types import SimpleNamespace

            return [SimpleNamespace(boxes=np.array([BOX, BOX], np.float32), scores=np.array([0.9, 0.2]),
                                    classes=np.array([1, 0])) for _ in images]

    path = preview.save_predictions(Fixed(), 0.5, epoch=3)
    assert path.name == "val_batch0_pred.jpg" and path.stat().st_size > 1000


def test_labels_png_from_box_statistics(one_image, tmp_path):
    from utils.data.box_stats import box_stats, format_box_stats

    empty = Annotation(one_image.path)
    stats = box_stats([one_image, one_image, empty], NAMES, SIZE)
    assert stats.counts.tolist() == [0, 2] and stats.images_without_objects == 1
    np.testing.assert_allclose(stats.input_wh, [[16, 32], [16, 32]])
    np.testing.assert_allclose(stats.centres[0], [12 / SIZE, 24 / SIZE])
    lines = format_box_stats(stats)
    assert "images without objects: 1" in lines[0]
    assert lines[1] == "classes without objects: circle"
    assert lines[2] == "classes with fewer than 10 objects: square (2)"
    path = plot_labels(stats, load_anchors(DEFAULT_ANCHORS) * SIZE / 416, tmp_path / "labels.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
