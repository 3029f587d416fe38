"""Target encoding: level, anchor and cell assignment, and the gt_boxes list."""

import numpy as np
import pytest

from utils.config import ANCHOR_MASK, DEFAULT_ANCHORS, STRIDES
from utils.model_data import load_anchors
from utils.data.targets import build_targets, check_anchors, encode_targets, grid_sizes, pad_gt_boxes

SIZE = 128
NUM_CLASSES = 4
# Anchors scaled to the small test input so that each still fits inside it.
ANCHORS = load_anchors(DEFAULT_ANCHORS) * (SIZE / 416.0)


def _where(anchor):
    """(level, slot) of one of the nine anchors."""
    for lv, mask in enumerate(ANCHOR_MASK):
        if anchor in mask:
            return lv, mask.index(anchor)
    raise AssertionError(f"anchor {anchor} in no mask")


def _reference_encode(boxes, classes, anchors, size, num_classes):
    """Plain loop version of the assignment rule, to compare against."""
    out = [np.zeros((size // s, size // s, 3, 5 + num_classes), np.float32) for s in STRIDES]
    for box, cls in zip(boxes, classes):
        w, h = box[2] - box[0], box[3] - box[1]
        if w <= 0 or h <= 0:
            continue
        inter = np.minimum(w, anchors[:, 0]) * np.minimum(h, anchors[:, 1])
        iou = inter / (w * h + anchors[:, 0] * anchors[:, 1] - inter)
        level, slot = _where(int(np.argmax(iou)))
        grid = size // STRIDES[level]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        col = min(max(int(np.floor(cx / STRIDES[level])), 0), grid - 1)
        row = min(max(int(np.floor(cy / STRIDES[level])), 0), grid - 1)
        vec = np.zeros(5 + num_classes, np.float32)
        vec[:4] = [cx / size, cy / size, w / size, h / size]
        vec[4] = 1.0
        vec[5 + cls] = 1.0
        out[level][row, col, slot] = vec
    return out


@pytest.mark.parametrize("anchor", range(9))
def test_box_matching_an_anchor_lands_on_its_level_slot_and_cell(anchor):
    w, h = ANCHORS[anchor]
    cx, cy = 70.3, 41.7
    boxes = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], np.float32)
    y_true = [t.numpy() for t in encode_targets(boxes, np.array([2]), ANCHORS, SIZE, NUM_CLASSES)]
    level, slot = _where(anchor)
    stride = STRIDES[level]
    for lv, target in enumerate(y_true):
        nonzero = np.argwhere(target[..., 4] > 0)
        if lv != level:
            assert not target.any(), f"level {lv} should be empty for anchor {anchor}"
            continue
        assert nonzero.tolist() == [[int(cy // stride), int(cx // stride), slot]]
        vec = target[int(cy // stride), int(cx // stride), slot]
        np.testing.assert_allclose(vec[:4], [cx / SIZE, cy / SIZE, w / SIZE, h / SIZE], rtol=1e-5)
        np.testing.assert_array_equal(vec[4:], [1, 0, 0, 1, 0])
        # Only that one vector is non-zero.
        assert np.count_nonzero(target) == np.count_nonzero(vec)


def test_shapes_follow_strides():
    y_true = encode_targets(np.zeros((0, 4)), np.zeros((0,), np.int32), ANCHORS, SIZE, NUM_CLASSES)
    assert [tuple(t.shape) for t in y_true] == [(SIZE // s, SIZE // s, 3, 5 + NUM_CLASSES) for s in STRIDES]
    assert all(not t.numpy().any() for t in y_true)


def test_centre_on_the_border_is_clamped_into_the_grid():
    w, h = ANCHORS[8]
    boxes = np.array([[SIZE - w / 2, SIZE - h / 2, SIZE + w / 2, SIZE + h / 2]], np.float32)
    y32 = encode_targets(boxes, np.array([0]), ANCHORS, SIZE, NUM_CLASSES)[0].numpy()
    grid = SIZE // 32
    assert np.argwhere(y32[..., 4] > 0).tolist() == [[grid - 1, grid - 1, 2]]


def test_empty_boxes_are_skipped_everywhere():
    boxes = np.array([[10, 10, 10, 30], [10, 10, 30, 5], [5, 5, 25, 25]], np.float32)
    out = build_targets(boxes, np.array([0, 1, 3]), ANCHORS, SIZE, NUM_CLASSES, max_boxes=5)
    positives = sum(int(t.numpy()[..., 4].sum()) for t in out[:3])
    assert positives == 1
    gt = out[3].numpy()
    np.testing.assert_allclose(gt[0], np.array([15, 15, 20, 20]) / SIZE, rtol=1e-6)
    assert not gt[1:].any()


def test_colliding_boxes_keep_the_later_one():
    w, h = ANCHORS[4]
    a = [40 - w / 2, 40 - h / 2, 40 + w / 2, 40 + h / 2]
    b = [41 - w / 2, 42 - h / 2, 41 + w / 2, 42 + h / 2]
    y16 = encode_targets(np.array([a, b], np.float32), np.array([0, 3]), ANCHORS, SIZE, NUM_CLASSES)[1].numpy()
    cells = np.argwhere(y16[..., 4] > 0)
    assert cells.tolist() == [[2, 2, 1]]
    vec = y16[2, 2, 1]
    np.testing.assert_allclose(vec[:2], [41 / SIZE, 42 / SIZE], rtol=1e-6)
    np.testing.assert_array_equal(vec[4:], [1, 0, 0, 0, 1])


def test_matches_a_plain_loop_on_random_boxes():
    rng = np.random.default_rng(7)
    n = 40
    xy = rng.uniform(-5, SIZE + 5, (n, 2))
    wh = rng.uniform(-3, SIZE * 0.9, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
    classes = rng.integers(0, NUM_CLASSES, n)
    got = [t.numpy() for t in encode_targets(boxes, classes, ANCHORS, SIZE, NUM_CLASSES)]
    want = _reference_encode(boxes, classes, ANCHORS, SIZE, NUM_CLASSES)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    assert sum(int(g[..., 4].sum()) for g in got) > 10


def test_pad_gt_boxes_keeps_order_pads_and_truncates():
    boxes = np.array([[0, 0, 8, 4], [8, 8, 16, 24], [0, 0, 32, 32]], np.float32)
    gt = pad_gt_boxes(boxes, 32, max_boxes=5).numpy()
    np.testing.assert_allclose(gt[:3], [[4 / 32, 2 / 32, 8 / 32, 4 / 32], [0.375, 0.5, 0.25, 0.5], [0.5, 0.5, 1, 1]])
    assert not gt[3:].any()
    short = pad_gt_boxes(boxes, 32, max_boxes=2).numpy()
    np.testing.assert_allclose(short, gt[:2])


def test_invalid_arguments_are_reported():
    with pytest.raises(ValueError, match=r"\(9, 2\)"):
        check_anchors(np.ones((6, 2)))
    with pytest.raises(ValueError, match="positive"):
        check_anchors(-np.ones((9, 2)))
    with pytest.raises(ValueError, match="multiple of 32.*100"):
        grid_sizes(100)
    assert grid_sizes(416) == (13, 26, 52)
