"""What a run shows of its data: the first training batches as the network receives them,
the first validation batch with its labels and with the predictions after each
evaluation, and the statistics of the training boxes.

* ``train_batch0.jpg`` ... ``train_batch2.jpg``: mosaics of the first augmented batches
  (flips, scale, Mosaic, MixUp), each box read back from the training targets
  (``targets_to_boxes``), not from the annotation files, so that a fault in the
  augmentation or the target assignment shows.
* ``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg``: the first validation images,
  letterboxed, with their targets, and with the model's detections above a confidence.
* ``labels.png``: objects per class, the box centres, box widths and heights letterboxed
  to the input with the anchors, and box sizes relative to the input.
"""

import math

import numpy as np

from utils.config import NUM_ANCHORS_PER_LEVEL
from utils.data.box_stats import FEW_OBJECTS
from utils.data.check import FINEST_STRIDE
from utils.eval.plots import IMAGE_DPI, draw_box, draw_label, image_figure, pyplot, save_figure

TRAIN_PREVIEWS = 3
TRAIN_PREVIEW_NAME = "train_batch{}.jpg"
VAL_LABELS_NAME = "val_batch0_labels.jpg"
VAL_PREDICTIONS_NAME = "val_batch0_pred.jpg"
LABELS_NAME = "labels.png"
# A preview shows at most this many images, and is at most this many pixels wide.
MAX_PREVIEW_IMAGES = 16
_MAX_MOSAIC_SIDE = 1280
_MIN_MOSAIC_SIDE = 640


def targets_to_boxes(y_true, input_size):
    """The boxes one image's training targets hold.

    Args:
        y_true: the per-level targets of one image, each (G, G, 3, 5 + C) with
            ``[cx, cy, w, h]`` relative to the input, objectness and the one-hot
            class (``utils.data.targets.encode_targets``).
        input_size: S.

    Returns:
        (boxes float64 (K, 4) xyxy input pixels, classes int64 (K,)): each box once,
        however many cells and anchors it was assigned to (the yolov5 assigner gives
        it several).
    """
    rows = []
    for level in y_true:
        level = np.asarray(level, np.float64).reshape(-1, NUM_ANCHORS_PER_LEVEL, level.shape[-1])
        assigned = level[level[..., 4] > 0]
        if len(assigned):
            rows.append(np.concatenate([assigned[:, :4], np.argmax(assigned[:, 5:], axis=1)[:, None]], axis=1))
    if not rows:
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    # The same box has the same float32 values wherever it was written.
    unique = np.unique(np.concatenate(rows), axis=0)
    xywh = unique[:, :4] * input_size
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2.0, xywh[:, :2] + xywh[:, 2:] / 2.0], axis=1)
    return boxes, unique[:, 4].astype(np.int64)


def mosaic_layout(count, size):
    """Grid of a preview: (columns, rows, tile side in pixels) for ``count`` images of side ``size``.

    Tiles keep the input's pixels, shrunk to fit ``_MAX_MOSAIC_SIDE`` or enlarged to
    fill ``_MIN_MOSAIC_SIDE`` (small inputs), so that labels stay readable.
    """
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tile = max(min(size, _MAX_MOSAIC_SIDE // columns), _MIN_MOSAIC_SIDE // columns)
    return columns, rows, tile


def draw_batch(images, boxes, classes, class_names, path, scores=None, title=""):
    """Saves a mosaic of images with their boxes and class names.

    Args:
        images: (B, S, S, 3) RGB 0-255 (float or uint8), the network's input.
        boxes: list of B float (K, 4) xyxy input pixels.
        classes: list of B int (K,).
        class_names: the C class names.
        path: the JPEG or PNG file.
        scores: list of B float (K,) to add to the labels, or None.
        title: a line above the mosaic.

    Returns:
        the path (Path).
    """
    from PIL import Image

    from utils.predict.visualize import class_color

    images = np.clip(np.asarray(images[:MAX_PREVIEW_IMAGES], np.float64), 0, 255).astype(np.uint8)
    count, size = len(images), images.shape[1]
    columns, rows, tile = mosaic_layout(count, size)
    canvas = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
    for k, image in enumerate(images):
        top, left = (k // columns) * tile, (k % columns) * tile
        canvas[top:top + tile, left:left + tile] = np.asarray(Image.fromarray(image).resize((tile, tile)))
    header = 0.3 if title else 0.0
    # Coordinates are pixel edges, as the boxes' are.
    fig, ax = image_figure(canvas, header=header)
    scale = tile / size
    fontsize = 6 if tile < 200 else 7
    for k in range(count):
        offset = np.array([(k % columns) * tile, (k // columns) * tile] * 2, np.float64)
        for i, (box, cls) in enumerate(zip(np.asarray(boxes[k]).reshape(-1, 4), np.asarray(classes[k]).reshape(-1))):
            color = np.asarray(class_color(int(cls))) / 255.0
            placed = np.asarray(box, np.float64) * scale + offset
            draw_box(ax, placed, color, 1.2)
            label = str(class_names[int(cls)]) + (f" {float(scores[k][i]):.2f}" if scores is not None else "")
            draw_label(ax, placed[0], placed[1], label, color, fontsize, dark_text=sum(color * (0.3, 0.59, 0.11)) > 0.6)
        draw_box(ax, offset + (0, 0, tile, tile), "white", 1.0)
    if title:
        fig.text(0.01, 1.0 - 0.5 * header / (canvas.shape[0] / IMAGE_DPI + header), title, fontsize=8, va="center")
    return save_figure(fig, path, dpi=IMAGE_DPI)


def batch_boxes(targets, input_size):
    """``targets_to_boxes`` of every image of a batch's targets; returns (list of boxes, list of classes)."""
    levels = [np.asarray(level) for level in targets[:3]]
    found = [targets_to_boxes([level[k] for level in levels], input_size) for k in range(len(levels[0]))]
    return [boxes for boxes, _ in found], [classes for _, classes in found]


def save_training_previews(dataset, class_names, input_size, folder, count=TRAIN_PREVIEWS):
    """Writes ``train_batch0.jpg`` ... from the first ``count`` batches of a training dataset.

    Args:
        dataset: the training ``tf.data.Dataset`` of ``utils.data.dataset.build_dataset``,
            built as the run's (same seed), so that its first batches are the run's.
        class_names: the C class names.
        input_size: S.
        folder: the run folder.
        count: how many batches.

    Returns:
        list of the written paths.
    """
    written = []
    for k, (images, targets) in enumerate(dataset.take(count)):
        boxes, classes = batch_boxes(targets, input_size)
        name = TRAIN_PREVIEW_NAME.format(k)
        title = f"{name}: training batch {k} as the network receives it, boxes read from the targets"
        written.append(draw_batch(images.numpy(), boxes, classes, class_names, folder / name, title=title))
    return written


class ValidationPreview:
    """The first validation batch: drawn with its targets once, and with the model's
    detections after each evaluation.

    Args:
        images: (B, S, S, 3) the letterboxed validation images, RGB 0-255.
        targets: the batch's targets (``build_dataset``'s second element).
        class_names: the C class names.
        folder: the run folder.
    """

    def __init__(self, images, targets, class_names, folder):
        self.images = np.clip(np.asarray(images), 0, 255).astype(np.uint8)[:MAX_PREVIEW_IMAGES]
        self.size = self.images.shape[1]
        self.boxes, self.classes = batch_boxes([np.asarray(t)[:MAX_PREVIEW_IMAGES] for t in targets[:3]], self.size)
        self.class_names = list(class_names)
        self.folder = folder

    @classmethod
    def from_dataset(cls, dataset, class_names, folder):
        """The preview of the first batch of a validation dataset (``build_dataset(..., training=False)``)."""
        images, targets = next(iter(dataset.take(1)))
        return cls(images.numpy(), [t.numpy() for t in targets], class_names, folder)

    def save_labels(self):
        """Writes ``val_batch0_labels.jpg``; returns its path."""
        return draw_batch(self.images, self.boxes, self.classes, self.class_names, self.folder / VAL_LABELS_NAME,
                          title=f"{VAL_LABELS_NAME}: the first validation images, letterboxed, with their targets")

    def prediction_hook(self, model):
        """An ``on_evaluated(epoch, evaluation)`` hook of ``MapEvaluator``: draws
        ``val_batch0_pred.jpg`` with ``model`` at the evaluation's best-F1 confidence."""
        from utils.config import EVAL_CONF, EVAL_NMS_IOU
        from utils.eval.confusion import CONFUSION_CONF
        from utils.eval.curves import best_f1
        from utils.predict.predictor import Predictor

        predictor = Predictor(model, input_size=self.size, conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)

        def after_evaluation(epoch, evaluation):
            best = best_f1(evaluation.result) if "curve_scores" in evaluation.result else None
            self.save_predictions(predictor, best["conf"] if best else CONFUSION_CONF, epoch)

        return after_evaluation

    def save_predictions(self, predictor, conf, epoch):
        """Writes ``val_batch0_pred.jpg``: the detections of ``predictor`` scoring above ``conf``.

        Args:
            predictor: a ``utils.predict.predictor.BasePredictor`` at the input size.
            conf: the lowest score drawn (excluded).
            epoch: the 1-based epoch, for the title.

        Returns:
            the path.
        """
        found = predictor.predict_batch(list(self.images))
        keep = [d.scores > conf for d in found]
        return draw_batch(
            self.images, [d.boxes[k] for d, k in zip(found, keep)], [d.classes[k] for d, k in zip(found, keep)],
            self.class_names, self.folder / VAL_PREDICTIONS_NAME,
            scores=[d.scores[k] for d, k in zip(found, keep)],
            title=f"{VAL_PREDICTIONS_NAME}: detections after epoch {epoch} scoring above {conf:.3f}",
        )


def write_run_previews(folder, stats, anchors, train_dataset, val_set, cfg):
    """Writes a run's previews before its first step.

    Args:
        folder: the run folder.
        stats: ``utils.data.check.BoxStats`` of the training boxes (``labels.png``).
        anchors: (9, 2) anchors in input pixels.
        train_dataset: the training dataset to draw the first batches of, or None
            (a resumed run keeps those of its start).
        val_set: the validation annotations.
        cfg: the run's TrainConfig (input size, assigner).

    Returns:
        the ValidationPreview of the first validation images (its labels drawn).
    """
    from utils.data.dataset import build_dataset

    plot_labels(stats, anchors, folder / LABELS_NAME)
    if train_dataset is not None:
        save_training_previews(train_dataset, stats.class_names, cfg.input_size, folder)
    first = val_set[:MAX_PREVIEW_IMAGES]
    dataset = build_dataset(first, len(stats.class_names), cfg.input_size, anchors, len(first), training=False,
                            assigner=cfg.assigner, anchor_t=cfg.anchor_t)
    preview = ValidationPreview.from_dataset(dataset, stats.class_names, folder)
    preview.save_labels()
    return preview


def plot_labels(stats, anchors, path):
    """Saves ``labels.png``: objects per class, box centres, box sizes with the anchors,
    and box sizes relative to the input.

    Args:
        stats: ``utils.data.check.BoxStats`` of the training boxes.
        anchors: (9, 2) anchors in input pixels, or None.
        path: the PNG file.

    Returns:
        the path (Path).
    """
    from utils.predict.visualize import class_color

    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 9))
    counts = stats.counts
    names = stats.class_names
    colors = [np.asarray(class_color(k)) / 255.0 for k in range(len(names))]

    ax = axes[0, 0]
    ax.bar(range(len(names)), counts, color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90 if len(names) > 6 else 0, fontsize=8)
    ax.set_ylabel("objects")
    few = [name for name, n in zip(names, counts) if n < FEW_OBJECTS]
    ax.set_title(f"{int(counts.sum())} objects in {stats.num_images} images "
                 f"({stats.images_without_objects} without objects)"
                 + (f"\nfewer than {FEW_OBJECTS} objects: {', '.join(few)}" if few else ""), fontsize=9)

    ax = axes[0, 1]
    if len(stats.centres):
        ax.hist2d(stats.centres[:, 0], stats.centres[:, 1], bins=50, range=((0, 1), (0, 1)), cmap="Blues")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("centre x (share of the image width)")
    ax.set_ylabel("centre y (share of the image height)")
    ax.set_title("box centres", fontsize=9)

    ax = axes[1, 0]
    if len(stats.input_wh):
        ax.scatter(stats.input_wh[:, 0], stats.input_wh[:, 1], s=6, alpha=0.5,
                   c=[colors[c] for c in stats.classes], label="boxes")
    if anchors is not None:
        anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
        ax.scatter(anchors[:, 0], anchors[:, 1], marker="x", s=80, c="black", label="anchors")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"width (input pixels at {stats.input_size})")
    ax.set_ylabel(f"height (input pixels at {stats.input_size})")
    ax.set_title("box sizes letterboxed to the input, and the anchors", fontsize=9)
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 1]
    if len(stats.input_wh):
        side = np.sqrt(np.prod(stats.input_wh, axis=1)) / stats.input_size
        ax.hist(side, bins=np.linspace(0, 1, 51), color="tab:blue")
        ax.axvline(FINEST_STRIDE / stats.input_size, color="tab:red", ls="--", lw=1.0,
                   label=f"one stride-{FINEST_STRIDE} cell")
        ax.legend(fontsize=8)
    ax.set_xlabel("box size relative to the input, sqrt(w h) / S")
    ax.set_ylabel("boxes")
    ax.set_title("box sizes relative to the input", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
