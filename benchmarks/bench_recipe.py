"""Compares training recipes: test mAP@0.5 against epochs and against minutes.

Each recipe trains with ``train.py`` (the real command line) for ``--epochs`` epochs,
saving a checkpoint every ``--every`` epochs; each checkpoint is then scored on the
test annotation file with the project's VOC evaluator (confidence 0.001, NMS 0.5).
The script prints a table (recipe, epoch, minutes of training, test mAP@0.5) and
writes ``recipes.png`` (mAP against epoch and against minutes) and ``recipes.json``
into ``--out``.

Usage:
    python benchmarks/bench_recipe.py --train 2007_train.txt --val 2007_val.txt \\
        --test 2007_test.txt --classes classes.txt --anchors anchors.txt \\
        --backbone efficientnet-lite0 --backbone-weights imagenet \\
        --recipes reference,short --epochs 12 --every 3 --input-size 256

``--assigners yolov3,yolov5`` trains each recipe once per assigner, each with its own
objectness target (yolov3: 1, as the reference; yolov5: the box's IoU, as YOLOv5);
the runs are named ``RECIPE-ASSIGNER``. ``--plot A.json B.json ...`` draws the table
and plot of earlier runs together without training.

Extra ``train.py`` options go after ``--``, e.g. ``-- --freeze-epochs 2``.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", help="training annotation file")
    p.add_argument("--val", help="validation annotation file")
    p.add_argument("--test", help="test annotation file the mAP is measured on")
    p.add_argument("--classes", help="class names file")
    p.add_argument("--anchors", help="anchors file at --input-size")
    p.add_argument("--recipes", default="reference,short", help="comma-separated recipe names")
    p.add_argument("--assigners", default="",
                   help="comma-separated assigners to train each recipe with (yolov3, yolov5); '': the recipe's own")
    p.add_argument("--label", default="", help="prefix of the run names in the table and plot, e.g. 'B0 scratch'")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--backbone-weights", default="imagenet", help="imagenet, none or a file")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--every", type=int, default=3, help="epochs between scored checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_recipe", help="folder for the runs, the table and the plot")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="draw these recipes.json files together; no training")
    p.add_argument("extra", nargs="*", help="options passed on to train.py (after --)")
    return p.parse_args(argv)


# The objectness target each assigner is compared with.
ASSIGNER_FLAGS = {"yolov3": ["--assigner", "yolov3", "--no-obj-iou-target"],
                  "yolov5": ["--assigner", "yolov5", "--obj-iou-target"]}


def _train(args, recipe, run_root, name, flags=()):
    cmd = [sys.executable, str(ROOT / "train.py"), "--train", args.train, "--val", args.val,
           "--classes", args.classes, "--anchors", args.anchors, "--backbone", args.backbone,
           "--backbone-weights", args.backbone_weights, "--input-size", str(args.input_size),
           "--batch-size", str(args.batch_size), "--freeze-batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--recipe", recipe, "--save-period", str(args.every),
           "--eval-period", "0", "--seed", str(args.seed), "--save-dir", str(run_root), "--name", name,
           *flags, *args.extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="true")
    print("$ " + " ".join(cmd), flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed for {name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    (run_root / f"{name}.log").write_text(proc.stdout)
    return run_root / name, (time.time() - started) / 60.0


def _epoch_minutes(run_dir, epochs):
    """Minutes of training at the end of each epoch, from the checkpoint files' times."""
    stamps = {}
    for epoch in range(1, epochs + 1):
        path = run_dir / f"epoch_{epoch:03d}.keras"
        if path.is_file():
            stamps[epoch] = path.stat().st_mtime
    start = (run_dir / "config.json").stat().st_mtime
    return {e: (t - start) / 60.0 for e, t in stamps.items()}


def _score(checkpoint, test_annotations, class_names):
    """Test mAP@0.5 (VOC all-point) of a checkpoint at the evaluation settings."""
    from utils.config import EVAL_CONF, EVAL_NMS_IOU
    from utils.eval.evaluator import Evaluator
    from utils.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(str(checkpoint), conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)
    evaluation = Evaluator.from_annotations(test_annotations, class_names, where="--test")(predictor)
    for problem in evaluation.problems:
        print(f"  {problem}", flush=True)
    return evaluation.map


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        axes[0].plot([r["epoch"] for r in mine], [100 * r["map"] for r in mine], marker="o", label=run)
        axes[1].plot([r["minutes"] for r in mine], [100 * r["map"] for r in mine], marker="o", label=run)
    for ax, xlabel in zip(axes, ("epoch", "minutes of training")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test mAP@0.5 (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Training recipes: test mAP@0.5")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write(rows, out):
    """The table (printed), recipes.json, recipes.csv and recipes.png of ``rows``."""
    print(f"\n{'run':<28} {'epoch':>5} {'minutes':>8} {'mAP@0.5':>8}")
    for r in rows:
        print(f"{r['run']:<28} {r['epoch']:>5} {r['minutes']:>8.1f} {100 * r['map']:>7.2f}%")
    (out / "recipes.json").write_text(json.dumps(rows, indent=1))
    with open(out / "recipes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["run", "epoch", "minutes", "map"])
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, out / "recipes.png")
    print(f"wrote {out / 'recipes.png'}, {out / 'recipes.json'}, {out / 'recipes.csv'}")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        rows = [row for path in args.plot for row in json.loads(Path(path).read_text())]
        _write(rows, out)
        return 0
    missing = [flag for flag in ("train", "val", "test", "classes", "anchors") if not getattr(args, flag)]
    if missing:
        sys.exit(f"error: training needs --{', --'.join(missing)} (or --plot to draw earlier results)")
    from utils.data.annotation import read_annotation_file
    from utils.model_data import load_classes

    class_names = load_classes(args.classes)
    test_annotations = read_annotation_file(args.test)[0]
    assigners = [a.strip() for a in args.assigners.split(",") if a.strip()] or [None]
    unknown = [a for a in assigners if a is not None and a not in ASSIGNER_FLAGS]
    if unknown:
        sys.exit(f"error: unknown assigner(s) {', '.join(unknown)}; choose from {', '.join(ASSIGNER_FLAGS)}")
    rows = []
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        for assigner in assigners:
            name = recipe if assigner is None else f"{recipe}-{assigner}"
            run_dir, _ = _train(args, recipe, out, name, ASSIGNER_FLAGS.get(assigner, ()))
            label = f"{args.label} {name}".strip()
            at = _epoch_minutes(run_dir, args.epochs)
            for epoch in sorted(at):
                value = _score(run_dir / f"epoch_{epoch:03d}.keras", test_annotations, class_names)
                rows.append({"run": label, "epoch": epoch, "minutes": round(at[epoch], 2), "map": value})
                print(f"{label:<28} epoch {epoch:>3}  {at[epoch]:6.1f} min  test mAP@0.5 {100 * value:6.2f}%",
                      flush=True)
            # Written after every run, so that the finished runs survive an interrupted benchmark.
            (out / "recipes.json").write_text(json.dumps(rows, indent=1))
    _write(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
