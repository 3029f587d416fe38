"""Evaluates a detector: VOC mAP (all-point or 11-point) or COCO metrics.

Modes:
  0  everything: detections, ground truth, metrics
  1  detection files only
  2  ground-truth files only
  3  metrics from existing files (--metric voc, voc07 or coco)
  4  COCO metrics from existing files

Files written under --out: ground-truth/<image_id>.txt, detection-results/<image_id>.txt,
results.json, problems.txt (one line per problem; empty when there was none) and, for
the VOC metrics, pr_curves/<class>.png, ap_per_class.png and gt_counts.png; for the COCO
metrics, coco_detections.json and coco_ground_truth.json with the dataset's category ids
(and image ids, for a COCO --annotations file).

Runs sharing --out: modes 0, 1 and 2 write their text files into a hidden folder of
their own (--out/.get_map-*), compute the metrics from there, then move each text folder
into place in one rename, replacing the earlier one as a whole; every other file is
written under a temporary name and renamed. Two runs at once thus each compute their
own metrics, and --out ends up with complete files of the run that finished last.

Examples:
  python get_map.py --model logs/best.keras
  python get_map.py --mode 2 --annotations 2007_test.txt --classes model_data/voc_classes.txt
  python get_map.py --model logs/exp/best.keras --annotations instances_val.json --images val --metric coco
  python get_map.py --model logs/exp/best.keras --annotations data.yaml --split val
  python get_map.py --mode 3 --out other_tool_out --classes-from-files
"""

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from utils.cli import docstring_parser, fraction, input_size, int_at_least
from utils.config import (
    DEFAULT_CLASSES,
    DEFAULT_MAX_BOXES,
    EVAL_CONF,
    EVAL_MATCH_IOU,
    EVAL_NMS_IOU,
    EVAL_SCORE_THRESHOLD,
)
from utils.run_dir import write_text_atomic

logger = logging.getLogger("get_map")

MODES = {
    0: "detections, ground truth and metrics",
    1: "detection files only",
    2: "ground-truth files only",
    3: "metrics from existing files",
    4: "COCO metrics from existing files",
}




def build_parser():
    """The command-line parser (every option documented in --help)."""
    parser = docstring_parser(__doc__)
    parser.add_argument("--mode", type=int, choices=sorted(MODES), default=0,
                        help="0 everything, 1 detections only, 2 ground truth only, 3 metrics from existing "
                             "files, 4 COCO metrics from existing files (default 0)")
    parser.add_argument("--model", help="trained model checkpoint, or a model written by export.py (.onnx, .tflite, "
                                        ".xml, SavedModel folder); needed by modes 0 and 1")
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
                        help="modes 3/4: take the class names found in the files (sorted) instead of a "
                             "classes file; for files made by other tools")
    parser.add_argument("--out", default="map_out", help="output folder (default map_out)")
    parser.add_argument("--conf", type=fraction, default=EVAL_CONF,
                        help=f"score threshold of the detections written (default {EVAL_CONF})")
    parser.add_argument("--nms-iou", type=fraction, default=EVAL_NMS_IOU,
                        help=f"NMS IoU threshold of the detector (default {EVAL_NMS_IOU})")
    parser.add_argument("--max-boxes", type=int_at_least(1), default=DEFAULT_MAX_BOXES,
                        help=f"max_boxes of the detector's NMS (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--iou", type=fraction, default=EVAL_MATCH_IOU,
                        help=f"IoU needed to match a detection with a ground-truth object, VOC metrics "
                             f"(default {EVAL_MATCH_IOU})")
    parser.add_argument("--score-threshold", type=fraction, default=EVAL_SCORE_THRESHOLD,
                        help=f"score at which precision, recall and F1 are reported (default {EVAL_SCORE_THRESHOLD})")
    parser.add_argument("--metric", choices=("voc", "voc07", "coco"), default="voc",
                        help="voc: all-point AP (VOC2010+); voc07: VOC2007 11-point AP; coco: pycocotools "
                             "AP@[.5:.95] and the rest (default voc)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8,
                        help="images per prediction batch (default 8)")
    parser.add_argument("--input-size", type=input_size,
                        help="network input side in pixels, a multiple of 32 (default: the model's)")
    parser.add_argument("--problems-shown", type=int, default=20,
                        help="problems printed in the summary; all go to <out>/problems.txt (default 20)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the VOC plots")
    return parser


def load_predictor(args):
    """Builds the detector from --model (a checkpoint or an export) and the prediction options."""
    from utils.predict.runtimes import load_predictor as open_model

    return open_model(
        args.model,
        conf=args.conf,
        nms_iou=args.nms_iou,
        max_boxes=args.max_boxes,
        input_size=args.input_size,
        classes_path=args.classes,
    )


def resolve_classes(args, predictor):
    """Class names: the predictor's, --classes, the files' or the default classes file."""
    from utils.model_data import load_classes

    if predictor is not None:
        return list(predictor.class_names)
    if args.classes_from_files and args.mode in (3, 4):
        return None
    if args.classes:
        return load_classes(args.classes)
    if args.model:
        return list(load_predictor(args).class_names)
    return load_classes(DEFAULT_CLASSES)


def read_annotations(args, predictor):
    """The --annotations dataset, its class names checked against the model's or --classes."""
    from utils.data.sources import ClassNames, read_dataset

    expected = args.classes  # None: the dataset's own class names
    if predictor is not None:
        origin = f"the model {args.model}" + (f" with --classes {args.classes}" if args.classes else "")
        expected = ClassNames(list(predictor.class_names), _model_category_ids(predictor), origin)
    return read_dataset(args.annotations, split=args.split, images=args.images, classes=expected)


def _model_category_ids(predictor):
    """The COCO category ids stored with the predictor's model, or None."""
    return getattr(getattr(predictor, "model", None), "category_ids", None)


def coco_ids(source, predictor):
    """(category ids, {image_id: COCO image id}) for the COCO files; None where unknown."""
    category_ids = source.classes.category_ids if source is not None else None
    if category_ids is None and predictor is not None:
        category_ids = _model_category_ids(predictor)
    image_ids = None
    if source is not None and source.image_ids is not None:
        image_ids = {Path(ann.path).stem: i for ann, i in zip(source.annotations, source.image_ids)}
    return category_ids, image_ids


def list_images(args, class_names, source=None):
    """The images to evaluate, from the --annotations dataset or the VOC split."""
    from utils.eval import map_files

    if source is not None:
        return map_files.images_from_source(source)
    year = args.year[3:] if args.year.upper().startswith("VOC") else args.year
    return map_files.images_from_voc(args.voc_root, year, args.split, class_names)


def evaluate(args, class_names, out, ids=(None, None), files_dir=None):
    """Reads the text files and computes the metric; returns (result, problems).

    The files are read from ``files_dir`` (default ``out``); the COCO JSON files go to
    ``out``, written with ``ids``, the (category ids, image ids).
    """
    from utils.eval import map_files
    from utils.eval import metrics

    files = map_files.read_map_files(out if files_dir is None else files_dir, class_names)
    metric = "coco" if args.mode == 4 else args.metric
    if metric == "coco":
        result = metrics.evaluate_coco(files.ground_truth, files.detections, files.class_names)
        category_ids, image_ids = ids
        if image_ids is not None and not set(files.ground_truth) <= set(image_ids):
            image_ids = None  # files from elsewhere: number the images instead
        written = map_files.write_coco_files(
            out, files.ground_truth, files.detections, files.class_names, category_ids, image_ids
        )
        result["coco_files"] = [str(path) for path in written]
    else:
        result = metrics.evaluate_voc(
            files.ground_truth,
            files.detections,
            files.class_names,
            iou_threshold=args.iou,
            score_threshold=args.score_threshold,
            use_07_metric=metric == "voc07",
        )
    return result, files.problems


def report(result, args, out, problems, made_detections):
    """Prints the metrics and writes results.json and the plots."""
    from utils.eval import metrics

    if result["metric"] == "coco":
        print(
            f"COCO metrics over {result['num_images']} images, {result['num_gt']} ground-truth objects, "
            f"{result['num_detections']} detections:"
        )
        print(result["summary"])
        if result.get("coco_files"):
            print("COCO ground truth and detections (the dataset's ids): " + ", ".join(result["coco_files"]))
    else:
        print(metrics.format_voc_table(result))
    summary = metrics.json_ready(result)
    summary["mode"] = args.mode
    summary["problems"] = len(problems)
    if made_detections:
        summary["detection_conf"] = args.conf
        summary["detection_nms_iou"] = args.nms_iou
        summary["detection_max_boxes"] = args.max_boxes
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    if result["metric"] != "coco" and not args.no_plots:
        from utils.eval.plots import save_voc_plots

        save_voc_plots(result, out)
    print(f"Results written to {out / 'results.json'}")


def write_problems(problems, out, shown):
    """Prints a summary of the problems and writes all of them to <out>/problems.txt (empty when none)."""
    from utils.eval.map_files import format_problems

    path = out / "problems.txt"
    write_text_atomic(path, "".join(f"{problem}\n" for problem in problems))
    if problems:
        print(format_problems(problems, limit=shown))
        print(f"All problems listed in {path}")


def text_folders(mode):
    """The text folders a mode writes: detections (modes 0 and 1), ground truth (modes 0 and 2)."""
    from utils.eval.map_files import DET_DIR, GT_DIR

    return [name for name, modes in ((DET_DIR, (0, 1)), (GT_DIR, (0, 2))) if mode in modes]


def write_text_files(args, predictor, images, class_names, work):
    """Writes the text files of modes 0, 1 and 2 into the run's own folder ``work``.

    Returns:
        (counts, problems): the number of files written per text folder, and a
        message per image that could not be read. Mode 0 writes the ground truth of
        the images whose detections were made.
    """
    from utils.eval import map_files

    counts, problems = {}, []
    if args.mode in (0, 1):
        written, problems = map_files.write_detection_files(predictor, images, work, args.batch_size)
        counts[map_files.DET_DIR] = len(written)
        if args.mode == 0:
            done = set(written)
            images = [image for image in images if image.image_id in done]
    if args.mode in (0, 2):
        map_files.write_ground_truth_files(images, class_names, work)
        counts[map_files.GT_DIR] = len(images)
    return counts, problems


def run(args):
    """Runs one mode; returns the exit status."""
    from utils.eval import map_files

    out = Path(args.out)
    if args.mode in (0, 1) and not args.model:
        raise SystemExit(f"get_map.py: error: --mode {args.mode} needs --model")
    for name in text_folders(args.mode):
        map_files.check_text_folder(out / name)
    predictor = load_predictor(args) if args.mode in (0, 1) else None
    source = read_annotations(args, predictor) if args.annotations else None
    class_names = list(source.classes.names) if source is not None else resolve_classes(args, predictor)
    ids = coco_ids(source, predictor)

    if args.mode in (3, 4):
        result, problems = evaluate(args, class_names, out, ids)
        write_problems(problems, out, args.problems_shown)
        report(result, args, out, problems, made_detections=False)
        return 0

    images, problems = list_images(args, class_names, source)
    out.mkdir(parents=True, exist_ok=True)
    if not images:
        write_problems(problems, out, args.problems_shown)
        print("No image to evaluate.", file=sys.stderr)
        return 1
    # Everything this run writes and reads lies in its own folder until published, so
    # that a run sharing --out neither reads nor deletes any of it.
    work = Path(tempfile.mkdtemp(prefix=".get_map-", dir=out))
    try:
        counts, found = write_text_files(args, predictor, images, class_names, work)
        problems += found
        if args.mode == 0:
            result, found = evaluate(args, class_names, out, ids, files_dir=work)
            # The messages name the files where they are published.
            problems += [message.replace(str(work), str(out)) for message in found]
        for name, count in counts.items():
            map_files.publish_folder(work / name, out / name)
            what = "detection" if name == map_files.DET_DIR else "ground-truth"
            print(f"Wrote {count} {what} files to {out / name}")
        write_problems(problems, out, args.problems_shown)
        if args.mode == 0:
            report(result, args, out, problems, made_detections=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv=None):
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as exc:  # DatasetError is a ValueError
        print(f"get_map.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
