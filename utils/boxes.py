"""Box helpers with named formats.

Formats used across the project:
    xyxy: (x1, y1, x2, y2) corners.
    xywh: (cx, cy, w, h) centre and size.
Units are given per function: "pixels" of an image, or "rel" (0–1, relative to the
network input). The tensor functions use ``keras.ops`` and accept NumPy arrays or
tensors; the ``np_`` functions are their NumPy twins for code outside a graph (metrics,
checks, data tools), in float64. All broadcast over leading dimensions.
"""

import math

import numpy as np

_EPS = 1e-7


def _ops():
    """keras.ops, imported when a tensor function first runs: the NumPy functions
    below serve tools (metrics, data checks) that should not pay for loading Keras."""
    from keras import ops

    return ops


def xywh_to_xyxy(boxes):
    """(..., 4) xywh -> (..., 4) xyxy, same units."""
    ops = _ops()
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    return ops.concatenate([xy - wh / 2.0, xy + wh / 2.0], axis=-1)


def box_iou_xywh(a, b):
    """IoU of boxes that broadcast against each other.

    Args:
        a: (..., 4) xywh.
        b: (..., 4) xywh, broadcastable with ``a``.

    Returns:
        (...) IoU in [0, 1]; 0 where both boxes are empty.
    """
    ops = _ops()
    a_min, a_max = a[..., :2] - a[..., 2:4] / 2.0, a[..., :2] + a[..., 2:4] / 2.0
    b_min, b_max = b[..., :2] - b[..., 2:4] / 2.0, b[..., :2] + b[..., 2:4] / 2.0
    inter_wh = ops.maximum(ops.minimum(a_max, b_max) - ops.maximum(a_min, b_min), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / ops.maximum(union, _EPS)


def box_ciou_xywh(a, b):
    """Complete IoU (IoU − centre-distance term − aspect-ratio term).

    Args:
        a: (..., 4) xywh predicted boxes.
        b: (..., 4) xywh target boxes, broadcastable with ``a``.

    Returns:
        (...) CIoU in [-1, 1]. Finite for zero-size boxes.
    """
    ops = _ops()
    iou = box_iou_xywh(a, b)
    a_min, a_max = a[..., :2] - a[..., 2:4] / 2.0, a[..., :2] + a[..., 2:4] / 2.0
    b_min, b_max = b[..., :2] - b[..., 2:4] / 2.0, b[..., :2] + b[..., 2:4] / 2.0
    centre_dist = ops.sum(ops.square(a[..., :2] - b[..., :2]), axis=-1)
    enclose_wh = ops.maximum(ops.maximum(a_max, b_max) - ops.minimum(a_min, b_min), 0.0)
    enclose_diag = ops.sum(ops.square(enclose_wh), axis=-1)
    aw, ah = a[..., 2], a[..., 3]
    bw, bh = b[..., 2], b[..., 3]
    v = (4.0 / math.pi**2) * ops.square(
        ops.arctan(bw / ops.maximum(bh, _EPS)) - ops.arctan(aw / ops.maximum(ah, _EPS))
    )
    alpha = ops.stop_gradient(v / ops.maximum(1.0 - iou + v, _EPS))
    return iou - centre_dist / ops.maximum(enclose_diag, _EPS) - alpha * v


def shape_iou(wh_a, wh_b):
    """IoU of box shapes both centred at the origin.

    Args:
        wh_a: (..., 2) widths and heights.
        wh_b: (..., 2) widths and heights, broadcastable with ``wh_a``.

    Returns:
        (...) IoU.
    """
    ops = _ops()
    inter = ops.minimum(wh_a[..., 0], wh_b[..., 0]) * ops.minimum(wh_a[..., 1], wh_b[..., 1])
    union = wh_a[..., 0] * wh_a[..., 1] + wh_b[..., 0] * wh_b[..., 1] - inter
    return inter / ops.maximum(union, _EPS)




def np_intersection(a, b, inclusive=False):
    """Intersection areas of xyxy boxes in NumPy, broadcasting ``a`` against ``b``.

    Args:
        a, b: (..., 4) xyxy, broadcastable.
        inclusive: the VOC devkit's inclusive-pixel convention (width = x2 - x1 + 1).

    Returns:
        float64 (...) areas; 0 where the boxes do not overlap.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    one = 1.0 if inclusive else 0.0
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + one
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + one
    return np.maximum(iw, 0.0) * np.maximum(ih, 0.0)


def np_iou(a, b, inclusive=False):
    """IoU of xyxy boxes in NumPy, broadcasting ``a`` against ``b``.

    Args:
        a: (..., 4) xyxy.
        b: (..., 4) xyxy, broadcastable with ``a``; e.g. ``a[:, None]`` against
            ``b[None]`` for every pair.
        inclusive: the VOC devkit's inclusive-pixel convention (width = x2 - x1 + 1).

    Returns:
        float64 (...) IoU; 0 where the boxes do not overlap or both are empty.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    one = 1.0 if inclusive else 0.0
    inter = np_intersection(a, b, inclusive)
    area_a = np.maximum(a[..., 2] - a[..., 0] + one, 0.0) * np.maximum(a[..., 3] - a[..., 1] + one, 0.0)
    area_b = np.maximum(b[..., 2] - b[..., 0] + one, 0.0) * np.maximum(b[..., 3] - b[..., 1] + one, 0.0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def np_shape_iou(wh_a, wh_b):
    """IoU of box shapes both centred at the origin, in NumPy (float64).

    Args:
        wh_a: (..., 2) widths and heights.
        wh_b: (..., 2) widths and heights, broadcastable with ``wh_a``.

    Returns:
        float64 (...) IoU; 0 where both shapes are empty.
    """
    wh_a = np.asarray(wh_a, np.float64)
    wh_b = np.asarray(wh_b, np.float64)
    inter = np.minimum(wh_a[..., 0], wh_b[..., 0]) * np.minimum(wh_a[..., 1], wh_b[..., 1])
    union = wh_a[..., 0] * wh_a[..., 1] + wh_b[..., 0] * wh_b[..., 1] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
