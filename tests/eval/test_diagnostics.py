"""The evaluation's diagnostics on constructed cases: the confusion matrix against a
hand count, the judged detections against plain loops, the PR curves' areas against AP,
the best-F1 confidence against a brute-force search, the size-split APs against a hand
computation, the error gallery, and the operating-point file predict.py reads."""

import json

import numpy as np
import pytest

from utils.boxes import np_iou
from utils.eval.confusion import (
    BACKGROUND_IOU,
    CORRECT,
    DUPLICATE,
    FALSE_POSITIVE,
    FOUND,
    IGNORED,
    MISSED,
    POOR_LOCALIZATION,
    WRONG_CLASS,
    confusion_matrix,
    judge_image,
    judge_images,
)
from utils.eval.curves import best_f1, mean_envelope, pr_envelope, step_area
from utils.eval.structures import ImageDetections, ImageGroundTruth
from utils.eval.voc_metric import average_precision, evaluate_voc


def gt(*objects):
    """Ground truth from (box, class[, difficult]) tuples."""
    boxes = [o[0] for o in objects]
    return ImageGroundTruth(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray([o[1] for o in objects], np.int64),
                            np.asarray([len(o) > 2 and o[2] for o in objects], bool))


def dets(*found):
    """Detections from (box, score, class) tuples."""
    return ImageDetections(np.asarray([f[0] for f in found], np.float64).reshape(-1, 4),
                           np.asarray([f[1] for f in found], np.float64), np.asarray([f[2] for f in found], np.int64))


def planted_errors():
    """Two images, classes a (0) and b (1), with every kind of error once or more.

    img1: object A (a) found (0.9) and found again (0.6, a duplicate), object B (b)
    detected as a (0.8: wrong class), a b far from everything (0.7: false positive),
    object C (a) detected only below the confidence (0.1: missed).
    img2: a difficult b detected (0.9: ignored), an object b missed, an object a whose
    detection covers a quarter of it (0.5, IoU 0.25: poor localization, the object missed).
    """
    ground_truth = {
        "img1": gt(([0, 0, 9, 9], 0), ([20, 20, 29, 29], 1), ([40, 40, 49, 49], 0)),
        "img2": gt(([0, 0, 9, 9], 1, True), ([20, 20, 29, 29], 1), ([40, 40, 59, 59], 0)),
    }
    detections = {
        "img1": dets(([0, 0, 9, 9], 0.9, 0), ([20, 20, 29, 29], 0.8, 0), ([60, 60, 69, 69], 0.7, 1),
                     ([0, 0, 9, 10], 0.6, 0), ([40, 40, 49, 49], 0.1, 0)),
        "img2": dets(([0, 0, 9, 9], 0.9, 1), ([40, 40, 49, 49], 0.5, 0)),
    }
    return ground_truth, detections


def test_confusion_matrix_equals_a_hand_count():
    ground_truth, detections = planted_errors()
    judged = judge_images(ground_truth, detections, 2, conf=0.25, iou_threshold=0.5)
    matrix = confusion_matrix(judged, 2)
    # Rows true a, b, background; columns predicted a, b, background.
    # a->a: A. b->a: B. a missed: C and img2's a. b missed: img2's b (the difficult one
    # does not count). Background -> b: the far b. Background -> a: the duplicate and
    # the poorly localized one.
    np.testing.assert_array_equal(matrix, [[1, 0, 2], [1, 0, 1], [2, 1, 0]])
    assert judged["img1"].det_kind == ["correct", WRONG_CLASS, FALSE_POSITIVE, DUPLICATE]
    assert judged["img2"].det_kind == ["ignored", POOR_LOCALIZATION]
    assert judged["img1"].gt_kind == ["found", WRONG_CLASS, MISSED]
    assert judged["img2"].gt_kind == ["ignored", MISSED, MISSED]
    assert judged["img1"].error_counts() == {FALSE_POSITIVE: 1, WRONG_CLASS: 1, POOR_LOCALIZATION: 0,
                                              DUPLICATE: 1, MISSED: 1}
    # Every object is in one cell of its row, every detection above the confidence in one of its column.
    assert matrix[:2].sum() == 5 and matrix[:, :2].sum() == 5


def _judged_by_loops(truth, found, conf, iou_threshold):
    """One image judged as the module docstring of utils.eval.confusion says, pair by pair.

    Returns:
        (det_kind, det_object, det_iou, det_paired, gt_kind) as lists, the detections in
        descending score (stable).
    """
    keep = [i for i in sorted(range(len(found.scores)), key=lambda i: -found.scores[i]) if found.scores[i] > conf]
    m, n = len(keep), len(truth.classes)
    classes = [int(found.classes[i]) for i in keep]
    iou = [[float(np_iou(found.boxes[i], truth.boxes[j], inclusive=True)) for j in range(n)] for i in keep]
    det_kind, det_object, det_iou, gt_kind = [FALSE_POSITIVE] * m, [-1] * m, [0.0] * m, [MISSED] * n
    det_free, gt_free = [True] * m, [True] * n
    for same_class, kind, object_kind in ((True, CORRECT, FOUND), (False, WRONG_CLASS, WRONG_CLASS)):
        pairs = sorted((-iou[i][j], i, j) for i in range(m) for j in range(n)
                       if (classes[i] == truth.classes[j]) == same_class and iou[i][j] >= iou_threshold)
        for _, i, j in pairs:
            if det_free[i] and gt_free[j]:
                det_free[i] = gt_free[j] = False
                det_object[i], det_iou[i] = j, iou[i][j]
                det_kind[i], gt_kind[j] = (IGNORED, IGNORED) if truth.difficult[j] else (kind, object_kind)
    for j in range(n):
        if gt_free[j] and truth.difficult[j]:
            gt_kind[j] = IGNORED
    for i in range(m):
        if not det_free[i]:
            continue
        tests = ((IGNORED, lambda j: truth.difficult[j], iou_threshold),
                 (DUPLICATE, lambda j: truth.classes[j] == classes[i], iou_threshold),
                 (WRONG_CLASS, lambda j: truth.classes[j] != classes[i], iou_threshold),
                 (POOR_LOCALIZATION, lambda j: truth.classes[j] == classes[i], BACKGROUND_IOU))
        for kind, about, floor in tests:
            objects = [j for j in range(n) if about(j)]
            if objects:
                j = max(objects, key=lambda j: iou[i][j])  # the first of the highest
                if iou[i][j] >= floor:
                    det_kind[i], det_object[i], det_iou[i] = kind, j, iou[i][j]
                    break
    return det_kind, det_object, det_iou, [not free for free in det_free], gt_kind


def tied_evaluation(seed, images=30, classes=3):
    """Small images of integer boxes and few distinct scores: many equal IoUs and scores."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = {}, {}
    for k in range(images):
        n = int(rng.integers(0, 6))
        xy = rng.integers(0, 60, (n, 2)).astype(float)
        boxes = np.concatenate([xy, xy + rng.integers(0, 40, (n, 2))], axis=1)
        labels = rng.integers(0, classes, n)
        ground_truth[k] = ImageGroundTruth(boxes, labels, rng.random(n) < 0.3)
        m = int(rng.integers(0, 12))
        pick = rng.integers(0, max(n, 1), m)
        near = (boxes[pick] if n else np.zeros((m, 4))) + rng.integers(-6, 7, (m, 4))
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2])
        found_labels = np.where(rng.random(m) < 0.6, labels[pick] if n else 0, rng.integers(0, classes, m))
        if rng.random() < 0.8:  # the others have no entry: no detections
            detections[k] = ImageDetections(near, rng.choice([0.2, 0.3, 0.5, 0.7, 0.9], m), found_labels)
    return ground_truth, detections


@pytest.mark.parametrize("conf, iou_threshold", [(0.25, 0.5), (0.0, 0.3), (0.5, 0.05), (0.1, 0.0), (0.0, 1.0)])
def test_judged_images_equal_a_plain_loop_over_pairs(conf, iou_threshold):
    for seed in range(3):
        ground_truth, detections = tied_evaluation(seed)
        judged = judge_images(ground_truth, detections, 3, conf, iou_threshold)
        assert list(judged) == list(ground_truth)
        matrix = np.zeros((4, 4), np.int64)
        for image_id, truth in ground_truth.items():
            found = detections.get(image_id, ImageDetections())
            det_kind, det_object, det_iou, det_paired, gt_kind = _judged_by_loops(truth, found, conf, iou_threshold)
            one = judged[image_id]
            assert one.det_kind == det_kind and one.gt_kind == gt_kind
            assert one.det_object.tolist() == det_object and one.det_paired.tolist() == det_paired
            assert one.det_iou.tolist() == det_iou
            order = sorted(range(len(found.scores)), key=lambda i: -found.scores[i])
            order = [i for i in order if found.scores[i] > conf]
            np.testing.assert_array_equal(one.det_boxes, np.asarray(found.boxes, float).reshape(-1, 4)[order])
            assert one.det_scores.tolist() == [found.scores[i] for i in order]
            # The matrix, counted one object and one detection at a time.
            for j, kind in enumerate(gt_kind):
                if kind == MISSED:
                    matrix[truth.classes[j], 3] += 1
            for i, kind in enumerate(det_kind):
                if kind != IGNORED:
                    matrix[truth.classes[det_object[i]] if det_paired[i] else 3, one.det_classes[i]] += 1
            # One image alone is judged as among the others.
            alone = judge_image(truth.boxes, truth.classes, truth.difficult, found.boxes, found.scores, found.classes,
                                conf, iou_threshold)
            assert alone.det_kind == det_kind and alone.det_iou.tolist() == det_iou
        np.testing.assert_array_equal(confusion_matrix(judged, 3), matrix)


def test_judging_rejects_bad_entries_naming_the_image():
    ground_truth = {"a": gt(([0, 0, 9, 9], 0)), "b": gt(([0, 0, 9, 9], 5))}
    with pytest.raises(ValueError, match="'b'.*class id 5"):
        judge_images(ground_truth, {}, 2)
    with pytest.raises(ValueError, match="'a'.*boxes must be"):
        judge_images({"a": {"boxes": [[0, 0, 9]], "classes": [0]}}, {}, 2)
    # The first image rejected is named, whichever check rejects it.
    with pytest.raises(ValueError, match="'b'.*class id 5"):
        judge_images({**ground_truth, "c": {"boxes": [[0, 0, 9]], "classes": [0]}}, {}, 2)
    # Entries of other types (dicts, lists, float class ids) are judged as ImageGroundTruth ones.
    as_dicts = judge_images({"a": {"boxes": [[0, 0, 9, 9]], "classes": [1.0]}},
                            {"a": {"boxes": [[0, 0, 9, 9]], "scores": [0.9], "classes": [1]}}, 2)
    assert as_dicts["a"].det_kind == [CORRECT] and as_dicts["a"].gt_kind == [FOUND]


def random_evaluation(seed=0, images=40, classes=3):
    """Ground truth and noisy detections (shifted boxes, wrong classes, background ones) with random scores."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = {}, {}
    for k in range(images):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 120, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, classes, n)
        ground_truth[f"i{k}"] = ImageGroundTruth(boxes, labels, rng.uniform(size=n) < 0.1)
        found = boxes + rng.normal(0, 8, boxes.shape)
        found_labels = np.where(rng.uniform(size=n) < 0.15, rng.integers(0, classes, n), labels)
        m = int(rng.integers(0, 4))
        extra_xy = rng.uniform(0, 250, (m, 2))
        extra = np.concatenate([extra_xy, extra_xy + rng.uniform(5, 80, (m, 2))], axis=1)
        all_boxes = np.concatenate([found, extra, found[:1] + 3])
        all_labels = np.concatenate([found_labels, rng.integers(0, classes, m), found_labels[:1]])
        detections[f"i{k}"] = ImageDetections(all_boxes, rng.uniform(0.001, 1.0, len(all_labels)), all_labels)
    return ground_truth, detections


def test_pr_curve_area_is_the_all_point_ap_and_the_mean_curve_the_map():
    ground_truth, detections = random_evaluation()
    result = evaluate_voc(ground_truth, detections, ["a", "b", "c"])
    envelopes = []
    for stats in result["classes"]:
        r, p = pr_envelope(*result["curves"][stats["name"]])
        assert step_area(r, p) == pytest.approx(stats["ap"], abs=1e-12)
        assert step_area(r, p) == pytest.approx(average_precision(*result["curves"][stats["name"]]), abs=1e-12)
        envelopes.append((r, p))
    r, p = mean_envelope(envelopes)
    assert step_area(r, p) == pytest.approx(result["map"], abs=1e-12)


def _brute_force_best_f1(ground_truth, detections, class_names):
    """Every threshold t among 0 and all scores: keep scores above t, score again, mean F1 of the classes."""
    scores = np.concatenate([d.scores for d in detections.values()])
    best = None
    for t in np.unique(np.concatenate([[0.0], scores])):
        kept = {k: ImageDetections(d.boxes[d.scores > t], d.scores[d.scores > t], d.classes[d.scores > t])
                for k, d in detections.items()}
        result = evaluate_voc(ground_truth, kept, class_names, score_threshold=0.0)
        f1s = []
        for c in result["classes"]:
            if c["num_gt"]:
                tp, fp, fn = c["tp"], c["fp"], c["num_gt"] - c["tp"]
                f1s.append(2 * tp / (2 * tp + fp + fn))
        f1 = float(np.mean(f1s))
        if best is None or f1 > best[1] + 1e-12:
            best = (float(t), f1)
    return best


def test_best_f1_confidence_equals_a_brute_force_search():
    ground_truth, detections = random_evaluation(seed=3, images=25)
    names = ["a", "b", "c"]
    found = best_f1(evaluate_voc(ground_truth, detections, names))
    conf, f1 = _brute_force_best_f1(ground_truth, detections, names)
    assert found["conf"] == pytest.approx(conf, abs=1e-12)
    assert found["f1"] == pytest.approx(f1, abs=1e-12)


def test_size_split_aps_equal_a_hand_computation():
    # Objects: small 30x30 (area 900), medium 50x50, large 100x100 (COCO: < 32², < 96², above).
    small, medium, large = [0, 0, 30, 30], [100, 100, 150, 150], [200, 200, 300, 300]
    ground_truth = {"i": gt((small, 0), (medium, 0), (large, 0))}
    detections = {"i": dets(
        ([400, 400, 410, 410], 0.95, 0),  # small false positive
        ([0, 0, 34, 34], 0.9, 0),  # area 1156 (medium) on the small object: IoU 0.78
        (medium, 0.7, 0),
        ([400, 0, 500, 100], 0.6, 0),  # large false positive
        (large, 0.5, 0),
    )}
    result = evaluate_voc(ground_truth, detections, ["a"])
    sizes = result["sizes"]
    # small: FP (0.95) then the small object's match (0.9), the rest ignored:
    # precision 0, 1/2 at recall 0, 1 -> AP 1/2.
    assert sizes["small"]["ap"] == [pytest.approx(0.5)]
    # medium: the medium-sized box matched to the small object is ignored with it,
    # the small FP is out of range: only the medium match counts -> AP 1.
    assert sizes["medium"]["ap"] == [pytest.approx(1.0)]
    # large: the large FP (0.6) then the large match (0.5) -> AP 1/2.
    assert sizes["large"]["map"] == pytest.approx(0.5)
    assert [sizes[s]["num_gt"] for s in ("small", "medium", "large")] == [1, 1, 1]
    # All sizes: FP, TP, TP, FP, TP -> envelope 2/3, 2/3, 3/5 on thirds of recall.
    assert result["map"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 5) / 3)


def test_error_gallery_writes_n_images_labelling_every_planted_error(tmp_path):
    from PIL import Image

    from utils.eval.gallery import draw_judgment, rank_images, save_error_gallery

    ground_truth, detections = planted_errors()
    ground_truth["clean"] = gt(([0, 0, 9, 9], 0))
    detections["clean"] = dets(([0, 0, 9, 9], 0.9, 0))
    judged = judge_images(ground_truth, detections, 2, conf=0.25)
    paths = {}
    for image_id in ground_truth:
        paths[image_id] = tmp_path / f"{image_id}.png"
        Image.new("RGB", (80, 70), (90, 90, 90)).save(paths[image_id])
    assert rank_images(judged, 5) == ["img1", "img2"]  # 4 errors, then 3; the clean image has none

    written, problems = save_error_gallery(judged, paths, ["a", "b"], tmp_path / "errors", 1, 0.25, 0.5)
    assert problems == [] and [p.name for p in written] == ["01_img1.jpg"]
    assert written[0].read_bytes()[:2] == b"\xff\xd8"
    written, _ = save_error_gallery(judged, paths, ["a", "b"], tmp_path / "errors", 2, 0.25, 0.5)
    assert [p.name for p in written] == ["01_img1.jpg", "02_img2.jpg"]

    labels = []
    for image_id in ("img1", "img2"):
        fig = draw_judgment(np.zeros((70, 80, 3), np.uint8), judged[image_id], ["a", "b"])
        labels += [text.get_text() for text in fig.axes[0].texts]
    for planted in ("false positive: b 0.70", "wrong class: a 0.80 (is b)", "duplicate: a 0.60",
                    "poor localization: a 0.50 (IoU 0.25)", "missed: a", "missed: b"):
        assert planted in labels, (planted, labels)


def test_operating_point_file_gives_predicts_default_conf(tmp_path, caplog):
    from utils.eval.operating_point import conf_file, default_conf, write_conf_file

    model = tmp_path / "best.keras"
    conf, origin = default_conf(model, 0.5)
    assert conf == 0.5 and "best.eval.json not found" in origin
    write_conf_file(model, {"conf": 0.4123, "f1": 0.7, "precision": 0.8, "recall": 0.6}, epoch=7,
                    evaluated_on="the validation set (5 images)")
    assert conf_file(model) == tmp_path / "best.eval.json"
    assert conf_file(tmp_path / "best.onnx") == conf_file(model)  # an export beside it shares it
    conf, origin = default_conf(model, 0.5)
    assert conf == pytest.approx(0.4123)
    assert "best-F1 confidence 0.412" in origin and "epoch 7" in origin and "validation set" in origin
    conf_file(model).write_text(json.dumps({"conf": 3}))
    assert default_conf(model, 0.5)[0] == 0.5
    assert "outside [0, 1)" in caplog.text
    # An undertrained model's best F1 at confidence 0: the default, and why.
    write_conf_file(model, {"conf": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}, epoch=1,
                    evaluated_on="the validation set (5 images)")
    conf, origin = default_conf(model, 0.5)
    assert conf == 0.5
    assert "best-F1 confidence 0.000 (F1 0.000" in origin and "below 0.05" in origin and "undertrained" in origin


def test_predict_takes_the_checkpoints_best_f1_confidence_unless_conf_is_given(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import predict
    from utils.eval.operating_point import write_conf_file
    from utils.predict.job import UsageError

    model = tmp_path / "best.keras"
    write_conf_file(model, {"conf": 0.37, "f1": 0.6, "precision": 0.7, "recall": 0.5}, epoch=4,
                    evaluated_on="the validation set (3 images)")
    image = tmp_path / "a.jpg"
    Image.new("RGB", (32, 24)).save(image)
    seen = []

    def stop(args):
        seen.append(args.conf)
        raise UsageError("stop before loading")

    monkeypatch.setattr(predict, "open_predictor", stop)
    common = ["--model", str(model), "--source", str(image), "--out", str(tmp_path / "out")]
    assert predict.main(common) == 2
    assert "--conf 0.370: the best-F1 confidence 0.370 of the model on the validation set" in capsys.readouterr().out
    assert predict.main([*common, "--conf", "0.6"]) == 2
    assert "best-F1" not in capsys.readouterr().out
    assert seen == [pytest.approx(0.37), 0.6]
