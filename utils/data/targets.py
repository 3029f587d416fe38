"""Training targets: assigning ground-truth boxes to anchors, levels and cells.

Two assigners (``utils.config.ASSIGNERS``):

* ``yolov3``: every box goes to the single anchor (of the nine) whose shape IoU with
  the box, both centred at the origin, is highest. The anchor fixes the level
  (``ANCHOR_MASK``); the box lands in that level's grid cell containing its centre.
* ``yolov5``: every box goes to every anchor, at every level, whose width and height
  are both within a factor ``anchor_t`` of the box's (and always to its best anchor
  by shape IoU, so that no box is left without a target). At each of those anchors
  it lands in the cell of its centre and in the two neighbouring cells nearest the
  centre: the left one when the centre is in the left half of its cell, else the
  right one, and the upper one when it is in the upper half, else the lower one.
  Neighbours outside the grid are left out. The heads then decode with the yolov5
  box coding (``utils.decode.decode_head``), whose centre reaches half a cell beyond
  its own cell.

The target vector of an assigned cell and anchor is ``[cx, cy, w, h, 1, one-hot
class]`` with the box relative to the network input (0–1); every other entry is zero.
When several boxes land on the same level, cell and anchor, one entry can hold only
one of them: a box in its own cell wins over a box assigned there as a neighbour,
and among equals the later box in the list wins (the others stay in ``gt_boxes``).

The functions here are TensorFlow ops without Python loops over boxes, so they run
inside a ``tf.data`` map function.
"""

import numpy as np
import tensorflow as tf

from utils.boxes import shape_iou
from utils.config import (
    ANCHOR_MASK,
    ANCHOR_T,
    ASSIGNERS,
    INPUT_MULTIPLE,
    MAX_GT_BOXES,
    NUM_ANCHORS_PER_LEVEL,
    STRIDES,
)


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


def check_assigner(assigner):
    """Returns ``assigner`` if it is one of ``ASSIGNERS``; ValueError otherwise."""
    if assigner not in ASSIGNERS:
        raise ValueError(f"assigner must be one of {', '.join(ASSIGNERS)}, got {assigner!r}")
    return assigner


def anchor_matches(wh, anchors, assigner="yolov3", anchor_t=ANCHOR_T):
    """Which of the nine anchors each box is assigned to.

    Args:
        wh: (N, 2) float32 box width, height in input pixels.
        anchors: (9, 2) float32 anchor width, height in input pixels.
        assigner: "yolov3" (the best anchor by shape IoU) or "yolov5" (every anchor
            within ``anchor_t`` in width and height, and the best one).
        anchor_t: largest width or height ratio, either way, of a yolov5 match.

    Returns:
        bool tensor (N, 9).
    """
    anchors = tf.constant(anchors)
    best = tf.argmax(shape_iou(wh[:, None, :], anchors[None, :, :]), axis=-1, output_type=tf.int32)
    match = tf.one_hot(best, len(ANCHOR_MASK) * NUM_ANCHORS_PER_LEVEL, on_value=True, off_value=False)
    if assigner == "yolov5":
        ratio = wh[:, None, :] / anchors[None, :, :]
        worst = tf.reduce_max(tf.maximum(ratio, 1.0 / tf.maximum(ratio, 1e-9)), axis=-1)
        match = tf.logical_or(match, worst < anchor_t)
    return match


def _cell_offsets(grid_xy, centre, assigner):
    """(column, row) offsets of the cells a box is assigned to at one level.

    Args:
        grid_xy: (N, 2) box centres in cells of this level.
        centre: (N, 2) int32 column, row of the centre's cell, clipped into the grid.
            A centre beyond the border counts as on it, so its neighbours on that
            side (outside the grid) are the nearest ones.
        assigner: "yolov3" (the centre's cell only) or "yolov5" (and its two nearest
            neighbours).

    Returns:
        list of (N, 2) int32 offsets from the centre's cell, the centre's own first.
    """
    n = tf.shape(grid_xy)[0]
    offsets = [tf.zeros((n, 2), tf.int32)]
    if assigner == "yolov5":
        corner = tf.cast(centre, grid_xy.dtype)
        frac = tf.clip_by_value(grid_xy, corner, corner + 1.0) - corner
        step = tf.where(frac < 0.5, -1, 1)  # towards the nearer neighbour
        zeros = tf.zeros((n,), tf.int32)
        offsets.append(tf.stack([step[:, 0], zeros], axis=-1))
        offsets.append(tf.stack([zeros, step[:, 1]], axis=-1))
    return offsets


def encode_targets(boxes, classes, anchors, input_size, num_classes, assigner="yolov3", anchor_t=ANCHOR_T):
    """Builds the per-level target tensors of one image.

    See the module docstring for the assigners and for boxes that collide on one
    level, cell and anchor.

    Args:
        boxes: (N, 4) xyxy pixels of the network input (float). Boxes with width or
            height <= 0 are skipped.
        classes: (N,) int class ids in [0, num_classes).
        anchors: (9, 2) anchor width, height in input pixels, sorted by area.
        input_size: S, the square input side in pixels (a multiple of 32).
        num_classes: C.
        assigner: "yolov3" or "yolov5".
        anchor_t: largest width or height ratio between a box and a yolov5 anchor.

    Returns:
        tuple of three float32 tensors in ``STRIDES`` order (32, 16, 8), each
        (S/stride, S/stride, 3, 5 + C): [cx, cy, w, h] rel, objectness, one-hot class.
    """
    anchors = check_anchors(anchors)
    check_assigner(assigner)
    sizes = grid_sizes(input_size)
    size_f = float(input_size)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), (-1, 4))
    classes = tf.reshape(tf.cast(classes, tf.int32), (-1,))
    n = tf.shape(boxes)[0]

    xy = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    valid = tf.logical_and(wh[:, 0] > 0.0, wh[:, 1] > 0.0)
    match = tf.logical_and(anchor_matches(wh, anchors, assigner, anchor_t), valid[:, None])

    rel = tf.concat([xy, wh], axis=-1) / size_f
    values = tf.concat(
        [rel, tf.ones_like(rel[:, :1]), tf.one_hot(classes, num_classes, dtype=tf.float32)], axis=-1
    )

    # Every candidate (box, level, slot, cell) with a flat key per (level, row, col,
    # slot) and a priority: a box's own cell first, then the later box.
    keys, priorities, boxes_of, cells, levels = [], [], [], [], []
    offset = 0
    for level, grid in enumerate(sizes):
        grid_xy = xy / float(STRIDES[level])
        centre = tf.clip_by_value(tf.cast(tf.floor(grid_xy), tf.int32), 0, grid - 1)
        for rank, shift in enumerate(_cell_offsets(grid_xy, centre, assigner)):
            cell = centre + shift
            inside = tf.reduce_all(tf.logical_and(cell >= 0, cell < grid), axis=-1)
            priority = tf.range(n) + (n if rank == 0 else 0)
            for slot, anchor in enumerate(ANCHOR_MASK[level]):
                keep = tf.logical_and(match[:, anchor], inside)
                key = offset + (cell[:, 1] * grid + cell[:, 0]) * NUM_ANCHORS_PER_LEVEL + slot
                keys.append(tf.boolean_mask(key, keep))
                priorities.append(tf.boolean_mask(priority, keep))
                boxes_of.append(tf.boolean_mask(tf.range(n), keep))
                rows_cols = tf.stack([cell[:, 1], cell[:, 0], tf.fill([n], slot)], axis=-1)
                cells.append(tf.boolean_mask(rows_cols, keep))
                levels.append(tf.fill(tf.shape(keys[-1]), level))
        offset += grid * grid * NUM_ANCHORS_PER_LEVEL
    key = tf.concat(keys, axis=0)
    priority = tf.concat(priorities, axis=0)
    best = tf.math.unsorted_segment_max(priority, key, num_segments=offset)
    winner = tf.equal(priority, tf.gather(best, key))
    box_of = tf.boolean_mask(tf.concat(boxes_of, axis=0), winner)
    cell = tf.boolean_mask(tf.concat(cells, axis=0), winner)
    level_of = tf.boolean_mask(tf.concat(levels, axis=0), winner)
    update = tf.gather(values, box_of)

    outputs = []
    for level, grid in enumerate(sizes):
        # One winner per entry, so scatter_nd's sum is that winner's vector.
        here = tf.equal(level_of, level)
        outputs.append(
            tf.scatter_nd(
                tf.boolean_mask(cell, here),
                tf.boolean_mask(update, here),
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


def build_targets(boxes, classes, anchors, input_size, num_classes, max_boxes=MAX_GT_BOXES, assigner="yolov3",
                  anchor_t=ANCHOR_T):
    """All training targets of one image, in the order the loss expects.

    Args:
        boxes: (N, 4) xyxy pixels of the network input.
        classes: (N,) int class ids.
        anchors: (9, 2) anchor width, height in input pixels, sorted by area.
        input_size: S, the square input side in pixels.
        num_classes: C.
        max_boxes: length of the ``gt_boxes`` list.
        assigner, anchor_t: see ``encode_targets``.

    Returns:
        (y_true_32, y_true_16, y_true_8, gt_boxes): three float32
        (S/stride, S/stride, 3, 5 + C) tensors (see ``encode_targets``) and float32
        (max_boxes, 4) xywh rel (see ``pad_gt_boxes``).
    """
    y_true = encode_targets(boxes, classes, anchors, input_size, num_classes, assigner, anchor_t)
    return (*y_true, pad_gt_boxes(boxes, input_size, max_boxes))
