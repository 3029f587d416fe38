"""What predict.py's modes share: opening a source, the output folder, the viewer,
and the frame loop. Each mode is a module of its own:

    predict: draws the detections and saves the annotated images or video, with
             optional label files, crops and per-class counts
             (``image_job.run_predict_images``, ``video_job.run_predict_video``).
    fps:     times one image and reports per-stage latency (``fps_job.run_fps``).
    heatmap: saves the objectness heat map of each image (``heatmap_job.run_heatmap``).

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
import logging
import sys
from collections import Counter
from dataclasses import dataclass

from utils.image import ImageLoadError
from utils.predict.sources import (
    FrameSequence,
    SourceError,
    VideoReader,
    folder_files,
    iter_batches,
    parse_source,
    read_image,
    save_crops,
    save_labels,
)
from utils.predict.tracking import (
    TrackingError,
    place_count_line,
)
from utils.predict.visualize import (
    Viewer,
    count_classes,
)
from utils.run_dir import next_run_dir

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


def image_paths(source):
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
    for loaded, _, _ in iter_batches(image_paths(source), 1):
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
        loaded = (image for batch, _, _ in iter_batches(image_paths(source), 1) for _, image in batch)
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


def format_counts(counts):
    return ", ".join(f"{name} {n}" for name, n in counts.items()) if counts else "none"


def report_skips(skipped, bar):
    for item in skipped:
        bar.write(f"skipped {item.detail}", file=sys.stderr)


def summary_line(processed, skipped, what="image"):
    line = f"Processed {processed} {what}{'s' if processed != 1 else ''}"
    if skipped:
        reasons = Counter(item.reason for item in skipped)
        line += f"; skipped {len(skipped)}: " + ", ".join(f"{n} {reason}" for reason, n in reasons.items())
    return line + "."


def write_skipped(out, skipped):
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
            report_skips(batch_skipped, bar)
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


def image_loop(source, paths, batch_size, handle, close=()):
    """The frame loop over image files, with a progress bar for a folder."""
    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="img", desc=str(source.path), disable=source.kind == "image")
    return frame_loop(iter_batches(paths, batch_size), handle, bar, close)


def finish_images(out, single, processed, end, totals=None):
    """Prints an image mode's summary, lists the skipped files, returns the exit status.

    The summary line is printed for a folder, or for a single image that was skipped
    or stopped; ``totals`` (a line) follows it for a folder.
    """
    if not single or end.skipped or end.interrupted or end.stopped:
        print(summary_line(processed, end.skipped) + (" Stopped early." if end.interrupted or end.stopped else ""))
        if totals and not single:
            print(totals)
    write_skipped(out, end.skipped)
    if end.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOTHING_READ if end.skipped and not processed else EXIT_OK


# --- modes -----------------------------------------------------------------------------


class PredictionOutputs:
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


