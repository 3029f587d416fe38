"""Turning a Pascal VOC dataset into annotation files.

:func:`convert_voc` runs the whole conversion: new split files and/or annotation files
``<year>_{train,val,test}.txt`` in the format of :mod:`utils.data.annotation`, from the
data :mod:`utils.data.voc` reads. Every skipped or changed file and object is collected
in a :class:`ConversionReport` instead of stopping at the first problem.
"""

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import Annotation, write_annotation_file
from utils.data.report import ConversionReport
from utils.data.split import check_fraction
from utils.data.voc import (
    BAD_XML,
    IMAGE_EXTENSIONS,
    MISSING_IMAGE,
    MISSING_XML,
    REPEATED_ID,
    SPLIT_NAMES,
    ImageIndex,
    find_years,
    list_xml_ids,
    make_splits,
    normalize_year,
    read_split,
    read_voc_split,
    split_path,
    write_splits,
    year_dir,
)
from utils.image import image_size

logger = logging.getLogger(__name__)

#: Splits turned into annotation files ``<year>_<split>.txt``.
ANNOTATION_SPLITS = ("train", "val", "test")
#: Splits that must exist to write annotation files from existing splits (mode 2).
#: ``test`` is optional: the VOC2012 trainval release has none.
REQUIRED_SPLITS = ("train", "val")

#: Modes of :func:`convert_voc`.
MODE_ALL = 0
MODE_SPLITS_ONLY = 1
MODE_ANNOTATIONS_ONLY = 2
MODES = (MODE_ALL, MODE_SPLITS_ONLY, MODE_ANNOTATIONS_ONLY)

# Reasons recorded in the ConversionReport, in the order the summary lists them.
R_MISSING_YEAR = "year folder not found (year skipped)"
R_NO_XML_FILES = "no XML file in Annotations (year skipped)"
R_SPLIT_REPLACED = "existing split file replaced with a new split"
R_DUPLICATE_ID = "id listed twice in a split file (repeat skipped)"
R_NO_XML = "id listed in a split file without its XML (id skipped)"
R_MALFORMED = "malformed or unreadable XML (file skipped)"
R_NO_IMAGE = "image not found (annotation skipped)"
R_NO_SIZE = "size missing in XML (read from the image file)"
R_SIZE_UNKNOWN = "size missing in XML and image unreadable (boxes not clipped to the image)"
R_UNKNOWN_CLASS = "unknown class name (object skipped)"
R_CLIPPED = "box outside the image (clipped to the image)"
R_EMPTY_BOX = "empty box after clipping (object dropped)"
R_DIFFICULT = "difficult object (kept, flagged difficult)"
R_DIFFICULT_DROPPED = "difficult object (dropped from the train file, --skip-difficult)"
R_NEGATIVE = "image without objects (kept as a negative line)"
REASONS = (
    R_MISSING_YEAR,
    R_NO_XML_FILES,
    R_SPLIT_REPLACED,
    R_DUPLICATE_ID,
    R_NO_XML,
    R_MALFORMED,
    R_NO_IMAGE,
    R_NO_SIZE,
    R_SIZE_UNKNOWN,
    R_UNKNOWN_CLASS,
    R_CLIPPED,
    R_EMPTY_BOX,
    R_DIFFICULT,
    R_DIFFICULT_DROPPED,
    R_NEGATIVE,
)


# Reasons that record what was kept as it is.
NOTE_REASONS = (R_NO_SIZE, R_DIFFICULT, R_NEGATIVE)


def voc_report():
    """An empty ConversionReport listing the VOC reasons in their summary order."""
    return ConversionReport(REASONS, notes=NOTE_REASONS)



class VocDatasetError(ValueError):
    """The dataset cannot be converted at all (missing folders or split files)."""


@dataclass
class SplitStats:
    """What one annotation file holds.

    Attributes:
        ids: ids listed for the split.
        images: lines written (images with their annotation and image found).
        negatives: lines without any box.
        objects: int64 (num_classes,) boxes written per class.
    """

    ids: int
    images: int
    negatives: int
    objects: np.ndarray


@dataclass
class YearResult:
    """The outcome of converting one ``VOC<year>`` folder.

    Attributes:
        year: the year string.
        split_sizes: ids per split file (as made or read).
        split_files: split files written (empty unless splits were made).
        annotation_files: split name -> annotation file written.
        stats: split name -> SplitStats of that annotation file.
    """

    year: str
    split_sizes: dict = field(default_factory=dict)
    split_files: list = field(default_factory=list)
    annotation_files: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


@dataclass
class VocConversion:
    """The outcome of :func:`convert_voc`.

    Attributes:
        mode: the mode run.
        class_names: the class list used.
        years: YearResult per year converted.
        report: everything skipped or changed.
    """

    mode: int
    class_names: list
    years: list = field(default_factory=list)
    report: ConversionReport = field(default_factory=voc_report)

    @property
    def usable(self):
        """True when something usable came out: split ids (mode 1) or annotation lines."""
        if self.mode == MODE_SPLITS_ONLY:
            return any(sum(y.split_sizes.get(s, 0) for s in ANNOTATION_SPLITS) for y in self.years)
        return any(s.images for y in self.years for s in y.stats.values())


def voc_to_annotation(voc_image, image_path, class_names, where, report, drop_difficult=False):
    """Turns a parsed VOC image into an Annotation, recording every change.

    Boxes are clipped to ``[0, width] x [0, height]`` (to 0 only, when the size is
    unknown); boxes empty after clipping are dropped; objects of unknown classes are
    skipped; difficult objects are kept with the difficult flag, or dropped when
    ``drop_difficult``. An image left without objects is kept as a negative line.

    Args:
        voc_image: VocImage; its width/height of 0 means unknown.
        image_path: path written into the annotation.
        class_names: list of class names; an object's class id is its index here.
        where: text naming the image in report items.
        report: ConversionReport that receives every change.
        drop_difficult: drop difficult objects instead of flagging them.

    Returns:
        Annotation with boxes float32 (N, 4) xyxy pixels of the image.
    """
    class_ids = {name: i for i, name in enumerate(class_names)}
    width, height = voc_image.width, voc_image.height
    boxes, classes, difficult = [], [], []
    for index, obj in enumerate(voc_image.objects, 1):
        label = f"{where}: object {index} {obj.name!r}"
        if obj.name not in class_ids:
            near = difflib.get_close_matches(obj.name, class_names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else " (add it to the classes file to keep it)"
            report.add(R_UNKNOWN_CLASS, f"{label}{hint}")
            continue
        original = (obj.xmin, obj.ymin, obj.xmax, obj.ymax)
        x1, y1, x2, y2 = (max(v, 0.0) for v in original)
        if width and height:
            x1, x2 = min(x1, width), min(x2, width)
            y1, y2 = min(y1, height), min(y2, height)
        clipped = (x1, y1, x2, y2)
        if x2 <= x1 or y2 <= y1:
            detail = f"box {_box_text(original)}"
            if clipped != original:
                detail += f" clipped to {_box_text(clipped)}"
            size = f"{width}x{height}" if width and height else "unknown size"
            report.add(R_EMPTY_BOX, f"{label}: {detail} (image {size})")
            continue
        if clipped != original:
            change = f"box {_box_text(original)} -> {_box_text(clipped)}"
            report.add(R_CLIPPED, f"{label}: {change} (image {width}x{height})")
        if obj.difficult:
            if drop_difficult:
                report.add(R_DIFFICULT_DROPPED, f"{label}: box {_box_text(clipped)}")
                continue
            report.add(R_DIFFICULT, f"{label}: box {_box_text(clipped)}")
        boxes.append(clipped)
        classes.append(class_ids[obj.name])
        difficult.append(obj.difficult)
    if not boxes:
        n = len(voc_image.objects)
        why = "no object in the XML" if n == 0 else f"all {n} of its objects dropped" if n > 1 else "its object dropped"
        report.add(R_NEGATIVE, f"{where}: {why}")
    return Annotation(
        str(image_path),
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(classes, np.int32),
        np.asarray(difficult, bool),
    )


def _box_text(box):
    return "[" + ",".join(f"{v:g}" for v in box) + "]"


def _image_size(path):
    """Reads (width, height) from an image file header, or None when unreadable."""
    try:
        return image_size(path)
    except OSError as exc:
        logger.debug("cannot read the size of %s: %s", path, exc)
        return None




def convert_split(year_folder, ids, class_names, report, split, image_index=None, drop_difficult=False, label=None):
    """Builds the annotations of the ids of one split.

    Args:
        year_folder: the ``VOC<year>`` folder.
        ids: image ids of the split, in the order to write.
        class_names: list of class names.
        report: ConversionReport that receives every skipped or changed item.
        split: split name, used in report items.
        image_index: ImageIndex of the year's JPEGImages (built when None).
        drop_difficult: drop difficult objects instead of flagging them.
        label: text naming the year folder in report items (default its name).

    Returns:
        (annotations, stats): list of Annotation (absolute image paths, boxes float32
        (N, 4) xyxy pixels), and SplitStats.
    """
    entries = read_voc_split(year_folder, ids, image_index)
    return convert_entries(entries, class_names, report, split, label or Path(year_folder).name, drop_difficult)


def convert_entries(entries, class_names, report, split, label, drop_difficult=False):
    """Builds the annotations of a split read by ``utils.data.voc.read_voc_split``.

    Args:
        entries: list of VocEntry, in the order to write.
        class_names: list of class names.
        report: ConversionReport that receives every skipped or changed item.
        split: split name, used in report items.
        label: text naming the year folder in report items.
        drop_difficult: drop difficult objects instead of flagging them.

    Returns:
        (annotations, stats) as from ``convert_split``.
    """
    annotations = []
    objects = np.zeros(len(class_names), np.int64)
    for entry in entries:
        annotation = _entry_annotation(entry, class_names, report, split, label, drop_difficult)
        if annotation is not None:
            np.add.at(objects, annotation.classes, 1)
            annotations.append(annotation)
    negatives = sum(1 for a in annotations if len(a) == 0)
    return annotations, SplitStats(len(entries), len(annotations), negatives, objects)


def _entry_annotation(entry, class_names, report, split, label, drop_difficult):
    """The Annotation of one VocEntry, or None when it is skipped (the report says why)."""
    image_id = entry.image_id
    xml_rel = f"{label}/Annotations/{image_id}.xml"
    list_file = f"{label}/ImageSets/Main/{split}.txt"
    where = f"{xml_rel} [{split}]"
    if entry.problem == REPEATED_ID:
        report.add(R_DUPLICATE_ID, f"{list_file}: {image_id!r}")
        return None
    if entry.problem == MISSING_XML:
        report.add(R_NO_XML, f"{list_file}: {image_id!r} (expected {xml_rel})")
        return None
    if entry.problem == BAD_XML:
        report.add(R_MALFORMED, f"{where}: {entry.error}")
        return None
    voc_image = entry.voc
    if entry.problem == MISSING_IMAGE:
        looked = f"{label}/JPEGImages/{image_id}" + "{" + ",".join(IMAGE_EXTENSIONS) + "}"
        if voc_image.filename:
            looked += f" or {voc_image.filename!r}"
        report.add(R_NO_IMAGE, f"{where}: no {looked}")
        return None
    if not (voc_image.width and voc_image.height):
        size = _image_size(entry.image_path)
        if size is None:
            report.add(R_SIZE_UNKNOWN, f"{where}: cannot read the size of {entry.image_path}")
        else:
            voc_image.width, voc_image.height = size
            report.add(R_NO_SIZE, f"{where}: {size[0]}x{size[1]} read from {entry.image_path.name}")
    return voc_to_annotation(voc_image, entry.image_path, class_names, where, report, drop_difficult)
def convert_voc(
    voc_root,
    class_names,
    out_dir=".",
    years=None,
    mode=MODE_ALL,
    trainval_percent=0.9,
    train_percent=0.9,
    seed=0,
    skip_difficult=False,
):
    """Makes VOC splits and/or annotation files ``<year>_{train,val,test}.txt``.

    Mode 0 makes new split files in ``VOC<year>/ImageSets/Main`` (replacing existing
    ones) and writes annotation files from them; mode 1 only makes the splits; mode 2
    writes annotation files from the existing split files. Annotation lines hold
    absolute image paths and boxes in xyxy pixels of the image (utils.data.annotation
    format). Problems in the data never stop the run: they are recorded in the
    returned report.

    Args:
        voc_root: the VOCdevkit folder.
        class_names: list of class names; class ids are indices in this list.
        out_dir: folder receiving the annotation files (created if needed).
        years: years to convert (``"2007"`` or ``"VOC2007"``); None: every
            ``VOC<year>`` folder present.
        mode: MODE_ALL (0), MODE_SPLITS_ONLY (1) or MODE_ANNOTATIONS_ONLY (2).
        trainval_percent: fraction of the ids in trainval (new splits only).
        train_percent: fraction of trainval in train (new splits only).
        seed: random seed of the new splits.
        skip_difficult: drop difficult objects from the train file (kept and flagged
            in the val and test files either way).

    Returns:
        VocConversion; check ``.usable`` to know whether anything came out.

    Raises:
        VocDatasetError: voc_root is not a folder, holds no ``VOC<year>`` folder, the
            mode is unknown, or (mode 2) a year lacks its train/val split files.
        ValueError: a fraction is outside [0, 1].
    """
    years = _check_convert_args(voc_root, years, mode, trainval_percent, train_percent)
    voc_root = Path(voc_root)
    result = VocConversion(mode=mode, class_names=list(class_names))
    present = _present_years(voc_root, years, result.report)
    if mode == MODE_ANNOTATIONS_ONLY:
        _require_split_files(voc_root, present)

    out_dir = Path(out_dir)
    if mode != MODE_SPLITS_ONLY:
        out_dir.mkdir(parents=True, exist_ok=True)
    for year in present:
        folder = year_dir(voc_root, year)
        year_result = YearResult(year)
        if mode == MODE_ANNOTATIONS_ONLY:
            splits = {s: read_split(split_path(folder, s)) for s in SPLIT_NAMES if split_path(folder, s).is_file()}
        else:
            splits = _new_splits(folder, trainval_percent, train_percent, seed, year_result, result.report)
            if splits is None:
                continue
        year_result.split_sizes = {s: len(ids) for s, ids in splits.items()}
        if mode != MODE_SPLITS_ONLY:
            _write_annotation_files(folder, splits, class_names, out_dir, skip_difficult, year_result, result.report)
        result.years.append(year_result)
    return result


def _check_convert_args(voc_root, years, mode, trainval_percent, train_percent):
    """Validates ``convert_voc``'s arguments; returns the normalized years (found in voc_root when None)."""
    if mode not in MODES:
        raise VocDatasetError(f"Unknown mode {mode!r}; use 0 (splits and annotations), 1 (splits) or 2 (annotations).")
    voc_root = Path(voc_root)
    if not voc_root.is_dir():
        raise VocDatasetError(f"VOC root folder not found: {voc_root}; pass the VOCdevkit folder with --voc-root.")
    if years is None:
        years = find_years(voc_root)
        if not years:
            raise VocDatasetError(
                f"No VOC<year> folder (e.g. VOC2007) in {voc_root}; pass the VOCdevkit folder with --voc-root."
            )
    check_fraction("trainval_percent", trainval_percent)
    check_fraction("train_percent", train_percent)
    return list(dict.fromkeys(normalize_year(y) for y in years))


def _present_years(voc_root, years, report):
    """The years whose ``VOC<year>`` folder exists; the others go into the report."""
    present = []
    for year in years:
        folder = year_dir(voc_root, year)
        if folder.is_dir():
            present.append(year)
        else:
            report.add(R_MISSING_YEAR, f"{folder} (years present: {', '.join(find_years(voc_root)) or 'none'})")
    return present


def _require_split_files(voc_root, years):
    """Mode 2 needs the train and val split files of every year."""
    missing = [
        str(split_path(year_dir(voc_root, y), s))
        for y in years
        for s in REQUIRED_SPLITS
        if not split_path(year_dir(voc_root, y), s).is_file()
    ]
    if missing:
        raise VocDatasetError(
            "Mode 2 writes annotation files from existing splits, but these split files are missing: "
            + ", ".join(missing)
            + ". Make them first with --mode 0 or --mode 1."
        )


def _new_splits(folder, trainval_percent, train_percent, seed, year_result, report):
    """Makes and writes new split files for one year; None when it has no XML file."""
    ids = list_xml_ids(folder)
    if not ids:
        report.add(R_NO_XML_FILES, f"{folder / 'Annotations'}")
        return None
    splits = make_splits(ids, trainval_percent, train_percent, seed)
    for path, replaced in write_splits(folder, splits):
        year_result.split_files.append(path)
        if replaced:
            report.add(R_SPLIT_REPLACED, str(path))
    return splits


def _write_annotation_files(folder, splits, class_names, out_dir, skip_difficult, year_result, report):
    """Writes ``<year>_{train,val,test}.txt`` for the splits one year has."""
    index = ImageIndex(folder / "JPEGImages")
    for split in ANNOTATION_SPLITS:
        if split not in splits:
            continue
        annotations, stats = convert_split(
            folder,
            splits[split],
            class_names,
            report,
            split,
            image_index=index,
            drop_difficult=skip_difficult and split == "train",
        )
        path = out_dir / f"{year_result.year}_{split}.txt"
        write_annotation_file(path, annotations)
        year_result.annotation_files[split] = path
        year_result.stats[split] = stats


