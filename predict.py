"""Detects objects in an image, a folder, a video file or a webcam with a trained model.

The checkpoint carries the class names, input size and anchors, so --model and
--source are all that is needed; the other options override.

Modes (--mode):
  predict  (default) draws the detections and saves the result: an image keeps its
           file name (PNG stays PNG, other formats become .jpg), a video becomes
           <stem>.mp4, a webcam webcam<index>.mp4. --save-txt, --crop and --count add
           label files, one image per detected object, and per-class counts.
  fps      times one image (an image file, or the first readable image of a folder):
           --fps-warmup untimed runs, then --fps-runs timed ones; prints mean, p50 and
           p95 latency of preprocessing, network + decoding (the in-graph part) and
           drawing / host post-processing, and the frames per second.
  heatmap  saves <stem>_heatmap.png per image: the objectness (max over the anchors
           of sigmoid(objectness), per cell of each output level, the levels combined
           by their max) mapped back onto the original image and blended with a
           colour map (blue 0 ... red 1).

Outputs go to --out (default runs/predict). An existing folder is never written
into: the first free one of runs/predict2, runs/predict3, ... is used instead, for an
--out given explicitly too. Label files are <out>/labels/<stem>.txt with one
"class_name score x1 y1 x2 y2" line per detection (pixels; spaces in class names
become underscores); crops are <out>/crops/<class>/<stem>_<k>.jpg.

Exit status: 0 done (files of a folder that cannot be read are reported, skipped
and listed in <out>/skipped.txt); 1 no file of the folder, or no frame of the
video, could be read; 2 bad arguments, model, classes or anchors file, or a source
that cannot be opened; 130 stopped with Ctrl-C (outputs written so far are kept).
A webcam, which has no end, stopped with Ctrl-C or q exits with 0.

Examples:
  python predict.py --model logs/best.keras --source street.jpg
  python predict.py --model logs/best.keras --source images/ --batch-size 8 --save-txt --count
  python predict.py --model logs/best.keras --source clip.mp4 --show
  python predict.py --model logs/best.keras --source 0 --conf 0.4
  python predict.py --model logs/best.keras --source street.jpg --mode fps
  python predict.py --model logs/best.keras --source street.jpg --mode heatmap
"""

import argparse
import json
import logging
import sys
import time
from collections import Counter

import numpy as np

from utils.config import DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU, STRIDES
from utils.image import ImageLoadError, check_input_size
from utils.run_dir import next_run_dir
from utils.sources import (
    SourceError,
    VideoReader,
    VideoWriter,
    folder_files,
    image_output_name,
    iter_batches,
    parse_source,
    read_image,
    save_crops,
    save_image,
    save_labels,
    unique_stems,
)
from utils.visualize import (
    Viewer,
    blend_heatmap,
    count_classes,
    draw_detections,
    heat_to_image,
    objectness_map,
)

log = logging.getLogger("predict")

EXIT_OK, EXIT_NOTHING_READ, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MODES = ("predict", "fps", "heatmap")
# Detections listed per image on the console; the label files hold all of them.
MAX_PRINTED = 20


class UsageError(Exception):
    """A problem with the user's input; printed without a traceback, exit status 2."""


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value

    return parse


def _input_size(text):
    try:
        return check_input_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser():
    """The command-line parser (every option documented in --help)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True,
                        help="trained checkpoint (.keras, or .weights.h5 with its .json beside it)")
    parser.add_argument("--source", required=True,
                        help="an image file, a folder of images, a video file, or a webcam index (0, 1, ...)")
    parser.add_argument("--mode", choices=MODES, default="predict",
                        help="predict: save annotated outputs; fps: time one image; heatmap: save objectness "
                             "heat maps (default predict)")
    parser.add_argument("--out", default="runs/predict",
                        help="output folder (default runs/predict); if it exists, the first free of <out>2, "
                             "<out>3, ... is used, so no earlier run is overwritten")
    parser.add_argument("--classes",
                        help="class names file, one a line, for display (default: the names in the checkpoint); "
                             "must name as many classes as the model has")
    parser.add_argument("--input-size", type=_input_size,
                        help="network input side in pixels, a multiple of 32 (default: the checkpoint's)")
    parser.add_argument("--anchors", help="anchors file, one line 'w,h, w,h, ...' (default: the checkpoint's)")
    parser.add_argument("--conf", type=_fraction, default=DEFAULT_CONF,
                        help=f"lowest score (objectness x class probability) kept (default {DEFAULT_CONF})")
    parser.add_argument("--nms-iou", type=_fraction, default=DEFAULT_NMS_IOU,
                        help="IoU above which NMS drops the weaker of two boxes of a class "
                             f"(default {DEFAULT_NMS_IOU})")
    parser.add_argument("--max-boxes", type=_int_at_least(1), default=DEFAULT_MAX_BOXES,
                        help=f"most boxes kept per class and image (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--no-letterbox", action="store_true",
                        help="resize images to the input square ignoring their aspect ratio, instead of "
                             "letterboxing (use it if the model was trained that way)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=1,
                        help="images per network call for folders, in predict and heatmap modes (default 1)")
    parser.add_argument("--save-txt", action="store_true",
                        help="also write <out>/labels/<stem>.txt, one 'class_name score x1 y1 x2 y2' line per "
                             "detection (for a video: <stem>_<frame>.txt per frame)")
    parser.add_argument("--crop", action="store_true",
                        help="also save each detected object as <out>/crops/<class>/<stem>_<k>.jpg "
                             "(k: rank by score, from 0)")
    parser.add_argument("--count", action="store_true",
                        help="draw the number of detections per class on the images and print it "
                             "(for folders and videos: totals at the end)")
    parser.add_argument("--show", action="store_true",
                        help="show the results in a window when a display exists (images: any key for the next, "
                             "q or Esc to stop; videos: q or Esc to stop); without a display this is reported once "
                             "and outputs are still saved")
    parser.add_argument("--max-frames", type=_int_at_least(1),
                        help="stop a video or webcam after this many frames (default: until it ends or Ctrl-C)")
    parser.add_argument("--fps-runs", type=_int_at_least(1), default=50,
                        help="fps mode: timed runs (default 50)")
    parser.add_argument("--fps-warmup", type=_int_at_least(0), default=5,
                        help="fps mode: untimed runs first, to build the graph and warm caches (default 5)")
    parser.add_argument("--heatmap-levels", action="store_true",
                        help="heatmap mode: also save one map per output level, <stem>_heatmap_s<stride>.png")
    return parser


def load_predictor(args):
    """The Predictor for --model and the prediction options; UsageError on bad files."""
    from utils.checkpoint import CheckpointError
    from utils.inference import Predictor

    try:
        return Predictor.from_checkpoint(
            args.model,
            classes_path=args.classes,
            input_size=args.input_size,
            anchors_path=args.anchors,
            conf=args.conf,
            nms_iou=args.nms_iou,
            max_boxes=args.max_boxes,
            letterbox=not args.no_letterbox,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        # ClassCountError is a ValueError, as are bad classes and anchors files.
        raise UsageError(str(exc)) from None


def _fmt_box(box):
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def print_detections(name, image, det, class_names):
    """Prints one image's detections compactly: a header line, then one line each."""
    height, width = image.shape[:2]
    print(f"{name} ({width}x{height}): {len(det)} detection{'s' if len(det) != 1 else ''}")
    for box, score, cls in list(zip(det.boxes, det.scores, det.classes))[:MAX_PRINTED]:
        print(f"  {class_names[int(cls)]:<16} {float(score):.2f}  {_fmt_box(box)}")
    if len(det) > MAX_PRINTED:
        print(f"  ... and {len(det) - MAX_PRINTED} more (--save-txt writes them all)")


def _format_counts(counts):
    return ", ".join(f"{name} {n}" for name, n in counts.items()) if counts else "none"


def _image_paths(source):
    if source.kind == "image":
        return [source.path]
    return folder_files(source.path)


def _report_skips(skipped, bar):
    for item in skipped:
        bar.write(f"skipped {item.detail}", file=sys.stderr)


def _summary_line(processed, skipped, what="image"):
    line = f"Processed {processed} {what}{'s' if processed != 1 else ''}"
    if skipped:
        reasons = Counter(item.reason for item in skipped)
        line += f"; skipped {len(skipped)}: " + ", ".join(f"{n} {reason}" for reason, n in reasons.items())
    return line + "."


def _write_skipped(out, skipped):
    if skipped:
        path = out / "skipped.txt"
        path.write_text("".join(f"{item.detail}\n" for item in skipped), encoding="utf-8")
        print(f"Skipped files listed in {path}")


def _check_single_image(source):
    """Reads an image source up front so that an unreadable file is a usage error."""
    try:
        read_image(source.path)
    except ImageLoadError as exc:
        raise UsageError(str(exc)) from None


def run_predict_images(predictor, source, args, out, viewer):
    """Predict mode on an image or a folder; returns the exit status."""
    from tqdm import tqdm

    names = predictor.class_names
    paths = _image_paths(source)
    stems = unique_stems(paths)
    single = source.kind == "image"
    processed, skipped, totals, interrupted, stopped = 0, [], Counter(), False, False
    bar = tqdm(total=len(paths), unit="img", desc=str(source.path), disable=single)
    try:
        for loaded, batch_skipped, done in iter_batches(paths, args.batch_size):
            skipped += batch_skipped
            _report_skips(batch_skipped, bar)
            if loaded:
                detections = predictor.predict_batch([image for _, image in loaded])
                for (path, image), det in zip(loaded, detections):
                    annotated = draw_detections(image, det, names, counts=args.count)
                    stem = stems[path]
                    save_image(out / image_output_name(path, stem), annotated)
                    if args.save_txt:
                        save_labels(out, stem, det, names)
                    if args.crop:
                        save_crops(out, stem, image, det, names)
                    counts = count_classes(det.classes, names)
                    totals.update(counts)
                    processed += 1
                    if single:
                        print_detections(path.name, image, det, names)
                        if args.count:
                            print(f"counts: {_format_counts(counts)}")
                    if not viewer.show(annotated, wait_ms=0):
                        stopped = True
                        break
            bar.update(done)
            if stopped:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        viewer.close()
    if not single or skipped or interrupted or stopped:
        print(_summary_line(processed, skipped) + (" Stopped early." if interrupted or stopped else ""))
        if args.count and not single:
            in_class_order = {name: totals[name] for name in names if totals[name]}
            print(f"Per-class totals: {_format_counts(in_class_order)}")
    _write_skipped(out, skipped)
    return _images_status(processed, skipped, interrupted)


def _images_status(processed, skipped, interrupted):
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOTHING_READ if skipped and not processed else EXIT_OK


def run_predict_video(predictor, reader, args, out, viewer):
    """Predict mode on a video file or a webcam; returns the exit status."""
    from tqdm import tqdm

    names = predictor.class_names
    source = reader.source
    total = reader.frame_count
    if args.max_frames:
        total = min(total, args.max_frames) if total else args.max_frames
    writer = VideoWriter(out / f"{source.stem}.mp4", reader.fps)
    bar = tqdm(total=total, unit="frame", desc=str(source))
    totals, fps, last, interrupted, started = Counter(), None, None, False, time.perf_counter()
    try:
        for frame in reader:
            now = time.perf_counter()
            if last is not None:
                # Frame-to-frame time: reading, detecting, drawing, writing and showing.
                current = 1.0 / max(now - last, 1e-9)
                fps = current if fps is None else 0.9 * fps + 0.1 * current
            last = now
            det = predictor.predict_batch([frame])[0]
            annotated = draw_detections(frame, det, names, counts=args.count, fps=fps)
            writer.write(annotated)
            stem = f"{source.stem}_{writer.frames - 1:06d}"
            if args.save_txt:
                save_labels(out, stem, det, names)
            if args.crop:
                save_crops(out, stem, frame, det, names)
            totals.update(count_classes(det.classes, names))
            if fps is not None:
                bar.set_postfix(fps=f"{fps:.1f}", refresh=False)
            bar.update(1)
            if not viewer.show(annotated, wait_ms=1):
                break
            if args.max_frames and writer.frames >= args.max_frames:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        writer.close()
        reader.close()
        viewer.close()
    if writer.frames == 0 and not interrupted:
        print(f"No frame could be read from {source}; no video written.", file=sys.stderr)
        return EXIT_NOTHING_READ
    elapsed = time.perf_counter() - started
    rate = writer.frames / elapsed if elapsed > 0 else 0.0
    print(f"Wrote {writer.frames} frames to {writer.path} ({rate:.1f} FPS overall)"
          + (". Stopped with Ctrl-C." if interrupted else "."))
    if args.count:
        print(f"Detections per class, summed over frames: {_format_counts(dict(totals))}")
    if interrupted and source.kind != "webcam":
        return EXIT_INTERRUPTED
    return EXIT_OK


def _stats_ms(values):
    values = 1e3 * np.asarray(values, np.float64)
    return float(values.mean()), float(np.percentile(values, 50)), float(np.percentile(values, 95))


def first_image(source):
    """(path, RGB image) of an image source, or of the first readable image of a folder."""
    for loaded, _, _ in iter_batches(_image_paths(source), 1):
        if loaded:
            return loaded[0]
    raise UsageError(f"No readable image in {source.path}; fps mode needs one image.")


def run_fps(predictor, path, image, args, out):
    """Fps mode: repeated timing of one image; returns the exit status."""
    names = predictor.class_names
    stages = {"preprocessing": [], "network + decoding (in graph)": [], "drawing / host post-processing": [],
              "total": []}

    def one_run():
        timings = {}
        start = time.perf_counter()
        det = predictor.predict_batch([image], timings)[0]
        predicted = time.perf_counter()
        annotated = draw_detections(image, det, names, counts=args.count)
        end = time.perf_counter()
        host = (predicted - start - timings["pre"] - timings["net_post"]) + (end - predicted)
        return (timings["pre"], timings["net_post"], host, end - start), det, annotated

    try:
        for _ in range(args.fps_warmup):
            one_run()
        for _ in range(args.fps_runs):
            times, det, annotated = one_run()
            for key, value in zip(stages, times):
                stages[key].append(value)
    except KeyboardInterrupt:
        print("Stopped with Ctrl-C.")
        return EXIT_INTERRUPTED
    height, width = image.shape[:2]
    print(f"fps mode: {path.name} ({width}x{height}), input {predictor.input_size}, batch 1, "
          f"{args.fps_runs} timed runs after {args.fps_warmup} warm-up, {len(det)} detections")
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
               "runs": args.fps_runs, "warmup": args.fps_warmup, "fps": fps, "stages": report}
    (out / "fps.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


def run_heatmap(predictor, source, args, out):
    """Heatmap mode on an image or a folder; returns the exit status."""
    from tqdm import tqdm

    paths = _image_paths(source)
    stems = unique_stems(paths)
    single = source.kind == "image"
    processed, skipped, interrupted = 0, [], False
    bar = tqdm(total=len(paths), unit="img", desc=str(source.path), disable=single)
    try:
        for loaded, batch_skipped, done in iter_batches(paths, args.batch_size):
            skipped += batch_skipped
            _report_skips(batch_skipped, bar)
            if loaded:
                raw = predictor.raw_outputs([image for _, image in loaded])
                for i, (path, image) in enumerate(loaded):
                    maps = [heat_to_image(objectness_map(level[i], predictor.num_classes), image.shape[:2],
                                          predictor.input_size, letterboxed=predictor.letterbox) for level in raw]
                    heat = np.max(maps, axis=0)
                    target = save_image(out / f"{stems[path]}_heatmap.png", blend_heatmap(image, heat))
                    if args.heatmap_levels:
                        for stride, level_map in zip(STRIDES, maps):
                            save_image(out / f"{stems[path]}_heatmap_s{stride}.png", blend_heatmap(image, level_map))
                    processed += 1
                    if single:
                        print(f"{path.name}: objectness max {heat.max():.3f}, mean {heat.mean():.3f} -> {target}")
            bar.update(done)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if not single or skipped or interrupted:
        print(_summary_line(processed, skipped) + (" Stopped early." if interrupted else ""))
    _write_skipped(out, skipped)
    return _images_status(processed, skipped, interrupted)


def open_source(args):
    """Parses --source for the mode; opens videos and webcams. Returns (Source, VideoReader or None)."""
    try:
        source = parse_source(args.source)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if source.kind in ("video", "webcam"):
        if args.mode != "predict":
            raise UsageError(f"--mode {args.mode} works on an image or a folder, not on {source} (use --mode predict).")
        try:
            return source, VideoReader(source)
        except SourceError as exc:
            raise UsageError(str(exc)) from None
    if source.kind == "image":
        _check_single_image(source)
    elif not folder_files(source.path):
        raise UsageError(f"Folder {source.path} holds no files to process.")
    return source, None


def _warn_unused(args):
    if args.mode != "predict":
        for flag, used in (("--save-txt", args.save_txt), ("--crop", args.crop), ("--max-frames", args.max_frames)):
            if used:
                log.warning("%s is used in predict mode only; ignored in %s mode.", flag, args.mode)
    if args.mode != "heatmap" and args.heatmap_levels:
        log.warning("--heatmap-levels is used in heatmap mode only; ignored.")
    if args.mode == "fps" and args.show:
        log.warning("--show is not used in fps mode (a window would distort the timing); ignored.")


def run(args):
    """Runs one mode; returns the exit status."""
    _warn_unused(args)
    source, reader = open_source(args)
    try:
        fps_image = first_image(source) if args.mode == "fps" else None
        predictor = load_predictor(args)
        try:
            out = next_run_dir(args.out)
        except (OSError, ValueError) as exc:
            raise UsageError(f"Cannot create the output folder for --out {args.out!r}: {exc}") from None
    except BaseException:
        if reader is not None:
            reader.close()
        raise
    if args.mode == "fps":
        status = run_fps(predictor, *fps_image, args, out)
    elif args.mode == "heatmap":
        status = run_heatmap(predictor, source, args, out)
    else:
        viewer = Viewer(f"predict: {source}") if args.show else _NoViewer()
        if reader is not None:
            status = run_predict_video(predictor, reader, args, out, viewer)
        else:
            status = run_predict_images(predictor, source, args, out, viewer)
    print(f"Results saved to {out}")
    return status


class _NoViewer:
    """Stands in for a Viewer when --show is off."""

    def show(self, image, wait_ms=1):
        return True

    def close(self):
        pass


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except UsageError as exc:
        print(f"predict.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("Stopped with Ctrl-C.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
