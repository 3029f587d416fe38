"""Target encoding: level, anchor and cell assignment, and the gt_boxes list."""

import numpy as np
import pytest

from utils.config import ANCHOR_MASK, DEFAULT_ANCHORS, STRIDES
from utils.data.targets import build_targets, check_anchors, encode_targets, grid_sizes, pad_gt_boxes
from utils.model_data import load_anchors

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


# --- the yolov5 assigner ------------------------------------------------------------------

# Nine anchors at a 128 input, sorted by area: a 20x20 box is within 4x of anchors 2
# (6x6, stride 8), 3 (10x10) and 4 (30x30) (both stride 16), and of no other.
V5_ANCHORS = np.array([[2, 2], [3, 3], [6, 6], [10, 10], [30, 30], [90, 90], [100, 100], [110, 110], [120, 120]],
                      np.float32)


def _positives(y_true):
    """Sorted (level, row, col, slot) of every positive entry."""
    return sorted((lv, *map(int, idx)) for lv, t in enumerate(y_true) for idx in np.argwhere(t[..., 4] > 0))


def _encode_v5(boxes, classes, anchors=V5_ANCHORS):
    return [t.numpy() for t in encode_targets(np.asarray(boxes, np.float32), np.asarray(classes), anchors, SIZE,
                                              NUM_CLASSES, assigner="yolov5")]


def _box(cx, cy, w, h):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_yolov5_box_fitting_two_anchors_of_one_level_and_one_of_another_gets_all_three():
    y_true = _encode_v5([_box(52.0, 52.0, 20, 20)], [1])  # at a cell corner of every level
    matched = sorted({(lv, slot) for lv, _, _, slot in _positives(y_true)})
    # Level 1 is stride 16 (anchors 3, 4, 5 -> slots 0, 1); level 2 stride 8 (anchor 2 -> slot 2).
    assert matched == [(1, 0), (1, 1), (2, 2)]
    assert not y_true[0].any()
    for lv, row, col, slot in _positives(y_true):
        vec = y_true[lv][row, col, slot]
        np.testing.assert_allclose(vec[:4], np.array([52, 52, 20, 20]) / SIZE, rtol=1e-6)
        np.testing.assert_array_equal(vec[4:], [1, 0, 1, 0, 0])


def test_yolov3_gives_the_same_box_its_best_anchor_only():
    y_true = [t.numpy() for t in encode_targets(np.array([_box(52.0, 52.0, 20, 20)], np.float32), np.array([1]),
                                                V5_ANCHORS, SIZE, NUM_CLASSES)]
    assert _positives(y_true) == [(1, 3, 3, 1)]


@pytest.mark.parametrize("frac, expected_shift", [((0.2, 0.3), (-1, -1)), ((0.8, 0.7), (1, 1)),
                                                  ((0.3, 0.9), (-1, 1)), ((0.6, 0.1), (1, -1))])
def test_yolov5_neighbours_are_the_two_nearest_cells(frac, expected_shift):
    stride, col, row = 8, 6, 9  # stride 8 is level 2; the 6x6-ish box matches anchor 2 only there
    cx, cy = (col + frac[0]) * stride, (row + frac[1]) * stride
    y_true = _encode_v5([_box(cx, cy, 6, 6)], [0])
    cells = {(r, c) for lv, r, c, slot in _positives(y_true) if lv == 2 and slot == 2}
    dx, dy = expected_shift
    assert cells == {(row, col), (row, col + dx), (row + dy, col)}
    assert (row, col - dx) not in cells and (row - dy, col) not in cells


def test_yolov5_never_assigns_a_cell_outside_the_grid():
    grid = SIZE // 8
    corners = [_box(1.0, 1.0, 6, 6), _box(SIZE - 1.0, SIZE - 1.0, 6, 6), _box(1.0, SIZE - 1.0, 6, 6),
               _box(SIZE + 3.0, -2.0, 6, 6)]
    y_true = _encode_v5(corners, [0, 1, 2, 3])
    level2 = [(r, c) for lv, r, c, slot in _positives(y_true) if lv == 2 and slot == 2]
    assert all(0 <= r < grid and 0 <= c < grid for r, c in level2)
    # Each corner keeps its own cell; both of its nearest neighbours are outside the grid.
    assert sorted(level2) == sorted([(0, 0), (grid - 1, grid - 1), (grid - 1, 0), (0, grid - 1)])


def test_yolov5_collisions_prefer_a_box_in_its_own_cell_then_the_later_box():
    stride = 8
    own = _box(5.5 * stride, 5.5 * stride, 6, 6)  # cell (5, 5), right/lower half: neighbours (5, 6), (6, 5)
    neighbour = _box(6.2 * stride, 5.6 * stride, 6, 6)  # cell (5, 6), left half: neighbour (5, 5)
    for order in ((own, neighbour), (neighbour, own)):
        classes = [0, 1] if order[0] is own else [1, 0]
        y8 = _encode_v5(list(order), classes)[2]
        assert y8[5, 5, 2, 5 + 0] == 1 and y8[5, 6, 2, 5 + 1] == 1  # each keeps its own cell
    twin = _box(5.6 * stride, 5.7 * stride, 6, 6)  # the same cells as `own`: the later box wins them all
    y8 = _encode_v5([own, twin], [0, 3])[2]
    for row, col in ((5, 5), (5, 6), (6, 5)):
        np.testing.assert_array_equal(y8[row, col, 2, 4:], [1, 0, 0, 0, 1])


def test_yolov3_targets_are_the_plain_loop_bit_for_bit():
    rng = np.random.default_rng(11)
    n = 60
    # Centres on a coarse lattice, so that many boxes collide on one cell and anchor.
    xy = np.round(rng.uniform(-5, SIZE + 5, (n, 2)) / 16) * 16 + rng.uniform(0, 3, (n, 2))
    wh = rng.uniform(-3, SIZE * 0.9, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
    classes = rng.integers(0, NUM_CLASSES, n)
    got = [t.numpy() for t in encode_targets(boxes, classes, ANCHORS, SIZE, NUM_CLASSES, assigner="yolov3")]
    want = _reference_encode(boxes, classes, ANCHORS, SIZE, NUM_CLASSES)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def _raw_for(assigner, offset, size_ratio):
    """Raw head values that ``assigner``'s box coding decodes to a centre ``offset``
    cells from its cell's corner and a size ``size_ratio`` times its anchor's."""
    if assigner == "yolov5":  # centre 2 sigma - 0.5, size (2 sigma)^2 anchors
        sig = np.concatenate([(offset + 0.5) / 2.0, np.sqrt(size_ratio) / 2.0])
        assert np.all((sig > 0) & (sig < 1)), "a target the coding cannot reach"
        return np.log(sig / (1 - sig))
    return np.concatenate([np.log(offset / (1 - offset)), np.log(size_ratio)])


@pytest.mark.parametrize("assigner, seed, max_side, min_targets", [("yolov3", 4, 100, 6), ("yolov5", 3, 60, 37)])
def test_targets_decode_back_to_their_boxes(assigner, seed, max_side, min_targets):
    """Every target (for yolov5 the neighbour cells too) is reachable by its assigner's
    box coding: the raw values that encode it at its cell and anchor decode to the box."""
    from utils.decode import decode_head

    rng = np.random.default_rng(seed)
    n = 12
    xy = rng.uniform(4, SIZE - 4, (n, 2))
    wh = rng.uniform(4, max_side, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
    y_true = [t.numpy() for t in encode_targets(boxes, rng.integers(0, NUM_CLASSES, n), ANCHORS, SIZE,
                                                NUM_CLASSES, assigner=assigner)]
    checked = 0
    for lv, target in enumerate(y_true):
        grid = target.shape[0]
        anchors = ANCHORS[list(ANCHOR_MASK[lv])]
        raw = np.zeros(target.shape, np.float32)
        for row, col, slot in np.argwhere(target[..., 4] > 0):
            cx, cy, w, h = target[row, col, slot, :4]
            offset = np.array([cx * grid - col, cy * grid - row])
            raw[row, col, slot, :4] = _raw_for(assigner, offset, np.array([w, h]) * SIZE / anchors[slot])
            checked += 1
        decoded = np.asarray(decode_head(raw.reshape(1, grid, grid, -1), anchors, NUM_CLASSES, (SIZE, SIZE),
                                         assigner)[0])[0]
        mask = target[..., 4] > 0
        np.testing.assert_allclose(decoded[mask], target[..., :4][mask], atol=1e-4)
    assert checked >= min_targets


def test_unknown_assigner_is_refused():
    with pytest.raises(ValueError, match="yolov3, yolov5"):
        encode_targets(np.zeros((0, 4)), np.zeros((0,), np.int32), ANCHORS, SIZE, NUM_CLASSES, assigner="atss")
