"""The COCO detection metrics (AP@[.5:.95], AP50, AP75, by object size, AR),
computed by pycocotools from the per-image structures of ``utils.eval.structures``.
"""

import contextlib
import io

from utils.eval.structures import detection_arrays, ground_truth_arrays, per_image_items

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
        ground_truth: per-image ground truth (see ``utils.eval.structures``).
        detections: per-image detections (see ``utils.eval.structures``).
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
    gt_items = per_image_items(ground_truth, "ground_truth")
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
        boxes, classes, difficult = ground_truth_arrays(entry, image_id, num_classes)
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
    for image_id, entry in per_image_items(detections, "detections"):
        if entry is None:
            continue
        boxes, classes, scores = detection_arrays(entry, image_id, num_classes)
        if not len(classes):
            continue
        if image_id not in image_index:
            raise ValueError(f"detections given for image {image_id!r} that has no ground-truth entry")
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
        ground_truth: per-image ground truth (see ``utils.eval.structures``).
        detections: per-image detections (see ``utils.eval.structures``).
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
