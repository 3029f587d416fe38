"""Times what the Python API adds around the predictor it wraps, at batch 1.

Saves an untrained detector (EfficientNet-Lite0 by default, --input-size) as a
checkpoint, opens it with ``utils.api.Detector`` on --runtime, then times, in
alternating order after --warmup untimed rounds, --runs rounds of:

  predictor: ``detector.predictor.predict_batch([image])`` on a 500x375 RGB array;
  api:       ``detector.predict(image)`` on the same array (input checks, batching,
             one ``Result`` per image).

It prints the median and minimum of each, with the process's CPU time beside the
wall-clock time (a busy machine disturbs it less), and the API's overhead as a
fraction of the predictor's median.

Examples:
  python benchmarks/bench_api.py
  python benchmarks/bench_api.py --runtime openvino --runs 200
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_checkpoint(folder, backbone, input_size):
    """An untrained detector of 20 classes saved in ``folder``; returns its path."""
    from nets.yolo import YoloV3
    from utils.checkpoint import save_model
    from utils.config import DEFAULT_ANCHORS
    from utils.model_data import load_anchors

    anchors = load_anchors(DEFAULT_ANCHORS) * input_size / 416
    model = YoloV3(20, class_names=[f"class{i}" for i in range(20)], input_size=input_size, anchors=anchors,
                   backbone=backbone, backbone_weights=None)
    path = Path(folder) / "untrained.keras"
    save_model(model, path)
    return path


def timed(call, runs):
    """(wall seconds, CPU seconds) of each of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return np.array(walls), np.array(cpus)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet-lite0", help="backbone (default efficientnet-lite0)")
    parser.add_argument("--input-size", type=int, default=416, help="network input side (default 416)")
    parser.add_argument("--runtime", default="tf", help="runtime of the Detector (default tf)")
    parser.add_argument("--runs", type=int, default=100, help="timed rounds of each call (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    args = parser.parse_args(argv)

    from utils.api import Detector

    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = build_checkpoint(folder, args.backbone, args.input_size)
        detector = Detector(path, runtime=args.runtime, conf=0.25, cache_dir=folder)
        calls = {"predictor": lambda: detector.predictor.predict_batch([image]),
                 "api": lambda: detector.predict(image)}
        for _ in range(args.warmup):
            for call in calls.values():
                call()
        times = {name: ([], []) for name in calls}
        for _ in range(args.runs):  # alternating, so that a busy spell hits both alike
            for name, call in calls.items():
                wall, cpu = timed(call, 1)
                times[name][0].append(wall[0])
                times[name][1].append(cpu[0])

    print(f"{args.backbone} at {args.input_size}, runtime {args.runtime}, batch 1, {args.runs} runs each")
    for name, (walls, cpus) in times.items():
        print(f"{name:<10} median {1e3 * np.median(walls):7.2f} ms (CPU {1e3 * np.median(cpus):7.2f} ms), "
              f"min {1e3 * np.min(walls):7.2f} ms")
    base, api = np.median(times["predictor"][0]), np.median(times["api"][0])
    base_cpu, api_cpu = np.median(times["predictor"][1]), np.median(times["api"][1])
    print(f"API overhead: {100 * (api / base - 1):+.2f}% wall, {100 * (api_cpu / base_cpu - 1):+.2f}% CPU "
          f"(median against median)")


if __name__ == "__main__":
    main()
