"""Decoding raw YOLO head outputs: grid offsets, anchors, scores, letterbox
correction and class-wise NMS, as serializable Keras layers.
"""

import keras
import tensorflow as tf
from keras import ops

from utils.boxes import xywh_to_xyxy
from utils.config import ANCHOR_MASK, BOX_CODINGS, DEFAULT_BOX_CODING, DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU


def split_head(raw, num_classes):
    """Reshapes a raw head output into per-anchor predictions.

    Args:
        raw: (B, Gh, Gw, A*(5+C)) raw head output.
        num_classes: C.

    Returns:
        (B, Gh, Gw, A, 5+C) tensor.
    """
    shape = ops.shape(raw)
    return ops.reshape(raw, (shape[0], shape[1], shape[2], -1, 5 + num_classes))


def check_box_coding(box_coding):
    """Returns ``box_coding`` if it is one of ``BOX_CODINGS``; ValueError otherwise."""
    if box_coding not in BOX_CODINGS:
        raise ValueError(f"box coding must be one of {', '.join(BOX_CODINGS)}, got {box_coding!r}")
    return box_coding


def decode_head(raw, anchors, num_classes, input_hw, box_coding=DEFAULT_BOX_CODING):
    """Turns one raw head output into boxes relative to the network input.

    With ``box_coding`` "yolov3" the centre is ``(sigmoid(t_xy) + cell) / G`` and the
    size ``exp(t_wh) * anchor``; with "yolov5" the centre is
    ``(2 sigmoid(t_xy) - 0.5 + cell) / G`` (it reaches half a cell beyond its own, so a
    neighbouring cell can predict a box) and the size ``(2 sigmoid(t_wh))^2 * anchor``
    (at most 4 anchors, matching ``ANCHOR_T``).

    Args:
        raw: (B, Gh, Gw, A*(5+C)) raw head output.
        anchors: (A, 2) anchor width, height in input pixels for this level.
        num_classes: C.
        input_hw: (height, width) of the network input in pixels.
        box_coding: "yolov3" or "yolov5" (see ``utils.config.BOX_CODINGS``).

    Returns:
        boxes: (B, Gh, Gw, A, 4) xywh rel (0–1 of the input width/height).
        obj_logits: (B, Gh, Gw, A, 1) objectness logits.
        cls_logits: (B, Gh, Gw, A, C) class logits.
    """
    feats = split_head(raw, num_classes)
    dtype = feats.dtype
    shape = ops.shape(feats)
    gh, gw = shape[1], shape[2]
    # Grid of (column, row) per cell, shaped to broadcast over batch and anchors.
    cols = ops.cast(ops.arange(gw), dtype)
    rows = ops.cast(ops.arange(gh), dtype)
    grid_x = ops.broadcast_to(ops.reshape(cols, (1, -1, 1)), (gh, gw, 1))
    grid_y = ops.broadcast_to(ops.reshape(rows, (-1, 1, 1)), (gh, gw, 1))
    grid = ops.reshape(ops.concatenate([grid_x, grid_y], axis=-1), (1, gh, gw, 1, 2))
    grid_size = ops.cast(ops.stack([gw, gh]), dtype)
    input_size = ops.cast(ops.convert_to_tensor([input_hw[1], input_hw[0]]), dtype)
    anchors = ops.cast(ops.reshape(ops.convert_to_tensor(anchors), (1, 1, 1, -1, 2)), dtype)
    if check_box_coding(box_coding) == "yolov5":
        xy = (2.0 * ops.sigmoid(feats[..., 0:2]) - 0.5 + grid) / grid_size
        wh = ops.square(2.0 * ops.sigmoid(feats[..., 2:4])) * anchors / input_size
    else:
        xy = (ops.sigmoid(feats[..., 0:2]) + grid) / grid_size
        # Clip the exponent so an untrained or diverging head cannot overflow to inf.
        wh = ops.exp(ops.minimum(feats[..., 2:4], 10.0)) * anchors / input_size
    return ops.concatenate([xy, wh], axis=-1), feats[..., 4:5], feats[..., 5:]


@keras.saving.register_keras_serializable(package="effyolo")
class YoloDecoder(keras.layers.Layer):
    """Raw head outputs -> boxes after class-wise NMS, in image or input pixels.

    Runs in the TensorFlow graph (sigmoid/exp decoding, letterbox correction,
    ``tf.image.combined_non_max_suppression``), so it can be part of an exported graph.
    NMS runs on the unclipped boxes in input pixels: the map back to an image scales
    and shifts each axis, which leaves every IoU unchanged, so the result is the same
    with or without ``image_shapes`` and boxes are clipped only afterwards.

    Args:
        anchors: (9, 2) anchors in input pixels, sorted by area.
        num_classes: C.
        input_size: side S of the square network input.
        conf: minimum score (objectness × class probability) kept.
        nms_iou: IoU above which a lower-scored box of the same class is suppressed.
        max_boxes: maximum boxes kept per class (and, times C, in total, up to 1000).
        letterbox: True if images were letterboxed, False if plainly resized.
        box_coding: how the heads encode a box, "yolov3" or "yolov5" (``decode_head``).
        agnostic: class-agnostic NMS: each box keeps only its best class's score,
            and a box suppresses any lower-scored box it overlaps, whatever the two
            classes (one box per object where similar classes compete); at most
            ``max_boxes`` · C boxes (up to 1000) in all.

    Call args:
        raw_outputs: list of raw heads in STRIDES order, (B, S/stride, S/stride, 3·(5+C)).
        image_shapes: (B, 2) original image (height, width) in pixels, or None to get
            the boxes in pixels of the network input (clipped to it).

    Returns:
        dict with "boxes" (B, K, 4) xyxy pixels of the original image (of the input
        when ``image_shapes`` is None), "scores" (B, K),
        "classes" (B, K) int32 and "valid" (B,) int32: the first valid[i] rows of
        image i are detections, sorted by descending score.
    """

    def __init__(self, anchors, num_classes, input_size, conf=DEFAULT_CONF, nms_iou=DEFAULT_NMS_IOU,
                 max_boxes=DEFAULT_MAX_BOXES, letterbox=True, box_coding=DEFAULT_BOX_CODING, agnostic=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.agnostic = bool(agnostic)
        self.box_coding = check_box_coding(box_coding)
        self.anchors = [[float(v) for v in a] for a in anchors]
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.conf = float(conf)
        self.nms_iou = float(nms_iou)
        self.max_boxes = int(max_boxes)
        self.letterbox = bool(letterbox)

    def decode_boxes(self, raw_outputs):
        """Raw heads -> (B, N, 4) xywh rel boxes and (B, N, C) scores, before NMS."""
        boxes, scores = [], []
        anchors = ops.convert_to_tensor(self.anchors, "float32")
        size = (self.input_size, self.input_size)
        for raw, mask in zip(raw_outputs, ANCHOR_MASK):
            xywh, obj, cls = decode_head(ops.cast(raw, "float32"), ops.take(anchors, list(mask), axis=0),
                                         self.num_classes, size, self.box_coding)
            batch = ops.shape(xywh)[0]
            boxes.append(ops.reshape(xywh, (batch, -1, 4)))
            scores.append(ops.reshape(ops.sigmoid(obj) * ops.sigmoid(cls), (batch, -1, self.num_classes)))
        return ops.concatenate(boxes, axis=1), ops.concatenate(scores, axis=1)

    def decode_input_boxes(self, raw_outputs):
        """Raw heads -> (B, N, 4) xyxy boxes in input pixels and (B, N, C) scores, before NMS."""
        boxes_rel, scores = self.decode_boxes(raw_outputs)
        return xywh_to_xyxy(boxes_rel) * float(self.input_size), scores

    def nms(self, boxes, scores):
        """NMS with this decoder's conf, nms_iou and max_boxes: class-wise, or over
        all classes with ``agnostic``.

        Args:
            boxes: (B, N, 4) xyxy boxes, any pixel unit.
            scores: (B, N, C) scores.

        Returns:
            dict with "boxes" (B, K, 4) as given, "scores" (B, K), "classes" (B, K)
            int32 and "valid" (B,) int32, K = min(max_boxes · C, 1000), best first.
        """
        max_total = min(self.max_boxes * self.num_classes, 1000)
        if self.agnostic:
            return self._agnostic_nms(boxes, scores, max_total)
        nms = tf.image.combined_non_max_suppression(
            tf.expand_dims(boxes, 2),
            scores,
            max_output_size_per_class=self.max_boxes,
            max_total_size=max_total,
            iou_threshold=self.nms_iou,
            score_threshold=self.conf,
            clip_boxes=False,
        )
        return {
            "boxes": nms.nmsed_boxes,
            "scores": nms.nmsed_scores,
            "classes": tf.cast(nms.nmsed_classes, "int32"),
            "valid": tf.cast(nms.valid_detections, "int32"),
        }

    def _agnostic_nms(self, boxes, scores, max_total):
        """One NMS over every class: each box with its best class, the ``nms`` dict.

        Runs TensorFlow's greedy NMS image by image: it drops the boxes at or under
        ``conf`` first and only compares the rest, so it takes about 2 ms on an image
        at 416 (10,647 boxes) on a CPU, where the batched ``non_max_suppression_padded``
        took 350-750 ms whatever the number of candidates (the same boxes, in the same
        order, on random heads; ``benchmarks/bench_predict.py`` times it).
        """
        best = tf.reduce_max(scores, axis=-1)
        classes = tf.argmax(scores, axis=-1, output_type=tf.int32)

        def one_image(args):
            image_boxes, image_scores = args
            index = tf.image.non_max_suppression(image_boxes, image_scores, max_total,
                                                 iou_threshold=self.nms_iou, score_threshold=self.conf)
            count = tf.shape(index)[0]
            return tf.pad(index, [[0, max_total - count]]), count

        index, valid = tf.map_fn(one_image, (tf.cast(boxes, "float32"), tf.cast(best, "float32")),
                                 fn_output_signature=(tf.TensorSpec([max_total], tf.int32),
                                                      tf.TensorSpec([], tf.int32)))
        keep = tf.range(max_total)[None, :] < valid[:, None]
        keep_f = tf.cast(keep, boxes.dtype)
        return {
            "boxes": tf.gather(boxes, index, batch_dims=1) * keep_f[..., None],
            "scores": tf.gather(best, index, batch_dims=1) * keep_f,
            "classes": tf.where(keep, tf.gather(classes, index, batch_dims=1), 0),
            "valid": valid,
        }

    def to_image_pixels(self, boxes, image_shapes):
        """(B, K, 4) xyxy input pixels -> (B, K, 4) xyxy pixels of each original image, clipped to it."""
        image_hw = ops.cast(image_shapes, "float32")[:, None, :]  # (B, 1, 2) as (h, w)
        image_wh = ops.flip(image_hw, axis=-1)
        size = float(self.input_size)
        xyxy = boxes
        if self.letterbox:
            scale = ops.min(size / image_wh, axis=-1, keepdims=True)  # (B, 1, 1)
            new_wh = ops.round(image_wh * scale)
            offset = ops.floor((size - new_wh) / 2.0)
            xyxy = (xyxy - ops.tile(offset, (1, 1, 2))) / scale
        else:
            xyxy = xyxy / ops.tile(size / image_wh, (1, 1, 2))
        upper = ops.tile(image_wh, (1, 1, 2))
        return ops.minimum(ops.maximum(xyxy, 0.0), upper)

    def call(self, raw_outputs, image_shapes=None):
        boxes, scores = self.decode_input_boxes(raw_outputs)
        out = self.nms(boxes, scores)
        if image_shapes is None:
            out["boxes"] = ops.clip(out["boxes"], 0.0, float(self.input_size))
        else:
            out["boxes"] = self.to_image_pixels(out["boxes"], image_shapes)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            anchors=self.anchors, num_classes=self.num_classes, input_size=self.input_size, conf=self.conf,
            nms_iou=self.nms_iou, max_boxes=self.max_boxes, letterbox=self.letterbox, box_coding=self.box_coding,
            agnostic=self.agnostic,
        )
        return config
