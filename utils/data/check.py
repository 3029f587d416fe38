"""Checking a dataset before training on it: every problem with its file and line, and a verdict.

``check_dataset`` reads a dataset of any supported format (``utils.data.sources``)
and lists what would hurt training, one ``Finding`` per problem with the file (and
line, for annotation lines) it is in:

* errors, which make training impossible: a dataset that cannot be read, no usable
  image, no object at all;
* warnings: lines or objects the reader skipped (malformed, unknown classes,
  degenerate boxes), unreadable images, boxes reaching outside the image (clipped),
  duplicate boxes, images listed more than once, boxes smaller than the stride-8 cell at the input size, classes
  without objects, a strong class imbalance, anchors that fit the boxes poorly;
* notes: images without objects, classes with few objects, EXIF-turned images.

The box statistics it prints come from ``utils.data.box_stats``.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.config import ANCHOR_MIN_BPR, ANCHOR_T, DEFAULT_INPUT_SIZE, STRIDES
from utils.data.annotation import AnnotationError, parse_line
from utils.data.box_stats import FEW_OBJECTS, BoxStats, box_stats, format_box_stats
from utils.data.report import DatasetError

ERROR, WARNING, NOTE = "error", "warning", "note"
#: Same-class boxes of one image overlapping at least this much are duplicates.
DUPLICATE_IOU = 0.95
#: Other places a repeated image is listed at, named in its finding.
REPEATS_SHOWN = 3
#: Most objects of a class over fewest (of the classes with objects) above which the balance is reported.
IMBALANCE_RATIO = 10.0
#: The side of the finest level's cell, in input pixels.
FINEST_STRIDE = min(STRIDES)

# What the readers and ``check_annotations`` report, by a phrase of their messages:
# (phrase, kind, severity), the first phrase found wins.
_MESSAGE_KINDS = (
    ("EXIF orientation", "turned image", NOTE),
    ("class id", "unknown class", WARNING),
    ("outside the class names", "unknown class", WARNING),
    ("not in the class list", "unknown class", WARNING),
    ("empty or inverted", "degenerate box", WARNING),
    ("is empty inside", "degenerate box", WARNING),
    ("empty box", "degenerate box", WARNING),
    ("extends outside", "box outside the image", WARNING),
    ("outside 0-1", "box outside the image", WARNING),
    ("image skipped", "unreadable image", WARNING),
    ("image missing or unreadable", "unreadable image", WARNING),
)


@dataclass
class Finding:
    """One problem found.

    Attributes:
        severity: ``ERROR``, ``WARNING`` or ``NOTE``.
        kind: what sort of problem, e.g. "duplicate box" (groups the findings).
        where: the file (and line) it is in; empty when the message names it.
        message: what is wrong, with the offending values.
    """

    severity: str
    kind: str
    where: str
    message: str

    def __str__(self):
        return f"{self.where + ': ' if self.where else ''}{self.severity}: {self.message}"


def _classify(message):
    for phrase, kind, severity in _MESSAGE_KINDS:
        if phrase in message:
            return kind, severity
    return "unreadable annotation", WARNING


def annotation_locations(source):
    """Where each annotation of a dataset is written: file and line, or file (and image).

    Args:
        source: ``utils.data.sources.DatasetSource``.

    Returns:
        list of str, one per ``source.annotations``.
    """
    annotations = source.annotations
    if source.format == "lines":
        # The reader keeps every line that parses, in file order.
        lines = []
        with open(source.path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                try:
                    parsed = parse_line(line, source.path, lineno)
                except AnnotationError:
                    continue
                if parsed is not None:
                    lines.append(f"{source.path}:{lineno}")
        if len(lines) == len(annotations):
            return lines
    if source.format == "coco" and source.image_ids is not None:
        return [f"{source.path} (image id {i}, {Path(a.path).name})" for a, i in zip(annotations, source.image_ids)]
    if source.format == "yolo":
        from utils.data.yolo_txt import label_path

        return [str(label_path(a.path)) for a in annotations]
    if source.format == "voc":
        return [str(Path(a.path).parent.parent / "Annotations" / f"{Path(a.path).stem}.xml") for a in annotations]
    return [f"{source.path} ({a.path})" for a in annotations]


@dataclass
class CheckReport:
    """What ``check_dataset`` found.

    Attributes:
        path: the dataset checked.
        findings: list of Finding, in the order found.
        stats: BoxStats of the usable annotations, or None when nothing was read.
        anchor_fit: ``utils.data.kmeans.AnchorFit`` of the anchors, or None.
        description: one line on what was read.
    """

    path: str
    findings: list = field(default_factory=list)
    stats: BoxStats = None
    anchor_fit: object = None
    description: str = ""

    def add(self, severity, kind, where, message):
        self.findings.append(Finding(severity, kind, where, message))

    @property
    def trainable(self):
        """False when a finding makes training impossible."""
        return not any(f.severity == ERROR for f in self.findings)

    def counts(self):
        """``{severity: number of findings}``."""
        return {s: sum(1 for f in self.findings if f.severity == s) for s in (ERROR, WARNING, NOTE)}

    def verdict(self):
        """The closing line."""
        n = self.counts()
        tally = f"{n[ERROR]} error(s), {n[WARNING]} warning(s), {n[NOTE]} note(s)"
        if not self.trainable:
            return f"Verdict: training is impossible ({tally}); fix the errors above."
        if n[WARNING]:
            return f"Verdict: usable for training, with problems to look at ({tally})."
        return f"Verdict: usable for training ({tally})."

    def format(self, limit=20):
        """The report: each finding (at most ``limit`` of each kind, 0 for all), the
        statistics, the anchor fit and the verdict.

        Returns:
            str, several lines.
        """
        lines = [f"Checked {self.description or self.path}"]
        shown, hidden = {}, {}
        for finding in self.findings:
            shown[finding.kind] = shown.get(finding.kind, 0) + 1
            if limit and shown[finding.kind] > limit:
                hidden[finding.kind] = hidden.get(finding.kind, 0) + 1
                continue
            lines.append(str(finding))
        lines += [f"... and {n} more of kind {kind!r} (--max-lines 0 lists them all)" for kind, n in hidden.items()]
        if self.stats is not None:
            lines += format_box_stats(self.stats)
        if self.anchor_fit is not None:
            fit = self.anchor_fit
            lines.append(f"anchors: best possible recall {fit.best_possible_recall:.4f} at ratio {fit.anchor_t:g}, "
                         f"mean best IoU {fit.mean_best_iou:.3f} ({fit.boxes} boxes)")
        lines.append(self.verdict())
        return "\n".join(lines)


def _duplicates(boxes, classes):
    """(later, earlier, IoU) for every box that duplicates an earlier box of its class."""
    from utils.boxes import np_iou  # loads Keras: imported when needed

    iou = np_iou(boxes[:, None, :], boxes[None, :, :])
    same = classes[:, None] == classes[None, :]
    found = []
    for later in range(1, len(boxes)):
        earlier = np.flatnonzero(same[later, :later] & (iou[later, :later] >= DUPLICATE_IOU))
        if earlier.size:
            found.append((later, int(earlier[0]), float(iou[later, earlier[0]])))
    return found


def _check_images(report, source, locations, num_classes):
    """Per-image checks (readable, boxes inside, duplicates); returns the usable annotations and their locations."""
    from utils.data.dataset import check_annotations

    usable, where = [], []
    for ann, location in zip(source.annotations, locations):
        kept, problems = check_annotations([ann], num_classes)
        for message in problems:
            report.add(*reversed(_classify(message)), location, message)
        if not kept:
            continue
        ann = kept[0]
        usable.append(ann)
        where.append(location)
        names = source.classes.names
        for later, earlier, iou in _duplicates(np.asarray(ann.boxes, np.float64), ann.classes):
            report.add(WARNING, "duplicate box", location,
                       f"{ann.path}: box {later} {ann.boxes[later].tolist()} of class {names[ann.classes[later]]!r} "
                       f"duplicates box {earlier} (IoU {iou:.2f})")
        if not len(ann):
            report.add(NOTE, "image without objects", location, f"{ann.path}: no object (a negative image)")
    return usable, where


def _check_repeats(report, source, locations, origin):
    """Images listed more than once: one finding with the totals, then one per image
    with where it is listed. A repeat is trained on as one more image (oversampling
    it) and copies can land in both the training and the validation split."""
    listed = {}
    for ann, location in zip(source.annotations, locations):
        listed.setdefault(os.path.normpath(os.path.abspath(str(ann.path))), []).append((ann.path, location))
    repeated = {key: places for key, places in listed.items() if len(places) > 1}
    if not repeated:
        return
    repeats = sum(len(places) - 1 for places in repeated.values())
    report.add(WARNING, "repeated image", origin,
               f"{repeats} of the {len(source.annotations)} images listed repeat one listed before "
               f"({len(listed)} distinct image{'s' if len(listed) != 1 else ''}; {len(repeated)} listed more than "
               "once): each repeat is trained on "
               "as one more image and copies can fall in both the training and the validation split; list each "
               "image once unless oversampling is meant")
    for places in sorted(repeated.values(), key=len, reverse=True):
        path, first = places[0]
        others = [location for _, location in places[1:]]
        shown = ", ".join(others[:REPEATS_SHOWN]) + (f" and {len(others) - REPEATS_SHOWN} more"
                                                     if len(others) > REPEATS_SHOWN else "")
        report.add(WARNING, "repeated image", first, f"{path} is listed {len(places)} times: here and at {shown}")


def _check_sizes(report, usable, locations, stats):
    """Boxes smaller than the finest cell at the input size, one finding per box."""
    for b in np.flatnonzero(stats.input_wh.min(axis=1) < FINEST_STRIDE) if len(stats.input_wh) else ():
        ann, k = usable[stats.image[b]], stats.box[b]
        w, h = stats.input_wh[b]
        report.add(WARNING, "box smaller than a cell", locations[stats.image[b]],
                   f"{ann.path}: box {k} {ann.boxes[k].tolist()} is {w:.1f}x{h:.1f} px at input {stats.input_size}, "
                   f"smaller than the {FINEST_STRIDE} px cell of the finest level")


def _check_classes(report, stats, origin):
    counts = stats.counts
    names = stats.class_names
    for name, n in zip(names, counts):
        if n == 0:
            report.add(WARNING, "class without objects", origin, f"class {name!r} has no object")
        elif n < FEW_OBJECTS:
            report.add(NOTE, "class with few objects", origin, f"class {name!r} has only {n} object(s)")
    present = counts[counts > 0]
    if present.size > 1 and present.max() / present.min() > IMBALANCE_RATIO:
        most, fewest = int(np.argmax(counts)), int(np.argmin(np.where(counts > 0, counts, np.inf)))
        report.add(WARNING, "class imbalance", origin,
                   f"class {names[most]!r} has {counts[most]} objects but {names[fewest]!r} only {counts[fewest]} "
                   f"(ratio {counts[most] / counts[fewest]:.1f}, above {IMBALANCE_RATIO:g})")


def check_dataset(path, split=None, images=None, classes=None, input_size=DEFAULT_INPUT_SIZE, anchors=None,
                  anchor_t=ANCHOR_T):
    """Checks a dataset of any supported format (see the module docstring).

    Args:
        path: the dataset (annotation-line file, COCO JSON, YOLO YAML or folder, VOC folder).
        split: the split of a YOLO data YAML or a VOC folder.
        images: the folder of a COCO file's images with relative file names.
        classes: a classes file, or None for the dataset's names.
        input_size: the network input side S.
        anchors: (9, 2) anchors in input pixels, or None to skip the anchor fit.
        anchor_t: the width or height ratio of an anchor match.

    Returns:
        CheckReport.
    """
    from utils.data.kmeans import anchor_fit
    from utils.data.sources import read_dataset

    report = CheckReport(str(path))
    try:
        source = read_dataset(path, split=split, images=images, classes=classes)
    except (DatasetError, FileNotFoundError) as exc:
        report.add(ERROR, "unreadable dataset", "", str(exc))
        return report
    report.description = source.describe()
    for message in source.problems:
        kind, severity = _classify(message)
        # The readers' messages start with the file and line: "train.txt:4: ...".
        where, sep, rest = message.partition(": ")
        located = sep and where.rpartition(":")[2].isdigit()
        report.add(severity, kind, where if located else "", rest if located else message)
    locations = annotation_locations(source)
    _check_repeats(report, source, locations, str(path))
    usable, where = _check_images(report, source, locations, len(source.classes.names))
    if not usable:
        report.add(ERROR, "no usable image", str(path), "no usable image: every image listed was skipped")
        return report
    stats = box_stats(usable, source.classes.names, input_size)
    report.stats = stats
    if not len(stats.classes):
        report.add(ERROR, "no object", str(path), f"none of the {len(usable)} usable images holds an object")
        return report
    _check_sizes(report, usable, where, stats)
    _check_classes(report, stats, source.classes.origin)
    if anchors is not None:
        fit = anchor_fit(stats.input_wh[np.all(stats.input_wh > 0, axis=1)], anchors, anchor_t)
        report.anchor_fit = fit
        if fit.best_possible_recall < ANCHOR_MIN_BPR:
            report.add(WARNING, "anchors fit poorly", "",
                       f"the anchors reach a best possible recall of {fit.best_possible_recall:.4f} at ratio "
                       f"{anchor_t:g} (below {ANCHOR_MIN_BPR}): fit anchors to this dataset with "
                       f"kmeans_for_anchors.py --input-size {input_size}, or train with --auto-anchors")
    return report
