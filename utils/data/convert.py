"""Moving a dataset between formats: read it in any format ``utils.data.sources``
knows, write it as annotation lines, COCO JSON or a YOLO txt split.

What each target keeps:

* ``lines``: one line per image with its absolute path; the class names go to a
  classes file beside it (COCO category ids are not kept: train from the COCO file
  itself to store them with the model).
* ``coco``: category ids of a COCO source are kept (else 1..C); difficult objects
  become crowd regions (``iscrowd`` 1), which COCO evaluation ignores.
* ``yolo``: images linked (or copied) into ``images/<split>/``, labels in
  ``labels/<split>/``, the split and names added to ``data.yaml``; YOLO labels have
  no difficult flag, so difficult objects become plain ones (reported).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import Annotation, write_annotation_file
from utils.data.report import ConversionReport, DatasetError
from utils.data.sources import read_dataset
from utils.run_dir import write_text_atomic

TARGETS = ("lines", "coco", "yolo")


@dataclass
class Conversion:
    """The outcome of ``convert_dataset``.

    Attributes:
        source: the DatasetSource read.
        written: the files written (annotation, classes, JSON or data YAML files).
        images: images written.
        objects: int64 (C,) objects written per class.
        report: everything skipped or changed, reading and writing.
    """

    source: object
    written: list = field(default_factory=list)
    images: int = 0
    objects: np.ndarray = None
    report: ConversionReport = field(default_factory=ConversionReport)


def classes_file_for(lines_path):
    """The classes file written beside an annotation-line file: ``<stem>_classes.txt``."""
    lines_path = Path(lines_path)
    return lines_path.with_name(f"{lines_path.stem}_classes.txt")


def write_lines(path, annotations, class_names):
    """Writes annotation lines with absolute image paths and the classes file beside them.

    Returns:
        (lines file, classes file) Paths.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    absolute = [Annotation(os.path.abspath(a.path), a.boxes, a.classes, a.difficult) for a in annotations]
    write_annotation_file(path, absolute)
    classes = classes_file_for(path)
    write_text_atomic(classes, "".join(f"{name}\n" for name in class_names))
    return path, classes


def convert_dataset(source, to, out, fmt=None, split=None, images=None, classes=None, out_split=None,
                    copy_images=False):
    """Reads a dataset and writes it in another format.

    Args:
        source: the dataset (see ``utils.data.sources.read_dataset``).
        to: "lines", "coco" or "yolo".
        out: the annotation-line file, the COCO JSON file, or the YOLO dataset folder.
        fmt: the source format, or None to detect it.
        split: the split to read (YOLO data YAML, VOC folder).
        images: folder of a COCO source's images when its file names are relative.
        classes: a classes file (needed for annotation lines other than the default
            classes; checked against the names of the other formats).
        out_split: the YOLO split written (default: ``split``, else "train").
        copy_images: YOLO target: copy images instead of linking them.

    Returns:
        Conversion.

    Raises:
        FileNotFoundError: the source or a classes file does not exist.
        DatasetError: an unreadable source, disagreeing class names, or a YOLO split
            folder that already holds files.
    """
    if to not in TARGETS:
        raise DatasetError(f"unknown target format {to!r}; use one of {', '.join(TARGETS)}")
    data = read_dataset(source, split=split, images=images, classes=classes, fmt=fmt)
    result = Conversion(data)
    result.report.extend(data.report)
    names = data.classes.names
    if to == "lines":
        result.written += list(write_lines(out, data.annotations, names))
        result.images = len(data.annotations)
        result.objects = _per_class([a.classes for a in data.annotations], len(names))
    elif to == "coco":
        from utils.data.coco import coco_report, write_coco

        report = coco_report()
        written = write_coco(out, data.annotations, names, data.classes.category_ids, report)
        result.report.extend(report)
        result.written.append(Path(out))
        index = {cid: k for k, cid in enumerate(c["id"] for c in written["categories"])}
        result.images = len(written["images"])
        result.objects = _per_class([[index[a["category_id"]] for a in written["annotations"]]], len(names))
    else:
        from utils.data.yolo_txt import write_yolo, yolo_report

        report = yolo_report()
        stats = write_yolo(out, data.annotations, names, split=out_split or split or "train",
                           copy_images=copy_images, report=report)
        result.report.extend(report)
        result.written.append(stats["data_yaml"])
        result.images = stats["images"]
        result.objects = stats["per_class"]
    return result


def _per_class(class_lists, num_classes):
    counts = np.zeros(num_classes, np.int64)
    for classes in class_lists:
        np.add.at(counts, np.asarray(classes, np.int64), 1)
    return counts


def format_class_table(class_names, counts):
    """Objects per class as a text table (name, count), with the total."""
    width = max([len("class"), len("total")] + [len(n) for n in class_names])
    lines = [f"{'class':<{width}}  {'objects':>8}", "-" * (width + 10)]
    lines += [f"{name:<{width}}  {int(n):>8}" for name, n in zip(class_names, counts)]
    lines += ["-" * (width + 10), f"{'total':<{width}}  {int(np.sum(counts)):>8}"]
    return "\n".join(lines)
