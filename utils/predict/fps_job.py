"""Fps mode: times one image through each stage of the detector and reports the
latency per stage (``run_fps``)."""

import json
import logging
import time

import numpy as np

from utils.predict.job import (
    EXIT_INTERRUPTED,
    EXIT_OK,
)
from utils.predict.sources import (
    image_output_name,
    save_image,
)
from utils.predict.visualize import (
    draw_detections,
)

log = logging.getLogger(__name__)


def _stats_ms(values):
    values = 1e3 * np.asarray(values, np.float64)
    return float(values.mean()), float(np.percentile(values, 50)), float(np.percentile(values, 95))


def run_fps(predictor, path, image, out, *, runs=50, warmup=5, count=False):
    """Fps mode: times repeated predictions of one image at batch size 1.

    Prints the mean, p50 and p95 latency of preprocessing, network + decoding (the
    in-graph part), drawing / host post-processing and their total, and the frames
    per second (1000 / mean total). Saves the annotated image and ``<out>/fps.json``
    with the same figures.

    Args:
        predictor: the ``utils.predict.predictor.Predictor`` to time.
        path: the image file (for its name and the output's).
        image: its pixels, (H, W, 3) uint8 RGB.
        out: the run folder (existing) to write into.
        runs: timed runs.
        warmup: untimed runs first, to build the graph and warm caches.
        count: draw per-class counts, as predict mode would.

    Returns:
        ``EXIT_OK``, or ``EXIT_INTERRUPTED`` after Ctrl-C (nothing is saved then).
    """
    names = predictor.class_names
    stages = {"preprocessing": [], "network + decoding (in graph)": [], "drawing / host post-processing": [],
              "total": []}

    def one_run():
        timings = {}
        start = time.perf_counter()
        det = predictor.predict_batch([image], timings)[0]
        predicted = time.perf_counter()
        annotated = draw_detections(image, det, names, counts=count)
        end = time.perf_counter()
        host = (predicted - start - timings["pre"] - timings["net_post"]) + (end - predicted)
        return (timings["pre"], timings["net_post"], host, end - start), det, annotated

    try:
        for _ in range(warmup):
            one_run()
        for _ in range(runs):
            times, det, annotated = one_run()
            for key, value in zip(stages, times):
                stages[key].append(value)
    except KeyboardInterrupt:
        print("Stopped with Ctrl-C.")
        return EXIT_INTERRUPTED
    height, width = image.shape[:2]
    print(f"fps mode: {path.name} ({width}x{height}), input {predictor.input_size}, batch 1, "
          f"{runs} timed runs after {warmup} warm-up, {len(det)} detections")
    print(f"{'stage':<34}{'mean':>9}{'p50':>9}{'p95':>9}  (ms)")
    report = {}
    for key, values in stages.items():
        mean, p50, p95 = _stats_ms(values)
        report[key] = {"mean_ms": mean, "p50_ms": p50, "p95_ms": p95}
        print(f"{key:<34}{mean:>9.2f}{p50:>9.2f}{p95:>9.2f}")
    fps = 1e3 / report["total"]["mean_ms"]
    print(f"FPS: {fps:.1f} (1000 / mean total; reading the file is not included)")
    save_image(out / image_output_name(path), annotated)
    summary = {"image": str(path), "image_size": [width, height], "input_size": predictor.input_size,
               "runs": runs, "warmup": warmup, "fps": fps, "stages": report}
    (out / "fps.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK
