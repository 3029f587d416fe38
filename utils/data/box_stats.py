"""The statistics of a dataset's boxes: objects per class, images without objects, box
centres and sizes relative to the image, and box sizes letterboxed to the network input.

A run prints them (``format_box_stats``) and draws them (``labels.png``,
``utils.train.previews.plot_labels``); ``check_dataset.py`` reports from them; the
anchor fit and k-means take the letterboxed sizes (``utils.data.kmeans``).
"""

from dataclasses import dataclass, field

import numpy as np

from utils.config import DEFAULT_INPUT_SIZE

#: A class with fewer objects than this is reported as having few.
FEW_OBJECTS = 10


@dataclass
class BoxStats:
    """The boxes of a dataset, for the run summary and ``labels.png``.

    Attributes:
        class_names: the C class names.
        num_images: images.
        images_without_objects: images with no object.
        classes: int (N,) class id of each box.
        centres: float (N, 2) box centre x, y relative to the image (0-1).
        sizes: float (N, 2) box width, height relative to the image (0-1).
        input_wh: float (N, 2) box width, height in input pixels, letterboxed.
        image: int (N,) index of the box's annotation.
        box: int (N,) index of the box within its annotation.
        input_size: the input side S.
        problems: a message per image whose size could not be read (its boxes left out).
    """

    class_names: list
    num_images: int
    images_without_objects: int
    classes: np.ndarray
    centres: np.ndarray
    sizes: np.ndarray
    input_wh: np.ndarray
    image: np.ndarray
    box: np.ndarray
    input_size: int
    problems: list = field(default_factory=list)

    @property
    def counts(self):
        """int (C,) objects per class."""
        return np.bincount(self.classes, minlength=len(self.class_names))


def box_stats(annotations, class_names, input_size=DEFAULT_INPUT_SIZE, size_of=None):
    """The statistics of the boxes of ``annotations``.

    Args:
        annotations: list of ``Annotation`` (boxes xyxy pixels of the image as displayed).
        class_names: the C class names the class ids index.
        input_size: the network input side S the boxes are letterboxed to.
        size_of: function path -> (width, height) as displayed, raising OSError
            (default: ``utils.image.displayed_size``, from the header only).

    Returns:
        BoxStats.
    """
    from utils.image import displayed_size

    size_of = size_of or displayed_size
    parts = {"classes": [], "boxes": [], "image_wh": [], "image": [], "box": []}
    problems = []
    for index, ann in enumerate(annotations):
        if not len(ann):
            continue
        try:
            width, height = size_of(ann.path)
        except OSError as exc:
            problems.append(f"{ann.path}: cannot open the image ({exc}); boxes skipped: {len(ann)}")
            continue
        if width <= 0 or height <= 0:
            problems.append(f"{ann.path}: image size {width}x{height}; boxes skipped: {len(ann)}")
            continue
        parts["classes"].append(np.asarray(ann.classes, np.int64))
        parts["boxes"].append(np.asarray(ann.boxes, np.float64))
        parts["image_wh"].append(np.tile([float(width), float(height)], (len(ann), 1)))
        parts["image"].append(np.full(len(ann), index, np.int64))
        parts["box"].append(np.arange(len(ann)))
    if not parts["boxes"]:
        parts = {"classes": [np.zeros(0, np.int64)], "boxes": [np.zeros((0, 4))], "image_wh": [np.ones((0, 2))],
                 "image": [np.zeros(0, np.int64)], "box": [np.zeros(0, np.int64)]}
    boxes, image_wh = np.concatenate(parts["boxes"]), np.concatenate(parts["image_wh"])
    sizes = (boxes[:, 2:] - boxes[:, :2]) / image_wh
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0 / image_wh
    # Letterboxing scales the image's longer side to S.
    longer = image_wh.max(axis=1, keepdims=True) if len(boxes) else np.ones((0, 1))
    return BoxStats(
        list(class_names), len(annotations), sum(1 for a in annotations if not len(a)),
        np.concatenate(parts["classes"]), centres, sizes, sizes * image_wh / longer * input_size,
        np.concatenate(parts["image"]), np.concatenate(parts["box"]), int(input_size), problems,
    )


def format_box_stats(stats):
    """The lines the run summary and the check print: images without objects, classes
    without objects and with fewer than ``FEW_OBJECTS``."""
    counts = stats.counts
    empty = [name for name, n in zip(stats.class_names, counts) if n == 0]
    few = [f"{name} ({n})" for name, n in zip(stats.class_names, counts) if 0 < n < FEW_OBJECTS]
    return [
        f"{int(counts.sum())} objects in {stats.num_images} images; images without objects: "
        f"{stats.images_without_objects}",
        f"classes without objects: {', '.join(empty) if empty else 'none'}",
        f"classes with fewer than {FEW_OBJECTS} objects: {', '.join(few) if few else 'none'}",
    ]
