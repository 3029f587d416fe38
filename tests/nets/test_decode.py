"""Tests of utils/decode.py against boxes worked out by hand from the decoding formulas."""

import math

import keras
import numpy as np
import pytest

from utils.config import ANCHOR_MASK, STRIDES
from utils.decode import YoloDecoder, decode_head

SIZE = 64
C = 3
# Nine anchors in input pixels (sorted by area), small enough that boxes stay inside.
ANCHORS = np.array([[2, 3], [4, 5], [6, 4], [8, 10], [12, 9], [10, 14], [20, 16], [24, 30], [40, 36]], np.float32)
NEG = -30.0  # objectness logit of "nothing here"


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def logit(p):
    return math.log(p / (1.0 - p))


def empty_heads(batch=1):
    """Raw heads in STRIDES order, (B, S/s, S/s, 3·(5+C)), every objectness very negative."""
    heads = []
    for stride in STRIDES:
        g = SIZE // stride
        raw = np.zeros((batch, g, g, 3, 5 + C), np.float32)
        raw[..., 4] = NEG
        raw[..., 5:] = NEG
        heads.append(raw)
    return heads


def put(heads, level, row, col, anchor, t, batch_index=0):
    """Writes one prediction t = (tx, ty, tw, th, to, class logits...) into a head."""
    heads[level][batch_index, row, col, anchor, : len(t)] = t


def flat(heads):
    return [h.reshape(h.shape[0], h.shape[1], h.shape[2], -1) for h in heads]


def put_box(heads, level, row, col, anchor, box_xyxy, score, cls, batch_index=0):
    """Writes a prediction decoding to ``box_xyxy`` (input pixels) with ``score`` for ``cls``.

    The box centre must lie in the given cell.
    """
    g = SIZE // STRIDES[level]
    x1, y1, x2, y2 = box_xyxy
    cx, cy, w, h = (x1 + x2) / 2 / SIZE * g - col, (y1 + y2) / 2 / SIZE * g - row, x2 - x1, y2 - y1
    assert 0 < cx < 1 and 0 < cy < 1
    aw, ah = ANCHORS[ANCHOR_MASK[level][anchor]]
    t = [logit(cx), logit(cy), math.log(w / aw), math.log(h / ah), 30.0] + [NEG] * C
    t[5 + cls] = logit(score)
    put(heads, level, row, col, anchor, t, batch_index)


def run(heads, image_hw, **kwargs):
    """Decoder output for the given heads; image_hw is (B, 2) (height, width)."""
    decoder = YoloDecoder(ANCHORS, C, SIZE, **kwargs)
    out = decoder(flat(heads), np.asarray(image_hw, np.int32))
    return {k: np.asarray(v) for k, v in out.items()}


def detections(out, i=0):
    n = int(out["valid"][i])
    return out["boxes"][i, :n], out["scores"][i, :n], out["classes"][i, :n]


# One prediction: stride 16 head (level 1), row 1, column 2, anchor 1 of that level.
LEVEL, ROW, COL, ANCHOR = 1, 1, 2, 1
T = [0.3, -0.2, 0.1, -0.3, 3.0, -5.0, 2.0, -5.0]


def expected_input_box():
    """The prediction T decoded by hand: xyxy in pixels of the 64×64 input."""
    g = SIZE // STRIDES[LEVEL]  # 4 cells
    aw, ah = ANCHORS[ANCHOR_MASK[LEVEL][ANCHOR]]  # anchor 4: 12 × 9
    cx = (sigmoid(T[0]) + COL) / g * SIZE
    cy = (sigmoid(T[1]) + ROW) / g * SIZE
    w = math.exp(T[2]) * aw
    h = math.exp(T[3]) * ah
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def test_decode_head_matches_the_formulas():
    heads = empty_heads()
    put(heads, LEVEL, ROW, COL, ANCHOR, T)
    raw = flat(heads)[LEVEL]
    anchors = ANCHORS[list(ANCHOR_MASK[LEVEL])]
    boxes, obj, cls = decode_head(raw, anchors, C, (SIZE, SIZE))
    boxes, obj, cls = np.asarray(boxes), np.asarray(obj), np.asarray(cls)
    assert boxes.shape == (1, 4, 4, 3, 4) and obj.shape == (1, 4, 4, 3, 1) and cls.shape == (1, 4, 4, 3, C)
    x1, y1, x2, y2 = expected_input_box() / SIZE
    np.testing.assert_allclose(boxes[0, ROW, COL, ANCHOR], [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], rtol=1e-5)
    np.testing.assert_allclose(obj[0, ROW, COL, ANCHOR], [T[4]])
    np.testing.assert_allclose(cls[0, ROW, COL, ANCHOR], T[5:])
    # An empty cell decodes to the cell centre with the anchor's size.
    aw, ah = anchors[2]
    np.testing.assert_allclose(boxes[0, 3, 0, 2], [0.5 / 4, 3.5 / 4, aw / SIZE, ah / SIZE], rtol=1e-5)


def test_decode_head_non_square_grid_uses_columns_for_x():
    raw = np.zeros((1, 2, 3, 3 * (5 + C)), np.float32)  # 2 rows, 3 columns
    boxes = np.asarray(decode_head(raw, ANCHORS[:3], C, (64, 96))[0])
    assert boxes.shape == (1, 2, 3, 3, 4)
    np.testing.assert_allclose(boxes[0, 1, 2, 0, :2], [2.5 / 3, 1.5 / 2])
    np.testing.assert_allclose(boxes[0, 1, 2, 0, 2:], [ANCHORS[0, 0] / 96, ANCHORS[0, 1] / 64])


def test_decoder_letterbox_inverse_on_non_square_images():
    # Image 0: 200 wide, 100 high -> scale 0.32, resized 64×32, band of 16 on top.
    # Image 1: 100 wide, 200 high -> scale 0.32, resized 32×64, band of 16 on the left.
    heads = empty_heads(batch=2)
    put(heads, LEVEL, ROW, COL, ANCHOR, T, batch_index=0)
    put(heads, LEVEL, ROW, COL, ANCHOR, T, batch_index=1)
    out = run(heads, [[100, 200], [200, 100]])
    box_in = expected_input_box()
    score = sigmoid(T[4]) * sigmoid(T[6])

    boxes, scores, classes = detections(out, 0)
    assert len(scores) == 1
    expected = (box_in - np.array([0, 16, 0, 16])) / 0.32
    assert np.all(expected >= 0) and np.all(expected <= [200, 100, 200, 100])  # not clipped
    np.testing.assert_allclose(boxes[0], expected, atol=1e-3)
    np.testing.assert_allclose(scores[0], score, rtol=1e-5)
    assert classes[0] == 1

    boxes, scores, classes = detections(out, 1)
    assert len(scores) == 1 and classes[0] == 1
    expected = (box_in - np.array([16, 0, 16, 0])) / 0.32
    assert np.all(expected >= 0) and np.all(expected <= [100, 200, 100, 200])
    np.testing.assert_allclose(boxes[0], expected, atol=1e-3)


def test_decoder_without_letterbox_stretches_back():
    heads = empty_heads()
    put(heads, LEVEL, ROW, COL, ANCHOR, T)
    out = run(heads, [[100, 200]], letterbox=False)
    boxes, scores, classes = detections(out)
    assert len(scores) == 1 and classes[0] == 1
    expected = expected_input_box() * np.array([200 / 64, 100 / 64, 200 / 64, 100 / 64])
    np.testing.assert_allclose(boxes[0], expected, atol=1e-3)


def test_decoder_clips_boxes_to_the_image():
    heads = empty_heads()
    # A box sticking out of the top-left corner of the input, in the stride 32 head.
    put(heads, 0, 0, 0, 2, [-3.0, -3.0, 0.5, 0.5, 5.0, 5.0, NEG, NEG])
    boxes, _, _ = detections(run(heads, [[100, 200]]))
    assert len(boxes) == 1
    assert boxes[0, 0] == 0 and boxes[0, 1] == 0
    assert np.all(boxes[0] <= [200, 100, 200, 100])


def test_nms_keeps_the_best_box_of_a_class_and_other_classes():
    heads = empty_heads()
    # Two heavily overlapping boxes in the stride 8 head, same cell, different anchors.
    put_box(heads, 2, 3, 3, 0, (20, 20, 32, 32), 0.9, cls=0)
    put_box(heads, 2, 3, 3, 1, (21, 21, 33, 33), 0.8, cls=0)
    out = run(heads, [[64, 64]])
    boxes, scores, classes = detections(out)
    assert len(scores) == 1
    assert classes[0] == 0
    np.testing.assert_allclose(scores[0], 0.9, rtol=1e-4)
    np.testing.assert_allclose(boxes[0], (20, 20, 32, 32), atol=1e-3)

    # The same two boxes with different classes are both kept, best first.
    heads = empty_heads()
    put_box(heads, 2, 3, 3, 0, (20, 20, 32, 32), 0.8, cls=0)
    put_box(heads, 2, 3, 3, 1, (21, 21, 33, 33), 0.9, cls=2)
    boxes, scores, classes = detections(run(heads, [[64, 64]]))
    assert len(scores) == 2
    np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-4)
    assert classes.tolist() == [2, 0]
    np.testing.assert_allclose(boxes, [(21, 21, 33, 33), (20, 20, 32, 32)], atol=1e-3)


def test_agnostic_nms_keeps_one_box_per_object_whatever_its_classes():
    # One object with three look-alike classes scoring close together: per class NMS
    # keeps a box of each, class-agnostic NMS only the best, with its class.
    heads = empty_heads()
    put_box(heads, 2, 3, 3, 0, (20, 20, 32, 32), 0.6, cls=1)
    put_box(heads, 2, 3, 3, 1, (21, 21, 33, 33), 0.55, cls=0)
    put_box(heads, 2, 3, 3, 2, (20, 21, 32, 33), 0.52, cls=2)
    # A separate object of class 0 far away survives either way.
    put_box(heads, 2, 6, 6, 0, (49, 49, 60, 60), 0.7, cls=0)
    _, scores, classes = detections(run(heads, [[64, 64]]))
    assert sorted(classes.tolist()) == [0, 0, 1, 2]
    boxes, scores, classes = detections(run(heads, [[64, 64]], agnostic=True))
    assert classes.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.7, 0.6], rtol=1e-4)
    np.testing.assert_allclose(boxes, [(49, 49, 60, 60), (20, 20, 32, 32)], atol=1e-3)
    # Below the IoU threshold two objects of different classes both stay.
    heads = empty_heads()
    put_box(heads, 2, 3, 3, 0, (20, 20, 32, 32), 0.9, cls=0)
    put_box(heads, 2, 3, 4, 0, (28, 20, 40, 32), 0.8, cls=1)  # IoU 4*12 / (2*144 - 48) = 0.2
    assert run(heads, [[64, 64]], agnostic=True, nms_iou=0.3)["valid"][0] == 2
    assert run(heads, [[64, 64]], agnostic=True, nms_iou=0.1)["valid"][0] == 1


def test_nms_iou_threshold_decides_suppression():
    # IoU of these two boxes is 100 / 156 ≈ 0.64.
    heads = empty_heads()
    put_box(heads, 2, 3, 3, 0, (20, 20, 32, 32), 0.9, cls=0)
    put_box(heads, 2, 3, 3, 1, (22, 22, 34, 34), 0.8, cls=0)
    assert run(heads, [[64, 64]], nms_iou=0.5)["valid"][0] == 1
    assert run(heads, [[64, 64]], nms_iou=0.7)["valid"][0] == 2


def test_confidence_threshold_filters():
    heads = empty_heads()
    put_box(heads, 2, 1, 1, 0, (8, 8, 16, 16), 0.9, cls=0)
    put_box(heads, 2, 5, 5, 0, (40, 40, 48, 48), 0.4, cls=1)
    put_box(heads, 1, 3, 0, 0, (2, 50, 12, 60), 0.2, cls=2)
    _, scores, classes = detections(run(heads, [[64, 64]]))  # default conf 0.5
    assert classes.tolist() == [0]
    _, scores, classes = detections(run(heads, [[64, 64]], conf=0.3))
    assert classes.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.9, 0.4], rtol=1e-4)
    _, scores, classes = detections(run(heads, [[64, 64]], conf=0.1))
    assert classes.tolist() == [0, 1, 2]
    assert run(heads, [[64, 64]], conf=0.95)["valid"][0] == 0


def test_max_boxes_per_class_is_respected():
    heads = empty_heads()
    # Five separate class-0 boxes (one per stride 8 cell on the diagonal) and one class-1 box.
    scores_in = [0.9, 0.85, 0.8, 0.75, 0.7]
    for i, s in enumerate(scores_in):
        put_box(heads, 2, i, i, 0, (8 * i + 2, 8 * i + 2, 8 * i + 6, 8 * i + 6), s, cls=0)
    put_box(heads, 2, 7, 0, 0, (2, 58, 6, 62), 0.6, cls=1)
    _, scores, classes = detections(run(heads, [[64, 64]], max_boxes=2))
    assert sorted(classes.tolist()) == [0, 0, 1]
    np.testing.assert_allclose(sorted(scores[classes == 0], reverse=True), [0.9, 0.85], rtol=1e-4)
    out = run(heads, [[64, 64]], max_boxes=100)
    assert out["valid"][0] == 6
    assert np.all(np.diff(detections(out)[1]) <= 0)  # sorted by descending score


def test_decoder_get_config_round_trip():
    decoder = YoloDecoder(ANCHORS, C, SIZE, conf=0.25, nms_iou=0.45, max_boxes=7, letterbox=False, name="dec",
                          agnostic=True)
    config = decoder.get_config()
    assert config["agnostic"] is True
    assert config["anchors"] == ANCHORS.tolist()
    assert (config["num_classes"], config["input_size"], config["conf"], config["nms_iou"]) == (C, SIZE, 0.25, 0.45)
    assert (config["max_boxes"], config["letterbox"]) == (7, False)
    clone = YoloDecoder.from_config(config)
    assert clone.get_config() == config
    # Through Keras' registry, as a saved model would be read back.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(decoder))
    assert isinstance(revived, YoloDecoder) and revived.get_config() == config

    heads = empty_heads()
    put(heads, LEVEL, ROW, COL, ANCHOR, T)
    a = decoder(flat(heads), np.array([[100, 200]], np.int32))
    b = revived(flat(heads), np.array([[100, 200]], np.int32))
    for key in ("boxes", "scores", "classes", "valid"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    assert int(a["valid"][0]) == 1


@pytest.mark.parametrize("level", [0, 2])
def test_prediction_in_other_heads_uses_their_anchors(level):
    # The same raw values in another head decode with that head's grid and anchors.
    heads = empty_heads()
    put(heads, level, 0, 1, 0, T)
    boxes, _, _ = detections(run(heads, [[64, 64]]))
    g = SIZE // STRIDES[level]
    aw, ah = ANCHORS[ANCHOR_MASK[level][0]]
    cx, cy = (sigmoid(T[0]) + 1) / g * SIZE, sigmoid(T[1]) / g * SIZE
    w, h = math.exp(T[2]) * aw, math.exp(T[3]) * ah
    expected = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 64)
    np.testing.assert_allclose(boxes[0], expected, atol=1e-3)


def greedy_agnostic(boxes, scores, conf, iou_threshold, limit):
    """Class-agnostic greedy NMS, box by box: indices of the kept boxes, best first."""
    best = scores.max(axis=-1)
    order = [i for i in np.argsort(-best, kind="stable") if best[i] > conf]
    kept = []
    for i in order:
        if len(kept) == limit:
            break
        x1, y1, x2, y2 = boxes[i]
        suppressed = False
        for j in kept:
            a1, b1, a2, b2 = boxes[j]
            inter = max(0.0, min(x2, a2) - max(x1, a1)) * max(0.0, min(y2, b2) - max(y1, b1))
            union = (x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter
            if inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def test_agnostic_nms_of_a_batch_equals_greedy_nms_image_by_image():
    # Crowded random images with different numbers of candidates (none in the last):
    # each image keeps the boxes of a plain greedy NMS, in its order, and the padding
    # rows are zero, so no image's boxes leak into another's.
    rng = np.random.default_rng(3)
    batch, n, limit = 4, 300, 5
    xy = rng.uniform(0, 100, (batch, n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (batch, n, 2))], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (batch, n, C)).astype(np.float32)
    scores *= (rng.uniform(0, 1, (batch, n, 1)) < np.array([0.9, 0.3, 0.05, 0.0])[:, None, None])
    decoder = YoloDecoder(ANCHORS, C, SIZE, conf=0.2, nms_iou=0.4, max_boxes=limit, agnostic=True)
    out = {key: np.asarray(value) for key, value in decoder.nms(boxes, scores).items()}
    total = limit * C
    assert out["boxes"].shape == (batch, total, 4)
    for image in range(batch):
        kept = greedy_agnostic(boxes[image], scores[image], 0.2, 0.4, total)
        valid = int(out["valid"][image])
        assert valid == len(kept)
        np.testing.assert_allclose(out["boxes"][image, :valid], boxes[image, kept])
        np.testing.assert_allclose(out["scores"][image, :valid], scores[image, kept].max(-1))
        assert out["classes"][image, :valid].tolist() == scores[image, kept].argmax(-1).tolist()
        assert not out["boxes"][image, valid:].any() and not out["scores"][image, valid:].any()
    assert [int(v) for v in out["valid"]][-1] == 0 and int(out["valid"][0]) == total
