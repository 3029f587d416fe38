"""Anchor boxes by k-means clustering of box shapes with the distance 1 - IoU.

Boxes are compared by shape only: both are centred at the origin, so the IoU of a
box (w, h) and a centre (cw, ch) is ``min(w, cw) * min(h, ch) / (w*h + cw*ch - inter)``.
Box sizes come from an annotation file (utils.data.annotation format) and are scaled to
the network input with the letterbox scale ``min(S / image_w, S / image_h)``.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.boxes import np_shape_iou
from utils.data.annotation import read_annotation_file
from utils.data.box_stats import box_stats
from utils.image import image_size

logger = logging.getLogger(__name__)

INIT_METHODS = ("kmeans++", "random")


def shape_iou(wh, centres):
    """IoU of every box shape with every centre, both centred at the origin
    (``utils.boxes.np_shape_iou`` over all pairs).

    Args:
        wh: (N, 2) box width, height (positive).
        centres: (K, 2) width, height (positive).

    Returns:
        float64 (N, K) IoU of every box with every centre.
    """
    return np_shape_iou(np.asarray(wh, np.float64)[:, None, :], np.asarray(centres, np.float64)[None, :, :])


def mean_best_iou(wh, anchors):
    """Mean over the boxes of the IoU with their best-matching anchor.

    Args:
        wh: (N, 2) box width, height.
        anchors: (K, 2) anchor width, height.

    Returns:
        float in [0, 1].
    """
    return float(shape_iou(wh, anchors).max(axis=1).mean())


@dataclass
class AnchorFit:
    """How well anchors fit a set of boxes (YOLOv5's AutoAnchor figures).

    Attributes:
        best_possible_recall: fraction of the boxes with at least one anchor whose
            width and height are both within a factor ``anchor_t`` of the box's: the
            boxes the yolov5 assigner can match by shape.
        anchors_per_box: mean number of such anchors per box.
        mean_best_iou: mean shape IoU of each box with its best anchor.
        boxes: number of boxes.
        anchor_t: the ratio used.
    """

    best_possible_recall: float
    anchors_per_box: float
    mean_best_iou: float
    boxes: int
    anchor_t: float


def anchor_fit(wh, anchors, anchor_t=4.0):
    """Measures how well ``anchors`` fit boxes of sizes ``wh``.

    Args:
        wh: (N, 2) box width, height in input pixels (N may be 0).
        anchors: (K, 2) anchor width, height in the same pixels.
        anchor_t: largest width or height ratio, either way, of a match.

    Returns:
        AnchorFit (recall 1 and IoU 1 for no boxes).
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    if not len(wh):
        return AnchorFit(1.0, 0.0, 1.0, 0, float(anchor_t))
    ratio = wh[:, None, :] / anchors[None, :, :]
    worst = np.maximum(ratio, 1.0 / ratio).max(axis=-1)  # (N, K)
    matched = worst < anchor_t
    return AnchorFit(
        best_possible_recall=float(matched.any(axis=1).mean()),
        anchors_per_box=float(matched.sum(axis=1).mean()),
        mean_best_iou=mean_best_iou(wh, anchors),
        boxes=len(wh),
        anchor_t=float(anchor_t),
    )


@dataclass
class KMeansResult:
    """The best clustering found.

    Attributes:
        anchors: float64 (K, 2) centre width, height, sorted by area (small first).
        mean_iou: mean IoU of every box with its best anchor.
        assignments: int (N,) index into ``anchors`` of each box's cluster.
        iterations: iterations run by the best restart.
    """

    anchors: np.ndarray
    mean_iou: float
    assignments: np.ndarray
    iterations: int


def _init_centres(wh, k, rng, init):
    n = len(wh)
    if init == "random":
        return wh[rng.choice(n, size=k, replace=False)].copy()
    # k-means++: each new centre is drawn with probability proportional to the squared
    # distance (1 - IoU) of a box to its nearest centre chosen so far.
    centres = [wh[rng.integers(n)]]
    nearest = 1.0 - shape_iou(wh, np.asarray(centres)).max(axis=1)
    for _ in range(1, k):
        weights = nearest**2
        total = weights.sum()
        index = rng.choice(n, p=weights / total) if total > 0 else rng.integers(n)
        centres.append(wh[index])
        nearest = np.minimum(nearest, 1.0 - shape_iou(wh, wh[index : index + 1])[:, 0])
    return np.asarray(centres, np.float64)


def _run_once(wh, k, iterations, rng, init):
    centres = _init_centres(wh, k, rng, init)
    assignments = np.full(len(wh), -1)
    steps = 0
    for steps in range(1, iterations + 1):
        iou = shape_iou(wh, centres)
        new = iou.argmax(axis=1)
        if np.array_equal(new, assignments):
            break
        assignments = new
        counts = np.bincount(assignments, minlength=k)
        for j in np.flatnonzero(counts):
            # The median is less pulled by a few very large or thin boxes than the mean.
            centres[j] = np.median(wh[assignments == j], axis=0)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            # Reseed empty clusters on the boxes that the current centres fit worst.
            worst = np.argsort(iou.max(axis=1), kind="stable")[: len(empty)]
            centres[empty] = wh[worst]
    iou = shape_iou(wh, centres)
    assignments = iou.argmax(axis=1)
    return centres, float(iou.max(axis=1).mean()), assignments, steps


def kmeans_anchors(wh, k=9, iterations=300, restarts=5, seed=0, init="kmeans++"):
    """Clusters box shapes with k-means under the distance 1 - IoU.

    Each restart starts from new centres (k-means++ or k distinct random boxes), then
    alternates assigning every box to the centre of highest IoU and moving each centre
    to the median width and height of its boxes, until the assignment stops changing
    or ``iterations`` is reached. The restart with the highest mean IoU is kept.

    Args:
        wh: (N, 2) box width, height in pixels (positive).
        k: number of clusters.
        iterations: most assignment/update rounds per restart.
        restarts: number of independent starts.
        seed: random seed; the same inputs and seed give the same result.
        init: "kmeans++" or "random".

    Returns:
        KMeansResult with anchors (k, 2) sorted by area.

    Raises:
        ValueError: wh is not (N, 2) positive, fewer boxes than k, or a bad argument.
    """
    wh = np.asarray(wh, np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"box sizes must have shape (N, 2), got {wh.shape}.")
    if k < 1:
        raise ValueError(f"number of clusters must be at least 1, got {k}.")
    if len(wh) < k:
        raise ValueError(f"{len(wh)} boxes cannot make {k} clusters; use more boxes or fewer clusters.")
    if np.any(wh <= 0) or not np.all(np.isfinite(wh)):
        raise ValueError("box widths and heights must be positive and finite.")
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}.")
    if iterations < 1 or restarts < 1:
        raise ValueError(f"iterations and restarts must be at least 1, got {iterations} and {restarts}.")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        centres, score, assignments, steps = _run_once(wh, k, iterations, rng, init)
        if best is None or score > best[1]:
            best = (centres, score, assignments, steps)
    centres, score, assignments, steps = best
    order = np.argsort(centres.prod(axis=1), kind="stable")
    remap = np.empty(k, int)
    remap[order] = np.arange(k)
    return KMeansResult(centres[order], score, remap[assignments], steps)


def round_anchors(anchors):
    """Rounds anchors to whole pixels (at least 1), as the anchors file stores them.

    Args:
        anchors: (K, 2) width, height.

    Returns:
        float64 (K, 2), sorted by area.
    """
    rounded = np.maximum(np.round(np.asarray(anchors, np.float64)), 1.0)
    return rounded[np.argsort(rounded.prod(axis=1), kind="stable")]


def letterbox_box_sizes(annotations, input_size, size_of=image_size):
    """Box widths and heights of annotations, scaled into a square letterboxed input.

    Args:
        annotations: list of utils.data.annotation.Annotation (boxes xyxy pixels).
        input_size: side S of the square network input.
        size_of: function path -> (width, height) raising OSError when unreadable
            (the scale is the same for the stored and the displayed orientation).

    Returns:
        (wh, problems): float64 (N, 2) width, height in input pixels, scaled by
        ``min(S / image_w, S / image_h)``; list of str, one per image skipped.
    """
    if input_size <= 0:
        raise ValueError(f"input size must be positive, got {input_size}.")
    stats = box_stats(annotations, [], input_size, size_of)
    return stats.input_wh, stats.problems


def load_box_sizes(annotation_path, input_size, split="train", images=None):
    """Reads a dataset and returns its box sizes letterboxed to the input.

    Image paths are opened as written (relative paths from the current folder); only
    the image headers are read.

    Args:
        annotation_path: an annotation file (utils.data.annotation format, every class
            id accepted), or any other dataset ``utils.data.sources`` reads (COCO JSON,
            YOLO data YAML or folder, VOC folder).
        input_size: side S of the square network input.
        split: the split of a YOLO data YAML or VOC folder.
        images: folder of a COCO file's images when its file names are relative.

    Returns:
        (wh, problems): float64 (N, 2) width, height in input pixels; list of str for
        every line, box or image skipped.

    Raises:
        FileNotFoundError: the dataset does not exist.
        utils.data.report.DatasetError: the dataset cannot be read.
    """
    from utils.data.sources import detect_format, read_dataset

    if detect_format(annotation_path) == "lines":
        annotations, problems = read_annotation_file(Path(annotation_path))
    else:
        source = read_dataset(annotation_path, split=split, images=images)
        annotations, problems = source.annotations, source.problems
    wh, image_problems = letterbox_box_sizes(annotations, input_size)
    return wh, problems + image_problems
