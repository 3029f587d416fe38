"""What each detection and each object of an image is at one confidence and IoU: found,
confused, missed or a false positive of some kind; and the confusion matrix they add up to.

``judge_image`` takes the detections scoring above ``conf`` and pairs them with the
objects, one detection per object:

1. pairs of the same class with IoU >= ``iou``, the highest IoU first: the detection
   is **correct**, the object found;
2. among what is left, pairs of different classes with IoU >= ``iou``, the highest IoU
   first: **wrong class** (the object counts as found as another class).

Objects left over are **missed**. A detection left over is, in this order: a
**duplicate** (IoU >= ``iou`` with an object of its class found by another one),
**wrong class** (IoU >= ``iou`` with an object of another class), **poor
localization** (IoU >= ``BACKGROUND_IOU`` with an object of its class), else a
**false positive** on the background. Difficult objects are neither found nor
missed, and a detection on one (paired with it, or IoU >= ``iou`` left over) is
ignored, as the VOC metric ignores it.

``confusion_matrix`` counts the pairs: rows are the true classes and a last
"background" row, columns the predicted classes and a last "background" column.
A correct or wrong-class pair counts at (true class, predicted class), a missed object
at (its class, background), and every detection left over at (background, its class).
Each object is thus in one cell of its row, each detection in one cell of its column.

Boxes are compared with the VOC metric's inclusive-pixel IoU.
"""

from dataclasses import dataclass

import numpy as np

from utils.config import EVAL_MATCH_IOU
from utils.eval.structures import detection_arrays, ground_truth_arrays, per_image_items

#: Default confidence of the confusion matrix and the error gallery (Ultralytics' 0.25).
CONFUSION_CONF = 0.25
#: Below this IoU with every object of its class a detection is on the background (TIDE's 0.1).
BACKGROUND_IOU = 0.1

CORRECT = "correct"
IGNORED = "ignored"
FALSE_POSITIVE = "false positive"
WRONG_CLASS = "wrong class"
POOR_LOCALIZATION = "poor localization"
DUPLICATE = "duplicate"
MISSED = "missed"
FOUND = "found"
#: The errors, in the order reports list them.
ERROR_KINDS = (FALSE_POSITIVE, WRONG_CLASS, POOR_LOCALIZATION, DUPLICATE, MISSED)


@dataclass
class ImageJudgment:
    """How one image's detections and objects were judged.

    Attributes:
        gt_boxes: float64 (N, 4) xyxy pixels of the image.
        gt_classes: int64 (N,).
        gt_kind: list of N of ``FOUND``, ``WRONG_CLASS``, ``MISSED``, ``IGNORED``.
        det_boxes: float64 (M, 4) xyxy pixels, the detections above the confidence,
            in descending score.
        det_classes: int64 (M,).
        det_scores: float64 (M,).
        det_kind: list of M of ``CORRECT``, ``IGNORED`` or an error of ``ERROR_KINDS``.
        det_object: int64 (M,) the object paired with (or, left over, overlapped
            most), -1 for none.
        det_iou: float64 (M,) IoU with that object (0 for none).
        det_paired: bool (M,) whether the detection is paired with ``det_object``
            (correct, or wrong class in step 2) rather than left over.
    """

    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    gt_kind: list
    det_boxes: np.ndarray
    det_classes: np.ndarray
    det_scores: np.ndarray
    det_kind: list
    det_object: np.ndarray
    det_iou: np.ndarray
    det_paired: np.ndarray

    def error_counts(self):
        """``{kind: count}`` of every kind of ``ERROR_KINDS``."""
        counts = dict.fromkeys(ERROR_KINDS, 0)
        for kind in self.det_kind:
            if kind in counts:
                counts[kind] += 1
        counts[MISSED] = self.gt_kind.count(MISSED)
        return counts

    @property
    def num_errors(self):
        """Detections that are errors plus missed objects."""
        return sum(self.error_counts().values())


def _greedy_pairs(iou, allowed, det_free, gt_free, iou_threshold):
    """Pairs (detection, object) among the free ones, highest IoU first; marks them taken."""
    rows, cols = np.nonzero(allowed & (iou >= iou_threshold) & det_free[:, None] & gt_free[None, :])
    # Highest IoU first; equal IoUs by detection (descending score), then object order.
    order = np.lexsort((cols, rows, -iou[rows, cols]))
    pairs = []
    for i, j in zip(rows[order], cols[order]):
        if det_free[i] and gt_free[j]:
            det_free[i] = gt_free[j] = False
            pairs.append((int(i), int(j)))
    return pairs


def judge_image(gt_boxes, gt_classes, gt_difficult, det_boxes, det_scores, det_classes, conf=CONFUSION_CONF,
                iou_threshold=EVAL_MATCH_IOU):
    """Judges the detections and objects of one image (see the module docstring).

    Args:
        gt_boxes: (N, 4) xyxy pixels of the image.
        gt_classes: int (N,).
        gt_difficult: bool (N,).
        det_boxes: (M, 4) xyxy pixels of the image.
        det_scores: (M,).
        det_classes: int (M,).
        conf: detections scoring above it are judged, the others dropped.
        iou_threshold: IoU a pair needs.

    Returns:
        ImageJudgment.
    """
    from utils.boxes import np_iou

    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
    gt_difficult = np.asarray(gt_difficult, bool).reshape(-1)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    order = np.argsort(-det_scores, kind="stable")
    order = order[det_scores[order] > conf]
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)[order]
    det_classes = np.asarray(det_classes, np.int64).reshape(-1)[order]
    det_scores = det_scores[order]
    m, n = len(det_classes), len(gt_classes)

    iou = np_iou(det_boxes[:, None, :], gt_boxes[None, :, :], inclusive=True) if m and n else np.zeros((m, n))
    same = det_classes[:, None] == gt_classes[None, :]
    det_free, gt_free = np.ones(m, bool), np.ones(n, bool)
    det_kind, det_object, det_iou = np.full(m, FALSE_POSITIVE, object), np.full(m, -1, np.int64), np.zeros(m)
    gt_kind = [MISSED] * n
    for allowed, kind, found in ((same, CORRECT, FOUND), (~same, WRONG_CLASS, WRONG_CLASS)):
        for i, j in _greedy_pairs(iou, allowed, det_free, gt_free, iou_threshold):
            det_object[i], det_iou[i] = j, iou[i, j]
            det_kind[i], gt_kind[j] = (IGNORED, IGNORED) if gt_difficult[j] else (kind, found)
    for j in np.flatnonzero(gt_free & gt_difficult):
        gt_kind[j] = IGNORED

    free = np.flatnonzero(det_free)
    if free.size and n:
        # Left over, in this order: on a difficult object, duplicate, wrong class, poor
        # localization; else a false positive. Each test names the object it is about.
        rows, same_rows = iou[free], same[free]
        own, other = np.where(same_rows, rows, -1.0), np.where(~same_rows, rows, -1.0)
        on_difficult = np.where(gt_difficult[None, :] & (rows >= iou_threshold), rows, -1.0)
        overlaps = np.stack([on_difficult, own, other, own])  # (4, free, N)
        floors = np.array([iou_threshold, iou_threshold, iou_threshold, BACKGROUND_IOU])[:, None]
        best = overlaps.argmax(axis=2)  # (4, free)
        passed = np.take_along_axis(overlaps, best[:, :, None], axis=2)[:, :, 0] >= floors
        first = np.where(passed.any(axis=0), passed.argmax(axis=0), len(floors))
        kinds = np.array([IGNORED, DUPLICATE, WRONG_CLASS, POOR_LOCALIZATION, FALSE_POSITIVE], object)
        det_kind[free] = kinds[first]
        hit = first < len(floors)
        objects = best[first[hit], np.flatnonzero(hit)]
        det_object[free[hit]] = objects
        det_iou[free[hit]] = iou[free[hit], objects]
    return ImageJudgment(gt_boxes, gt_classes, gt_kind, det_boxes, det_classes, det_scores, det_kind.tolist(),
                         det_object, det_iou, ~det_free)


def judge_images(ground_truth, detections, num_classes, conf=CONFUSION_CONF, iou_threshold=EVAL_MATCH_IOU):
    """``judge_image`` over the per-image structures of ``utils.eval.structures``.

    Args:
        ground_truth: per-image ground truth.
        detections: per-image detections; images without an entry have none.
        num_classes: C; class ids must lie in [0, C).
        conf: detections scoring above it are judged.
        iou_threshold: IoU a pair needs.

    Returns:
        ``{image_id: ImageJudgment}`` in the order of ``ground_truth``.
    """
    found = dict(per_image_items(detections, "detections"))
    judged = {}
    for image_id, entry in per_image_items(ground_truth, "ground_truth"):
        gt_boxes, gt_classes, difficult = ground_truth_arrays(entry, image_id, num_classes)
        det = found.get(image_id)
        if det is None:
            det_boxes, det_classes, det_scores = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
        else:
            det_boxes, det_classes, det_scores = detection_arrays(det, image_id, num_classes)
        judged[image_id] = judge_image(gt_boxes, gt_classes, difficult, det_boxes, det_scores, det_classes, conf,
                                       iou_threshold)
    return judged


def confusion_matrix(judgments, num_classes):
    """The confusion matrix of judged images (see the module docstring).

    Args:
        judgments: ``{image_id: ImageJudgment}`` (``judge_images``).
        num_classes: C.

    Returns:
        int64 (C + 1, C + 1): rows the true classes then background, columns the
        predicted classes then background.
    """
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for judged in judgments.values():
        missed = np.asarray(judged.gt_kind) == MISSED
        np.add.at(matrix, (judged.gt_classes[missed], background), 1)
        counted = np.asarray(judged.det_kind) != IGNORED
        paired = counted & judged.det_paired
        np.add.at(matrix, (judged.gt_classes[judged.det_object[paired]], judged.det_classes[paired]), 1)
        left = counted & ~judged.det_paired
        np.add.at(matrix, (background, judged.det_classes[left]), 1)
    return matrix


def normalize_rows(matrix):
    """Each row divided by its sum (rows summing to 0 stay 0): the share of each true class's objects."""
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
