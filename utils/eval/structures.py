"""The per-image ground truth and detections that every metric takes.

Both metrics (``voc_metric``, ``coco_metric``) take the same in-memory structures,
one entry per image:

* ``ground_truth``: a mapping ``image_id -> ImageGroundTruth`` (or any object, or
  dict, with ``boxes`` (N, 4) xyxy pixels, ``classes`` int (N,) and optionally
  ``difficult`` bool (N,)), or a sequence of them whose index is the image id.
* ``detections``: a mapping ``image_id -> ImageDetections`` (or any object, or dict,
  with ``boxes`` (M, 4) xyxy pixels, ``scores`` (M,) and ``classes`` int (M,); the
  ``Detections`` returned by the predictor qualify), or a sequence aligned with
  ``ground_truth``. Images without an entry have no detections.

Class ids index ``class_names`` (0-based). Boxes are in pixels of the original image.
The functions here read such entries and check them, with errors that name the image.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageGroundTruth:
    """Ground-truth objects of one image.

    Attributes:
        boxes: float (N, 4) xyxy pixels of the original image.
        classes: int (N,) class ids.
        difficult: bool (N,) VOC "difficult" flags.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))


@dataclass
class ImageDetections:
    """Detections of one image.

    Attributes:
        boxes: float (M, 4) xyxy pixels of the original image.
        scores: float (M,) confidence scores.
        classes: int (M,) class ids.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def entry_field(entry, name, default=None):
    """The attribute ``name`` of an entry, or its key ``name`` for a mapping."""
    if isinstance(entry, Mapping):
        return entry.get(name, default)
    return getattr(entry, name, default)


def per_image_items(per_image, what):
    """``[(image_id, entry), ...]`` of a mapping, or of a sequence indexed by position.

    Args:
        per_image: the ground truth or the detections (see the module docstring).
        what: "ground_truth" or "detections", for the error message.

    Raises:
        TypeError: ``per_image`` is neither a mapping nor a list or tuple.
    """
    if isinstance(per_image, Mapping):
        return list(per_image.items())
    if isinstance(per_image, (list, tuple)):
        return list(enumerate(per_image))
    raise TypeError(f"{what} must be a mapping image_id -> entry or a sequence, got {type(per_image).__name__}")


def boxes_and_classes(entry, image_id, what, num_classes):
    """The checked boxes and class ids of one entry.

    Args:
        entry: a ground-truth or detection entry.
        image_id: the image's id, for the error messages.
        what: "ground truth" or "detections", for the error messages.
        num_classes: class ids must be in [0, num_classes).

    Returns:
        (boxes float64 (N, 4) xyxy pixels, classes int64 (N,)).

    Raises:
        ValueError: missing fields, a wrong box shape, class ids that are not
            integers or are out of range, or counts that differ.
    """
    boxes = entry_field(entry, "boxes")
    classes = entry_field(entry, "classes")
    if boxes is None or classes is None:
        raise ValueError(f"{what} of image {image_id!r} needs 'boxes' and 'classes', got {type(entry).__name__}")
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} of image {image_id!r}: boxes must be (N, 4) xyxy, got shape {boxes.shape}")
    classes = np.asarray(classes).reshape(-1)
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        if not np.all(np.equal(np.mod(classes, 1), 0)):
            raise ValueError(f"{what} of image {image_id!r}: class ids must be integers, got {classes[:5].tolist()}")
    classes = classes.astype(np.int64)
    if classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"{what} of image {image_id!r}: {boxes.shape[0]} boxes but {classes.shape[0]} classes")
    bad = (classes < 0) | (classes >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"{what} of image {image_id!r}: class id {int(classes[bad][0])} outside the {num_classes} class names"
        )
    return boxes, classes


def ground_truth_arrays(entry, image_id, num_classes):
    """(boxes float64 (N, 4) xyxy pixels, classes int64 (N,), difficult bool (N,)) of a ground-truth entry.

    An entry without ``difficult`` flags has none difficult.

    Raises:
        ValueError: as ``boxes_and_classes``, or as many flags as objects missing.
    """
    boxes, classes = boxes_and_classes(entry, image_id, "ground truth", num_classes)
    difficult = entry_field(entry, "difficult")
    difficult = np.zeros(len(classes), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
    if difficult.shape[0] != classes.shape[0]:
        raise ValueError(
            f"ground truth of image {image_id!r}: {classes.shape[0]} classes but {difficult.shape[0]} difficult flags"
        )
    return boxes, classes, difficult


def detection_arrays(entry, image_id, num_classes):
    """(boxes float64 (M, 4) xyxy pixels, classes int64 (M,), scores float64 (M,)) of a detection entry.

    Raises:
        ValueError: as ``boxes_and_classes``, or as many scores as boxes missing.
    """
    boxes, classes = boxes_and_classes(entry, image_id, "detections", num_classes)
    scores = np.asarray(entry_field(entry, "scores"), np.float64).reshape(-1)
    if scores.shape[0] != classes.shape[0]:
        raise ValueError(f"detections of image {image_id!r}: {classes.shape[0]} classes but {scores.shape[0]} scores")
    return boxes, classes, scores
