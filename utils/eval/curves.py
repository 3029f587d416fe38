"""The curves of a VOC evaluation: each class's precision envelope and their mean, and
precision, recall and F1 against the confidence threshold with the confidence of best F1.

They are read from the ``curves`` and ``curve_scores`` of an
``utils.eval.voc_metric.evaluate_voc`` result: one point per non-ignored detection
of a class, in descending score. A threshold ``t`` keeps the detections scoring above
it (``score > t``), as the predictors filter, so the best-F1 confidence given to
``predict.py --conf`` keeps exactly the detections it was measured on.

F1 at a threshold is the mean over the classes with ground truth of each class's F1
(as mAP is a mean over classes); precision and recall likewise.
"""

from dataclasses import dataclass

import numpy as np

#: Thresholds the confidence curves are drawn at.
CURVE_THRESHOLDS = np.linspace(0.0, 1.0, 1001)


def pr_envelope(recall, precision):
    """The step curve whose area is the all-point AP of one class.

    Args:
        recall: (K,) recall after each detection, in descending-score order.
        precision: (K,) precision after each detection, same order.

    Returns:
        (r, p): float64 (M,) recall breakpoints, increasing from 0 to 1, and the
        precision envelope on each step: ``p[j]`` holds on ``(r[j-1], r[j]]`` (and
        ``p[0]`` at recall 0), so the area is ``sum((r[1:] - r[:-1]) * p[1:])``; draw
        it with ``drawstyle="steps-pre"``. An empty curve is 0 everywhere.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if recall.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 0.0])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return np.concatenate([[0.0], mrec[steps]]), np.concatenate([[envelope[steps[0]]], envelope[steps]])


def step_area(r, p):
    """Area under a step curve of ``pr_envelope``."""
    return float(np.sum(np.diff(r) * np.asarray(p)[1:]))


def mean_envelope(envelopes):
    """The mean of several step curves of ``pr_envelope``, itself such a step curve.

    Its breakpoints are those of all the curves, so its area is the mean of their
    areas: the mean envelope of the classes with ground truth has the mAP as area.

    Args:
        envelopes: list of (r, p) pairs.

    Returns:
        (r, p) as ``pr_envelope`` returns them; (None, None) for an empty list.
    """
    if not envelopes:
        return None, None
    r = np.unique(np.concatenate([r for r, _ in envelopes]))
    values = [p[np.minimum(np.searchsorted(rc, r, side="left"), len(rc) - 1)] for rc, p in envelopes]
    return r, np.mean(values, axis=0)


@dataclass
class ConfidenceCurves:
    """Precision, recall and F1 of each class against the confidence threshold.

    Attributes:
        thresholds: float64 (T,) thresholds, increasing; a detection counts when its
            score is above the threshold.
        names: the C' class names with ground truth, the rows below.
        precision: float64 (C', T); 1 where a class keeps no detection (no false positive).
        recall: float64 (C', T).
        f1: float64 (C', T).
    """

    thresholds: np.ndarray
    names: list
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


def _class_points(result, name, thresholds):
    """(precision (T,), recall (T,), f1 (T,)) of one class at each threshold."""
    recall, precision = result["curves"][name]
    scores = np.asarray(result["curve_scores"][name])
    # Detections scoring above t: the scores are in descending order.
    kept = np.searchsorted(-scores, -thresholds, side="left")
    # The values of each number of detections kept, then those of each threshold.
    counts = np.arange(scores.size + 1)
    if scores.size:
        last = np.maximum(counts - 1, 0)
        p = np.where(counts > 0, precision[last], 1.0)
        r = np.where(counts > 0, recall[last], 0.0)
    else:
        p, r = np.ones(1), np.zeros(1)
    total = p + r
    f1 = np.divide(2.0 * p * r, total, out=np.zeros_like(total), where=total > 0)
    return p[kept], r[kept], f1[kept]


def _names_with_ground_truth(result):
    return [c["name"] for c in result["classes"] if c["num_gt"] > 0]


def confidence_curves(result, thresholds=CURVE_THRESHOLDS):
    """Precision, recall and F1 of each class with ground truth at each threshold.

    Args:
        result: dict of ``utils.eval.voc_metric.evaluate_voc``.
        thresholds: (T,) increasing thresholds.

    Returns:
        ConfidenceCurves.
    """
    thresholds = np.asarray(thresholds, np.float64)
    names = _names_with_ground_truth(result)
    rows = [_class_points(result, name, thresholds) for name in names]
    if not rows:
        empty = np.zeros((0, thresholds.size))
        return ConfidenceCurves(thresholds, names, empty, empty, empty)
    precision, recall, f1 = (np.stack(part) for part in zip(*rows))
    return ConfidenceCurves(thresholds, names, precision, recall, f1)


def best_f1(result):
    """The confidence threshold of best mean F1, searched over every score that changes it.

    The candidates are 0 and the score of every point on the classes' curves: between
    two of them no class keeps another detection, so F1 is constant there, and the
    candidate at the low end of the best such interval is returned (among equal best
    F1s, the lowest).

    Args:
        result: dict of ``utils.eval.voc_metric.evaluate_voc``.

    Returns:
        dict with ``conf`` (keep scores above it), ``f1``, ``precision`` and
        ``recall`` (means over the classes with ground truth at that threshold), or
        None when no class has ground truth.
    """
    names = _names_with_ground_truth(result)
    if not names:
        return None
    candidates = np.unique(np.concatenate([[0.0], *(result["curve_scores"][name] for name in names)]))
    # Summed class by class: a (classes x candidates) array may not fit in memory.
    sums = np.zeros((3, candidates.size))
    for name in names:
        for total, values in zip(sums, _class_points(result, name, candidates)):
            total += values
    precision, recall, f1 = sums / len(names)
    best = int(np.argmax(f1))
    return {
        "conf": float(candidates[best]),
        "f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
    }
