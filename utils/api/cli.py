"""The command-line arguments of the option objects that predict.py and get_map.py
share, and the objects made from them: sliced inference (``SliceOptions``) and
tracking (``TrackingOptions``). The stages take the objects; only the scripts and
this module know the flags.
"""

import logging

from utils.cli import checked_by, fraction, fraction_at_most, int_at_least, positive_float
from utils.predict.slicing import DEFAULT_OVERLAP, MAX_OVERLAP, MERGE_METHODS, MIN_TILE, SliceOptions
from utils.predict.tracking import (
    DEFAULT_TRACKER,
    MIN_COUNT_LINE_PX,
    SUMMARY_SUFFIX,
    TRACKER_SETTINGS,
    TRACKERS,
    TRACKS_SUFFIX,
    TrackingError,
    TrackingOptions,
    parse_count_line,
    setting_flag,
    tracker_settings,
)

log = logging.getLogger(__name__)


def add_slice_arguments(parser):
    """Adds --slice, --slice-overlap, --slice-full and --slice-merge to ``parser``."""
    group = parser.add_argument_group("sliced inference (small objects in large images)")
    group.add_argument("--slice", type=int_at_least(MIN_TILE), metavar="SIZE",
                       help="run the detector on overlapping SIZE x SIZE tiles of each image (pixels; SIZE equal "
                            "to the network input keeps full resolution) and merge the boxes (default: whole image)")
    group.add_argument("--slice-overlap", type=fraction_at_most(MAX_OVERLAP), default=DEFAULT_OVERLAP,
                       metavar="FRACTION",
                       help=f"overlap of neighbouring tiles, a fraction of SIZE (default {DEFAULT_OVERLAP})")
    group.add_argument("--slice-full", action="store_true",
                       help="also run the whole image, downscaled to the input as without --slice, and merge its "
                            "boxes with the tiles' (finds objects larger than a tile)")
    group.add_argument("--slice-merge", choices=MERGE_METHODS, default=MERGE_METHODS[0],
                       help="boxes of one class that overlap by half of the smaller one are one object: nmm keeps "
                            "the best whole box, widened to the parts tile edges cut off (an object split across "
                            "tiles becomes one box); nms keeps the best box (default nmm)")


def slice_options(args, warn=True):
    """The SliceOptions of --slice*, or None without --slice (with ``warn``, a warning
    naming the other --slice-* options given, which then do nothing)."""
    if getattr(args, "slice", None) is None:
        given = [flag for flag, set_ in (("--slice-overlap", args.slice_overlap != DEFAULT_OVERLAP),
                                         ("--slice-full", args.slice_full),
                                         ("--slice-merge", args.slice_merge != MERGE_METHODS[0])) if set_]
        if given and warn:
            log.warning("%s %s --slice SIZE; ignored.", ", ".join(given), "needs" if len(given) == 1 else "need")
        return None
    return SliceOptions(args.slice, overlap=args.slice_overlap, full_image=args.slice_full, merge=args.slice_merge)


def add_tracking_arguments(parser):
    """Adds predict.py's flags for tracking and counting to ``parser``."""
    group = parser.add_argument_group(
        "tracking and counting (video files, webcams, folders of frames)",
        "The tracker settings default to the value the trackers library gives the chosen tracker; the run "
        "prints the values it uses.")
    group.add_argument("--track", action="store_true",
                       help="follow objects from frame to frame: each box gets a track ID; writes "
                            f"<out>/<stem>{TRACKS_SUFFIX} (MOT challenge) and <out>/<stem>{SUMMARY_SUFFIX}, and "
                            "prints the unique objects per class; a folder is read as the frames of one video, "
                            "in name order")
    group.add_argument("--tracker", choices=tuple(TRACKERS), default=DEFAULT_TRACKER,
                       help=f"tracking method (default {DEFAULT_TRACKER})")
    group.add_argument("--trail", type=int_at_least(0), default=0,
                       help="draw each tracked object's last N positions (default 0: none)")
    group.add_argument("--count-line", type=checked_by(parse_count_line), metavar="X1,Y1,X2,Y2",
                       help="count the tracked objects that cross this line, per class and direction (pixels, or "
                            "fractions of the frame when all four are within 0..1; a mix such as 0,0.5,1.5,0.5 is "
                            "refused, and so is a line outside the frame or under "
                            f"{MIN_COUNT_LINE_PX:g} px long); the run prints the pixel line it counts on; "
                            "needs --track")
    group.add_argument("--track-activation", type=fraction,
                       help="lowest score that starts a new track (ByteTrack, BoT-SORT: track_activation_threshold; "
                            "OC-SORT: high_conf_det_threshold)")
    group.add_argument("--track-high-conf", type=fraction,
                       help="score that splits detections into the first (high) and second (low) matching stage "
                            "(ByteTrack, BoT-SORT: high_conf_det_threshold)")
    group.add_argument("--track-match-iou", type=fraction,
                       help="lowest IoU of a detection with a track's predicted box to continue the track "
                            "(minimum_iou_threshold; BoT-SORT: minimum_iou_threshold_first_assoc)")
    group.add_argument("--track-buffer", type=int_at_least(0),
                       help="frames (at 30 FPS) a lost track is kept to be found again (lost_track_buffer)")
    group.add_argument("--track-min-frames", type=int_at_least(1),
                       help="frames in a row a new track must be matched before it gets an ID "
                            "(minimum_consecutive_frames)")
    group.add_argument("--track-frame-rate", type=positive_float,
                       help="frame rate the buffer is scaled with (frame_rate; default: the video's; a folder of "
                            "frames is written at this rate too)")


def tracking_options(args, mode="predict"):
    """The TrackingOptions of the arguments (None without --track), checked before any
    model is loaded.

    Raises:
        TrackingError: a tracking flag without --track, --track outside predict mode,
            or a setting the chosen tracker does not have.
        ImportError: the tracking packages are missing.
    """
    overrides = {name: getattr(args, name) for name in TRACKER_SETTINGS if getattr(args, name) is not None}
    if not args.track:
        extra = [flag for flag, given in (("--count-line", args.count_line), ("--trail", args.trail))
                 if given] + [setting_flag(name) for name in overrides]
        if extra:
            raise TrackingError(f"{', '.join(extra)} {'needs' if len(extra) == 1 else 'need'} --track: "
                                "counting and trails follow tracked objects.")
        return None
    if mode != "predict":
        raise TrackingError(f"--track works in predict mode, not in --mode {mode}.")
    options = TrackingOptions(args.tracker, overrides, args.trail, args.count_line)
    tracker_settings(options.tracker, options.overrides)
    return options
