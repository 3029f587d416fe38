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

from collections import Counter
from dataclasses import dataclass
from itertools import chain

import numpy as np

from utils.config import EVAL_MATCH_IOU
from utils.eval.structures import (
    ImageDetections,
    ImageGroundTruth,
    detection_arrays,
    ground_truth_arrays,
    per_image_items,
)

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
        found = Counter(self.det_kind)
        counts = {kind: found[kind] for kind in ERROR_KINDS}
        counts[MISSED] = self.gt_kind.count(MISSED)
        return counts

    @property
    def num_errors(self):
        """Detections that are errors plus missed objects."""
        return sum(self.error_counts().values())


#: What a detection and an object can be judged, indexed by the codes ``_judge`` works with.
_DET_KINDS = (CORRECT, IGNORED, FALSE_POSITIVE, WRONG_CLASS, POOR_LOCALIZATION, DUPLICATE)
_GT_KINDS = (FOUND, WRONG_CLASS, MISSED, IGNORED)
_DET_CODE = {kind: code for code, kind in enumerate(_DET_KINDS)}
_GT_CODE = {kind: code for code, kind in enumerate(_GT_KINDS)}
#: (detection, object) pairs whose IoU is computed at once: bounds the memory used.
_PAIR_BLOCK = 1 << 20


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
    gt = (np.asarray(gt_boxes, np.float64).reshape(-1, 4), np.asarray(gt_classes, np.int64).reshape(-1),
          np.asarray(gt_difficult, bool).reshape(-1))
    det = (np.asarray(det_boxes, np.float64).reshape(-1, 4), np.asarray(det_classes, np.int64).reshape(-1),
           np.asarray(det_scores, np.float64).reshape(-1))
    return _judge([None], [gt], [det], conf, iou_threshold)[None]


def judge_images(ground_truth, detections, num_classes, conf=CONFUSION_CONF, iou_threshold=EVAL_MATCH_IOU):
    """``judge_image`` over the per-image structures of ``utils.eval.structures``.

    All images are judged at once, as flat arrays: the result is the same as judging
    them one by one.

    Args:
        ground_truth: per-image ground truth.
        detections: per-image detections; images without an entry have none.
        num_classes: C; class ids must lie in [0, C).
        conf: detections scoring above it are judged.
        iou_threshold: IoU a pair needs.

    Returns:
        ``{image_id: ImageJudgment}`` in the order of ``ground_truth``.

    Raises:
        ValueError: an entry that ``utils.eval.structures`` rejects.
    """
    items = per_image_items(ground_truth, "ground_truth")
    found = dict(per_image_items(detections, "detections"))
    none = (np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    gts, dets = [], []
    try:
        for image_id, entry in items:
            gts.append(_checked_form(entry, ImageGroundTruth, "difficult", bool)
                       or ground_truth_arrays(entry, image_id, num_classes))
            det = found.get(image_id)
            dets.append(none if det is None else _checked_form(det, ImageDetections, "scores", np.float64)
                        or detection_arrays(det, image_id, num_classes))
        classes = np.concatenate([np.zeros(0, np.int64)] + [entry[1] for entry in gts + dets])
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"class id outside the {num_classes} class names")
    except ValueError:
        # The checks entry after entry, in order, raise naming the first image rejected.
        for image_id, entry in items:
            ground_truth_arrays(entry, image_id, num_classes)
            if found.get(image_id) is not None:
                detection_arrays(found[image_id], image_id, num_classes)
        raise
    return _judge([image_id for image_id, _ in items], gts, dets, conf, iou_threshold)


def _checked_form(entry, kind, third, third_dtype):
    """(boxes, classes, ``third``) of an entry of type ``kind`` whose arrays already have
    the form ``utils.eval.structures`` checks for (float64 (N, 4) xyxy, int64 (N,) and
    (N,) of ``third_dtype``), else None; so that the images that need no conversion are
    checked at once. Their class ids are left to check."""
    if type(entry) is not kind:
        return None
    boxes, classes, extra = entry.boxes, entry.classes, getattr(entry, third)
    if not all(type(array) is np.ndarray for array in (boxes, classes, extra)):
        return None
    if (boxes.dtype != np.float64 or boxes.ndim != 2 or boxes.shape[1] != 4 or classes.dtype != np.int64
            or extra.dtype != third_dtype or classes.shape != (len(boxes),) or extra.shape != (len(boxes),)):
        return None
    return boxes, classes, extra


def _concatenate(parts, shape, dtype):
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(shape, dtype)


def _judge(image_ids, gts, dets, conf, iou_threshold):
    """Judges images given as lists of (boxes, classes, difficult) and (boxes, classes, scores)
    (see the module docstring), all images at once.

    Returns:
        ``{image_id: ImageJudgment}`` in the order of ``image_ids``.
    """
    num_images = len(image_ids)
    gt_start = np.concatenate([[0], np.cumsum([len(classes) for _, classes, _ in gts], dtype=np.int64)])
    gt_boxes = _concatenate([boxes for boxes, _, _ in gts], (0, 4), np.float64)
    gt_classes = _concatenate([classes for _, classes, _ in gts], (0,), np.int64)
    gt_difficult = _concatenate([difficult for _, _, difficult in gts], (0,), bool)

    # The detections above conf, image after image, each image's in descending score
    # (stable: equal scores stay in the given order).
    det_image = np.repeat(np.arange(num_images), [len(classes) for _, classes, _ in dets])
    scores = _concatenate([scores for _, _, scores in dets], (0,), np.float64)
    kept = np.flatnonzero(scores > conf)
    rank = np.empty(len(kept), np.int64)
    rank[np.argsort(-scores[kept], kind="stable")] = np.arange(len(kept))
    order = kept[np.argsort(det_image[kept] * len(kept) + rank)]
    det_image, det_scores = det_image[order], scores[order]
    det_boxes = _concatenate([boxes for boxes, _, _ in dets], (0, 4), np.float64)[order]
    det_classes = _concatenate([classes for _, classes, _ in dets], (0,), np.int64)[order]
    num_dets = len(order)

    # Only the pairs that may count: a lower IoU pairs no detection and names no object.
    floor = min(iou_threshold, BACKGROUND_IOU)
    pair_det, pair_gt, pair_iou = _overlapping_pairs(det_image, det_boxes, gt_start, gt_boxes, floor)
    same = det_classes[pair_det] == gt_classes[pair_gt]
    matching = pair_iou >= iou_threshold

    det_free, gt_free = np.ones(num_dets, bool), np.ones(len(gt_classes), bool)
    det_kind = np.full(num_dets, _DET_CODE[FALSE_POSITIVE], np.int8)
    det_object, det_iou = np.full(num_dets, -1, np.int64), np.zeros(num_dets)
    gt_kind = np.full(len(gt_classes), _GT_CODE[MISSED], np.int8)
    for allowed, det_code, gt_code in ((same, _DET_CODE[CORRECT], _GT_CODE[FOUND]),
                                       (~same, _DET_CODE[WRONG_CLASS], _GT_CODE[WRONG_CLASS])):
        candidates = np.flatnonzero(allowed & matching)
        candidates = candidates[det_free[pair_det[candidates]] & gt_free[pair_gt[candidates]]]
        taken = candidates[_greedy(pair_det[candidates], pair_gt[candidates], pair_iou[candidates], det_free,
                                   gt_free)]
        i, j = pair_det[taken], pair_gt[taken]
        det_free[i], gt_free[j] = False, False
        det_object[i], det_iou[i] = j, pair_iou[taken]
        det_kind[i] = np.where(gt_difficult[j], _DET_CODE[IGNORED], det_code)
        gt_kind[j] = np.where(gt_difficult[j], _GT_CODE[IGNORED], gt_code)
    gt_kind[gt_free & gt_difficult] = _GT_CODE[IGNORED]

    # Left over, in this order: on a difficult object, duplicate, wrong class, poor
    # localization; else a false positive. Each test names the object it is about.
    left = det_free[pair_det]
    if left.any():
        d, g, v, s = pair_det[left], pair_gt[left], pair_iou[left], same[left]
        new = np.concatenate([[True], d[1:] != d[:-1]])
        starts, segment = np.flatnonzero(new), np.cumsum(new) - 1
        own = np.where(s, v, -1.0)
        tests = ((np.where(gt_difficult[g] & (v >= iou_threshold), v, -1.0), iou_threshold, IGNORED),
                 (own, iou_threshold, DUPLICATE), (np.where(~s, v, -1.0), iou_threshold, WRONG_CLASS),
                 (own, BACKGROUND_IOU, POOR_LOCALIZATION))
        undecided = np.ones(len(starts), bool)
        for values, test_floor, kind in tests:
            top, at = _segment_argmax(values, starts, segment)
            hit = undecided & (top >= test_floor)
            undecided &= ~hit
            rows = d[starts[hit]]
            det_kind[rows], det_object[rows], det_iou[rows] = _DET_CODE[kind], g[at[hit]], v[at[hit]]

    det_object = np.where(det_object >= 0, det_object - gt_start[det_image], -1)
    det_kinds = np.array(_DET_KINDS, object)[det_kind].tolist()
    gt_kinds = np.array(_GT_KINDS, object)[gt_kind].tolist()
    det_start = np.searchsorted(det_image, np.arange(num_images + 1)).tolist()
    gt_start = gt_start.tolist()
    judged = {}
    for k, image_id in enumerate(image_ids):
        a, b = det_start[k], det_start[k + 1]
        boxes, classes, _ = gts[k]
        judged[image_id] = ImageJudgment(boxes, classes, gt_kinds[gt_start[k]:gt_start[k + 1]], det_boxes[a:b],
                                         det_classes[a:b], det_scores[a:b], det_kinds[a:b], det_object[a:b],
                                         det_iou[a:b], ~det_free[a:b])
    return judged


def _overlapping_pairs(det_image, det_boxes, gt_start, gt_boxes, floor):
    """The (detection, object) pairs of the same image with IoU >= ``floor``.

    Returns:
        (detections int64 (P,), objects int64 (P,), IoU float64 (P,)), by detection
        then object.
    """
    from utils.boxes import np_iou

    per_det = np.diff(gt_start)[det_image]
    ends = np.cumsum(per_det)
    det_sides, gt_sides = np.ascontiguousarray(det_boxes.T), np.ascontiguousarray(gt_boxes.T)
    parts = []
    lo = 0
    while lo < len(per_det):
        base = int(ends[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(ends, base + _PAIR_BLOCK, side="right")), lo + 1)
        counts = per_det[lo:hi]
        d = np.repeat(np.arange(lo, hi), counts)
        g = np.arange(int(ends[hi - 1]) - base) + np.repeat(gt_start[det_image[lo:hi]] - (ends[lo:hi] - counts - base),
                                                           counts)
        if floor > 0:
            # A positive IoU needs boxes that share a pixel (inclusive pixels, as np_iou counts them).
            for low, high in ((0, 2), (1, 3)):
                shared = (np.minimum(det_sides[high][d], gt_sides[high][g])
                          - np.maximum(det_sides[low][d], gt_sides[low][g]) + 1.0 > 0)
                d, g = d[shared], g[shared]
        iou = np_iou(det_boxes[d], gt_boxes[g], inclusive=True)
        near = iou >= floor
        parts.append((d[near], g[near], iou[near]))
        lo = hi
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(column) for column in zip(*parts))


def _greedy(dets, gts, iou, det_free, gt_free):
    """Pairs (detection, object) among candidate pairs, highest IoU first, each detection
    and object at most once.

    Equal IoUs go by detection (descending score), then object order.

    Returns:
        int64 indices of the candidates taken.
    """
    order = np.lexsort((gts, dets, -iou))
    det_open, gt_open = bytearray(det_free.tobytes()), bytearray(gt_free.tobytes())
    taken = []
    for k, i, j in zip(order.tolist(), dets[order].tolist(), gts[order].tolist()):
        if det_open[i] and gt_open[j]:
            det_open[i] = gt_open[j] = 0
            taken.append(k)
    return np.array(taken, np.int64)


def _segment_argmax(values, starts, segment):
    """The maximum of each segment of ``values`` and the index of its first occurrence
    (``np.argmax`` of each segment).

    Args:
        values: float64 (P,), no NaN.
        starts: int (S,) first index of each segment; segments are contiguous and not empty.
        segment: int (P,) the segment of each value.

    Returns:
        (maxima float64 (S,), indices into ``values`` int64 (S,)).
    """
    top = np.maximum.reduceat(values, starts)
    hit = np.flatnonzero(values == top[segment])
    first = np.concatenate([[True], segment[hit][1:] != segment[hit][:-1]])
    return top, hit[first]


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
    judged = list(judgments.values())
    if not judged:
        return np.zeros((num_classes + 1, num_classes + 1), np.int64)
    gt_classes = np.concatenate([j.gt_classes for j in judged])
    missed = np.array(list(chain.from_iterable(j.gt_kind for j in judged)), object) == MISSED
    # Each image's objects after those of the images before it.
    offsets = np.cumsum([0] + [len(j.gt_classes) for j in judged[:-1]])
    det_object = np.concatenate([j.det_object + offset for j, offset in zip(judged, offsets.tolist())])
    det_classes = np.concatenate([j.det_classes for j in judged])
    paired = np.concatenate([j.det_paired for j in judged])
    counted = np.array(list(chain.from_iterable(j.det_kind for j in judged)), object) != IGNORED
    rows = np.concatenate([gt_classes[missed], gt_classes[det_object[counted & paired]],
                           np.full(np.count_nonzero(counted & ~paired), background)])
    cols = np.concatenate([np.full(np.count_nonzero(missed), background), det_classes[counted & paired],
                           det_classes[counted & ~paired]])
    size = num_classes + 1
    return np.bincount(rows * size + cols, minlength=size * size).reshape(size, size).astype(np.int64)


def normalize_rows(matrix):
    """Each row divided by its sum (rows summing to 0 stay 0): the share of each true class's objects."""
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
