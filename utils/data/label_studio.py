"""Reading and writing Label Studio's JSON tasks (the rectangles of them).

A Label Studio JSON file is a list of tasks, as Label Studio imports and exports them::

    [{"data": {"image": "/data/local-files/?d=street/a.jpg"},
      "annotations": [{"result": [...], "was_cancelled": false}],
      "predictions": [{"model_version": "best.keras", "score": 0.71, "result": [...]}]}]

A result of ``"type": "rectanglelabels"`` holds ``original_width`` and
``original_height`` (the image's pixels) and a ``value`` with ``x``, ``y``,
``width``, ``height`` in percent of them (0-100, top-left corner), ``rotation`` in
degrees (clockwise around the top-left corner) and the class in
``rectanglelabels``; a prediction's result may carry a ``score``.

What is read of a task: its last annotation that was not cancelled (a person's
labels), else its last prediction (the pre-labels, reported as a note); a task with
neither is an image without objects. A rotated rectangle is read as the upright box
around it (reported); results of other types are skipped (reported).

The image is the ``data`` value named ``image`` (else the first value naming an image
file). Its file is found from the reference: the ``d`` parameter of a local-files URL
(``/data/local-files/?d=...``), the path of any other URL (an uploaded file's name
loses the 8-character prefix Label Studio gives it), or a plain path; a relative one is
resolved as ``utils.data.cvat.find_image_file`` does, against the images folder given,
else the ``images/`` folder beside the JSON file, else its folder.

Class names: the given ones; else ``classes.txt`` beside the JSON file (one a line,
the order of class ids); else the names the rectangles use, sorted.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from utils.data.annotation import Annotation
from utils.data.cvat import checked_box, find_image_file, image_folders
from utils.data.report import ConversionReport, DatasetError
from utils.image import IMAGE_EXTENSIONS
from utils.model_data import load_classes
from utils.run_dir import write_text_atomic

#: The class names file read beside a JSON file (and written beside pre-labels).
CLASSES_TXT = "classes.txt"
RESULT_TYPE = "rectanglelabels"
#: The names of the labelling config's tags that the results refer to.
FROM_NAME = "label"
TO_NAME = "image"
# An uploaded file is stored as "<8 hex digits>-<original name>".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")

R_BAD_TASK = "task without a data object naming an image (task skipped)"
R_BAD_BOX = "rectangle without finite x, y, width, height, a label or the image size (object skipped)"
R_EMPTY_BOX = "empty rectangle, width or height <= 0 inside the image (object skipped)"
R_UNKNOWN_LABEL = "label outside the class names (object skipped)"
R_CLIPPED = "rectangle outside the image (clipped to the image)"
R_OTHER_TYPE = "result that is not a rectangle (skipped)"
R_ROTATED = "rotated rectangle (read as the upright box around it)"
R_PREDICTIONS = "task without an annotation (its prediction read as its labels)"
R_NEGATIVE = "task without rectangles (kept as a negative image)"
REASONS = (R_BAD_TASK, R_BAD_BOX, R_EMPTY_BOX, R_UNKNOWN_LABEL, R_OTHER_TYPE, R_CLIPPED, R_ROTATED, R_PREDICTIONS,
           R_NEGATIVE)
NOTE_REASONS = (R_ROTATED, R_PREDICTIONS, R_NEGATIVE)


def label_studio_report():
    """An empty ConversionReport listing the Label Studio reasons in their summary order."""
    return ConversionReport(REASONS, notes=NOTE_REASONS)


@dataclass
class LabelStudioDataset:
    """The content of a Label Studio JSON file.

    Attributes:
        annotations: one Annotation per task with an image, in file order (boxes
            float32 (N, 4) xyxy pixels).
        class_names: the names the class ids index.
        names_from: where the names come from, for messages ("" when given).
        report: everything skipped or changed.
    """

    annotations: list
    class_names: list
    names_from: str
    report: ConversionReport = field(default_factory=label_studio_report)


def image_reference(value):
    """The file path a task's image reference names (see the module docstring)."""
    value = str(value).strip()
    parsed = urlparse(value)
    if parsed.query and "d" in parse_qs(parsed.query):
        return parse_qs(parsed.query)["d"][0]
    if parsed.scheme in ("http", "https", "s3", "gs", "azure-blob") or value.startswith("/data/"):
        path = unquote(parsed.path)
        if value.startswith("/data/upload/") or "/upload/" in path:
            name = Path(path).name
            return _UPLOAD_PREFIX.sub("", name)
        return Path(path).name if parsed.scheme else path
    return value


def _task_image(task):
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("image"), str) and data["image"].strip():
        return data["image"]
    for value in data.values():
        if isinstance(value, str) and Path(urlparse(value).path).suffix.lower() in IMAGE_EXTENSIONS:
            return value
    return None


def _chosen_result(task, where, report):
    """The results of a task's last annotation not cancelled, else of its last prediction."""
    annotations = task.get("annotations") or task.get("completions") or []
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if done:
        return done[-1].get("result") or []
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if predictions:
        report.add(R_PREDICTIONS, where)
        return predictions[-1].get("result") or []
    return []


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def _result_box(result, where, report):
    """(label, xyxy pixels, image size) of one rectangle result, or None (reported)."""
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    labels = value.get("rectanglelabels")
    x, y, w, h = (_number(value.get(k)) for k in ("x", "y", "width", "height"))
    width, height = _number(result.get("original_width")), _number(result.get("original_height"))
    if (None in (x, y, w, h) or not width or not height or width <= 0 or height <= 0
            or not isinstance(labels, list) or not labels or not isinstance(labels[0], str)):
        report.add(R_BAD_BOX, f"{where}: {json.dumps(result)[:160]}")
        return None
    x1, y1 = x / 100 * width, y / 100 * height
    w, h = w / 100 * width, h / 100 * height
    rotation = _number(value.get("rotation")) or 0.0
    if rotation % 360:
        report.add(R_ROTATED, f"{where}: rotation {rotation:g}")
        angle = math.radians(rotation)
        corners = [(0, 0), (w, 0), (w, h), (0, h)]
        xs = [x1 + cx * math.cos(angle) - cy * math.sin(angle) for cx, cy in corners]
        ys = [y1 + cx * math.sin(angle) + cy * math.cos(angle) for cx, cy in corners]
        box = (min(xs), min(ys), max(xs), max(ys))
    else:
        box = (x1, y1, x1 + w, y1 + h)
    return labels[0].strip(), box, (width, height)


def _load_tasks(path):
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from None
    if isinstance(data, dict) and "data" in data:
        data = [data]  # one task on its own
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected Label Studio's list of tasks (each with a 'data' object), got a JSON "
                           f"{type(data).__name__}")
    return data


def read_label_studio(path, images=None, class_names=None):
    """Reads a Label Studio JSON file of tasks.

    Args:
        path: the JSON file.
        images: folder that relative image references are resolved against (see the
            module docstring for the default).
        class_names: names to use instead of ``classes.txt`` or the names found.

    Returns:
        LabelStudioDataset.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: not JSON, not a list of tasks, an unreadable ``classes.txt``, or no class at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label Studio JSON file not found: {path}")
    tasks = _load_tasks(path)
    report = label_studio_report()
    names, names_from = (list(class_names), "") if class_names is not None else (None, "")
    if names is None and (path.parent / CLASSES_TXT).is_file():
        try:
            names, names_from = load_classes(path.parent / CLASSES_TXT), str(path.parent / CLASSES_TXT)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
    folders = image_folders(path, images)
    found = []  # (image path, [(label, box)])
    for number, task in enumerate(tasks):
        reference = _task_image(task)
        where = f"{path.name}: task {task.get('id', number) if isinstance(task, dict) else number}"
        if reference is None:
            report.add(R_BAD_TASK, f"{where}: {json.dumps(task)[:120]}")
            continue
        where += f" ({Path(image_reference(reference)).name})"
        objects = []
        for k, result in enumerate(_chosen_result(task, where, report)):
            if not isinstance(result, dict) or result.get("type") != RESULT_TYPE:
                kind = result.get("type") if isinstance(result, dict) else type(result).__name__
                report.add(R_OTHER_TYPE, f"{where} result {k + 1}: {kind}")
                continue
            read = _result_box(result, f"{where} result {k + 1}", report)
            if read is not None:
                objects.append(read)
        found.append((find_image_file(image_reference(reference), folders), objects, where))
    if names is None:
        names = sorted({label for _, objects, _ in found for label, _, _ in objects})
        names_from = f"the rectangle labels in {path} (sorted)"
    if not names:
        raise DatasetError(f"{path}: no rectangle label and no {CLASSES_TXT} beside it; a detector needs at least "
                           "one class (pass a classes file with --classes)")
    index = {name: k for k, name in enumerate(names)}
    annotations = []
    for image, objects, where in found:
        boxes, classes = [], []
        for label, box, size in objects:
            if label not in index:
                report.add(R_UNKNOWN_LABEL, f"{where}: {label!r} (classes: {names[:20]})")
                continue
            clipped = checked_box(box, size, where, report, R_EMPTY_BOX, R_CLIPPED)
            if clipped is None:
                continue
            boxes.append(clipped)
            classes.append(index[label])
        if not boxes:
            report.add(R_NEGATIVE, where)
        annotations.append(Annotation(str(image), np.asarray(boxes, np.float32).reshape(-1, 4),
                                      np.asarray(classes, np.int32)))
    return LabelStudioDataset(annotations, names, names_from, report)


@dataclass
class LabelStudioTask:
    """One image to write as a task.

    Attributes:
        image: the reference Label Studio opens the image by (a URL or a path).
        width, height: the image size in pixels.
        boxes: float (N, 4) xyxy pixels.
        classes: int (N,) class ids.
        scores: float (N,) scores of predicted boxes, or None for a person's labels
            (written as an annotation instead of a prediction).
        data: more ``data`` fields shown as columns in Label Studio (e.g. a review rank).
    """

    image: str
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray = None
    data: dict = field(default_factory=dict)


def _results(task, class_names):
    results = []
    for k, (box, cls) in enumerate(zip(np.asarray(task.boxes, np.float64).reshape(-1, 4), task.classes)):
        x1, y1, x2, y2 = (float(v) for v in box)
        result = {
            "id": f"r{k + 1}",
            "type": RESULT_TYPE,
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": int(task.width),
            "original_height": int(task.height),
            "image_rotation": 0,
            "value": {"x": 100 * x1 / task.width, "y": 100 * y1 / task.height,
                      "width": 100 * (x2 - x1) / task.width, "height": 100 * (y2 - y1) / task.height,
                      "rotation": 0, "rectanglelabels": [class_names[int(cls)]]},
        }
        if task.scores is not None:
            result["score"] = round(float(task.scores[k]), 4)
        results.append(result)
    return results


def label_studio_tasks(tasks, class_names, model_version):
    """Label Studio's import JSON: the boxes of each task as a prediction (scores
    kept, the prediction's score their mean) or, for a person's labels, an annotation.

    Args:
        tasks: list of LabelStudioTask.
        class_names: the C class names.
        model_version: what made the predictions (e.g. the model file's name).

    Returns:
        list of task dicts.
    """
    out = []
    for task in tasks:
        entry = {"data": {TO_NAME: task.image, **task.data}}
        results = _results(task, class_names)
        if task.scores is None:
            entry["annotations"] = [{"result": results, "was_cancelled": False, "ground_truth": False}]
        else:
            score = float(np.mean(task.scores)) if len(task.scores) else 0.0
            entry["predictions"] = [{"model_version": model_version, "score": round(score, 4), "result": results}]
        out.append(entry)
    return out


def labelling_config(class_names):
    """The labelling interface of a project that takes these tasks (Label Studio's XML config)."""
    labels = "\n".join(f'    <Label value="{_xml_attr(name)}"/>' for name in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n</View>\n')


def _xml_attr(text):
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def write_label_studio(path, tasks, class_names, model_version):
    """Writes ``label_studio_tasks`` to ``path`` atomically; returns the path."""
    write_text_atomic(path, json.dumps(label_studio_tasks(tasks, class_names, model_version), indent=1) + "\n")
    return Path(path)
