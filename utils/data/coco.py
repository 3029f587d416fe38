"""Reading and writing COCO instances JSON (the detection boxes of it).

A COCO file holds three lists:

* ``images``: ``{"id", "file_name", "width", "height"}``; ``file_name`` is resolved
  against an images folder (by default the JSON file's folder) unless absolute. A
  relative name whose ``..`` leads outside that folder is kept but reported: a
  dataset reaching outside its own folder is almost always a mistake.
* ``categories``: ``{"id", "name"}``; ids need not be contiguous (COCO's own run
  1–90 with gaps). Class index k is the k-th category in increasing id order, and
  ``category_ids[k]`` gives the original id back, so that detections can be written
  with the ids the dataset uses.
* ``annotations``: ``{"image_id", "category_id", "bbox", "iscrowd"}`` with ``bbox`` =
  ``[x, y, width, height]`` in pixels of the image. Crowd regions (``iscrowd`` 1) are
  kept as difficult objects, which evaluation ignores as VOC does its difficult ones.

Images without any annotation are kept as negatives. Nothing bad stops the reading:
unknown ids, malformed or empty boxes, repeated images are recorded in a
:class:`~utils.data.report.ConversionReport` and skipped; boxes reaching outside the
image (size from the JSON) are clipped to it. Only a file that is not COCO JSON at all
raises :class:`~utils.data.report.DatasetError`.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import Annotation
from utils.data.report import ConversionReport, DatasetError
from utils.image import displayed_size
from utils.run_dir import write_text_atomic

R_BAD_IMAGE = "image entry without a usable id or file_name (image skipped)"
R_DUPLICATE_IMAGE = "image id listed twice (repeat skipped)"
R_UNKNOWN_IMAGE = "annotation of an image id not in 'images' (object skipped)"
R_UNKNOWN_CATEGORY = "annotation of a category id not in 'categories' (object skipped)"
R_BAD_BOX = "malformed bbox, not 4 finite numbers (object skipped)"
R_EMPTY_BOX = "empty box, width or height <= 0 inside the image (object skipped)"
R_CLIPPED = "box outside the image (clipped to the image)"
R_CROWD = "crowd region, iscrowd 1 (kept, flagged difficult: ignored in evaluation)"
R_NEGATIVE = "image without annotations (kept as a negative image)"
R_EMPTY_CATEGORY = "category without any object (kept as a class)"
R_UNREADABLE_IMAGE = "image file missing or unreadable, size unknown (image skipped)"
R_OUTSIDE = "relative file_name leads outside the images folder through '..' (image kept; check --images)"
REASONS = (
    R_BAD_IMAGE,
    R_DUPLICATE_IMAGE,
    R_UNKNOWN_IMAGE,
    R_UNKNOWN_CATEGORY,
    R_BAD_BOX,
    R_EMPTY_BOX,
    R_UNREADABLE_IMAGE,
    R_OUTSIDE,
    R_CLIPPED,
    R_CROWD,
    R_NEGATIVE,
    R_EMPTY_CATEGORY,
)
NOTE_REASONS = (R_CROWD, R_NEGATIVE, R_EMPTY_CATEGORY)


def coco_report():
    """An empty ConversionReport listing the COCO reasons in their summary order."""
    return ConversionReport(REASONS, notes=NOTE_REASONS)


@dataclass
class CocoDataset:
    """The content of a COCO instances file.

    Attributes:
        annotations: one Annotation per usable image, in file order (absolute or
            resolved image paths; boxes float32 (N, 4) xyxy pixels; crowd regions
            flagged difficult).
        class_names: category names in increasing category id order.
        category_ids: the original category id of each class index.
        image_ids: the COCO image id of each annotation.
        report: everything skipped or changed.
    """

    annotations: list
    class_names: list
    category_ids: list
    image_ids: list
    report: ConversionReport = field(default_factory=coco_report)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _leaves_folder(file_name):
    """Whether a relative file name climbs out of the folder it is resolved against.

    Judged on the name alone (``a/../../b.jpg`` does, ``a/../b.jpg`` does not), so a
    folder reached through a symbolic link inside the images folder still counts as
    inside.
    """
    if os.path.isabs(file_name):
        return False
    name = os.path.normpath(file_name)
    return name == os.pardir or name.startswith(os.pardir + os.sep)


def _load_json(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO JSON object with 'images', 'annotations' and 'categories', "
                           f"got a JSON {type(data).__name__}")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise DatasetError(
            f"{path}: not a COCO instances file: {', '.join(repr(k) for k in missing)} missing or not a list "
            f"(keys found: {sorted(data)[:10]})"
        )
    return data


def read_categories(path, data=None):
    """The class names and original ids of a COCO file's categories, in id order.

    Args:
        path: the COCO JSON file.
        data: its parsed content, when already read.

    Returns:
        (class_names, category_ids): lists of str and int.

    Raises:
        DatasetError: a category without an integer id or a name, a repeated id or
            name, or no category at all.
    """
    data = _load_json(path) if data is None else data
    categories = {}
    for index, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise DatasetError(f"{path}: categories[{index}] has no integer 'id': {str(category)[:120]}")
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{path}: category id {category['id']} has no name: {str(category)[:120]}")
        if category["id"] in categories:
            raise DatasetError(
                f"{path}: category id {category['id']} listed twice ({categories[category['id']]!r} and {name!r})"
            )
        categories[category["id"]] = name.strip()
    if not categories:
        raise DatasetError(f"{path}: the 'categories' list is empty; a detector needs at least one class")
    ids = sorted(categories)
    names = [categories[i] for i in ids]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(
            f"{path}: category names must be distinct, {repeated[0]!r} is used by ids "
            f"{[i for i in ids if categories[i] == repeated[0]]}"
        )
    return names, ids


def read_coco(path, images=None):
    """Reads a COCO instances JSON file.

    Args:
        path: the JSON file.
        images: folder that relative ``file_name`` values are resolved against
            (default: the JSON file's folder).

    Returns:
        CocoDataset.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: not COCO JSON (see ``read_categories`` for the categories).
    """
    path = Path(path)
    data = _load_json(path)
    class_names, category_ids = read_categories(path, data)
    class_of = {cid: k for k, cid in enumerate(category_ids)}
    base = Path(images) if images is not None else path.parent
    report = coco_report()

    entries = {}  # image id -> (path, width, height)
    for index, image in enumerate(data["images"]):
        image_id = image.get("id") if isinstance(image, dict) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not _is_id(image_id) or not isinstance(file_name, str) or not file_name.strip():
            report.add(R_BAD_IMAGE, f"{path.name}: images[{index}] {str(image)[:100]}")
            continue
        if image_id in entries:
            report.add(R_DUPLICATE_IMAGE, f"{path.name}: images[{index}] id {image_id} ({file_name!r})")
            continue
        width, height = image.get("width"), image.get("height")
        size = (width, height) if _is_number(width) and _is_number(height) and width > 0 and height > 0 else None
        file_path = Path(file_name) if os.path.isabs(file_name) else base / file_name
        if _leaves_folder(file_name):
            report.add(R_OUTSIDE, f"{path.name}: images[{index}] id {image_id} {file_name!r} is read from "
                                  f"{os.path.normpath(file_path)}, outside {base}")
        entries[image_id] = (file_path, size, file_name)

    objects = {image_id: [] for image_id in entries}
    counts = np.zeros(len(class_names), np.int64)
    for index, ann in enumerate(data["annotations"]):
        where = f"{path.name}: annotations[{index}]"
        if not isinstance(ann, dict):
            report.add(R_BAD_BOX, f"{where}: {str(ann)[:100]}")
            continue
        if "id" in ann:
            where += f" (id {ann['id']})"
        image_id, category_id, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
        if not _is_id(image_id) or image_id not in entries:
            report.add(R_UNKNOWN_IMAGE, f"{where}: image_id {image_id!r}")
            continue
        where += f" of {entries[image_id][2]!r}"
        if not _is_id(category_id) or category_id not in class_of:
            report.add(R_UNKNOWN_CATEGORY, f"{where}: category_id {category_id!r} (known: {category_ids[:20]})")
            continue
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            report.add(R_BAD_BOX, f"{where}: bbox {bbox!r}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        box = [x, y, x + w, y + h]
        size = entries[image_id][1]
        if size is not None:
            clipped = [min(max(box[0], 0.0), size[0]), min(max(box[1], 0.0), size[1]),
                       min(max(box[2], 0.0), size[0]), min(max(box[3], 0.0), size[1])]
        else:
            clipped = list(box)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            inside = f" in the {size[0]:g}x{size[1]:g} image" if size else ""
            report.add(R_EMPTY_BOX, f"{where}: bbox {_fmt_list(bbox)}{inside}")
            continue
        if clipped != box:
            report.add(R_CLIPPED, f"{where}: bbox {_fmt_list(bbox)} -> xyxy {_fmt_list(clipped)} "
                                  f"(image {size[0]:g}x{size[1]:g})")
        crowd = bool(ann.get("iscrowd", 0))
        if crowd:
            report.add(R_CROWD, f"{where}: bbox {_fmt_list(bbox)}")
        objects[image_id].append((clipped, class_of[category_id], crowd))
        counts[class_of[category_id]] += 1

    annotations, image_ids = [], []
    for image_id, (file_path, _, file_name) in entries.items():
        found = objects[image_id]
        if not found:
            report.add(R_NEGATIVE, f"{path.name}: image {image_id} {file_name!r}")
        annotations.append(
            Annotation(
                str(file_path),
                np.asarray([o[0] for o in found], np.float32).reshape(-1, 4),
                np.asarray([o[1] for o in found], np.int32),
                np.asarray([o[2] for o in found], bool),
            )
        )
        image_ids.append(image_id)
    for k in np.flatnonzero(counts == 0):
        report.add(R_EMPTY_CATEGORY, f"{path.name}: category {category_ids[k]} {class_names[k]!r}")
    return CocoDataset(annotations, class_names, category_ids, image_ids, report)


def _fmt_list(values):
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _round(value):
    return round(float(value), 4)


def coco_file_name(image_path, json_folder):
    """How an image is named in a COCO file written to ``json_folder``: relative to it
    when the image lies inside it, else the absolute path."""
    image_path = Path(os.path.abspath(image_path))
    json_folder = Path(os.path.abspath(json_folder))
    try:
        return image_path.relative_to(json_folder).as_posix()
    except ValueError:
        return str(image_path)


def to_coco(annotations, class_names, json_folder, category_ids=None, report=None):
    """Builds a COCO instances dict from annotations.

    Image ids are 1..N and annotation ids 1..K in order; ``file_name`` is relative to
    ``json_folder`` when the image lies inside it, else absolute; ``width`` and
    ``height`` are the displayed size read from the image header (EXIF orientation
    applied, the frame the boxes refer to); ``bbox`` is ``[x, y, width, height]``
    pixels; difficult objects are written as crowd regions (``iscrowd`` 1), which
    COCO evaluation ignores.

    Args:
        annotations: list of Annotation (boxes xyxy pixels).
        class_names: list of C class names.
        json_folder: folder the JSON file will be written to.
        category_ids: C original category ids (default 1..C).
        report: ConversionReport receiving the images that cannot be read (skipped).

    Returns:
        dict with ``images``, ``annotations``, ``categories``.
    """
    category_ids = list(range(1, len(class_names) + 1)) if category_ids is None else [int(i) for i in category_ids]
    if len(category_ids) != len(class_names):
        raise ValueError(f"{len(category_ids)} category ids given for {len(class_names)} class names")
    report = coco_report() if report is None else report
    images, objects = [], []
    for ann in annotations:
        try:
            width, height = displayed_size(ann.path)
        except OSError as exc:
            report.add(R_UNREADABLE_IMAGE, f"{ann.path}: {exc}")
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": coco_file_name(ann.path, json_folder),
                       "width": int(width), "height": int(height)})
        for box, cls, diff in zip(ann.boxes, ann.classes, ann.difficult):
            if not 0 <= cls < len(class_names):
                raise ValueError(f"{ann.path}: class id {int(cls)} outside the {len(class_names)} class names")
            w, h = float(box[2]) - float(box[0]), float(box[3]) - float(box[1])
            objects.append({
                "id": len(objects) + 1,
                "image_id": image_id,
                "category_id": category_ids[int(cls)],
                "bbox": [_round(box[0]), _round(box[1]), _round(w), _round(h)],
                "area": _round(w * h),
                "iscrowd": int(bool(diff)),
                "segmentation": [],
            })
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, class_names)]
    return {"images": images, "annotations": objects, "categories": categories}


def write_coco(path, annotations, class_names, category_ids=None, report=None):
    """Writes annotations as a COCO instances JSON file (see ``to_coco``).

    Returns:
        the dict written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_coco(annotations, class_names, path.parent, category_ids, report)
    write_text_atomic(path, json.dumps(data) + "\n")
    return data
