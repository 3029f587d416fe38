"""Times the VOC mAP on a large synthetic set of interchange files.

Writes ``--images`` ground-truth and detection files (``--classes`` classes,
``--dets`` detections per image) into a temporary folder, then times reading them and
computing the VOC mAP, and prints the seconds.

Example:
  python benchmarks/bench_map.py
  python benchmarks/bench_map.py --images 500 --dets 50
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.eval.map_files import DET_DIR, GT_DIR, format_detections, format_ground_truth, read_map_files  # noqa: E402
from utils.eval.structures import ImageDetections, ImageGroundTruth  # noqa: E402
from utils.eval.voc_metric import evaluate_voc  # noqa: E402
# Loaded before the timing: the VOC metric imports utils.boxes (and with it Keras) on first use.
import utils.boxes  # noqa: E402, F401


def make_files(out_dir, num_images, num_classes, dets_per_image, seed):
    """Writes synthetic ground truth (1-8 objects per image, 10% difficult) and detections.

    About half the detections are jittered copies of ground-truth boxes, the rest are
    random boxes; boxes are xyxy pixels in a 500 x 375 image.
    """
    rng = np.random.default_rng(seed)
    names = [f"class_{i}" for i in range(num_classes)]
    gt_dir, det_dir = Path(out_dir) / GT_DIR, Path(out_dir) / DET_DIR
    gt_dir.mkdir(parents=True)
    det_dir.mkdir(parents=True)
    for i in range(num_images):
        n = int(rng.integers(1, 9))
        xy = rng.uniform(0, [480, 355], (n, 2))
        wh = rng.uniform(10, 200, (n, 2))
        boxes = np.round(np.concatenate([xy, np.minimum(xy + wh, [499, 374])], axis=1))
        gt = ImageGroundTruth(boxes, rng.integers(0, num_classes, n), rng.random(n) < 0.1)
        (gt_dir / f"{i:06d}.txt").write_text(format_ground_truth(gt, names), encoding="utf-8")

        near = dets_per_image // 2
        pick = rng.integers(0, n, near)
        jitter = rng.normal(0, 8, (near, 4))
        near_boxes = np.clip(boxes[pick] + jitter, 0, None)
        near_classes = np.where(rng.random(near) < 0.8, gt.classes[pick], rng.integers(0, num_classes, near))
        far = dets_per_image - near
        xy = rng.uniform(0, 400, (far, 2))
        far_boxes = np.concatenate([xy, xy + rng.uniform(5, 150, (far, 2))], axis=1)
        det = ImageDetections(
            np.concatenate([near_boxes, far_boxes]),
            rng.uniform(0.001, 1.0, dets_per_image),
            np.concatenate([near_classes, rng.integers(0, num_classes, far)]),
        )
        det.boxes[:, 2:] = np.maximum(det.boxes[:, 2:], det.boxes[:, :2])
        text = format_detections(det.boxes, det.scores, det.classes, names)
        (det_dir / f"{i:06d}.txt").write_text(text, encoding="utf-8")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    parser.add_argument("--classes", type=int, default=20, help="number of classes (default 20)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        names = make_files(tmp, args.images, args.classes, args.dets, args.seed)
        written = time.perf_counter() - start

        start = time.perf_counter()
        files = read_map_files(tmp, names)
        read = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate_voc(files.ground_truth, files.detections, files.class_names)
        computed = time.perf_counter() - start
        result07 = evaluate_voc(files.ground_truth, files.detections, files.class_names, use_07_metric=True)

    total_dets = sum(len(d.scores) for d in files.detections.values())
    print(
        f"{args.images} images, {args.classes} classes, {total_dets} detections, "
        f"{result['totals']['num_gt']} ground-truth objects; {len(files.problems)} problems"
    )
    print(f"mAP {100 * result['map']:.2f} (all-point), {100 * result07['map']:.2f} (11-point)")
    print(f"writing files: {written:.2f} s (not timed)")
    print(f"reading files: {read:.2f} s")
    print(f"computing VOC mAP: {computed:.2f} s")
    print(f"reading + computing: {read + computed:.2f} s")


if __name__ == "__main__":
    main()
