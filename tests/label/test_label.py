"""label.py and utils.label: pre-labels written in each format and read back by the
project's readers, images already labelled left alone, the review ranking, bad input."""

import csv
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.label.fakes import CLASSES, ColourPredictor, picture
from utils.data.sources import read_dataset
from utils.eval.structures import ImageDetections
from utils.label.job import LabelError, LabelOptions, run_label
from utils.label.review import (
    class_confusion,
    disagreement,
    mirror_back,
    rank,
    read_confusion,
    review_item,
)
from utils.label.writers import FORMATS, write_prelabels

# Each picture's objects: (white box, red box), xyxy pixels.
OBJECTS = {
    "a.png": ((10, 10, 50, 40), (70, 30, 110, 80)),
    "b.jpg": ((5, 50, 25, 85), None),
    "c.png": (None, None),
}


@pytest.fixture
def folder(tmp_path):
    for name, (white, red) in OBJECTS.items():
        picture(tmp_path / "new" / name, white=white, red=red)
    return tmp_path / "new"


def _expected(folder):
    """{real image path: sorted [(class name, box)]} as the stand-in detector finds them."""
    found = {}
    for name, (white, red) in OBJECTS.items():
        objects = [(CLASSES[k], box) for k, box in enumerate((white, red)) if box is not None]
        found[os.path.realpath(folder / name)] = sorted(objects)
    return found


def _read_back(data):
    names = data.classes.names
    return {os.path.realpath(a.path): sorted((names[c], tuple(b)) for b, c in zip(a.boxes.tolist(), a.classes))
            for a in data.annotations}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_with_the_same_boxes_and_classes(fmt, folder, tmp_path):
    run = run_label(ColourPredictor(), folder, LabelOptions(fmt, str(tmp_path / "out"), conf=0.5), log=lambda _: None)
    assert run.labelled == 3 and run.boxes == 3 and run.out == tmp_path / "out"
    data = read_dataset(run.written.dataset, split=run.written.split)
    read = _read_back(data)
    expected = _expected(folder)
    assert set(read) == set(expected)
    for image, objects in expected.items():
        assert [name for name, _ in read[image]] == [name for name, _ in objects], image
        np.testing.assert_allclose([box for _, box in read[image]] or np.zeros((0, 4)),
                                   [box for _, box in objects] or np.zeros((0, 4)), atol=0.01)
    assert (run.out / "classes.txt").read_text() == "square\nred thing\n"
    if fmt != "voc":  # VOC files carry no class order: the names are read sorted
        assert data.classes.names == CLASSES


def test_label_studio_tasks_follow_the_import_schema(folder, tmp_path):
    run = run_label(ColourPredictor(white_score=0.9, red_score=0.7), folder,
                    LabelOptions("label-studio", str(tmp_path / "out"), conf=0.5, model_version="best.keras"),
                    log=lambda _: None)
    tasks = json.loads(run.written.dataset.read_text())
    assert isinstance(tasks, list) and len(tasks) == 3
    for task in tasks:
        assert set(task) == {"data", "predictions"}
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        name = task["data"]["image"].split("?d=")[1]
        width, height = Image.open(folder / name).size
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "best.keras" and 0 <= prediction["score"] <= 1
        for result in prediction["result"]:
            assert result["type"] == "rectanglelabels" and result["from_name"] == "label"
            assert result["to_name"] == "image" and isinstance(result["id"], str)
            assert (result["original_width"], result["original_height"]) == (width, height)
            value = result["value"]
            assert all(0 <= value[k] <= 100 for k in ("x", "y", "width", "height"))
            assert value["x"] + value["width"] <= 100 + 1e-9 and value["y"] + value["height"] <= 100 + 1e-9
            assert value["rotation"] == 0 and len(value["rectanglelabels"]) == 1
            assert value["rectanglelabels"][0] in CLASSES and 0 <= result["score"] <= 1
    a = next(t for t in tasks if t["data"]["image"].endswith("a.png"))
    scores = sorted(r["score"] for r in a["predictions"][0]["result"])
    assert scores == pytest.approx([0.7, 0.9]) and a["predictions"][0]["score"] == pytest.approx(0.8)
    box = next(r["value"] for r in a["predictions"][0]["result"] if r["value"]["rectanglelabels"] == ["red thing"])
    assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx((70 / 1.2, 30 / 0.9, 40 / 1.2, 50 / 0.9))
    config = ET.fromstring((run.out / "label_config.xml").read_text())
    assert config.find("Image").get("name") == "image"
    rect = config.find("RectangleLabels")
    assert rect.get("name") == "label" and rect.get("toName") == "image"
    assert [label.get("value") for label in rect] == CLASSES


def test_label_studio_urls_quote_file_names_and_read_back(tmp_path):
    picture(tmp_path / "new" / "IMG 0001.png", white=(10, 10, 50, 40))
    for template in ("/data/local-files/?d={relpath}", "http://localhost:8081/{name}"):
        run = run_label(ColourPredictor(), tmp_path / "new", LabelOptions("label-studio", str(tmp_path / "out"),
                                                                          conf=0.5, image_url=template),
                        log=lambda _: None)
        (task,) = json.loads(run.written.dataset.read_text())
        assert "IMG%200001.png" in task["data"]["image"]
        (annotation,) = read_dataset(run.written.dataset, images=tmp_path / "new").annotations
        assert os.path.realpath(annotation.path) == str(tmp_path / "new" / "IMG 0001.png")
        np.testing.assert_allclose(annotation.boxes, [[10, 10, 50, 40]], atol=0.01)


def test_cvat_file_follows_the_cvat_for_images_schema(folder, tmp_path):
    run = run_label(ColourPredictor(), folder, LabelOptions("cvat", str(tmp_path / "out"), conf=0.5),
                    log=lambda _: None)
    root = ET.parse(run.written.dataset).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert [n.text for n in root.findall("meta/task/labels/label/name")] == CLASSES
    assert root.findtext("meta/task/size") == "3" and root.findtext("meta/task/mode") == "annotation"
    images = root.findall("image")
    assert [i.get("id") for i in images] == ["0", "1", "2"]
    assert [i.get("name") for i in images] == sorted(OBJECTS)
    for image in images:
        width, height = int(image.get("width")), int(image.get("height"))
        assert (width, height) == Image.open(folder / image.get("name")).size
        for box in image.findall("box"):
            assert set(box.attrib) == {"label", "source", "occluded", "xtl", "ytl", "xbr", "ybr", "z_order"}
            assert box.get("label") in CLASSES and box.get("source") == "auto" and box.get("occluded") == "0"
            xtl, ytl, xbr, ybr = (float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
            assert 0 <= xtl < xbr <= width and 0 <= ytl < ybr <= height


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_images_with_annotations_are_left_as_they_are(folder, tmp_path):
    (folder / "a.xml").write_text("<annotation><object><name>square</name></object></annotation>\n")
    (folder / "b.txt").write_text("")  # a YOLO file without objects is a label too
    picture(folder / "d.png", white=(1, 1, 9, 9))
    listed = tmp_path / "labelled.txt"
    listed.write_text(f"{folder / 'c.png'} 1,1,5,5,0\n")
    before = _snapshot(folder)
    lines = []
    run = run_label(ColourPredictor(), folder,
                    LabelOptions("yolo", str(tmp_path / "out"), conf=0.5, existing=str(listed)), log=lines.append)
    assert _snapshot(folder) == before
    assert set(run.skipped) == {folder / "a.png", folder / "b.jpg", folder / "c.png"}
    assert "Skipped 3 of 4 images that have annotations already" in lines[0]
    assert run.labelled == 1 and sorted(p.name for p in (run.out / "labels" / "train").iterdir()) == ["d.txt"]

    lines = []
    (folder / "d.xml").write_text("<annotation/>")
    run = run_label(ColourPredictor(), folder,
                    LabelOptions("coco", str(tmp_path / "out2"), conf=0.5, existing=str(listed)), log=lines.append)
    assert run.out is None and run.written is None and "Nothing to pre-label" in lines[-1]


def test_an_out_folder_holding_another_runs_files_is_left_alone(folder, tmp_path):
    out = tmp_path / "prelabels"
    out.mkdir()
    (out / "annotations.xml").write_text("a person's work")
    lines = []
    run = run_label(ColourPredictor(), folder, LabelOptions("cvat", str(out), conf=0.5), log=lines.append)
    assert run.out == tmp_path / "prelabels2" and (run.out / "annotations.xml").is_file()
    assert (out / "annotations.xml").read_text() == "a person's work" and len(list(out.iterdir())) == 1
    assert any("writing to" in line and "prelabels2" in line for line in lines)


def test_an_unreadable_image_is_listed_and_the_others_written(folder, tmp_path):
    (folder / "broken.jpg").write_bytes(b"not a picture at all")
    lines = []
    run = run_label(ColourPredictor(), folder, LabelOptions("voc", str(tmp_path / "out"), conf=0.5), log=lines.append)
    assert [Path(p).name for p, _ in run.unreadable] == ["broken.jpg"]
    assert "broken.jpg" in (run.out / "unreadable.txt").read_text()
    assert any("Could not read 1 image" in line for line in lines)
    assert run.labelled == 3
    assert sorted(p.name for p in (run.out / "Annotations").iterdir()) == ["a.xml", "b.xml", "c.xml"]


class _EdgePredictor(ColourPredictor):
    """Adds a box clipped flat against the top edge, as an undertrained model draws them."""

    def predict_batch(self, images):
        out = super().predict_batch(images)
        for det in out:
            det.boxes = np.concatenate([det.boxes, [[30, 0, 60, 0]]]).astype(np.float32)
            det.scores = np.append(det.scores, 0.9).astype(np.float32)
            det.classes = np.append(det.classes, 1)
        return out


def test_empty_boxes_are_left_out_so_that_the_set_reads_back_whole(folder, tmp_path):
    lines = []
    run = run_label(_EdgePredictor(), folder, LabelOptions("cvat", str(tmp_path / "out"), conf=0.5), log=lines.append)
    assert run.boxes == 3 and "Left out 3 box(es) narrower or lower than 1 pixel." in lines
    data = read_dataset(run.written.dataset)
    assert data.problems == [] and sum(len(a) for a in data.annotations) == 3


def test_bad_sources_and_formats_are_refused(tmp_path):
    with pytest.raises(LabelError, match="not found"):
        run_label(ColourPredictor(), tmp_path / "missing", LabelOptions("coco", str(tmp_path / "o"), conf=0.5))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="holds no image"):
        run_label(ColourPredictor(), tmp_path / "empty", LabelOptions("coco", str(tmp_path / "o"), conf=0.5))
    picture(tmp_path / "pics" / "a.png")
    with pytest.raises(LabelError, match="--existing"):
        run_label(ColourPredictor(), tmp_path / "pics",
                  LabelOptions("coco", str(tmp_path / "o"), conf=0.5, existing=str(tmp_path / "nope.json")))
    with pytest.raises(ValueError, match="unknown format 'pascal'"):
        write_prelabels("pascal", tmp_path / "o", [], CLASSES)
    assert not (tmp_path / "o").exists()


def test_the_command_line_refuses_an_unknown_format(tmp_path, capsys):
    import label

    with pytest.raises(SystemExit) as exit_info:
        label.main(["--model", "m.keras", "--source", str(tmp_path), "--format", "pascal"])
    assert exit_info.value.code == 2 and "invalid choice: 'pascal'" in capsys.readouterr().err
    assert label.main(["--model", "m.keras", "--source", str(tmp_path / "missing"), "--format", "coco",
                       "--conf", "0.5"]) == 2
    assert "--source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        label.main(["--model", "m.keras", "--source", str(tmp_path), "--format", "label-studio",
                    "--image-url", "http://host/{file}"])
    assert "image URL template 'http://host/{file}' is unusable" in capsys.readouterr().err


def _det(boxes, scores, classes):
    return ImageDetections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                           np.asarray(classes, np.int64))


def test_a_box_at_the_threshold_ranks_above_confident_ones():
    box = [[10, 10, 40, 40]]
    confident = review_item("sure.png", _det(box, [0.95], [0]), _det(box, [0.95], [0]), 0.5, CLASSES)
    doubtful = review_item("doubt.png", _det(box, [0.5], [0]), _det(box, [0.5], [0]), 0.5, CLASSES)
    below = review_item("below.png", _det(box, [0.42], [0]), _det(box, [0.42], [0]), 0.5, CLASSES)
    assert confident.near == 0 and confident.score == 0 and confident.reason == "no doubt found"
    assert doubtful.near == pytest.approx(1.0) and "near the threshold" in doubtful.reason
    assert below.near == pytest.approx(1 - 0.08 / 0.15, abs=1e-5) and below.boxes == 0
    assert [item.path.name for item in rank([confident, below, doubtful])] == ["doubt.png", "below.png", "sure.png"]


def test_the_mirror_prediction_is_mapped_back_before_it_is_compared():
    width = 100
    found = _det([[10, 20, 30, 40]], [0.9], [0])
    # A detector that follows the flip finds the box at 70..90 in the mirrored image.
    follows = mirror_back(_det([[70, 20, 90, 40]], [0.9], [0]), width)
    np.testing.assert_allclose(follows.boxes, [[10, 20, 30, 40]])
    assert disagreement(found, follows) == (0.0, 0)
    # One that does not (the same pixels whatever the picture) disagrees completely.
    stuck = mirror_back(_det([[10, 20, 30, 40]], [0.9], [0]), width)
    assert disagreement(found, stuck) == (1.0, 2)
    # Half a box's width off: IoU 1/3; and a box of another class does not pair.
    shifted = mirror_back(_det([[60, 20, 80, 40]], [0.9], [0]), width)
    assert disagreement(found, shifted)[0] == pytest.approx(1 - 1 / 3)
    assert disagreement(found, _det([[10, 20, 30, 40]], [0.9], [1]))[0] == 1.0
    item = review_item("x.png", found, stuck, 0.5, CLASSES)
    assert item.mirror == 1.0 and "mirrored image disagrees" in item.reason


def test_confused_classes_come_from_the_confusion_matrix_csv(tmp_path):
    from utils.eval.confusion import normalize_rows  # noqa: F401  (the module that writes the CSV's layout)
    from utils.eval.diagnostics import Diagnostics, save_diagnostics

    matrix = np.array([[8, 2, 1], [2, 0, 3], [1, 1, 0]])
    save_diagnostics(Diagnostics(CLASSES, None, matrix, 0.25, 0.5), {}, tmp_path, plots=False)
    read = read_confusion(tmp_path / "confusion_matrix.csv", CLASSES)
    np.testing.assert_array_equal(read, matrix)
    share, partner = class_confusion(read)
    # square: 2 + 2 of 12 pairs with a class mixed up; red thing: all 4 of its pairs.
    np.testing.assert_allclose(share, [4 / 12, 1.0])
    assert partner.tolist() == [1, 0]
    assert read_confusion(tmp_path / "confusion_matrix.csv", ["a", "b"]) is None
    box = [[10, 10, 40, 40]]
    red = review_item("r.png", _det(box, [0.95], [1]), None, 0.5, CLASSES, (share, partner))
    square = review_item("s.png", _det(box, [0.95], [0]), None, 0.5, CLASSES, (share, partner))
    assert red.confusion == 1.0 and square.confusion == pytest.approx(1 / 3)
    assert "red thing is mixed up with square" in red.reason
    assert rank([square, red])[0] is red


def test_review_ranks_the_doubtful_images_first_and_draws_a_contact_sheet(folder, tmp_path):
    # a.png's red box sits near the threshold (0.52 at 0.5: term 0.87); e.png gets a box at
    # its top-left corner that does not follow the flip, beside one that does (term 1/2);
    # c.png has no object.
    picture(folder / "e.png", size=(100, 90), white=(60, 10, 90, 40))
    predictor = ColourPredictor(white_score=0.95, red_score=0.52, lopsided_width=100)
    run = run_label(predictor, folder, LabelOptions("coco", str(tmp_path / "out"), conf=0.5, review=2),
                    log=lambda _: None)
    assert predictor.calls == 8  # each image and its mirror
    order = [item.path.name for item in run.ranked]
    assert order[:2] == ["a.png", "e.png"] and order[-1] == "c.png"
    rows = list(csv.DictReader((run.out / "review" / "review.csv").open()))
    assert [r["image"] for r in rows] == [str(item.path) for item in run.ranked]
    assert "near the threshold" in rows[0]["reason"] and "mirrored image disagrees" in rows[1]["reason"]
    assert float(rows[0]["near_threshold"]) == pytest.approx(1 - 0.02 / 0.15, abs=1e-3)
    assert float(rows[1]["mirror_disagreement"]) == pytest.approx(0.5) and float(rows[0]["mirror_disagreement"]) == 0
    sheet = Image.open(run.out / "review" / "contact_sheet.jpg")
    assert sheet.size == (2 * 320, 320)
    # the rank and score of each task go with it into Label Studio; here COCO has none.
    assert json.loads((run.out / "annotations.json").read_text())["images"][0]["file_name"].startswith("images/")


def test_label_py_on_a_trained_checkpoint(tiny_detector, tmp_path, capsys, monkeypatch):
    import label
    from utils.label.review import above
    from utils.predict.sources import read_image

    _, checkpoint = tiny_detector
    for name, (white, red) in OBJECTS.items():
        picture(tmp_path / "new" / name, white=white, red=red)
    opened = []
    real_open = label.open_predictor
    monkeypatch.setattr(label, "open_predictor", lambda args, conf: opened.append(real_open(args, conf)) or opened[0])
    out = tmp_path / "prelabels"
    assert label.main(["--model", str(checkpoint), "--source", str(tmp_path / "new"), "--format", "label-studio",
                       "--out", str(out), "--conf", "0.3", "--runtime", "tf", "--review", "2", "--batch-size",
                       "3"]) == 0
    printed = capsys.readouterr().out
    assert "Pre-labelled 3 image(s)" in printed and "Review first:" in printed
    assert "no confusion_matrix.csv" in printed.replace(str(checkpoint.parent) + os.sep, "")
    # The model's own boxes above --conf (it predicted down to 0.15 for the review), read back from the file.
    (predictor,) = opened
    assert predictor.conf == pytest.approx(0.15) and predictor.agnostic_nms
    data = read_dataset(out / "tasks.json")
    found = predictor.predict_batch([read_image(a.path) for a in data.annotations])
    assert sum(len(above(det, 0.3).scores) for det in found) > 0
    for annotation, det in zip(data.annotations, found):
        det = above(det, 0.3)
        assert len(det.scores) == len(annotation), annotation.path
        np.testing.assert_allclose(np.sort(annotation.boxes, axis=0), np.sort(det.boxes, axis=0), atol=0.01)
        assert sorted(annotation.classes.tolist()) == sorted(det.classes.tolist())
    assert (out / "review" / "contact_sheet.jpg").is_file()
    tasks = json.loads((out / "tasks.json").read_text())
    assert sorted(t["data"]["review_rank"] for t in tasks) == [1, 2, 3]
