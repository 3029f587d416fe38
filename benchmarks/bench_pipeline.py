"""Throughput of the training input pipeline, and optionally of the training step.

Writes synthetic JPEGs (assorted sizes, a few boxes each) into a temporary folder,
then times the augmented training pipeline (``utils.data.dataset.build_dataset``) with and
without Mosaic + MixUp, and the validation letterbox pipeline, after a warm-up.
With ``--train-step`` it also times the detector's training step on batches taken
from the pipeline (held in memory, so the figure is the step alone) and prints the
ratio pipeline / step: above 1 the pipeline keeps up with training. Each figure is
measured for every assigner of ``--assigners`` (how boxes become targets, which also
sets the loss's box coding), so the cost of the targets shows beside the rest.

Usage:
    python benchmarks/bench_pipeline.py [--input-size 416] [--batch-size 8] [--train-step]
        [--assigners yolov3,yolov5]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_images(folder, count, seed=0):
    """Writes ``count`` JPEGs 300–500 px a side with 1–5 coloured boxes each.

    Returns:
        list of Annotation (boxes xyxy pixels).
    """
    from PIL import Image

    from utils.data.annotation import Annotation

    rng = np.random.default_rng(seed)
    annotations = []
    for i in range(count):
        w, h = (int(v) for v in rng.integers(300, 501, 2))
        # Smooth gradient plus noise, so JPEG decoding costs about what a photo does.
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, 6))):
            bw, bh = int(rng.integers(20, w // 2)), int(rng.integers(20, h // 2))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            pixels[y1 : y1 + bh, x1 : x1 + bw] = rng.integers(0, 256, 3)
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            classes.append(int(rng.integers(0, 20)))
        path = Path(folder) / f"synthetic_{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        annotations.append(
            Annotation(str(path), np.array(boxes, np.float32), np.array(classes, np.int32), np.zeros(len(boxes), bool))
        )
    return annotations


def time_pipeline(dataset, warmup_batches, batches):
    """Seconds per batch of ``dataset`` after ``warmup_batches``, and the last batch."""
    iterator = iter(dataset)
    batch = None
    for _ in range(warmup_batches):
        batch = next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    return (time.perf_counter() - start) / batches, batch


def make_training_model(num_classes, input_size, anchors, backbone, assigner):
    """The detector with random weights and the loss of ``assigner``, compiled with SGD."""
    import keras

    from nets.loss import YoloLoss
    from nets.yolo import YoloV3

    model = YoloV3(num_classes, backbone=backbone, input_size=input_size, anchors=anchors, backbone_weights=None,
                   box_coding=assigner)
    model.loss_fn = YoloLoss(anchors, num_classes, input_size, assigner=assigner)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3, momentum=0.937, nesterov=True), jit_compile=False)
    return model


def time_train_step(model, batches, warmup, steps):
    """Seconds per train_on_batch over ``steps`` batches after ``warmup`` of them."""
    for i in range(warmup):
        x, y = batches[i % len(batches)]
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        loss = model.train_on_batch(x, y)
    elapsed = (time.perf_counter() - start) / steps
    if not np.all(np.isfinite(np.asarray(loss if np.ndim(loss) else [loss], dtype=np.float64))):
        print(f"warning: the training step gave a non-finite loss {loss}")
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="synthetic JPEGs to write")
    parser.add_argument("--input-size", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--samples", type=int, default=320, help="images timed per configuration")
    parser.add_argument("--warmup", type=int, default=4, help="batches run before timing")
    parser.add_argument("--train-step", action="store_true", help="also time the model's training step")
    parser.add_argument("--steps", type=int, default=4, help="training steps timed (after 2 warm-up steps)")
    parser.add_argument("--backbone", default="efficientnet-b0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--assigners", default="yolov3,yolov5", help="comma-separated assigners to time")
    args = parser.parse_args(argv)
    assigners = [a.strip() for a in args.assigners.split(",") if a.strip()]

    import tensorflow as tf

    from utils.config import DEFAULT_ANCHORS
    from utils.data.dataset import build_dataset, check_annotations
    from utils.model_data import load_anchors

    anchors = load_anchors(DEFAULT_ANCHORS) * (args.input_size / 416.0)
    batches = max(1, args.samples // args.batch_size)
    print(
        f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('CPU'))} CPU device(s), "
        f"GPUs: {len(tf.config.list_physical_devices('GPU'))}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as folder:
        annotations = write_images(folder, args.images, args.seed)
        annotations, problems = check_annotations(annotations, args.num_classes)
        if problems:
            print("\n".join(problems))
        # One epoch must cover warm-up and timing: list the files several times over,
        # so no iterator restart (a per-epoch cost) falls inside the timed batches.
        needed = (args.warmup + batches + 1) * args.batch_size
        listed = annotations * -(-needed // len(annotations))
        print(
            f"{len(annotations)} synthetic JPEGs (300–500 px), input {args.input_size}, batch {args.batch_size}, "
            f"{batches * args.batch_size} images timed after {args.warmup} warm-up batches"
        )

        configs = []
        for assigner in assigners:
            configs += [
                (f"train {assigner}: jitter+flip+HSV", dict(training=True, assigner=assigner)),
                (f"train {assigner}: + mosaic + mixup", dict(training=True, mosaic=True, mixup=True,
                                                             assigner=assigner)),
            ]
        configs.append(("validation: letterbox", dict(training=False)))
        rates = {}
        for name, options in configs:
            start = time.perf_counter()
            dataset = build_dataset(
                listed, args.num_classes, args.input_size, anchors, args.batch_size, seed=args.seed, **options
            )
            built = time.perf_counter() - start
            per_batch, _ = time_pipeline(dataset, args.warmup, batches)
            rates[name] = args.batch_size / per_batch
            print(f"  {name:36s} {rates[name]:8.1f} images/s   (dataset built in {built:.1f} s)")

        if not args.train_step:
            return 0
        for assigner in assigners:
            model = make_training_model(args.num_classes, args.input_size, anchors, args.backbone, assigner)
            dataset = build_dataset(listed, args.num_classes, args.input_size, anchors, args.batch_size,
                                    training=True, seed=args.seed, assigner=assigner)
            step_batches = [b for _, b in zip(range(3), dataset)]
            per_step = time_train_step(model, step_batches, warmup=2, steps=args.steps)
            step_rate = args.batch_size / per_step
            label = f"training step {assigner} ({args.backbone})"
            print(f"  {label:36s} {step_rate:8.1f} images/s   ({per_step:.2f} s/step)")
            for name in (n for n, options in configs if options.get("assigner") == assigner):
                print(f"  ratio pipeline/step, {name:36s} {rates[name] / step_rate:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
