"""get_map.py run as a command on small hand-written inputs, and its evaluation job (utils.eval.job)."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, QuarterPredictor, run_script

run_cli = functools.partial(run_script, "get_map.py", timeout=120)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def map_out(tmp_path):
    """Files as another tool would write them: odd class names, one malformed line.

    Class "traffic light" (written traffic_light): 2 objects, found at ranks 1 and 3
    with a duplicate (false positive) at rank 2 -> precision 1, 1/2, 2/3 at recall 1/2,
    1/2, 1 -> AP 5/6 (all-point) and 28/33 (11-point). Class "pot-ted.plant#2": 1 object
    found, 1 difficult object matched (ignored) -> AP 1. Mean: (5/6 + 1) / 2 = 11/12
    (all-point).
    """
    out = tmp_path / "out"
    write(out / "ground-truth" / "img1.txt", "traffic_light 10 10 49 49\npot-ted.plant#2 100 100 139 159\n")
    write(out / "ground-truth" / "img2.txt", "traffic_light 0 0 19 19\npot-ted.plant#2 60 60 79 79 difficult\n")
    write(
        out / "detection-results" / "img1.txt",
        "traffic_light 0.9 10 10 49 49\n"
        "traffic_light 0.8 10 10 49 50\n"
        "pot-ted.plant#2 0.6 100 100 139 159\n"
        "traffic_light 0.99 oops 10 49 49\n",
    )
    write(
        out / "detection-results" / "img2.txt",
        "traffic_light 0.7 0 0 19 19\npot-ted.plant#2 0.95 60 60 79 79\n",
    )
    classes = write(tmp_path / "classes.txt", "traffic light\npot-ted.plant#2\n")
    return out, classes


def test_help_documents_every_option():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--model", "--voc-root", "--year", "--split", "--annotations", "--classes", "--out", "--conf",
        "--nms-iou", "--iou", "--score-threshold", "--metric", "--batch-size", "--input-size", "--mode",
    ):
        assert option in proc.stdout
    text = " ".join(proc.stdout.split())  # as wrapped to any terminal width
    for mode, number in (("all", 0), ("detections", 1), ("ground-truth", 2), ("score", 3), ("coco", 4)):
        assert f"{mode} ({number})" in text


def test_modes_have_names_and_keep_their_numbers():
    import get_map

    parser = get_map.build_parser()
    assert parser.parse_args([]).mode == "all"
    for number, name in enumerate(("all", "detections", "ground-truth", "score", "coco")):
        assert parser.parse_args(["--mode", name]).mode == name
        assert parser.parse_args(["--mode", str(number)]).mode == name
    proc = run_cli("--mode", "5")
    assert proc.returncode == 2 and "must be one of all, detections" in proc.stderr and "'5'" in proc.stderr


def test_mode3_computes_voc_map_from_hand_written_files(map_out):
    out, classes = map_out
    proc = run_cli("--mode", 3, "--out", out, "--classes", classes)
    assert proc.returncode == 0, proc.stderr
    # The malformed line is reported with its file and line number; the rest is used.
    assert f"{out / 'detection-results' / 'img1.txt'}:4:" in proc.stdout
    assert "1 problem(s)" in proc.stdout
    assert "traffic light" in proc.stdout and "91.67" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "voc"
    assert results["iou_threshold"] == 0.5 and results["score_threshold"] == 0.5
    assert results["map"] == pytest.approx(11 / 12)
    by_name = {c["name"]: c for c in results["classes"]}
    assert by_name["traffic light"]["ap"] == pytest.approx(5 / 6)
    assert by_name["pot-ted.plant#2"]["ap"] == pytest.approx(1.0)
    assert by_name["pot-ted.plant#2"]["num_difficult"] == 1
    assert results["problems"] == 1
    assert "img1.txt:4" in (out / "problems.txt").read_text()

    assert (out / "pr_curves" / "traffic_light.png").stat().st_size > 1000
    assert (out / "pr_curves" / "pot-ted.plant#2.png").is_file()
    assert (out / "ap_per_class.png").stat().st_size > 1000
    assert (out / "gt_counts.png").stat().st_size > 1000


def test_scoring_from_files_loads_no_framework(map_out):
    """The score mode reads text files: importing TensorFlow would cost it seconds."""
    out, classes = map_out
    code = ("import sys, get_map; status = get_map.main(sys.argv[1:]); "
            "loaded = sorted({'tensorflow', 'keras', 'torch'} & set(sys.modules)); print('LOADED', loaded); "
            "sys.exit(status)")
    proc = run_script("-c", code, "--mode", "score", "--out", out, "--classes", classes, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_mode3_voc07_with_class_names_from_files(map_out):
    out, _ = map_out
    proc = run_cli("--mode", "score", "--out", out, "--metric", "voc07", "--classes-from-files", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "voc07"
    assert [c["name"] for c in results["classes"]] == ["pot-ted.plant#2", "traffic_light"]
    assert results["map"] == pytest.approx((28 / 33 + 1.0) / 2)
    assert not (out / "ap_per_class.png").exists()


def test_mode4_prints_the_pycocotools_summary(map_out):
    out, classes = map_out
    proc = run_cli("--mode", "coco", "--out", out, "--classes", classes)
    assert proc.returncode == 0, proc.stderr
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "coco"
    assert set(results["stats"]) >= {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"}
    assert 0.5 < results["stats"]["AP50"] <= 1.0


def test_detection_file_without_ground_truth_is_reported(map_out):
    out, classes = map_out
    write(out / "detection-results" / "stray.txt", "traffic_light 0.9 0 0 9 9\n")
    proc = run_cli("--mode", 3, "--out", out, "--classes", classes, "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert "stray.txt" in proc.stdout and "detection file skipped" in proc.stdout
    assert json.loads((out / "results.json").read_text())["map"] == pytest.approx(11 / 12)


def test_mode2_writes_ground_truth_from_an_annotation_file(tmp_path):
    classes = write(tmp_path / "classes.txt", "person\ntraffic light\n")
    annotations = write(
        tmp_path / "test.txt",
        "images/a.jpg 1,2,30,40,1 5,6,70,80,0,1\n"
        "images/b.jpg\n"
        "images/c.jpg 1,1,9,9,7\n",
    )
    out = tmp_path / "out"
    write(out / "ground-truth" / "old.txt", "person 0 0 1 1\n")  # left from an earlier run
    proc = run_cli("--mode", 2, "--annotations", annotations, "--classes", classes, "--out", out)
    assert proc.returncode == 0, proc.stderr
    gt_dir = out / "ground-truth"
    assert sorted(p.name for p in gt_dir.iterdir()) == ["a.txt", "b.txt", "c.txt"]
    assert (gt_dir / "a.txt").read_text().splitlines() == ["traffic_light 1 2 30 40", "person 5 6 70 80 difficult"]
    assert (gt_dir / "b.txt").read_text() == ""
    # The box with class id 7 is reported with file and line, not written.
    assert f"{annotations}:3:" in proc.stdout and "class id 7" in proc.stdout
    assert (gt_dir / "c.txt").read_text() == ""


VOC_XML = """<annotation>
  <filename>{id}.jpg</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  {objects}
</annotation>
"""
VOC_OBJECT = (
    "<object><name>{name}</name><difficult>{difficult}</difficult>"
    "<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
)


def test_mode2_reads_a_voc_split(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2007"
    write(base / "ImageSets" / "Main" / "test.txt", "000001\n000002\n000003\n")
    objects = [("dog", 0, (10, 20, 50, 60)), ("cat", 1, (1, 2, 3, 4)), ("horse", 0, (5, 5, 9, 9))]
    xml = "".join(VOC_OBJECT.format(name=n, difficult=d, b=b) for n, d, b in objects)
    write(base / "Annotations" / "000001.xml", VOC_XML.format(id="000001", objects=xml))
    write(base / "Annotations" / "000002.xml", "<annotation><object>")  # malformed
    write(base / "Annotations" / "000003.xml", VOC_XML.format(id="000003", objects=""))
    classes = write(tmp_path / "classes.txt", "cat\ndog\n")
    out = tmp_path / "out"
    proc = run_cli("--mode", 2, "--voc-root", tmp_path / "VOCdevkit", "--split", "test", "--classes", classes,
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = (out / "ground-truth" / "000001.txt").read_text().splitlines()
    assert lines == ["dog 10 20 50 60", "cat 1 2 3 4 difficult"]
    assert (out / "ground-truth" / "000003.txt").read_text() == ""
    assert not (out / "ground-truth" / "000002.txt").exists()
    assert "000002.xml" in proc.stdout and "'horse' x1" in proc.stdout


def test_mode_all_reads_the_png_images_of_a_voc_split(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import get_map

    base = tmp_path / "VOCdevkit" / "VOC2007"
    write(base / "ImageSets" / "Main" / "test.txt", "000001\n000002\n")
    for image_id, box in (("000001", (0, 0, 20, 15)), ("000002", (20, 15, 40, 30))):
        xml = VOC_OBJECT.format(name="traffic light", difficult=0, b=box)
        xml_text = VOC_XML.format(id=image_id, objects=xml).replace(".jpg", ".png")
        write(base / "Annotations" / f"{image_id}.xml", xml_text)
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30)).save(base / "JPEGImages" / f"{image_id}.png")
    monkeypatch.setattr(get_map, "open_evaluated_model", lambda args: FakePredictor())
    out = tmp_path / "out"
    status = get_map.main(["--model", "unused.keras", "--voc-root", str(tmp_path / "VOCdevkit"), "--out", str(out),
                           "--no-plots"])
    assert status == 0
    assert "problem" not in capsys.readouterr().out
    assert sorted(p.name for p in (out / "detection-results").iterdir()) == ["000001.txt", "000002.txt"]
    assert (out / "ground-truth" / "000001.txt").read_text() == "traffic_light 0 0 20 15\n"
    results = json.loads((out / "results.json").read_text())
    assert results["map"] == pytest.approx(0.5) and results["problems"] == 0


def test_modes_that_predict_need_a_model(tmp_path):
    proc = run_cli("--mode", 1, "--out", tmp_path / "out")
    assert proc.returncode != 0
    assert "--model" in proc.stderr


def test_mode3_without_ground_truth_folder_fails_clearly(tmp_path):
    proc = run_cli("--mode", 3, "--out", tmp_path / "missing")
    assert proc.returncode == 1
    assert "ground-truth" in proc.stderr and "missing" in proc.stderr


class FakePredictor(QuarterPredictor):
    """Stands in for utils.predict.predictor.Predictor: one box per image, on its top-left quarter."""

    def __init__(self):
        super().__init__(["traffic light", "cat"], score=0.5)


def test_detection_files_are_written_in_batches_and_unreadable_images_reported(tmp_path):
    from PIL import Image

    from utils.eval.images import EvalImage
    from utils.eval.map_files import write_detection_files
    from utils.eval.structures import ImageGroundTruth

    images = []
    for i, size in enumerate([(40, 30), (20, 10), (8, 8)]):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", size, (i * 40, 0, 0)).save(path)
        images.append(EvalImage(f"im{i}", path, ImageGroundTruth()))
    broken = write(tmp_path / "broken.jpg", "not an image")
    images.insert(1, EvalImage("broken", broken, ImageGroundTruth()))
    write(tmp_path / "out" / "detection-results" / "stale.txt", "cat 0.9 0 0 1 1\n")

    predictor = FakePredictor()
    written, problems = write_detection_files(predictor, images, tmp_path / "out", batch_size=2, progress=False)
    assert written == ["im0", "im1", "im2"]
    assert predictor.batches == [2, 1]
    assert len(problems) == 1 and "broken.jpg" in problems[0]
    det_dir = tmp_path / "out" / "detection-results"
    assert sorted(p.name for p in det_dir.iterdir()) == ["im0.txt", "im1.txt", "im2.txt"]
    assert (det_dir / "im0.txt").read_text() == "traffic_light 0.500000 0.00 0.00 20.00 15.00\n"


def test_mode0_chain_with_a_stand_in_predictor(tmp_path, monkeypatch, capsys):
    # The real predictor needs a trained checkpoint; this checks the chain around it:
    # detections, then ground truth for the images that could be read, then metrics.
    from PIL import Image

    import get_map

    for name in ("a", "b"):
        Image.new("RGB", (40, 30)).save(tmp_path / f"{name}.png")
    annotations = write(
        tmp_path / "test.txt",
        f"{tmp_path / 'a.png'} 0,0,20,15,0\n{tmp_path / 'b.png'} 20,15,40,30,0\n{tmp_path / 'gone.png'} 0,0,5,5,1\n",
    )
    monkeypatch.setattr(get_map, "open_evaluated_model", lambda args: FakePredictor())
    out = tmp_path / "out"
    status = get_map.main(
        ["--model", "unused.keras", "--annotations", str(annotations), "--out", str(out), "--no-plots"]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "gone.png" in printed
    assert sorted(p.name for p in (out / "ground-truth").iterdir()) == ["a.txt", "b.txt"]
    results = json.loads((out / "results.json").read_text())
    # One of the two traffic lights found (image a), the box on image b misses: AP 1/2.
    assert results["map"] == pytest.approx(0.5)
    assert results["detection_conf"] == 0.001 and results["mode"] == 0


# ----------------------------------------------------------- mode 3 on another tool's files


def _devkit_ap(recall, precision, use_07_metric):
    """AP as the VOC devkit computes it (VOCevaldet.m / VOCap.m), written out plainly."""
    if use_07_metric:
        ap = 0.0
        for t in [i / 10 for i in range(11)]:
            above = [p for r, p in zip(recall, precision) if r >= t]
            ap += (max(above) if above else 0.0) / 11
        return ap
    mrec = [0.0] + list(recall) + [1.0]
    mpre = [0.0] + list(precision) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def _devkit_map(ground_truth, detections, num_classes, use_07_metric, min_overlap=0.5):
    """mAP by the devkit's rules, one detection at a time.

    ground_truth: {image: [(cls, box, difficult)]}; detections: [(image, cls, score, box)].
    Every finite box counts as written, whatever its coordinates (negative ones included).
    """
    aps = []
    for cls in range(num_classes):
        gts = {img: [(box, diff) for c, box, diff in objs if c == cls] for img, objs in ground_truth.items()}
        npos = sum(not diff for objs in gts.values() for _, diff in objs)
        taken = {img: [False] * len(objs) for img, objs in gts.items()}
        mine = sorted((d for d in detections if d[1] == cls), key=lambda d: -d[2])  # stable on ties
        tp, fp = [], []
        for img, _, _, bb in mine:
            ovmax, jmax = -1.0, -1
            for j, (bbgt, _) in enumerate(gts[img]):
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (
                        bbgt[3] - bbgt[1] + 1
                    ) - iw * ih
                    if iw * ih / ua > ovmax:
                        ovmax, jmax = iw * ih / ua, j
            if ovmax >= min_overlap:
                if gts[img][jmax][1]:
                    continue  # difficult: neither true nor false positive
                if not taken[img][jmax]:
                    taken[img][jmax] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        ctp = np.cumsum(tp)
        cfp = np.cumsum(fp)
        recall = [t / npos for t in ctp]
        precision = [t / (t + f) for t, f in zip(ctp, cfp)]
        aps.append(_devkit_ap(recall, precision, use_07_metric))
    return float(np.mean(aps))


def _tool_files(out, num_images=300, num_classes=5, seed=0):
    """Ground truth and detections as another detector's tooling writes them.

    Objects often touch the border; the ground truth and the detections both hold boxes
    with negative coordinates or reaching past the image, and a few lines no devkit
    would score (unparsable, non-finite, inverted). Returns the usable content as
    (ground_truth, detections, bad line locations).
    """
    rng = np.random.default_rng(seed)
    names = [f"class{k}" for k in range(num_classes)]
    ground_truth, detections, bad = {}, [], []
    for i in range(num_images):
        image = f"im{i:03d}"
        width, height = int(rng.integers(200, 500)), int(rng.integers(200, 500))
        objects, gt_lines = [], []
        for _ in range(int(rng.integers(1, 6))):
            w, h = rng.uniform(20, 120), rng.uniform(20, 120)
            # About a third of the objects sit on the left or top border, partly outside.
            x1 = rng.uniform(-0.3 * w, 0.1 * w) if rng.random() < 0.2 else rng.uniform(0, width - w)
            y1 = rng.uniform(-0.3 * h, 0.1 * h) if rng.random() < 0.2 else rng.uniform(0, height - h)
            box = [round(x1), round(y1), round(x1 + w), round(y1 + h)]
            cls, diff = int(rng.integers(num_classes)), bool(rng.random() < 0.08)
            objects.append((cls, box, diff))
            gt_lines.append(f"{names[cls]} {box[0]} {box[1]} {box[2]} {box[3]}" + (" difficult" if diff else ""))
        det_lines = []
        for cls, box, _ in objects:
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                noise = rng.normal(0, 0.08, 4) * (box[2] - box[0] + box[3] - box[1]) / 2
                det = [round(v, 2) for v in np.asarray(box, float) + noise]
                det[2], det[3] = max(det[2], det[0]), max(det[3], det[1])
                wrong = int(rng.integers(num_classes)) if rng.random() < 0.1 else cls
                score = round(float(rng.uniform(0.05, 1.0)), 4)
                detections.append((image, wrong, score, det))
                det_lines.append(f"{names[wrong]} {score} {det[0]} {det[1]} {det[2]} {det[3]}")
        for _ in range(int(rng.integers(0, 3))):  # false positives anywhere, some past the border
            x1, y1 = rng.uniform(-40, width), rng.uniform(-40, height)
            det = [round(x1, 2), round(y1, 2), round(x1 + rng.uniform(10, 90), 2), round(y1 + rng.uniform(10, 90), 2)]
            cls, score = int(rng.integers(num_classes)), round(float(rng.uniform(0.05, 0.9)), 4)
            detections.append((image, cls, score, det))
            det_lines.append(f"{names[cls]} {score} {det[0]} {det[1]} {det[2]} {det[3]}")
        if i % 50 == 7:  # lines the devkit could not score
            for text in ("class0 0.9 12 oops 40 40", "class1 0.8 10 10 nan 30", "class2 0.7 50 50 20 80"):
                det_lines.append(text)
                bad.append(f"detection-results/{image}.txt:{len(det_lines)}")
            gt_lines.append("class3 30 40 10 60")
            bad.append(f"ground-truth/{image}.txt:{len(gt_lines)}")
        ground_truth[image] = objects
        write(out / "ground-truth" / f"{image}.txt", "".join(line + "\n" for line in gt_lines))
        write(out / "detection-results" / f"{image}.txt", "".join(line + "\n" for line in det_lines))
    write(out / "classes.txt", "".join(n + "\n" for n in names))
    return ground_truth, detections, bad


@pytest.mark.parametrize("metric", ["voc", "voc07"])
def test_mode3_scores_boxes_past_the_border_like_the_devkit(tmp_path, metric):
    out = tmp_path / "out"
    ground_truth, detections, bad = _tool_files(out)
    negative = sum(min(d[3]) < 0 for d in detections)
    assert negative > 50  # the case has many boxes with negative coordinates
    proc = run_cli("--mode", 3, "--out", out, "--classes", out / "classes.txt", "--metric", metric, "--no-plots")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    expected = _devkit_map(ground_truth, detections, 5, use_07_metric=metric == "voc07")
    assert results["map"] == pytest.approx(expected, abs=1e-9)
    assert 0.3 < expected < 0.95
    # Only the lines the devkit cannot score are reported, each with file and line.
    problems = (out / "problems.txt").read_text().splitlines()
    assert len(problems) == len(bad) == results["problems"]
    for where in bad:
        assert any(where in p for p in problems), where


# ------------------------------------------------------------------ COCO and YOLO datasets


def _coco_dataset(tmp_path):
    """Two images under images/ and a COCO file naming them relatively, with
    non-contiguous category ids (7 dog, 3 cat -> classes cat, dog) and a crowd region."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("RGB", (100, 80)).save(tmp_path / "images" / f"{name}.jpg")
    data = {
        "images": [{"id": 42, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 43, "file_name": "b.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 7, "bbox": [10, 10, 30, 20]},
            {"id": 2, "image_id": 43, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1},
            {"id": 3, "image_id": 43, "category_id": 3, "bbox": [60, 20, 20, 40]},
            {"id": 4, "image_id": 43, "category_id": 9, "bbox": [1, 1, 2, 2]},
        ],
    }
    return write(tmp_path / "annotations" / "instances.json", json.dumps(data)), tmp_path / "images"


def test_coco_file_ground_truth_and_results_with_the_original_ids(tmp_path):
    coco_json, images = _coco_dataset(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("--mode", 2, "--annotations", coco_json, "--images", images, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "ground-truth" / "a.txt").read_text() == "dog 10 10 40 30\n"
    assert (out / "ground-truth" / "b.txt").read_text() == "cat 0 0 50 50 difficult\ncat 60 20 80 60\n"
    # The annotation of an unknown category is reported with its place in the file.
    assert "annotations[3] (id 4)" in proc.stdout and "category_id 9" in proc.stdout

    write(out / "detection-results" / "a.txt", "dog 0.9 10 10 40 30\ncat 0.3 10 10 40 30\n")
    write(out / "detection-results" / "b.txt", "cat 0.8 60 20 80 61\n")
    proc = run_cli("--mode", 4, "--annotations", coco_json, "--images", images, "--out", out)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["stats"]["AP50"] == pytest.approx(1.0)
    detections = json.loads((out / "coco_detections.json").read_text())
    got = sorted((d["image_id"], d["category_id"], d["score"]) for d in detections)
    assert got == [(42, 3, 0.3), (42, 7, 0.9), (43, 3, 0.8)]
    ground_truth = json.loads((out / "coco_ground_truth.json").read_text())
    assert ground_truth["categories"] == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    assert sorted(im["id"] for im in ground_truth["images"]) == [42, 43]
    assert "coco_detections.json" in proc.stdout

    # Without the dataset, mode 4 numbers images and classes itself.
    run_cli("--mode", 4, "--out", out, "--classes-from-files")
    assert {d["category_id"] for d in json.loads((out / "coco_detections.json").read_text())} == {1, 2}


def test_coco_file_with_other_classes_is_a_clear_error(tmp_path):
    coco_json, images = _coco_dataset(tmp_path)
    classes = write(tmp_path / "classes.txt", "dog\ncat\n")
    proc = run_cli("--mode", 2, "--annotations", coco_json, "--images", images, "--classes", classes,
                   "--out", tmp_path / "out")
    assert proc.returncode == 1
    assert "['cat', 'dog']" in proc.stderr and "['dog', 'cat']" in proc.stderr and "Traceback" not in proc.stderr


def test_yolo_data_yaml_split_gives_the_ground_truth(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        Image.new("RGB", (200, 100)).save(tmp_path / "images" / split / f"{split}0.jpg")
        write(tmp_path / "labels" / split / f"{split}0.txt", "1 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.2\n")
    data = write(tmp_path / "data.yaml", "train: images/train\nval: images/val\nnames: [cat, dog]\n")
    out = tmp_path / "out"
    proc = run_cli("--mode", 2, "--annotations", data, "--split", "val", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "ground-truth").iterdir()) == ["val0.txt"]
    assert (out / "ground-truth" / "val0.txt").read_text() == "dog 50 25 150 75\n"
    assert "val0.txt:2:" in proc.stdout  # the malformed label line, with file and line
    proc = run_cli("--mode", 2, "--annotations", data, "--out", out)  # default split: test
    assert proc.returncode == 1 and "no split 'test'" in proc.stderr


# ------------------------------------------------------------- runs sharing one --out


class MeetingPredictor(FakePredictor):
    """FakePredictor whose every batch waits for the other run's, so that two runs
    started together write and read their files at the same moments."""

    def __init__(self, barrier=None, fail_at=None):
        super().__init__()
        self.barrier = barrier
        self.fail_at = fail_at

    def predict_batch(self, images):
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the detections
        if self.barrier is not None:
            self.barrier.wait(timeout=60)
        return super().predict_batch(images)


def _two_image_dataset(folder, size, boxes):
    """Images im0.png and im1.png of ``size`` with one traffic light each; the same
    file stems in every such dataset, so that shared text files would collide."""
    from PIL import Image

    lines = []
    for i, box in enumerate(boxes):
        path = folder / f"im{i}.png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (60 * i, 0, 0)).save(path)
        lines.append(f"{path} {','.join(map(str, box))},0\n")
    return write(folder / "test.txt", "".join(lines))


def _evaluate(monkeypatch, annotations, out, predictor, results):
    """get_map.main in mode 0 with ``predictor``; the metrics it reports go to ``results``."""
    import get_map

    monkeypatch.setattr(get_map, "open_evaluated_model", lambda args: predictor[args.annotations])
    status = get_map.main(["--model", "unused.keras", "--annotations", str(annotations), "--out", str(out),
                           "--batch-size", "1", "--no-plots"])
    assert status == 0
    return results[str(annotations)]


@pytest.fixture()
def recorded_reports(monkeypatch):
    """The mAP and per-class AP that each report of the evaluation job receives, by --annotations."""
    from utils.eval import job

    results, report = {}, job.report

    def recording(result, args, out, problems, made_detections):
        results[args.annotations] = (result["map"], [(c["name"], c["ap"]) for c in result["classes"] if c["num_gt"]])
        report(result, args, out, problems, made_detections)

    monkeypatch.setattr(job, "report", recording)
    return results


def test_two_runs_into_one_out_each_get_their_own_result(tmp_path, monkeypatch, recorded_reports):
    import threading

    first = _two_image_dataset(tmp_path / "A", (40, 30), [(0, 0, 20, 15), (20, 15, 40, 30)])  # mAP 1/2
    second = _two_image_dataset(tmp_path / "B", (64, 48), [(0, 0, 32, 24), (0, 0, 32, 24)])  # mAP 1
    datasets = [str(first), str(second)]
    alone, alone_files, alone_json = {}, [], []
    for name in datasets:
        out = tmp_path / f"alone_{Path(name).parent.name}"
        alone[name] = _evaluate(monkeypatch, name, out, {name: MeetingPredictor()}, recorded_reports)
        alone_files.append({p.name: p.read_text() for p in (out / "ground-truth").iterdir()})
        alone_json.append(json.loads((out / "results.json").read_text()))
    assert alone[datasets[0]][0] == pytest.approx(0.5) and alone[datasets[1]][0] == pytest.approx(1.0)

    shared = tmp_path / "shared"
    write(shared / "notes.md", "someone else's file\n")
    barrier = threading.Barrier(2)
    predictors = {name: MeetingPredictor(barrier) for name in datasets}
    recorded_reports.clear()
    errors = []

    def evaluate(name):
        try:
            _evaluate(monkeypatch, name, shared, predictors, recorded_reports)
        except BaseException as exc:  # noqa: BLE001  reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=evaluate, args=(name,)) for name in datasets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert [len(predictors[name].batches) for name in datasets] == [2, 2]  # they met at every batch
    for name in datasets:
        assert recorded_reports[name] == alone[name]
    # The shared folder holds complete files of one of the runs, and nothing else was deleted.
    assert {p.name: p.read_text() for p in (shared / "ground-truth").iterdir()} in alone_files
    assert json.loads((shared / "results.json").read_text()) in alone_json
    assert (shared / "notes.md").read_text() == "someone else's file\n"
    assert not [p.name for p in shared.iterdir() if p.name.startswith(".")]


def test_an_interrupted_run_leaves_the_published_files_as_they_were(tmp_path, monkeypatch, recorded_reports):
    dataset = str(_two_image_dataset(tmp_path / "A", (40, 30), [(0, 0, 20, 15), (20, 15, 40, 30)]))
    out = tmp_path / "out"
    _evaluate(monkeypatch, dataset, out, {dataset: MeetingPredictor()}, recorded_reports)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    with pytest.raises(KeyboardInterrupt):
        _evaluate(monkeypatch, dataset, out, {dataset: MeetingPredictor(fail_at=1)}, recorded_reports)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_text_folder_holding_other_files_is_not_replaced(tmp_path):
    classes = write(tmp_path / "classes.txt", "cat\n")
    annotations = write(tmp_path / "test.txt", "a.jpg 1,2,30,40,0\n")
    out = tmp_path / "out"
    write(out / "ground-truth" / "README.md", "notes kept with the files\n")
    proc = run_cli("--mode", 2, "--annotations", annotations, "--classes", classes, "--out", out)
    assert proc.returncode == 1
    assert "README.md" in proc.stderr and "another --out" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (out / "ground-truth").iterdir()) == ["README.md"]


def test_the_problem_heading_does_not_call_a_clipped_box_skipped(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "images" / "a.jpg")
    coco_json = write(tmp_path / "instances.json", json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 60, 20, 30]}],
    }))
    out = tmp_path / "out"
    proc = run_cli("--mode", 2, "--annotations", coco_json, "--images", tmp_path / "images", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "1 problem(s) in the input, each with what was done (skipped, clipped or kept):" in proc.stdout
    assert "affected lines or files skipped" not in proc.stdout
    assert "(clipped to the image)" in (out / "problems.txt").read_text()
    assert (out / "ground-truth" / "a.txt").read_text() == "cat 90 60 100 80\n"  # kept, clipped


def test_two_processes_writing_ground_truth_into_one_out_leave_one_complete_set(tmp_path):
    # Real processes started together; each dataset names the same 1,500 image stems
    # with other boxes, so files of the two runs would be indistinguishable by name.
    classes = write(tmp_path / "classes.txt", "cat\n")
    sets = []
    for k, annotations in enumerate((tmp_path / "a.txt", tmp_path / "b.txt")):
        write(annotations, "".join(f"images/im{i:04d}.jpg {k},{k},{k + 10},{k + 10},0\n" for i in range(1500)))
        sets.append({f"im{i:04d}.txt": f"cat {k} {k} {k + 10} {k + 10}\n" for i in range(1500)})
    out = tmp_path / "shared"
    runs = [
        subprocess.Popen([sys.executable, "get_map.py", "--mode", "2", "--annotations", str(annotations),
                          "--classes", str(classes), "--out", str(out)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for annotations in (tmp_path / "a.txt", tmp_path / "b.txt")
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    published = {p.name: p.read_text() for p in (out / "ground-truth").iterdir()}
    assert published in sets
    assert sorted(p.name for p in out.iterdir()) == ["ground-truth", "problems.txt"]


def test_mode_all_writes_the_diagnostics_and_the_error_gallery(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import get_map

    for name in ("a", "b"):
        Image.new("RGB", (40, 30)).save(tmp_path / f"{name}.png")
    # The stand-in finds image a's object (top-left quarter); on b it detects the
    # background and misses the object.
    annotations = write(tmp_path / "test.txt",
                        f"{tmp_path / 'a.png'} 0,0,20,15,0\n{tmp_path / 'b.png'} 20,15,40,30,0\n")
    monkeypatch.setattr(get_map, "open_evaluated_model", lambda args: FakePredictor())
    out = tmp_path / "out"
    assert get_map.main(["--model", "unused.keras", "--annotations", str(annotations), "--out", str(out),
                         "--save-errors", "5"]) == 0
    printed = capsys.readouterr().out
    # One traffic light of two found, one detection of two right: F1 1/2, from confidence 0 on.
    assert "Best F1 0.500 (precision 0.500, recall 0.500" in printed and "at confidence 0.000" in printed
    assert "1 found, 0 found as another class, 1 missed, 1 detections on no object" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["best_f1"]["conf"] == 0.0 and results["best_f1"]["f1"] == pytest.approx(0.5)
    matrix = results["confusion_matrix"]
    assert matrix["labels"] == ["traffic light", "cat", "background"]
    assert matrix["counts"] == [[1, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert results["errors"]["false positive"] == 1 and results["errors"]["missed"] == 1
    assert set(results["sizes"]) == {"small", "medium", "large"}
    for name in ("confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    assert (out / "confusion_matrix.csv").read_text().splitlines()[1] == "traffic light,1,0,1"
    assert [p.name for p in (out / "errors").iterdir()] == ["01_b.jpg"]  # image a has no error


def test_an_out_that_is_a_file_or_cannot_be_written_gets_a_message(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import get_map

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    annotations = write(tmp_path / "test.txt", f"{tmp_path / 'a.png'} 0,0,20,15,0\n")
    monkeypatch.setattr(get_map, "open_evaluated_model", lambda args: FakePredictor())
    taken = write(tmp_path / "f.txt", "a file the user keeps\n")
    argv = ["--model", "unused.keras", "--annotations", str(annotations), "--no-plots", "--out"]
    assert get_map.main([*argv, str(taken)]) == 1
    assert f"--out {taken} is a file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "a file the user keeps\n"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(get_map, "run", refuse)
    assert get_map.main([*argv, str(tmp_path / "locked")]) == 1
    assert "locked: permission denied; choose an --out this user can write" in capsys.readouterr().err


def test_options_a_mode_does_not_use_are_warned(map_out, caplog):
    import logging

    import get_map

    out, classes = map_out
    with caplog.at_level(logging.WARNING):
        assert get_map.main(["--mode", "score", "--out", str(out), "--classes", str(classes), "--no-plots",
                             "--conf", "0.3", "--runtime", "tf", "--slice", "320"]) == 0
    assert "--runtime, --conf, --slice are the detector's; --mode score runs no detector: ignored." in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert get_map.main(["--mode", "score", "--out", str(out), "--classes", str(classes), "--no-plots"]) == 0
    assert "ignored" not in caplog.text
