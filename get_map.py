"""Evaluates a detector: VOC mAP (all-point or 11-point) or COCO metrics.

Modes (--mode; the numbers 0-4 are accepted too):
  all           (0, default) everything: detections, ground truth, metrics
  detections    (1) detection files only
  ground-truth  (2) ground-truth files only
  score         (3) metrics from existing files (--metric voc, voc07 or coco)
  coco          (4) COCO metrics from existing files

Files written under --out: ground-truth/<image_id>.txt, detection-results/<image_id>.txt,
results.json, problems.txt (one line per problem; empty when there was none),
confusion_matrix.png, confusion_matrix.csv and confusion_matrix_normalized.csv (at
--confusion-conf and --confusion-iou, with a background row and column) and, for the VOC
metrics, pr_curves/<class>.png, PR_curve.png (every class and the mean), F1_curve.png,
P_curve.png and R_curve.png (against the confidence; the confidence of best F1 is
printed, the threshold to use in predict.py --conf), ap_per_class.png and gt_counts.png;
for the COCO metrics, coco_detections.json and coco_ground_truth.json with the dataset's
category ids (and image ids, for a COCO --annotations file). --save-errors N adds
errors/<rank>_<image>.jpg, the N images with the most errors.

Two runs sharing --out each compute their own metrics, and --out ends up with the
complete files of the run that finished last (docs/evaluation.md, "Several
evaluations sharing one --out").

Examples:
  python get_map.py --model logs/best.keras
  python get_map.py --mode ground-truth --annotations 2007_test.txt --classes model_data/voc_classes.txt
  python get_map.py --model logs/exp/best.keras --annotations instances_val.json --images val --metric coco
  python get_map.py --model logs/exp/best.keras --annotations data.yaml --split val
  python get_map.py --mode score --out other_tool_out --classes-from-files
  python get_map.py --model logs/exp/best.keras --annotations 2007_test.txt --save-errors 20
  python get_map.py --model logs/exp/best.keras --annotations aerial_test.txt --slice 416   # tiles, small objects
"""

import logging
import sys

from utils.api.cli import add_slice_arguments, slice_options
from utils.cli import checked_by, docstring_parser, fraction, input_size, int_at_least, options_from_args
from utils.config import (
    DEFAULT_CLASSES,
    DEFAULT_MAX_BOXES,
    EVAL_CONF,
    EVAL_MATCH_IOU,
    EVAL_NMS_IOU,
    EVAL_SCORE_THRESHOLD,
    RUNTIMES,
)
from utils.eval.confusion import CONFUSION_CONF
from utils.eval.evaluator import DEFAULT_BATCH_SIZE, METRICS
from utils.eval.job import MODE_NUMBERS, MODES, mode_name, run
from utils.eval.options import EvalOptions


def build_parser():
    """The command-line parser (every option documented in --help)."""
    parser = docstring_parser(__doc__)
    parser.add_argument("--mode", type=checked_by(mode_name), default="all", metavar="{" + ",".join(MODES) + "}",
                        help="; ".join(f"{name} ({MODE_NUMBERS[name]}): {what}" for name, what in MODES.items())
                        + " (default all)")
    parser.add_argument("--model", help="trained model checkpoint, or a model written by export.py (.onnx, .tflite, "
                                        ".xml, SavedModel folder); needed by the modes all and detections")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs a checkpoint, always in float32 so that the mAP is the Keras model's: auto "
                             "(default) exports it once to the fastest runtime of this CPU (OpenVINO), checks the "
                             "export against the Keras model and caches it beside the checkpoint; tf runs the Keras "
                             "model on TensorFlow; onnxruntime, openvino and tflite export to that runtime")
    parser.add_argument("--voc-root", default="VOCdevkit", help="VOCdevkit folder (default VOCdevkit)")
    parser.add_argument("--year", default="2007", help="VOC year, e.g. 2007 (default 2007)")
    parser.add_argument("--split", default="test",
                        help="VOC split (images listed in VOC<year>/ImageSets/Main/<split>.txt), or the split of a "
                             "YOLO data YAML given as --annotations (default test)")
    parser.add_argument("--annotations",
                        help="the dataset to evaluate on instead of --voc-root: an annotation-line file (path "
                             "x1,y1,x2,y2,class_id[,difficult] ...), a COCO JSON file, a YOLO data YAML or folder; "
                             "the format is detected from the file")
    parser.add_argument("--images",
                        help="folder of the images of a COCO --annotations file whose file names are relative "
                             "(default: the JSON file's folder)")
    parser.add_argument("--classes",
                        help="class names file, one a line (default: the model's class names; without a model, "
                             "those of a COCO or YOLO --annotations dataset, else "
                             f"{DEFAULT_CLASSES.relative_to(DEFAULT_CLASSES.parent.parent)}); a dataset naming "
                             "other classes is an error")
    parser.add_argument("--classes-from-files", action="store_true",
                        help="modes score and coco: take the class names found in the files (sorted) instead of a "
                             "classes file; for files made by other tools")
    parser.add_argument("--out", default="map_out", help="output folder (default map_out)")
    parser.add_argument("--conf", type=fraction, default=EVAL_CONF,
                        help=f"score threshold of the detections written (default {EVAL_CONF})")
    parser.add_argument("--nms-iou", type=fraction, default=EVAL_NMS_IOU,
                        help=f"NMS IoU threshold of the detector (default {EVAL_NMS_IOU})")
    parser.add_argument("--max-boxes", type=int_at_least(1), default=DEFAULT_MAX_BOXES,
                        help=f"max_boxes of the detector's NMS (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--agnostic-nms", action="store_true",
                        help="one NMS over all classes instead of one per class (as predict.py runs by default); "
                             "the mAP is then that of the boxes users see (default: per class, as the reference "
                             "design evaluates)")
    parser.add_argument("--iou", type=fraction, default=EVAL_MATCH_IOU,
                        help=f"IoU needed to match a detection with a ground-truth object, VOC metrics "
                             f"(default {EVAL_MATCH_IOU})")
    parser.add_argument("--score-threshold", type=fraction, default=EVAL_SCORE_THRESHOLD,
                        help=f"score at which precision, recall and F1 are reported (default {EVAL_SCORE_THRESHOLD})")
    parser.add_argument("--metric", choices=METRICS, default="voc",
                        help="voc: all-point AP (VOC2010+); voc07: VOC2007 11-point AP; coco: pycocotools "
                             "AP@[.5:.95] and the rest (default voc)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help=f"images per prediction batch (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--input-size", type=input_size,
                        help="network input side in pixels, a multiple of 32 (default: the model's)")
    parser.add_argument("--problems-shown", type=int, default=20,
                        help="problems printed in the summary; all go to <out>/problems.txt (default 20)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the VOC plots")
    parser.add_argument("--confusion-conf", type=fraction, default=CONFUSION_CONF,
                        help="confidence of the confusion matrix and the error gallery: detections scoring above "
                             f"it count (default {CONFUSION_CONF})")
    parser.add_argument("--confusion-iou", type=fraction, default=EVAL_MATCH_IOU,
                        help=f"IoU of the confusion matrix and the error gallery (default {EVAL_MATCH_IOU})")
    parser.add_argument("--save-errors", type=int_at_least(0), default=0, metavar="N",
                        help="mode all: draw the N images with the most errors (false positives plus missed "
                             "objects), each error labelled, into <out>/errors/ (default 0: none)")
    add_slice_arguments(parser)
    return parser


def eval_options(args):
    """The EvalOptions of the parsed arguments."""
    return options_from_args(EvalOptions, args, plots=not args.no_plots, slice=slice_options(args))


def open_evaluated_model(options):
    """The detector of --model (a checkpoint or an export) at the evaluation settings."""
    from utils.api.detector import Detector
    from utils.predict.options import PredictOptions

    settings = PredictOptions(runtime=options.runtime, conf=options.conf, nms_iou=options.nms_iou,
                              max_boxes=options.max_boxes, input_size=options.input_size, classes=options.classes,
                              agnostic_nms=options.agnostic_nms, evaluation=True, slice=options.slice)
    return Detector(options.model, settings).predictor


#: The options of the detector: a mode that does not predict does not use them.
DETECTOR_OPTIONS = ("runtime", "conf", "nms_iou", "max_boxes", "agnostic_nms", "batch_size", "input_size", "slice")


def warn_unused(args, parser):
    """Warns of the options given that the mode does not use."""
    log = logging.getLogger("get_map")
    given = [name for name in DETECTOR_OPTIONS if getattr(args, name) != parser.get_default(name)]
    if args.mode not in ("all", "detections") and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        log.warning("%s %s the detector's; --mode %s runs no detector: ignored.", flags,
                    "is" if len(given) == 1 else "are", args.mode)
    if args.classes_from_files and args.mode not in ("score", "coco"):
        log.warning("--classes-from-files is used by the modes score and coco only; ignored in --mode %s.", args.mode)
    if args.annotations:
        for name in ("voc_root", "year"):
            if getattr(args, name) != parser.get_default(name):
                log.warning("--%s names a VOCdevkit, which --annotations replaces; ignored.", name.replace("_", "-"))


def main(argv=None):
    """Command-line entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warn_unused(args, parser)
    try:
        return run(eval_options(args), open_evaluated_model).status
    except (FileNotFoundError, ValueError) as exc:  # DatasetError is a ValueError
        print(f"get_map.py: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"get_map.py: error: {exc.filename or exc}: permission denied; choose an --out this user can write",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
