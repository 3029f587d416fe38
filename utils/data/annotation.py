"""The one-line-per-image annotation format.

Each line is ``image_path box box ...`` where a box is ``x1,y1,x2,y2,class_id`` in
pixels of the original image (the widely used keras-yolo3 format), optionally with a
sixth field ``difficult`` (0 or 1). Boxes are read from the right-hand end of the line,
so image paths may contain spaces; files written by other tools in the plain format
read unchanged.
"""

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.run_dir import write_text_atomic

_NUM = r"-?\d+(?:\.\d+)?"
_BOX_RE = re.compile(rf"^{_NUM},{_NUM},{_NUM},{_NUM},\d+(?:,[01])?$")


@dataclass
class Annotation:
    """One image and its objects.

    Attributes:
        path: image file path, as written in the annotation file.
        boxes: float32 (N, 4) xyxy pixels of the original image.
        classes: int32 (N,) class ids.
        difficult: bool (N,) VOC "difficult" flags.
        orientation: EXIF orientation of the image file (1–8, 1: as stored), set by
            ``utils.data.dataset.check_annotations`` from the header; the training
            pipeline turns the pixels to the displayed orientation, which the boxes
            refer to. Not written to annotation lines.
    """

    path: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    difficult: np.ndarray = None
    orientation: int = 1

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int32).reshape(-1)
        if self.difficult is None or len(self.difficult) != len(self.classes):
            self.difficult = np.zeros(len(self.classes), bool)
        self.difficult = np.asarray(self.difficult, bool)

    def __len__(self):
        return len(self.classes)


class AnnotationError(ValueError):
    """A line that cannot be read; carries the file and line number."""


def parse_line(line, source="<line>", lineno=0):
    """Parses one annotation line.

    Args:
        line: the text line.
        source: file name used in error messages.
        lineno: 1-based line number used in error messages.

    Returns:
        Annotation, or None for a blank line.

    Raises:
        AnnotationError: the line has no image path or a malformed box.
    """
    text = line.strip()
    if not text:
        return None
    tokens = text.split(" ")
    boxes = []
    while tokens and _BOX_RE.match(tokens[-1]):
        boxes.append(tokens.pop())
    boxes.reverse()
    path = " ".join(tokens).strip()
    if not path:
        raise AnnotationError(f"{source}:{lineno}: no image path before the boxes: {text[:80]!r}")
    if "," in tokens[-1] and re.match(rf"^{_NUM}(,{_NUM})+", tokens[-1]):
        raise AnnotationError(
            f"{source}:{lineno}: malformed box {tokens[-1]!r} (expected x1,y1,x2,y2,class_id[,difficult])"
        )
    n = len(boxes)
    xyxy = np.zeros((n, 4), np.float32)
    classes = np.zeros((n,), np.int32)
    difficult = np.zeros((n,), bool)
    for i, box in enumerate(boxes):
        parts = box.split(",")
        xyxy[i] = [float(p) for p in parts[:4]]
        classes[i] = int(parts[4])
        difficult[i] = len(parts) > 5 and parts[5] == "1"
    return Annotation(path, xyxy, classes, difficult)


def format_line(annotation):
    """Formats an Annotation as one line (no newline).

    Coordinates are written as integers when integral. The difficult field is written
    only for difficult objects, so lines stay readable by tools that know 5 fields.
    """
    fields = [str(annotation.path)]
    for box, cls, diff in zip(annotation.boxes, annotation.classes, annotation.difficult):
        coords = ",".join(_fmt(v) for v in box)
        fields.append(f"{coords},{int(cls)}" + (",1" if diff else ""))
    return " ".join(fields)


def _fmt(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.2f}"


def read_annotation_file(path, num_classes=None):
    """Reads an annotation file, collecting problems instead of stopping at the first.

    Args:
        path: the annotation file.
        num_classes: when given, boxes whose class id is >= num_classes are problems.

    Returns:
        (annotations, problems): list of Annotation, and list of str messages naming
        file and line for each skipped line or box.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file not found: {path}")
    annotations, problems = [], []
    try:
        # Read whole, so that a binary file is refused before any line; lines as open() splits them.
        lines = io.StringIO(path.read_text(encoding="utf-8"), newline=None)
    except UnicodeDecodeError as exc:
        from utils.data.report import DatasetError

        raise DatasetError(f"{path} is not a text annotation file (byte {exc.start} is not UTF-8); annotation "
                           "lines are 'image_path x1,y1,x2,y2,class_id ...'") from None
    for lineno, line in enumerate(lines, 1):
        try:
            ann = parse_line(line, str(path), lineno)
        except AnnotationError as exc:
            problems.append(str(exc))
            continue
        if ann is None:
            continue
        keep = np.ones(len(ann), bool)
        for i, (box, cls) in enumerate(zip(ann.boxes, ann.classes)):
            if num_classes is not None and cls >= num_classes:
                problems.append(
                    f"{path}:{lineno}: class id {cls} out of range (model has {num_classes} classes); box skipped"
                )
                keep[i] = False
            elif box[2] <= box[0] or box[3] <= box[1]:
                problems.append(f"{path}:{lineno}: empty or inverted box {box.tolist()}; box skipped")
                keep[i] = False
        if not keep.all():
            ann = Annotation(ann.path, ann.boxes[keep], ann.classes[keep], ann.difficult[keep])
        annotations.append(ann)
    return annotations, problems


def write_annotation_file(path, annotations):
    """Writes Annotations one per line (UTF-8), atomically: a reader finds the old file or the whole new one."""
    write_text_atomic(path, "".join(format_line(ann) + "\n" for ann in annotations))
