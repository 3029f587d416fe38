"""Reading Pascal VOC datasets and turning them into annotation files.

A VOC dataset lives in ``VOCdevkit/VOC<year>/`` with three folders:

* ``Annotations/<id>.xml``: one XML file per image, boxes as ``xmin, ymin, xmax, ymax``
  in pixels of the image (VOC counts pixels from 1; the values are kept as written).
* ``JPEGImages/<id>.<ext>``: the images.
* ``ImageSets/Main/{trainval,train,val,test}.txt``: the splits, one image id a line.

:func:`parse_voc_xml` reads one XML file. :func:`make_splits` and :func:`write_splits`
make split files; :func:`convert_voc` runs the whole conversion to annotation files in
the format of :mod:`utils.data.annotation`, collecting every skipped or changed file and
object in a :class:`ConversionReport` instead of stopping at the first problem.
"""

import difflib
import logging
import math
import os
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import Annotation, write_annotation_file
from utils.data.report import ConversionReport
from utils.image import image_size
from utils.run_dir import write_text_atomic

logger = logging.getLogger(__name__)

#: Image file extensions looked for in ``JPEGImages`` (compared case-insensitively),
#: in order of preference when several files share an id.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: Split files written to ``ImageSets/Main`` when making splits.
SPLIT_NAMES = ("trainval", "train", "val", "test")
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


@dataclass
class VocObject:
    """One ``<object>`` of a VOC XML file.

    Attributes:
        name: class name as written (surrounding whitespace removed).
        xmin, ymin, xmax, ymax: the ``<bndbox>``, xyxy pixels of the image as in the XML.
        difficult: the ``<difficult>`` flag (False when absent).
    """

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool


@dataclass
class VocImage:
    """The content of one VOC XML file.

    Attributes:
        filename: the ``<filename>`` text ("" when absent).
        width, height: the ``<size>`` in pixels; 0 when the XML has no usable size.
        objects: the objects in file order.
    """

    filename: str
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


class VocParseError(ValueError):
    """A VOC XML file that cannot be read; the message names the file."""


class VocDatasetError(ValueError):
    """The dataset cannot be converted at all (missing folders or split files)."""


def parse_voc_xml(xml_path):
    """Reads one VOC annotation XML file.

    Args:
        xml_path: path of the ``.xml`` file.

    Returns:
        VocImage with boxes in xyxy pixels as written in the file.

    Raises:
        FileNotFoundError: the file does not exist.
        VocParseError: the XML is malformed, the root is not ``<annotation>``, an
            object has no name or no ``<bndbox>``, a bndbox field is missing or not a
            number, or ``<size>``/``<difficult>`` holds text that is not a number.
    """
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise FileNotFoundError(f"VOC XML file not found: {xml_path}")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise VocParseError(f"{xml_path}: malformed XML ({exc}); fix or delete the file.") from None
    if root.tag != "annotation":
        raise VocParseError(f"{xml_path}: root element is <{root.tag}>, expected <annotation>.")

    filename = (root.findtext("filename") or "").strip()
    width = _size_field(root, "width", xml_path)
    height = _size_field(root, "height", xml_path)
    if width <= 0 or height <= 0:
        width = height = 0

    objects = []
    for index, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise VocParseError(f"{xml_path}: object {index} has no <name>; add the class name or remove the object.")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VocParseError(f"{xml_path}: object {index} ({name!r}) has no <bndbox>; add it or remove the object.")
        coords = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(key)
            if text is None or not text.strip():
                raise VocParseError(
                    f"{xml_path}: object {index} ({name!r}) has no bndbox <{key}>; add it or remove the object."
                )
            value = _to_float(text)
            if value is None:
                raise VocParseError(
                    f"{xml_path}: object {index} ({name!r}) bndbox <{key}> is {text.strip()!r}, not a number."
                )
            coords.append(value)
        difficult_text = (obj.findtext("difficult") or "0").strip() or "0"
        difficult = _to_float(difficult_text)
        if difficult is None:
            raise VocParseError(
                f"{xml_path}: object {index} ({name!r}) <difficult> is {difficult_text!r}; expected 0 or 1."
            )
        objects.append(VocObject(name, *coords, difficult=bool(difficult)))
    return VocImage(filename, width, height, objects)


def _to_float(text):
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _size_field(root, key, xml_path):
    text = root.findtext(f"size/{key}")
    if text is None or not text.strip():
        return 0
    value = _to_float(text)
    if value is None:
        raise VocParseError(f"{xml_path}: <size><{key}> is {text.strip()!r}, not a number.")
    return int(round(value))


def find_years(voc_root):
    """Lists the years of the ``VOC<year>`` folders in a VOCdevkit folder.

    Args:
        voc_root: the VOCdevkit folder.

    Returns:
        sorted list of year strings, e.g. ``["2007", "2012"]``.
    """
    voc_root = Path(voc_root)
    if not voc_root.is_dir():
        return []
    years = [m.group(1) for p in voc_root.iterdir() if p.is_dir() and (m := re.fullmatch(r"VOC(.+)", p.name))]
    return sorted(years)


def normalize_year(year):
    """Turns ``"VOC2007"`` or ``"2007"`` into ``"2007"``."""
    year = str(year).strip()
    return year[3:] if year.upper().startswith("VOC") else year


def year_dir(voc_root, year):
    """Returns the ``VOCdevkit/VOC<year>`` folder path (existing or not)."""
    return Path(voc_root) / f"VOC{normalize_year(year)}"


def list_xml_ids(year_folder):
    """Lists the image ids that have an XML file in ``Annotations``.

    Returns:
        sorted list of ids (file names without ``.xml``).
    """
    folder = Path(year_folder) / "Annotations"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())


def make_splits(ids, trainval_percent=0.9, train_percent=0.9, seed=0):
    """Splits image ids at random into trainval/train/val/test.

    ``trainval`` takes ``round(trainval_percent * n)`` of the ids, ``train`` takes
    ``round(train_percent * len(trainval))`` of those, ``val`` the rest of trainval and
    ``test`` the ids not in trainval. The result depends only on the set of ids and
    the seed, not on their order.

    Args:
        ids: image ids.
        trainval_percent: fraction of all ids in trainval, 0 to 1.
        train_percent: fraction of trainval in train, 0 to 1.
        seed: random seed.

    Returns:
        dict split name -> sorted list of ids, for every name in SPLIT_NAMES.

    Raises:
        ValueError: a fraction is outside [0, 1].
    """
    for name, value in (("trainval_percent", trainval_percent), ("train_percent", train_percent)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")
    ids = sorted(set(ids))
    rng = random.Random(seed)
    trainval = rng.sample(ids, _round_half_up(len(ids) * trainval_percent))
    train = rng.sample(trainval, _round_half_up(len(trainval) * train_percent))
    trainval_set, train_set = set(trainval), set(train)
    return {
        "trainval": sorted(trainval_set),
        "train": sorted(train_set),
        "val": sorted(trainval_set - train_set),
        "test": sorted(set(ids) - trainval_set),
    }


def _round_half_up(x):
    return int(math.floor(x + 0.5))


def split_path(year_folder, split):
    """Returns the path of ``ImageSets/Main/<split>.txt`` in a VOC year folder."""
    return Path(year_folder) / "ImageSets" / "Main" / f"{split}.txt"


def read_split(path):
    """Reads a split file: one image id a line (blank lines ignored, ids may hold spaces).

    Returns:
        list of ids in file order (repeats kept).
    """
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def write_splits(year_folder, splits):
    """Writes ``ImageSets/Main/<split>.txt`` files, one id a line.

    Args:
        year_folder: the ``VOC<year>`` folder.
        splits: dict split name -> list of ids (as from make_splits).

    Returns:
        list of (path, replaced) pairs; ``replaced`` is True when an existing file with
        different content was overwritten.
    """
    written = []
    for name, ids in splits.items():
        path = split_path(year_folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{i}\n" for i in ids)
        replaced = path.is_file() and path.read_text(encoding="utf-8") != text
        write_text_atomic(path, text)
        written.append((path, replaced))
    return written


class ImageIndex:
    """Finds the image file of an annotation in a ``JPEGImages`` folder.

    The folder is listed once. An image is looked up by its id with any extension in
    IMAGE_EXTENSIONS (case-insensitive), then by the XML ``<filename>``.
    """

    def __init__(self, image_folder):
        self.folder = Path(image_folder)
        self._by_stem = {}
        self._by_name = {}
        self._by_lower_name = {}
        names = sorted(os.listdir(self.folder)) if self.folder.is_dir() else []
        rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
        for name in names:
            path = self.folder / name
            self._by_name[name] = path
            self._by_lower_name.setdefault(name.lower(), path)
            stem, ext = os.path.splitext(name)
            if ext.lower() in rank:
                best = self._by_stem.get(stem)
                if best is None or rank[ext.lower()] < rank[best.suffix.lower()]:
                    self._by_stem[stem] = path

    def find(self, image_id, xml_filename=""):
        """Returns the image path (absolute), or None when no file matches.

        Args:
            image_id: the annotation's id (XML file name without ``.xml``).
            xml_filename: the XML ``<filename>``, tried when no file has the id as stem.
        """
        path = self._by_stem.get(image_id)
        if path is None and xml_filename:
            name = Path(xml_filename).name
            path = self._by_name.get(name) or self._by_lower_name.get(name.lower())
            if path is None:
                path = self._by_stem.get(Path(name).stem)
        return Path(os.path.abspath(path)) if path is not None else None


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
    year_folder = Path(year_folder)
    label = label or year_folder.name
    image_index = image_index or ImageIndex(year_folder / "JPEGImages")
    annotations, seen = [], set()
    objects = np.zeros(len(class_names), np.int64)
    for image_id in ids:
        xml_rel = f"{label}/Annotations/{image_id}.xml"
        where = f"{xml_rel} [{split}]"
        if image_id in seen:
            report.add(R_DUPLICATE_ID, f"{label}/ImageSets/Main/{split}.txt: {image_id!r}")
            continue
        seen.add(image_id)
        xml_path = year_folder / "Annotations" / f"{image_id}.xml"
        if not xml_path.is_file():
            report.add(R_NO_XML, f"{label}/ImageSets/Main/{split}.txt: {image_id!r} (expected {xml_rel})")
            continue
        try:
            voc_image = parse_voc_xml(xml_path)
        except (VocParseError, OSError) as exc:
            report.add(R_MALFORMED, f"{where}: {str(exc).replace(str(xml_path) + ': ', '')}")
            continue
        image_path = image_index.find(image_id, voc_image.filename)
        if image_path is None:
            looked = f"{label}/JPEGImages/{image_id}" + "{" + ",".join(IMAGE_EXTENSIONS) + "}"
            if voc_image.filename:
                looked += f" or {voc_image.filename!r}"
            report.add(R_NO_IMAGE, f"{where}: no {looked}")
            continue
        if not (voc_image.width and voc_image.height):
            size = _image_size(image_path)
            if size is None:
                report.add(R_SIZE_UNKNOWN, f"{where}: cannot read the size of {image_path}")
            else:
                voc_image.width, voc_image.height = size
                report.add(R_NO_SIZE, f"{where}: {size[0]}x{size[1]} read from {image_path.name}")
        annotation = voc_to_annotation(voc_image, image_path, class_names, where, report, drop_difficult)
        np.add.at(objects, annotation.classes, 1)
        annotations.append(annotation)
    negatives = sum(1 for a in annotations if len(a) == 0)
    return annotations, SplitStats(len(ids), len(annotations), negatives, objects)


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
    for value, name in ((trainval_percent, "trainval_percent"), (train_percent, "train_percent")):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")
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


def format_tables(result):
    """Formats, per year, objects per class and images per split.

    Args:
        result: VocConversion.

    Returns:
        multi-line str (split sizes only, for mode 1).
    """
    blocks = []
    for year in result.years:
        if not year.stats:
            sizes = ", ".join(f"{s} {n}" for s, n in year.split_sizes.items())
            blocks.append(f"VOC{year.year}: ids per split: {sizes}")
            continue
        splits = list(year.stats)
        name_width = max([len("class"), len("images (negative)")] + [len(n) for n in result.class_names])
        col = max(8, *(len(s) + 1 for s in splits))
        header = f"{'class':<{name_width}}" + "".join(f"{s:>{col}}" for s in splits) + f"{'total':>{col}}"
        lines = [f"VOC{year.year}: objects per class", header, "-" * len(header)]
        for i, name in enumerate(result.class_names):
            counts = [int(year.stats[s].objects[i]) for s in splits]
            lines.append(f"{name:<{name_width}}" + "".join(f"{c:>{col}}" for c in counts) + f"{sum(counts):>{col}}")
        lines.append("-" * len(header))
        totals = [int(year.stats[s].objects.sum()) for s in splits]
        lines.append(f"{'objects':<{name_width}}" + "".join(f"{c:>{col}}" for c in totals) + f"{sum(totals):>{col}}")
        images = [year.stats[s].images for s in splits]
        lines.append(f"{'images':<{name_width}}" + "".join(f"{c:>{col}}" for c in images) + f"{sum(images):>{col}}")
        negatives = [year.stats[s].negatives for s in splits]
        lines.append(
            f"{'images (negative)':<{name_width}}"
            + "".join(f"{c:>{col}}" for c in negatives)
            + f"{sum(negatives):>{col}}"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def empty_class_warnings(result):
    """Lists the classes that have no object in some annotation file, and empty files.

    Returns:
        list of str: one per (year, class) naming the splits where the class is
        absent, and one per annotation file without any image.
    """
    messages = []
    for year in result.years:
        filled = {s: stats for s, stats in year.stats.items() if stats.images}
        for split in year.stats:
            if split not in filled:
                messages.append(f"VOC{year.year} {split} holds no image")
        for i, name in enumerate(result.class_names):
            empty = [s for s, stats in filled.items() if stats.objects[i] == 0]
            if empty:
                messages.append(f"class {name!r} has no objects in VOC{year.year} {', '.join(empty)}")
    return messages
