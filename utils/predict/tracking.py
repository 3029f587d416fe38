"""Following objects from frame to frame: track IDs, trails, line crossings and the
files a tracked run writes.

The trackers are those of Roboflow's ``trackers`` library (ByteTrack, BoT-SORT,
OC-SORT), fed with ``supervision.Detections``; line crossings are counted by
``supervision.LineZone``. ``ObjectTracker`` holds one run's tracker and what it
adds up: the MOT-challenge file, the unique objects per class, the line counts
and the trails.

Track IDs are the library's IDs plus one, so that the first object is #1 as in
MOT-challenge files; -1 marks a detection the tracker has not confirmed as a
track (yet).

Tracker settings are flags (``utils.api.cli.add_tracking_arguments``) that default to the
library's own value for the chosen tracker; ``TRACKER_SETTINGS`` says which
parameter of each tracker a flag sets.
"""

import inspect
import json
import logging
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: The trackers --tracker offers, with their class in the ``trackers`` library.
TRACKERS = {"bytetrack": "ByteTrackTracker", "botsort": "BoTSORTTracker", "ocsort": "OCSORTTracker"}
DEFAULT_TRACKER = "bytetrack"
#: Each tracker setting (the flag's dest) and the parameter it sets in each tracker;
#: a tracker missing from an entry has no such parameter.
TRACKER_SETTINGS = {
    "track_activation": {"bytetrack": "track_activation_threshold", "botsort": "track_activation_threshold",
                         "ocsort": "high_conf_det_threshold"},
    "track_high_conf": {"bytetrack": "high_conf_det_threshold", "botsort": "high_conf_det_threshold"},
    "track_match_iou": {"bytetrack": "minimum_iou_threshold", "botsort": "minimum_iou_threshold_first_assoc",
                        "ocsort": "minimum_iou_threshold"},
    "track_buffer": dict.fromkeys(TRACKERS, "lost_track_buffer"),
    "track_min_frames": dict.fromkeys(TRACKERS, "minimum_consecutive_frames"),
    "track_frame_rate": dict.fromkeys(TRACKERS, "frame_rate"),
}
# Trackers that look at the frame itself (BoT-SORT's camera motion compensation).
_FRAME_USERS = ("botsort",)
#: Shortest counting line, in pixels of the frame: a shorter one is all but never crossed.
MIN_COUNT_LINE_PX = 2.0
# Suffixes of the files a tracked run writes beside its video.
TRACKS_SUFFIX = "_tracks.txt"
SUMMARY_SUFFIX = "_summary.json"


class TrackingError(ValueError):
    """A tracking option that cannot be used; the message says what to change."""


# --- options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountLine:
    """A counting line as given on the command line.

    Attributes:
        points: (x1, y1, x2, y2).
        fractional: the points are fractions of the frame's width and height
            (every value within 0..1), not pixels.
    """

    points: tuple
    fractional: bool

    def in_pixels(self, width, height):
        """The line's two end points in pixels of a ``width`` x ``height`` frame."""
        x1, y1, x2, y2 = self.points
        if self.fractional:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        return (float(x1), float(y1)), (float(x2), float(y2))

    @property
    def read_as(self):
        """How the values were read: "fractions of the frame" or "pixels"."""
        return "fractions of the frame" if self.fractional else "pixels"

    def __str__(self):
        return ",".join(f"{v:g}" for v in self.points)


def _point(point):
    return f"({point[0]:g}, {point[1]:g})"


def count_line_problem(line, width, height):
    """Why a counting line cannot count on ``width`` x ``height`` frames, or None.

    A line counts objects that cross it inside the picture: both end points must
    lie on the frame (0..width, 0..height) and, once in pixels, be at least
    ``MIN_COUNT_LINE_PX`` apart.
    """
    start, end = line.in_pixels(width, height)
    outside = [p for p in (start, end) if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
    if outside:
        return (f"--count-line {line} is read as {line.read_as}, and {_point(outside[0])} lies outside the "
                f"{width}x{height} frame, where no object can cross it; give end points within 0..{width} x "
                f"0..{height} pixels, or fractions of the frame (0,0.5,1,0.5 is a line across the middle)")
    length = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    if length < MIN_COUNT_LINE_PX:
        return (f"--count-line {line} is read as {line.read_as}: {_point(start)} to {_point(end)} on the "
                f"{width}x{height} frame, {length:.3g} px long; a line must be at least {MIN_COUNT_LINE_PX:g} px "
                "long to count crossings (fractions of the frame: every value within 0..1)")
    return None


def place_count_line(line, frame_size, where):
    """Checks a counting line against a source's frame size before the run, and says how it was read.

    Args:
        line: the CountLine.
        frame_size: the source's (width, height) in pixels, or None when the source
            does not tell before its first frame (some cameras).
        where: the source, named in the messages.

    Returns:
        One line saying how the values were read and the pixel line they give.

    Raises:
        TrackingError: the line lies (partly) outside the frame, or is shorter than
            ``MIN_COUNT_LINE_PX`` once in pixels.
    """
    if frame_size is None:
        return (f"Counting line {line}: read as {line.read_as}; placed on the first frame of {where}, whose size "
                "it does not tell beforehand.")
    width, height = (int(v) for v in frame_size)
    problem = count_line_problem(line, width, height)
    if problem:
        raise TrackingError(f"{problem}.")
    start, end = line.in_pixels(width, height)
    return (f"Counting line {line}: read as {line.read_as}, the line {_point(start)} to {_point(end)} in pixels "
            f"of the {width}x{height} frames of {where}.")


def setting_flag(setting):
    """The command-line flag of a ``TRACKER_SETTINGS`` key."""
    return "--" + setting.replace("_", "-")


def parse_count_line(text):
    """Reads ``x1,y1,x2,y2`` (``--count-line``): pixels, or in fractions of the frame when
    every value is within 0..1 (``0,0.5,1,0.5`` is a horizontal line across the middle).

    Values that mix the two (``0,0.5,1.5,0.5``: a fraction such as 0.5 beside a value
    above 1) are refused rather than all read as pixels, which would make a line of
    a pixel or two. Whether the line fits the frame is checked once the source's size
    is known (``place_count_line``).

    Raises:
        TrackingError: not four numbers, a negative one, one point twice or a mix.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)):
        raise TrackingError(
            f"must be four numbers x1,y1,x2,y2 (pixels, or fractions of the frame such as 0,0.5,1,0.5), got {text!r}")
    if min(values) < 0:
        raise TrackingError(f"must not be negative (the frame starts at 0,0), got {text!r}")
    if values[:2] == values[2:]:
        raise TrackingError(f"must join two different points, got {text!r}")
    fractional = max(values) <= 1.0
    fraction_like = [v for v in values if 0 < v < 1]
    if not fractional and fraction_like:
        raise TrackingError(
            f"mixes fractions of the frame ({fraction_like[0]:g}) with values above 1 ({max(values):g}), got "
            f"{text!r}; give all four as fractions within 0..1 (such as 0,0.5,1,0.5) or all four in pixels")
    return CountLine(values, fractional=fractional)


@dataclass(frozen=True)
class TrackingOptions:
    """What predict.py was asked to track and count.

    Attributes:
        tracker: a key of ``TRACKERS``.
        overrides: {setting: value} for the ``TRACKER_SETTINGS`` given on the
            command line.
        trail: positions drawn per tracked object (0: none).
        count_line: a CountLine, or None.
    """

    tracker: str = DEFAULT_TRACKER
    overrides: dict = field(default_factory=dict)
    trail: int = 0
    count_line: CountLine = None


# --- the tracker --------------------------------------------------------------------------


def tracker_class(name):
    """The ``trackers`` library's class for a key of ``TRACKERS``."""
    if name not in TRACKERS:
        raise TrackingError(f"Unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}.")
    import trackers

    return getattr(trackers, TRACKERS[name])


def library_defaults(name):
    """{parameter: default} of a tracker's constructor, as the library declares them."""
    parameters = inspect.signature(tracker_class(name).__init__).parameters
    return {key: p.default for key, p in parameters.items() if p.default is not inspect.Parameter.empty}


def tracker_settings(name, overrides=None, frame_rate=None):
    """The settings a tracker is built with: the library's defaults, the source's
    frame rate and the settings given.

    Args:
        name: a key of ``TRACKERS``.
        overrides: {setting: value}, settings named as in ``TRACKER_SETTINGS``.
        frame_rate: the source's frame rate (None: the library's default), used
            unless ``overrides`` sets ``track_frame_rate``.

    Returns:
        {library parameter: value} for the ``TRACKER_SETTINGS`` parameters the
        tracker has.

    Raises:
        TrackingError: a setting the tracker does not have.
    """
    defaults = library_defaults(name)
    settings = {params[name]: defaults[params[name]] for params in TRACKER_SETTINGS.values() if name in params}
    if frame_rate is not None:
        settings["frame_rate"] = float(frame_rate)
    for setting, value in (overrides or {}).items():
        parameter = TRACKER_SETTINGS[setting].get(name)
        if parameter is None:
            have = [k for k, params in TRACKER_SETTINGS.items() if name in params]
            raise TrackingError(f"--tracker {name} has no setting for {setting_flag(setting)}; "
                                f"it takes {', '.join(setting_flag(k) for k in have)}.")
        settings[parameter] = type(defaults[parameter])(value)
    return settings


@dataclass
class TrackedDetections:
    """Detections of one frame with their track IDs.

    Attributes:
        boxes: float32 (N, 4) xyxy pixels of the frame.
        scores: float32 (N,).
        classes: int32 (N,) class ids.
        track_ids: int (N,) track IDs from 1; -1 for detections not (yet) a track.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    track_ids: np.ndarray

    def __len__(self):
        return len(self.scores)


def to_supervision(detections):
    """``supervision.Detections`` of detections with ``boxes`` (N, 4) xyxy pixels,
    ``scores`` (N,) and ``classes`` (N,)."""
    import supervision as sv

    return sv.Detections(xyxy=np.asarray(detections.boxes, np.float32).reshape(-1, 4),
                         confidence=np.asarray(detections.scores, np.float32).reshape(-1),
                         class_id=np.asarray(detections.classes, np.int64).reshape(-1))


class ObjectTracker:
    """One run's tracker, with what a tracked run adds up frame by frame.

    Per frame (``update``): the track IDs, a line of the MOT-challenge file per
    tracked box, the line crossings and the trails. At the end: the unique objects
    per class and a JSON summary (``summary``, ``close``).

    Args:
        name: a key of ``TRACKERS``.
        settings: {library parameter: value}, from ``tracker_settings``.
        class_names: names indexed by class id.
        mot_path: the MOT-challenge text file to write, created on the first
            frame (None: none).
        count_line: a CountLine, or None.
        trail: positions kept per track for drawing (0: none).
    """

    def __init__(self, name, settings, class_names, *, mot_path=None, count_line=None, trail=0):
        self.name, self.settings, self.class_names = name, dict(settings), list(class_names)
        self.tracker = tracker_class(name)(**self.settings)
        self.count_line, self.trail = count_line, int(trail)
        self.line = None  # pixel end points, fixed by the first frame
        self._zone = None
        self.frames = 0
        self._votes = defaultdict(Counter)  # track ID -> class votes
        self._trails = {}  # track ID -> deque of (x, y) centres
        self._last_seen = {}
        # The MOT file is opened on the first frame: a source without frames leaves none.
        self.mot_path = Path(mot_path) if mot_path is not None else None
        self._mot = None

    @classmethod
    def create(cls, options, class_names, *, frame_rate=None, mot_path=None):
        """The tracker of TrackingOptions, at the source's ``frame_rate``."""
        settings = tracker_settings(options.tracker, options.overrides, frame_rate)
        return cls(options.tracker, settings, class_names, mot_path=mot_path, count_line=options.count_line,
                   trail=options.trail)

    def describe(self):
        """One line naming the tracker and its settings."""
        return f"Tracker {self.name}: " + ", ".join(f"{k}={v:g}" for k, v in self.settings.items())

    def _start_line(self, frame_hw):
        import supervision as sv

        problem = count_line_problem(self.count_line, frame_hw[1], frame_hw[0])
        if problem:  # a camera that did not tell its frame size before the run
            log.warning("%s; nothing will be counted.", problem)
        start, end = self.count_line.in_pixels(frame_hw[1], frame_hw[0])
        self.line = (start, end)
        self._zone = sv.LineZone(start=sv.Point(*start), end=sv.Point(*end))

    def update(self, detections, frame_hw, *, frame=None, frame_number=None, timestamp=None):
        """Tracks one frame's detections.

        Args:
            detections: the frame's detections (``boxes`` (N, 4) xyxy pixels,
                ``scores`` (N,), ``classes`` (N,)).
            frame_hw: the frame's (height, width).
            frame: the frame, RGB uint8 (H, W, 3); used by trackers that look at
                the image (BoT-SORT's camera motion compensation).
            frame_number: the frame's number in the source, from 1, for the MOT
                file (default: frames tracked so far + 1).
            timestamp: capture time in seconds, for sources with an irregular
                rate (a camera dropping frames); None: one frame step.

        Returns:
            TrackedDetections, in descending score order.
        """
        self.frames += 1
        if self.mot_path is not None and self._mot is None and self.frames == 1:
            self.mot_path.parent.mkdir(parents=True, exist_ok=True)
            self._mot = open(self.mot_path, "w", encoding="utf-8")
        frame_number = self.frames if frame_number is None else int(frame_number)
        image = frame[..., ::-1] if frame is not None and self.name in _FRAME_USERS else None
        result = self.tracker.update(to_supervision(detections), frame=image, timestamp=timestamp)
        if self.count_line is not None:
            if self._zone is None:
                self._start_line(frame_hw)
            self._zone.trigger(result)
        ids = np.asarray(result.tracker_id, np.int64).reshape(-1)
        scores = np.asarray(result.confidence, np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        tracked = TrackedDetections(
            np.asarray(result.xyxy, np.float32).reshape(-1, 4)[order],
            scores[order],
            np.asarray(result.class_id, np.int32).reshape(-1)[order],
            np.where(ids >= 0, ids + 1, -1)[order],
        )
        self._record(tracked, frame_number)
        return tracked

    def _record(self, tracked, frame_number):
        rows = []
        for box, score, cls, track in zip(tracked.boxes, tracked.scores, tracked.classes, tracked.track_ids):
            if track < 0:
                continue
            self._votes[int(track)][int(cls)] += 1
            x1, y1, x2, y2 = (float(v) for v in box)
            rows.append(f"{frame_number},{int(track)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                        f"{float(score):.4f},-1,-1,-1\n")
            if self.trail:
                self._trails.setdefault(int(track), deque(maxlen=self.trail)).append(((x1 + x2) / 2, (y1 + y2) / 2))
                self._last_seen[int(track)] = self.frames
        if self._mot is not None and rows:
            self._mot.writelines(rows)
            self._mot.flush()  # the file stays complete up to the last frame if the run is stopped
        # A trail outlives its track's absence by as many frames as it is long.
        for track in [t for t, seen in self._last_seen.items() if self.frames - seen > self.trail]:
            del self._trails[track], self._last_seen[track]

    def trails(self, tracked):
        """The trails of the tracks in ``tracked``: list of ((K, 2) float centres, class id)."""
        return [(np.asarray(self._trails[int(t)], np.float32), int(c))
                for t, c in zip(tracked.track_ids, tracked.classes) if int(t) in self._trails]

    def line_counts(self):
        """(in, out) crossings of the counting line so far, each {class name: count}, class order."""
        if self._zone is None:
            return {}, {}
        return (self._named(self._zone.in_count_per_class), self._named(self._zone.out_count_per_class))

    def _named(self, per_class):
        return {self.class_names[i]: int(per_class[i]) for i in sorted(k for k in per_class if k is not None)
                if per_class[i]}

    def unique_objects(self):
        """{class name: tracks}, each confirmed track counted once, under the class it had most often."""
        classes = Counter(votes.most_common(1)[0][0] for votes in self._votes.values())
        return {self.class_names[i]: classes[i] for i in sorted(classes)}

    def summary(self, **extra):
        """What the run found, as a JSON-ready dict (``extra`` items added first)."""
        unique = self.unique_objects()
        summary = dict(extra, frames=self.frames, tracker=self.name, settings=self.settings,
                       tracks_file=self.mot_path.name if self.mot_path and self.frames else None,
                       unique_objects=unique, unique_total=sum(unique.values()))
        if self.count_line is not None:
            crossed_in, crossed_out = self.line_counts()
            summary["count_line"] = {
                "given": str(self.count_line), "read_as": self.count_line.read_as,
                "from": list(self.line[0]) if self.line else None, "to": list(self.line[1]) if self.line else None,
                "in": crossed_in, "out": crossed_out,
                "in_total": sum(crossed_in.values()), "out_total": sum(crossed_out.values()),
            }
        return summary

    def report_lines(self):
        """The lines printed at the end of a run: unique objects, line crossings, files."""
        unique = self.unique_objects()
        lines = [f"Unique objects per class: {_format(unique)} ({sum(unique.values())} in all)"]
        if self.count_line is not None:
            crossed_in, crossed_out = self.line_counts()
            lines.append(f"Line {self.count_line}: in {sum(crossed_in.values())} ({_format(crossed_in)}), "
                         f"out {sum(crossed_out.values())} ({_format(crossed_out)})")
        if self.mot_path is not None and self.frames:
            lines.append(f"Tracks written to {self.mot_path} (MOT challenge: frame,id,x,y,w,h,score,-1,-1,-1)")
        return lines

    def write_summary(self, path, **extra):
        """Writes ``summary(**extra)`` to ``path`` as JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.summary(**extra), indent=2) + "\n", encoding="utf-8")
        return path

    def close(self):
        """Closes the MOT file."""
        if self._mot is not None:
            self._mot.close()
            self._mot = None


def _format(counts):
    return ", ".join(f"{name} {n}" for name, n in counts.items()) if counts else "none"
