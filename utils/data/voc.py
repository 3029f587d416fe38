"""The Pascal VOC format: its folder layout, XML files and split files.

A VOC dataset lives in ``VOCdevkit/VOC<year>/`` with three folders:

* ``Annotations/<id>.xml``: one XML file per image, boxes as ``xmin, ymin, xmax, ymax``
  in pixels of the image (VOC counts pixels from 1; the values are kept as written).
* ``JPEGImages/<id>.<ext>``: the images.
* ``ImageSets/Main/{trainval,train,val,test}.txt``: the splits, one image id a line.

:func:`parse_voc_xml` reads one XML file and :func:`voc_xml` writes one.
:func:`read_voc_split` reads the XML files of a split and finds their images (the
extension from the files present or the XML's ``<filename>``): the one reader of VOC
data. :func:`make_splits` and :func:`write_splits` make split files. Turning a dataset
into annotation files is :mod:`utils.data.voc_convert`.
"""

import math
import os
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from utils.data.split import ROUND_HALF_UP, check_fraction, hold_out, sampled, voc_splits
from utils.run_dir import write_text_atomic

#: Image file extensions looked for in ``JPEGImages`` (compared case-insensitively),
#: in order of preference when several files share an id.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: Split files written to ``ImageSets/Main`` when making splits.
SPLIT_NAMES = ("trainval", "train", "val", "test")

#: Why a VocEntry of a split holds no usable annotation (``VocEntry.problem``).
REPEATED_ID = "id listed again"
MISSING_XML = "no XML file"
BAD_XML = "unreadable XML file"
MISSING_IMAGE = "no image file"


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


def voc_xml(voc_image, folder):
    """Serialises one image's annotation the way VOC2007 files are laid out.

    Every object is written with pose ``Unspecified`` and truncated ``0``; whole-number
    coordinates are written as integers.

    Args:
        voc_image: VocImage (boxes xyxy pixels of the image, as VOC counts them).
        folder: the ``<folder>`` text, e.g. ``VOC2007``.

    Returns:
        bytes: UTF-8 XML text, tab-indented, without an XML declaration.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = voc_image.filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(voc_image.width)
    ET.SubElement(size, "height").text = str(voc_image.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in voc_image.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "1" if obj.difficult else "0"
        bndbox = ET.SubElement(node, "bndbox")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(bndbox, tag).text = _number_text(getattr(obj, tag))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def _number_text(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


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
    ``round(train_percent * len(trainval))`` of those (halves rounded up), ``val`` the
    rest of trainval and ``test`` the ids not in trainval. The result depends only on
    the set of ids and the seed, not on their order.

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
    check_fraction("trainval_percent", trainval_percent)
    check_fraction("train_percent", train_percent)
    draw = sampled(random.Random(seed))
    trainval, test = hold_out(sorted(set(ids)), trainval_percent, draw, rounding=ROUND_HALF_UP)
    train, val = hold_out(trainval, train_percent, draw, rounding=ROUND_HALF_UP)
    return voc_splits(train, val, test)


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
class VocEntry:
    """One id of a split, as read from its ``VOC<year>`` folder.

    Attributes:
        image_id: the id as listed.
        xml_path: its ``Annotations/<id>.xml``.
        voc: the parsed VocImage (boxes xyxy pixels as in the XML); None when the id
            repeats an earlier one or its XML is missing or unreadable.
        image_path: the image file found, absolute; None when none matches or the XML
            was not read.
        problem: None when both the XML and the image were found; else REPEATED_ID,
            MISSING_XML, BAD_XML or MISSING_IMAGE.
        error: for BAD_XML, what is wrong with the file (its path left out).
    """

    image_id: str
    xml_path: Path
    voc: VocImage = None
    image_path: Path = None
    problem: str = None
    error: str = ""


def read_voc_split(year_folder, ids, image_index=None):
    """Reads the XML file of each id of a split and finds its image.

    The image is the file of ``JPEGImages`` named by the id with any extension of
    IMAGE_EXTENSIONS, or else the one the XML's ``<filename>`` names (see ImageIndex).
    Problems do not stop the reading: they are recorded in each entry.

    Args:
        year_folder: the ``VOC<year>`` folder.
        ids: image ids, e.g. from ``read_split``.
        image_index: ImageIndex of the year's ``JPEGImages`` (built when None).

    Returns:
        list of VocEntry, one per id in the order given; a repeated id is read once.
    """
    year_folder = Path(year_folder)
    image_index = image_index or ImageIndex(year_folder / "JPEGImages")
    entries, seen = [], set()
    for image_id in ids:
        entry = VocEntry(image_id, year_folder / "Annotations" / f"{image_id}.xml")
        entries.append(entry)
        if image_id in seen:
            entry.problem = REPEATED_ID
            continue
        seen.add(image_id)
        if not entry.xml_path.is_file():
            entry.problem = MISSING_XML
            continue
        try:
            entry.voc = parse_voc_xml(entry.xml_path)
        except (VocParseError, OSError) as exc:
            entry.problem, entry.error = BAD_XML, str(exc).replace(f"{entry.xml_path}: ", "")
            continue
        entry.image_path = image_index.find(image_id, entry.voc.filename)
        if entry.image_path is None:
            entry.problem = MISSING_IMAGE
    return entries
