"""The images an evaluation predicts, each with its ground truth, from any dataset.

``EvalImage`` is one image to evaluate. ``images_from_annotations`` makes them from
annotation lines (``utils.data.annotation.Annotation``, as every dataset format is
read into), ``images_from_source`` from a dataset read by ``utils.data.sources``,
``images_from_annotation_file`` from an annotation-line file and ``images_from_voc``
from a VOC split, its XML files read by ``utils.data.voc``. Each returns the images
and a message per thing skipped.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotation import read_annotation_file
from utils.data.voc import ImageIndex, parse_voc_xml
from utils.eval.structures import ImageGroundTruth


@dataclass
class EvalImage:
    """One image to evaluate.

    Attributes:
        image_id: the image's name in the results: its file stem where it names text
            files, else its path.
        path: the image file path.
        ground_truth: ImageGroundTruth, boxes (N, 4) xyxy pixels of the image.
        source_id: the image's id in its dataset (COCO image id), or None.
        pixels: the image already read, RGB uint8 (H, W, 3), or None to read ``path``.
    """

    image_id: str
    path: Path
    ground_truth: ImageGroundTruth
    source_id: int = None
    pixels: np.ndarray = field(default=None, repr=False)


def read_pixels(image, problems):
    """The pixels of an EvalImage: its ``pixels``, or its file read.

    Args:
        image: an EvalImage.
        problems: list receiving a message when the file cannot be read.

    Returns:
        RGB uint8 (H, W, 3) array, or None when the file cannot be read.
    """
    from utils.image import ImageLoadError, load_image

    if image.pixels is not None:
        return image.pixels
    try:
        return load_image(image.path)
    except (ImageLoadError, OSError) as exc:
        problems.append(f"{image.path}: image not readable ({exc}); image skipped")
        return None


def images_from_annotations(annotations, where, source_ids=None, id_from_stem=False):
    """Lists annotated images with their ground truth.

    Args:
        annotations: list of ``utils.data.annotation.Annotation`` (boxes (N, 4) xyxy
            pixels, class ids, difficult flags).
        where: the dataset (its file), named in the messages.
        source_ids: the dataset's id of each image (COCO image ids), or None.
        id_from_stem: name each image by its file stem, as its text files are named
            (an image whose stem another one has is skipped); otherwise by its path (a
            path listed again is skipped).

    Returns:
        (images, problems): list of EvalImage in the annotations' order, and a message
        per image skipped.
    """
    ids = source_ids if source_ids is not None else [None] * len(annotations)
    images, problems, seen = [], [], {}
    for ann, source_id in zip(annotations, ids):
        image_id = Path(ann.path).stem if id_from_stem else str(ann.path)
        if image_id in seen:
            if id_from_stem:
                problems.append(
                    f"{where}: image {ann.path!r} has the same file stem {image_id!r} as {seen[image_id]!r}; "
                    "its files would collide, image skipped"
                )
            else:
                problems.append(f"{where}: image {ann.path!r} listed again; repeat skipped")
            continue
        seen[image_id] = ann.path
        gt = ImageGroundTruth(ann.boxes.astype(np.float64), ann.classes.astype(np.int64), ann.difficult.astype(bool))
        images.append(EvalImage(image_id, Path(ann.path), gt, source_id))
    return images, problems


def images_from_source(source):
    """Lists the images of a dataset with their ground truth, named by file stem.

    Args:
        source: ``utils.data.sources.DatasetSource`` (any format: annotation lines,
            COCO JSON, YOLO txt, VOC); class ids index ``source.classes.names``;
            difficult objects (VOC difficult, COCO crowd regions) are flagged.

    Returns:
        (images, problems): list of EvalImage in dataset order (``source_id`` set to
        the COCO image id for a COCO source), and messages for the skipped lines,
        boxes and repeated image ids.
    """
    images, problems = images_from_annotations(source.annotations, source.path, source.image_ids, id_from_stem=True)
    return images, list(source.problems) + problems


def images_from_annotation_file(path, class_names):
    """Lists the images of an annotation-line file with their ground truth, named by path.

    Args:
        path: the annotation file (``utils.data.annotation``).
        class_names: the class names; boxes of other class ids are skipped.

    Returns:
        (images, problems): list of EvalImage in file order, and messages for the
        skipped lines, boxes and repeated images.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    annotations, problems = read_annotation_file(path, num_classes=len(class_names))
    images, repeated = images_from_annotations(annotations, path)
    return images, problems + repeated


def images_from_voc(voc_root, year, split, class_names):
    """Lists the images of a VOC split with the ground truth of their XML files.

    Reads ``<voc_root>/VOC<year>/ImageSets/Main/<split>.txt`` and, per id,
    ``Annotations/<id>.xml``. The image is the file of ``JPEGImages`` with the id as
    stem (any extension of ``utils.data.voc.IMAGE_EXTENSIONS``), else the one the
    XML's ``<filename>`` names; when neither exists, ``JPEGImages/<filename>`` (or
    ``<id>.jpg`` without one), reported when it is read.

    Args:
        voc_root: the VOCdevkit folder.
        year: e.g. "2007".
        split: e.g. "test".
        class_names: list of class names; objects of other classes are skipped (counted
            in one message).

    Returns:
        (images, problems): list of EvalImage named by id (boxes as written in the
        XML, xyxy pixels), and messages for the skipped ids and objects.

    Raises:
        FileNotFoundError: the split file does not exist.
    """
    base = Path(voc_root) / f"VOC{year}"
    list_file = base / "ImageSets" / "Main" / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"VOC split file not found: {list_file}; check --voc-root, --year and --split.")
    ids = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    image_index = ImageIndex(base / "JPEGImages")
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
        path = image_index.find(image_id, voc.filename)
        if path is None:
            path = base / "JPEGImages" / (Path(voc.filename).name or f"{image_id}.jpg")
        images.append(EvalImage(image_id, path, gt))
    if skipped_names:
        listed = ", ".join(f"{name!r} x{n}" for name, n in sorted(skipped_names.items()))
        problems.append(f"{base / 'Annotations'}: objects of classes not in the class list skipped: {listed}")
    return images, problems
