"""The prediction job behind predict.py: opening a source and running one mode on it.

Modes:
    predict: draws the detections and saves the annotated images or video, with
             optional label files, crops and per-class counts
             (``run_predict_images``, ``run_predict_video``).
    fps:     times one image and reports per-stage latency (``run_fps``).
    heatmap: saves the objectness heat map of each image (``run_heatmap``).

Predict mode on images or a video and heatmap mode share one frame loop
(``frame_loop``): it calls the mode's handler on each batch of frames and owns the
progress bar, the messages for skipped files, stopping early and Ctrl-C. A video's
frames come from a ``utils.predict.pipeline.FrameStream`` (read and detected in
threads of their own), and with --track go through a
``utils.predict.tracking.ObjectTracker`` before they are drawn.

Every ``run_*`` function writes under an output folder that already exists, prints
its progress and summary, and returns the process exit status (``EXIT_*``). Problems
with the user's input raise ``UsageError``, whose message is meant to be printed as
is, without a traceback.
"""

import itertools
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from utils.config import STRIDES
from utils.image import ImageLoadError
from utils.run_dir import next_run_dir
from utils.predict.pipeline import FrameStream
from utils.predict.sources import (
    FrameSequence,
    SourceError,
    VideoReader,
    VideoWriter,
    folder_files,
    frames_read_note,
    image_output_name,
    iter_batches,
    parse_source,
    read_image,
    save_crops,
    save_image,
    save_labels,
    unique_stems,
)
from utils.predict.tracking import (
    SUMMARY_SUFFIX,
    TRACKS_SUFFIX,
    ObjectTracker,
    TrackingError,
    TrackingOptions,
    place_count_line,
    tracker_settings,
)
from utils.predict.visualize import (
    CountsPanel,
    Viewer,
    blend_heatmap,
    count_classes,
    draw_detections,
    draw_tracking,
    heat_to_image,
    objectness_map,
)

log = logging.getLogger(__name__)

EXIT_OK, EXIT_NOTHING_READ, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MODES = ("predict", "fps", "heatmap")
# Detections listed per image on the console; the label files hold all of them.
MAX_PRINTED = 20


class UsageError(Exception):
    """A problem with the user's input; printed without a traceback, exit status 2."""


# --- sources and outputs ---------------------------------------------------------------


def open_source(text, mode="predict", tracking=None):
    """Parses a --source value for a mode and checks that it can be read.

    An image is read once up front and a folder must hold at least one file, so that
    these problems are reported before a model is loaded. Videos and webcams are
    opened here and work in predict mode only. With ``tracking`` a folder is read as
    the frames of one video.

    Args:
        text: an image file, a folder, a video file or a webcam index ("0", "1", ...).
        mode: one of ``MODES``.
        tracking: the run's TrackingOptions, or None.

    Returns:
        (Source, reader): reader a VideoReader for a video or a webcam, a
        FrameSequence for a folder with ``tracking``, None otherwise.

    Raises:
        UsageError: the source does not exist, cannot be opened or read, is an empty
            folder, is a video or webcam in a mode other than predict, or is a
            single image with ``tracking``.
    """
    try:
        source = parse_source(text)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if tracking is not None and source.kind == "image":
        raise UsageError(f"--track follows objects from frame to frame and {source.path} is a single image; "
                         "pass a video file, a webcam index or a folder of frames.")
    if tracking is not None and source.kind == "folder":
        sequence = FrameSequence(source, fps=tracking.overrides.get("track_frame_rate"))
        if not sequence.paths:
            raise UsageError(f"Folder {source.path} holds no files to process.")
        return source, _with_count_line(sequence, tracking)
    if source.kind in ("video", "webcam"):
        if mode != "predict":
            raise UsageError(f"--mode {mode} works on an image or a folder, not on {source} (use --mode predict).")
        try:
            return source, _with_count_line(VideoReader(source), tracking)
        except SourceError as exc:
            raise UsageError(str(exc)) from None
    if source.kind == "image":
        _check_single_image(source)
    elif not folder_files(source.path):
        raise UsageError(f"Folder {source.path} holds no files to process.")
    return source, None


def _with_count_line(reader, tracking):
    """``reader``, once --count-line is known to lie on its frames; prints how the line was read.

    Raises:
        UsageError: the line lies outside the frame or is too short (the reader is closed).
    """
    if tracking is not None and tracking.count_line is not None:
        try:
            print(place_count_line(tracking.count_line, reader.frame_size, reader.source))
        except TrackingError as exc:
            reader.close()
            raise UsageError(str(exc)) from None
    return reader


def _check_single_image(source):
    """Reads an image source up front so that an unreadable file is a usage error."""
    try:
        read_image(source.path)
    except ImageLoadError as exc:
        raise UsageError(str(exc)) from None


def _image_paths(source):
    if source.kind == "image":
        return [source.path]
    return folder_files(source.path)


def first_image(source):
    """The image fps mode times.

    Args:
        source: an image or a folder Source.

    Returns:
        (path, image): the image file, or the first readable image of the folder, and
        its pixels as an (H, W, 3) uint8 RGB array.

    Raises:
        UsageError: no file of the folder can be read as an image.
    """
    for loaded, _, _ in iter_batches(_image_paths(source), 1):
        if loaded:
            return loaded[0]
    raise UsageError(f"No readable image in {source.path}; fps mode needs one image.")


def first_images(source, count):
    """The first ``count`` readable pictures of a source, which ``--runtime auto``
    checks an export on: the run's own pictures, not drawn ones.

    Args:
        source: the run's Source.
        count: how many pictures at most.

    Returns:
        (images, where): RGB uint8 arrays and what they are ("the first 8 frames of
        clip.mp4"); no images for a webcam, whose frames belong to the run.
    """
    if source.kind == "webcam":
        return [], "a webcam"
    if source.kind == "video":
        try:
            with VideoReader(source) as reader:
                images = list(itertools.islice(reader, count))
        except SourceError:  # it opened once already; should it fail now, drawn images stand in
            images = []
        what = "frames"
    else:
        loaded = (image for batch, _, _ in iter_batches(_image_paths(source), 1) for _, image in batch)
        images, what = list(itertools.islice(loaded, count)), "images"
    if source.kind == "image":
        return images, source.path.name
    return images, f"the first {len(images)} {what} of {source.path.name}"


def output_dir(out):
    """Creates the run folder: ``out``, or the first free of ``<out>2``, ``<out>3``, ...

    Args:
        out: the output folder asked for (--out).

    Returns:
        The Path of the folder created.

    Raises:
        UsageError: the folder cannot be created (the message quotes ``out``).
    """
    try:
        return next_run_dir(out)
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot create the output folder for --out {out!r}: {exc}") from None


class _NoViewer:
    """Stands in for a Viewer when --show is off."""

    def show(self, image, wait_ms=1):
        return True

    def close(self):
        pass


def open_viewer(source, show):
    """The window predict mode shows its results in.

    Args:
        source: the Source being processed (named in the window title).
        show: whether results are shown (--show).

    Returns:
        A ``utils.predict.visualize.Viewer`` when ``show`` is set, else an object with the
        same ``show`` and ``close`` methods that shows nothing.
    """
    return Viewer(f"predict: {source}") if show else _NoViewer()


# --- console output --------------------------------------------------------------------


def _fmt_box(box):
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def print_detections(name, image, det, class_names):
    """Prints one image's detections compactly: a header line, then one line each.

    At most ``MAX_PRINTED`` detections are listed; a last line says how many more
    there are.

    Args:
        name: the image's file name.
        image: the image, (H, W, 3) uint8 RGB.
        det: its Detections (boxes ``(N, 4)`` xyxy pixels, scores ``(N,)``,
            classes ``(N,)``).
        class_names: names indexed by class id.
    """
    height, width = image.shape[:2]
    print(f"{name} ({width}x{height}): {len(det)} detection{'s' if len(det) != 1 else ''}")
    for box, score, cls in list(zip(det.boxes, det.scores, det.classes))[:MAX_PRINTED]:
        print(f"  {class_names[int(cls)]:<16} {float(score):.2f}  {_fmt_box(box)}")
    if len(det) > MAX_PRINTED:
        print(f"  ... and {len(det) - MAX_PRINTED} more (--save-txt writes them all)")


def _format_counts(counts):
    return ", ".join(f"{name} {n}" for name, n in counts.items()) if counts else "none"


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


# --- the frame loop --------------------------------------------------------------------


@dataclass
class LoopEnd:
    """How a frame loop ended.

    Attributes:
        skipped: the ``Skipped`` inputs met, in order.
        interrupted: the run was stopped with Ctrl-C.
        stopped: the handler asked to stop (the viewer was closed, a frame limit reached).
    """

    skipped: list
    interrupted: bool
    stopped: bool


def frame_loop(batches, handle, bar, close=()):
    """Runs a mode's handler on each batch of frames until the input ends, the handler
    asks to stop, or Ctrl-C.

    Skipped inputs are written above the progress bar as they are met. The bar and
    everything in ``close`` are closed however the loop ends.

    Args:
        batches: iterable of ``(items, skipped, done)``, as from
            ``utils.predict.sources.iter_batches``: the items to handle, the
            ``Skipped`` inputs met while reading them, and how many inputs they consumed
            (the bar advances by that much).
        handle: called with each non-empty ``items`` list; returns False to stop.
        bar: a tqdm progress bar.
        close: callables run at the end, in order (writer, reader, viewer).

    Returns:
        LoopEnd.
    """
    skipped, interrupted, stopped = [], False, False
    try:
        for items, batch_skipped, done in batches:
            skipped += batch_skipped
            _report_skips(batch_skipped, bar)
            stopped = bool(items) and not handle(items)
            bar.update(done)
            if stopped:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        for closer in close:
            closer()
    return LoopEnd(skipped, interrupted, stopped)


def _image_loop(source, paths, batch_size, handle, close=()):
    """The frame loop over image files, with a progress bar for a folder."""
    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="img", desc=str(source.path), disable=source.kind == "image")
    return frame_loop(iter_batches(paths, batch_size), handle, bar, close)


def _finish_images(out, single, processed, end, totals=None):
    """Prints an image mode's summary, lists the skipped files, returns the exit status.

    The summary line is printed for a folder, or for a single image that was skipped
    or stopped; ``totals`` (a line) follows it for a folder.
    """
    if not single or end.skipped or end.interrupted or end.stopped:
        print(_summary_line(processed, end.skipped) + (" Stopped early." if end.interrupted or end.stopped else ""))
        if totals and not single:
            print(totals)
    _write_skipped(out, end.skipped)
    if end.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOTHING_READ if end.skipped and not processed else EXIT_OK


# --- modes -----------------------------------------------------------------------------


class _PredictionOutputs:
    """What predict mode saves of each image or frame besides the annotated picture:
    label files and crops as asked, and the per-class counts summed over the run."""

    def __init__(self, predictor, out, save_txt, crop):
        self.names, self.out, self.save_txt, self.crop = predictor.class_names, out, save_txt, crop
        self.totals = Counter()

    def save(self, stem, image, det):
        """Writes the label file and crops asked for; returns the per-class counts of ``det``."""
        if self.save_txt:
            save_labels(self.out, stem, det, self.names)
        if self.crop:
            save_crops(self.out, stem, image, det, self.names)
        counts = count_classes(det.classes, self.names)
        self.totals.update(counts)
        return counts


class _PredictImages:
    """Predict mode's handler for a batch of images: draws, saves and shows each one."""

    def __init__(self, predictor, viewer, stems, single, outputs, *, count):
        self.predictor, self.viewer, self.stems, self.single = predictor, viewer, stems, single
        self.outputs, self.count = outputs, count
        self.processed = 0

    def __call__(self, loaded):
        names = self.predictor.class_names
        detections = self.predictor.predict_batch([image for _, image in loaded])
        for (path, image), det in zip(loaded, detections):
            annotated = draw_detections(image, det, names, counts=self.count)
            stem = self.stems[path]
            save_image(self.outputs.out / image_output_name(path, stem), annotated)
            counts = self.outputs.save(stem, image, det)
            self.processed += 1
            if self.single:
                print_detections(path.name, image, det, names)
                if self.count:
                    print(f"counts: {_format_counts(counts)}")
            if not self.viewer.show(annotated, wait_ms=0):
                return False
        return True


def run_predict_images(predictor, source, out, viewer, *, batch_size=1, save_txt=False, crop=False, count=False):
    """Predict mode on an image or a folder.

    Saves each annotated image under ``out`` (see ``utils.predict.sources`` for the names).
    Files of a folder that cannot be read are reported, skipped and listed in
    ``<out>/skipped.txt``. A single image has its detections printed; a folder gets
    a progress bar and a summary.

    Args:
        predictor: the ``utils.predict.predictor.Predictor`` to run.
        source: an image or a folder Source.
        out: the run folder (existing) to write into.
        viewer: shows each annotated image; its ``show`` returning False stops the run.
        batch_size: images per network call.
        save_txt: also write ``<out>/labels/<stem>.txt``.
        crop: also save each detected object under ``<out>/crops/<class>/``.
        count: draw per-class counts on the images and print them (totals for a folder).

    Returns:
        ``EXIT_OK``; ``EXIT_NOTHING_READ`` if files were skipped and none was read;
        ``EXIT_INTERRUPTED`` after Ctrl-C (outputs written so far are kept).
    """
    paths = _image_paths(source)
    single = source.kind == "image"
    outputs = _PredictionOutputs(predictor, out, save_txt, crop)
    handler = _PredictImages(predictor, viewer, unique_stems(paths), single, outputs, count=count)
    end = _image_loop(source, paths, batch_size, handler, close=(viewer.close,))
    totals = None
    if count:
        in_class_order = {name: outputs.totals[name] for name in predictor.class_names if outputs.totals[name]}
        totals = f"Per-class totals: {_format_counts(in_class_order)}"
    return _finish_images(out, single, handler.processed, end, totals)


class _PredictVideo:
    """Predict mode's handler for one frame of a video, a webcam or a folder of frames
    (a ``StreamedFrame`` with its detections): tracks it if asked, draws it with the
    frame rate, writes it to the video and shows it."""

    def __init__(self, predictor, viewer, writer, stem, bar, outputs, *, count, max_frames, stream,
                 tracker=None, live=False):
        self.predictor, self.viewer, self.writer, self.stem, self.bar = predictor, viewer, writer, stem, bar
        self.outputs, self.max_frames = outputs, max_frames
        self.counts_panel = CountsPanel() if count else False  # the panel's corner, from frame to frame
        self.stream, self.tracker, self.live = stream, tracker, live
        self.fps, self.last = None, None

    def _status(self):
        """Lines drawn under the frame rate: a camera's rates and drops, a line's counts."""
        lines = []
        if self.live:
            rates = (("detector", self.stream.detector_fps), ("camera", self.stream.camera_fps))
            lines += [f"{name} {rate:.1f} FPS" for name, rate in rates if rate is not None]
            lines.append(f"dropped {self.stream.dropped}")
        if self.tracker is not None and self.tracker.count_line is not None:
            crossed_in, crossed_out = self.tracker.line_counts()
            lines.append(f"in {sum(crossed_in.values())}  out {sum(crossed_out.values())}")
        return lines

    def __call__(self, items):
        now = time.perf_counter()
        if self.last is not None:
            # Frame-to-frame time of the whole pipeline: reading, detecting, drawing, writing and showing.
            current = 1.0 / max(now - self.last, 1e-9)
            self.fps = current if self.fps is None else 0.9 * self.fps + 0.1 * current
        self.last = now
        item = items[0]
        frame, det = item.frame, item.result
        picture = None  # drawn on a copy: the frame itself is saved as it is (crops)
        if self.tracker is not None:
            det = self.tracker.update(det, frame.shape[:2], frame=frame, frame_number=item.index + 1,
                                      timestamp=item.timestamp if self.live else None)
            picture = draw_tracking(frame, self.tracker.trails(det), self.tracker.line)
        annotated = draw_detections(frame, det, self.predictor.class_names, counts=self.counts_panel,
                                    fps=None if self.live else self.fps, status=self._status(), out=picture)
        self.writer.write(annotated)
        self.outputs.save(f"{self.stem}_{self.writer.frames - 1:06d}", frame, det)
        if self.fps is not None:
            self.bar.set_postfix(fps=f"{self.fps:.1f}", refresh=False)
        if not self.viewer.show(annotated, wait_ms=1):
            return False
        return not (self.max_frames and self.writer.frames >= self.max_frames)


def run_predict_video(predictor, reader, out, viewer, *, save_txt=False, crop=False, count=False, max_frames=None,
                      tracking=None, overlap=True):
    """Predict mode on a video file, a webcam or a folder of frames.

    Writes the annotated frames to ``<out>/<stem>.mp4`` with the frame rate drawn on
    them; label files and crops are named ``<stem>_<frame>``. Frames are read,
    detected and drawn/written in three threads (``utils.predict.pipeline``), and
    written in order. A webcam's frames are read as they come and the detector
    takes the newest, so the picture keeps up with the camera; the frames it had no
    time for are dropped and counted, and the detector's and the camera's frame
    rates are drawn. The reader is closed when the run ends.

    With ``tracking`` each box gets a track ID, and ``<out>/<stem>_tracks.txt``
    (MOT challenge) and ``<out>/<stem>_summary.json`` (unique objects per class,
    line crossings, tracker settings) are written; the counts are printed at the end.

    Args:
        predictor: the ``utils.predict.predictor.Predictor`` to run (or any object
            with its ``predict_batch`` and ``class_names``).
        reader: an open ``utils.predict.sources.VideoReader`` or ``FrameSequence``.
        out: the run folder (existing) to write into.
        viewer: shows each annotated frame; its ``show`` returning False stops the run.
        save_txt: also write ``<out>/labels/<stem>_<frame>.txt``.
        crop: also save each detected object under ``<out>/crops/<class>/``.
        count: draw per-class counts on the frames and print the totals.
        max_frames: stop after this many frames (None: until the source ends).
        tracking: TrackingOptions, or None not to track.
        overlap: read, detect and draw in threads of their own, with as many
            detector threads as the predictor's ``for_streams`` says for a file
            (False: one after the other, for comparison; a webcam always overlaps,
            with one detector).

    Returns:
        ``EXIT_OK``; ``EXIT_NOTHING_READ`` if no frame could be read;
        ``EXIT_INTERRUPTED`` after Ctrl-C on a video file (the frames written so far
        are kept; a webcam, which has no end, stopped with Ctrl-C gives ``EXIT_OK``).
    """
    from tqdm import tqdm

    source = reader.source
    live = source.kind == "webcam"
    total = reader.frame_count
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    writer = VideoWriter(out / f"{source.stem}.mp4", reader.fps)
    tracker = None
    if tracking is not None:
        try:
            tracker = ObjectTracker.create(tracking, predictor.class_names, frame_rate=reader.fps,
                                           mot_path=out / f"{source.stem}{TRACKS_SUFFIX}")
        except TrackingError as exc:
            reader.close()
            raise UsageError(str(exc)) from None
        print(tracker.describe())
    # A file is about frames per second: a runtime with several inference streams
    # detects several frames at once. A camera is about the delay: one at a time.
    for_streams = getattr(predictor, "for_streams", None)  # stand-ins may lack it
    detector, in_flight = for_streams() if for_streams and overlap and not live else (predictor, 1)
    if in_flight > 1:
        print(f"Detecting {in_flight} frames at once.")
    stream = FrameStream(reader, lambda frame: detector.predict_batch([frame])[0], overlap=overlap or live,
                         newest_only=live, detectors=in_flight)
    bar = tqdm(total=total, unit="frame", desc=str(source))
    outputs = _PredictionOutputs(predictor, out, save_txt, crop)
    handler = _PredictVideo(predictor, viewer, writer, source.stem, bar, outputs, count=count,
                            max_frames=max_frames, stream=stream, tracker=tracker, live=live)
    started = time.perf_counter()
    frames = (([item], [], 1) for item in stream)
    closers = (stream.close, writer.close) + ((tracker.close,) if tracker else ()) + (reader.close, viewer.close)
    end = frame_loop(frames, handler, bar, close=closers)
    _write_skipped(out, getattr(reader, "skipped", []))
    shortfall = None if end.stopped or end.interrupted else frames_read_note(reader, writer.frames)
    if writer.frames == 0 and not end.interrupted:
        print(f"{shortfall or f'No frame could be read from {source}'}; no video written.", file=sys.stderr)
        return EXIT_NOTHING_READ
    if shortfall:
        print(f"{shortfall}.", file=sys.stderr)
    elapsed = time.perf_counter() - started
    rate = writer.frames / elapsed if elapsed > 0 else 0.0
    dropped = f"; {stream.dropped} camera frames dropped while the detector was busy" if live else ""
    print(f"Wrote {writer.frames} frames to {writer.path} ({rate:.1f} FPS overall{dropped})"
          + (". Stopped with Ctrl-C." if end.interrupted else "."))
    if count:
        print(f"Detections per class, summed over frames: {_format_counts(dict(outputs.totals))}")
    if tracker is not None:
        for line in tracker.report_lines():
            print(line)
        extra = dict(source=str(source), video=writer.path.name, fps_overall=rate)
        if live:
            extra["dropped_frames"] = stream.dropped
        print(f"Summary written to {tracker.write_summary(out / f'{source.stem}{SUMMARY_SUFFIX}', **extra)}")
    if end.interrupted and source.kind != "webcam":
        return EXIT_INTERRUPTED
    return EXIT_OK


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


class _Heatmaps:
    """Heatmap mode's handler for a batch of images: saves each one's objectness map."""

    def __init__(self, predictor, out, stems, single, levels):
        self.predictor, self.out, self.stems, self.single, self.levels = predictor, out, stems, single, levels
        self.processed = 0

    def __call__(self, loaded):
        predictor = self.predictor
        raw = predictor.raw_outputs([image for _, image in loaded])
        for i, (path, image) in enumerate(loaded):
            maps = [heat_to_image(objectness_map(level[i], predictor.num_classes), image.shape[:2],
                                  predictor.input_size, letterboxed=predictor.letterbox) for level in raw]
            heat = np.max(maps, axis=0)
            stem = self.stems[path]
            target = save_image(self.out / f"{stem}_heatmap.png", blend_heatmap(image, heat))
            if self.levels:
                for stride, level_map in zip(STRIDES, maps):
                    save_image(self.out / f"{stem}_heatmap_s{stride}.png", blend_heatmap(image, level_map))
            self.processed += 1
            if self.single:
                print(f"{path.name}: objectness max {heat.max():.3f}, mean {heat.mean():.3f} -> {target}")
        return True


def run_heatmap(predictor, source, out, *, batch_size=1, levels=False):
    """Heatmap mode on an image or a folder.

    Saves ``<out>/<stem>_heatmap.png`` per image: the objectness (max over the anchors
    of sigmoid(objectness), per cell of each output level, the levels combined by
    their max) mapped back onto the original image and blended with a colour map.
    Unreadable files of a folder are handled as in predict mode.

    Args:
        predictor: the ``utils.predict.predictor.Predictor`` to run.
        source: an image or a folder Source.
        out: the run folder (existing) to write into.
        batch_size: images per network call.
        levels: also save one map per output level, ``<stem>_heatmap_s<stride>.png``.

    Returns:
        ``EXIT_OK``; ``EXIT_NOTHING_READ`` if files were skipped and none was read;
        ``EXIT_INTERRUPTED`` after Ctrl-C (outputs written so far are kept).
    """
    paths = _image_paths(source)
    single = source.kind == "image"
    handler = _Heatmaps(predictor, out, unique_stems(paths), single, levels)
    end = _image_loop(source, paths, batch_size, handler)
    return _finish_images(out, single, handler.processed, end)
