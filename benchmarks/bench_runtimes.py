"""Times every export runtime beside TensorFlow: EfficientNet-B0 detector, 416x416, batch 1, CPU.

Exports the model (an untrained B0 detector with 20 classes unless --model is given)
in each variant of --variants, opens each with the runtime predict.py uses (the
"auto" variant as predict.py opens a checkpoint by default, export cache included),
and then,
after --warmup untimed rounds, times --runs rounds. Every round visits all runtimes
in a rotating order, so that a slowdown of the machine falls on all of them alike,
and times three calls per runtime:
  graph:      network, decoding and NMS on an image already letterboxed: the work
              of the reference's get_FPS (for TFLite, whose graph has no NMS, the
              host NMS is included);
  network:    the raw heads alone (the runtime asked for the head outputs only);
  end to end: from the JPEG file to boxes on the image: reading and decoding the
              file, letterboxing, the graph, and mapping the boxes back
              (Predictor.predict_batch after utils.image.load_image).
It prints the CPU's bfloat16 and int8 instruction sets first (figures of machines
without the same ones do not compare), then medians in ms, the end-to-end time
relative to TensorFlow's in the same run, and with --eval the mAP@0.5 (VOC
all-point) of every variant at the evaluation settings (conf 0.001, NMS IoU 0.5;
"auto" at its own precision). int8 variants are calibrated on --calib (by default on
drawn images, which is enough for timing but not for accuracy); openvino-int8 is
quantized by NNCF.

Variants: keras (TensorFlow, predict.py --runtime tf), auto (predict.py's default),
onnx, onnx-int8, openvino, openvino-bf16, openvino-int8, tflite, saved_model.

Examples:
  python benchmarks/bench_runtimes.py
  python benchmarks/bench_runtimes.py --variants keras,auto,openvino,openvino-int8 --runs 50
  python benchmarks/bench_runtimes.py --model logs/demo/best.keras --input-size 128 \\
      --calib demo_data/2007_train.txt --eval demo_data/2007_test.txt
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU timings, as documented
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("keras", "auto", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8", "tflite",
            "saved_model")
NUM_CLASSES = 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint to export (default: an untrained B0 detector, 20 classes)")
    parser.add_argument("--input-size", type=int, default=416, help="input side (default 416)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants (default: all)")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--calib", help="annotation file calibrating the int8 variants (default: drawn images)")
    parser.add_argument("--calib-images", type=int, default=32, help="calibration images (default 32)")
    parser.add_argument("--eval", help="annotation file: also report each variant's mAP on it")
    parser.add_argument("--image", help="JPEG timed end to end (default: a drawn 500x375 image)")
    parser.add_argument("--workdir", help="folder for the exports (default: a temporary one, deleted)")
    return parser.parse_args(argv)


def untrained_checkpoint(folder, input_size):
    """Saves an untrained B0 detector with 20 classes; returns the path."""
    from nets.yolo import YoloV3
    from utils.checkpoint import save_model

    path = Path(folder) / "b0_untrained.keras"
    save_model(YoloV3(NUM_CLASSES, input_size=input_size), path)
    return path


def drawn_files(folder, count=16):
    """Writes ``count`` drawn JPEGs and an annotation file listing them (no boxes)."""
    import cv2

    from utils.export.exporter import synthetic_images

    paths = []
    for i, image in enumerate(synthetic_images(count, seed=42)):
        path = Path(folder) / f"drawn_{i}.jpg"
        cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    listing = Path(folder) / "drawn.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return paths, listing


def export_variant(variant, checkpoint, folder, args, calib):
    """Exports one variant; returns the artifact path."""
    from utils.export.exporter import ExportOptions, run_export
    from utils.predict.runtimes import FORMAT_SUFFIX

    fmt, _, extra = variant.partition("-")
    options = ExportOptions(checkpoint=str(checkpoint), format=fmt,
                            out=str(Path(folder) / f"{variant}{FORMAT_SUFFIX.get(fmt, '')}"),
                            input_size=args.input_size, int8=extra == "int8", bf16=extra == "bf16",
                            calib=str(calib) if extra == "int8" else None, calib_images=args.calib_images,
                            check_images=4)
    return run_export(options)


def open_variant(variant, checkpoint, artifact, input_size, folder, image_path, **settings):
    """The predictor of a variant; "auto" opens the checkpoint as predict.py does on
    ``image_path`` (its export cached in ``folder``, checked on that image)."""
    from utils.export.auto_runtime import open_on_runtime as load_auto
    from utils.image import load_image
    from utils.predict.predictor import Predictor
    from utils.predict.runtimes import open_model_file

    if variant == "keras":
        return Predictor.from_checkpoint(checkpoint, input_size=input_size, **settings)
    if variant == "auto":
        return load_auto(checkpoint, input_size=input_size, cache_dir=Path(folder) / "runtime_cache",
                         check_images=lambda count: ([load_image(image_path)], image_path.name), **settings)
    return open_model_file(artifact, **settings)


def cpu_header():
    """One line: the CPU, its bfloat16 / int8 instruction sets and the cores used."""
    from utils.export.auto_runtime import cpu_flags, native_bf16

    name = "unknown CPU"
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    flags = "unknown" if flags is None else ", ".join(flags) or "none"
    return (f"CPU: {name}, {len(os.sched_getaffinity(0))} cores; bf16/VNNI/AMX flags: {flags}; OpenVINO native "
            f"bf16: {'yes' if native_bf16() else 'no'}")


def time_round(predictor, batch, image_path, times):
    """Times the graph, the network and the end-to-end call of one runtime once."""
    from utils.image import load_image

    start = time.perf_counter()
    predictor._detect(batch)  # noqa: SLF001 (the graph alone, on a letterboxed batch)
    times["graph"].append(time.perf_counter() - start)
    start = time.perf_counter()
    predictor._raw(batch)  # noqa: SLF001
    times["network"].append(time.perf_counter() - start)
    start = time.perf_counter()
    predictor.predict_batch([load_image(image_path)])
    times["e2e"].append(time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if "keras" not in variants:
        variants.insert(0, "keras")  # the reference every figure is compared with

    from utils.config import EVAL_CONF, EVAL_NMS_IOU
    from utils.export.verify import load_eval_set, voc_map

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = Path(args.model) if args.model else untrained_checkpoint(folder, args.input_size)
        drawn, listing = drawn_files(folder)
        image_path = Path(args.image) if args.image else drawn[0]
        calib = Path(args.calib) if args.calib else listing

        artifacts = {}
        for variant in variants:
            if variant not in ("keras", "auto"):
                print(f"\n== export {variant}")
                artifacts[variant] = export_variant(variant, checkpoint, folder, args, calib)

        predictors = {v: open_variant(v, checkpoint, artifacts.get(v), args.input_size, folder, image_path)
                      for v in variants}
        from utils.image import load_image

        batch = predictors["keras"].batch([load_image(image_path)])
        times = {v: {"graph": [], "network": [], "e2e": []} for v in variants}
        print(f"\n{cpu_header()}")
        print(f"Timing {len(variants)} runtimes: {args.warmup} warm-up and {args.runs} timed rounds, "
              f"input {args.input_size}, batch 1, image {image_path.name}")
        for round_index in range(args.warmup + args.runs):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                sink = times[variant] if round_index >= args.warmup else {k: [] for k in times[variant]}
                time_round(predictors[variant], batch, image_path, sink)

        maps = {}
        if args.eval:
            images, truth = None, None
            for variant in variants:
                evaluator = open_variant(variant, checkpoint, artifacts.get(variant), args.input_size, folder,
                                         image_path, conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)
                if images is None:
                    images, truth = load_eval_set(args.eval, evaluator.class_names)
                maps[variant] = voc_map(evaluator, images, truth)

    reference = np.median(times["keras"]["e2e"])
    print("\n| runtime | graph ms (net + decode + NMS) | network ms | end to end ms | vs TF e2e |"
          + (" mAP@0.5 |" if maps else ""))
    print("|---|---|---|---|---|" + ("---|" if maps else ""))
    for variant in variants:
        row = times[variant]
        medians = [1e3 * float(np.median(row[k])) for k in ("graph", "network", "e2e")]
        label = variant
        if variant == "auto":  # what it chose: a runtime and precision, or TensorFlow after a failed check
            chosen = predictors["auto"]
            label += f" ({getattr(chosen, 'runtime_name', 'TensorFlow')} {getattr(chosen, 'precision', 'fp32')})"
        line = (f"| {label} | {medians[0]:.1f} | {medians[1]:.1f} | {medians[2]:.1f} | "
                f"{medians[2] / (1e3 * reference):.2f}x |")
        if maps:
            line += f" {100 * maps[variant]:.2f} |"
        print(line)


if __name__ == "__main__":
    main()
