"""Tests of utils/data/kmeans.py and the kmeans_for_anchors.py command line."""

import functools
import re

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, run_script
from utils.config import DEFAULT_ANCHORS
from utils.data.annotation import Annotation, read_annotation_file, write_annotation_file
from utils.data.kmeans import (
    anchor_fit,
    kmeans_anchors,
    letterbox_box_sizes,
    load_box_sizes,
    mean_best_iou,
    round_anchors,
    shape_iou,
)
from utils.model_data import load_anchors

SCRIPT = ROOT / "kmeans_for_anchors.py"
TRUE_SHAPES = np.array([[12.0, 20.0], [70.0, 35.0], [160.0, 180.0]])


run_cli = functools.partial(run_script, SCRIPT, timeout=120)


def three_shape_boxes(n_per_shape=200, seed=0):
    """(3 * n, 2) box sizes scattered within +-5% around TRUE_SHAPES."""
    rng = np.random.default_rng(seed)
    return np.concatenate([shape * rng.uniform(0.95, 1.05, (n_per_shape, 2)) for shape in TRUE_SHAPES])


def test_shape_iou_compares_shapes_centred_at_the_origin():
    iou = shape_iou([[2, 2], [1, 4]], [[2, 2], [1, 1], [4, 1]])
    # (2,2) vs (4,1): overlap 2x1 = 2, union 4 + 4 - 2 = 6.
    np.testing.assert_allclose(iou, [[1.0, 0.25, 2 / 6], [2 / 6, 0.25, 1 / 7]])
    assert mean_best_iou([[2, 2], [1, 4]], [[2, 2], [1, 4]]) == pytest.approx(1.0)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_kmeans_recovers_three_well_separated_shapes(init):
    wh = three_shape_boxes()
    result = kmeans_anchors(wh, k=3, seed=1, init=init)
    np.testing.assert_allclose(result.anchors, TRUE_SHAPES, rtol=0.03)  # sorted by area like TRUE_SHAPES
    assert result.mean_iou > 0.9
    np.testing.assert_array_equal(result.assignments, np.repeat([0, 1, 2], 200))
    again = kmeans_anchors(wh, k=3, seed=1, init=init)
    np.testing.assert_array_equal(again.anchors, result.anchors)


def test_kmeans_keeps_the_best_restart_and_checks_its_input():
    wh = three_shape_boxes(50)
    many = kmeans_anchors(wh, k=9, restarts=4, seed=0)
    assert many.anchors.shape == (9, 2)
    assert np.all(np.diff(many.anchors.prod(axis=1)) >= 0)
    single = [kmeans_anchors(wh, k=9, restarts=1, seed=s).mean_iou for s in range(3)]
    assert many.mean_iou >= min(single)
    with pytest.raises(ValueError, match="2 boxes cannot make 3 clusters"):
        kmeans_anchors(wh[:2], k=3)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors(np.array([[1.0, 0.0], [2.0, 3.0]]), k=1)
    with pytest.raises(ValueError, match="'bogus'"):
        kmeans_anchors(wh, k=3, init="bogus")


def test_round_anchors_keeps_whole_positive_pixels_sorted():
    np.testing.assert_array_equal(round_anchors([[30.4, 30.6], [0.2, 0.4], [5.5, 2.0]]), [[1, 1], [6, 2], [30, 31]])


def test_letterbox_scaling_uses_the_image_header_and_skips_unreadable_images(tmp_path):
    wide = tmp_path / "wide image.png"
    Image.new("RGB", (200, 100)).save(wide)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    annotations = [
        Annotation(str(wide), np.array([[0, 0, 50, 25], [10, 10, 30, 90]], np.float32), np.array([0, 1], np.int32)),
        Annotation(str(broken), np.array([[0, 0, 5, 5]], np.float32), np.array([0], np.int32)),
        Annotation(str(tmp_path / "missing.jpg"), np.array([[0, 0, 5, 5]], np.float32), np.array([0], np.int32)),
        Annotation(str(wide)),  # negative line: nothing to read
    ]
    wh, problems = letterbox_box_sizes(annotations, 416)
    np.testing.assert_allclose(wh, [[50 * 2.08, 25 * 2.08], [20 * 2.08, 80 * 2.08]], rtol=1e-6)
    assert len(problems) == 2
    assert "broken.jpg" in problems[0] and "missing.jpg" in problems[1]


def make_annotation_file(folder, with_problems=True):
    """Annotation file of 6 images (folder name holds a space) with boxes of 3 shapes at 416."""
    image_dir = folder / "image dir"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    annotations = []
    for i in range(6):
        path = image_dir / f"img {i}.jpg"
        size = (832, 416) if i % 2 else (208, 104)  # letterbox scale 0.5 or 2 at 416
        Image.new("RGB", size).save(path)
        scale = min(416 / size[0], 416 / size[1])
        sizes = TRUE_SHAPES[rng.integers(0, 3, 10)] * rng.uniform(0.9, 1.1, (10, 2)) / scale
        boxes = np.concatenate([np.full((10, 2), 2.0), 2.0 + sizes], axis=1).round()
        classes = rng.integers(0, 20, 10).astype(np.int32)
        annotations.append(Annotation(str(path), boxes.astype(np.float32), classes, np.zeros(10, bool)))
    out = folder / "train set.txt"
    write_annotation_file(out, annotations)
    if with_problems:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(f"{image_dir / 'gone.jpg'} 1,1,20,20,3\n")
    return out


def test_load_box_sizes_reads_the_annotation_file(tmp_path):
    path = make_annotation_file(tmp_path)
    wh, problems = load_box_sizes(path, 416)
    assert wh.shape == (60, 2)
    assert len(problems) == 1 and "gone.jpg" in problems[0]
    assert kmeans_anchors(wh, k=3, seed=0).mean_iou > 0.8


def test_load_box_sizes_reads_a_coco_file_like_its_lines(tmp_path):
    from utils.data.coco import write_coco

    lines = make_annotation_file(tmp_path, with_problems=False)
    annotations, _ = read_annotation_file(lines)
    coco = tmp_path / "coco.json"
    write_coco(coco, annotations, [f"c{k}" for k in range(20)])
    np.testing.assert_allclose(load_box_sizes(coco, 416)[0], load_box_sizes(lines, 416)[0], rtol=1e-6)


def test_cli_writes_nine_anchors_that_load_anchors_reads(tmp_path):
    annotations = make_annotation_file(tmp_path)
    out = tmp_path / "out dir" / "anchors.txt"
    before = DEFAULT_ANCHORS.read_text()
    result = run_cli("--annotations", annotations, "--out", out, "--seed", 3)
    assert result.returncode == 0, result.stderr
    anchors = load_anchors(out)
    assert anchors.shape == (9, 2)
    match = re.search(r"mean best IoU: (\d\.\d{4})", result.stdout)
    assert match and 0.5 < float(match.group(1)) <= 1.0
    lines = re.findall(r"^\s+\d: (\d+),(\d+)$", result.stdout, re.M)
    np.testing.assert_array_equal(np.array(lines, float), anchors)  # printed sorted by area, as written
    assert "gone.jpg" in result.stdout
    assert DEFAULT_ANCHORS.read_text() == before

    again = tmp_path / "again.txt"
    assert run_cli("--annotations", annotations, "--out", again, "--seed", 3).returncode == 0
    assert again.read_text() == out.read_text()


def test_cli_default_output_is_anchors_txt_in_the_current_folder(tmp_path):
    annotations = make_annotation_file(tmp_path, with_problems=False)
    result = run_cli("--annotations", annotations, "--clusters", 3, "--input-size", 320, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "anchors.txt").read_text()
    assert len(text.split(",")) == 6  # 3 anchors "w,h, w,h, w,h"
    assert "detector needs exactly 9" in result.stderr
    with pytest.raises(ValueError, match="expected 9 anchors"):
        load_anchors(tmp_path / "anchors.txt")


def test_cli_errors_without_boxes(tmp_path):
    negatives = tmp_path / "negatives.txt"
    negatives.write_text("/data/a.jpg\n\n/data/b.jpg\n")
    result = run_cli("--annotations", negatives, "--out", tmp_path / "a.txt")
    assert result.returncode == 2
    assert "no usable box" in result.stderr and "negatives.txt" in result.stderr
    assert not (tmp_path / "a.txt").exists()

    missing = run_cli("--annotations", tmp_path / "nope.txt", "--out", tmp_path / "a.txt")
    assert missing.returncode == 2 and "nope.txt" in missing.stderr

    few = tmp_path / "few.txt"
    Image.new("RGB", (50, 50)).save(tmp_path / "one.png")
    few.write_text(f"{tmp_path / 'one.png'} 1,1,20,20,0 1,1,5,30,0\n")
    result = run_cli("--annotations", few, "--out", tmp_path / "a.txt")
    assert result.returncode == 2 and "2 boxes cannot make 9 clusters" in result.stderr


def test_cli_help_documents_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ["--annotations", "--input-size", "--clusters", "--seed", "--out", "--iterations", "--restarts",
                   "--init"]:
        assert option in result.stdout


def test_anchor_fit_matches_a_hand_count():
    anchors = np.array([[10, 10], [40, 20], [100, 100]], np.float64)
    wh = np.array([
        [10, 10],   # ratio 1 to anchor 0; 4 and 2 to anchor 1 -> not (< 4 needed); 10 to anchor 2: 1 anchor
        [30, 20],   # 3, 2 to anchor 0; 1.33, 1 to anchor 1; 3.33, 5 to anchor 2: 2 anchors
        [60, 60],   # 6 to anchor 0; 1.5, 3 to anchor 1; 1.67 to anchor 2: 2 anchors
        [3, 50],    # 3.3, 5 / 13.3 / 33: no anchor
        [400, 90],  # 40 / 10 / 4 (not < 4): no anchor
    ], np.float64)
    fit = anchor_fit(wh, anchors, anchor_t=4.0)
    assert fit.boxes == 5
    assert fit.best_possible_recall == pytest.approx(3 / 5)
    assert fit.anchors_per_box == pytest.approx((1 + 2 + 2 + 0 + 0) / 5)
    assert fit.mean_best_iou == pytest.approx(mean_best_iou(wh, anchors))
    assert anchor_fit(wh, anchors, anchor_t=5.0).best_possible_recall == pytest.approx(4 / 5)  # [400, 90]
    assert anchor_fit(np.zeros((0, 2)), anchors).best_possible_recall == 1.0


def test_anchor_check_warns_with_the_command_and_auto_anchors_refits(tmp_path):
    from utils.train.config import TrainConfig
    from utils.train.summary import check_anchor_fit

    # Boxes of three shapes letterboxed into a 128 input, and anchors made for 416.
    image = tmp_path / "a.jpg"
    Image.new("RGB", (128, 128)).save(image)
    rng = np.random.default_rng(0)
    annotations = []
    for i in range(12):
        w, h = TRUE_SHAPES[i % 3] * 0.2 * rng.uniform(0.95, 1.05, 2)
        annotations.append(Annotation(str(image), np.array([[5, 5, 5 + w, 5 + h]]), np.array([0])))
    cfg = TrainConfig(train="data.txt", input_size=128, anchor_t=4.0)
    anchors = load_anchors(DEFAULT_ANCHORS) * 4.0  # far too large for these boxes
    kept, lines = check_anchor_fit(cfg, annotations, anchors)
    assert kept is anchors
    assert "best possible recall 0.3333 at ratio 4" in lines[0] and "12 training boxes at input 128" in lines[0]
    assert "python kmeans_for_anchors.py --annotations data.txt --input-size 128" in lines[1]
    refitted, lines = check_anchor_fit(cfg, annotations, anchors, refit=True)
    assert refitted.shape == (9, 2) and not np.allclose(refitted, anchors)
    assert anchor_fit(refitted, refitted).boxes == 9
    assert "--auto-anchors refitted them: best possible recall 1.0000" in lines[1]
    # Anchors that already fit give no warning.
    _, lines = check_anchor_fit(cfg, annotations, refitted)
    assert len(lines) == 1
