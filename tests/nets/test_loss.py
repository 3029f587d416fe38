"""Tests of the YOLOv3 loss on tiny 64x64 inputs (grids 2, 4 and 8)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from nets.loss import YoloLoss
from utils.boxes import shape_iou
from utils.config import ANCHOR_MASK, BOX_RATIO, LEVEL_BALANCE, OBJ_RATIO, STRIDES
from utils.decode import decode_head

SIZE = 64
GRIDS = tuple(SIZE // s for s in STRIDES)
# The project's default anchors, rescaled from a 416 input to 64.
ANCHORS = (
    np.array(
        [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]],
        dtype="float32",
    )
    * SIZE
    / 416.0
)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(logit, target):
    """Binary cross-entropy on a logit, computed stably in float64."""
    return max(logit, 0.0) - logit * target + math.log1p(math.exp(-abs(logit)))


def _ciou(a, b):
    """CIoU of two xywh boxes, written out independently of utils.boxes."""
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(min(ax2, bx2) - max(ax1, bx1), 0) * max(min(ay2, by2) - max(ay1, by1), 0)
    iou = inter / (a[2] * a[3] + b[2] * b[3] - inter)
    rho2 = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    c2 = (max(ax2, bx2) - min(ax1, bx1)) ** 2 + (max(ay2, by2) - min(ay1, by1)) ** 2
    v = 4 / math.pi**2 * (math.atan(b[2] / b[3]) - math.atan(a[2] / a[3])) ** 2
    alpha = v / (1 - iou + v)
    return iou - rho2 / c2 - alpha * v


def _empty_targets(batch, num_classes, max_boxes=4, grids=GRIDS):
    """All-zero y_true: three (B, G, G, 3, 5+C) levels and (B, M, 4) gt boxes."""
    levels = [np.zeros((batch, g, g, 3, 5 + num_classes), "float32") for g in grids]
    return levels + [np.zeros((batch, max_boxes, 4), "float32")]


def _raw(batch, num_classes, fill=0.0, obj=0.0, grids=GRIDS):
    """Raw head outputs (B, G, G, 3*(5+C)) with box/class channels ``fill``, objectness ``obj``."""
    raws = []
    for g in grids:
        raw = np.full((batch, g, g, 3, 5 + num_classes), fill, "float32")
        raw[..., 4] = obj
        raws.append(raw.reshape(batch, g, g, 3 * (5 + num_classes)))
    return raws


def _set(raws, level, row, col, anchor, values, num_classes, start=0):
    """Writes ``values`` into channel ``start...`` of one anchor of one cell of image 0."""
    k = anchor * (5 + num_classes) + start
    raws[level][0, row, col, k : k + len(values)] = values


def _encode(boxes_per_image, classes_per_image, num_classes, max_boxes=4):
    """Builds y_true by assigning each box to its best-shaped anchor (test helper)."""
    y_true = _empty_targets(len(boxes_per_image), num_classes, max_boxes)
    for b, (boxes, classes) in enumerate(zip(boxes_per_image, classes_per_image)):
        for m, (box, cls) in enumerate(zip(boxes, classes)):
            best = int(np.argmax(shape_iou(np.array(box[2:]) * SIZE, ANCHORS)))
            level = next(i for i, mask in enumerate(ANCHOR_MASK) if best in mask)
            anchor = ANCHOR_MASK[level].index(best)
            g = GRIDS[level]
            row, col = int(box[1] * g), int(box[0] * g)
            y_true[level][b, row, col, anchor, :4] = box
            y_true[level][b, row, col, anchor, 4] = 1.0
            y_true[level][b, row, col, anchor, 5 + cls] = 1.0
            y_true[-1][b, m] = box
    return y_true


def _loss_and_grads(loss_fn, y_true, raws):
    variables = [tf.Variable(r) for r in raws]
    with tf.GradientTape() as tape:
        total, parts = loss_fn([tf.constant(t) for t in y_true], variables)
    return total, parts, tape.gradient(total, variables)


def _assert_finite(total, parts, grads):
    assert np.isfinite(float(total))
    assert all(np.isfinite(float(v)) for v in parts.values())
    for g in grads:
        assert g is not None
        assert np.all(np.isfinite(g.numpy()))


def test_images_without_objects_give_finite_loss_and_gradients():
    loss_fn = YoloLoss(ANCHORS, 3, SIZE)
    rng = np.random.default_rng(0)
    raws = [r + rng.normal(0, 3, r.shape).astype("float32") for r in _raw(2, 3)]
    total, parts, grads = _loss_and_grads(loss_fn, _empty_targets(2, 3), raws)
    _assert_finite(total, parts, grads)
    assert float(parts["box"]) == 0.0 and float(parts["cls"]) == 0.0
    assert float(parts["obj"]) > 0.0
    # Without objects every objectness gradient pushes the logits down.
    assert all(np.all(g.numpy().reshape(tuple(g.shape[:3]) + (3, 8))[..., 4] > 0) for g in grads)


def test_non_square_input():
    grids = [(64 // s, 96 // s) for s in STRIDES]
    loss_fn = YoloLoss(ANCHORS, 2, (64, 96))
    y_true = [np.zeros((1, h, w, 3, 7), "float32") for h, w in grids]
    y_true[0][0, 1, 2, 0, :5] = [0.9, 0.8, 0.3, 0.4, 1.0]
    y_true[0][0, 1, 2, 0, 6] = 1.0
    y_true.append(np.array([[[0.9, 0.8, 0.3, 0.4]]], "float32"))
    raws = [np.zeros((1, h, w, 21), "float32") for h, w in grids]
    total, parts, grads = _loss_and_grads(loss_fn, y_true, raws)
    _assert_finite(total, parts, grads)
    assert float(parts["box"]) > 0.0 and float(parts["cls"]) > 0.0


@pytest.mark.parametrize("fill", [0.1, -60.0, 60.0])
def test_zero_size_boxes_give_finite_loss_and_gradients(fill):
    loss_fn = YoloLoss(ANCHORS, 2, SIZE)
    y_true = _empty_targets(1, 2)
    # Positives whose target box has zero width, zero height, or both.
    y_true[0][0, 0, 1, 2, :6] = [0.7, 0.2, 0.0, 0.5, 1.0, 1.0]
    y_true[1][0, 2, 2, 0, :6] = [0.6, 0.6, 0.3, 0.0, 1.0, 1.0]
    y_true[2][0, 5, 3, 1, :6] = [0.4, 0.7, 0.0, 0.0, 1.0, 1.0]
    y_true[-1][0, :3] = [[0.7, 0.2, 0.0, 0.5], [0.6, 0.6, 0.3, 0.0], [0.4, 0.7, 0.0, 0.0]]
    # Saturated raw outputs too: collapsed (-60) and clipped (+60) predicted sizes.
    total, parts, grads = _loss_and_grads(loss_fn, y_true, _raw(1, 2, fill=fill, obj=fill))
    _assert_finite(total, parts, grads)
    assert float(parts["box"]) > 0.0
    assert any(np.any(g.numpy() != 0) for g in grads)


def test_empty_batch_inside_tf_function():
    loss_fn = YoloLoss(ANCHORS, 2, SIZE)
    specs = [tf.TensorSpec((None, g, g, 3, 7)) for g in GRIDS] + [tf.TensorSpec((None, None, 4))]
    raw_specs = [tf.TensorSpec((None, g, g, 21)) for g in GRIDS]

    @tf.function(input_signature=[specs, raw_specs])
    def step(y_true, raws):
        with tf.GradientTape() as tape:
            tape.watch(raws)
            total, parts = loss_fn(y_true, raws)
        return total, parts, tape.gradient(total, raws)

    for batch, boxes in ((0, 4), (0, 0), (2, 0)):
        y_true = _empty_targets(batch, 2, max_boxes=boxes)
        total, parts, grads = step(y_true, _raw(batch, 2))
        _assert_finite(total, parts, grads)
        assert total.dtype == tf.float32 and total.shape == ()
        if batch == 0:
            assert float(total) == 0.0


def test_float16_outputs_are_computed_in_float32():
    loss_fn = YoloLoss(ANCHORS, 2, SIZE)
    y_true = _encode([[[0.3, 0.3, 0.4, 0.5]]], [[1]], 2)
    raws = [r + np.float32(0.3) for r in _raw(1, 2, obj=-2.0)]
    total32, _ = loss_fn(y_true, raws)
    total16, parts16 = loss_fn(y_true, [tf.constant(r, tf.float16) for r in raws])
    assert total16.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in parts16.values())
    np.testing.assert_allclose(float(total16), float(total32), rtol=1e-3)


def test_loss_is_a_per_batch_value():
    loss_fn = YoloLoss(ANCHORS, 2, SIZE)
    y_true = _encode([[[0.3, 0.3, 0.4, 0.5], [0.8, 0.7, 0.1, 0.15]]], [[0, 1]], 2)
    rng = np.random.default_rng(1)
    raws = [rng.normal(0, 1, r.shape).astype("float32") for r in _raw(1, 2)]
    single, _ = loss_fn(y_true, raws)
    doubled, _ = loss_fn(
        [np.concatenate([t, t]) for t in y_true], [np.concatenate([r, r]) for r in raws]
    )
    np.testing.assert_allclose(float(doubled), float(single), rtol=1e-5)


def test_box_term_is_one_minus_ciou_for_one_positive():
    loss_fn = YoloLoss(ANCHORS, 1, SIZE)
    target = [0.7, 0.2, 0.6, 0.5]
    y_true = _empty_targets(1, 1)
    y_true[0][0, 0, 1, 2, :6] = target + [1.0, 1.0]
    y_true[-1][0, 0] = target
    raws = _raw(1, 1)
    tx, ty, tw, th = 0.3, -0.2, 0.1, -0.3
    _set(raws, 0, 0, 1, 2, [tx, ty, tw, th], 1)
    anchor = ANCHORS[ANCHOR_MASK[0][2]]
    decoded = [
        (_sigmoid(tx) + 1) / GRIDS[0],
        (_sigmoid(ty) + 0) / GRIDS[0],
        math.exp(tw) * anchor[0] / SIZE,
        math.exp(th) * anchor[1] / SIZE,
    ]
    boxes, _, _ = decode_head(raws[0], ANCHORS[list(ANCHOR_MASK[0])], 1, (SIZE, SIZE))
    np.testing.assert_allclose(boxes[0, 0, 1, 2].numpy(), decoded, rtol=1e-6)

    _, parts = loss_fn(y_true, raws)
    expected = (1.0 - _ciou(decoded, target)) * BOX_RATIO
    assert expected > 0.01
    np.testing.assert_allclose(float(parts["box"]), expected, rtol=1e-5)

    scaled = YoloLoss(ANCHORS, 1, SIZE, box_ratio=1.0)
    np.testing.assert_allclose(float(scaled(y_true, raws)[1]["box"]), expected / BOX_RATIO, rtol=1e-5)


def _ignore_case(gt_box, hot_logit, assigner="yolov3"):
    """Objectness term when one negative (level 32, cell (0, 0), anchor 1) has ``hot_logit``
    (both box codings decode zeros to the same box)."""
    loss_fn = YoloLoss(ANCHORS, 1, SIZE, assigner=assigner)
    y_true = _empty_targets(1, 1)
    y_true[-1][0, 0] = gt_box
    raws = _raw(1, 1, obj=-10.0)
    _set(raws, 0, 0, 0, 1, [hot_logit], 1, start=4)
    return float(loss_fn(y_true, raws)[1]["obj"])


def _hot_box():
    """The decoded box of level 32, cell (0, 0), anchor 1 when its raw box channels are 0."""
    anchor = ANCHORS[ANCHOR_MASK[0][1]]
    return [0.5 / GRIDS[0], 0.5 / GRIDS[0], anchor[0] / SIZE, anchor[1] / SIZE]


def test_negative_overlapping_a_gt_box_is_ignored():
    gt = _hot_box()  # IoU 1 with the hot prediction.
    cold, hot = _ignore_case(gt, -10.0), _ignore_case(gt, 5.0)
    np.testing.assert_allclose(hot, cold, rtol=1e-6)
    # Slightly shifted: still above the threshold, still ignored.
    shifted = [gt[0] + 0.02, gt[1] - 0.02, gt[2], gt[3]]
    np.testing.assert_allclose(_ignore_case(shifted, 5.0), _ignore_case(shifted, -10.0), rtol=1e-6)


def test_negative_with_low_iou_is_penalised():
    hot_box = _hot_box()
    # Same centre, 0.3x the sides: IoU 0.09 with the hot box, below 0.5 with every prediction.
    gt = [hot_box[0], hot_box[1], 0.3 * hot_box[2], 0.3 * hot_box[3]]
    cold, hot = _ignore_case(gt, -10.0), _ignore_case(gt, 5.0)
    # Level 32: no positives and all 2*2*3 = 12 negatives counted.
    scale = LEVEL_BALANCE[0] * OBJ_RATIO * SIZE * SIZE / 416.0**2 / 12
    np.testing.assert_allclose(hot - cold, (_bce(5.0, 0) - _bce(-10.0, 0)) * scale, rtol=1e-5)


def test_ignore_threshold_is_configurable():
    # IoU about 0.83 with the hot prediction: ignored at 0.5 (tested above), counted at 0.9.
    box = _hot_box()
    loss_fn = YoloLoss(ANCHORS, 1, SIZE, ignore_threshold=0.9)
    y_true = _empty_targets(1, 1)
    y_true[-1][0, 0] = [box[0] + 0.02, box[1] - 0.02, box[2], box[3]]
    cold, hot = _raw(1, 1, obj=-10.0), _raw(1, 1, obj=-10.0)
    _set(hot, 0, 0, 0, 1, [5.0], 1, start=4)
    assert float(loss_fn(y_true, hot)[1]["obj"]) > float(loss_fn(y_true, cold)[1]["obj"]) + 0.01


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_class_term_with_label_smoothing(smoothing):
    num_classes = 3
    loss_fn = YoloLoss(ANCHORS, num_classes, SIZE, label_smoothing=smoothing)
    box = [0.7, 0.2, 0.6, 0.5]
    y_true = _empty_targets(1, num_classes)
    y_true[0][0, 0, 1, 2, :5] = box + [1.0]
    y_true[0][0, 0, 1, 2, 5 + 1] = 1.0
    y_true[-1][0, 0] = box
    logits = [0.5, -1.0, 2.0]
    raws = _raw(1, num_classes)
    _set(raws, 0, 0, 1, 2, logits, num_classes, start=5)

    targets = [smoothing / num_classes + (1 - smoothing) * (c == 1) for c in range(num_classes)]
    bce = sum(_bce(x, t) for x, t in zip(logits, targets))
    expected = bce * (num_classes / 80.0) / 1.0 / num_classes
    np.testing.assert_allclose(float(loss_fn(y_true, raws)[1]["cls"]), expected, rtol=1e-5)


def test_label_smoothing_penalises_overconfidence():
    box = [0.7, 0.2, 0.6, 0.5]
    y_true = _empty_targets(1, 3)
    y_true[0][0, 0, 1, 2, :5] = box + [1.0]
    y_true[0][0, 0, 1, 2, 5 + 1] = 1.0
    raws = _raw(1, 3)
    _set(raws, 0, 0, 1, 2, [-12.0, 12.0, -12.0], 3, start=5)
    plain = float(YoloLoss(ANCHORS, 3, SIZE)(y_true, raws)[1]["cls"])
    smoothed = float(YoloLoss(ANCHORS, 3, SIZE, label_smoothing=0.1)(y_true, raws)[1]["cls"])
    assert plain < 1e-4
    assert smoothed > 100 * plain


def test_runs_under_a_distribution_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    loss_fn = YoloLoss(ANCHORS, 2, SIZE)
    y_true = _encode([[[0.3, 0.3, 0.4, 0.5]]], [[1]], 2)
    raws = _raw(1, 2, fill=0.2)
    expected, _ = loss_fn(y_true, raws)

    @tf.function
    def replica_fn(y_true, raws):
        return loss_fn(y_true, raws)[0]

    per_replica = strategy.run(replica_fn, args=(y_true, raws))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"anchors": np.ones((6, 2))}, "anchors"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_size": (64,)}, "input_size"),
        ({"input_size": "big"}, "input_size"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"balance": (1.0, 1.0)}, "balance"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    args = {"anchors": ANCHORS, "num_classes": 2, "input_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=message):
        YoloLoss(**args)


def _tiny_detector(num_classes):
    """Strided convs on a 64x64 input; heads at grids 2, 4, 8 (STRIDES order)."""
    channels = 3 * (5 + num_classes)
    # Objectness starts at a low prior (sigmoid(-2) ~ 0.12), as detection heads usually do.
    bias = np.zeros((3, 5 + num_classes), "float32")
    bias[:, 4] = -2.0

    def conv(x, filters):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        return keras.layers.LeakyReLU(negative_slope=0.1)(x)

    inputs = keras.Input((SIZE, SIZE, 3))
    x = conv(conv(inputs, 16), 32)
    p8 = conv(x, 32)
    p16 = conv(p8, 32)
    p32 = conv(p16, 32)
    heads = [
        keras.layers.Conv2D(channels, 1, bias_initializer=keras.initializers.Constant(bias.ravel()))(p)
        for p in (p32, p16, p8)
    ]
    return keras.Model(inputs, heads)


def _memorisation_batch():
    """Two 64x64 images of flat rectangles on grey, with boxes for every level.

    Large boxes go to stride 32, medium ones to 16, small ones to 8; all are centred in
    a cell of their level so that each positive has a cell of its own.

    Returns:
        images: (2, 64, 64, 3) float32 in [0, 1].
        boxes: per image, a list of xywh rel boxes.
        classes: per image, a list of class ids (0 drawn red, 1 drawn blue).
    """
    large, medium, small = (0.4, 0.5), (0.15, 0.2), (0.05, 0.06)
    layout = [
        [(0.25, 0.25, large), (0.625, 0.625, medium), (0.875, 0.125, medium),
         (0.8125, 0.8125, small), (0.5625, 0.9375, small), (0.0625, 0.8125, small),
         (0.3125, 0.5625, small)],
        [(0.75, 0.75, large), (0.125, 0.375, medium), (0.375, 0.125, medium),
         (0.0625, 0.8125, small), (0.3125, 0.8125, small), (0.5625, 0.3125, small),
         (0.8125, 0.1875, small)],
    ]  # fmt: skip
    images = np.full((2, SIZE, SIZE, 3), 0.5, "float32")
    boxes, classes = [], []
    for b, objects in enumerate(layout):
        boxes.append([[cx, cy, w, h] for cx, cy, (w, h) in objects])
        classes.append([i % 2 for i in range(len(objects))])
        for (cx, cy, w, h), cls in zip(boxes[-1], classes[-1]):
            x1, x2 = round((cx - w / 2) * SIZE), round((cx + w / 2) * SIZE)
            y1, y2 = round((cy - h / 2) * SIZE), round((cy + h / 2) * SIZE)
            images[b, max(y1, 0) : y2, max(x1, 0) : x2] = (1.0, 0.0, 0.0) if cls == 0 else (0.0, 0.0, 1.0)
    return images, boxes, classes


@pytest.mark.slow
def test_loss_decreases_when_memorising_a_batch():
    keras.utils.set_random_seed(0)
    num_classes = 2
    images, boxes, classes = _memorisation_batch()
    y_true = [tf.constant(t) for t in _encode(boxes, classes, num_classes, max_boxes=8)]
    positives = [int(tf.reduce_sum(y_true[i][..., 4])) for i in range(3)]
    assert positives == [2, 4, 8], "the batch should exercise every level"
    images = tf.constant(images)

    model = _tiny_detector(num_classes)
    optimizer = keras.optimizers.Adam(learning_rate=1e-2)
    loss_fn = YoloLoss(ANCHORS, num_classes, SIZE)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            total, _ = loss_fn(y_true, model(images, training=True))
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return total

    initial = float(loss_fn(y_true, model(images))[0])
    for _ in range(100):
        train_step()
    outputs = model(images)
    final, parts = loss_fn(y_true, outputs)
    assert float(final) < 0.3 * initial, (initial, float(final))
    assert all(np.isfinite(float(v)) for v in parts.values())

    for level, anchors in enumerate(ANCHOR_MASK):
        _, obj_logits, _ = decode_head(outputs[level], ANCHORS[list(anchors)], num_classes, (SIZE, SIZE))
        obj = tf.sigmoid(obj_logits[..., 0])
        positive = y_true[level][..., 4] > 0
        assert float(tf.reduce_min(tf.boolean_mask(obj, positive))) > 0.5, f"level {level}"
        assert float(tf.reduce_max(tf.boolean_mask(obj, ~positive))) < 0.5, f"level {level}"


# --- the yolov5 assigner's loss -----------------------------------------------------------


def test_yolov5_assigner_counts_every_negative():
    gt = _hot_box()  # IoU 1 with the hot prediction: ignored by yolov3, counted by yolov5
    cold, hot = _ignore_case(gt, -10.0, "yolov5"), _ignore_case(gt, 5.0, "yolov5")
    scale = LEVEL_BALANCE[0] * OBJ_RATIO * SIZE * SIZE / 416.0**2 / 12
    np.testing.assert_allclose(hot - cold, (_bce(5.0, 0) - _bce(-10.0, 0)) * scale, rtol=1e-5)


def test_yolov5_box_term_uses_the_yolov5_coding():
    loss_fn = YoloLoss(ANCHORS, 1, SIZE, assigner="yolov5")
    target = [0.7, 0.2, 0.6, 0.5]
    y_true = _empty_targets(1, 1)
    y_true[0][0, 0, 1, 2, :6] = target + [1.0, 1.0]
    y_true[-1][0, 0] = target
    raws = _raw(1, 1)
    t = [0.3, -0.2, 0.1, -0.3]
    _set(raws, 0, 0, 1, 2, t, 1)
    anchor = ANCHORS[ANCHOR_MASK[0][2]]
    decoded = [
        (2 * _sigmoid(t[0]) - 0.5 + 1) / GRIDS[0],
        (2 * _sigmoid(t[1]) - 0.5 + 0) / GRIDS[0],
        (2 * _sigmoid(t[2])) ** 2 * anchor[0] / SIZE,
        (2 * _sigmoid(t[3])) ** 2 * anchor[1] / SIZE,
    ]
    _, parts = loss_fn(y_true, raws)
    np.testing.assert_allclose(float(parts["box"]), (1.0 - _ciou(decoded, target)) * BOX_RATIO, rtol=1e-5)


@pytest.mark.parametrize("assigner", ["yolov3", "yolov5"])
def test_objectness_target_is_the_detached_iou_when_asked(assigner):
    target = [0.7, 0.2, 0.6, 0.5]
    y_true = _empty_targets(1, 1)
    y_true[0][0, 0, 1, 2, :6] = target + [1.0, 1.0]
    y_true[-1][0, 0] = target
    raws = _raw(1, 1, obj=-10.0)
    t = [0.3, -0.2, 0.1, -0.3]
    _set(raws, 0, 0, 1, 2, t + [0.7], 1)
    boxes, _, _ = decode_head(raws[0], ANCHORS[list(ANCHOR_MASK[0])], 1, (SIZE, SIZE), assigner)
    quality = max(_ciou(boxes[0, 0, 1, 2].numpy().tolist(), target), 0.0)
    assert 0.05 < quality < 0.95
    one = YoloLoss(ANCHORS, 1, SIZE, assigner=assigner)
    iou = YoloLoss(ANCHORS, 1, SIZE, assigner=assigner, obj_iou_target=True)
    # Only the positive's term differs: BCE(0.7, quality) instead of BCE(0.7, 1).
    diff = float(iou(y_true, raws)[1]["obj"]) - float(one(y_true, raws)[1]["obj"])
    per_cell = _bce(0.7, quality) - _bce(0.7, 1.0)
    # The mean runs over the counted cells: all 12 of level 32 for yolov5; the positive and
    # the negatives not ignored for yolov3.
    counted = per_cell * LEVEL_BALANCE[0] * OBJ_RATIO * SIZE * SIZE / 416.0**2 / diff
    assert abs(counted - round(counted)) < 1e-3 and 1 <= round(counted) <= 12
    if assigner == "yolov5":
        assert round(counted) == 12
    # Detached: the target carries no gradient into the box channels.
    total, _, grads = _loss_and_grads(YoloLoss(ANCHORS, 1, SIZE, assigner=assigner, obj_iou_target=True,
                                               box_ratio=0.0, cls_ratio=0.0), y_true, raws)
    box_grad = grads[0].numpy().reshape(1, GRIDS[0], GRIDS[0], 3, 6)[0, 0, 1, 2, :4]
    np.testing.assert_array_equal(box_grad, 0.0)


_SPLIT_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from nets.loss import YoloLoss

assigner, anchors, grids = sys.argv[1], np.array(json.loads(sys.argv[2]), "float32"), json.loads(sys.argv[3])
cls_norm, batch_scale = sys.argv[4], sys.argv[5] == "1"
rng = np.random.default_rng(0)
num_classes, batch = 3, 4
levels = []
for g in grids:
    level = np.zeros((batch, g, g, 3, 5 + num_classes), "float32")
    # Positives only in the first half of the batch, more at the finest level.
    for image in range(2):
        for _ in range(1 + image + g // 4):
            i, j, a = rng.integers(g), rng.integers(g), rng.integers(3)
            level[image, i, j, a, :4] = [(j + 0.5) / g, (i + 0.5) / g, 0.3, 0.2]
            level[image, i, j, a, 4] = 1.0
            level[image, i, j, a, 5 + rng.integers(num_classes)] = 1.0
    levels.append(level)
gt = np.zeros((batch, 4, 4), "float32")
gt[:2, 0] = [0.5, 0.5, 0.3, 0.2]
y_true = levels + [gt]
y_pred = [rng.normal(size=(batch, g, g, 3 * (5 + num_classes))).astype("float32") for g in grids]
loss = YoloLoss(anchors, num_classes, 64, assigner=assigner, obj_iou_target=True, label_smoothing=0.1,
                cls_norm=cls_norm, batch_scale=batch_scale)
single = [float(v) for v in (loss(y_true, y_pred)[0], *loss(y_true, y_pred)[1].values())]

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def share(arrays):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: [a[ctx.replica_id_in_sync_group * 2:(ctx.replica_id_in_sync_group + 1) * 2] for a in arrays])
def step(t, p):
    total, parts = loss(t, p)
    return [total, parts["box"], parts["obj"], parts["cls"]]
per_replica = strategy.run(tf.function(step), args=(share(y_true), share(y_pred)))
split = [float(strategy.reduce("MEAN", v, axis=None)) for v in per_replica]
print(json.dumps({"single": single, "split": split}))
"""


@pytest.mark.parametrize("assigner, cls_norm, batch_scale", [("yolov3", "reference", "0"), ("yolov5", "mean", "1")])
def test_a_batch_split_over_two_devices_has_the_loss_of_the_whole_batch(assigner, cls_norm, batch_scale):
    """The counts that normalise each term are those of the whole batch, so the mean of the
    replicas' losses equals one device's loss even when the positives are all on one replica
    (the reference recipe's loss, and the short recipe's: class term as a mean over the classes,
    loss times the batch)."""
    import json
    import subprocess
    import sys

    from tests.helpers import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", _SPLIT_SCRIPT, assigner, json.dumps(ANCHORS.tolist()), json.dumps(list(GRIDS)),
         cls_norm, batch_scale],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["single"][0] > 0
    np.testing.assert_allclose(result["split"], result["single"], rtol=1e-5)
