"""Simulates the labelling loop: does choosing the images to label by the review score
(``label.py --review``) train a better model than choosing them at random?

Start from ``--start`` labelled images of a benchmark's training split (the rest is
the unlabelled pool), train (``train.py``, the real command line, ``--epochs`` every
round from the same starting weights), then for ``--rounds`` rounds add ``--add``
images from the pool, chosen either by the review score of the last round's model
(``utils.label``: scores near the threshold, disagreement with the mirrored image,
confused classes from the run's confusion matrix) or at random, with their ground-truth
labels (as if a person had corrected the pre-labels), and train again. Both ways
share round 0, once per seed.

Per round and way: test mAP@0.5 (the project's VOC evaluator, confidence 0.001), the
share of the pre-labels on the pool a person would keep as they are (IoU >= 0.5 with a
ground-truth box of the same class, at the model's best-F1 confidence, as
``label.py`` writes them), and the minutes the round took (training, then predicting
the pool twice for the review). Prints one table and writes ``bench_label.json``,
``bench_label.csv`` and ``bench_label.png`` into ``--out``.

The benchmark folder is one ``real_photos.py`` writes (``train.txt``, ``val.txt``,
``test.txt``, ``classes.txt``; ``anchors.txt`` is used when present).

Usage:
    python benchmarks/real_photos.py --source scikit_image-*.whl --out real_photos
    python kmeans_for_anchors.py --annotations real_photos/train.txt --input-size 256 --out real_photos/anchors.txt
    python benchmarks/bench_label.py --data real_photos --seeds 0 1 --epochs 30
    python benchmarks/bench_label.py --data real_photos --seeds 0 --steps 250 --input-size 192  # shorter
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WAYS = ("review", "random")
KEEP_IOU = 0.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="benchmark folder (train.txt, val.txt, test.txt, classes.txt)")
    p.add_argument("--start", type=int, default=50, help="labelled images to start from (default 50)")
    p.add_argument("--add", type=int, default=50, help="images added per round (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="rounds after the first training (default 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds: start set, random picks, training")
    p.add_argument("--epochs", type=int, default=30, help="training epochs of every round (default 30)")
    p.add_argument("--steps", type=int, default=0,
                   help="train every round for about this many optimizer steps instead of a fixed --epochs: "
                        "epochs = ceil(steps / ceil(images / batch)), so that a round of 50 images trains as "
                        "long as one of 200 (0: --epochs)")
    p.add_argument("--backbone", default="efficientnet-lite0", help="backbone (default efficientnet-lite0)")
    p.add_argument("--backbone-weights", default="imagenet", help="imagenet, none or a file (default imagenet)")
    p.add_argument("--input-size", type=int, default=256, help="network input side (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--out", default="runs/bench_label", help="folder for the runs and the table")
    p.add_argument("extra", nargs="*", help="options passed on to train.py (after --)")
    return p.parse_args(argv)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def round_epochs(args, num_images):
    """The epochs of a round of ``num_images``: ``--epochs``, or with ``--steps`` enough
    epochs for about that many optimizer steps."""
    if args.steps <= 0:
        return args.epochs
    steps_per_epoch = math.ceil(num_images / args.batch_size)
    return max(1, math.ceil(args.steps / steps_per_epoch))


def train(args, data, train_file, run_root, name, seed):
    """Trains one round with train.py; returns (run folder, minutes)."""
    epochs = round_epochs(args, sum(1 for line in train_file.read_text().splitlines() if line.strip()))
    cmd = [sys.executable, str(ROOT / "train.py"), "--train", str(train_file), "--val", str(data / "val.txt"),
           "--classes", str(data / "classes.txt"), "--backbone", args.backbone,
           "--backbone-weights", args.backbone_weights, "--input-size", str(args.input_size),
           "--batch-size", str(args.batch_size), "--freeze-batch-size", str(args.batch_size),
           "--epochs", str(epochs), "--save-period", "0", "--eval-period", "0", "--seed", str(seed),
           "--save-dir", str(run_root), "--name", name, *args.extra]
    if (data / "anchors.txt").is_file():
        cmd += ["--anchors", str(data / "anchors.txt")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="true")
    print("$ " + " ".join(cmd), flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (run_root / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed for {name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return run_root / name, (time.time() - started) / 60.0


def test_map(checkpoint, test, class_names):
    """mAP@0.5 of a checkpoint on the test annotations."""
    from utils.config import EVAL_CONF, EVAL_NMS_IOU
    from utils.eval.evaluator import Evaluator
    from utils.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(str(checkpoint), conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)
    return float(Evaluator.from_annotations(test, class_names, where="test.txt")(predictor).map)


def kept_share(items, truth):
    """(kept, written): pre-labelled boxes with IoU >= KEEP_IOU with a ground-truth box
    of their class (each object kept once, best IoU first), and all pre-labelled boxes."""
    from utils.boxes import np_iou

    kept = written = 0
    for item in items:
        gt = truth[str(item.path)]
        written += len(item.classes)
        if not len(item.classes) or not len(gt.classes):
            continue
        iou = np_iou(np.asarray(item.boxes)[:, None], gt.boxes[None])
        iou = np.where(np.asarray(item.classes)[:, None] == gt.classes[None], iou, 0.0)
        while iou.size and iou.max() >= KEEP_IOU:
            i, j = np.unravel_index(np.argmax(iou), iou.shape)
            kept += 1
            iou[i, :] = 0.0
            iou[:, j] = 0.0
    return kept, written


def review_pool(run_dir, pool, class_names):
    """Pre-labels and review scores of the pool with a round's best.keras, as label.py makes them."""
    from utils.config import DEFAULT_AGNOSTIC_NMS, DEFAULT_CONF
    from utils.eval.operating_point import default_conf
    from utils.label.job import predict_images, prediction_conf
    from utils.label.review import CONFUSION_CSV, class_confusion, read_confusion
    from utils.predict.predictor import Predictor

    checkpoint = run_dir / "best.keras"
    conf, _ = default_conf(checkpoint, DEFAULT_CONF)
    predictor = Predictor.from_checkpoint(str(checkpoint), conf=prediction_conf(conf, True),
                                          agnostic_nms=DEFAULT_AGNOSTIC_NMS)
    matrix = read_confusion(run_dir / CONFUSION_CSV, class_names) if (run_dir / CONFUSION_CSV).is_file() else None
    confusion = None if matrix is None else class_confusion(matrix)
    paths = [a.path for a in pool]
    predicted = predict_images(predictor, paths, conf, Path(paths[0]).parent, review=True, confusion=confusion,
                               batch_size=8)
    return conf, predicted


def simulate(args, data, seed, class_names, annotations, test, out):
    """The rounds of one seed, both ways; returns the table rows."""
    from utils.data.annotation import format_line
    from utils.label.review import rank

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(annotations))
    start, pool0 = [annotations[i] for i in order[: args.start]], [annotations[i] for i in order[args.start:]]
    run_root = out / f"seed{seed}"
    run_root.mkdir(parents=True, exist_ok=True)
    rows = []
    first = None
    for way in WAYS:
        labelled, pool = list(start), list(pool0)
        for round_number in range(args.rounds + 1):
            if round_number == 0 and first is not None:
                run_dir, minutes = first
            else:
                name = "round0" if round_number == 0 else f"{way}_round{round_number}"
                train_file = write_lines(run_root / f"{name}.txt", [format_line(a) for a in labelled])
                run_dir, minutes = train(args, data, train_file, run_root, name, seed)
                if round_number == 0:
                    first = (run_dir, minutes)
            score = test_map(run_dir / "best.keras", test, class_names)
            started = time.time()
            row = {"seed": seed, "way": way, "round": round_number, "images": len(labelled), "map": score,
                   "train_minutes": round(minutes, 2)}
            if pool:
                conf, predicted = review_pool(run_dir, pool, class_names)
                kept, written = kept_share(predicted.items, {a.path: a for a in pool})
                row.update(conf=round(conf, 3), kept=kept, prelabels=written,
                           kept_share=kept / written if written else None,
                           review_minutes=round((time.time() - started) / 60.0, 2))
                if round_number < args.rounds:
                    if way == "review":
                        chosen = {str(item.path) for item in rank(predicted.reviews)[: args.add]}
                    else:
                        picks = np.random.default_rng([seed, round_number]).permutation(len(pool))[: args.add]
                        chosen = {pool[i].path for i in picks}
                    labelled += [a for a in pool if a.path in chosen]
                    pool = [a for a in pool if a.path not in chosen]
            rows.append(row)
            print(format_row(row), flush=True)
            (out / "bench_label.json").write_text(json.dumps(rows, indent=1))
    return rows


def _pct(value):
    return "-" if value is None else f"{100 * value:.1f}"


def format_row(r):
    return (f"seed {r['seed']}  {r['way']:<6}  round {r['round']}  {r['images']:>4} images  mAP@0.5 {_pct(r['map'])}%  "
            f"kept {_pct(r.get('kept_share'))}% of {r.get('prelabels', '-')} pre-labels at conf {r.get('conf', '-')}  "
            f"train {r['train_minutes']:.1f} min, review {r.get('review_minutes', 0):.1f} min")


def summarize(rows):
    """Mean test mAP per way and round over the seeds."""
    lines = ["way     round  images  mAP@0.5 (mean over seeds)  kept share"]
    for way in WAYS:
        for number in sorted({r["round"] for r in rows}):
            group = [r for r in rows if r["way"] == way and r["round"] == number]
            shares = [r["kept_share"] for r in group if r.get("kept_share") is not None]
            mean_map = _pct(np.mean([r["map"] for r in group]))
            lines.append(f"{way:<7} {number:>5}  {group[0]['images']:>6}  {mean_map:>25}"
                         f"  {_pct(np.mean(shares)) if shares else '-':>10}")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for way in WAYS:
        for seed in sorted({r["seed"] for r in rows}):
            group = [r for r in rows if r["way"] == way and r["seed"] == seed]
            ax.plot([r["images"] for r in group], [100 * r["map"] for r in group], marker="o",
                    linestyle="-" if way == "review" else "--", label=f"{way}, seed {seed}")
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test mAP@0.5 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    from utils.data.annotation import read_annotation_file
    from utils.model_data import load_classes

    data = Path(args.data)
    missing = [n for n in ("train.txt", "val.txt", "test.txt", "classes.txt") if not (data / n).is_file()]
    if missing:
        sys.exit(f"error: benchmark folder {data} lacks {', '.join(missing)} (see this script's --help)")
    class_names = load_classes(data / "classes.txt")
    annotations = read_annotation_file(data / "train.txt", num_classes=len(class_names))[0]
    test = read_annotation_file(data / "test.txt", num_classes=len(class_names))[0]
    needed = args.start + args.rounds * args.add
    if len(annotations) < needed:
        sys.exit(f"error: {data / 'train.txt'} has {len(annotations)} images; --start {args.start} and "
                 f"{args.rounds} rounds of --add {args.add} need {needed}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        rows += simulate(args, data, seed, class_names, annotations, test, out)
    with open(out / "bench_label.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "bench_label.png")
    print(summarize(rows))
    print(f"Written: {out / 'bench_label.json'}, {out / 'bench_label.csv'}, {out / 'bench_label.png'}")


if __name__ == "__main__":
    main()
