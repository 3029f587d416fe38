"""The evaluation job behind get_map.py: text files, metrics, results and plots.

The modes are ``MODES`` (all, detections, ground-truth, score, coco); the numbers 0-4
they had before they had names stay accepted (``MODE_ALIASES``). What each mode
writes under ``--out`` is described in get_map.py's help.

Runs sharing ``--out`` stay apart (docs/evaluation.md): the text files are written
in a hidden folder of the run's own and published by ``map_files.publish_folder``.

This stage does not open models: ``run`` takes a function that does.
"""

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
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


def mode_name(text):
    """A mode name, or its number, -> the mode name; ValueError naming the choices."""
    name = MODE_ALIASES.get(str(text).strip(), str(text).strip())
    if name not in MODES:
        aliases = ", ".join(f"{number}={name}" for number, name in MODE_ALIASES.items())
        raise ValueError(f"must be one of {', '.join(MODES)} (or a number: {aliases}), got {text!r}")
    return name


@dataclass
class EvalOutcome:
    """What a run of ``run`` ended with.

    Attributes:
        status: the exit status (0: done).
        out: the output folder.
        summary: the content of ``results.json`` for the modes that score, else None.
    """

    status: int
    out: Path
    summary: dict | None = None


def resolve_classes(options, predictor, open_predictor):
    """Class names: the predictor's, --classes, the files' (None) or the default classes file."""
    from utils.model_data import load_classes

    if predictor is not None:
        return list(predictor.class_names)
    if options.classes_from_files and options.mode in FILE_MODES:
        return None
    if options.classes:
        return load_classes(options.classes)
    if options.model:
        return list(open_predictor(options).class_names)
    return load_classes(DEFAULT_CLASSES)


def read_annotations(options, predictor):
    """The --annotations dataset, its class names checked against the model's or --classes."""
    from utils.data.sources import ClassNames, read_dataset

    expected = options.classes  # None: the dataset's own class names
    if predictor is not None:
        origin = f"the model {options.model}" + (f" with --classes {options.classes}" if options.classes else "")
        expected = ClassNames(list(predictor.class_names), _model_category_ids(predictor), origin)
    return read_dataset(options.annotations, split=options.split, images=options.images, classes=expected)


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


def list_images(options, class_names, source=None):
    """The images to evaluate, from the --annotations dataset or the VOC split: (images, problems)."""
    if source is not None:
        return images_from_source(source)
    year = options.year[3:] if options.year.upper().startswith("VOC") else options.year
    return images_from_voc(options.voc_root, year, options.split, class_names)


def evaluate(options, class_names, out, ids=(None, None), files_dir=None):
    """Reads the text files and computes the metric; returns (result, files).

    The files are read from ``files_dir`` (default ``out``); the COCO JSON files go to
    ``out``, written with ``ids``, the (category ids, image ids). ``files`` is the
    ``map_files.MapFiles`` read, with the ground truth, detections and problems.
    """
    files = map_files.read_map_files(out if files_dir is None else files_dir, class_names)
    metric = "coco" if options.mode == "coco" else options.metric
    result = score_detections(
        files.ground_truth,
        files.detections,
        files.class_names,
        metric,
        iou_threshold=options.iou,
        score_threshold=options.score_threshold,
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


def diagnose_files(result, options, files):
    """Adds to ``result`` the diagnostics (best F1, confusion matrix, judged images) of
    the files just scored, under ``diagnostics``; returns them."""
    result["diagnostics"] = diagnose(result, files.ground_truth, files.detections, files.class_names,
                                     options.confusion_conf, options.confusion_iou)
    return result["diagnostics"]


def report(result, options, out, problems, made_detections):
    """Prints the metrics and the diagnostics, writes results.json and the plots; returns
    what results.json holds."""
    diagnostics = result.get("diagnostics")
    if result["metric"] == "coco":
        print(format_coco_summary(result))
        if result.get("coco_files"):
            print("COCO ground truth and detections (the dataset's ids): " + ", ".join(result["coco_files"]))
    else:
        print(format_voc_table(result))
    if diagnostics is not None:
        print(format_diagnostics(diagnostics))
        save_diagnostics(diagnostics, result, out, plots=options.plots)
    summary = json_ready(result)
    if diagnostics is not None:
        summary.update(diagnostics_json(diagnostics))
    summary["mode"] = MODE_NUMBERS[options.mode]
    summary["problems"] = len(problems)
    if made_detections:
        summary["detection_conf"] = options.conf
        summary["detection_nms_iou"] = options.nms_iou
        summary["detection_max_boxes"] = options.max_boxes
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    if result["metric"] != "coco" and options.plots:
        from utils.eval.plots import save_voc_plots

        save_voc_plots(result, out)
    print(f"Results written to {out / 'results.json'}")
    return summary


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


def write_text_files(options, predictor, images, class_names, work):
    """Writes the text files of the modes all, detections and ground-truth into the run's own folder ``work``.

    Returns:
        (counts, problems): the number of files written per text folder, and a
        message per image that could not be read. Mode all writes the ground truth of
        the images whose detections were made.
    """
    counts, problems = {}, []
    if options.mode in PREDICTING_MODES:
        written, problems = map_files.write_detection_files(predictor, images, work, options.batch_size)
        counts[map_files.DET_DIR] = len(written)
        if options.mode == "all":
            done = set(written)
            images = [image for image in images if image.image_id in done]
    if options.mode in ("all", "ground-truth"):
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


def run(options, open_predictor):
    """Runs one mode of get_map.py; returns an EvalOutcome.

    Args:
        options: EvalOptions (``options.mode`` a name of ``MODES``).
        open_predictor: function(options) -> the predictor of --model, an object with
            ``class_names`` and ``predict_batch`` (``utils.predict.predictor.BasePredictor``);
            called by the modes that predict, and by the others for the class names
            of a --model.

    Raises:
        FileNotFoundError, ValueError: missing or unusable inputs (a mode that predicts
            without --model included), with a message for the user.
    """
    out = Path(options.out)
    if options.mode in PREDICTING_MODES and not options.model:
        raise ValueError(f"--mode {options.mode} needs --model")
    if options.mode in PREDICTING_MODES:
        check_writable_folder(out, "--out")
    if options.save_errors and options.mode != "all":
        print(f"--save-errors: mode {options.mode} draws no error gallery (it needs the images, their detections and "
              "the ground truth); use --mode all", file=sys.stderr)
    for name in text_folders(options.mode):
        map_files.check_text_folder(out / name)
    predictor = open_predictor(options) if options.mode in PREDICTING_MODES else None
    source = read_annotations(options, predictor) if options.annotations else None
    if source is not None:
        class_names = list(source.classes.names)
    else:
        class_names = resolve_classes(options, predictor, open_predictor)
    ids = coco_ids(source, predictor)

    if options.mode in FILE_MODES:
        result, files = evaluate(options, class_names, out, ids)
        write_problems(files.problems, out, options.problems_shown)
        diagnose_files(result, options, files)
        return EvalOutcome(0, out, report(result, options, out, files.problems, made_detections=False))

    images, problems = list_images(options, class_names, source)
    out.mkdir(parents=True, exist_ok=True)
    if not images:
        write_problems(problems, out, options.problems_shown)
        print("No image to evaluate.", file=sys.stderr)
        return EvalOutcome(1, out)
    # Everything this run writes and reads lies in its own folder until published, so
    # that a run sharing --out neither reads nor deletes any of it.
    work = Path(tempfile.mkdtemp(prefix=".get_map-", dir=out))
    summary = None
    try:
        counts, found = write_text_files(options, predictor, images, class_names, work)
        problems += found
        if options.mode == "all":
            result, files = evaluate(options, class_names, out, ids, files_dir=work)
            # The messages name the files where they are published.
            problems += [message.replace(str(work), str(out)) for message in files.problems]
            diagnostics = diagnose_files(result, options, files)
            if options.save_errors:
                problems += save_errors(diagnostics, images, options.save_errors, work, out)
        for name, count in counts.items():
            map_files.publish_folder(work / name, out / name)
            what = "detection" if name == map_files.DET_DIR else "ground-truth"
            print(f"Wrote {count} {what} files to {out / name}")
        write_problems(problems, out, options.problems_shown)
        if options.mode == "all":
            summary = report(result, options, out, problems, made_detections=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return EvalOutcome(0, out, summary)
