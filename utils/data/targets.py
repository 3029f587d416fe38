"""Training targets: assigning ground-truth boxes to anchors, levels and cells.

Every box goes to the single anchor (of the nine) whose shape IoU with the box, both
centred at the origin, is highest. The anchor fixes the level (``ANCHOR_MASK``); the
box lands in that level's grid cell containing its centre. The target vector of that
cell and anchor is ``[cx, cy, w, h, 1, one-hot class]`` with the box relative to the
network input (0–1); every other entry is zero.

The functions here are TensorFlow ops without Python loops over boxes, so they run
inside a ``tf.data`` map function.
"""

import numpy as np
import tensorflow as tf

from utils.boxes import shape_iou
from utils.config import ANCHOR_MASK, INPUT_MULTIPLE, MAX_GT_BOXES, NUM_ANCHORS_PER_LEVEL, STRIDES


def check_anchors(anchors):
    """Validates anchors and returns them as a float32 array.

    Args:
        anchors: (9, 2) anchor width, height in input pixels, sorted by area (as
            ``utils.model_data.load_anchors`` returns them).

    Returns:
        float32 array (9, 2).

    Raises:
        ValueError: wrong shape or non-positive sizes.
    """
    anchors = np.asarray(anchors, dtype=np.float32)
    needed = sum(len(m) for m in ANCHOR_MASK)
    if anchors.shape != (needed, 2):
        raise ValueError(
            f"anchors must have shape ({needed}, 2) (width, height in input pixels), got {anchors.shape}; "
            "load them with utils.model_data.load_anchors."
        )
    if np.any(anchors <= 0):
        raise ValueError(f"anchor sizes must be positive, got {anchors.tolist()}")
    return anchors


def grid_sizes(input_size):
    """Grid side of each level, in ``STRIDES`` order.

    Args:
        input_size: S, the square network input side in pixels (a multiple of 32).

    Returns:
        tuple of ints, e.g. (13, 26, 52) for 416.

    Raises:
        ValueError: ``input_size`` is not a positive multiple of ``INPUT_MULTIPLE``.
    """
    if int(input_size) != input_size or input_size <= 0 or input_size % INPUT_MULTIPLE:
        raise ValueError(
            f"input size must be a positive multiple of {INPUT_MULTIPLE}, got {input_size!r}; "
            f"use e.g. {max(INPUT_MULTIPLE, int(round(float(input_size) / INPUT_MULTIPLE)) * INPUT_MULTIPLE)}."
        )
    return tuple(int(input_size) // s for s in STRIDES)


def encode_targets(boxes, classes, anchors, input_size, num_classes):
    """Builds the per-level target tensors of one image.

    When two boxes land on the same level, cell and anchor, the later box in the list
    wins (the earlier one is left out of the targets but stays in ``gt_boxes``).

    Args:
        boxes: (N, 4) xyxy pixels of the network input (float). Boxes with width or
            height <= 0 are skipped.
        classes: (N,) int class ids in [0, num_classes).
        anchors: (9, 2) anchor width, height in input pixels, sorted by area.
        input_size: S, the square input side in pixels (a multiple of 32).
        num_classes: C.

    Returns:
        tuple of three float32 tensors in ``STRIDES`` order (32, 16, 8), each
        (S/stride, S/stride, 3, 5 + C): [cx, cy, w, h] rel, objectness, one-hot class.
    """
    anchors = check_anchors(anchors)
    sizes = grid_sizes(input_size)
    size_f = float(input_size)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), (-1, 4))
    classes = tf.reshape(tf.cast(classes, tf.int32), (-1,))

    xy = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    valid = tf.logical_and(wh[:, 0] > 0.0, wh[:, 1] > 0.0)

    best = tf.argmax(shape_iou(wh[:, None, :], tf.constant(anchors)[None, :, :]), axis=-1, output_type=tf.int32)
    # Level and slot (anchor index within the level) of each of the nine anchors.
    level_of = np.zeros(len(anchors), np.int32)
    slot_of = np.zeros(len(anchors), np.int32)
    for level, mask in enumerate(ANCHOR_MASK):
        for slot, a in enumerate(mask):
            level_of[a], slot_of[a] = level, slot
    box_level = tf.gather(tf.constant(level_of), best)
    box_slot = tf.gather(tf.constant(slot_of), best)

    rel = tf.concat([xy, wh], axis=-1) / size_f
    values = tf.concat(
        [rel, tf.ones_like(rel[:, :1]), tf.one_hot(classes, num_classes, dtype=tf.float32)], axis=-1
    )

    # A flat key per (level, row, col, slot) to find boxes that collide on one entry.
    keys, cells = [], []
    offset = 0
    for level, grid in enumerate(sizes):
        stride = float(STRIDES[level])
        col = tf.clip_by_value(tf.cast(tf.floor(xy[:, 0] / stride), tf.int32), 0, grid - 1)
        row = tf.clip_by_value(tf.cast(tf.floor(xy[:, 1] / stride), tf.int32), 0, grid - 1)
        cells.append(tf.stack([row, col, box_slot], axis=-1))
        keys.append(offset + (row * grid + col) * NUM_ANCHORS_PER_LEVEL + box_slot)
        offset += grid * grid * NUM_ANCHORS_PER_LEVEL
    key = tf.gather(tf.stack(keys, axis=1), box_level, batch_dims=1)
    key = tf.where(valid, key, -1 - tf.range(tf.shape(key)[0]))  # invalid boxes never collide
    n = tf.shape(key)[0]
    later = tf.range(n)[None, :] > tf.range(n)[:, None]
    overwritten = tf.reduce_any(tf.logical_and(later, tf.equal(key[:, None], key[None, :])), axis=1)
    winner = tf.logical_and(valid, tf.logical_not(overwritten))

    outputs = []
    for level, grid in enumerate(sizes):
        # scatter_nd sums duplicates: boxes of other levels add zeros, and at most one
        # winner remains per entry, so the sum is that winner's vector.
        take = tf.cast(tf.logical_and(winner, tf.equal(box_level, level)), tf.float32)
        outputs.append(
            tf.scatter_nd(
                cells[level],
                values * take[:, None],
                shape=(grid, grid, NUM_ANCHORS_PER_LEVEL, 5 + num_classes),
            )
        )
    return tuple(outputs)


def pad_gt_boxes(boxes, input_size, max_boxes=MAX_GT_BOXES):
    """Lists an image's boxes as a fixed-length, zero-padded xywh rel tensor.

    Boxes with width or height <= 0 are left out. When more than ``max_boxes`` remain,
    the first ``max_boxes`` are kept (the caller is responsible for warning).

    Args:
        boxes: (N, 4) xyxy pixels of the network input.
        input_size: S, the square input side in pixels.
        max_boxes: length of the output list.

    Returns:
        float32 (max_boxes, 4) xywh rel (0–1 of the input), zero rows after the boxes.
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), (-1, 4))
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    boxes = tf.boolean_mask(boxes, tf.logical_and(wh[:, 0] > 0.0, wh[:, 1] > 0.0))[:max_boxes]
    xywh = tf.concat([(boxes[:, 0:2] + boxes[:, 2:4]) / 2.0, boxes[:, 2:4] - boxes[:, 0:2]], axis=-1)
    xywh = xywh / float(input_size)
    padded = tf.pad(xywh, [[0, max_boxes - tf.shape(xywh)[0]], [0, 0]])
    return tf.ensure_shape(padded, (max_boxes, 4))


def build_targets(boxes, classes, anchors, input_size, num_classes, max_boxes=MAX_GT_BOXES):
    """All training targets of one image, in the order the loss expects.

    Args:
        boxes: (N, 4) xyxy pixels of the network input.
        classes: (N,) int class ids.
        anchors: (9, 2) anchor width, height in input pixels, sorted by area.
        input_size: S, the square input side in pixels.
        num_classes: C.
        max_boxes: length of the ``gt_boxes`` list.

    Returns:
        (y_true_32, y_true_16, y_true_8, gt_boxes): three float32
        (S/stride, S/stride, 3, 5 + C) tensors (see ``encode_targets``) and float32
        (max_boxes, 4) xywh rel (see ``pad_gt_boxes``).
    """
    y_true = encode_targets(boxes, classes, anchors, input_size, num_classes)
    return (*y_true, pad_gt_boxes(boxes, input_size, max_boxes))
