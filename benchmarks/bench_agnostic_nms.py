"""Class-wise against class-agnostic NMS on a test set: mAP and boxes per object.

For each checkpoint: the test mAP@0.5 at the evaluation settings (confidence 0.001,
NMS IoU 0.5) with NMS per class and over all classes, and, at the prediction
settings (``--conf``, NMS IoU 0.3), how many boxes land on each ground-truth object
(IoU >= 0.5), on how many objects two or more boxes of different classes stack, how
many objects have a box of their own class, and the F1 of the boxes shown (an object
found with its class a true positive, every other box a false one).

Usage:
    python benchmarks/bench_agnostic_nms.py --test lookalike/test.txt --models run1/best.keras run2/best.keras
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--test", required=True, help="annotation file of the test images")
    p.add_argument("--models", nargs="+", required=True, help="checkpoints (.keras) to compare")
    p.add_argument("--conf", type=float, default=0.25, help="prediction confidence for the boxes-per-object count")
    return p.parse_args(argv)


def boxes_per_object(predictor, annotations):
    """At the predictor's settings: (mean boxes on an object, objects with boxes of two or
    more classes, objects with a box of their own class, objects, boxes in all)."""
    from utils.boxes import np_iou
    from utils.image import load_image

    on_object, stacked, right, total, boxes = [], 0, 0, 0, 0
    for annotation in annotations:
        found = predictor.predict_batch([load_image(annotation.path)])[0]
        boxes += len(found)
        for box, cls in zip(annotation.boxes, annotation.classes):
            total += 1
            hits = np_iou(np.asarray(box, np.float32), found.boxes) >= 0.5 if len(found) else np.zeros(0, bool)
            on_object.append(int(hits.sum()))
            stacked += int(len(set(found.classes[hits].tolist())) >= 2)
            right += int(bool(np.any(found.classes[hits] == cls)))
    return float(np.mean(on_object)) if on_object else 0.0, stacked, right, total, boxes


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from utils.checkpoint import load_model
    from utils.config import DEFAULT_NMS_IOU, EVAL_CONF, EVAL_NMS_IOU
    from utils.data.annotation import read_annotation_file
    from utils.eval.evaluator import Evaluator
    from utils.predict.predictor import Predictor

    annotations = read_annotation_file(args.test)[0]
    print(f"{'model':<40} {'NMS':<9} {'mAP@0.5':>8} {'boxes':>6} {'boxes/object':>13} {'stacked':>8} "
          f"{'found, right class':>19} {'objects':>8} {'F1':>6}")
    for path in args.models:
        model = load_model(path)
        evaluator = Evaluator.from_annotations(annotations, model.class_names, where="--test")
        for agnostic in (False, True):
            kind = "agnostic" if agnostic else "per class"
            scored = evaluator(Predictor(model, conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU, agnostic_nms=agnostic))
            shown = Predictor(model, conf=args.conf, nms_iou=DEFAULT_NMS_IOU, agnostic_nms=agnostic)
            mean, stacked, right, total, boxes = boxes_per_object(shown, annotations)
            # Each object found with its class is a true positive, every other box a false one.
            f1 = 2 * right / (boxes + total) if boxes + total else 0.0
            print(f"{str(path)[-40:]:<40} {kind:<9} {100 * scored.map:>7.2f}% {boxes:>6} {mean:>13.2f} "
                  f"{stacked:>8} {right:>19} {total:>8} {f1:>6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
