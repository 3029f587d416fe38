"""Detection metrics: VOC average precision and COCO metrics (through pycocotools).

Both metrics take the same in-memory structures, one entry per image:

* ``ground_truth``: a mapping ``image_id -> ImageGroundTruth`` (or any object, or
  dict, with ``boxes`` (N, 4) xyxy pixels, ``classes`` int (N,) and optionally
  ``difficult`` bool (N,)), or a sequence of them whose index is the image id.
* ``detections``: a mapping ``image_id -> ImageDetections`` (or any object, or dict,
  with ``boxes`` (M, 4) xyxy pixels, ``scores`` (M,) and ``classes`` int (M,); the
  ``Detections`` returned by the predictor qualify), or a sequence aligned with
  ``ground_truth``. Images without an entry have no detections.

Class ids index ``class_names`` (0-based). Boxes are in pixels of the original image.
"""

import contextlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from utils.config import EVAL_MATCH_IOU, EVAL_SCORE_THRESHOLD

# Labels of COCOeval.stats, in its order.
COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)

# Upper bound on the (detections x ground truth) IoU block computed at once.
_IOU_BLOCK = 2_000_000


@dataclass
class ImageGroundTruth:
    """Ground-truth objects of one image.

    Attributes:
        boxes: float (N, 4) xyxy pixels of the original image.
        classes: int (N,) class ids.
        difficult: bool (N,) VOC "difficult" flags.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))


@dataclass
class ImageDetections:
    """Detections of one image.

    Attributes:
        boxes: float (M, 4) xyxy pixels of the original image.
        scores: float (M,) confidence scores.
        classes: int (M,) class ids.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def voc_iou(a, b):
    """IoU with the VOC devkit's inclusive-pixel convention (width = x2 - x1 + 1).

    Coordinates are used as given (not rounded); the +1 treats them as inclusive pixel
    indices, as the devkit does.

    Args:
        a: (..., 4) xyxy pixels.
        b: (..., 4) xyxy pixels, broadcastable with ``a``.

    Returns:
        float64 (...) IoU; 0 where the boxes do not overlap.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1.0
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1.0
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0)
    area_b = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


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
    most (``voc_iou``). IoU >= ``iou_threshold`` with an unmatched object: true
    positive; with an already-matched object, or IoU below the threshold: false
    positive; with a difficult object: ignored. Difficult objects do not count in
    recall.

    Args:
        ground_truth: per-image ground truth (see the module docstring).
        detections: per-image detections (see the module docstring). Every image id
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
          ``curves``: ``{name: (recall (K,), precision (K,))}`` float64 arrays, one
          point per non-ignored detection in descending-score order (not JSON; see
          ``json_ready``).

    Raises:
        ValueError: a class id outside ``class_names``, inconsistent array shapes, or
            detections for an image that has no ground-truth entry.
    """
    class_names = list(class_names)
    num_classes = len(class_names)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    gt, det = _flatten(ground_truth, detections, num_classes)

    per_class, curves = [], {}
    for cls, name in enumerate(class_names):
        stats, rec, prec = _evaluate_class(gt, det, cls, iou_threshold, score_threshold, use_07_metric)
        stats = {"name": name, **stats}
        per_class.append(stats)
        curves[name] = (rec, prec)

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
        "curves": curves,
    }


def _prf(tp, fp, num_gt):
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / num_gt if num_gt else math.nan
    if num_gt and precision + recall > 0:
        f1 = 2.0 * precision * recall / (precision + recall)
    else:
        f1 = 0.0 if num_gt else math.nan
    return float(precision), float(recall), float(f1)


def _evaluate_class(gt, det, cls, iou_threshold, score_threshold, use_07_metric):
    """Matches one class's detections; returns (stats dict, recall curve, precision curve)."""
    g_sel = np.nonzero(gt["classes"] == cls)[0]
    # Ground truth of this class grouped by image (stable, so the file order is kept
    # within an image and argmax ties go to the first object, as in the devkit).
    g_sel = g_sel[np.argsort(gt["image"][g_sel], kind="stable")]
    g_img, g_box, g_diff = gt["image"][g_sel], gt["boxes"][g_sel], gt["difficult"][g_sel]
    num_gt = int(np.count_nonzero(~g_diff))

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
                iou = voc_iou(d_box[lo:hi, None, :], g_box[cols])
                iou[~valid] = -1.0
                arg = np.argmax(iou, axis=1)
                rows = np.arange(hi - lo)
                best_iou[lo:hi] = iou[rows, arg]
                best_gt[lo:hi] = cols[rows, arg]

    hit = best_iou >= iou_threshold
    ignored = hit & g_diff[best_gt] if g_sel.size else np.zeros(num_det, bool)
    candidate = np.nonzero(hit & ~ignored)[0]
    tp = np.zeros(num_det, bool)
    # The greedy devkit loop gives each object to the first (highest-score) detection
    # whose best overlap it is; every later one is a duplicate.
    _, first = np.unique(best_gt[candidate], return_index=True)
    tp[candidate[first]] = True

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
        "num_difficult": int(g_diff.size - num_gt),
        "num_detections": int(num_det),
        "tp": n_tp,
        "fp": n_fp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    return stats, recall_curve.astype(np.float64), precision_curve.astype(np.float64)


def _get(entry, name, default=None):
    if isinstance(entry, Mapping):
        return entry.get(name, default)
    return getattr(entry, name, default)


def _as_items(per_image, what):
    if isinstance(per_image, Mapping):
        return list(per_image.items())
    if isinstance(per_image, (list, tuple)):
        return list(enumerate(per_image))
    raise TypeError(f"{what} must be a mapping image_id -> entry or a sequence, got {type(per_image).__name__}")


def _flatten(ground_truth, detections, num_classes):
    """Concatenates the per-image structures into flat arrays with an image index."""
    gt_items = _as_items(ground_truth, "ground_truth")
    index = {image_id: i for i, (image_id, _) in enumerate(gt_items)}
    gt_parts = {"image": [], "boxes": [], "classes": [], "difficult": []}
    for i, (image_id, entry) in enumerate(gt_items):
        boxes, classes = _boxes_and_classes(entry, image_id, "ground truth", num_classes)
        difficult = _get(entry, "difficult")
        difficult = np.zeros(len(classes), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
        if difficult.shape[0] != classes.shape[0]:
            raise ValueError(
                f"ground truth of image {image_id!r}: {classes.shape[0]} classes "
                f"but {difficult.shape[0]} difficult flags"
            )
        gt_parts["image"].append(np.full(len(classes), i, np.int64))
        gt_parts["boxes"].append(boxes)
        gt_parts["classes"].append(classes)
        gt_parts["difficult"].append(difficult)

    det_parts = {"image": [], "boxes": [], "classes": [], "scores": []}
    unknown = []
    for image_id, entry in _as_items(detections, "detections"):
        if entry is None:
            continue
        boxes, classes = _boxes_and_classes(entry, image_id, "detections", num_classes)
        scores = np.asarray(_get(entry, "scores"), np.float64).reshape(-1)
        if scores.shape[0] != classes.shape[0]:
            raise ValueError(
                f"detections of image {image_id!r}: {classes.shape[0]} classes but {scores.shape[0]} scores"
            )
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


def _boxes_and_classes(entry, image_id, what, num_classes):
    boxes = _get(entry, "boxes")
    classes = _get(entry, "classes")
    if boxes is None or classes is None:
        raise ValueError(f"{what} of image {image_id!r} needs 'boxes' and 'classes', got {type(entry).__name__}")
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} of image {image_id!r}: boxes must be (N, 4) xyxy, got shape {boxes.shape}")
    classes = np.asarray(classes).reshape(-1)
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        if not np.all(np.equal(np.mod(classes, 1), 0)):
            raise ValueError(f"{what} of image {image_id!r}: class ids must be integers, got {classes[:5].tolist()}")
    classes = classes.astype(np.int64)
    if classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"{what} of image {image_id!r}: {boxes.shape[0]} boxes but {classes.shape[0]} classes")
    bad = (classes < 0) | (classes >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"{what} of image {image_id!r}: class id {int(classes[bad][0])} outside the {num_classes} class names"
        )
    return boxes, classes


def format_voc_table(result):
    """Formats an ``evaluate_voc`` result as a text table, one row per class, then mAP.

    Args:
        result: dict returned by ``evaluate_voc``.

    Returns:
        str, several lines, no trailing newline.
    """
    names = [c["name"] for c in result["classes"]]
    width = max([len("class"), len("total")] + [len(n) for n in names])
    thr = result["score_threshold"]
    header = (
        f"{'class':<{width}}  {'AP':>7}  {'GT':>6}  {'dets':>8}  "
        f"{'P@' + format(thr, 'g'):>7}  {'R@' + format(thr, 'g'):>7}  {'F1@' + format(thr, 'g'):>7}"
    )
    lines = [header, "-" * len(header)]

    def pct(value):
        return "    n/a" if value is None or math.isnan(value) else f"{100.0 * value:7.2f}"

    for c in result["classes"]:
        lines.append(
            f"{c['name']:<{width}}  {pct(c['ap'])}  {c['num_gt']:>6d}  {c['num_detections']:>8d}  "
            f"{pct(c['precision'])}  {pct(c['recall'])}  {pct(c['f1'])}"
        )
    t = result["totals"]
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<{width}}  {pct(result['map'])}  {t['num_gt']:>6d}  {t['num_detections']:>8d}  "
        f"{pct(t['precision'])}  {pct(t['recall'])}  {pct(t['f1'])}"
    )
    method = "VOC2007 11-point" if result["metric"] == "voc07" else "all-point"
    lines.append(
        f"mAP@{result['iou_threshold']:g} ({method}): {pct(result['map']).strip()}% "
        f"over {len(result['classes']) - len(result['classes_without_ground_truth'])} classes, "
        f"{result['num_images']} images"
    )
    if result["classes_without_ground_truth"]:
        lines.append(
            "Classes without ground truth (left out of the mean): " + ", ".join(result["classes_without_ground_truth"])
        )
    return "\n".join(lines)


def json_ready(result):
    """A copy of a metrics result without the curve arrays, NaN written as None.

    Args:
        result: dict returned by ``evaluate_voc`` or ``evaluate_coco``.

    Returns:
        dict that ``json.dump`` writes as strict JSON.
    """

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "curves"}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, float)):
            return None if math.isnan(value) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.ndarray):
            return clean(value.tolist())
        return value

    return clean(result)


def coco_datasets(ground_truth, detections, class_names, category_ids=None, image_ids=None):
    """Builds the pycocotools ground-truth dataset and detection list in memory.

    Conventions: image ids are 1..N in ``ground_truth`` order and category id = class
    id + 1 (pycocotools treats id 0 as "no id" in places), unless the dataset's own
    ids are given; boxes are written as COCO's
    ``[x_min, y_min, width, height]`` with width = x2 - x1 and height = y2 - y1
    (continuous coordinates, no +1); the ground-truth ``area`` is that box area;
    difficult objects get ``iscrowd=1`` and ``ignore=1``, which COCOeval ignores in
    matching and scoring (a crowd region matches by intersection over detection area).

    Args:
        ground_truth: per-image ground truth (see the module docstring).
        detections: per-image detections (see the module docstring).
        class_names: list of class names; class ids index it.
        category_ids: the category id of each class (e.g. a COCO dataset's own,
            non-contiguous ids), or None for class id + 1.
        image_ids: ``{image_id: COCO image id}`` covering every image of
            ``ground_truth``, or None for 1..N.

    Returns:
        (dataset, results): ``dataset`` is a dict with ``images``, ``annotations``,
        ``categories`` for ``pycocotools.coco.COCO``; ``results`` is a list of
        detection dicts (``image_id``, ``category_id``, ``bbox``, ``score``) for
        ``COCO.loadRes``.
    """
    gt_items = _as_items(ground_truth, "ground_truth")
    num_classes = len(class_names)
    if category_ids is None:
        category_ids = list(range(1, num_classes + 1))
    elif len(category_ids) != num_classes:
        raise ValueError(f"{len(category_ids)} category ids given for {num_classes} class names")
    category_ids = [int(i) for i in category_ids]
    if image_ids is None:
        image_index = {image_id: i + 1 for i, (image_id, _) in enumerate(gt_items)}
    else:
        missing = [image_id for image_id, _ in gt_items if image_id not in image_ids]
        if missing:
            raise ValueError(f"no COCO image id given for {len(missing)} image(s), e.g. {missing[:5]!r}")
        image_index = {image_id: int(image_ids[image_id]) for image_id, _ in gt_items}
    images, annotations = [], []
    for image_id, entry in gt_items:
        boxes, classes = _boxes_and_classes(entry, image_id, "ground truth", num_classes)
        difficult = _get(entry, "difficult")
        difficult = np.zeros(len(classes), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
        coco_id = image_index[image_id]
        images.append({"id": coco_id, "file_name": str(image_id)})
        for box, cls, diff in zip(boxes, classes, difficult):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": coco_id,
                    "category_id": category_ids[int(cls)],
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": int(bool(diff)),
                    "ignore": int(bool(diff)),
                }
            )
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, class_names)]
    results = []
    for image_id, entry in _as_items(detections, "detections"):
        if entry is None:
            continue
        boxes, classes = _boxes_and_classes(entry, image_id, "detections", num_classes)
        if not len(classes):
            continue
        if image_id not in image_index:
            raise ValueError(f"detections given for image {image_id!r} that has no ground-truth entry")
        scores = np.asarray(_get(entry, "scores"), np.float64).reshape(-1)
        coco_id = image_index[image_id]
        for box, cls, score in zip(boxes, classes, scores):
            results.append(
                {
                    "image_id": coco_id,
                    "category_id": category_ids[int(cls)],
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate_coco(ground_truth, detections, class_names):
    """COCO box metrics (AP@[.5:.95], AP50, AP75, by size, AR) computed by pycocotools.

    The datasets are built by ``coco_datasets`` (see it for the box and id
    conventions) and evaluated with ``COCOeval`` at its default settings.

    Args:
        ground_truth: per-image ground truth (see the module docstring).
        detections: per-image detections (see the module docstring).
        class_names: list of class names; class ids index it.

    Returns:
        dict with ``metric`` ("coco"), ``stats`` (``{name: value}`` for the names in
        ``COCO_STAT_NAMES``; -1 where pycocotools has nothing to average),
        ``summary`` (pycocotools' standard summary lines, str), ``num_images``,
        ``num_gt``, ``num_detections``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = coco_datasets(ground_truth, detections, class_names)
    log = io.StringIO()
    # pycocotools prints progress; keep it out of the caller's stdout.
    with contextlib.redirect_stdout(log):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            # loadRes cannot take an empty list.
            coco_dt = COCO()
            coco_dt.dataset = {**dataset, "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    return {
        "metric": "coco",
        "stats": {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)},
        "summary": summary.getvalue().rstrip("\n"),
        "num_images": len(dataset["images"]),
        "num_gt": len(dataset["annotations"]),
        "num_detections": len(results),
    }
