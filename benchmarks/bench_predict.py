"""Times what prediction adds around the network: EfficientNet-B0, 416x416, batch 1, CPU.

Builds an untrained B0 detector (20 classes), writes a 500x375 JPEG, then, after
--warmup untimed rounds, times --runs rounds of three calls in rotating order:
  network: the raw model call inside tf.function on an already letterboxed batch,
           no decoding;
  decoder: the in-graph decoding, NMS and mapping back to the image alone (the
           decoder layer in a tf.function on the network's outputs); on a busy
           machine it is too small to measure as the difference of two
           network-sized times;
  total:   a prediction from the file: reading and decoding the JPEG, letterboxing,
           the network with decoding and NMS in one graph, and taking the boxes out
           per image (Predictor.predict_batch).
It prints medians and minimums of each part, with the process's CPU time beside the
wall-clock time (a busy machine disturbs it less), and the overhead (reading,
letterboxing, decoding/NMS and taking the boxes out) as a fraction of the network
time. Drawing and saving the annotated image are not included (predict.py --mode fps
reports drawing separately).

An untrained model scores every box alike, so how many boxes reach NMS is set
through the prediction layers' biases (--scenarios):
  none:   no box reaches the score threshold (NMS has nothing to do);
  coarse: every box of the stride-32 head (13*13*3 = 507) scores about 0.96 for one
          class, a crowded scene before NMS;
  all:    all 10647 boxes score about 0.96 for one class (a worst case).

``--nms`` picks the NMS: over all classes (``agnostic``, what predict.py runs for a
checkpoint by default) or one per class (``per-class``, as exports run it in their
graphs and get_map.py evaluates).

Examples:
  python benchmarks/bench_predict.py
  python benchmarks/bench_predict.py --runs 50 --scenarios none,coarse,all
  python benchmarks/bench_predict.py --nms per-class
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

from utils.config import ANCHOR_MASK, DEFAULT_AGNOSTIC_NMS, DEFAULT_CONF  # noqa: E402

SCENARIOS = ("none", "coarse", "all")
NMS_KINDS = ("agnostic", "per-class")
HEADS = ("head_p5_pred", "head_p4_pred", "head_p3_pred")  # STRIDES order: 32, 16, 8
NUM_CLASSES = 20
# Logit giving sigmoid(4)**2 ~ 0.96 for objectness times class probability.
HIGH_LOGIT, LOW_LOGIT = 4.0, -8.0


def write_test_jpeg(path, size=(500, 375), seed=0):
    """Writes a VOC-sized JPEG with smooth colour fields and a few shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 6.28, 3)
    arr = np.stack([127 + 100 * np.sin(x / (50 + 20 * i) + y / 80 + p) for i, p in enumerate(phases)], -1)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.uniform(0, width - 60), rng.uniform(0, height - 60)
        x1, y1 = x0 + rng.uniform(30, 200), y0 + rng.uniform(30, 150)
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image.save(path, quality=90)
    return path


def set_scenario(model, scenario):
    """Sets the prediction biases so that the boxes of ``scenario`` score high for class 0."""
    hot_heads = {"none": (), "coarse": ("head_p5_pred",), "all": HEADS}[scenario]
    per_anchor = 5 + NUM_CLASSES
    for name in HEADS:
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        bias = np.zeros_like(bias)
        for anchor in range(len(ANCHOR_MASK[0])):
            start = anchor * per_anchor
            hot = name in hot_heads
            bias[start + 4] = HIGH_LOGIT if hot else LOW_LOGIT
            bias[start + 5 : start + per_anchor] = LOW_LOGIT
            bias[start + 5] = HIGH_LOGIT if hot else LOW_LOGIT
        layer.set_weights([kernel, bias])


def stats(values):
    """(median, minimum) in ms of a list of seconds."""
    ms = 1e3 * np.asarray(values)
    return float(np.median(ms)), float(ms.min())


def bench(model, image_path, scenario, runs, warmup, conf, agnostic):
    """Times one scenario; returns a dict of per-part lists of seconds and the box count.

    The three calls of a round run in a rotating order, so that a slowdown of the
    machine during a round does not always fall on the same part.
    """
    import tensorflow as tf

    from utils.image import load_image
    from utils.predict.predictor import Predictor

    set_scenario(model, scenario)
    predictor = Predictor(model, input_size=416, conf=conf, agnostic_nms=agnostic)
    spec = tf.TensorSpec((None, 416, 416, 3), tf.float32)
    network = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    decode = tf.function(predictor.decoder)
    image = load_image(image_path)
    batch = predictor.preprocess(image)[None].astype(np.float32)
    shapes = np.array([image.shape[:2]], np.int32)
    raw = network(batch)

    times = {key: [] for key in ("network", "decode", "total", "read", "letterbox", "net_post", "host")}
    cpu = {key: [] for key in ("network", "decode", "total", "read")}
    boxes = 0

    def clocks():
        return time.perf_counter(), time.process_time()

    def time_network():
        (wall, proc) = clocks()
        _ = [o.numpy() for o in network(batch)]
        return {"network": time.perf_counter() - wall}, {"network": time.process_time() - proc}

    def time_decode():
        (wall, proc) = clocks()
        _ = decode(raw, shapes)["boxes"].numpy()
        return {"decode": time.perf_counter() - wall}, {"decode": time.process_time() - proc}

    def time_total():
        nonlocal boxes
        timings = {}
        (wall, proc) = clocks()
        loaded = load_image(image_path)
        (read_wall, read_proc) = clocks()
        detections = predictor.predict_batch([loaded], timings)
        (end_wall, end_proc) = clocks()
        boxes = len(detections[0])
        wall_parts = {"total": end_wall - wall, "read": read_wall - wall, "letterbox": timings["pre"],
                      "net_post": timings["net_post"],
                      "host": end_wall - read_wall - timings["pre"] - timings["net_post"]}
        return wall_parts, {"total": end_proc - proc, "read": read_proc - proc}

    calls = [time_network, time_decode, time_total]
    for i in range(warmup + runs):
        for call in calls[i % 3 :] + calls[: i % 3]:
            wall_parts, cpu_parts = call()
            if i >= warmup:
                for key, value in wall_parts.items():
                    times[key].append(value)
                for key, value in cpu_parts.items():
                    cpu[key].append(value)
    return times, cpu, boxes


def report(scenario, times, cpu, boxes):
    """Prints one scenario's figures; returns the overhead / network ratio (wall medians)."""
    med = {key: stats(values)[0] for key, values in times.items()}
    low = {key: stats(values)[1] for key, values in times.items()}
    cpu_med = {key: stats(values)[0] for key, values in cpu.items()}
    print(f"\nscenario {scenario!r}: {boxes} boxes after NMS, {len(times['total'])} runs")
    print(f"  {'ms':<42}{'median':>9}{'minimum':>9}{'CPU med':>9}")
    rows = [
        ("network: raw model call in tf.function", "network"),
        ("total: file -> boxes in image pixels", "total"),
        ("  read + decode the JPEG", "read"),
        ("  letterbox + batch", "letterbox"),
        ("  network + decoding + NMS (one graph)", "net_post"),
        ("  taking the boxes out (host)", "host"),
        ("decoding + NMS + mapping back, alone*", "decode"),
    ]
    for label, key in rows:
        cpu_text = f"{cpu_med[key]:9.2f}" if key in cpu_med else f"{'-':>9}"
        print(f"  {label:<42}{med[key]:9.2f}{low[key]:9.2f}{cpu_text}")
    parts = ("read", "letterbox", "decode", "host")
    overhead = sum(med[k] for k in parts)
    overhead_low = sum(low[k] for k in parts)
    print(f"  overhead = read + letterbox + decoding/NMS + host: {overhead:.2f} ms = "
          f"{100 * overhead / med['network']:.1f}% of the network time (minimums: {overhead_low:.2f} ms = "
          f"{100 * overhead_low / low['network']:.1f}%)")
    print(f"  cross-check, total - network: {med['total'] - med['network']:.2f} ms wall (medians), "
          f"{low['total'] - low['network']:.2f} ms wall (minimums), "
          f"{cpu_med['total'] - cpu_med['network']:.2f} ms CPU "
          f"= {100 * (cpu_med['total'] - cpu_med['network']) / cpu_med['network']:.1f}% (medians)")
    return overhead / med["network"]


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=30, help="timed rounds per scenario (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--scenarios", default="none,coarse",
                        help=f"comma-separated, from {', '.join(SCENARIOS)} (default none,coarse)")
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help=f"score threshold (default {DEFAULT_CONF})")
    parser.add_argument("--nms", choices=NMS_KINDS, default=NMS_KINDS[0] if DEFAULT_AGNOSTIC_NMS else NMS_KINDS[1],
                        help="NMS over all classes or one per class (default: predict.py's for a checkpoint, "
                             f"{NMS_KINDS[0] if DEFAULT_AGNOSTIC_NMS else NMS_KINDS[1]})")
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or args.runs < 1 or args.warmup < 0:
        parser.error(f"scenarios must be among {SCENARIOS} (got {unknown}), --runs >= 1, --warmup >= 0")

    import tensorflow as tf

    from nets.yolo import YoloV3

    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}, "
          f"{os.cpu_count()} CPUs")
    model = YoloV3(NUM_CLASSES, backbone="efficientnet-b0", input_size=416)
    with tempfile.TemporaryDirectory() as tmp:
        image_path = write_test_jpeg(Path(tmp) / "bench.jpg")
        print(f"image: 500x375 JPEG, {image_path.stat().st_size // 1024} KiB; input 416x416, batch 1, "
              f"conf {args.conf}, NMS {args.nms}")
        for scenario in scenarios:
            times, cpu, boxes = bench(model, image_path, scenario, args.runs, args.warmup, args.conf,
                                      args.nms == "agnostic")
            report(scenario, times, cpu, boxes)
    print("\n* the decoder layer in its own tf.function on the network's outputs: the part of the\n"
          "  prediction graph that comes after the network. CPU: process CPU time (all threads).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
