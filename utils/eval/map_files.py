"""The interchange text files that evaluation writes and reads, and their publication.

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
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.eval.coco_metric import coco_datasets
from utils.eval.evaluator import DEFAULT_BATCH_SIZE, predict_images
from utils.eval.structures import ImageDetections, ImageGroundTruth
from utils.run_dir import write_text_atomic

logger = logging.getLogger(__name__)

GT_DIR = "ground-truth"
DET_DIR = "detection-results"
DIFFICULT_TOKEN = "difficult"


@dataclass(frozen=True)
class _LineFormat:
    """The lines of one kind of text file.

    Attributes:
        numbers: how many numbers end a line (after the class name).
        expected: the line's form, for the messages.
        numbers_name: what its numbers are, for the messages.
        difficult: whether a line may end with the ``difficult`` token.
    """

    numbers: int
    expected: str
    numbers_name: str
    difficult: bool


GT_LINE = _LineFormat(4, "class left top right bottom [difficult]", "box coordinates", True)
DET_LINE = _LineFormat(5, "class score left top right bottom", "score or box coordinates", False)


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
        images: list of ``utils.eval.images.EvalImage``.
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


def write_detection_files(predictor, images, out_dir, batch_size=DEFAULT_BATCH_SIZE, progress=True):
    """Runs a predictor over images and writes ``<out_dir>/detection-results/<image_id>.txt``.

    Args:
        predictor: object with ``class_names`` (list of str) and ``predict_batch``
            (see ``utils.eval.evaluator.predict_images``).
        images: list of ``utils.eval.images.EvalImage``.
        out_dir: the output folder; its detection files are replaced.
        batch_size: images per ``predict_batch`` call.
        progress: show a progress bar.

    Returns:
        (written, problems): image ids whose file was written, and messages for the
        images that could not be read (skipped; they have no detection file).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    folder = Path(out_dir) / DET_DIR
    clear_text_files(folder)
    written, problems = [], []
    for image, det in predict_images(predictor, images, batch_size, problems, progress):
        text = format_detections(det.boxes, det.scores, det.classes, predictor.class_names)
        (folder / f"{image.image_id}.txt").write_text(text, encoding="utf-8")
        written.append(image.image_id)
    return written, problems


def _read_lines(path, problems):
    """The lines of a text file, or None (with a message in ``problems``) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
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


def _read_rows(path, lines, line_format, classes, problems):
    """Parses the lines of a file, ``class`` then numbers (read from the right, so that a
    class name may hold spaces), reporting each line skipped.

    The numbers of all lines are converted at once; only a file with a field that is
    not a number is read again line by line, to name those lines.

    Returns:
        (numbers float64 (K, line_format.numbers), class ids int64 (K,), difficult
        bool (K,), the K 1-based line numbers) of the lines read.
    """
    count = line_format.numbers
    split = [line.split() for line in lines]
    if set(map(len, split)) <= {count + 1} and not (
            line_format.difficult and any(parts[-1] == DIFFICULT_TOKEN for parts in split)):
        # Every line a one-word class and its numbers (the files this project writes).
        linenos = list(range(1, len(split) + 1))
        names = [parts[0] for parts in split]
        flat = [v for parts in split for v in parts[1:]]
        difficult = np.zeros(len(split), bool)
    else:
        linenos, names, fields, difficult = [], [], [], []
        for lineno, parts in enumerate(split, 1):
            if not parts:
                continue
            diff = line_format.difficult and parts[-1] == DIFFICULT_TOKEN and len(parts) >= 6
            if diff:
                parts = parts[:-1]
            if len(parts) <= count:
                problems.append(_line_problem(path, lineno, lines[lineno - 1], f"expected '{line_format.expected}'"))
                continue
            linenos.append(lineno)
            names.append(parts[0] if len(parts) == count + 1 else " ".join(parts[:-count]))
            fields.append(parts[-count:])
            difficult.append(diff)
        flat = [v for row in fields for v in row]
    try:
        numbers = np.array(list(map(float, flat)), np.float64).reshape(-1, count)
        keep = np.ones(len(names), bool)
    except ValueError:
        fields = [flat[i:i + count] for i in range(0, len(flat), count)]
        numbers, keep = np.zeros((len(fields), count)), np.ones(len(fields), bool)
        for i, row in enumerate(fields):
            try:
                numbers[i] = [float(v) for v in row]
            except ValueError:
                keep[i] = False
                problems.append(_line_problem(path, linenos[i], lines[linenos[i] - 1],
                                              f"{line_format.numbers_name} are not numbers"))
    # Only the names of lines read: a class named on skipped lines alone is no class.
    read = set(names) if keep.all() else {name for name, k in zip(names, keep) if k}
    table = dict.fromkeys(names, -1)
    for name in sorted(read):
        cls = classes.lookup(name)
        table[name] = -1 if cls is None else cls
    ids = np.array([table[name] for name in names], np.int64)
    for i in np.flatnonzero(keep & (ids < 0)):
        problems.append(_line_problem(path, linenos[i], lines[linenos[i] - 1], f"unknown class {names[i]!r}"))
    keep &= ids >= 0
    difficult = np.asarray(difficult, bool).reshape(-1)
    if keep.all():
        return numbers, ids, difficult, linenos
    return numbers[keep], ids[keep], difficult[keep], [n for n, k in zip(linenos, keep) if k]


def _read_file(path, line_format, classes, problems):
    """Reads one text file alone, reporting each line skipped.

    Returns:
        (numbers float64 (K, line_format.numbers), class ids int64 (K,), difficult
        bool (K,)) of the lines kept, or None if the file cannot be read.
    """
    lines = _read_lines(path, problems)
    if lines is None:
        return None
    numbers, ids, difficult, linenos = _read_rows(path, lines, line_format, classes, problems)
    keep = _check_boxes(path, numbers, linenos, lines, problems, line_format.numbers - 4)
    return numbers[keep], ids[keep], difficult[keep]


def _ground_truth_entry(rows):
    numbers, ids, difficult = rows
    return ImageGroundTruth(numbers, ids, difficult)


def _detection_entry(rows):
    numbers, ids, _ = rows
    return ImageDetections(numbers[:, 1:], numbers[:, 0], ids)


def read_ground_truth_file(path, classes, problems):
    """Reads one ground-truth file.

    Args:
        path: the ``.txt`` file.
        classes: ClassIndex mapping names to ids.
        problems: list receiving a message per skipped line.

    Returns:
        ImageGroundTruth (boxes float64 (N, 4) xyxy pixels), or None if unreadable.
    """
    rows = _read_file(Path(path), GT_LINE, classes, problems)
    return None if rows is None else _ground_truth_entry(rows)


def read_detection_file(path, classes, problems):
    """Reads one detection file, with the arguments of ``read_ground_truth_file``.

    Returns:
        ImageDetections (boxes float64 (M, 4) xyxy pixels), or None if unreadable.
    """
    rows = _read_file(Path(path), DET_LINE, classes, problems)
    return None if rows is None else _detection_entry(rows)


#: The bytes of plain text: printable ASCII, the space and the line end.
_PLAIN_BYTES = bytes(range(0x20, 0x7F)) + b"\n"
#: Bytes of text parsed at once by ``_read_files``: bounds the memory it takes.
_CHUNK_BYTES = 1 << 24


def _read_files(paths, line_format, classes, problems):
    """Reads text files of one kind, in order; yields for each what ``_read_file`` returns.

    Files in plain form (``_parse_plain``: the form this module and most tools write)
    whose every line is read are parsed together, a chunk of files at a time, with one
    pass of NumPy over their text. Any other file is read alone by ``_read_file``,
    which reports its problems: the rows and the messages are the same either way.
    """
    chunk, size = [], 0
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as file:  # unbuffered: one read of the whole file
                data = file.readall()
        except OSError:
            data = None  # read alone, which reports why
        chunk.append((path, data))
        size += len(data or b"")
        if size >= _CHUNK_BYTES:
            yield from _read_chunk(chunk, line_format, classes, problems)
            chunk, size = [], 0
    yield from _read_chunk(chunk, line_format, classes, problems)


def _read_chunk(chunk, line_format, classes, problems):
    parsed = _parse_plain([data for _, data in chunk], line_format, classes)
    for k, (path, _) in enumerate(chunk):
        rows = parsed.get(k)
        yield rows if rows is not None else _read_file(Path(path), line_format, classes, problems)


def _parse_plain(datas, line_format, classes):
    """Parses at once the files in plain form whose every line is read.

    Plain form: printable ASCII, lines ending with "\\n", no blank line, one space
    between tokens and none at either end of a line. In such text ``str.splitlines``
    and ``str.split`` find the lines and tokens that the positions of the line ends
    and spaces give, so a line is read as ``_read_rows`` reads it exactly when it has
    as many tokens as a class name and its numbers (and ``difficult``, for ground truth).

    Args:
        datas: the bytes of each file, None for a file that could not be read.
        line_format: GT_LINE or DET_LINE.
        classes: ClassIndex; looked up only for the names of the files parsed.

    Returns:
        ``{index in datas: (numbers float64 (K, line_format.numbers), class ids int64
        (K,), difficult bool (K,))}`` for the files parsed, every line of which is read
        (numbers finite, boxes not inverted, classes known); the others are left to
        ``_read_file``.
    """
    count = line_format.numbers
    index = [k for k, data in enumerate(datas) if data]
    texts = [datas[k] if datas[k].endswith(b"\n") else datas[k] + b"\n" for k in index]
    ok = np.ones(len(texts), bool)
    joined = b"".join(texts)
    text = np.frombuffer(joined, np.uint8)
    ends = np.cumsum([len(part) for part in texts], dtype=np.int64)

    # Plain form: no odd byte, no space or line end next to another (or opening a file).
    space, newline = text == 0x20, text == 0x0A
    gap = space | newline
    flaws = [np.flatnonzero(gap[1:] & gap[:-1]) + 1, np.flatnonzero(gap[:1])]
    if joined.translate(None, _PLAIN_BYTES):
        flaws.append(np.flatnonzero(((text < 0x20) | (text > 0x7E)) & ~newline))
    ok[np.searchsorted(ends, np.concatenate(flaws), side="right")] = False
    newline = np.flatnonzero(newline)
    line_file = np.searchsorted(ends, newline, side="right")
    tokens = np.diff(np.searchsorted(np.flatnonzero(space), newline), prepend=0) + 1
    difficult = np.zeros(len(newline), bool)
    if line_format.difficult:
        tail = np.frombuffer(b" " + DIFFICULT_TOKEN.encode(), np.uint8)
        longer = np.flatnonzero(tokens == count + 2)
        difficult[longer] = np.all(text[newline[longer, None] - len(tail) + np.arange(len(tail))] == tail, axis=1)
    ok[line_file[(tokens != count + 1) & ~difficult]] = False

    # The numbers, parsed by NumPy as float() parses them; a file with a field that is
    # not a number is left out.
    good = np.flatnonzero(ok)
    pieces, parsed = _plain_numbers([texts[k] for k in good], count)
    ok[good[~parsed]] = False
    lines = ok[line_file]
    numbers = np.concatenate(pieces) if pieces else np.zeros((0, count))
    difficult, line_file = difficult[lines], line_file[lines]
    boxes = numbers[:, count - 4:]
    flawed = ~np.all(np.isfinite(numbers), axis=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    ok[line_file[flawed]] = False

    # Class names: only those of files kept, so that a class named on skipped lines alone is no class.
    lines = ok[line_file]
    plain = b"".join(texts[k] for k in np.flatnonzero(ok)).decode("ascii")
    names = [line.partition(" ")[0] for line in plain.splitlines()]
    table = {name: classes.lookup(name) for name in sorted(set(names))}
    unknown = [name for name, cls in table.items() if cls is None]
    table.update(dict.fromkeys(unknown, -1))
    ids = np.fromiter(map(table.__getitem__, names), np.int64, len(names))
    numbers, difficult, line_file = numbers[lines], difficult[lines], line_file[lines]
    if unknown:
        ok[line_file[ids < 0]] = False
        lines = ok[line_file]
        numbers, ids, difficult, line_file = numbers[lines], ids[lines], difficult[lines], line_file[lines]

    bounds = np.searchsorted(line_file, np.arange(len(texts) + 1)).tolist()
    found = {k: (np.zeros((0, count)), np.zeros(0, np.int64), np.zeros(0, bool))
             for k, data in enumerate(datas) if data is not None and not data}
    for k in np.flatnonzero(ok).tolist():
        a, b = bounds[k], bounds[k + 1]
        found[index[k]] = numbers[a:b], ids[a:b], difficult[a:b]
    return found


def _plain_numbers(texts, count):
    """The numbers of plain-form lines, ``class n1 ... n<count>[ difficult]``.

    Args:
        texts: bytes of whole lines, a file each.
        count: the numbers a line holds after its class name.

    Returns:
        (list of float64 (K, count) arrays, the rows of the texts parsed in order;
        bool array: whether each text was parsed). A text with a field that is not a
        number is not.
    """
    if not texts:
        return [], np.zeros(0, bool)
    try:
        numbers = np.loadtxt(io.BytesIO(b"".join(texts)), dtype=np.float64, comments=None, delimiter=" ",
                             usecols=range(1, count + 1), ndmin=2, encoding="ascii")
        return [numbers], np.ones(len(texts), bool)
    except ValueError:
        if len(texts) == 1:
            return [], np.zeros(1, bool)
    half = len(texts) // 2
    first, first_parsed = _plain_numbers(texts[:half], count)
    second, second_parsed = _plain_numbers(texts[half:], count)
    return first + second, np.concatenate([first_parsed, second_parsed])


def _text_files(folder):
    """(image id, path) of every ``.txt`` file of a folder, sorted by file name."""
    folder = str(folder)
    return [(name[:-4] if len(name) > 4 else name, os.path.join(folder, name))
            for name in sorted(name for name in os.listdir(folder) if name.endswith(".txt"))]


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
        raise FileNotFoundError(
            f"Ground-truth folder not found: {gt_dir}; write it first (--mode ground-truth) or check --out."
        )
    classes = ClassIndex(class_names)
    problems = []
    ground_truth = {}
    gt_files = _text_files(gt_dir)
    for (image_id, _), rows in zip(gt_files, _read_files([path for _, path in gt_files], GT_LINE, classes, problems)):
        if rows is not None:
            ground_truth[image_id] = _ground_truth_entry(rows)
    detections = {}
    det_files = _text_files(det_dir) if det_dir.is_dir() else []
    if not det_dir.is_dir():
        problems.append(f"{det_dir}: detection folder not found; every image counts as having no detections")
    # Read lazily, so that a message about a file comes in file order.
    read = _read_files([path for image_id, path in det_files if image_id in ground_truth], DET_LINE, classes,
                       problems)
    for image_id, path in det_files:
        if image_id not in ground_truth:
            path = Path(path)
            state = "unreadable" if (gt_dir / path.name).exists() else "missing"
            problems.append(f"{path}: ground-truth file {gt_dir / path.name} {state}; detection file skipped")
            continue
        rows = next(read)
        if rows is not None:
            detections[image_id] = _detection_entry(rows)
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
