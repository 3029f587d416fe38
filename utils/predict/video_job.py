"""Predict mode on frames: a video file, a webcam or a folder read as frames, read,
detected and drawn in threads of their own, with optional tracking and line counts
(``run_predict_video``)."""

import logging
import sys
import time

from utils.predict.job import (
    EXIT_INTERRUPTED,
    EXIT_NOTHING_READ,
    EXIT_OK,
    PredictionOutputs,
    UsageError,
    format_counts,
    frame_loop,
    write_skipped,
)
from utils.predict.pipeline import FrameStream
from utils.predict.sources import (
    VideoWriter,
    frames_read_note,
)
from utils.predict.tracking import (
    SUMMARY_SUFFIX,
    TRACKS_SUFFIX,
    ObjectTracker,
    TrackingError,
)
from utils.predict.visualize import (
    CountsPanel,
    draw_detections,
    draw_tracking,
)

log = logging.getLogger(__name__)


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
    outputs = PredictionOutputs(predictor, out, save_txt, crop)
    handler = _PredictVideo(predictor, viewer, writer, source.stem, bar, outputs, count=count,
                            max_frames=max_frames, stream=stream, tracker=tracker, live=live)
    started = time.perf_counter()
    frames = (([item], [], 1) for item in stream)
    closers = (stream.close, writer.close) + ((tracker.close,) if tracker else ()) + (reader.close, viewer.close)
    end = frame_loop(frames, handler, bar, close=closers)
    write_skipped(out, getattr(reader, "skipped", []))
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
        print(f"Detections per class, summed over frames: {format_counts(dict(outputs.totals))}")
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
