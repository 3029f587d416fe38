"""Reading and writing CVAT for images 1.1 XML (the boxes of it).

The file, as CVAT exports a task or job ("CVAT for images 1.1") and imports it::

    <annotations>
      <version>1.1</version>
      <meta><task><labels><label><name>cat</name>...</label>...</labels></task></meta>
      <image id="0" name="a.jpg" width="640" height="480">
        <box label="cat" source="auto" occluded="0" xtl="10.00" ytl="20.00" xbr="50.00" ybr="80.00" z_order="0"/>
      </image>
    </annotations>

Boxes are ``xtl, ytl, xbr, ybr`` in pixels of the image (the frame the ``width`` and
``height`` attributes give). Class names come from the labels of ``<meta>`` (a task,
a job or a project), in their order; a label used by a box but missing there is added
after them. A rotated box (``rotation`` in degrees, clockwise around its centre) is
read as the upright box around it and a polygon as the box around its points
(reported); other shapes (points, polylines, masks, tags, cuboids, skeletons) are
skipped and reported. A CVAT for video file (``<track>`` elements) is refused.

An image ``name`` is resolved, when it is not an absolute path, against the images
folder given, else the ``images/`` folder beside the XML file (where CVAT's export puts
the pictures), else the XML file's folder; where none holds it, its file name alone is
tried in those folders.
"""

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import Annotation
from utils.data.report import ConversionReport, DatasetError
from utils.run_dir import write_text_atomic

CVAT_VERSION = "1.1"
#: Folder beside the XML file where CVAT's export puts the images.
IMAGES_DIR = "images"

R_BAD_IMAGE = "image element without a usable name (image skipped)"
R_BAD_BOX = "box without 4 finite coordinates or a label (object skipped)"
R_EMPTY_BOX = "empty box, width or height <= 0 inside the image (object skipped)"
R_CLIPPED = "box outside the image (clipped to the image)"
R_OTHER_SHAPE = "shape that is not a box or a polygon (skipped)"
R_ROTATED = "rotated box (read as the upright box around it)"
R_POLYGON = "polygon (read as the box around its points)"
R_UNKNOWN_LABEL = "label outside the class names given (object skipped)"
R_NEGATIVE = "image without boxes (kept as a negative image)"
REASONS = (R_BAD_IMAGE, R_BAD_BOX, R_EMPTY_BOX, R_UNKNOWN_LABEL, R_OTHER_SHAPE, R_CLIPPED, R_ROTATED, R_POLYGON,
           R_NEGATIVE)
NOTE_REASONS = (R_ROTATED, R_POLYGON, R_NEGATIVE)
OTHER_SHAPES = ("points", "polyline", "mask", "tag", "cuboid", "skeleton", "ellipse")


def cvat_report():
    """An empty ConversionReport listing the CVAT reasons in their summary order."""
    return ConversionReport(REASONS, notes=NOTE_REASONS)


@dataclass
class CvatDataset:
    """The content of a CVAT for images XML file.

    Attributes:
        annotations: one Annotation per image, in file order (boxes float32 (N, 4)
            xyxy pixels).
        class_names: the names the class ids index.
        names_from: where the names come from, for messages.
        report: everything skipped or changed.
    """

    annotations: list
    class_names: list
    names_from: str
    report: ConversionReport = field(default_factory=cvat_report)


def find_image_file(reference, folders):
    """The file an image reference of an annotation file names.

    Args:
        reference: an absolute path, or a path relative to one of ``folders``.
        folders: folders to resolve a relative reference against, in order.

    Returns:
        the absolute Path of the first existing candidate: the reference in each folder,
        then its file name alone in each folder; else the reference in the first folder
        (which does not exist, for the training check to report).
    """
    reference = str(reference)
    if os.path.isabs(reference):
        return Path(reference)
    folders = [Path(f) for f in folders]
    candidates = [f / reference for f in folders] + [f / Path(reference).name for f in folders]
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.abspath(candidate))
    return Path(os.path.abspath(candidates[0]))


def image_folders(annotation_file, images=None):
    """The folders that relative image names of ``annotation_file`` are resolved against:
    ``images`` when given, else its ``images/`` folder and its own folder."""
    if images is not None:
        return [Path(images)]
    folder = Path(annotation_file).parent
    return [folder / IMAGES_DIR, folder]


def upright_box(cx, cy, width, height, degrees):
    """The upright box (x1, y1, x2, y2) around a box of ``width`` x ``height`` centred at
    (cx, cy), turned by ``degrees``."""
    angle = math.radians(degrees)
    half_w = (abs(width * math.cos(angle)) + abs(height * math.sin(angle))) / 2
    half_h = (abs(width * math.sin(angle)) + abs(height * math.cos(angle))) / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def clip_box(box, size):
    """``box`` (x1, y1, x2, y2) clipped to an image of ``size`` (width, height), or unchanged without a size."""
    if size is None:
        return tuple(box)
    width, height = size
    return (min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height))


def checked_box(box, size, where, report, empty=R_EMPTY_BOX, clipped=R_CLIPPED):
    """``box`` clipped to the image, with a line in ``report`` under ``clipped`` when it
    lay outside; None, reported under ``empty``, when nothing of it is inside."""
    inside = clip_box(box, size)
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        report.add(empty, f"{where}: {[round(v, 2) for v in box]}")
        return None
    if any(abs(a - b) > 1e-6 for a, b in zip(box, inside)):
        report.add(clipped, f"{where}: {[round(v, 2) for v in box]} -> {[round(v, 2) for v in inside]}")
    return inside


def _meta_labels(root):
    for where in ("meta/task/labels/label", "meta/job/labels/label", "meta/project/labels/label"):
        names = [(label.findtext("name") or "").strip() for label in root.findall(where)]
        names = [n for n in names if n]
        if names:
            return list(dict.fromkeys(names)), where.split("/")[1]
    return [], ""


def _shape_box(shape, where, report):
    """The xyxy box of a ``box`` or ``polygon`` element, or None (reported)."""
    if shape.tag == "box":
        coords = [_number(shape.get(key)) for key in ("xtl", "ytl", "xbr", "ybr")]
        if any(v is None for v in coords):
            report.add(R_BAD_BOX, f"{where}: {dict(shape.attrib)}")
            return None
        rotation = _number(shape.get("rotation", "0")) or 0.0
        if rotation % 360:
            report.add(R_ROTATED, f"{where}: rotation {rotation:g}")
            x1, y1, x2, y2 = coords
            return upright_box((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, rotation)
        return tuple(coords)
    points = []
    for pair in (shape.get("points") or "").split(";"):
        xy = [_number(v) for v in pair.split(",")]
        if len(xy) != 2 or None in xy:
            report.add(R_BAD_BOX, f"{where}: points {shape.get('points')!r}")
            return None
        points.append(xy)
    report.add(R_POLYGON, where)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def read_cvat(path, images=None, class_names=None):
    """Reads a CVAT for images 1.1 XML file.

    Args:
        path: the XML file.
        images: folder that relative image names are resolved against (default: the
            ``images/`` folder beside the file, then the file's folder).
        class_names: names to use instead of the file's labels; boxes of other labels
            are reported and skipped.

    Returns:
        CvatDataset.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: not XML, not a CVAT ``<annotations>`` file, a video file, or no label at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CVAT XML file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"{path}: malformed XML ({exc})") from None
    if root.tag != "annotations":
        raise DatasetError(f"{path}: root element is <{root.tag}>, expected CVAT's <annotations>")
    if root.find("track") is not None:
        raise DatasetError(f"{path}: a CVAT for video file (<track> elements); export the task as "
                           "'CVAT for images 1.1' instead")
    report = cvat_report()
    if class_names is not None:
        names, names_from = list(class_names), ""
    else:
        names, where = _meta_labels(root)
        names_from = f"the labels of the {where} in {path}" if names else ""
    index = {name: k for k, name in enumerate(names)}
    folders = image_folders(path, images)
    annotations = []
    for number, image in enumerate(root.findall("image")):
        name = (image.get("name") or "").strip()
        if not name:
            report.add(R_BAD_IMAGE, f"{path.name}: image {number} {dict(image.attrib)}")
            continue
        width, height = _number(image.get("width")), _number(image.get("height"))
        size = (width, height) if width and height and width > 0 and height > 0 else None
        boxes, classes = [], []
        for k, shape in enumerate(image):
            where = f"{path.name}: image {name!r} shape {k + 1} ({shape.tag})"
            if shape.tag in OTHER_SHAPES:
                report.add(R_OTHER_SHAPE, where)
                continue
            if shape.tag not in ("box", "polygon"):
                continue
            label = (shape.get("label") or "").strip()
            if not label:
                report.add(R_BAD_BOX, f"{where}: no label")
                continue
            box = _shape_box(shape, where, report)
            if box is None:
                continue
            if label not in index:
                if class_names is not None:
                    report.add(R_UNKNOWN_LABEL, f"{where}: {label!r} (classes: {names[:20]})")
                    continue
                index[label] = len(names)
                names.append(label)
                names_from = names_from or f"the box labels of {path} (in order of appearance)"
            clipped = checked_box(box, size, where, report)
            if clipped is None:
                continue
            boxes.append(clipped)
            classes.append(index[label])
        if not boxes:
            report.add(R_NEGATIVE, f"{path.name}: image {name!r}")
        annotations.append(Annotation(str(find_image_file(name, folders)), np.asarray(boxes, np.float32).reshape(-1, 4),
                                      np.asarray(classes, np.int32)))
    if not names:
        raise DatasetError(f"{path}: no label in <meta> and no box; a detector needs at least one class "
                           "(pass a classes file with --classes)")
    return CvatDataset(annotations, names, names_from, report)


@dataclass
class CvatImage:
    """One image to write.

    Attributes:
        name: the image name as CVAT knows it (a file name, or a path relative to the
            task's root).
        width, height: the image size in pixels.
        boxes: float (N, 4) xyxy pixels.
        classes: int (N,) class ids.
        source: how the boxes were made: "auto" (a model's) or "manual" (a person's).
    """

    name: str
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    source: str = "auto"


def cvat_xml(images, class_names, task_name="pre-labels"):
    """A CVAT for images 1.1 document.

    Args:
        images: list of CvatImage, written with ids 0, 1, ... in this order.
        class_names: the C label names, written to ``<meta>`` in order (as rectangles).
        task_name: the ``<meta><task><name>``.

    Returns:
        bytes: UTF-8 XML with its declaration.
    """
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = CVAT_VERSION
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = task_name
    ET.SubElement(task, "size").text = str(len(images))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in class_names:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
        ET.SubElement(label, "attributes")
    for number, image in enumerate(images):
        node = ET.SubElement(root, "image", id=str(number), name=image.name, width=str(int(image.width)),
                             height=str(int(image.height)))
        for box, cls in zip(np.asarray(image.boxes, np.float64).reshape(-1, 4), np.asarray(image.classes)):
            ET.SubElement(node, "box", label=class_names[int(cls)], source=image.source, occluded="0",
                          xtl=f"{box[0]:.2f}", ytl=f"{box[1]:.2f}", xbr=f"{box[2]:.2f}", ybr=f"{box[3]:.2f}",
                          z_order="0")
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_cvat(path, images, class_names, task_name="pre-labels"):
    """Writes ``cvat_xml`` to ``path`` atomically; returns the path."""
    text = cvat_xml(images, class_names, task_name).decode("utf-8")
    write_text_atomic(path, text)
    return Path(path)
