"""Reading and writing YOLO txt datasets (the layout Ultralytics tools use).

Each image has a label file: its path with the last ``images`` folder replaced by
``labels`` and the extension by ``.txt`` (``ds/images/train/a.jpg`` ->
``ds/labels/train/a.txt``; an image outside any ``images`` folder has its label
beside it). One object a line, ``class cx cy w h``, the box centre and size divided
by the width and height of the image as displayed (EXIF orientation applied); a line
``class x1 y1 x2 y2 x3 y3 ...`` (a segmentation polygon) is read as its bounding box.
A missing or empty label file means an image without objects.

A data YAML names the parts::

    path: ../datasets/shapes   # the root; relative to the YAML's folder (default: that folder)
    train: images/train        # a folder of images, a .txt list of image paths, or a list of these
    val: images/val
    test: images/test          # optional
    names: [circle, square]    # or {0: circle, 1: square}

A folder can be given instead: its ``data.yaml`` when it has one, else its
``images/`` (``images/<split>/`` when it exists) with class names from a
``classes.txt`` in the folder or in ``labels/``, or from the caller.

Reading never stops at a bad line: malformed lines and out-of-range class ids are
recorded with file and line and skipped, boxes reaching outside 0–1 are clipped and
recorded, in a :class:`~utils.data.report.ConversionReport`.
"""

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import Annotation
from utils.data.report import ConversionReport, DatasetError
from utils.image import IMAGE_EXTENSIONS, displayed_size
from utils.model_data import load_classes
from utils.run_dir import write_text_atomic

DATA_YAML = "data.yaml"
CLASSES_TXT = "classes.txt"
SPLITS = ("train", "val", "test")
# Normalized values this far outside 0–1 are rounding, not boxes past the border.
_TOLERANCE = 1e-6

R_MALFORMED = "malformed label line (line skipped)"
R_CLASS = "class id outside the class names (line skipped)"
R_EMPTY_BOX = "empty box, width or height <= 0 inside the image (line skipped)"
R_CLIPPED = "box outside 0-1 (clipped to the image)"
R_UNREADABLE_LABEL = "label file unreadable (image skipped)"
R_UNREADABLE_IMAGE = "image missing or unreadable, size unknown (image skipped)"
R_MISSING_IMAGE = "image listed in a split file not found (skipped)"
R_ORPHAN_LABEL = "label file without an image (not used)"
R_RENAMED = "image file name used twice (written under a new name)"
R_NO_LABEL = "image without a label file (kept as a negative image)"
R_NEGATIVE = "label file without objects (kept as a negative image)"
R_DIFFICULT = "difficult object (written as a plain object: YOLO labels have no difficult flag)"
REASONS = (
    R_MALFORMED,
    R_CLASS,
    R_EMPTY_BOX,
    R_UNREADABLE_LABEL,
    R_UNREADABLE_IMAGE,
    R_MISSING_IMAGE,
    R_ORPHAN_LABEL,
    R_CLIPPED,
    R_RENAMED,
    R_NO_LABEL,
    R_NEGATIVE,
    R_DIFFICULT,
)
NOTE_REASONS = (R_NO_LABEL, R_NEGATIVE, R_RENAMED, R_DIFFICULT)


def yolo_report():
    """An empty ConversionReport listing the YOLO reasons in their summary order."""
    return ConversionReport(REASONS, notes=NOTE_REASONS)


@dataclass
class YoloSpec:
    """Where a YOLO dataset's splits are and what its classes are called.

    Attributes:
        root: the dataset root folder.
        splits: split name -> list of Paths (folders of images or .txt image lists).
        names: class names, or None when the dataset does not name them.
        names_from: the file the names come from ("" when None).
    """

    root: Path
    splits: dict
    names: list = None
    names_from: str = ""


@dataclass
class YoloDataset:
    """The images of one split of a YOLO dataset.

    Attributes:
        annotations: one Annotation per usable image (absolute paths; boxes float32
            (N, 4) xyxy pixels of the displayed image).
        class_names: the class names used to check the class ids.
        names_from: the file the names come from ("" when given by the caller).
        report: everything skipped or changed.
    """

    annotations: list
    class_names: list
    names_from: str = ""
    report: ConversionReport = field(default_factory=yolo_report)


def label_path(image_path):
    """The label file of an image: the last ``images`` folder of its path replaced by
    ``labels``, the extension by ``.txt``."""
    parts = list(Path(image_path).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_names(value, where):
    """Class names from a YAML ``names`` value: a list, or a dict {0: name, 1: ...}.

    Raises:
        DatasetError: another type, names that are not text, or dict keys that are
            not 0..C-1.
    """
    if isinstance(value, dict):
        keys = sorted(value) if all(isinstance(k, int) and not isinstance(k, bool) for k in value) else None
        if keys != list(range(len(value))):
            raise DatasetError(f"{where}: 'names' keys must be 0..{len(value) - 1}, got {list(value)[:20]}")
        value = [value[k] for k in keys]
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: 'names' must be a non-empty list or a dict {{0: name, ...}}, got {value!r}")
    names = []
    for index, name in enumerate(value):
        if isinstance(name, bool) or not isinstance(name, (str, int, float)) or not str(name).strip():
            raise DatasetError(f"{where}: class name {index} is {name!r}, not a name")
        names.append(str(name).strip())
    return names


def load_data_yaml(path):
    """Reads a YOLO data YAML.

    Returns:
        YoloSpec.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: not YAML, not a mapping, no split, or bad ``names``/``nc``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO data YAML not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not readable YAML ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with 'train', 'val', 'names', got {type(data).__name__}")
    root = data.get("path")
    root = path.parent if root in (None, "") else Path(str(root))
    root = Path(os.path.abspath(path.parent / root))
    splits = {}
    for split in SPLITS:
        value = data.get(split)
        if value in (None, ""):
            continue
        entries = value if isinstance(value, list) else [value]
        if not all(isinstance(e, str) and e.strip() for e in entries):
            raise DatasetError(f"{path}: '{split}' must be a path or a list of paths, got {value!r}")
        splits[split] = [Path(e) if Path(e).is_absolute() else root / e for e in entries]
    if not splits:
        raise DatasetError(f"{path}: no 'train', 'val' or 'test' entry; keys found: {sorted(map(str, data))}")
    names = None
    if data.get("names") is not None:
        names = parse_names(data["names"], path)
        nc = data.get("nc")
        if nc is not None and nc != len(names):
            raise DatasetError(f"{path}: 'nc' is {nc!r} but 'names' lists {len(names)} classes")
    return YoloSpec(root, splits, names, str(path) if names else "")


def _folder_spec(folder):
    """A YoloSpec for a folder with ``images/`` (and ``labels/``), or None when it has no ``images/``."""
    images = folder / "images"
    if not images.is_dir():
        return None
    subfolders = sorted(p.name for p in images.iterdir() if p.is_dir())
    splits = {s: [images / s] for s in subfolders}
    splits[""] = [images]
    names, names_from = None, ""
    for candidate in (folder / CLASSES_TXT, folder / "labels" / CLASSES_TXT):
        if candidate.is_file():
            try:
                names, names_from = load_classes(candidate), str(candidate)
            except ValueError as exc:
                raise DatasetError(str(exc)) from None
            break
    return YoloSpec(folder, splits, names, names_from)


def yolo_spec(path):
    """The YoloSpec of a data YAML or of a dataset folder (its data.yaml, else its images/).

    Raises:
        FileNotFoundError: the path does not exist.
        DatasetError: a folder without data.yaml and images/, or a bad YAML.
    """
    path = Path(path)
    if path.is_dir():
        if (path / DATA_YAML).is_file():
            return load_data_yaml(path / DATA_YAML)
        spec = _folder_spec(path)
        if spec is None:
            raise DatasetError(f"{path}: a YOLO dataset folder needs a {DATA_YAML} or an images/ folder (with labels/)")
        return spec
    return load_data_yaml(path)


def _list_images(folder):
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def split_images(spec, split, report):
    """The image paths of a split, in order, and the label folders to look for stray labels in.

    Args:
        spec: YoloSpec.
        split: split name; None takes every image of a folder dataset (a YAML needs one).
        report: receives list entries whose image is missing.

    Raises:
        DatasetError: the split is not in the dataset, or a folder it names is missing.
    """
    if split is None:
        if "" not in spec.splits:
            raise DatasetError(f"{spec.root}: say which split to read ({', '.join(spec.splits)})")
        split = ""
    elif split not in spec.splits:
        if "" in spec.splits and len(spec.splits) == 1:
            split = ""  # a folder of images without split subfolders: all of it
        else:
            present = ", ".join(s for s in spec.splits if s) or "none"
            raise DatasetError(f"{spec.root}: no split {split!r} in the dataset (splits: {present})")
    images, label_dirs = [], []
    for entry in spec.splits[split]:
        if entry.is_dir():
            images += _list_images(entry)
            label_dirs.append(label_path(entry / "x.jpg").parent)
        elif entry.is_file() and entry.suffix.lower() == ".txt":
            for lineno, line in enumerate(entry.read_text(encoding="utf-8").splitlines(), 1):
                text = line.strip()
                if not text:
                    continue
                image = Path(text) if os.path.isabs(text) else entry.parent / text
                if image.is_file():
                    images.append(image)
                else:
                    report.add(R_MISSING_IMAGE, f"{entry}:{lineno}: {text!r}")
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            raise DatasetError(f"{spec.root}: split {split or 'images'!r} names {entry}, which is not a folder, "
                               "an image or a .txt list of images")
    return [Path(os.path.abspath(p)) for p in images], label_dirs


def parse_label_line(line):
    """Parses one label line into (class id, (x1, y1, x2, y2) normalized, unclipped).

    Returns:
        the tuple, None for a blank line, or a str saying why the line is malformed.
    """
    parts = line.split()
    if not parts:
        return None
    if len(parts) != 5 and not (len(parts) >= 7 and len(parts) % 2 == 1):
        return f"expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...', got {len(parts)} values"
    try:
        numbers = [float(v) for v in parts]
    except ValueError:
        return "values are not numbers"
    if not all(math.isfinite(v) for v in numbers):
        return "value that is not finite"
    cls = numbers[0]
    if cls < 0 or not cls.is_integer():
        return f"class {parts[0]!r} is not a class id (0, 1, ...)"
    if len(parts) == 5:
        cx, cy, w, h = numbers[1:]
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if w <= 0 or h <= 0:
            return int(cls), box, "empty"
    else:
        xs, ys = numbers[1::2], numbers[2::2]
        box = (min(xs), min(ys), max(xs), max(ys))
    return int(cls), box, None


def parse_labels(text, path, num_classes, image_size, report):
    """Parses the text of one label file.

    Args:
        text: the file's content.
        path: the label file, for report items.
        num_classes: C; class ids >= C are reported and skipped.
        image_size: (width, height) of the displayed image, or a callable returning it
            (called only when the file holds an object; it may raise OSError).
        report: receives every skipped line and clipped box.

    Returns:
        (boxes float32 (N, 4) xyxy pixels, classes int32 (N,)).
    """
    boxes, classes = [], []
    size = None
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{lineno}"
        parsed = parse_label_line(line)
        if parsed is None:
            continue
        if isinstance(parsed, str):
            report.add(R_MALFORMED, f"{where}: {parsed}: {_short(line)}")
            continue
        cls, box, state = parsed
        if cls >= num_classes:
            report.add(R_CLASS, f"{where}: class id {cls} with {num_classes} class names: {_short(line)}")
            continue
        if state == "empty":
            report.add(R_EMPTY_BOX, f"{where}: {_short(line)}")
            continue
        clipped = tuple(min(max(v, 0.0), 1.0) for v in box)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            report.add(R_EMPTY_BOX, f"{where}: {_short(line)} (outside the image)")
            continue
        if any(abs(a - b) > _TOLERANCE for a, b in zip(box, clipped)):
            report.add(R_CLIPPED, f"{where}: xyxy {_fmt(box)} -> {_fmt(clipped)}: {_short(line)}")
        if size is None:
            size = image_size() if callable(image_size) else image_size
        width, height = size
        boxes.append((clipped[0] * width, clipped[1] * height, clipped[2] * width, clipped[3] * height))
        classes.append(cls)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int32)


def _short(line, limit=80):
    text = line.strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _fmt(values):
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def read_yolo(path, split=None, class_names=None):
    """Reads one split of a YOLO dataset.

    Args:
        path: a data YAML, or a dataset folder (see the module docstring).
        split: "train", "val", "test" (a YAML needs one; a folder without split
            subfolders is read whole).
        class_names: names to use when the dataset has none (the caller's
            ``--classes``); the dataset's own names otherwise.

    Returns:
        YoloDataset.

    Raises:
        FileNotFoundError: the path does not exist.
        DatasetError: an unusable YAML or layout, a missing split, or no class names.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"YOLO dataset not found: {path}")
    spec = yolo_spec(path)
    names, names_from = (spec.names, spec.names_from) if spec.names else (class_names, "")
    if not names:
        raise DatasetError(f"{path}: the dataset names no classes (no 'names' in a data YAML, no {CLASSES_TXT}); "
                           "pass a classes file with --classes")
    report = yolo_report()
    images, label_dirs = split_images(spec, split, report)
    annotations, expected = [], set()
    for image in images:
        label = label_path(image)
        expected.add(label)
        if not label.is_file():
            report.add(R_NO_LABEL, f"{image} (no {label})")
            annotations.append(Annotation(str(image)))
            continue
        try:
            text = label.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            report.add(R_UNREADABLE_LABEL, f"{label}: {exc}")
            continue
        try:
            boxes, classes = parse_labels(text, label, len(names), lambda image=image: displayed_size(image), report)
        except OSError as exc:
            report.add(R_UNREADABLE_IMAGE, f"{image}: {exc}")
            continue
        if not len(classes):
            report.add(R_NEGATIVE, str(label))
        annotations.append(Annotation(str(image), boxes, classes))
    for folder in label_dirs:
        if folder.is_dir():
            for stray in sorted(folder.rglob("*.txt")):
                if stray.name != CLASSES_TXT and Path(os.path.abspath(stray)) not in expected:
                    report.add(R_ORPHAN_LABEL, str(stray))
    return YoloDataset(annotations, list(names), names_from, report)


def _prepare_split_folders(out_dir, split):
    images_dir, labels_dir = out_dir / "images" / split, out_dir / "labels" / split
    for folder in (images_dir, labels_dir):
        if folder.is_dir() and any(folder.iterdir()):
            raise DatasetError(f"{folder} already holds files; write to an empty --out or remove them first")
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    return images_dir, labels_dir


def _update_data_yaml(out_dir, split, class_names):
    import yaml

    path = out_dir / DATA_YAML
    data = {}
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: exists but is not a data YAML mapping; remove it or choose another --out")
        if data.get("names") is not None and parse_names(data["names"], path) != list(class_names):
            raise DatasetError(f"{path} names the classes {parse_names(data['names'], path)}, but this split has "
                               f"{list(class_names)}; write it to another --out")
    data["path"] = str(Path(os.path.abspath(out_dir)))
    data[split] = f"images/{split}"
    data["names"] = {i: name for i, name in enumerate(class_names)}
    ordered = {k: data[k] for k in ("path", *SPLITS) if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    write_text_atomic(path, yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True))
    return path


def write_yolo(out_dir, annotations, class_names, split="train", copy_images=False, report=None):
    """Writes annotations as one split of a YOLO dataset.

    Images go to ``<out_dir>/images/<split>/`` as symbolic links to the originals
    (copies with ``copy_images``, or where links cannot be made), labels to
    ``<out_dir>/labels/<split>/`` (an empty file for an image without objects), and
    ``<out_dir>/data.yaml`` gets the split and the names (other splits already in it
    are kept). Boxes are normalized by the displayed image size read from the header.

    Args:
        out_dir: the dataset folder (created if needed).
        annotations: list of Annotation (boxes xyxy pixels of the displayed image).
        class_names: list of C names.
        split: split name.
        copy_images: copy the image files instead of linking them.
        report: ConversionReport receiving skipped images, renames, clipped boxes.

    Returns:
        dict with "images" (written), "objects" (written), "per_class" (int64 (C,)
        objects written per class), "data_yaml" (Path).

    Raises:
        DatasetError: the split's folders already hold files, or data.yaml names other classes.
    """
    out_dir = Path(out_dir)
    report = yolo_report() if report is None else report
    images_dir, labels_dir = _prepare_split_folders(out_dir, split)
    data_yaml = _update_data_yaml(out_dir, split, class_names)
    used, written = set(), 0
    per_class = np.zeros(len(class_names), np.int64)
    for ann in annotations:
        source = Path(ann.path)
        try:
            width, height = displayed_size(source)
        except OSError as exc:
            report.add(R_UNREADABLE_IMAGE, f"{source}: {exc}")
            continue
        name, k = source.name, 1
        while name.lower() in used:
            k += 1
            name = f"{source.stem}_{k}{source.suffix}"
        if k > 1:
            report.add(R_RENAMED, f"{source} -> {images_dir / name}")
        used.add(name.lower())
        _place_image(source, images_dir / name, copy_images)
        lines = []
        for box, cls, diff in zip(ann.boxes, ann.classes, ann.difficult):
            if not 0 <= cls < len(class_names):
                raise ValueError(f"{ann.path}: class id {int(cls)} outside the {len(class_names)} class names")
            x1, y1, x2, y2 = (float(v) for v in box)
            clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
                       min(max(x2, 0.0), width), min(max(y2, 0.0), height))
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                report.add(R_EMPTY_BOX, f"{source}: box {_fmt(box)} in the {width}x{height} image")
                continue
            if clipped != (x1, y1, x2, y2):
                report.add(R_CLIPPED, f"{source}: box {_fmt(box)} -> {_fmt(clipped)} ({width}x{height})")
            if diff:
                report.add(R_DIFFICULT, f"{source}: box {_fmt(box)}")
            cx, cy = (clipped[0] + clipped[2]) / 2 / width, (clipped[1] + clipped[3]) / 2 / height
            w, h = (clipped[2] - clipped[0]) / width, (clipped[3] - clipped[1]) / height
            lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
            per_class[int(cls)] += 1
        (labels_dir / Path(name).with_suffix(".txt")).write_text("".join(lines), encoding="utf-8")
        written += 1
    return {"images": written, "objects": int(per_class.sum()), "per_class": per_class, "data_yaml": data_yaml}


def _place_image(source, target, copy_images):
    if not copy_images:
        try:
            os.symlink(os.path.abspath(source), target)
            return
        except OSError:
            pass  # e.g. a file system without links: copy instead
    shutil.copy2(source, target)
