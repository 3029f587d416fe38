"""Times ``get_map.py --mode score`` on a large synthetic set of interchange files.

Writes ``--images`` ground-truth and detection files (``--classes`` classes,
``--dets`` detections per image) into a temporary folder, then times scoring them:

* end to end: ``get_map.py --mode score`` in a fresh interpreter, as a user runs it;
* split into its stages, in this process with the job's own functions: importing
  ``get_map`` (in a fresh interpreter), reading the files, matching (the VOC mAP),
  the diagnostics (confusion matrix, judged detections, best F1) and writing
  (tables, results.json, CSV files and plots).

It also says whether scoring imported TensorFlow (it must not).

On a machine busy with other work the times vary from run to run: ``--runs N``
times the end-to-end run N times and gives the best and every time.

Example:
  python benchmarks/bench_map.py
  python benchmarks/bench_map.py --images 500 --dets 50
  python benchmarks/bench_map.py --runs 3
"""

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.eval.map_files import DET_DIR, GT_DIR, format_detections, format_ground_truth  # noqa: E402
from utils.eval.structures import ImageDetections, ImageGroundTruth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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


def _fresh_python(code, *args):
    """Wall seconds of ``python -c code`` in a fresh interpreter, and its output."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout


def end_to_end(folder, plots):
    """get_map.py --mode score as a user runs it: (seconds, whether TensorFlow was imported)."""
    code = ("import sys, get_map; status = get_map.main(sys.argv[1:]); "
            "print('TF', 'tensorflow' in sys.modules); sys.exit(status)")
    argv = ["--mode", "score", "--out", str(folder), "--classes-from-files"] + ([] if plots else ["--no-plots"])
    seconds, output = _fresh_python(code, *argv)
    return seconds, "TF True" in output


class _Stage:
    """``with stage(name):`` records the wall and CPU seconds of the block under ``name``
    (the CPU seconds tell a busy machine from a slow stage)."""

    def __init__(self, seconds):
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, name):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def stages(folder, plots):
    """{stage: (wall seconds, CPU seconds or None)} of the score mode, run with the job's own functions."""
    code = "import time; start = time.perf_counter(); import get_map; print(time.perf_counter() - start)"
    import_seconds = float(_fresh_python(code)[1].split()[-1])

    import get_map
    from utils.eval import job, map_files
    from utils.eval.evaluator import score_detections

    args = get_map.build_parser().parse_args(["--mode", "score", "--out", str(folder), "--classes-from-files"]
                                             + ([] if plots else ["--no-plots"]))
    args = get_map.eval_options(args)
    seconds = {"import get_map": (import_seconds, None)}
    stage = _Stage(seconds)
    with stage("reading files"):
        files = map_files.read_map_files(folder, None)
    with stage("matching (VOC mAP)"):
        result = score_detections(files.ground_truth, files.detections, files.class_names, "voc",
                                  iou_threshold=args.iou, score_threshold=args.score_threshold)
    with stage("diagnostics"):
        job.diagnose_files(result, args, files)
    with stage("writing" + (" (with plots)" if plots else "")), contextlib.redirect_stdout(io.StringIO()):
        job.write_problems(files.problems, Path(folder), args.problems_shown)
        job.report(result, args, Path(folder), files.problems, made_detections=False)
    return seconds, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    parser.add_argument("--classes", type=int, default=20, help="number of classes (default 20)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-plots", action="store_true", help="time get_map.py --no-plots")
    parser.add_argument("--runs", type=int, default=1,
                        help="end-to-end runs; the best is reported, with every time (default 1)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    plots = not args.no_plots

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_files(tmp, args.images, args.classes, args.dets, args.seed)
        written = time.perf_counter() - start
        runs = [end_to_end(tmp, plots) for _ in range(args.runs)]
        total, imported_tf = min(seconds for seconds, _ in runs), any(imported for _, imported in runs)
        seconds, result = stages(tmp, plots)

    print(f"{args.images} images, {args.classes} classes, {args.dets} detections per image, "
          f"{result['totals']['num_gt']} ground-truth objects; mAP {100 * result['map']:.2f} (all-point)")
    print(f"making the files: {written:.2f} s (not timed)")
    for name, (wall, cpu) in seconds.items():
        print(f"{name + ':':<28}{wall:6.2f} s" + (f"  (CPU {cpu:.2f} s)" if cpu is not None else ""))
    print(f"{'sum of the stages:':<28}{sum(wall for wall, _ in seconds.values()):6.2f} s")
    every = f" (best of {len(runs)}: {', '.join(f'{run:.2f}' for run, _ in runs)} s)" if len(runs) > 1 else ""
    print(f"{'get_map.py --mode score:':<28}{total:6.2f} s end to end" + every
          + (" (--no-plots)" if not plots else "") + f"; TensorFlow imported: {'yes' if imported_tf else 'no'}")


if __name__ == "__main__":
    main()
