"""Compares training recipes on one or more benchmarks: test mAP@0.5 per epoch
checkpoint, the look-alike classes' mean AP next to the distinct classes', and the
class separation at the test objects.

Each benchmark is a folder as ``real_photos.py`` and ``lookalike_photos.py`` write it
(``train.txt``, ``val.txt``, ``test.txt``, ``classes.txt``, and ``anchors.txt`` at the
input size, made with ``kmeans_for_anchors.py``); ``groups.json`` there names the
look-alike classes (``{"look-alike": [...]}``; without it every class is distinct).
Each run trains with ``train.py`` (the real command line) for ``--epochs`` epochs,
saving a checkpoint every ``--every`` epochs; each checkpoint is then scored on the
test split with the project's VOC evaluator (confidence 0.001, NMS 0.5), and its
class separation measured there (``nets.class_separation``: the true class's mean
probability at the objects minus the best other class's; 0 is the class prior).

The script prints one table (benchmark, run, epoch, minutes of training, mAP@0.5,
look-alike AP, distinct AP, separation) and writes ``recipes.png``, ``recipes.json``
and ``recipes.csv`` into ``--out``.

Usage:
    python benchmarks/real_photos.py --source scikit_image-*.whl --out real_photos
    python benchmarks/lookalike_photos.py --source scikit_image-*.whl --out lookalike
    python kmeans_for_anchors.py --annotations real_photos/train.txt --input-size 256 --out real_photos/anchors.txt
    python kmeans_for_anchors.py --annotations lookalike/train.txt --input-size 256 --out lookalike/anchors.txt
    python benchmarks/bench_recipe.py --data real_photos lookalike --epochs 12 --every 3

A run is one recipe (``--recipes``), optionally once per assigner (``--assigners
yolov3,yolov5``, each with its own objectness target), or one variant: ``--variant
'NAME=train.py flags'`` trains the default recipe with those flags (repeatable).
``--score RUN_DIR ...`` scores runs trained earlier (their ``epoch_NNN.keras``) on
``--data`` without training; ``--plot A.json B.json ...`` draws earlier tables
together. Extra ``train.py`` options for every run go after ``--``.
"""

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The objectness target each assigner is compared with.
ASSIGNER_FLAGS = {"yolov3": ["--assigner", "yolov3", "--no-obj-iou-target"],
                  "yolov5": ["--assigner", "yolov5", "--obj-iou-target"]}
BENCH_FILES = ("train.txt", "val.txt", "test.txt", "classes.txt", "anchors.txt")


@dataclass
class Benchmark:
    name: str
    folder: Path
    lookalike: tuple  # the look-alike class names; the others are distinct

    def file(self, name):
        return str(self.folder / name)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", default=[], metavar="DIR",
                   help="benchmark folders (train.txt, val.txt, test.txt, classes.txt, anchors.txt, groups.json)")
    p.add_argument("--recipes", default="auto", help="comma-separated recipe names ('' with --variant: none)")
    p.add_argument("--assigners", default="",
                   help="comma-separated assigners to train each recipe with (yolov3, yolov5); '': the recipe's own")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="a run of the default recipe with these train.py flags, e.g. 'nofreeze=--freeze-epochs 0'")
    p.add_argument("--label", default="", help="prefix of the run names in the table and plot, e.g. 'B0 scratch'")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--backbone-weights", default="imagenet", help="imagenet, none or a file")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--every", type=int, default=3, help="epochs between scored checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_recipe", help="folder for the runs, the table and the plot")
    p.add_argument("--score", nargs="+", metavar="RUN_DIR",
                   help="score these finished runs on the --data benchmark (one) instead of training")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="draw these recipes.json files together; no training")
    p.add_argument("extra", nargs="*", help="options passed on to train.py (after --)")
    return p.parse_args(argv)


def load_benchmark(folder):
    """A benchmark folder, checked for its files."""
    folder = Path(folder)
    missing = [name for name in BENCH_FILES if not (folder / name).is_file()]
    if missing:
        sys.exit(f"error: benchmark folder {folder} lacks {', '.join(missing)} (see this script's --help)")
    groups = folder / "groups.json"
    lookalike = tuple(json.loads(groups.read_text()).get("look-alike", ())) if groups.is_file() else ()
    return Benchmark(folder.name, folder, lookalike)


def _runs(args):
    """(name, train.py flags) of every run asked for."""
    runs = []
    assigners = [a.strip() for a in args.assigners.split(",") if a.strip()] or [None]
    unknown = [a for a in assigners if a is not None and a not in ASSIGNER_FLAGS]
    if unknown:
        sys.exit(f"error: unknown assigner(s) {', '.join(unknown)}; choose from {', '.join(ASSIGNER_FLAGS)}")
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        for assigner in assigners:
            name = recipe if assigner is None else f"{recipe}-{assigner}"
            runs.append((name, ["--recipe", recipe, *ASSIGNER_FLAGS.get(assigner, ())]))
    for variant in args.variant:
        name, sep, flags = variant.partition("=")
        if not sep or not name.strip():
            sys.exit(f"error: --variant takes NAME=FLAGS, got {variant!r}")
        runs.append((name.strip(), shlex.split(flags)))
    return runs


def _train(args, bench, run_root, name, flags=()):
    cmd = [sys.executable, str(ROOT / "train.py"), "--train", bench.file("train.txt"), "--val", bench.file("val.txt"),
           "--classes", bench.file("classes.txt"), "--anchors", bench.file("anchors.txt"), "--backbone", args.backbone,
           "--backbone-weights", args.backbone_weights, "--input-size", str(args.input_size),
           "--batch-size", str(args.batch_size), "--freeze-batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--save-period", str(args.every),
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


def _epoch_minutes(run_dir):
    """Minutes of training at the end of each saved epoch, from the checkpoint files' times."""
    start = (run_dir / "config.json").stat().st_mtime
    stamps = {int(path.stem.split("_")[1]): path.stat().st_mtime for path in run_dir.glob("epoch_*.keras")}
    return {e: (t - start) / 60.0 for e, t in sorted(stamps.items())}


def test_separation(model, annotations):
    """Mean class separation of ``model`` at the objects of ``annotations`` (letterboxed, no augmentation)."""
    from nets.class_separation import ClassSeparation
    from utils.data.dataset import build_dataset

    dataset = build_dataset(annotations, model.num_classes, model.input_size, model.anchors, 8, training=False,
                            assigner=model.box_coding)
    metric = ClassSeparation(model.num_classes)
    for images, targets in dataset:
        metric.update_state(targets[:3], model(images, training=False))
    return float(metric.result())


def score(checkpoint, bench, annotations, class_names):
    """Test figures of one checkpoint: mAP@0.5, the look-alike and distinct classes' mean AP, separation."""
    from utils.config import EVAL_CONF, EVAL_NMS_IOU
    from utils.eval.evaluator import Evaluator
    from utils.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(str(checkpoint), conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)
    evaluation = Evaluator.from_annotations(annotations, class_names, where="--test")(predictor)
    for problem in evaluation.problems:
        print(f"  {problem}", flush=True)
    ap = {c["name"]: c["ap"] for c in evaluation.result["classes"] if c["num_gt"] > 0}
    look = [v for k, v in ap.items() if k in bench.lookalike]
    distinct = [v for k, v in ap.items() if k not in bench.lookalike]
    return {
        "map": evaluation.map,
        "lookalike_ap": float(np.mean(look)) if look else None,
        "distinct_ap": float(np.mean(distinct)) if distinct else None,
        "separation": test_separation(predictor.model, annotations),
    }


def score_run(run_dir, bench, label, rows, out):
    """Scores every epoch checkpoint of ``run_dir``, appending to ``rows``."""
    from utils.data.annotation import read_annotation_file
    from utils.model_data import load_classes

    class_names = load_classes(bench.file("classes.txt"))
    annotations = read_annotation_file(bench.file("test.txt"))[0]
    for epoch, minutes in _epoch_minutes(run_dir).items():
        figures = score(run_dir / f"epoch_{epoch:03d}.keras", bench, annotations, class_names)
        row = {"bench": bench.name, "run": label, "epoch": epoch, "minutes": round(minutes, 2), **figures}
        rows.append(row)
        print(_format_row(row), flush=True)
        # Written after every checkpoint, so that an interrupted benchmark keeps what it scored.
        (out / "recipes.json").write_text(json.dumps(rows, indent=1))


def _pct(value):
    return "-" if value is None else f"{100 * value:.1f}"


def _format_row(r):
    return (f"{r.get('bench', ''):<12} {r['run']:<24} {r['epoch']:>5} {r['minutes']:>7.1f} {_pct(r['map']):>7} "
            f"{_pct(r.get('lookalike_ap')):>10} {_pct(r.get('distinct_ap')):>9} "
            f"{r['separation'] if r.get('separation') is not None else float('nan'):>10.3f}")


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(r.get("bench", "") for r in rows))
    fig, axes = plt.subplots(len(benches), 2, figsize=(11, 4.2 * len(benches)), squeeze=False)
    for bench, (ax_epoch, ax_min) in zip(benches, axes):
        mine = [r for r in rows if r.get("bench", "") == bench]
        for run in dict.fromkeys(r["run"] for r in mine):
            points = [r for r in mine if r["run"] == run]
            ax_epoch.plot([r["epoch"] for r in points], [100 * r["map"] for r in points], marker="o", label=run)
            ax_min.plot([r["minutes"] for r in points], [100 * r["map"] for r in points], marker="o", label=run)
        for ax, xlabel in ((ax_epoch, "epoch"), (ax_min, "minutes of training")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{bench} test mAP@0.5 (%)".strip())
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Training recipes: test mAP@0.5")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write(rows, out):
    """The table (printed), recipes.json, recipes.csv and recipes.png of ``rows``."""
    print(f"\n{'benchmark':<12} {'run':<24} {'epoch':>5} {'minutes':>7} {'mAP@0.5':>7} {'look-alike':>10} "
          f"{'distinct':>9} {'separation':>10}")
    for r in rows:
        print(_format_row(r))
    (out / "recipes.json").write_text(json.dumps(rows, indent=1))
    fields = ["bench", "run", "epoch", "minutes", "map", "lookalike_ap", "distinct_ap", "separation"]
    with open(out / "recipes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in fields} for r in rows)
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
    if not args.data:
        sys.exit("error: --data names the benchmark folders (or --plot draws earlier results)")
    benches = [load_benchmark(folder) for folder in args.data]
    rows = []
    if args.score:
        if len(benches) != 1:
            sys.exit("error: --score scores runs on one --data benchmark")
        for run_dir in args.score:
            score_run(Path(run_dir), benches[0], f"{args.label} {Path(run_dir).name}".strip(), rows, out)
        _write(rows, out)
        return 0
    runs = _runs(args)
    if not runs:
        sys.exit("error: no run asked for (--recipes or --variant)")
    for bench in benches:
        for name, flags in runs:
            run_dir, _ = _train(args, bench, out / bench.name, name, flags)
            score_run(run_dir, bench, f"{args.label} {name}".strip(), rows, out)
    _write(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
