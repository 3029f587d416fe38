"""The VOC detection metric: average precision per class, mAP, and precision, recall
and F1 at a score threshold, matched as the VOC devkit matches; and the same AP for
small, medium and large objects (COCO's area ranges).

The inputs are the per-image structures of ``utils.eval.structures``. Boxes are
compared with the devkit's inclusive-pixel IoU (``utils.boxes.np_iou`` with
``inclusive=True``).
"""

import math

import numpy as np

from utils.config import EVAL_MATCH_IOU, EVAL_SCORE_THRESHOLD
from utils.eval.structures import detection_arrays, ground_truth_arrays, per_image_items

# Upper bound on the (detections x ground truth) IoU block computed at once.
_IOU_BLOCK = 2_000_000
#: COCO's object sizes: box area in pixels of the original image, [low, high).
AREA_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, math.inf)}


def average_precision(recall, precision, use_07_metric=False):
    """Area under a precision-recall curve, VOC style.

    Args:
        recall: (K,) recall after each detection, in descending-score order.
        precision: (K,) precision after each detection, same order.
        use_07_metric: True for VOC2007's 11-point method (mean of the highest
            precision at recall >= 0, 0.1, ..., 1, compared with a 1e-12 tolerance so
            that a recall of exactly 0.3 counts at the 0.3 step); False for the
            all-point method (area under the precision envelope, VOC2010+).

    Returns:
        AP as a float in [0, 1]; 0.0 for an empty curve.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(
            f"recall and precision must be 1-D of equal length, got shapes {recall.shape} and {precision.shape}"
        )
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        # Highest precision at recall >= t: a suffix maximum looked up by position.
        suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
        thresholds = np.linspace(0.0, 1.0, 11)
        # recall is non-decreasing, so the first index with recall >= t is a searchsorted.
        first = np.searchsorted(recall, thresholds - 1e-12, side="left")
        values = np.where(first < recall.size, suffix_max[np.minimum(first, recall.size - 1)], 0.0)
        return float(values.mean())
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * envelope[steps + 1]))


def evaluate_voc(
    ground_truth,
    detections,
    class_names,
    iou_threshold=EVAL_MATCH_IOU,
    score_threshold=EVAL_SCORE_THRESHOLD,
    use_07_metric=False,
):
    """VOC mean average precision, with precision, recall and F1 at a score threshold.

    Per class, detections are taken in descending score (stable for ties); each is
    compared with the ground truth of its class in the same image that it overlaps
    most (``np_iou`` with inclusive pixels). IoU >= ``iou_threshold`` with an
    unmatched object: true positive; with an already-matched object, or IoU below the
    threshold: false positive; with a difficult object: ignored. Difficult objects do
    not count in recall.

    Args:
        ground_truth: per-image ground truth (see ``utils.eval.structures``).
        detections: per-image detections (see ``utils.eval.structures``). Every image id
            must also be in ``ground_truth``.
        class_names: list of class names; class ids index it.
        iou_threshold: minimum IoU for a match.
        score_threshold: score at which precision, recall and F1 are reported.
        use_07_metric: True for the VOC2007 11-point AP, False for all-point AP.

    Returns:
        dict with
          ``metric`` ("voc07" or "voc"), ``iou_threshold``, ``score_threshold``,
          ``map`` (mean AP over the classes that have ground truth; NaN if none has),
          ``classes``: list, in ``class_names`` order, of dicts with ``name``, ``ap``
          (NaN without ground truth), ``num_gt`` (non-difficult objects),
          ``num_difficult``, ``num_detections``, and at ``score_threshold``: ``tp``,
          ``fp``, ``precision``, ``recall``, ``f1``;
          ``totals``: ``num_gt``, ``num_detections``, ``tp``, ``fp``, ``precision``,
          ``recall``, ``f1`` summed over the classes with ground truth;
          ``classes_without_ground_truth``: list of names left out of ``map``;
          ``num_images``;
          ``sizes``: for each name of ``AREA_RANGES``, a dict with ``range`` ([low,
          high): box areas in pixels from low up to high, None for no bound),
          ``map``, ``num_gt`` and ``ap`` (list in ``class_names`` order): the AP
          counting only objects of that size, as COCO's ``areaRng`` does (objects of
          other sizes are ignored like difficult ones, and so are the detections
          matched to them and the unmatched detections of other sizes);
          ``curves``: ``{name: (recall (K,), precision (K,))}`` float64 arrays, one
          point per non-ignored detection in descending-score order, and
          ``curve_scores``: ``{name: scores (K,)}``, the score of each point (neither
          is JSON; see ``utils.eval.tables.json_ready``).

    Raises:
        ValueError: a class id outside ``class_names``, inconsistent array shapes, or
            detections for an image that has no ground-truth entry.
    """
    class_names = list(class_names)
    num_classes = len(class_names)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    gt, det = _flatten(ground_truth, detections, num_classes)

    per_class, curves, curve_scores = [], {}, {}
    sizes = {size: {"range": [lo, None if math.isinf(hi) else hi], "ap": [], "num_gt": 0}
             for size, (lo, hi) in AREA_RANGES.items()}
    for cls, name in enumerate(class_names):
        match = _match_class(gt, det, cls)
        stats, rec, prec, scores = _score_class(match, iou_threshold, score_threshold, use_07_metric)
        per_class.append({"name": name, **stats})
        curves[name] = (rec, prec)
        curve_scores[name] = scores
        for size, area_range in AREA_RANGES.items():
            sized = _score_class(match, iou_threshold, score_threshold, use_07_metric, area_range)[0]
            sizes[size]["ap"].append(sized["ap"])
            sizes[size]["num_gt"] += sized["num_gt"]
    for entry in sizes.values():
        with_objects = [ap for ap in entry["ap"] if not math.isnan(ap)]
        entry["map"] = float(np.mean(with_objects)) if with_objects else math.nan

    with_gt = [c for c in per_class if c["num_gt"] > 0]
    tp = sum(c["tp"] for c in with_gt)
    fp = sum(c["fp"] for c in with_gt)
    num_gt = sum(c["num_gt"] for c in with_gt)
    precision, recall, f1 = _prf(tp, fp, num_gt)
    return {
        "metric": "voc07" if use_07_metric else "voc",
        "iou_threshold": float(iou_threshold),
        "score_threshold": float(score_threshold),
        "map": float(np.mean([c["ap"] for c in with_gt])) if with_gt else math.nan,
        "classes": per_class,
        "totals": {
            "num_gt": num_gt,
            "num_detections": sum(c["num_detections"] for c in with_gt),
            "tp": tp,
            "fp": fp,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        },
        "classes_without_ground_truth": [c["name"] for c in per_class if c["num_gt"] == 0],
        "num_images": gt["num_images"],
        "sizes": sizes,
        "curves": curves,
        "curve_scores": curve_scores,
    }


def _prf(tp, fp, num_gt):
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / num_gt if num_gt else math.nan
    if num_gt and precision + recall > 0:
        f1 = 2.0 * precision * recall / (precision + recall)
    else:
        f1 = 0.0 if num_gt else math.nan
    return float(precision), float(recall), float(f1)


def _box_areas(boxes):
    """Areas of (N, 4) xyxy pixel boxes, as COCO measures them (no inclusive pixel)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)


def _match_class(gt, det, cls):
    """Each detection of one class with the ground truth of its class it overlaps most.

    Returns:
        dict with the class's ground truth (``g_box``, ``g_diff``, grouped by image),
        its detections in descending score (``d_box``, ``d_score``), and per detection
        ``best_iou`` (-1 when its image has no object of the class) and ``best_gt``
        (index into the class's ground truth).
    """
    # utils.boxes loads Keras; imported here, the metric modules stay light for the
    # callers that only read or write files.
    from utils.boxes import np_iou

    g_sel = np.nonzero(gt["classes"] == cls)[0]
    # Ground truth of this class grouped by image (stable, so the file order is kept
    # within an image and argmax ties go to the first object, as in the devkit).
    g_sel = g_sel[np.argsort(gt["image"][g_sel], kind="stable")]
    g_img, g_box, g_diff = gt["image"][g_sel], gt["boxes"][g_sel], gt["difficult"][g_sel]

    d_sel = np.nonzero(det["classes"] == cls)[0]
    d_sel = d_sel[np.argsort(-det["scores"][d_sel], kind="stable")]
    d_img, d_box, d_score = det["image"][d_sel], det["boxes"][d_sel], det["scores"][d_sel]
    num_det = d_sel.size

    best_iou = np.full(num_det, -1.0)
    best_gt = np.zeros(num_det, np.int64)
    if num_det and g_sel.size:
        start = np.searchsorted(g_img, d_img, side="left")
        count = np.searchsorted(g_img, d_img, side="right") - start
        width = int(count.max())
        if width:
            chunk = max(1, _IOU_BLOCK // width)
            offsets = np.arange(width)
            for lo in range(0, num_det, chunk):
                hi = min(lo + chunk, num_det)
                valid = offsets[None, :] < count[lo:hi, None]
                cols = np.where(valid, start[lo:hi, None] + offsets[None, :], 0)
                iou = np_iou(d_box[lo:hi, None, :], g_box[cols], inclusive=True)
                iou[~valid] = -1.0
                arg = np.argmax(iou, axis=1)
                rows = np.arange(hi - lo)
                best_iou[lo:hi] = iou[rows, arg]
                best_gt[lo:hi] = cols[rows, arg]
    return {"g_box": g_box, "g_diff": g_diff, "d_box": d_box, "d_score": d_score, "best_iou": best_iou,
            "best_gt": best_gt}


def _score_class(match, iou_threshold, score_threshold, use_07_metric, area_range=None):
    """AP and the counts at ``score_threshold`` of one class's matched detections.

    With ``area_range`` (low, high) only objects of that area count: the others are
    ignored like difficult ones, and so are the detections matched to them and the
    false positives whose own area lies outside the range.

    Returns:
        (stats dict, recall curve, precision curve, scores of the curve's points).
    """
    g_ignore, d_score, best_gt = match["g_diff"], match["d_score"], match["best_gt"]
    d_outside = np.zeros(d_score.size, bool)
    if area_range is not None:
        lo, hi = area_range
        g_area, d_area = _box_areas(match["g_box"]), _box_areas(match["d_box"])
        g_ignore = g_ignore | (g_area < lo) | (g_area >= hi)
        d_outside = (d_area < lo) | (d_area >= hi)
    num_gt = int(np.count_nonzero(~g_ignore))
    num_det = d_score.size

    hit = match["best_iou"] >= iou_threshold
    ignored = hit & g_ignore[best_gt] if g_ignore.size else np.zeros(num_det, bool)
    candidate = np.nonzero(hit & ~ignored)[0]
    tp = np.zeros(num_det, bool)
    # The greedy devkit loop gives each object to the first (highest-score) detection
    # whose best overlap it is; every later one is a duplicate.
    _, first = np.unique(best_gt[candidate], return_index=True)
    tp[candidate[first]] = True
    ignored |= ~tp & d_outside

    kept = ~ignored
    tp_k, score_k = tp[kept], d_score[kept]
    tp_cum = np.cumsum(tp_k)
    fp_cum = np.cumsum(~tp_k)
    if tp_k.size:
        precision_curve = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        recall_curve = tp_cum / num_gt if num_gt else np.zeros(tp_k.size)
    else:
        precision_curve = recall_curve = np.zeros(0)
    ap = average_precision(recall_curve, precision_curve, use_07_metric) if num_gt else math.nan

    above = score_k >= score_threshold
    n_tp = int(np.count_nonzero(tp_k & above))
    n_fp = int(np.count_nonzero(~tp_k & above))
    precision, recall, f1 = _prf(n_tp, n_fp, num_gt)
    stats = {
        "ap": ap,
        "num_gt": num_gt,
        "num_difficult": int(np.count_nonzero(match["g_diff"])),
        "num_detections": int(num_det),
        "tp": n_tp,
        "fp": n_fp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    return stats, recall_curve.astype(np.float64), precision_curve.astype(np.float64), score_k.astype(np.float64)


def _flatten(ground_truth, detections, num_classes):
    """Concatenates the per-image structures into flat arrays with an image index."""
    gt_items = per_image_items(ground_truth, "ground_truth")
    index = {image_id: i for i, (image_id, _) in enumerate(gt_items)}
    gt_parts = {"image": [], "boxes": [], "classes": [], "difficult": []}
    for i, (image_id, entry) in enumerate(gt_items):
        boxes, classes, difficult = ground_truth_arrays(entry, image_id, num_classes)
        gt_parts["image"].append(np.full(len(classes), i, np.int64))
        gt_parts["boxes"].append(boxes)
        gt_parts["classes"].append(classes)
        gt_parts["difficult"].append(difficult)

    det_parts = {"image": [], "boxes": [], "classes": [], "scores": []}
    unknown = []
    for image_id, entry in per_image_items(detections, "detections"):
        if entry is None:
            continue
        boxes, classes, scores = detection_arrays(entry, image_id, num_classes)
        if image_id not in index:
            if len(classes):
                unknown.append(image_id)
            continue
        det_parts["image"].append(np.full(len(classes), index[image_id], np.int64))
        det_parts["boxes"].append(boxes)
        det_parts["classes"].append(classes)
        det_parts["scores"].append(scores)
    if unknown:
        raise ValueError(
            f"detections given for {len(unknown)} image(s) without a ground-truth entry, e.g. {unknown[:5]!r}; "
            "add an (empty) ground-truth entry for them or drop their detections"
        )

    def cat(parts, key, shape, dtype):
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros(shape, dtype)

    gt = {
        "image": cat(gt_parts, "image", (0,), np.int64),
        "boxes": cat(gt_parts, "boxes", (0, 4), np.float64),
        "classes": cat(gt_parts, "classes", (0,), np.int64),
        "difficult": cat(gt_parts, "difficult", (0,), bool),
        "num_images": len(gt_items),
    }
    det = {
        "image": cat(det_parts, "image", (0,), np.int64),
        "boxes": cat(det_parts, "boxes", (0, 4), np.float64),
        "classes": cat(det_parts, "classes", (0,), np.int64),
        "scores": cat(det_parts, "scores", (0,), np.float64),
    }
    return gt, det
