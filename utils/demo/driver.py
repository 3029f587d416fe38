"""The end-to-end demo behind ``make demo``: make a shapes dataset, convert it, fit
anchors, fine-tune EfficientNet-Lite0-YOLOv3 from ImageNet weights, measure mAP on
the test split and run prediction on images and on a video. Each step is the real
command line, printed before it runs.

Run: ``python -m utils.demo`` (``--help`` lists the knobs). Running it again reuses
the data in ``--data`` and starts a new run folder.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from utils.config import ROOT
from utils.run_dir import next_run_dir

YEAR = "2007"
# The test images the evaluation draws with their errors.
ERROR_IMAGES = 8
# Smallest shape (geometric mean of width and height, in image pixels): at input 160
# a shape of 24 px in a 320 px image is 12 px, still learnable within the demo's epochs.
MIN_OBJECT_SIZE = 24
# The minutes the demo takes on a 2-core CPU with its defaults, for the line it prints
# before it starts: 7.5 and 8.4 measured on an Intel Xeon with AVX-512 VNNI, which ran
# the earlier demo 1.25x as fast as an AVX2-only AMD EPYC (the slowest met); scaled to it.
EXPECTED_MINUTES = {"training and evaluation": 9.5, "everything": 10.5}


def run(cmd, env=None):
    """Prints a command as a user would type it, then runs it; stops the demo on failure."""
    print(f"\n$ {shlex.join(str(c) for c in cmd)}", flush=True)
    start = time.time()
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"demo: the step above failed with exit code {result.returncode}")
    print(f"  ({time.time() - start:.0f} s)", flush=True)


def make_video(image_paths, out_path, size=(480, 360), seconds_per_image=1.0, fps=10):
    """Assembles a short MP4 from images (letterboxed to ``size``) with OpenCV."""
    import cv2
    import numpy as np

    from utils.image import load_image

    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out_path}")
    try:
        for path in image_paths:
            rgb = load_image(path)
            scale = min(size[0] / rgb.shape[1], size[1] / rgb.shape[0])
            w, h = int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)
            frame = np.full((size[1], size[0], 3), 0, np.uint8)
            top, left = (size[1] - h) // 2, (size[0] - w) // 2
            frame[top : top + h, left : left + w] = cv2.resize(rgb, (w, h))[..., ::-1]
            for _ in range(int(seconds_per_image * fps)):
                writer.write(frame)
    finally:
        writer.release()


def expectation(args):
    """The line that says how long the demo should take."""
    default = vars(parse_args([]))
    changed = [name for name in ("num_images", "input_size", "epochs", "batch_size")
               if vars(args)[name] != default[name]]
    if changed:
        return ("The demo's settings are changed (" + ", ".join("--" + n.replace("_", "-") for n in changed)
                + "); train.py says how long its epochs take once the first one is done.")
    return (f"The demo takes up to about {EXPECTED_MINUTES['everything']:g} minutes on a 2-core CPU "
            f"({EXPECTED_MINUTES['training and evaluation']:g} of them training and evaluating), less with AVX-512; "
            "train.py says how long its epochs take once the first one is done.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="demo_data", help="folder of the generated dataset (reused when present)")
    p.add_argument("--num-images", type=int, default=400, help="images to generate")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    p.add_argument("--input-size", type=int, default=160, help="network input side (multiple of 32)")
    p.add_argument("--epochs", type=int, default=11, help="training epochs")
    p.add_argument("--freeze-epochs", type=int, default=None,
                   help="first epochs with the backbone frozen (default %(default)s: the recipe's)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--save-dir", default="logs", help="where the run folder (demo, demo2, …) is made")
    p.add_argument("--samples", type=int, default=6, help="test images annotated by predict.py")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    py = Path(sys.executable)
    data = Path(args.data)
    voc = data / "VOCdevkit"
    classes = data / "shapes_classes.txt"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    started = time.time()
    print(expectation(args), flush=True)

    if not (voc / f"VOC{YEAR}" / "Annotations").is_dir() or not classes.is_file():
        # Smaller images and no tiny shapes keep the task learnable at the demo's
        # small input size within a CPU budget of minutes.
        run([py, "-m", "utils.demo.shapes_dataset", "--out", data, "--num-images", args.num_images,
             "--seed", args.seed, "--min-size", "192", "--max-size", "320", "--min-object-size", MIN_OBJECT_SIZE,
             "--max-objects", "5", "--overwrite"], env)
    else:
        print(f"Reusing the dataset in {data}")
    train_file, val_file, test_file = (data / f"{YEAR}_{split}.txt" for split in ("train", "val", "test"))
    if not (train_file.is_file() and val_file.is_file() and test_file.is_file()):
        run([py, "voc_annotation.py", "--voc-root", voc, "--classes", classes, "--out-dir", data,
             "--trainval-percent", "0.85", "--train-percent", "0.9", "--seed", args.seed], env)
    anchors = data / f"anchors_{args.input_size}.txt"
    if not anchors.is_file():
        run([py, "kmeans_for_anchors.py", "--annotations", train_file, "--input-size", args.input_size,
             "--out", anchors, "--seed", args.seed], env)

    training_started = time.time()
    run_dir = next_run_dir(Path(args.save_dir) / "demo", mkdir=False)
    name = run_dir.name
    # EfficientNet-Lite0 is the backbone whose ImageNet weights install from pip (B0-B7
    # need Keras' download). A few frozen epochs train the new neck and heads on the
    # ImageNet features, then all layers train; the recipe (auto: "short" for a run
    # this size, with its light augmentation) does the rest.
    run([py, "train.py", "--train", train_file, "--val", val_file, "--classes", classes, "--anchors", anchors,
         "--backbone", "efficientnet-lite0", "--backbone-weights", "imagenet",
         "--input-size", args.input_size, "--epochs", args.epochs,
         "--batch-size", args.batch_size, "--freeze-batch-size", args.batch_size,
         "--eval-period", "5", "--save-period", "10", "--seed", args.seed,
         "--save-dir", args.save_dir, "--name", name,
         *(["--freeze-epochs", args.freeze_epochs] if args.freeze_epochs is not None else [])], env)
    model = run_dir / "best.keras"

    map_out = run_dir / "map_out"
    run([py, "get_map.py", "--model", model, "--annotations", test_file, "--out", map_out,
         "--save-errors", ERROR_IMAGES], env)
    trained = time.time() - training_started

    from utils.data.annotation import read_annotation_file

    test_images = [Path(a.path) for a in read_annotation_file(test_file)[0]]
    samples = data / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    samples.mkdir(parents=True)
    for path in test_images[: args.samples]:
        shutil.copy(path, samples / path.name)
    predict_out = run_dir / "predict"
    # No --conf: predict.py draws at the best-F1 confidence that training measured for
    # the checkpoint on the validation set (best.eval.json beside it).
    run([py, "predict.py", "--model", model, "--source", samples, "--out", predict_out, "--save-txt", "--count"], env)

    video = data / "demo_video.mp4"
    print(f"\nAssembling {video} from {min(len(test_images), 20)} test images with OpenCV")
    make_video(test_images[:20], video)
    video_out = run_dir / "predict_video"
    run([py, "predict.py", "--model", model, "--source", video, "--out", video_out], env)

    print("\n" + "=" * 64)
    print(f"Demo finished in {(time.time() - started) / 60:.1f} min (training and evaluation "
          f"{trained / 60:.1f} min). Everything is in {run_dir}:")
    print(f"  checkpoint (best by val loss): {model}   (also last.keras)")
    print(f"  its best-F1 confidence:        {run_dir / 'best.eval.json'}   (predict.py's default --conf)")
    print(f"  what the network was fed:      {run_dir / 'train_batch0.jpg'}, {run_dir / 'labels.png'}")
    print(f"  training curves:               {run_dir / 'loss.png'}, {run_dir / 'map.png'}, {run_dir / 'history.csv'}")
    print(f"  mAP table and plots:           {map_out}/results.json, {map_out}/PR_curve.png, {map_out}/F1_curve.png")
    print(f"  confusions and errors:         {map_out}/confusion_matrix.png, {map_out}/errors/")
    print(f"  annotated images:              {predict_out}/")
    print(f"  annotated video:               {video_out}/{video.stem}.mp4")
    print(f"  try: {py.name} predict.py --model {model} --source {samples}")
    print("=" * 64)


if __name__ == "__main__":
    main()
