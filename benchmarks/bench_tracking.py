"""Tracking quality on synthetic sequences with ground-truth identities.

Objects cut from the real photos of ``benchmarks/real_photos.py`` (a cat, a cup, a
rocket, coins, ...) move across one of its real background photos: each enters from
an edge at its own time, crosses the frame in a straight line with a little wobble,
passes in front of or behind others and leaves. The ground truth (``gt.txt``, MOT
challenge: frame,id,x,y,w,h,1,1,1) holds each object while at least half of its box
is inside the frame; the frames are written as ``sequence.mp4`` too.

A detector trained on ``real_photos.py``'s data (e.g. the Lite0 of
``bench_recipe.py``) detects every frame of the video once, as predict.py reads it
(at a low threshold); then each
tracker of ``predict.py --track`` (``utils.predict.tracking.ObjectTracker``, the code
predict.py runs) follows the detections, with the library's defaults and predict.py's
default --conf, and with settings tuned by a random search on a second sequence
(tuning and scoring on different sequences). MOTA, IDF1, HOTA and ID switches come
from the ``trackers`` library's evaluation (TrackEval's definitions); the tracker's
own time per frame is printed beside them.

Usage:
    python benchmarks/bench_tracking.py --source scikit_image-*.whl \\
        --model logs/real_photos/best.keras --out /tmp/track_bench
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_photos import BACKGROUNDS, OBJECTS, PhotoSource, load_objects, soft_ellipse  # noqa: E402

from utils.config import DEFAULT_CONF  # noqa: E402
from utils.predict.tracking import TRACKER_SETTINGS, TRACKERS, ObjectTracker, tracker_settings  # noqa: E402

# Share of an object's box inside the frame for it to be in the ground truth.
MIN_VISIBLE = 0.5
# Score threshold of the cached detections; each setting filters them further.
CACHE_CONF = 0.05
# The random search's ranges: --conf and the --track-* settings.
SEARCH = {
    "conf": (0.1, 0.6),
    "track_activation": (0.2, 0.8),
    "track_high_conf": (0.3, 0.7),
    "track_match_iou": (0.05, 0.5),
    "track_buffer": (10, 90),
    "track_min_frames": (1, 4),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=None, help="scikit-image data folder or wheel (default: installed skimage)")
    p.add_argument("--model", required=True, help="a detector trained on real_photos.py's data (.keras)")
    p.add_argument("--out", required=True, help="folder for the sequences, detections and tracks")
    p.add_argument("--frames", type=int, default=300, help="frames per sequence (default 300)")
    p.add_argument("--objects", type=int, default=14, help="objects per sequence (default 14)")
    p.add_argument("--size", default="384x288", help="frame size WxH (default 384x288)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the sequences (default 30)")
    p.add_argument("--trials", type=int, default=40, help="random-search trials per tracker (default 40)")
    p.add_argument("--trackers", default=",".join(TRACKERS), help="trackers to score (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scored sequence; tuning uses seed+1")
    return p.parse_args(argv)


# --- the sequence -----------------------------------------------------------------------------


class Mover:
    """One object of a sequence: a photo crop crossing the frame in a straight line."""

    def __init__(self, rng, track_id, cls, patch, start, frame_wh, fps):
        self.id, self.cls, self.start = track_id, cls, start
        self.patch, self.mask = patch, soft_ellipse(patch.size)
        width, height = frame_wh
        w, h = patch.size
        side = rng.integers(4)
        # Enter from outside one edge, head for a point in the middle part of the frame.
        along = rng.uniform(0.1, 0.9)
        entry = [(-w, along * height), (width, along * height), (along * width, -h), (along * width, height)][side]
        target = np.array([rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height]) - (w / 2, h / 2)
        direction = target - entry
        speed = rng.uniform(40, 120) * width / 384 / fps  # pixels per frame: 0.1-0.3 of the width a second
        self.origin = np.array(entry, np.float64)
        self.velocity = direction / np.linalg.norm(direction) * speed
        self.wobble = (rng.uniform(0, 3), rng.uniform(20, 60), rng.uniform(0, 2 * np.pi))

    def box(self, frame):
        """xyxy of the whole patch at ``frame`` (None before it enters)."""
        t = frame - self.start
        if t < 0:
            return None
        amplitude, period, phase = self.wobble
        normal = np.array([-self.velocity[1], self.velocity[0]]) / max(np.linalg.norm(self.velocity), 1e-9)
        x, y = self.origin + self.velocity * t + normal * amplitude * np.sin(2 * np.pi * t / period + phase)
        return (x, y, x + self.patch.width, y + self.patch.height)


def make_sequence(photos, objects, seed, frames, count, frame_wh, fps, object_px=(28, 56)):
    """Frames (list of RGB uint8) and ground-truth rows (frame, id, x, y, w, h) of one
    sequence; objects are ``object_px`` (smallest, largest) pixels along their longer side."""
    rng = np.random.default_rng(seed)
    width, height = frame_wh
    background = photos.open(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    scale = max(width / background.width, height / background.height)
    background = background.resize((int(np.ceil(background.width * scale)), int(np.ceil(background.height * scale))))
    background = background.crop((0, 0, width, height))
    class_names = list(OBJECTS)
    movers = []
    for k in range(count):
        cls = int(rng.integers(len(class_names)))
        pool = objects[class_names[cls]]
        crop = pool[int(rng.integers(len(pool)))]
        side = float(rng.uniform(*object_px)) / max(crop.size)
        patch = crop.resize((max(8, round(crop.width * side)), max(8, round(crop.height * side))), Image.BILINEAR)
        if rng.random() < 0.5:
            patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
        start = int(k * frames / count + rng.integers(0, max(1, frames // count)))
        movers.append(Mover(rng, k + 1, cls, patch, start, frame_wh, fps))
    images, rows = [], []
    for frame in range(frames):
        canvas = ImageEnhance.Brightness(background).enhance(1.0 + 0.03 * np.sin(frame / 15))
        for mover in movers:
            box = mover.box(frame)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            canvas.paste(mover.patch, (int(round(x1)), int(round(y1))), mover.mask)
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if cx2 > cx1 and cy2 > cy1 and (cx2 - cx1) * (cy2 - cy1) >= MIN_VISIBLE * (x2 - x1) * (y2 - y1):
                rows.append((frame + 1, mover.id, cx1, cy1, cx2 - cx1, cy2 - cy1))
        images.append(np.asarray(canvas))
    return images, rows


def crossings(rows):
    """Pairs of ground-truth objects whose boxes overlap in some frame."""
    by_frame, pairs = {}, set()
    for frame, track, x, y, w, h in rows:
        by_frame.setdefault(frame, []).append((track, x, y, x + w, y + h))
    for boxes in by_frame.values():
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                if min(a[3], b[3]) > max(a[1], b[1]) and min(a[4], b[4]) > max(a[2], b[2]):
                    pairs.add((min(a[0], b[0]), max(a[0], b[0])))
    return len(pairs)


def write_sequence(folder, images, rows, fps):
    from utils.predict.sources import VideoWriter

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gt.txt").write_text("".join(f"{f},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,1,1\n"
                                           for f, i, x, y, w, h in rows))
    with VideoWriter(folder / "sequence.mp4", fps) as writer:
        for image in images:
            writer.write(image)


# --- detection and tracking -------------------------------------------------------------------


def detect_all(predictor, video):
    """The predictor's detections of every frame of ``video`` as predict.py reads it
    (after the video's lossy encoding), and the mean detection time per frame."""
    from utils.predict.sources import Source, VideoReader

    found, spent = [], 0.0
    with VideoReader(Source("video", video)) as reader:
        for image in reader:
            started = time.perf_counter()
            found.append(predictor.predict(image))
            spent += time.perf_counter() - started
    return found, spent / max(1, len(found))


def track(name, overrides, conf, detections, class_names, mot_path, fps, frame_hw):
    """Tracks cached detections above ``conf``, writing the MOT file; returns seconds per frame of the tracker."""
    settings = tracker_settings(name, overrides, frame_rate=fps)
    tracker = ObjectTracker(name, settings, class_names, mot_path=mot_path)
    spent = 0.0
    for det in detections:
        keep = det.scores > conf
        kept = type(det)(det.boxes[keep], det.scores[keep], det.classes[keep])
        started = time.perf_counter()
        tracker.update(kept, frame_hw)
        spent += time.perf_counter() - started
    tracker.close()
    if mot_path.stat().st_size == 0:  # the library's reader refuses an empty file
        mot_path.write_text("1,-1,0,0,1,1,0,-1,-1,-1\n")
    return spent / len(detections)


def score(gt_path, mot_path):
    """MOTA, IDF1, HOTA (percent), ID switches, false positives and misses."""
    from trackers.eval import evaluate_mot_sequence

    result = evaluate_mot_sequence(gt_path, mot_path, metrics=["CLEAR", "HOTA", "Identity"])
    return {"MOTA": 100 * result.CLEAR.MOTA, "IDF1": 100 * result.Identity.IDF1, "HOTA": 100 * result.HOTA.HOTA,
            "IDSW": int(result.CLEAR.IDSW), "FP": int(result.CLEAR.CLR_FP), "FN": int(result.CLEAR.CLR_FN)}


def sample(rng, name):
    """One random-search trial: conf and the settings the tracker has."""
    trial = {}
    for key, (low, high) in SEARCH.items():
        if key != "conf" and name not in TRACKER_SETTINGS[key]:
            continue
        if isinstance(low, int):
            trial[key] = int(rng.integers(low, high + 1))
        else:
            trial[key] = round(float(rng.uniform(low, high)), 2)
    return trial


def main(argv=None):
    args = parse_args(argv)
    from utils.predict.predictor import Predictor

    out = Path(args.out)
    width, height = (int(v) for v in args.size.lower().split("x"))
    photos = PhotoSource(args.source)
    objects = load_objects(photos)
    predictor = Predictor.from_checkpoint(args.model, conf=CACHE_CONF)
    class_names = predictor.class_names
    sequences = {}
    for role, seed in (("scored", args.seed), ("tuning", args.seed + 1)):
        images, rows = make_sequence(photos, objects, seed, args.frames, args.objects, (width, height), args.fps)
        folder = out / f"{role}_seed{seed}"
        write_sequence(folder, images, rows, args.fps)
        found, network_s = detect_all(predictor, folder / "sequence.mp4")
        sequences[role] = (folder, found)
        print(f"{role} sequence (seed {seed}): {args.frames} frames {width}x{height}, "
              f"{len({r[1] for r in rows})} objects, {crossings(rows)} crossing pairs, "
              f"{len(rows)} ground-truth boxes; detector {1e3 * network_s:.1f} ms/frame -> {folder}")

    names = [n.strip() for n in args.trackers.split(",") if n.strip()]
    table, report = [], {}
    for name in names:
        folder, found = sequences["tuning"]
        rng = np.random.default_rng(args.seed)
        best = None
        for trial_index in range(args.trials):
            trial = sample(rng, name)
            conf = trial.pop("conf")
            path = folder / f"{name}_trial{trial_index}.txt"
            track(name, trial, conf, found, class_names, path, args.fps, (height, width))
            metrics = score(folder / "gt.txt", path)
            path.unlink()
            if best is None or metrics["HOTA"] > best[0]["HOTA"]:
                best = (metrics, dict(trial, conf=conf))
        tuned = best[1]
        folder, found = sequences["scored"]
        for label, conf, overrides in (("defaults", DEFAULT_CONF, {}),
                                       ("tuned", tuned["conf"], {k: v for k, v in tuned.items() if k != "conf"})):
            path = folder / f"{name}_{label}.txt"
            per_frame = track(name, overrides, conf, found, class_names, path, args.fps, (height, width))
            metrics = score(folder / "gt.txt", path)
            table.append((name, label, metrics, 1e3 * per_frame))
            report[f"{name}_{label}"] = dict(metrics, tracker_ms_per_frame=1e3 * per_frame, conf=conf,
                                              settings=tracker_settings(name, overrides, frame_rate=args.fps))
    print()
    print(f"{'tracker':<10}{'settings':<10}{'MOTA':>7}{'IDF1':>7}{'HOTA':>7}{'IDSW':>6}{'FP':>6}{'FN':>6}"
          f"{'ms/frame':>10}")
    for name, label, m, ms in table:
        print(f"{name:<10}{label:<10}{m['MOTA']:>7.1f}{m['IDF1']:>7.1f}{m['HOTA']:>7.1f}{m['IDSW']:>6}{m['FP']:>6}"
              f"{m['FN']:>6}{ms:>10.2f}")
    print()
    for key, value in report.items():
        if key.endswith("_tuned"):
            print(f"{key}: --conf {value['conf']} " + " ".join(f"{k}={v:g}" for k, v in value["settings"].items()))
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
