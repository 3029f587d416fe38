"""The pre-labelling run behind ``label.py``: list the images, leave the labelled ones
alone, predict the others (and their mirror images for the review), write the
annotation set, rank the images for review and say what was done.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.eval.structures import ImageDetections as Detections
from utils.image import IMAGE_EXTENSIONS, list_images
from utils.label.existing import split_labelled
from utils.label.review import REVIEW_BAND, above, mirror_back, rank, review_item
from utils.label.writers import DEFAULT_IMAGE_URL, PreLabel, write_prelabels
from utils.run_dir import next_run_dir, write_text_atomic

#: Where the review files go inside the run folder.
REVIEW_DIR = "review"
UNREADABLE_TXT = "unreadable.txt"
#: The lowest score predicted for the review, whatever the threshold.
MIN_REVIEW_CONF = 0.01
#: A predicted box narrower or lower than this, in pixels, is not written: boxes clipped
#: to the image edge can be empty, and no labelling tool or reader keeps them.
MIN_BOX_SIDE = 1.0


class LabelError(Exception):
    """Input the run cannot use (source, annotation set, output folder); the message says what to do."""


@dataclass
class LabelOptions:
    """What a run writes, and how.

    Attributes:
        fmt: the annotation format (``utils.label.writers.FORMATS``).
        out: the output folder asked for; a fresh one is chosen when it exists.
        conf: the threshold of the pre-labels.
        review: how many images the contact sheet shows (0: no review).
        batch_size: images per network call.
        existing: an annotation set whose images are labelled already, or None.
        existing_split: its split (VOC, YOLO).
        existing_images: the images folder of a COCO, Label Studio or CVAT set.
        image_url: how a Label Studio task names its image.
        model_version: what made the boxes (the model's file name).
        confusion: ``utils.label.review.class_confusion`` of the run's matrix, or None.
    """

    fmt: str
    out: str
    conf: float
    review: int = 0
    batch_size: int = 1
    existing: str = None
    existing_split: str = "train"
    existing_images: str = None
    image_url: str = DEFAULT_IMAGE_URL
    model_version: str = ""
    confusion: tuple = None


@dataclass
class LabelRun:
    """What a run did.

    Attributes:
        out: the run folder (None when nothing was written).
        written: the WrittenSet, or None.
        labelled: the images pre-labelled.
        boxes: the boxes written.
        skipped: {image: why} of the images left alone as labelled already.
        unreadable: list of (image, why) of the images that could not be read.
        ranked: the ReviewItems, highest score first (empty without review).
        review_files: the ranked list and the contact sheet.
    """

    out: Path = None
    written: object = None
    labelled: int = 0
    boxes: int = 0
    skipped: dict = field(default_factory=dict)
    unreadable: list = field(default_factory=list)
    ranked: list = field(default_factory=list)
    review_files: list = field(default_factory=list)


def source_images(source):
    """The images of ``--source``: one image file, or the image files of a folder (not recursive).

    Raises:
        LabelError: the source does not exist, is not an image, or the folder holds none.
    """
    source = Path(source)
    if source.is_dir():
        paths = list_images(source)
        if not paths:
            raise LabelError(f"{source} holds no image file ({', '.join(IMAGE_EXTENSIONS)}); pass a folder of images")
        return paths
    if not source.exists():
        raise LabelError(f"--source {source} not found; pass an image or a folder of images")
    if source.suffix.lower() not in IMAGE_EXTENSIONS:
        raise LabelError(f"--source {source} is not an image ({', '.join(IMAGE_EXTENSIONS)}); pass an image or a "
                         "folder of images")
    return [source]


def prediction_conf(conf, review):
    """The score threshold to predict at: ``conf``, or ``REVIEW_BAND`` below it for a
    review, which weighs the boxes just under the threshold too."""
    return max(MIN_REVIEW_CONF, conf - REVIEW_BAND) if review else conf


def _relpath(path, root):
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(path).name


@dataclass
class Predicted:
    """The pre-labels of a list of images and their review.

    Attributes:
        items: a PreLabel per readable image, in order.
        reviews: a ReviewItem per readable image, in order (empty without review).
        unreadable: (image, why) per image that could not be read.
        dropped: boxes above the threshold left out as narrower or lower than MIN_BOX_SIDE.
    """

    items: list = field(default_factory=list)
    reviews: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    dropped: int = 0


def predict_images(predictor, paths, conf, root, review=False, confusion=None, batch_size=1):
    """Pre-labels images and, with ``review``, scores them for review.

    Args:
        predictor: a predictor (``predict_batch``, ``class_names``) predicting down to
            ``prediction_conf(conf, review)`` or lower.
        paths: image files.
        conf: the threshold of the pre-labels.
        root: the folder the labelling tool's image names are relative to.
        review: also predict each mirrored image and score the images (``utils.label.review``).
        confusion: ``class_confusion`` of the run's matrix, or None.
        batch_size: images per network call.

    Returns:
        Predicted.
    """
    from utils.predict.sources import iter_batches

    result = Predicted()
    low = prediction_conf(conf, True)
    for loaded, skipped, _ in iter_batches(paths, batch_size):
        result.unreadable += [(item.path, item.detail) for item in skipped]
        if not loaded:
            continue
        images = [image for _, image in loaded]
        found = predictor.predict_batch(images)
        mirrored = (predictor.predict_batch([np.ascontiguousarray(im[:, ::-1]) for im in images])
                    if review else [None] * len(images))
        for (path, image), det, flipped in zip(loaded, found, mirrored):
            height, width = image.shape[:2]
            labels = above(det, conf)
            sides = labels.boxes[:, 2:] - labels.boxes[:, :2]
            keep = (sides >= MIN_BOX_SIDE).all(axis=1)
            result.dropped += int(np.count_nonzero(~keep))
            labels = Detections(labels.boxes[keep], labels.scores[keep], labels.classes[keep])
            result.items.append(PreLabel(Path(path), _relpath(path, root), width, height, labels.boxes,
                                         labels.scores, labels.classes))
            if review:
                back = mirror_back(above(flipped, low), width)
                result.reviews.append(review_item(path, above(det, low), back, conf, predictor.class_names,
                                                  confusion))
    return result


def run_label(predictor, source, options, log=print):
    """Pre-labels the images of ``source`` that have no annotations yet.

    Args:
        predictor: a predictor (``predict_batch`` of RGB uint8 images -> detections with
            boxes xyxy pixels, ``scores``, ``classes``; ``class_names``), predicting at
            ``prediction_conf(options.conf, options.review)`` or lower.
        source: an image file or a folder of images.
        options: LabelOptions.
        log: where the lines of progress go.

    Returns:
        LabelRun.

    Raises:
        LabelError: an unusable source, annotation set or output folder.
    """
    from utils.data.report import DatasetError

    paths = source_images(source)
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    try:
        split = split_labelled(paths, options.existing, options.existing_split, options.existing_images)
    except (FileNotFoundError, DatasetError) as exc:
        raise LabelError(f"--existing: {exc}") from None
    run = LabelRun(skipped=split.skipped)
    if split.skipped:
        log(f"Skipped {len(split.skipped)} of {len(paths)} images that have annotations already (left as they are).")
    if not split.todo:
        log("Nothing to pre-label: every image has annotations.")
        return run
    try:
        run.out = next_run_dir(options.out)
    except (OSError, ValueError) as exc:
        raise LabelError(f"--out {options.out}: {exc}") from None
    if Path(options.out).resolve() != run.out.resolve():
        log(f"{options.out} exists; writing to {run.out} instead.")
    predicted = predict_images(predictor, split.todo, options.conf, root, review=bool(options.review),
                               confusion=options.confusion, batch_size=options.batch_size)
    items, reviews, run.unreadable = predicted.items, predicted.reviews, predicted.unreadable
    if predicted.dropped:
        log(f"Left out {predicted.dropped} box(es) narrower or lower than {MIN_BOX_SIDE:g} pixel.")
    class_names = list(predictor.class_names)
    if run.unreadable:
        write_text_atomic(run.out / UNREADABLE_TXT, "".join(f"{p}: {why}\n" for p, why in run.unreadable))
        log(f"Could not read {len(run.unreadable)} image(s), listed in {run.out / UNREADABLE_TXT}:")
        for path, why in run.unreadable:
            log(f"  {why}")
    if not items:
        return run
    run.ranked = rank(reviews)
    task_data = {str(item.path): {"review_rank": number, "review_score": round(item.score, 4)}
                 for number, item in enumerate(run.ranked, 1)}
    run.written = write_prelabels(options.fmt, run.out, items, class_names, model_version=options.model_version,
                                  image_url=options.image_url, task_data=task_data)
    run.labelled, run.boxes = len(items), int(sum(len(item.classes) for item in items))
    if options.review:
        run.review_files = write_review(run.out / REVIEW_DIR, run.ranked, {item.path: item for item in items},
                                        class_names, options.review)
    return run


def write_review(folder, ranked, items, class_names, count):
    """Writes ``review.csv`` (every image, ranked) and ``contact_sheet.jpg`` (the first ``count``).

    Args:
        folder: the review folder.
        ranked: ReviewItems, highest score first.
        items: {image path: PreLabel}.
        class_names: the C class names.
        count: images on the contact sheet.

    Returns:
        list of the two paths.
    """
    from utils.eval.structures import ImageDetections
    from utils.label.review import contact_sheet, write_review_csv
    from utils.predict.sources import read_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    listed = write_review_csv(folder / "review.csv", ranked)
    first = ranked[:count]
    pictures = []
    for item in first:
        labels = items[item.path]
        pictures.append((read_image(item.path), ImageDetections(labels.boxes, labels.scores, labels.classes)))
    return [listed, contact_sheet(first, pictures, class_names, folder / "contact_sheet.jpg")]


def summary(run, options):
    """The closing lines of a run: what was written where, and how to read it back."""
    if run.written is None:
        return "No pre-labels written."
    lines = [f"Pre-labelled {run.labelled} image(s) with {run.boxes} box(es) at confidence {options.conf:.3f} as "
             f"{options.fmt}: {run.written.dataset}"]
    if run.skipped:
        lines.append(f"Left {len(run.skipped)} annotated image(s) as they were.")
    if run.written.report:
        lines += [f"  {message}" for message in run.written.report.messages()]
    if run.review_files:
        shown = min(options.review, len(run.ranked))
        lines.append(f"Review first: {run.review_files[0]} (ranked, with reasons); the first {shown} in "
                     f"{run.review_files[1]}")
        for number, item in enumerate(run.ranked[:min(options.review, 5)], 1):
            lines.append(f"  {number}. {item.path.name} ({item.score:.2f}): {item.reason}")
    lines.append(f"Check it: {run.written.read_command()}")
    return "\n".join(lines)
