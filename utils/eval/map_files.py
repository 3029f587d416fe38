"""The text files that evaluation reads and writes, and the image lists they come from.

Layout under an output folder ``<out>``, one file per image named ``<image_id>.txt``
where ``image_id`` is the image file's stem:

* ``<out>/ground-truth/<image_id>.txt``: one object a line,
  ``class left top right bottom`` plus `` difficult`` for difficult objects.
* ``<out>/detection-results/<image_id>.txt``: one detection a line,
  ``class score left top right bottom``.

Boxes are xyxy pixels of the original image. Lines are parsed from the right (the last
four numbers, after an optional ``difficult``, or the last five for detections), so a
class name may hold any character; names written by this module have their spaces
replaced by underscores (``traffic light`` -> ``traffic_light``) and are mapped back
through the class list when one is given. Every box with finite numbers is kept as
written, as the VOC devkit scores it, including negative coordinates and boxes reaching
past the image border. Problems (lines that do not parse, numbers that are not finite,
inverted boxes with right < left or bottom < top, unknown classes, detection files
without a ground-truth file) are collected as messages naming the file and line; the
affected line or file is skipped and the rest is used.

A run writes its files into a folder of its own first (``get_map.py`` uses a fresh
hidden folder inside ``<out>``) and reads them from there; ``publish_folder`` then
puts each of its text folders in place with renames, so that ``<out>/ground-truth``
and ``<out>/detection-results`` always hold one run's complete set and no run ever
reads or deletes what another run is still writing.
"""

import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.eval.metrics import ImageDetections, ImageGroundTruth, coco_datasets
from utils.run_dir import write_text_atomic

logger = logging.getLogger(__name__)

GT_DIR = "ground-truth"
DET_DIR = "detection-results"
DIFFICULT_TOKEN = "difficult"


def class_token(name):
    """The form of a class name written in the files: spaces become underscores."""
    return "_".join(str(name).split())


class ClassIndex:
    """Maps class names read from the files to class ids.

    With a class list, a name matches a class written as is or with its spaces as
    underscores, and other names are unknown. Without one, every new name gets the
    next id, and ``finalize`` sorts the names.
    """

    def __init__(self, class_names=None):
        self.fixed = class_names is not None
        self.names = list(class_names) if class_names is not None else []
        self._ids = {}
        for i, name in enumerate(self.names):
            self._ids.setdefault(class_token(name), i)
        for i, name in enumerate(self.names):
            self._ids[name] = i  # an exact name wins over an underscore form

    def lookup(self, token):
        """Returns the id of a class name, or None for an unknown name (class list given)."""
        cls = self._ids.get(token)
        if cls is None and not self.fixed:
            cls = len(self.names)
            self.names.append(token)
            self._ids[token] = cls
        return cls

    def finalize(self):
        """Returns (sorted names, old id -> new id array); identity with a class list."""
        if self.fixed:
            return list(self.names), np.arange(len(self.names))
        order = sorted(range(len(self.names)), key=lambda i: self.names[i])
        remap = np.empty(len(self.names), np.int64)
        remap[order] = np.arange(len(order))
        return [self.names[i] for i in order], remap


@dataclass
class MapFiles:
    """The content of an output folder's ground-truth and detection files.

    Attributes:
        ground_truth: ``{image_id: ImageGroundTruth}`` for every ground-truth file.
        detections: ``{image_id: ImageDetections}`` for the detection files that have
            a ground-truth file.
        class_names: list of class names; the class ids in the two dicts index it.
        problems: messages naming file and line for everything skipped.
    """

    ground_truth: dict
    detections: dict
    class_names: list
    problems: list = field(default_factory=list)


@dataclass
class EvalImage:
    """One image to evaluate.

    Attributes:
        image_id: the image file's stem, the name of its text files.
        path: the image file path.
        ground_truth: ImageGroundTruth, boxes (N, 4) xyxy pixels of the image.
        source_id: the image's id in its dataset (COCO image id), or None.
    """

    image_id: str
    path: Path
    ground_truth: ImageGroundTruth
    source_id: int = None


def _fmt(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.2f}"


def format_ground_truth(ground_truth, class_names):
    """Formats one image's ground truth as file text.

    Args:
        ground_truth: ImageGroundTruth (boxes (N, 4) xyxy pixels, classes (N,),
            difficult (N,)).
        class_names: list of class names indexed by the class ids.

    Returns:
        str, one ``class left top right bottom[ difficult]`` line per object.
    """
    lines = []
    difficult = ground_truth.difficult
    if difficult is None:
        difficult = np.zeros(len(ground_truth.classes), bool)
    for box, cls, diff in zip(ground_truth.boxes, ground_truth.classes, difficult):
        line = f"{class_token(class_names[int(cls)])} " + " ".join(_fmt(v) for v in box)
        lines.append(line + (f" {DIFFICULT_TOKEN}" if diff else ""))
    return "".join(line + "\n" for line in lines)


def format_detections(boxes, scores, classes, class_names):
    """Formats one image's detections as file text.

    Args:
        boxes: (M, 4) xyxy pixels of the original image.
        scores: (M,) confidence scores.
        classes: int (M,) class ids indexing ``class_names``.
        class_names: list of class names.

    Returns:
        str, one ``class score left top right bottom`` line per detection.
    """
    tokens = [class_token(n) for n in class_names]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    return "".join(
        f"{tokens[int(c)]} {s:.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
        for b, s, c in zip(boxes, scores, classes)
    )


def clear_text_files(folder):
    """Creates ``folder`` and deletes the ``.txt`` files in it (left from an earlier run).

    Returns:
        number of files deleted.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stale = list(folder.glob("*.txt"))
    for path in stale:
        path.unlink()
    if stale:
        logger.info("deleted %d old .txt files in %s", len(stale), folder)
    return len(stale)


def check_text_folder(folder):
    """Raises ValueError when ``folder`` holds anything but ``.txt`` files.

    A run replaces its published text folders as a whole (``publish_folder``); a
    folder that also holds other files or folders was not written by a run, and
    replacing it would delete them.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; move it away or choose another --out")
    foreign = sorted(p.name for p in folder.iterdir() if p.suffix != ".txt" or not p.is_file() or p.is_symlink())
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"{folder} holds files that are not evaluation text files ({listed}); an evaluation replaces that "
            "folder as a whole, so move them away or choose another --out"
        )


def publish_folder(folder, target):
    """Puts the folder ``folder`` at ``target`` by renames, replacing the folder there.

    ``target`` is at every moment absent (briefly) or one complete folder, never a
    mix of two. The folder it replaced is moved beside ``folder`` (into the same
    private work folder) as ``<name>.replaced<k>``, for the caller to delete with its
    work folder; when two runs publish at once the later one stays.

    Args:
        folder: the run's complete folder, e.g. ``<work>/ground-truth``.
        target: where it goes, e.g. ``<out>/ground-truth``, on the same file system.

    Raises:
        ValueError: ``target`` is a file, not a folder.
    """
    folder, target = Path(folder), Path(target)
    for attempt in range(1, 1001):
        try:
            os.rename(folder, target)  # succeeds when target is absent or an empty folder
            return
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ValueError(f"{target} is not a folder; move it away or choose another --out") from None
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        try:
            os.rename(target, folder.with_name(f"{folder.name}.replaced{attempt}"))
        except FileNotFoundError:
            pass  # another run moved it first; try again
    raise RuntimeError(f"could not put {folder} at {target}: other runs keep replacing it")


def write_ground_truth_files(images, class_names, out_dir):
    """Writes ``<out_dir>/ground-truth/<image_id>.txt`` for every image (replacing the folder's files).

    Args:
        images: list of EvalImage.
        class_names: list of class names indexed by the class ids.
        out_dir: the output folder.

    Returns:
        the ground-truth folder (Path).
    """
    folder = Path(out_dir) / GT_DIR
    clear_text_files(folder)
    for image in images:
        text = format_ground_truth(image.ground_truth, class_names)
        (folder / f"{image.image_id}.txt").write_text(text, encoding="utf-8")
    return folder


def write_detection_files(predictor, images, out_dir, batch_size=8, progress=True):
    """Runs a predictor over images and writes ``<out_dir>/detection-results/<image_id>.txt``.

    Args:
        predictor: object with ``class_names`` (list of str) and
            ``predict_batch(list of RGB uint8 (H, W, 3) arrays) -> list`` of objects
            with ``boxes`` (N, 4) xyxy pixels of the image, ``scores`` (N,) and
            ``classes`` int (N,).
        images: list of EvalImage.
        out_dir: the output folder; its detection files are replaced.
        batch_size: images per ``predict_batch`` call.
        progress: show a progress bar.

    Returns:
        (written, problems): image ids whose file was written, and messages for the
        images that could not be read (skipped; they have no detection file).
    """
    from utils.image import ImageLoadError, load_image

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    folder = Path(out_dir) / DET_DIR
    clear_text_files(folder)
    written, problems = [], []
    batch = []

    def flush():
        results = predictor.predict_batch([array for _, array in batch])
        for (image, _), det in zip(batch, results):
            text = format_detections(det.boxes, det.scores, det.classes, predictor.class_names)
            (folder / f"{image.image_id}.txt").write_text(text, encoding="utf-8")
            written.append(image.image_id)
        batch.clear()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc="detections", unit="img")
    for image in images:
        try:
            batch.append((image, load_image(image.path)))
        except (ImageLoadError, OSError) as exc:
            problems.append(f"{image.path}: image not readable ({exc}); image skipped")
        if len(batch) >= batch_size:
            flush()
        if bar is not None:
            bar.update(1)
    if batch:
        flush()
    if bar is not None:
        bar.close()
    return written, problems


def images_from_source(source):
    """Lists the images of a dataset with their ground truth.

    Args:
        source: ``utils.data.sources.DatasetSource`` (any format: annotation lines,
            COCO JSON, YOLO txt, VOC); class ids index ``source.classes.names``;
            difficult objects (VOC difficult, COCO crowd regions) are flagged.

    Returns:
        (images, problems): list of EvalImage in dataset order (``source_id`` set to
        the COCO image id for a COCO source), and messages for the skipped lines,
        boxes and repeated image ids.
    """
    problems = list(source.problems)
    ids = source.image_ids if source.image_ids is not None else [None] * len(source.annotations)
    images, seen = [], {}
    for ann, source_id in zip(source.annotations, ids):
        image_id = Path(ann.path).stem
        if image_id in seen:
            problems.append(
                f"{source.path}: image {ann.path!r} has the same file stem {image_id!r} as {seen[image_id]!r}; "
                "its files would collide, image skipped"
            )
            continue
        seen[image_id] = ann.path
        gt = ImageGroundTruth(ann.boxes.astype(np.float64), ann.classes.astype(np.int64), ann.difficult.astype(bool))
        images.append(EvalImage(image_id, Path(ann.path), gt, source_id))
    return images, problems


def images_from_voc(voc_root, year, split, class_names):
    """Lists the images of a VOC split with the ground truth of their XML files.

    Reads ``<voc_root>/VOC<year>/ImageSets/Main/<split>.txt`` and, per id,
    ``Annotations/<id>.xml``; the image is ``JPEGImages/<id>.jpg``.

    Args:
        voc_root: the VOCdevkit folder.
        year: e.g. "2007".
        split: e.g. "test".
        class_names: list of class names; objects of other classes are skipped (counted
            in one message).

    Returns:
        (images, problems): list of EvalImage (boxes as written in the XML, xyxy
        pixels), and messages for the skipped ids and objects.

    Raises:
        FileNotFoundError: the split file does not exist.
    """
    from utils.data.voc import parse_voc_xml

    base = Path(voc_root) / f"VOC{year}"
    list_file = base / "ImageSets" / "Main" / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"VOC split file not found: {list_file}; check --voc-root, --year and --split.")
    ids = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    class_ids = {name: i for i, name in enumerate(class_names)}
    images, problems, skipped_names, seen = [], [], {}, set()
    for lineno, image_id in enumerate(ids, 1):
        if image_id in seen:
            problems.append(f"{list_file}:{lineno}: id {image_id!r} listed twice; repeat skipped")
            continue
        seen.add(image_id)
        xml_path = base / "Annotations" / f"{image_id}.xml"
        try:
            voc = parse_voc_xml(xml_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{xml_path}: {exc}; image skipped")
            continue
        boxes, classes, difficult = [], [], []
        for obj in voc.objects:
            if obj.name not in class_ids:
                skipped_names[obj.name] = skipped_names.get(obj.name, 0) + 1
                continue
            boxes.append((obj.xmin, obj.ymin, obj.xmax, obj.ymax))
            classes.append(class_ids[obj.name])
            difficult.append(bool(obj.difficult))
        gt = ImageGroundTruth(
            np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64), np.asarray(difficult, bool)
        )
        images.append(EvalImage(image_id, base / "JPEGImages" / f"{image_id}.jpg", gt))
    if skipped_names:
        listed = ", ".join(f"{name!r} x{n}" for name, n in sorted(skipped_names.items()))
        problems.append(f"{base / 'Annotations'}: objects of classes not in the class list skipped: {listed}")
    return images, problems


def _read_text(path, problems):
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read ({exc}); file skipped")
        return None


def _line_problem(path, lineno, line, why):
    text = line.strip()
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{path}:{lineno}: {why}; line skipped: {text!r}"


def _check_boxes(path, numbers, linenos, lines, problems, first_box_col):
    """Flags rows with non-finite numbers or inverted boxes (right < left or bottom < top).

    Boxes are otherwise kept as written: negative coordinates and boxes past the
    image border are valid, as in the VOC devkit.

    Args:
        path: the file, for messages.
        numbers: float (K, C) parsed rows; the box is columns first_box_col..+4.
        linenos: the K 1-based line numbers.
        lines: all lines of the file.
        problems: list receiving a message per flagged row.
        first_box_col: column of ``left``.

    Returns:
        bool (K,) rows to keep.
    """
    boxes = numbers[:, first_box_col:]
    bad_finite = ~np.all(np.isfinite(numbers), axis=1)
    bad_inverted = ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])) & ~bad_finite
    bad = bad_finite | bad_inverted
    for i in np.nonzero(bad)[0]:
        why = "number that is not finite" if bad_finite[i] else "inverted box (right < left or bottom < top)"
        problems.append(_line_problem(path, linenos[i], lines[linenos[i] - 1], why))
    return ~bad


def read_ground_truth_file(path, classes, problems):
    """Reads one ground-truth file.

    Args:
        path: the ``.txt`` file.
        classes: ClassIndex mapping names to ids.
        problems: list receiving a message per skipped line.

    Returns:
        ImageGroundTruth (boxes float64 (N, 4) xyxy pixels), or None if unreadable.
    """
    text = _read_text(path, problems)
    if text is None:
        return None
    lines = text.splitlines()
    rows, ids, difficult, linenos = [], [], [], []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        diff = parts[-1] == DIFFICULT_TOKEN and len(parts) >= 6
        if diff:
            parts = parts[:-1]
        if len(parts) < 5:
            problems.append(_line_problem(path, lineno, line, "expected 'class left top right bottom [difficult]'"))
            continue
        try:
            numbers = [float(v) for v in parts[-4:]]
        except ValueError:
            problems.append(_line_problem(path, lineno, line, "box coordinates are not numbers"))
            continue
        name = " ".join(parts[:-4])
        cls = classes.lookup(name)
        if cls is None:
            problems.append(_line_problem(path, lineno, line, f"unknown class {name!r}"))
            continue
        rows.append(numbers)
        ids.append(cls)
        difficult.append(diff)
        linenos.append(lineno)
    numbers = np.asarray(rows, np.float64).reshape(-1, 4)
    keep = _check_boxes(path, numbers, linenos, lines, problems, 0)
    return ImageGroundTruth(numbers[keep], np.asarray(ids, np.int64)[keep], np.asarray(difficult, bool)[keep])


def read_detection_file(path, classes, problems):
    """Reads one detection file.

    Args:
        path: the ``.txt`` file.
        classes: ClassIndex mapping names to ids.
        problems: list receiving a message per skipped line.

    Returns:
        ImageDetections (boxes float64 (M, 4) xyxy pixels), or None if unreadable.
    """
    text = _read_text(path, problems)
    if text is None:
        return None
    lines = text.splitlines()
    split = [line.split() for line in lines]
    fast = _read_detection_rows_fast(path, lines, split, classes, problems)
    if fast is not None:
        numbers, ids, linenos = fast
    else:
        numbers, ids, linenos = _read_detection_rows(path, lines, split, classes, problems)
    keep = _check_boxes(path, numbers, linenos, lines, problems, 1)
    return ImageDetections(numbers[keep, 1:], numbers[keep, 0], ids[keep])


def _read_detection_rows_fast(path, lines, split, classes, problems):
    """Bulk parse of a file whose lines all have six fields; None when it does not apply."""
    lengths = set(map(len, split))
    if not lengths <= {0, 6}:
        return None
    if 0 in lengths:
        linenos = [i for i, parts in enumerate(split, 1) if parts]
        rows = [split[i - 1] for i in linenos]
    else:
        linenos, rows = list(range(1, len(split) + 1)), split
    if not rows:
        return np.zeros((0, 5)), np.zeros((0,), np.int64), []
    try:
        numbers = np.array(list(map(float, [v for parts in rows for v in parts[1:]])), np.float64).reshape(-1, 5)
    except ValueError:
        return None  # the line-by-line parse names the bad lines
    names = [parts[0] for parts in rows]
    table = {}
    for name in sorted(set(names)):
        cls = classes.lookup(name)
        table[name] = -1 if cls is None else cls
    ids = np.array([table[name] for name in names], np.int64)
    known = ids >= 0
    if not known.all():
        for i in np.nonzero(~known)[0]:
            problems.append(_line_problem(path, linenos[i], lines[linenos[i] - 1], f"unknown class {rows[i][0]!r}"))
        numbers, ids = numbers[known], ids[known]
        linenos = [n for n, k in zip(linenos, known) if k]
    return numbers, ids, linenos


def _read_detection_rows(path, lines, split, classes, problems):
    rows, ids, linenos = [], [], []
    for lineno, (line, parts) in enumerate(zip(lines, split), 1):
        if not parts:
            continue
        if len(parts) < 6:
            problems.append(_line_problem(path, lineno, line, "expected 'class score left top right bottom'"))
            continue
        try:
            numbers = [float(v) for v in parts[-5:]]
        except ValueError:
            problems.append(_line_problem(path, lineno, line, "score or box coordinates are not numbers"))
            continue
        name = " ".join(parts[:-5])
        cls = classes.lookup(name)
        if cls is None:
            problems.append(_line_problem(path, lineno, line, f"unknown class {name!r}"))
            continue
        rows.append(numbers)
        ids.append(cls)
        linenos.append(lineno)
    return np.asarray(rows, np.float64).reshape(-1, 5), np.asarray(ids, np.int64), linenos


def read_map_files(out_dir, class_names=None):
    """Reads the ground-truth and detection files of an output folder.

    Every ``.txt`` file in ``<out_dir>/ground-truth`` is an image (an image without
    detection file has no detections). A detection file without a ground-truth file is
    reported and skipped.

    Args:
        out_dir: the output folder.
        class_names: list of class names, or None to take the (sorted) names found in
            the files. With a list, lines of other classes are reported and skipped.

    Returns:
        MapFiles.

    Raises:
        FileNotFoundError: ``<out_dir>/ground-truth`` does not exist.
    """
    out_dir = Path(out_dir)
    gt_dir, det_dir = out_dir / GT_DIR, out_dir / DET_DIR
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"Ground-truth folder not found: {gt_dir}; write it first (--mode 2) or check --out.")
    classes = ClassIndex(class_names)
    problems = []
    ground_truth = {}
    for path in sorted(gt_dir.glob("*.txt")):
        gt = read_ground_truth_file(path, classes, problems)
        if gt is not None:
            ground_truth[path.stem] = gt
    detections = {}
    det_paths = sorted(det_dir.glob("*.txt")) if det_dir.is_dir() else []
    if not det_dir.is_dir():
        problems.append(f"{det_dir}: detection folder not found; every image counts as having no detections")
    for path in det_paths:
        if path.stem not in ground_truth:
            state = "unreadable" if (gt_dir / path.name).exists() else "missing"
            problems.append(f"{path}: ground-truth file {gt_dir / path.name} {state}; detection file skipped")
            continue
        det = read_detection_file(path, classes, problems)
        if det is not None:
            detections[path.stem] = det
    names, remap = classes.finalize()
    if not classes.fixed:
        for entry in list(ground_truth.values()) + list(detections.values()):
            entry.classes = remap[entry.classes]
    return MapFiles(ground_truth, detections, names, problems)


COCO_GT_FILE = "coco_ground_truth.json"
COCO_DET_FILE = "coco_detections.json"


def write_coco_files(out_dir, ground_truth, detections, class_names, category_ids=None, image_ids=None):
    """Writes the ground truth and the detections as COCO JSON, with the dataset's ids.

    ``<out_dir>/coco_detections.json`` is a COCO results list (``image_id``,
    ``category_id``, ``bbox`` [x, y, w, h] pixels, ``score``) and
    ``<out_dir>/coco_ground_truth.json`` the matching instances file, so that other
    COCO tools can score the detections.

    Args:
        out_dir: the output folder.
        ground_truth: ``{image_id: ImageGroundTruth}``.
        detections: ``{image_id: ImageDetections}``.
        class_names: list of class names.
        category_ids: the dataset's category id of each class (default 1..C).
        image_ids: ``{image_id: COCO image id}`` for the images that have one (a
            COCO source); the others are numbered by their position in ``ground_truth``.

    Returns:
        (ground-truth path, detections path).
    """
    dataset, results = coco_datasets(ground_truth, detections, class_names, category_ids, image_ids)
    out_dir = Path(out_dir)
    gt_path, det_path = out_dir / COCO_GT_FILE, out_dir / COCO_DET_FILE
    write_text_atomic(gt_path, json.dumps(dataset) + "\n")
    write_text_atomic(det_path, json.dumps(results) + "\n")
    return gt_path, det_path


def format_problems(problems, limit=20):
    """Formats collected problem messages: a count, then at most ``limit`` of them.

    Returns:
        str; empty when there is no problem.
    """
    if not problems:
        return ""
    lines = [f"{len(problems)} problem(s) in the input, each with what was done (skipped, clipped or kept):"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
