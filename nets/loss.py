"""The YOLO training loss: CIoU box term, objectness (with an ignore mask for the
yolov3 assigner), class BCE.

Head outputs and targets come in ``STRIDES`` order (32, 16, 8). Every quantity is
computed in float32, whatever the dtype of the raw head outputs, and the result is a
per-batch value (positives and counted cells are pooled over the whole batch), so it
does not grow with the batch size.
"""

import numpy as np
import tensorflow as tf
from keras import ops

from utils.boxes import box_ciou_xywh, box_iou_xywh
from utils.config import (
    ANCHOR_MASK,
    ASSIGNERS,
    BOX_RATIO,
    CLS_NORMS,
    CLS_RATIO,
    IGNORE_THRESHOLD,
    LEVEL_BALANCE,
    OBJ_RATIO,
    STRIDES,
)
from utils.decode import decode_head

# The objectness weight is tuned for this input area and scaled with the real one.
_REFERENCE_AREA = 416.0 * 416.0
# The class weight is tuned for this many classes and scaled with the real count.
_REFERENCE_NUM_CLASSES = 80.0


def _input_hw(input_size):
    """Normalises an int or (height, width) into a (height, width) tuple of ints."""
    if isinstance(input_size, (int, np.integer)):
        hw = (int(input_size), int(input_size))
    else:
        try:
            hw = tuple(int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(
                f"input_size must be an int or (height, width), got {input_size!r}."
            ) from None
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(
            f"input_size must be a positive int or (height, width), got {input_size!r}."
        )
    return hw


class YoloLoss:
    """YOLOv3 loss over the three detection levels.

    Per level ``l`` with ``P`` = number of positive cells in the whole batch, over
    every device and worker (at least 1):

    * box: ``sum_pos(1 - CIoU(decoded, target)) * box_ratio / P``;
    * obj: binary cross-entropy on logits, averaged over the counted cells
      (positives and counted negatives, at least 1),
      ``* balance[l] * obj_ratio * (H * W) / 416**2``. With the yolov3 assigner a
      negative cell is not counted when its decoded box has IoU above
      ``ignore_threshold`` with any ground-truth box of its image; the yolov5
      assigner counts every cell (as YOLOv5 does: its neighbour cells already make
      the near misses positives). The objectness target of a positive is 1, or with
      ``obj_iou_target`` the CIoU of its decoded box with its target, detached from
      the gradient and clamped at 0 (YOLOv5's), so that scores rank boxes by quality;
    * cls: binary cross-entropy on logits over positives, summed, ``/ P`` and
      with ``cls_norm`` "reference" ``* cls_ratio * C / 80 / C`` (the reference
      design's and YOLOv5's: the gain was tuned at 80 classes, and with fewer classes
      the whole class term shrinks with C), "mean" ``* cls_ratio / C`` (the mean over
      the classes at the gain as tuned, whatever C) or "sum" ``* cls_ratio`` (summed
      over the classes, as Ultralytics' YOLOv8). With label smoothing ``ls`` the class targets
      are ``y * (1 - ls) + ls / C``: the smoothing mass is spread over the ``C``
      classes, so the positive class gets ``1 - ls + ls / C`` and every other class
      ``ls / C``.

    Args:
        anchors: (9, 2) anchor width, height in input pixels, sorted by area.
        num_classes: C, the number of classes.
        input_size: network input side in pixels, an int or (height, width).
        label_smoothing: ``ls`` in [0, 1).
        ignore_threshold: IoU above which a negative's objectness is not penalised.
        balance: objectness weight of each level, in ``STRIDES`` order.
        box_ratio: weight of the box term.
        obj_ratio: weight of the objectness term at a 416x416 input.
        cls_ratio: weight of the class term (at 80 classes with ``cls_norm`` "reference").
        cls_norm: one of ``CLS_NORMS``, how the class term is normalised (above).
        batch_scale: multiply the loss (total and components) by the global batch size,
            as YOLOv5/v8 do, so that SGD steps grow with the batch; the reference
            loss is not scaled.
        assigner: the assigner the targets were built with, "yolov3" or "yolov5"
            (``utils.data.targets``); it fixes the box coding the heads are decoded
            with and whether negatives are ignored.
        obj_iou_target: use the detached CIoU as the positives' objectness target.

    Call:
        ``loss(y_true, y_pred) -> (total, components)``.

        y_true: ``(y_true_32, y_true_16, y_true_8, gt_boxes)``. ``y_true_l`` is
            (B, H/stride, W/stride, 3, 5+C): xywh rel target box, 1 on positives,
            one-hot class. ``gt_boxes`` is (B, M, 4) xywh rel, every
            box of each image, zero rows (w = h = 0) as padding.
        y_pred: the three raw head outputs in ``STRIDES`` order, each
            (B, H/stride, W/stride, 3*(5+C)), any float dtype.

        total: scalar float32, the sum of the three components.
        components: ``{"box", "obj", "cls"}`` scalar float32 tensors, each summed
            over the levels.
    """

    def __init__(
        self,
        anchors,
        num_classes,
        input_size,
        label_smoothing=0.0,
        ignore_threshold=IGNORE_THRESHOLD,
        balance=LEVEL_BALANCE,
        box_ratio=BOX_RATIO,
        obj_ratio=OBJ_RATIO,
        cls_ratio=CLS_RATIO,
        batch_scale=False,
        assigner="yolov3",
        obj_iou_target=False,
        cls_norm="reference",
    ):
        anchors = np.asarray(anchors, dtype="float32")
        num_anchors = sum(len(mask) for mask in ANCHOR_MASK)
        if anchors.shape != (num_anchors, 2):
            raise ValueError(
                f"anchors must have shape ({num_anchors}, 2) (width, height in pixels), "
                f"got shape {anchors.shape}."
            )
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        if len(balance) != len(STRIDES):
            raise ValueError(
                f"balance needs one weight per level {STRIDES}, got {balance!r}."
            )
        if cls_norm not in CLS_NORMS:
            raise ValueError(f"cls_norm must be one of {', '.join(CLS_NORMS)}, got {cls_norm!r}.")
        if assigner not in ASSIGNERS:
            raise ValueError(f"assigner must be one of {', '.join(ASSIGNERS)}, got {assigner!r}.")
        self.anchors = anchors
        self.assigner = assigner
        self.obj_iou_target = bool(obj_iou_target)
        self.num_classes = int(num_classes)
        self.input_hw = _input_hw(input_size)
        self.label_smoothing = float(label_smoothing)
        self.ignore_threshold = float(ignore_threshold)
        self.balance = tuple(float(b) for b in balance)
        self.box_ratio = float(box_ratio)
        self.obj_ratio = float(obj_ratio)
        self.cls_ratio = float(cls_ratio)
        self.cls_norm = cls_norm
        self.batch_scale = bool(batch_scale)

    def __call__(self, y_true, y_pred):
        """Computes the loss; see the class docstring for arguments and returns."""
        if len(y_true) != len(STRIDES) + 1:
            raise ValueError(
                f"y_true must be (y_true_32, y_true_16, y_true_8, gt_boxes), "
                f"got {len(y_true)} items."
            )
        if len(y_pred) != len(STRIDES):
            raise ValueError(
                f"y_pred must hold one raw head output per stride {STRIDES}, "
                f"got {len(y_pred)} items."
            )
        gt_boxes = ops.cast(y_true[-1], "float32")
        sums, counts = [], []
        for level in range(len(STRIDES)):
            level_sums, level_counts = self._level_sums(level, y_true[level], y_pred[level], gt_boxes)
            sums.append(level_sums)
            counts.extend(level_counts)
        # The counts are those of the whole batch, over every replica: each replica
        # returns its own sums divided by them, times the number of replicas, so the
        # replicas' mean (what YoloV3.compute_loss and the summed gradients give) is
        # the loss of the batch on one device, however it is split.
        counts, replicas = _summed_over_replicas(ops.stack(counts))
        counts = ops.maximum(counts, 1.0) / float(replicas)
        box_loss = obj_loss = cls_loss = ops.zeros((), "float32")
        for level, (box_sum, obj_sum, cls_sum) in enumerate(sums):
            num_pos, num_counted = counts[2 * level], counts[2 * level + 1]
            box_loss = box_loss + box_sum * self.box_ratio / num_pos
            obj_loss = obj_loss + obj_sum * self._obj_scale(level) / num_counted
            cls_loss = cls_loss + cls_sum * self._cls_scale() / num_pos
        if self.batch_scale:
            # The global batch: with several devices each one sees its share of it.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            batch = ops.cast(ops.shape(gt_boxes)[0] * replicas, "float32")
            box_loss, obj_loss, cls_loss = box_loss * batch, obj_loss * batch, cls_loss * batch
        total = box_loss + obj_loss + cls_loss
        return total, {"box": box_loss, "obj": obj_loss, "cls": cls_loss}

    def _obj_scale(self, level):
        area = float(self.input_hw[0] * self.input_hw[1])
        return self.balance[level] * self.obj_ratio * area / _REFERENCE_AREA

    def _cls_scale(self):
        if self.cls_norm == "sum":
            return self.cls_ratio
        if self.cls_norm == "mean":
            return self.cls_ratio / self.num_classes
        # The reference's cls_ratio * C / 80, then the mean over the C classes.
        return self.cls_ratio * self.num_classes / _REFERENCE_NUM_CLASSES / self.num_classes

    def _level_sums(self, level, y_true, raw, gt_boxes):
        """Unnormalised box, objectness and class terms of one level, and its counts.

        Args:
            level: index into ``STRIDES``.
            y_true: (B, Gh, Gw, 3, 5+C) targets.
            raw: (B, Gh, Gw, 3*(5+C)) raw head output.
            gt_boxes: (B, M, 4) xywh rel float32 ground truth, zero-padded.

        Returns:
            ``((box_sum, obj_sum, cls_sum), (positives, counted_cells))``: scalar
            float32 tensors; the counts carry no gradient.
        """
        y_true = ops.cast(y_true, "float32")
        anchors = self.anchors[list(ANCHOR_MASK[level])]
        # The yolov5 assigner trains the yolov5 box coding (see utils.decode).
        boxes, obj_logits, cls_logits = decode_head(
            ops.cast(raw, "float32"), anchors, self.num_classes, self.input_hw, self.assigner
        )
        target_boxes = y_true[..., 0:4]
        positive = y_true[..., 4:5]
        cls_target = y_true[..., 5:]

        ciou = box_ciou_xywh(boxes, target_boxes)
        box_sum = ops.sum(positive[..., 0] * (1.0 - ciou))

        if self.obj_iou_target:
            quality = ops.stop_gradient(ops.maximum(ciou, 0.0))[..., None]
            obj_target = positive * quality
        else:
            obj_target = positive
        obj_bce = ops.binary_crossentropy(obj_target, obj_logits, from_logits=True)
        if self.assigner == "yolov5":
            counted_neg = 1.0 - positive
        else:
            counted_neg = (1.0 - positive) * self._not_ignored(boxes, gt_boxes)
        obj_sum = ops.sum(obj_bce * (positive + counted_neg))

        ls = self.label_smoothing
        smoothed = cls_target * (1.0 - ls) + ls / self.num_classes
        cls_bce = ops.binary_crossentropy(smoothed, cls_logits, from_logits=True)
        cls_sum = ops.sum(cls_bce * positive)

        pos_count = ops.stop_gradient(ops.sum(positive))
        # A true mean over the counted cells (not `positives + ...`), so that a level
        # without positives does not depend on the batch size.
        counted = ops.stop_gradient(pos_count + ops.sum(counted_neg))
        return (box_sum, obj_sum, cls_sum), (pos_count, counted)

    def _not_ignored(self, boxes, gt_boxes):
        """1 where a prediction's best IoU with its image's ground truth is small enough.

        Args:
            boxes: (B, Gh, Gw, 3, 4) decoded xywh rel predictions.
            gt_boxes: (B, M, 4) xywh rel ground truth, zero-padded.

        Returns:
            (B, Gh, Gw, 3, 1) float32 mask, without gradient.
        """
        boxes = ops.stop_gradient(boxes)
        # (B, Gh, Gw, 3, 1, 4) against (B, 1, 1, 1, M, 4): every box with every gt box.
        iou = box_iou_xywh(
            ops.expand_dims(boxes, -2),
            gt_boxes[:, None, None, None, :, :],
        )
        # Padding rows have zero area and IoU 0; `initial` also covers M = 0.
        best_iou = ops.max(iou, axis=-1, keepdims=True, initial=0.0)
        return ops.stop_gradient(
            ops.cast(best_iou <= self.ignore_threshold, "float32")
        )


def _summed_over_replicas(values):
    """``values`` summed over the replicas of a distributed step, and their number.

    Outside a distributed step (one device, or a cross-replica context such as a
    model build) the values are returned as they are, with 1.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values, 1
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values), context.num_replicas_in_sync
