"""VOC and COCO metrics on hand-computed cases, and the interchange files."""

import contextlib
import io
import math

import numpy as np
import pytest

from utils.boxes import np_iou
from utils.eval import map_files, voc_metric
from utils.eval.coco_metric import COCO_STAT_NAMES, evaluate_coco
from utils.eval.map_files import (
    ClassIndex,
    class_token,
    format_detections,
    format_ground_truth,
    read_map_files,
)
from utils.eval.structures import ImageDetections, ImageGroundTruth
from utils.eval.tables import format_voc_table, json_ready
from utils.eval.voc_metric import average_precision, evaluate_voc


def voc_iou(a, b):
    """IoU as the VOC devkit counts it, with inclusive pixels."""
    return np_iou(a, b, inclusive=True)


A = [0, 0, 9, 9]  # a 10 x 10 pixel box (inclusive pixels)
FAR = [100, 100, 119, 119]  # overlaps nothing


def gt(*objects):
    """objects: (box, class) or (box, class, difficult)."""
    boxes = np.array([o[0] for o in objects], float).reshape(-1, 4)
    classes = np.array([o[1] for o in objects], int)
    difficult = np.array([o[2] if len(o) > 2 else False for o in objects], bool)
    return ImageGroundTruth(boxes, classes, difficult)


def dets(*items):
    """items: (box, score, class)."""
    boxes = np.array([i[0] for i in items], float).reshape(-1, 4)
    return ImageDetections(boxes, np.array([i[1] for i in items], float), np.array([i[2] for i in items], int))


def both(ground_truth, detections, names=("a",), **kwargs):
    return (
        evaluate_voc(ground_truth, detections, list(names), **kwargs),
        evaluate_voc(ground_truth, detections, list(names), use_07_metric=True, **kwargs),
    )


def test_voc_iou_counts_inclusive_pixels():
    # 10x10 boxes overlapping on 5 columns: 50 / (100 + 100 - 50).
    assert voc_iou(A, [5, 0, 14, 9]) == pytest.approx(1 / 3)
    # Touching on one pixel column still overlaps with the +1 convention.
    assert voc_iou(A, [9, 0, 18, 9]) == pytest.approx(10 / 190)
    assert voc_iou(A, [10, 0, 19, 9]) == 0.0
    pairwise = voc_iou(np.array([A, FAR])[:, None], np.array([A, FAR, [5, 0, 14, 9]])[None])
    assert pairwise.shape == (2, 3)
    np.testing.assert_allclose(pairwise[0], [1.0, 0.0, 1 / 3])


def test_perfect_detector_has_ap_one():
    ground_truth = {"i1": gt((A, 0), (FAR, 1)), "i2": gt(([20, 20, 59, 79], 0))}
    detections = {
        "i1": dets((A, 0.9, 0), (FAR, 0.8, 1)),
        "i2": dets(([20, 20, 59, 79], 0.7, 0)),
    }
    for result in both(ground_truth, detections, names=("cat", "dog")):
        assert result["map"] == pytest.approx(1.0)
        for c in result["classes"]:
            assert c["ap"] == pytest.approx(1.0)
            assert (c["precision"], c["recall"], c["f1"]) == (1.0, 1.0, 1.0)
        assert result["totals"]["tp"] == 3 and result["totals"]["fp"] == 0


def test_false_positive_ranked_first():
    # Ranked: FP (0.9), TP (0.8), TP (0.4). Precision 0, 1/2, 2/3 at recall 0, 1/2, 1:
    # envelope 2/3 everywhere -> AP 2/3 for both methods.
    ground_truth = {"i1": gt((A, 0)), "i2": gt((A, 0))}
    detections = {"i1": dets((FAR, 0.9, 0), (A, 0.8, 0)), "i2": dets((A, 0.4, 0))}
    all_point, eleven = both(ground_truth, detections)
    assert all_point["map"] == pytest.approx(2 / 3)
    assert eleven["map"] == pytest.approx(2 / 3)
    c = all_point["classes"][0]
    # At score 0.5: the FP and one TP.
    assert (c["tp"], c["fp"]) == (1, 1)
    assert c["precision"] == pytest.approx(0.5)
    assert c["recall"] == pytest.approx(0.5)
    assert c["f1"] == pytest.approx(0.5)
    recall, precision = all_point["curves"]["a"]
    np.testing.assert_allclose(recall, [0, 0.5, 1.0])
    np.testing.assert_allclose(precision, [0, 0.5, 2 / 3])


def test_duplicate_detection_is_a_false_positive():
    # Ranked: TP (i1), duplicate of it (FP), TP (i2). Precision 1, 1/2, 2/3 at recall
    # 1/2, 1/2, 1. All-point: 1/2 * 1 + 1/2 * 2/3 = 5/6. 11-point: recall >= 0..0.5 ->
    # 1 (6 points), >= 0.6..1 -> 2/3 (5 points): (6 + 10/3) / 11 = 28/33.
    ground_truth = {"i1": gt((A, 0)), "i2": gt((A, 0))}
    detections = {"i1": dets((A, 0.9, 0), ([0, 0, 9, 10], 0.8, 0)), "i2": dets((A, 0.7, 0))}
    all_point, eleven = both(ground_truth, detections)
    assert all_point["map"] == pytest.approx(5 / 6)
    assert eleven["map"] == pytest.approx(28 / 33)
    assert (all_point["classes"][0]["tp"], all_point["classes"][0]["fp"]) == (2, 1)


def test_eleven_point_and_all_point_differ():
    # 4 objects; ranked TP, FP, TP, TP: precision 1, 1/2, 2/3, 3/4 at recall
    # 1/4, 1/4, 1/2, 3/4.
    # All-point: 1/4 * 1 + 1/4 * 3/4 + 1/4 * 3/4 = 0.625.
    # 11-point: t = 0, .1, .2 -> 1; t = .3 ... .7 -> 3/4; t = .8, .9, 1 -> 0: 6.75 / 11.
    ground_truth = {f"i{k}": gt((A, 0)) for k in range(4)}
    detections = {
        "i0": dets((A, 0.9, 0), (FAR, 0.8, 0)),
        "i1": dets((A, 0.7, 0)),
        "i2": dets((A, 0.6, 0)),
    }
    all_point, eleven = both(ground_truth, detections)
    assert all_point["map"] == pytest.approx(0.625)
    assert eleven["map"] == pytest.approx(6.75 / 11)
    assert average_precision([0.25, 0.25, 0.5, 0.75], [1, 0.5, 2 / 3, 0.75]) == pytest.approx(0.625)
    assert average_precision([0.25, 0.25, 0.5, 0.75], [1, 0.5, 2 / 3, 0.75], use_07_metric=True) == pytest.approx(
        6.75 / 11
    )


def test_eleven_point_counts_recall_equal_to_a_step():
    # Recall exactly 0.3 must count for the 0.3 step although 0.1 * 3 != 0.3 in floats.
    assert average_precision([0.3], [1.0], use_07_metric=True) == pytest.approx(4 / 11)


def test_difficult_object_matched_is_ignored():
    # The detection on the difficult object (ranked first) is neither TP nor FP, and the
    # difficult object does not count in recall: AP 1, precision 1.
    ground_truth = {"i1": gt((A, 0), (FAR, 0, True))}
    detections = {"i1": dets((FAR, 0.9, 0), (A, 0.8, 0))}
    all_point, eleven = both(ground_truth, detections)
    c = all_point["classes"][0]
    assert all_point["map"] == pytest.approx(1.0) and eleven["map"] == pytest.approx(1.0)
    assert (c["num_gt"], c["num_difficult"], c["num_detections"]) == (1, 1, 2)
    assert (c["tp"], c["fp"], c["precision"], c["recall"]) == (1, 0, 1.0, 1.0)
    assert len(all_point["curves"]["a"][0]) == 1  # the ignored detection is not on the curve

    # Same boxes with the object not difficult: the first detection is now a TP too.
    not_difficult = {"i1": gt((A, 0), (FAR, 0))}
    assert evaluate_voc(not_difficult, detections, ["a"])["classes"][0]["num_gt"] == 2


def test_difficult_object_unmatched_does_not_lower_recall():
    ground_truth = {"i1": gt((A, 0), (FAR, 0, True))}
    detections = {"i1": dets((A, 0.8, 0))}
    result = evaluate_voc(ground_truth, detections, ["a"])
    assert result["map"] == pytest.approx(1.0)
    assert result["classes"][0]["recall"] == pytest.approx(1.0)
    # Without the difficult flag the same case misses one object of two.
    missed = evaluate_voc({"i1": gt((A, 0), (FAR, 0))}, detections, ["a"])
    assert missed["map"] == pytest.approx(0.5)


def test_class_without_ground_truth_is_left_out_of_the_mean():
    ground_truth = {"i1": gt((A, 0))}
    detections = {"i1": dets((A, 0.9, 0), (FAR, 0.9, 1))}
    result = evaluate_voc(ground_truth, detections, ["a", "ghost", "empty"])
    assert result["map"] == pytest.approx(1.0)
    assert result["classes_without_ground_truth"] == ["ghost", "empty"]
    assert math.isnan(result["classes"][1]["ap"])
    assert result["classes"][1]["num_detections"] == 1
    table = format_voc_table(result)
    assert "ghost" in table and "left out of the mean" in table
    clean = json_ready(result)
    assert clean["classes"][1]["ap"] is None and "curves" not in clean

    nothing = evaluate_voc({"i1": gt()}, {}, ["a"])
    assert math.isnan(nothing["map"])


def test_iou_threshold_is_inclusive_and_overlap_below_is_false_positive():
    # IoU exactly 0.5 (100 / 200) matches; 1/3 does not.
    ground_truth = {"i1": gt((A, 0)), "i2": gt((A, 0))}
    detections = {"i1": dets(([0, 0, 19, 9], 0.9, 0)), "i2": dets(([5, 0, 14, 9], 0.8, 0))}
    c = evaluate_voc(ground_truth, detections, ["a"])["classes"][0]
    assert (c["tp"], c["fp"]) == (1, 1)
    c = evaluate_voc(ground_truth, detections, ["a"], iou_threshold=0.3)["classes"][0]
    assert (c["tp"], c["fp"]) == (2, 0)


def test_detection_is_compared_only_with_its_best_overlap():
    # The second detection overlaps the matched object A most (IoU 0.82) and the free
    # object B less (0.54): as in the devkit it is a false positive, not B's match.
    b = [4, 0, 13, 9]
    ground_truth = {"i1": gt((A, 0), (b, 0))}
    detections = {"i1": dets((A, 0.9, 0), ([1, 0, 10, 9], 0.8, 0))}
    result = evaluate_voc(ground_truth, detections, ["a"])
    c = result["classes"][0]
    assert (c["tp"], c["fp"]) == (1, 1)
    assert result["map"] == pytest.approx(0.5)


def test_equal_scores_keep_input_order():
    # Same score: the FP listed first is ranked first, so precision is 0 then 1/2.
    ground_truth = {"i1": gt((A, 0))}
    first_fp = evaluate_voc(ground_truth, {"i1": dets((FAR, 0.5, 0), (A, 0.5, 0))}, ["a"])
    first_tp = evaluate_voc(ground_truth, {"i1": dets((A, 0.5, 0), (FAR, 0.5, 0))}, ["a"])
    assert first_fp["map"] == pytest.approx(0.5)
    assert first_tp["map"] == pytest.approx(1.0)


def test_sequences_and_dicts_are_accepted():
    ground_truth = [{"boxes": [A], "classes": [0]}, {"boxes": np.zeros((0, 4)), "classes": []}]
    detections = [{"boxes": [A], "scores": [0.9], "classes": [0]}, {"boxes": [FAR], "scores": [0.2], "classes": [0]}]
    result = evaluate_voc(ground_truth, detections, ["a"])
    assert result["map"] == pytest.approx(1.0)
    assert result["num_images"] == 2
    assert result["classes"][0]["num_detections"] == 2


def test_bad_inputs_raise_with_the_value():
    with pytest.raises(ValueError, match="class id 3"):
        evaluate_voc({"i1": gt((A, 3))}, {}, ["a"])
    with pytest.raises(ValueError, match="'stray'"):
        evaluate_voc({"i1": gt((A, 0))}, {"stray": dets((A, 0.5, 0))}, ["a"])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        evaluate_voc({"i1": {"boxes": [0, 1, 2], "classes": [0]}}, {}, ["a"])


def _reference_voc(ground_truth, detections, num_classes, iou_threshold, use_07_metric):
    """Straightforward per-detection loop, written after the devkit's description."""
    aps = []
    for cls in range(num_classes):
        objects = {}
        for image_id, g in ground_truth.items():
            sel = g.classes == cls
            objects[image_id] = (g.boxes[sel], g.difficult[sel], np.zeros(sel.sum(), bool))
        npos = sum(int((~d).sum()) for _, d, _ in objects.values())
        items = []
        for image_id, d in detections.items():
            for box, score, c in zip(d.boxes, d.scores, d.classes):
                if c == cls:
                    items.append((score, image_id, box))
        items.sort(key=lambda item: -item[0])
        tp, fp = [], []
        for _, image_id, box in items:
            boxes, difficult, used = objects[image_id]
            best, best_j = -1.0, -1
            for j, g_box in enumerate(boxes):
                iou = float(voc_iou(box, g_box))
                if iou > best:
                    best, best_j = iou, j
            if best >= iou_threshold and difficult[best_j]:
                continue
            if best >= iou_threshold and not used[best_j]:
                used[best_j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, 1)
        aps.append(average_precision(rec, prec, use_07_metric))
    return float(np.mean(aps))


def _random_case(rng, num_images, num_classes, dets_per_image):
    ground_truth, detections = {}, {}
    for i in range(num_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.round(np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1))
        ground_truth[f"im{i}"] = ImageGroundTruth(boxes, rng.integers(0, num_classes, n), rng.random(n) < 0.2)
        m = dets_per_image
        det_classes = rng.integers(0, num_classes, m)
        if n:
            pick = rng.integers(0, n, m)
            det_boxes = boxes[pick] + rng.normal(0, 4, (m, 4))
            det_classes = np.where(rng.random(m) < 0.7, ground_truth[f"im{i}"].classes[pick], det_classes)
        else:
            xy = rng.uniform(0, 60, (m, 2))
            det_boxes = np.concatenate([xy, xy + 20], axis=1)
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2])
        # Scores rounded to force ties; the reference sorts stably too.
        scores = np.round(rng.random(m), 2)
        detections[f"im{i}"] = ImageDetections(det_boxes, scores, det_classes)
    return ground_truth, detections


@pytest.mark.parametrize("use_07_metric", [False, True])
def test_vectorized_matching_agrees_with_a_plain_loop(monkeypatch, use_07_metric):
    rng = np.random.default_rng(3)
    ground_truth, detections = _random_case(rng, num_images=40, num_classes=3, dets_per_image=8)
    # Small IoU blocks so that the chunked path runs several times.
    monkeypatch.setattr(voc_metric, "_IOU_BLOCK", 7)
    result = evaluate_voc(ground_truth, detections, ["a", "b", "c"], use_07_metric=use_07_metric)
    expected = _reference_voc(ground_truth, detections, 3, 0.5, use_07_metric)
    assert result["map"] == pytest.approx(expected, abs=1e-12)
    assert 0.05 < result["map"] < 0.95  # a case with both hits and misses


def _coco_direct(ground_truth, detections, num_classes):
    """pycocotools run directly: ids from 1, bbox [x, y, x2 - x, y2 - y], difficult as crowd."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_number, (image_id, g) in enumerate(ground_truth.items(), 1):
        images.append({"id": image_number})
        for box, cls, diff in zip(g.boxes, g.classes, g.difficult):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_number,
                    "category_id": int(cls) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(diff),
                }
            )
        d = detections[image_id]
        for box, score, cls in zip(d.boxes, d.scores, d.classes):
            results.append(
                {
                    "image_id": image_number,
                    "category_id": int(cls) + 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1} for k in range(num_classes)],
        }
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_coco_metrics_agree_with_pycocotools_run_directly():
    rng = np.random.default_rng(5)
    ground_truth, detections = _random_case(rng, num_images=25, num_classes=3, dets_per_image=6)
    # Boxes of all three COCO size ranges.
    ground_truth["big"] = gt(([0, 0, 199, 149], 0), ([10, 10, 60, 60], 2, True))
    detections["big"] = dets(([2, 1, 197, 150], 0.95, 0), ([12, 10, 60, 61], 0.9, 2))
    result = evaluate_coco(ground_truth, detections, ["a", "b", "c"])
    expected = _coco_direct(ground_truth, detections, 3)
    got = np.array([result["stats"][name] for name in COCO_STAT_NAMES])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[0] > 0.1  # something was matched
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in result["summary"]
    assert result["num_gt"] == sum(len(g.classes) for g in ground_truth.values())


def test_coco_class_zero_counts_and_no_detections_do_not_crash():
    ground_truth = {"i1": gt((A, 0)), "i2": gt(([0, 0, 99, 99], 0))}
    detections = {"i1": dets((A, 0.9, 0)), "i2": dets(([0, 0, 99, 99], 0.8, 0))}
    assert evaluate_coco(ground_truth, detections, ["only"])["stats"]["AP"] == pytest.approx(1.0)
    empty = evaluate_coco(ground_truth, {}, ["only"])
    assert empty["num_detections"] == 0
    assert empty["stats"]["AP"] == 0.0


# The interchange files.


def test_class_index_maps_underscored_names_back():
    index = ClassIndex(["traffic light", "a_b", "stop sign"])
    assert class_token("traffic light") == "traffic_light"
    assert index.lookup("traffic_light") == 0
    assert index.lookup("traffic light") == 0
    assert index.lookup("a_b") == 1
    assert index.lookup("bus") is None


def test_files_round_trip_with_spaces_and_odd_characters(tmp_path):
    names = ["traffic light", "pot-ted.plant#2", "3"]
    (tmp_path / "ground-truth").mkdir()
    (tmp_path / "detection-results").mkdir()
    g = gt(([1, 2, 30, 40], 0), ([5, 5, 9.5, 9], 1, True), ([7, 7, 20, 20], 2))
    d = dets(([1, 2, 30, 40], 0.75, 0), ([5, 5, 9.5, 9], 0.5, 1), ([7, 7, 20, 20], 0.25, 2))
    text = format_ground_truth(g, names)
    assert text.splitlines() == ["traffic_light 1 2 30 40", "pot-ted.plant#2 5 5 9.50 9 difficult", "3 7 7 20 20"]
    (tmp_path / "ground-truth" / "img.txt").write_text(text)
    (tmp_path / "detection-results" / "img.txt").write_text(format_detections(d.boxes, d.scores, d.classes, names))
    files = read_map_files(tmp_path, names)
    assert files.problems == []
    back = files.ground_truth["img"]
    np.testing.assert_allclose(back.boxes, g.boxes)
    assert back.classes.tolist() == [0, 1, 2] and back.difficult.tolist() == [False, True, False]
    det = files.detections["img"]
    np.testing.assert_allclose(det.scores, [0.75, 0.5, 0.25])
    assert det.classes.tolist() == [0, 1, 2]

    # Without a class list, the names come from the files, sorted.
    files = read_map_files(tmp_path)
    assert files.class_names == ["3", "pot-ted.plant#2", "traffic_light"]
    assert files.ground_truth["img"].classes.tolist() == [2, 1, 0]
    assert files.detections["img"].classes.tolist() == [2, 1, 0]


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_is_used(tmp_path):
    gt_dir, det_dir = tmp_path / "ground-truth", tmp_path / "detection-results"
    gt_dir.mkdir()
    det_dir.mkdir()
    (gt_dir / "a.txt").write_text("cat 0 0 9 9\ncat 0 0 9\ncat -3 0 9 9\n\ndog 0 0 9 9 difficult\n")
    (gt_dir / "b.txt").write_text("cat 20 20 10 30\ncat 0 0 9 9\n")
    (gt_dir / "c.txt").write_text("")
    (det_dir / "a.txt").write_text(
        "cat 0.9 0 0 9 9\ncat high 0 0 9 9\nbird 0.5 0 0 9 9\ncat 0.8 0 0 nan 9\ncat 0.6 -3 0 9 9\n"
    )
    (det_dir / "b.txt").write_text("cat 0.7 0 0 9 9\n")
    (det_dir / "orphan.txt").write_text("cat 0.7 0 0 9 9\n")
    files = read_map_files(tmp_path, ["cat", "dog"])
    joined = "\n".join(files.problems)

    def reported(name, lineno, words):
        hits = [p for p in files.problems if f"{name}:{lineno}:" in p]
        assert hits, f"nothing reported for {name}:{lineno} in:\n{joined}"
        assert words in hits[0]

    reported(gt_dir / "a.txt", 2, "expected")
    reported(gt_dir / "b.txt", 1, "inverted")
    reported(det_dir / "a.txt", 2, "not numbers")
    reported(det_dir / "a.txt", 3, "unknown class 'bird'")
    reported(det_dir / "a.txt", 4, "not finite")
    assert any(str(det_dir / "orphan.txt") in p and "missing" in p for p in files.problems)
    assert len(files.problems) == 6
    # The good lines are kept; a box past the image border (negative coordinate) is valid.
    assert files.ground_truth["a"].classes.tolist() == [0, 0, 1]
    assert files.ground_truth["a"].difficult.tolist() == [False, False, True]
    np.testing.assert_array_equal(files.ground_truth["a"].boxes[1], [-3, 0, 9, 9])
    assert len(files.ground_truth["b"].classes) == 1
    assert len(files.ground_truth["c"].classes) == 0
    assert files.detections["a"].scores.tolist() == [0.9, 0.6]
    assert "orphan" not in files.detections
    result = evaluate_voc(files.ground_truth, files.detections, files.class_names)
    assert result["map"] == pytest.approx(1.0)


def _random_line(rng, detection):
    """A line of a ground-truth or detection file, well formed or not (odd spacing, numbers, names, ends)."""
    name = str(rng.choice(["cat", "dog", "3", "traffic_light", "traffic light", "bird", "dïfficult"]))
    numbers = [f"{rng.random():.3f}"] if detection else []
    x, y = rng.uniform(-5, 50, 2)
    numbers += [f"{v:.1f}" for v in (x, y, x + rng.uniform(-3, 40), y + rng.uniform(-3, 40))]
    if rng.random() < 0.1:
        numbers[rng.integers(len(numbers))] = str(rng.choice(["nan", "-inf", "1e400", "1_0", "x", "0x10", "+5", ".5"]))
    tokens = [name, *numbers] + (["difficult"] if not detection and rng.random() < 0.2 else [])
    if rng.random() < 0.08:
        tokens = [tokens[:-1], [*tokens, "difficult"], [*tokens, "7"]][rng.integers(3)]
    odd = rng.random() < 0.3  # spacing the plain form does not have
    line = str(rng.choice([" ", "  ", "\t", "\xa0"]) if odd else " ").join(tokens)
    return str(rng.choice(["", " ", "\x0c"]) if odd else "") + line


def _random_files(folder, rng):
    """Ground-truth and detection files as this project writes them, with some written otherwise."""
    for sub in ("ground-truth", "detection-results"):
        (folder / sub).mkdir(parents=True)
    for k in range(int(rng.integers(1, 25))):
        plain = rng.random() < 0.5
        for sub in ("ground-truth", "detection-results"):
            detection = sub == "detection-results"
            if rng.random() < 0.08:
                continue  # no ground truth for these detections, or no detections for this image
            lines = []
            for _ in range(int(rng.integers(0, 6))):
                if plain or rng.random() < 0.6:
                    x, y = rng.integers(0, 50, 2)
                    numbers = [f"{rng.random():.6f}"] if detection else []
                    numbers += [str(v) for v in (x, y, x + rng.integers(0, 30), y + rng.integers(0, 30))]
                    lines.append(" ".join([str(rng.choice(["cat", "dog", "3"])), *numbers])
                                 + (" difficult" if not detection and rng.random() < 0.3 else ""))
                else:
                    lines.append(_random_line(rng, detection))
            end = "\n" if plain or rng.random() < 0.7 else str(rng.choice(["\r\n", "\r"]))
            data = (end.join(lines) + (end if rng.random() < 0.9 else "")).encode()
            if not plain and rng.random() < 0.05:
                data = b"\xff" + data  # not UTF-8
            (folder / sub / f"{k:03d}.txt").write_bytes(data)


def _tricky_files(folder):
    """Files in plain form (single spaces, "\\n" line ends) whose lines are not all what they look like."""
    texts = {
        "ground-truth": {
            "a": "cat 1 2 3 4 7\ncat 0 0 9 9\n",  # a sixth token that is not "difficult": class "cat 1"
            "b": "traffic light 1 2 3 4\ndog 0 0 9 9 difficult\n",
            "c": "cat 1 2 3 difficult\n",
            "d": "dog 5 5 1 1\n3 0 0 9 9",
            "e": "",
            "f": "\n",
            "g": "cat 0 0 9 9\n",
        },
        "detection-results": {
            "a": "cat 0.5 1 2 3 4 difficult\ncat 0.5 1 2 3\n",
            "b": "3 0.5 1 2 3 4\ncat 0.5 1 2 3 1e400\n",
            "c": "cat 0.5 1 2 3 4",
            "d": "dog 0.9 5 5 9 9\n",
            "g": "cat 0.25 0 0 9 9\ncat 0.75 0 0 9 9\n",
        },
    }
    for sub, files in texts.items():
        (folder / sub).mkdir(parents=True)
        for name, text in files.items():
            (folder / sub / f"{name}.txt").write_text(text)


@pytest.mark.parametrize("seed", range(4))
def test_files_read_together_give_what_each_file_read_alone_gives(tmp_path, monkeypatch, seed):
    """Plain files are parsed together (``map_files._parse_plain``), the others one by one: both give the
    same rows, class names and messages, in the same order."""
    rng = np.random.default_rng(seed)
    parse_plain, parsed = map_files._parse_plain, []

    def counted(datas, line_format, classes):
        found = parse_plain(datas, line_format, classes)
        parsed.append(len(found))
        return found

    for k in range(6):
        folder = tmp_path / f"{k}"
        _tricky_files(folder) if k == 0 and seed == 0 else _random_files(folder, rng)
        chunk = int(rng.choice([1, 60, 500, 1 << 24]))
        for class_names in (None, ["cat", "dog", "traffic light", "3"], ["bird"]):
            monkeypatch.setattr(map_files, "_CHUNK_BYTES", chunk)
            monkeypatch.setattr(map_files, "_parse_plain", counted)
            together = read_map_files(folder, class_names)
            monkeypatch.setattr(map_files, "_parse_plain", lambda datas, line_format, classes: {})
            alone = read_map_files(folder, class_names)
            monkeypatch.undo()
            assert together.class_names == alone.class_names
            assert together.problems == alone.problems
            for mine, theirs in ((together.ground_truth, alone.ground_truth), (together.detections, alone.detections)):
                assert list(mine) == list(theirs)
                for image_id, entry in mine.items():
                    for field in ("boxes", "classes", "difficult", "scores"):
                        if hasattr(entry, field):
                            ours, reference = getattr(entry, field), getattr(theirs[image_id], field)
                            assert ours.dtype == reference.dtype and ours.shape == reference.shape
                            np.testing.assert_array_equal(ours, reference)
    assert sum(parsed) > 0  # some files were parsed together
