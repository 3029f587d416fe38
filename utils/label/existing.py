"""Which images of a folder a person has labelled already, so that pre-labelling leaves them alone.

An image counts as labelled when an annotation file of the same stem lies beside it
(a Pascal VOC ``.xml`` or a YOLO ``.txt``; an empty YOLO file says "no objects", which
is a label too) or when an annotation set given with ``--existing`` (any format
``utils.data.sources`` reads) lists it, compared by the real path of the file.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Annotation files beside an image that mark it as labelled.
BESIDE_SUFFIXES = (".xml", ".txt")


@dataclass
class LabelledImages:
    """The images to pre-label and those left alone.

    Attributes:
        todo: image paths without annotations, in order.
        skipped: {image path: why it is left alone}.
    """

    todo: list
    skipped: dict = field(default_factory=dict)


def annotation_beside(image):
    """The VOC XML or YOLO txt file beside ``image`` with its stem, or None."""
    image = Path(image)
    for suffix in BESIDE_SUFFIXES:
        candidate = image.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def listed_images(existing, split=None, images=None):
    """The real paths of the images an annotation set lists (with or without objects).

    Args:
        existing: an annotation set of any format ``utils.data.sources.read_dataset`` reads.
        split: its split (VOC, YOLO); None reads a YOLO folder whole.
        images: the images folder of a COCO, Label Studio or CVAT file.

    Returns:
        set of str.

    Raises:
        FileNotFoundError, DatasetError: the set cannot be read.
    """
    from utils.data.sources import read_dataset

    source = read_dataset(existing, split=split, images=images)
    return {os.path.realpath(a.path) for a in source.annotations}


def split_labelled(paths, existing=None, split=None, images=None):
    """Separates the images that have annotations from those to pre-label.

    Args:
        paths: image paths.
        existing: an annotation set whose images are labelled, or None.
        split, images: how to read it (see ``listed_images``).

    Returns:
        LabelledImages.
    """
    listed = listed_images(existing, split, images) if existing else set()
    result = LabelledImages([])
    for path in paths:
        beside = annotation_beside(path)
        if beside is not None:
            result.skipped[path] = f"annotated in {beside.name}"
        elif os.path.realpath(path) in listed:
            result.skipped[path] = f"listed in {existing}"
        else:
            result.todo.append(path)
    return result
