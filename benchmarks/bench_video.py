"""Video throughput of predict.py end to end (decode, detect, track, draw, encode),
with the stages one after the other and overlapped in threads.

For each detector and input size, ``utils.predict.video_job.run_predict_video`` (what
``predict.py --source clip.mp4 --track`` runs) processes the same video, first with
``overlap=False`` (read, detect, track, draw and write one frame after the other,
in one thread), then overlapped (reading, detecting and drawing/writing in threads
of their own, with as many detector threads as the runtime keeps frames in flight,
see ``BasePredictor.for_streams``) and, for a runtime with several streams, also
overlapped with one detector thread and with one frame fewer in flight; ``--repeats``
rounds of these runs go back to back in rotating order, and the median FPS of each
way and the median ratio to the sequential run within the rounds are printed. Each
stage is also timed alone (decoding; the detector's letterboxing, network and NMS;
tracking; drawing and encoding), since the overlapped throughput is bounded by the
slowest stage and by the cores the stages share; and the cores each way kept busy
(the process's CPU time over the wall time of its runs): where the overlapped way keeps
all of them busy, only less work per frame makes it faster.

Detectors: ``--models`` checkpoints (e.g. trained on ``real_photos.py``'s data, run
at each of ``--sizes``), or by default untrained Lite0 and B0 (the speed does not
depend on the weights, but an untrained detector finds nothing to track or draw).
Video: ``--video``, or a sequence of ``bench_tracking.py`` (objects cut from real
photos crossing a real background) made from ``--photos``, or else squares of noise
moving over a noisy background; ``--size`` frames of ``--frames``.

Usage:
    python benchmarks/bench_video.py                        # untrained Lite0 and B0 at 416 and 320
    python benchmarks/bench_video.py --photos scikit_image-*.whl --models lite0.keras,b0.keras --sizes 416
"""

import argparse
import contextlib
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NUM_CLASSES = 8


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated checkpoints (default: untrained detectors of --backbones)")
    p.add_argument("--labels", help="comma-separated names of the --models in the table (default: file names)")
    p.add_argument("--backbones", default="efficientnet-lite0,efficientnet-b0",
                   help="comma-separated backbones of the untrained detectors")
    p.add_argument("--sizes", default="416,320", help="comma-separated input sizes")
    p.add_argument("--video", help="a video file (default: a made-up one)")
    p.add_argument("--photos", help="scikit-image data folder or wheel: make the video of real photos")
    p.add_argument("--frames", type=int, default=150, help="frames of the made-up video (default 150)")
    p.add_argument("--size", default="1280x720", help="frame size WxH of the made-up video (default 1280x720)")
    p.add_argument("--runtime", default="tf",
                   help="what runs --models checkpoints: tf (default), or a runtime of predict.py --runtime (auto, "
                        "openvino, onnxruntime, tflite; exports cached in a scratch folder)")
    p.add_argument("--waiting-detector", type=float, metavar="MS",
                   help="instead of the detectors: a stand-in that waits MS milliseconds per frame and finds "
                        "nothing, as a detector on an accelerator would leave the CPU to the other stages")
    p.add_argument("--repeats", type=int, default=4, help="pairs of runs (default 4)")
    p.add_argument("--no-track", action="store_true", help="leave tracking out")
    return p.parse_args(argv)


def make_video(path, frames, width, height, fps=30.0):
    """A made-up video: squares of noise moving over a noisy background."""
    from utils.predict.sources import VideoWriter

    rng = np.random.default_rng(0)
    background = rng.integers(60, 200, (height, width, 3), dtype=np.uint8)
    squares = [(rng.integers(0, width), rng.integers(0, height), rng.uniform(-6, 6), rng.uniform(-4, 4),
                int(rng.integers(30, 90))) for _ in range(8)]
    with VideoWriter(path, fps) as writer:
        for t in range(frames):
            frame = background.copy()
            for x, y, vx, vy, side in squares:
                cx, cy = int(x + vx * t) % width, int(y + vy * t) % height
                frame[cy:cy + side, cx:cx + side] = rng.integers(0, 255, 3, dtype=np.uint8)
            writer.write(frame)
    return path


def time_stages(predictor, video, track):
    """Milliseconds per frame of each stage alone: decoding, detecting, tracking, drawing + encoding."""
    from utils.predict.sources import Source, VideoReader, VideoWriter
    from utils.predict.tracking import ObjectTracker, tracker_settings
    from utils.predict.visualize import draw_detections, draw_tracking

    stages = {}
    started = time.perf_counter()
    with VideoReader(Source("video", Path(video))) as reader:
        images = list(reader)
    stages["decode"] = (time.perf_counter() - started) / len(images)
    started = time.perf_counter()
    found = [predictor.predict_batch([image])[0] for image in images]
    stages["detect"] = (time.perf_counter() - started) / len(images)
    tracker = ObjectTracker("bytetrack", tracker_settings("bytetrack"), predictor.class_names) if track else None
    started = time.perf_counter()
    if tracker is not None:
        found = [tracker.update(det, image.shape[:2]) for det, image in zip(found, images)]
    stages["track"] = (time.perf_counter() - started) / len(images)
    with tempfile.TemporaryDirectory() as folder, VideoWriter(Path(folder) / "o.mp4", 30.0) as writer:
        started = time.perf_counter()
        for image, det in zip(images, found):
            picture = draw_tracking(image, tracker.trails(det) if tracker else ())
            writer.write(draw_detections(picture, det, predictor.class_names, fps=10.0))
        stages["draw + encode"] = (time.perf_counter() - started) / len(images)
    return {key: 1e3 * value for key, value in stages.items()}


def photo_video(folder, photos, frames, width, height):
    """A bench_tracking.py sequence (objects cut from real photos crossing a real
    background) of ``frames`` frames of ``width`` x ``height``, as an mp4."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_tracking import make_sequence, write_sequence
    from real_photos import PhotoSource, load_objects

    source = PhotoSource(photos)
    scale = width / 384  # objects as large, relative to the frame, as in bench_tracking's 384x288
    images, rows = make_sequence(source, load_objects(source), 0, frames, 14, (width, height), 30.0,
                                 object_px=(28 * scale, 56 * scale))
    write_sequence(folder, images, rows, 30.0)
    return folder / "sequence.mp4"


class WaitingDetector:
    """A stand-in detector that waits and finds nothing (``BasePredictor``'s interface)."""

    class_names = [f"class{i}" for i in range(NUM_CLASSES)]

    def __init__(self, seconds):
        self.seconds = seconds

    def predict_batch(self, images, timings=None):
        from utils.predict.predictor import Detections

        time.sleep(self.seconds * len(images))
        return [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
                for _ in images]


def open_checkpoint(path, size, runtime, cache_dir, video):
    """The predictor of a checkpoint at input ``size`` on ``runtime`` ("tf" or one of
    predict.py's), its export checked on the first frames of ``video`` as predict.py does."""
    from utils.predict.job import first_images
    from utils.predict.predictor import Predictor
    from utils.predict.sources import Source

    if runtime == "tf":
        return Predictor.from_checkpoint(path, input_size=size)
    from utils.export.auto_runtime import open_on_runtime

    return open_on_runtime(path, runtime=runtime, input_size=size, cache_dir=cache_dir,
                          check_images=lambda count: first_images(Source("video", Path(video)), count))


class InFlight:
    """A predictor run overlapped with ``frames`` in flight: 1 is one detector thread on
    the predictor itself; more, as many threads on its throughput copy (``for_streams``)."""

    def __init__(self, predictor, frames):
        self.predictor, self.frames, self.class_names = predictor, frames, predictor.class_names

    def predict_batch(self, images, timings=None):
        return self.predictor.predict_batch(images, timings)

    def for_streams(self):
        return (self.predictor, 1) if self.frames == 1 else (self.predictor.for_streams()[0], self.frames)


def cpu_seconds():
    """CPU time of this process so far (user + system, all threads), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_video(predictor, video, overlap, track):
    """(frames per second, cores kept busy: CPU time over wall time) of one
    run_predict_video on ``video``, output discarded."""
    from utils.predict.job import _NoViewer
    from utils.predict.sources import Source, VideoReader
    from utils.predict.tracking import TrackingOptions
    from utils.predict.video_job import run_predict_video

    with tempfile.TemporaryDirectory() as out:
        reader = VideoReader(Source("video", Path(video)))
        frames = reader.frame_count
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            started, cpu_started = time.perf_counter(), cpu_seconds()
            run_predict_video(predictor, reader, Path(out), _NoViewer(), overlap=overlap,
                              tracking=TrackingOptions() if track else None)
            elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    return frames / elapsed, cpu / elapsed


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from nets.yolo import YoloV3
    from utils.export.auto_runtime import cpu_flags
    from utils.predict.predictor import Predictor
    from utils.predict.sources import Source, VideoReader

    track = not args.no_track
    with tempfile.TemporaryDirectory() as scratch:
        width, height = (int(v) for v in args.size.lower().split("x"))
        if args.video:
            video = Path(args.video)
        elif args.photos:
            video = photo_video(Path(scratch), args.photos, args.frames, width, height)
        else:
            video = make_video(Path(scratch) / "made_up.mp4", args.frames, width, height)
        with VideoReader(Source("video", video)) as reader:
            frames, first = reader.frame_count, next(iter(reader))
        flags = cpu_flags()
        flags = "unknown" if flags is None else ", ".join(flags) or "none"
        print(f"video {video.name}: {frames} frames {first.shape[1]}x{first.shape[0]}; "
              f"{os.cpu_count()} CPUs; bf16/VNNI/AMX flags: {flags}; tracking {'on' if track else 'off'}")
        rows = []
        models = [m.strip() for m in (args.models or args.backbones).split(",") if m.strip()]
        if args.waiting_detector is not None:
            models, args.sizes = ["waiting"], "416"
        labels = dict(zip(models, [t.strip() for t in (args.labels or "").split(",") if t.strip()]))
        for name in models:
            for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
                if args.waiting_detector is not None:
                    predictor = WaitingDetector(args.waiting_detector / 1e3)
                    label = f"waits {args.waiting_detector:g} ms"
                elif not args.models:
                    predictor = Predictor(YoloV3(NUM_CLASSES, backbone=name, input_size=size))
                    label = f"{predictor.model.backbone_name} (untrained)"
                else:
                    label = f"{labels.get(name, Path(name).stem)} ({args.runtime})"
                    predictor = open_checkpoint(name, size, args.runtime, Path(scratch) / "exports", video)
                for _ in range(3):  # builds the graph and warms the caches
                    predictor.predict_batch([np.zeros((size, size, 3), np.uint8)])
                stages = time_stages(predictor, video, track)
                # Runs back to back, in rotating order, so that one round shares the machine's
                # load; a ratio is the median of the rounds'. A runtime with several
                # inference streams is also run overlapped with one detector thread, and
                # with one frame fewer in flight.
                in_flight = getattr(predictor, "for_streams", lambda: (predictor, 1))()[1]
                ways = {"sequential": (predictor, False), "overlapped": (predictor, True)}
                if in_flight > 1:
                    ways["1 detector"] = (InFlight(predictor, 1), True)
                if in_flight > 2:
                    ways[f"{in_flight - 1} in flight"] = (InFlight(predictor, in_flight - 1), True)
                fps, busy = {way: [] for way in ways}, {way: [] for way in ways}
                for repeat in range(args.repeats):
                    order = list(ways)[repeat % len(ways):] + list(ways)[:repeat % len(ways)]
                    for way in order:
                        runner, overlap = ways[way]
                        rate, cores_busy = run_video(runner, video, overlap, track)
                        fps[way].append(rate)
                        busy[way].append(cores_busy)
                ratio = {way: float(np.median(np.divide(fps[way], fps["sequential"]))) for way in fps}
                median = {way: float(np.median(values)) for way, values in fps.items()}
                cores = {way: float(np.median(values)) for way, values in busy.items()}
                rows.append((label, size, median, ratio, stages, cores))
                print(f"{label}@{size}: " + ", ".join(f"{way} {median[way]:.1f} FPS" for way in fps)
                      + f"; overlapped with {in_flight} detector thread(s) (rounds: "
                      + ", ".join(f"{o / q:.2f}x" for q, o in zip(fps["sequential"], fps["overlapped"]))
                      + "); stages alone (ms/frame): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                      + "; cores kept busy: " + ", ".join(f"{way} {cores[way]:.2f}" for way in cores), flush=True)
    print()
    columns = list(dict.fromkeys(way for _, _, median, *_ in rows for way in median if way != "sequential"))
    columns.sort(key=lambda way: way == "overlapped")  # the overlapped way last
    print(f"{'detector':<30}{'input':>6}{'sequential':>12}" + "".join(f"{way:>16}" for way in columns)
          + f"{'decode':>8}{'detect':>8}{'track':>7}{'draw+enc':>10}{'cores busy':>12}"
          + "  (median FPS (ratio); ms/frame; sequential/overlapped)")
    for label, size, median, ratio, stages, cores in rows:
        cells = [f"{median[way]:.1f} ({ratio[way]:.2f}x)" if way in median else "-" for way in columns]
        print(f"{label:<30}{size:>6}{median['sequential']:>12.1f}" + "".join(f"{cell:>16}" for cell in cells)
              + f"{stages['decode']:>8.1f}{stages['detect']:>8.1f}{stages['track']:>7.2f}"
              f"{stages['draw + encode']:>10.1f}{cores['sequential']:>7.2f}/{cores['overlapped']:.2f}")


if __name__ == "__main__":
    main()
