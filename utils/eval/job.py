"""The evaluation job behind get_map.py: text files, metrics, results and plots.

The modes are ``MODES`` (all, detections, ground-truth, score, coco); the numbers 0-4
they had before they had names stay accepted (``MODE_ALIASES``). What each mode
writes under ``--out`` is described in get_map.py's help.

Runs sharing ``--out`` stay apart: a run writes its text files into a hidden folder
of its own (``--out/.get_map-*``), computes the metrics from there, then moves each
text folder into place in one rename (``map_files.publish_folder``); every other
file is written under a temporary name and renamed (``write_text_atomic``).

This stage does not open models: ``run`` takes a function that does.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from utils.config import DEFAULT_CLASSES
from utils.eval import map_files
from utils.eval.diagnostics import diagnose, diagnostics_json, format_diagnostics, save_diagnostics
from utils.eval.evaluator import score_detections
from utils.eval.images import images_from_source, images_from_voc
from utils.eval.tables import format_coco_summary, format_problems, format_voc_table, json_ready
from utils.run_dir import check_writable_folder, write_text_atomic

MODES = {
    "all": "detections, ground truth and metrics",
    "detections": "detection files only",
    "ground-truth": "ground-truth files only",
    "score": "metrics from existing files",
    "coco": "COCO metrics from existing files",
}
#: The numbers the modes had before they had names.
MODE_ALIASES = {"0": "all", "1": "detections", "2": "ground-truth", "3": "score", "4": "coco"}
MODE_NUMBERS = {name: int(number) for number, name in MODE_ALIASES.items()}
#: Modes that run the model.
PREDICTING_MODES = ("all", "detections")
#: Modes that score the text files already in --out.
FILE_MODES = ("score", "coco")
#: The folder of the error gallery (--save-errors).
ERRORS_DIR = "errors"
#: The text folders, each with the modes that write it.
TEXT_FOLDERS = {map_files.DET_DIR: ("all", "detections"), map_files.GT_DIR: ("all", "ground-truth")}


def parse_mode(text):
    """argparse type: a mode name, or its number, -> the mode name."""
    name = MODE_ALIASES.get(text.strip(), text.strip())
    if name not in MODES:
        aliases = ", ".join(f"{number}={name}" for number, name in MODE_ALIASES.items())
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(MODES)} (or a number: {aliases}), got {text!r}")
    return name


def resolve_classes(args, predictor, open_predictor):
    """Class names: the predictor's, --classes, the files' (None) or the default classes file."""
    from utils.model_data import load_classes

    if predictor is not None:
        return list(predictor.class_names)
    if args.classes_from_files and args.mode in FILE_MODES:
        return None
    if args.classes:
        return load_classes(args.classes)
    if args.model:
        return list(open_predictor(args).class_names)
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
    """The images to evaluate, from the --annotations dataset or the VOC split: (images, problems)."""
    if source is not None:
        return images_from_source(source)
    year = args.year[3:] if args.year.upper().startswith("VOC") else args.year
    return images_from_voc(args.voc_root, year, args.split, class_names)


def evaluate(args, class_names, out, ids=(None, None), files_dir=None):
    """Reads the text files and computes the metric; returns (result, files).

    The files are read from ``files_dir`` (default ``out``); the COCO JSON files go to
    ``out``, written with ``ids``, the (category ids, image ids). ``files`` is the
    ``map_files.MapFiles`` read, with the ground truth, detections and problems.
    """
    files = map_files.read_map_files(out if files_dir is None else files_dir, class_names)
    metric = "coco" if args.mode == "coco" else args.metric
    result = score_detections(
        files.ground_truth,
        files.detections,
        files.class_names,
        metric,
        iou_threshold=args.iou,
        score_threshold=args.score_threshold,
    )
    if metric == "coco":
        category_ids, image_ids = ids
        if image_ids is not None and not set(files.ground_truth) <= set(image_ids):
            image_ids = None  # files from elsewhere: number the images instead
        written = map_files.write_coco_files(
            out, files.ground_truth, files.detections, files.class_names, category_ids, image_ids
        )
        result["coco_files"] = [str(path) for path in written]
    return result, files


def diagnose_files(result, args, files):
    """Adds to ``result`` the diagnostics (best F1, confusion matrix, judged images) of
    the files just scored, under ``diagnostics``; returns them."""
    result["diagnostics"] = diagnose(result, files.ground_truth, files.detections, files.class_names,
                                     args.confusion_conf, args.confusion_iou)
    return result["diagnostics"]


def report(result, args, out, problems, made_detections):
    """Prints the metrics and the diagnostics, and writes results.json and the plots."""
    diagnostics = result.get("diagnostics")
    if result["metric"] == "coco":
        print(format_coco_summary(result))
        if result.get("coco_files"):
            print("COCO ground truth and detections (the dataset's ids): " + ", ".join(result["coco_files"]))
    else:
        print(format_voc_table(result))
    if diagnostics is not None:
        print(format_diagnostics(diagnostics))
        save_diagnostics(diagnostics, result, out, plots=not args.no_plots)
    summary = json_ready(result)
    if diagnostics is not None:
        summary.update(diagnostics_json(diagnostics))
    summary["mode"] = MODE_NUMBERS[args.mode]
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
    path = out / "problems.txt"
    write_text_atomic(path, "".join(f"{problem}\n" for problem in problems))
    if problems:
        print(format_problems(problems, limit=shown))
        print(f"All problems listed in {path}")


def text_folders(mode):
    """The text folders a mode writes: detections (all, detections), ground truth (all, ground-truth)."""
    return [name for name, modes in TEXT_FOLDERS.items() if mode in modes]


def write_text_files(args, predictor, images, class_names, work):
    """Writes the text files of the modes all, detections and ground-truth into the run's own folder ``work``.

    Returns:
        (counts, problems): the number of files written per text folder, and a
        message per image that could not be read. Mode all writes the ground truth of
        the images whose detections were made.
    """
    counts, problems = {}, []
    if args.mode in PREDICTING_MODES:
        written, problems = map_files.write_detection_files(predictor, images, work, args.batch_size)
        counts[map_files.DET_DIR] = len(written)
        if args.mode == "all":
            done = set(written)
            images = [image for image in images if image.image_id in done]
    if args.mode in ("all", "ground-truth"):
        map_files.write_ground_truth_files(images, class_names, work)
        counts[map_files.GT_DIR] = len(images)
    return counts, problems


def save_errors(diagnostics, images, count, work, out):
    """Draws the error gallery into the run's own folder, then puts it at ``<out>/errors``; returns problems."""
    from utils.eval.gallery import save_error_gallery

    written, problems = save_error_gallery(
        diagnostics.judgments, {image.image_id: image.path for image in images}, diagnostics.class_names,
        work / ERRORS_DIR, count, diagnostics.conf, diagnostics.iou,
    )
    map_files.publish_folder(work / ERRORS_DIR, out / ERRORS_DIR)
    print(f"Error gallery: the {len(written)} images with the most errors in {out / ERRORS_DIR}")
    return problems


def run(args, open_predictor):
    """Runs one mode of get_map.py; returns the exit status.

    Args:
        args: the parsed get_map.py options (``args.mode`` a name of ``MODES``).
        open_predictor: function(args) -> the predictor of --model, an object with
            ``class_names`` and ``predict_batch`` (``utils.predict.predictor.BasePredictor``);
            called by the modes that predict, and by the others for the class names
            of a --model.

    Raises:
        FileNotFoundError, ValueError: missing or unusable inputs (a mode that predicts
            without --model included), with a message for the user.
    """
    out = Path(args.out)
    if args.mode in PREDICTING_MODES and not args.model:
        raise ValueError(f"--mode {args.mode} needs --model")
    if args.mode in PREDICTING_MODES:
        check_writable_folder(out, "--out")
    if args.save_errors and args.mode != "all":
        print(f"--save-errors: mode {args.mode} draws no error gallery (it needs the images, their detections and "
              "the ground truth); use --mode all", file=sys.stderr)
    for name in text_folders(args.mode):
        map_files.check_text_folder(out / name)
    predictor = open_predictor(args) if args.mode in PREDICTING_MODES else None
    source = read_annotations(args, predictor) if args.annotations else None
    if source is not None:
        class_names = list(source.classes.names)
    else:
        class_names = resolve_classes(args, predictor, open_predictor)
    ids = coco_ids(source, predictor)

    if args.mode in FILE_MODES:
        result, files = evaluate(args, class_names, out, ids)
        write_problems(files.problems, out, args.problems_shown)
        diagnose_files(result, args, files)
        report(result, args, out, files.problems, made_detections=False)
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
        if args.mode == "all":
            result, files = evaluate(args, class_names, out, ids, files_dir=work)
            # The messages name the files where they are published.
            problems += [message.replace(str(work), str(out)) for message in files.problems]
            diagnostics = diagnose_files(result, args, files)
            if args.save_errors:
                problems += save_errors(diagnostics, images, args.save_errors, work, out)
        for name, count in counts.items():
            map_files.publish_folder(work / name, out / name)
            what = "detection" if name == map_files.DET_DIR else "ground-truth"
            print(f"Wrote {count} {what} files to {out / name}")
        write_problems(problems, out, args.problems_shown)
        if args.mode == "all":
            report(result, args, out, problems, made_detections=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
