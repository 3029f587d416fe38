"""Which pre-labelled images a person should look at first, and why.

Each image gets three terms, each between 0 and 1, and its review score is their sum
(0 to 3, higher first):

* **near the threshold**: for each box, ``1 - |score - conf| / band`` (0 outside the
  band ``REVIEW_BAND`` around the threshold ``conf``), boxes just under the
  threshold included (they are predicted at ``conf - band`` and not written); the term
  is the highest over the image's boxes. A box at the threshold gives 1, a box far
  above it 0.
* **mirror disagreement**: the image is predicted again flipped left to right and
  the boxes are mapped back (``x -> width - x``); the pre-labels of both (scores above
  ``conf``) are paired by class, the highest IoU first, and the term is
  ``1 - sum(IoU of the pairs) / max(count, mirrored count)``: 0 when both agree box
  for box, 1 when no box has a counterpart.
* **confused classes**: from the run's confusion matrix (``confusion_matrix.csv``,
  written beside the checkpoint by training and by ``get_map.py``), the share of the
  boxes paired with an object of a class or predicted as it whose other side was
  another class; the term is the highest share among the classes of the image's boxes.
  Without a matrix it is 0.

The ranked list is written as CSV (rank, image, score, the three terms, the boxes
written, the reason in words) and the first N images as a contact sheet, with their
pre-labels drawn by ``utils.predict.visualize``.
"""

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.boxes import np_iou
from utils.eval.structures import ImageDetections as Detections
from utils.run_dir import write_text_atomic

log = logging.getLogger(__name__)

#: Half-width of the band of scores around the threshold that counts as doubtful.
REVIEW_BAND = 0.15
#: Side of one image of the contact sheet, in pixels.
SHEET_TILE = 320
SHEET_COLUMNS = 4
CONFUSION_CSV = "confusion_matrix.csv"
REVIEW_COLUMNS = ("rank", "image", "score", "near_threshold", "mirror_disagreement", "confused_classes", "boxes",
                  "reason")


@dataclass
class ReviewItem:
    """The review score of one image and what it is made of.

    Attributes:
        path: the image file.
        score: near + mirror + confusion (0 to 3).
        near: the near-threshold term.
        mirror: the mirror-disagreement term.
        confusion: the confused-classes term.
        boxes: pre-labelled boxes of the image (scores above the threshold).
        reason: the terms in words.
    """

    path: Path
    score: float
    near: float
    mirror: float
    confusion: float
    boxes: int
    reason: str


def above(detections, conf):
    """The detections scoring above ``conf`` (the pre-labels)."""
    keep = np.asarray(detections.scores) > conf
    return Detections(np.asarray(detections.boxes, np.float32).reshape(-1, 4)[keep],
                      np.asarray(detections.scores, np.float32)[keep], np.asarray(detections.classes, np.int32)[keep])


def mirror_back(detections, width):
    """Detections of an image flipped left to right, mapped back onto the image of ``width`` pixels."""
    boxes = np.asarray(detections.boxes, np.float32).reshape(-1, 4)
    mapped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return Detections(mapped.astype(np.float32), np.asarray(detections.scores, np.float32),
                      np.asarray(detections.classes, np.int32))


def near_threshold(scores, conf, band=REVIEW_BAND):
    """(term, doubtful boxes): the highest ``1 - |score - conf| / band`` (clipped at 0)
    over ``scores``, and how many boxes lie inside the band."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not len(scores):
        return 0.0, 0
    closeness = np.clip(1.0 - np.abs(scores - conf) / band, 0.0, 1.0)
    return float(closeness.max()), int(np.count_nonzero(closeness > 0))


def disagreement(first, second):
    """(term, boxes without a counterpart): how much two sets of boxes of one image
    differ (see the module docstring); ``first`` and ``second`` have ``boxes`` (N, 4)
    xyxy pixels and ``classes`` (N,)."""
    a_boxes = np.asarray(first.boxes, np.float64).reshape(-1, 4)
    b_boxes = np.asarray(second.boxes, np.float64).reshape(-1, 4)
    larger = max(len(a_boxes), len(b_boxes))
    if larger == 0:
        return 0.0, 0
    iou = np.zeros((len(a_boxes), len(b_boxes)))
    if iou.size:
        iou = np_iou(a_boxes[:, None], b_boxes[None])
    iou = np.where(np.asarray(first.classes)[:, None] == np.asarray(second.classes)[None, :], iou, 0.0)
    total, pairs = 0.0, 0
    while iou.size and iou.max() > 0:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        total += iou[i, j]
        pairs += 1
        iou[i, :] = 0.0
        iou[:, j] = 0.0
    return float(1.0 - total / larger), len(a_boxes) + len(b_boxes) - 2 * pairs


def read_confusion(path, class_names):
    """The confusion matrix of a CSV file written by ``utils.eval.diagnostics``, or None
    (with a warning) when it is unreadable or names other classes.

    Returns:
        int64 (C + 1, C + 1), rows the true classes then background, columns the
        predicted classes then background; or None.
    """
    path = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
        header, body = rows[0][1:], rows[1:]
        matrix = np.array([[float(v) for v in row[1:]] for row in body], np.float64)
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as exc:
        log.warning("%s is unreadable (%s); the review leaves confused classes out.", path, exc)
        return None
    expected = [*class_names, "background"]
    if header != expected or [row[0] for row in body] != expected or matrix.shape != (len(expected),) * 2:
        log.warning("%s is of the classes %s, not the model's %s; the review leaves confused classes out.",
                    path, header[:-1], list(class_names))
        return None
    return matrix


def class_confusion(matrix):
    """(share, partner) per class: the share of a class's paired boxes whose other side
    was another class, and the class it is most often mixed up with (-1: none).

    Args:
        matrix: (C + 1, C + 1) confusion matrix (background last).

    Returns:
        float64 (C,), int64 (C,).
    """
    matrix = np.asarray(matrix, np.float64)
    classes = matrix[:-1, :-1]
    mixed = classes + classes.T
    np.fill_diagonal(mixed, 0.0)
    wrong = mixed.sum(axis=1)
    total = wrong + np.diag(classes)
    share = np.divide(wrong, total, out=np.zeros_like(wrong), where=total > 0)
    partner = np.where(wrong > 0, np.argmax(mixed, axis=1), -1)
    return share, partner


def review_item(path, detections, mirrored, conf, class_names, confusion=None, band=REVIEW_BAND):
    """The review score of one image.

    Args:
        path: the image file.
        detections: its Detections down to ``conf - band`` (boxes xyxy pixels).
        mirrored: the Detections of the mirrored image mapped back (``mirror_back``),
            or None to leave the term out.
        conf: the threshold of the pre-labels.
        class_names: the C class names.
        confusion: ``class_confusion`` of the run's matrix, or None.
        band: the half-width of the doubtful band.

    Returns:
        ReviewItem.
    """
    labels = above(detections, conf)
    near, doubtful = near_threshold(detections.scores, conf, band)
    reasons = []
    if doubtful:
        closest = float(np.asarray(detections.scores)[np.argmin(np.abs(np.asarray(detections.scores) - conf))])
        reasons.append(f"{doubtful} box(es) scored near the threshold {conf:.2f} (closest {closest:.2f})")
    mirror = 0.0
    if mirrored is not None:
        mirror, lonely = disagreement(labels, above(mirrored, conf))
        if mirror > 0:
            reasons.append(f"the mirrored image disagrees ({lonely} box(es) without a counterpart, "
                           f"disagreement {mirror:.2f})")
    confused = 0.0
    if confusion is not None and len(detections.scores):
        share, partner = confusion
        present = np.unique(np.asarray(detections.classes, np.int64))
        worst = present[np.argmax(share[present])]
        confused = float(share[worst])
        if confused > 0:
            reasons.append(f"{class_names[worst]} is mixed up with {class_names[partner[worst]]} "
                           f"({100 * confused:.0f}% of its matched boxes)")
    reason = "; ".join(reasons) or ("no doubt found" if len(labels.scores) else "no box found")
    return ReviewItem(Path(path), near + mirror + confused, near, mirror, confused, len(labels.scores), reason)


def rank(items):
    """Review items, highest score first (ties keep their order)."""
    return sorted(items, key=lambda item: -item.score)


def write_review_csv(path, ranked):
    """Writes the ranked list (``REVIEW_COLUMNS``) atomically; returns the path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REVIEW_COLUMNS)
    for number, item in enumerate(ranked, 1):
        writer.writerow([number, str(item.path), f"{item.score:.4f}", f"{item.near:.4f}", f"{item.mirror:.4f}",
                         f"{item.confusion:.4f}", item.boxes, item.reason])
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def _tile(image, side):
    h, w = image.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    tile = np.full((side, side, 3), 114, np.uint8)
    top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    tile[top:top + small.shape[0], left:left + small.shape[1]] = small
    return tile


def contact_sheet(ranked, images, class_names, path, tile=SHEET_TILE, columns=SHEET_COLUMNS):
    """Draws the first images of the ranked list with their pre-labels, in a grid, and saves it.

    Args:
        ranked: ReviewItems, in rank order (as many as the sheet shows).
        images: list of (RGB uint8 image, Detections of the pre-labels), one per item.
        class_names: the C class names.
        path: the image file to write (.jpg or .png).
        tile: side of one image in pixels.
        columns: images per row (fewer when there are fewer images).

    Returns:
        the path.
    """
    from utils.predict.sources import save_image
    from utils.predict.visualize import draw_detections

    columns = max(1, min(columns, len(ranked)))
    rows = max(1, math.ceil(len(ranked) / columns))
    sheet = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
    for number, (item, (image, labels)) in enumerate(zip(ranked, images)):
        status = [f"#{number + 1}  score {item.score:.2f}", item.path.name]
        drawn = draw_detections(image, labels, class_names, status=status)
        row, col = divmod(number, columns)
        sheet[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = _tile(drawn, tile)
    save_image(path, sheet)
    return Path(path)
