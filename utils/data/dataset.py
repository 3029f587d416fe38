"""The ``tf.data`` input pipeline: checking annotations, reading, augmenting, encoding.

Use ``check_annotations`` once, before building a model, to drop what cannot be
trained on (missing or unreadable images, out-of-range classes, empty boxes) with a
report; then ``build_dataset`` on the usable annotations.

The training dataset yields ``(images, (y_true_32, y_true_16, y_true_8, gt_boxes))``:

- images: float32 (B, S, S, 3) RGB 0–255.
- y_true_l, in ``STRIDES`` order: float32 (B, S/stride, S/stride, 3, 5 + C)
  (see ``utils.data.targets.encode_targets``).
- gt_boxes: float32 (B, MAX_GT_BOXES, 4) xywh rel, zero-padded.

Randomness. Every element draws its random numbers from stateless ops seeded by a
per-element value of ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``
and the element's image index; the order comes from a seeded shuffle that reshuffles
each epoch. Two pipelines built with the same seed therefore give identical batches
epoch after epoch, and successive epochs differ. (A global seed set with
``tf.random.set_seed`` also enters the op seeds.)

Mosaic and MixUp. With ``mosaic=True`` each training sample is a mosaic with
probability 0.5 (the sample's own image plus three drawn at random from the whole
set); with ``mixup=True`` a mosaic sample is blended 50/50 with a plain augmented
random image with probability 0.5, as recent YOLO pipelines do (MixUp on mosaics
only keeps a share of samples close to the un-mixed distribution). With ``mixup=True``
and ``mosaic=False`` every sample is eligible for MixUp with probability 0.5.
"""

import logging
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from utils.config import ANCHOR_T, MAX_GT_BOXES
from utils.data import augment
from utils.data.annotation import Annotation
from utils.data.targets import build_targets, check_anchors, check_assigner, grid_sizes
from utils.image import exif_orientation, open_image

logger = logging.getLogger(__name__)

# Image formats tf.io.decode_image reads (PIL's names; MPO is a multi-frame JPEG).
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
MOSAIC_PROB = 0.5
MIXUP_PROB = 0.5


# ------------------------------------------------------------------------- checking


def _image_header(path):
    """(width, height, format, EXIF orientation) from the file header, without
    decoding pixels; the size as stored, the orientation 1–8 (1 when absent or invalid)."""
    with open_image(path) as image:
        return image.size[0], image.size[1], image.format, exif_orientation(image)


def check_annotations(annotations, num_classes, image_root=None):
    """Keeps the annotations that can be trained on and reports the rest.

    Reads only image headers (PIL opens files lazily): an image that is missing,
    unreadable or in a format TensorFlow cannot decode is skipped. Boxes with a class
    id outside [0, num_classes) are dropped; boxes reaching outside the image (size
    from the header) are clipped to it; boxes empty after clipping are dropped. Each
    of these is one problem line. An image with an EXIF orientation other than 1 is
    shown to the network as displayed (turned as ``utils.image.load_image`` turns it
    for prediction): its boxes must refer to the displayed image, and a line says so.
    A truncated file whose header reads well is not detected here.

    Args:
        annotations: iterable of ``Annotation`` (boxes xyxy pixels of the image).
        num_classes: number of classes C of the model.
        image_root: directory that relative image paths are resolved against; when
            None they are used as they are (relative to the working directory).

    Returns:
        (usable, problems): list of ``Annotation`` with resolved paths,
        clipped/filtered boxes (images without boxes included) and the EXIF
        orientation of each image, and list of str, one per problem, naming the image.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    usable, problems = [], []
    for ann in annotations:
        path = Path(ann.path)
        if image_root is not None and not path.is_absolute():
            path = Path(image_root) / path
        try:
            width, height, fmt, orientation = _image_header(path)
        except FileNotFoundError:
            problems.append(f"{ann.path}: image file not found ({path}); image skipped")
            continue
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(f"{ann.path}: cannot read the image ({type(exc).__name__}: {exc}); image skipped")
            continue
        if fmt not in DECODABLE_FORMATS:
            problems.append(
                f"{ann.path}: image format {fmt!r} cannot be decoded by the pipeline "
                f"(readable: {', '.join(DECODABLE_FORMATS)}); convert it to JPEG or PNG; image skipped"
            )
            continue
        if orientation != 1:
            stored = f"{width}x{height}"
            if orientation >= 5:
                width, height = height, width
            problems.append(
                f"{ann.path}: EXIF orientation {orientation}: trained as displayed ({width}x{height}, turned from "
                f"the stored {stored}), as prediction reads it; image kept "
                "(its boxes must refer to the displayed image)"
            )

        boxes = np.asarray(ann.boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(ann.classes, np.int32).reshape(-1)
        difficult = np.asarray(ann.difficult, bool).reshape(-1)
        if len(difficult) != len(classes):
            difficult = np.zeros(len(classes), bool)
        keep = np.ones(len(classes), bool)
        limits = np.array([width, height, width, height], np.float32)
        clipped = np.clip(boxes, 0.0, limits)
        for i, (box, cls, new) in enumerate(zip(boxes, classes, clipped)):
            if cls < 0 or cls >= num_classes:
                problems.append(
                    f"{ann.path}: class id {cls} out of range (model has {num_classes} classes); box skipped"
                )
                keep[i] = False
            elif new[2] <= new[0] or new[3] <= new[1]:
                problems.append(
                    f"{ann.path}: box {box.tolist()} is empty inside the {width}x{height} image; box skipped"
                )
                keep[i] = False
            elif np.any(new != box):
                problems.append(
                    f"{ann.path}: box {box.tolist()} extends outside the {width}x{height} image; "
                    f"clipped to {new.tolist()}"
                )
        usable.append(Annotation(str(path), clipped[keep], classes[keep], difficult[keep], orientation))
    return usable, problems


# ------------------------------------------------------------------------- building


def steps_per_epoch(num_images, batch_size, drop_remainder):
    """Number of batches an epoch of ``num_images`` gives."""
    if drop_remainder:
        return num_images // batch_size
    return -(-num_images // batch_size)


def _warn_box_counts(annotations, max_boxes, images_per_sample):
    counts = _box_counts(annotations)
    over = counts > max_boxes
    if over.any():
        warnings.warn(
            f"{int(over.sum())} image(s) hold more than {max_boxes} boxes (up to {int(counts.max())}); "
            f"gt_boxes keeps the first {max_boxes} of each (the targets keep all); "
            "raise MAX_GT_BOXES if the loss's ignore mask should see them all.",
            stacklevel=3,
        )
    elif images_per_sample > 1:
        most = int(np.sort(counts)[::-1][:images_per_sample].sum())
        if most > max_boxes:
            logger.warning(
                "A combined (mosaic/mixup) sample can hold up to %d boxes; gt_boxes keeps the first %d.",
                most,
                max_boxes,
            )


def build_dataset(
    annotations,
    num_classes,
    input_size,
    anchors,
    batch_size,
    training,
    seed=0,
    mosaic=False,
    mixup=False,
    shuffle=None,
    drop_remainder=None,
    cache=False,
    max_boxes=MAX_GT_BOXES,
    jitter=augment.JITTER,
    scale_range=augment.SCALE_RANGE,
    augment_images=True,
    assigner="yolov3",
    anchor_t=ANCHOR_T,
):
    """Builds the batched training or validation dataset.

    Training: random aspect/scale/placement, flip and HSV jitter (``utils.data.augment``),
    optional Mosaic and MixUp (see the module docstring), shuffled. Validation:
    letterbox only, in annotation order, every image kept.

    Args:
        annotations: list of ``Annotation`` as returned by ``check_annotations``
            (boxes xyxy pixels of the image, class ids in [0, num_classes)).
        num_classes: C.
        input_size: S, square input side in pixels (a multiple of 32).
        anchors: (9, 2) anchor width, height in input pixels, sorted by area.
        batch_size: images per batch.
        training: True for the augmented training pipeline, False for validation.
        seed: integer seed of the shuffle and of every random augmentation.
        mosaic: use Mosaic (training only).
        mixup: use MixUp (training only).
        shuffle: shuffle the image order each epoch; defaults to ``training``.
        drop_remainder: drop the last incomplete batch; defaults to ``training``.
        cache: read every image file into memory once, here, instead of from disk
            each epoch (encoded bytes; for sets that fit in memory).
        max_boxes: length of the per-image ``gt_boxes`` list.
        jitter: aspect-ratio jitter of the training augmentation.
        scale_range: (low, high) scale of the training augmentation, relative to S.
        augment_images: False trains on letterboxed images as validation sees them
            (shuffled, but no augmentation, Mosaic or MixUp).
        assigner: how boxes become targets, "yolov3" or "yolov5" (``utils.data.targets``).
        anchor_t: largest box/anchor width or height ratio of a yolov5 match.

    Returns:
        tf.data.Dataset of ``(images, (y_true_32, y_true_16, y_true_8, gt_boxes))``:
        float32 (B, S, S, 3) RGB 0–255; three float32 (B, S/stride, S/stride, 3, 5 + C);
        float32 (B, max_boxes, 4) xywh rel, zero-padded.

    Raises:
        ValueError: bad arguments, an empty annotation list, a class id out of range,
            or fewer images than one batch when the remainder is dropped.
    """
    annotations = list(annotations)
    size, num_classes, batch_size, seed = _check_build_args(
        annotations, num_classes, input_size, batch_size, training, seed, mosaic, mixup
    )
    anchors = check_anchors(anchors)
    check_assigner(assigner)
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    if drop_remainder and len(annotations) < batch_size:
        raise ValueError(
            f"{len(annotations)} image(s) make no full batch of {batch_size}; lower batch_size or pass "
            "drop_remainder=False."
        )
    _check_classes(annotations, num_classes)
    _warn_box_counts(annotations, max_boxes, _images_per_sample(training, mosaic, mixup))

    load = _image_loader(annotations, cache)

    # The map functions hold no Python control flow on tensors: skipping AutoGraph's
    # source conversion cuts the dataset's build time several-fold.
    @tf.autograph.experimental.do_not_convert
    def encode(image, boxes, classes):
        targets = build_targets(boxes, classes, anchors, size, num_classes, max_boxes, assigner, anchor_t)
        return tf.ensure_shape(image, (size, size, 3)), targets

    indices = tf.data.Dataset.range(len(annotations))
    if shuffle:
        indices = indices.shuffle(len(annotations), seed=seed, reshuffle_each_iteration=True)
    if training and augment_images:
        sample = _training_sampler(load, len(annotations), size, mosaic, mixup, jitter, scale_range)
        randoms = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(indices, randoms).map(
            tf.autograph.experimental.do_not_convert(lambda index, value: encode(*sample(index, value))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        dataset = indices.map(
            tf.autograph.experimental.do_not_convert(lambda index: encode(*augment.letterbox(*load(index), size))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    dataset = dataset.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _check_build_args(annotations, num_classes, input_size, batch_size, training, seed, mosaic, mixup):
    """Validates ``build_dataset``'s arguments; returns (size, num_classes, batch_size, seed) as ints."""
    grid_sizes(input_size)
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not annotations:
        raise ValueError("no annotations to build a dataset from; check the annotation file and image paths.")
    if not training and (mosaic or mixup):
        raise ValueError(
            f"mosaic={mosaic!r}, mixup={mixup!r} asked for a validation dataset; they apply to training only."
        )
    if isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return int(input_size), int(num_classes), int(batch_size), int(seed)


def _box_counts(annotations):
    return np.array([len(np.asarray(a.classes).reshape(-1)) for a in annotations], np.int64)


def _all_classes(annotations):
    return np.concatenate([np.asarray(a.classes, np.int32).reshape(-1) for a in annotations])


def _check_classes(annotations, num_classes):
    """Raises on the first class id outside [0, num_classes), naming its image."""
    all_classes = _all_classes(annotations)
    bad = np.flatnonzero((all_classes < 0) | (all_classes >= num_classes))
    if bad.size:
        image = int(np.searchsorted(np.cumsum(_box_counts(annotations)), bad[0], side="right"))
        raise ValueError(
            f"{annotations[image].path}: class id {all_classes[bad[0]]} out of range for {num_classes} classes; "
            "filter the annotations with check_annotations first."
        )


def _images_per_sample(training, mosaic, mixup):
    """How many source images one training sample can combine."""
    if training and mosaic:
        return 5 if mixup else 4
    if training and mixup:
        return 2
    return 1


def _image_loader(annotations, cache):
    """A graph function ``load(index) -> (image uint8 (H, W, 3), boxes (N, 4) xyxy pixels, classes (N,))``.

    The boxes and classes of all images live in two constant tensors, sliced per
    image. With ``cache`` the images' encoded bytes are read here, once, and held in
    memory; otherwise each call reads the file. Images whose ``orientation`` is not 1
    are turned to their displayed orientation (the decoder reads pixels as stored).
    """
    paths = [str(a.path) for a in annotations]
    splits = tf.constant(np.concatenate([[0], np.cumsum(_box_counts(annotations))]), tf.int64)
    all_boxes = tf.constant(
        np.concatenate([np.asarray(a.boxes, np.float32).reshape(-1, 4) for a in annotations]), tf.float32
    )
    all_classes = tf.constant(_all_classes(annotations), tf.int32)
    sources = tf.constant([Path(p).read_bytes() for p in paths] if cache else paths)
    orientation_list = [int(a.orientation) for a in annotations]
    orientations = tf.constant(orientation_list, tf.int32) if any(o != 1 for o in orientation_list) else None

    def load(index):
        data = tf.gather(sources, index) if cache else tf.io.read_file(tf.gather(sources, index))
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.ensure_shape(image, (None, None, 3))
        if orientations is not None:
            image = to_displayed_orientation(image, orientations[index])
        start, stop = splits[index], splits[index + 1]
        return image, all_boxes[start:stop], all_classes[start:stop]

    return load


def to_displayed_orientation(image, orientation):
    """Turns decoded pixels to the orientation their EXIF tag says to display them in.

    The same flips and quarter turns as PIL's ``ImageOps.exif_transpose`` (which
    ``utils.image.load_image`` applies for prediction), as graph ops: orientations 5–8
    transpose the image, then 2, 3, 6, 7 mirror it left-right and 3, 4, 7, 8
    upside down.

    Args:
        image: (H, W, C) tensor, pixels as stored in the file.
        orientation: int32 scalar tensor, the EXIF orientation 1–8 (others: as stored).

    Returns:
        (H', W', C) tensor; H' and W' swapped for orientations 5–8.
    """
    o = tf.cast(orientation, tf.int32)
    valid = (o >= 1) & (o <= 8)
    image = tf.cond(valid & (o >= 5), lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    mirror = valid & ((o == 2) | (o == 3) | (o == 6) | (o == 7))
    upside_down = valid & ((o == 3) | (o == 4) | (o == 7) | (o == 8))
    image = tf.cond(mirror, lambda: tf.reverse(image, [1]), lambda: image)
    return tf.cond(upside_down, lambda: tf.reverse(image, [0]), lambda: image)


def _fold(seed_pair, k):
    return tf.random.experimental.stateless_fold_in(seed_pair, k)


def _training_sampler(load, n, size, mosaic, mixup, jitter, scale_range):
    """A graph function ``sample(index, random_value) -> (image, boxes, classes)``
    that makes one augmented training sample: plain, Mosaic or MixUp as the
    module docstring describes, every draw seeded by (random_value, index)."""

    def plain_sample(index, sample_seed):
        image, boxes, classes = augment.random_place(
            *load(index), size, _fold(sample_seed, 0), jitter=jitter, scale_range=scale_range
        )
        return augment.random_hsv(image, _fold(sample_seed, 1)), boxes, classes

    def mosaic_sample(index, sample_seed):
        others = tf.random.stateless_uniform([3], _fold(sample_seed, 2), 0, n, dtype=tf.int64)
        # The sample's own image goes to a random quadrant, like the three others.
        order = tf.argsort(tf.random.stateless_uniform([4], _fold(sample_seed, 8)))
        chosen = tf.gather(tf.concat([index[None], others], axis=0), order)
        parts = [load(chosen[k]) for k in range(4)]
        image, boxes, classes = augment.mosaic(
            [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], size, _fold(sample_seed, 3)
        )
        return augment.random_hsv(image, _fold(sample_seed, 4)), boxes, classes

    def sample(index, random_value):
        sample_seed = tf.stack([random_value, index])
        draws = tf.random.stateless_uniform([2], _fold(sample_seed, 5))
        if mosaic:
            mixable = draws[0] < MOSAIC_PROB  # MixUp goes on mosaic samples only
            result = tf.cond(
                mixable,
                lambda: mosaic_sample(index, sample_seed),
                lambda: plain_sample(index, sample_seed),
            )
        else:
            mixable = tf.constant(True)
            result = plain_sample(index, sample_seed)
        if mixup:
            partner = tf.random.stateless_uniform([], _fold(sample_seed, 6), 0, n, dtype=tf.int64)
            result = tf.cond(
                tf.logical_and(mixable, draws[1] < MIXUP_PROB),
                lambda: augment.mixup(result, plain_sample(partner, _fold(sample_seed, 7))),
                lambda: result,
            )
        return result

    return sample
