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
--out given explicitly too (a name ending in a digit gets a dash: run1-2, run1-3,
...). Label files are <out>/labels/<stem>.txt with one "class_name score x1 y1 x2 y2"
line per detection (pixels; spaces in class names become underscores); crops are
<out>/crops/<class>/<stem>_<k>.jpg.

Videos and webcams: frames are read, detected and written in threads of their own;
a webcam's detector takes the newest frame (docs/prediction.md, "Videos and
webcams"). q, Esc or closing the window stops (with --show).

Tracking (--track; a video, a webcam, or a folder read as the frames of one video in
name order): each box is labelled with its track ID, and --trail N draws its last N
positions. <out>/<stem>_tracks.txt has one "frame,id,x,y,w,h,score,-1,-1,-1" line
per tracked box (MOT challenge; frames and IDs from 1, pixels), and
<out>/<stem>_summary.json the unique objects per class, the crossings of
--count-line per class and direction, and the tracker's settings; the counts are
also printed. The --track-* settings default to the trackers library's values.

Sliced inference (--slice SIZE, images and videos): the detector runs on
overlapping SIZE x SIZE tiles of each frame (one batch per frame) and the boxes are
merged, for small objects in large images.

Exit status: 0 done (files of a folder that cannot be read are reported, skipped
and listed in <out>/skipped.txt); 1 no file of the folder, or no frame of the
video, could be read; 2 bad arguments, model, classes or anchors file, or a source
that cannot be opened (--track on a single image, too); 130 stopped with Ctrl-C
(outputs written so far are kept).
A webcam, which has no end, stopped with Ctrl-C or q exits with 0.

Examples:
  python predict.py --model logs/best.keras --source street.jpg
  python predict.py --model logs/best.keras --source images/ --batch-size 8 --save-txt --count
  python predict.py --model logs/best.keras --source clip.mp4 --show
  python predict.py --model logs/best.keras --source 0 --conf 0.4
  python predict.py --model logs/best.keras --source street.jpg --mode fps
  python predict.py --model logs/best.keras --source street.jpg --mode heatmap
  python predict.py --model logs/best.onnx --source images/     # a model written by export.py
  python predict.py --model logs/best.keras --source images/ --runtime tf   # on TensorFlow, not OpenVINO
  python predict.py --model logs/best.keras --source road.mp4 --track --trail 20 --count-line 0,0.6,1,0.6
  python predict.py --model logs/best.keras --source aerial.jpg --slice 416 --slice-overlap 0.2
"""

import argparse
import logging
import sys

from utils.api.cli import (
    add_slice_arguments,
    add_tracking_arguments,
    slice_options,
    tracking_options as read_tracking_options,
)
from utils.cli import docstring_parser, fraction, input_size, int_at_least, options_from_args
from utils.config import (
    CHECKPOINT_SUFFIXES,
    DEFAULT_AGNOSTIC_NMS,
    DEFAULT_CONF,
    DEFAULT_MAX_BOXES,
    DEFAULT_NMS_IOU,
    RUNTIMES,
)
from utils.predict.fps_job import run_fps
from utils.predict.heatmap_job import run_heatmap
from utils.predict.image_job import run_predict_images
from utils.predict.job import (
    EXIT_INTERRUPTED,
    EXIT_NOTHING_READ,
    EXIT_USAGE,
    MODES,
    UsageError,
    first_image,
    first_images,
    open_source,
    open_viewer,
    output_dir,
)
from utils.predict.video_job import run_predict_video
from utils.run_dir import numbering_help

log = logging.getLogger("predict")
# Fps mode's timed and untimed runs when --fps-runs and --fps-warmup are not given.
DEFAULT_FPS_RUNS, DEFAULT_FPS_WARMUP = 50, 5


def build_parser():
    """The command-line parser (every option documented in --help)."""
    parser = docstring_parser(__doc__)
    parser.add_argument("--model", required=True,
                        help="trained checkpoint (.keras, or .weights.h5 with its .json beside it), or a model "
                             "written by export.py: .onnx (ONNX Runtime), .tflite (LiteRT), .xml (OpenVINO) or a "
                             "SavedModel folder")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs a checkpoint: auto (default) exports it once to the fastest runtime of "
                             "this CPU (OpenVINO, in bfloat16 where the CPU has it natively), checks the export "
                             "against the Keras model on the first pictures of --source (float32 where bfloat16 "
                             "fails the check) and caches it beside the checkpoint; tf runs the Keras model "
                             "on TensorFlow; onnxruntime, openvino and tflite export to that runtime")
    parser.add_argument("--source", required=True,
                        help="an image file, a folder of images, a video file, or a webcam index (0, 1, ...)")
    parser.add_argument("--mode", choices=MODES, default="predict",
                        help="predict: save annotated outputs; fps: time one image; heatmap: save objectness "
                             "heat maps (default predict)")
    parser.add_argument("--out", default="runs/predict",
                        help=f"output folder (default runs/predict); {numbering_help()}, so no earlier run is "
                             "overwritten")
    parser.add_argument("--classes",
                        help="class names file, one a line, for display (default: the names in the checkpoint); "
                             "must name as many classes as the model has")
    parser.add_argument("--input-size", type=input_size,
                        help="network input side in pixels, a multiple of 32 (default: the checkpoint's)")
    parser.add_argument("--anchors", help="anchors file, one line 'w,h, w,h, ...' (default: the checkpoint's)")
    parser.add_argument("--conf", type=fraction,
                        help="lowest score (objectness x class probability) kept (default: the best-F1 confidence "
                             "that training found for the checkpoint, in <model stem>.eval.json beside it; "
                             f"{DEFAULT_CONF} without one)")
    parser.add_argument("--nms-iou", type=fraction, default=DEFAULT_NMS_IOU,
                        help="IoU above which NMS drops the weaker of two boxes of a class "
                             f"(default {DEFAULT_NMS_IOU})")
    parser.add_argument("--max-boxes", type=int_at_least(1), default=DEFAULT_MAX_BOXES,
                        help=f"most boxes kept per class and image (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--agnostic-nms", action=argparse.BooleanOptionalAction, default=None,
                        help="one NMS over all classes, so that an object whose similar classes score alike gets "
                             "one box (its best class) instead of one box per class; --no-agnostic-nms: one NMS "
                             "per class, as the reference design (default: an export's own setting, else "
                             f"{'on' if DEFAULT_AGNOSTIC_NMS else 'off'})")
    parser.add_argument("--no-letterbox", action="store_true",
                        help="resize images to the input square ignoring their aspect ratio, instead of "
                             "letterboxing (use it if the model was trained that way)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=1,
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
    parser.add_argument("--max-frames", type=int_at_least(1),
                        help="stop a video or webcam after this many frames (default: until it ends or Ctrl-C)")
    parser.add_argument("--fps-runs", type=int_at_least(1),
                        help=f"fps mode: timed runs (default {DEFAULT_FPS_RUNS})")
    parser.add_argument("--fps-warmup", type=int_at_least(0),
                        help="fps mode: untimed runs first, to build the graph and warm caches "
                             f"(default {DEFAULT_FPS_WARMUP})")
    parser.add_argument("--heatmap-levels", action="store_true",
                        help="heatmap mode: also save one map per output level, <stem>_heatmap_s<stride>.png")
    add_tracking_arguments(parser)
    add_slice_arguments(parser)
    return parser


def open_predictor(args):
    """The predictor for --model (a checkpoint or an export) and the prediction options,
    tiled with --slice; UsageError on bad files. An export of a checkpoint is checked
    against the Keras model on the first pictures of --source (``utils.export.auto_runtime``)."""
    from utils.api.detector import Detector
    from utils.checkpoint import CheckpointError
    from utils.predict.options import PredictOptions
    from utils.predict.sources import parse_source

    options = options_from_args(PredictOptions, args, letterbox=not args.no_letterbox,
                                agnostic_nms=_agnostic_nms(args), slice=slice_options(args, warn=False))
    try:
        return Detector(args.model, options,
                        check_images=lambda count: first_images(parse_source(args.source), count)).predictor
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        # ClassCountError is a ValueError, as are bad classes and anchors files.
        raise UsageError(str(exc)) from None


def tracking_options(args):
    """The TrackingOptions of the arguments (None without --track), checked before any
    model is loaded; UsageError for a flag that does not fit."""
    from utils.predict.tracking import TrackingError

    try:
        return read_tracking_options(args, args.mode)
    except TrackingError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise UsageError(f"--track needs the trackers and supervision packages ({exc}); install them with "
                         "pip install -r requirements.txt.") from None


def _agnostic_nms(args):
    """--agnostic-nms, where not given: an export's own setting, else the default."""
    if args.agnostic_nms is not None:
        return args.agnostic_nms
    return None if not args.model.endswith(CHECKPOINT_SUFFIXES) else DEFAULT_AGNOSTIC_NMS


def _warn_unused(args, source, tracking):
    """Warns of the options given that this mode and source do not use."""
    frames = source.kind in ("video", "webcam") or tracking is not None
    if args.batch_size > 1 and (args.mode == "fps" or frames):
        log.warning("--batch-size is not used %s (frames go through the detector one at a time); ignored.",
                    "in fps mode (it times batch 1)" if args.mode == "fps" else f"on the frames of {source}")
    if args.mode == "predict" and args.max_frames and not frames:
        log.warning("--max-frames stops a video, a webcam or a tracked folder, not %s; ignored.", source)
    if args.mode == "heatmap":
        for flag, used in (("--show", args.show), ("--count", args.count)):
            if used:
                log.warning("%s is not used in heatmap mode; ignored.", flag)
    if args.mode != "predict":
        for flag, used in (("--save-txt", args.save_txt), ("--crop", args.crop), ("--max-frames", args.max_frames)):
            if used:
                log.warning("%s is used in predict mode only; ignored in %s mode.", flag, args.mode)
    if args.mode != "fps":
        for flag, given in (("--fps-runs", args.fps_runs), ("--fps-warmup", args.fps_warmup)):
            if given is not None:
                log.warning("%s is used in fps mode only; ignored in %s mode.", flag, args.mode)
    if args.mode != "heatmap" and args.heatmap_levels:
        log.warning("--heatmap-levels is used in heatmap mode only; ignored.")
    if args.mode == "fps" and args.show:
        log.warning("--show is not used in fps mode (a window would distort the timing); ignored.")
    if args.mode == "heatmap" and args.slice:
        log.warning("--slice is not used in heatmap mode (the map is of the whole image); ignored.")


def run(args):
    """Runs one mode; returns the exit status."""
    # The source is checked before the model is loaded, which takes far longer.
    tracking = tracking_options(args)
    source, reader = open_source(args.source, args.mode, tracking)
    _warn_unused(args, source, tracking)
    slice_options(args)  # warns of --slice-* given without --slice
    try:
        fps_image = first_image(source) if args.mode == "fps" else None
        predictor = open_predictor(args)
        out = output_dir(args.out)
    except BaseException:
        if reader is not None:
            reader.close()
        raise
    if args.mode == "fps":
        runs = DEFAULT_FPS_RUNS if args.fps_runs is None else args.fps_runs
        warmup = DEFAULT_FPS_WARMUP if args.fps_warmup is None else args.fps_warmup
        status = run_fps(predictor, *fps_image, out, runs=runs, warmup=warmup, count=args.count)
    elif args.mode == "heatmap":
        status = run_heatmap(predictor, source, out, batch_size=args.batch_size, levels=args.heatmap_levels)
    else:
        viewer = open_viewer(source, args.show)
        options = dict(save_txt=args.save_txt, crop=args.crop, count=args.count)
        if reader is not None:
            status = run_predict_video(predictor, reader, out, viewer, max_frames=args.max_frames,
                                       tracking=tracking, **options)
        else:
            status = run_predict_images(predictor, source, out, viewer, batch_size=args.batch_size, **options)
    if status == EXIT_NOTHING_READ and not any(out.iterdir()):
        out.rmdir()  # nothing was read, so nothing was saved: no empty run folder stays behind
    elif status != EXIT_NOTHING_READ:
        print(f"Results saved to {out}")
    return status


def default_conf(model):
    """The --conf of a run that gives none: the model's best-F1 confidence, else DEFAULT_CONF; prints which."""
    from utils.eval.operating_point import default_conf as model_conf

    conf, origin = model_conf(model, DEFAULT_CONF)
    print(f"--conf {conf:.3f}: {origin}")
    return conf


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.conf is None:
        args.conf = default_conf(args.model)
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
