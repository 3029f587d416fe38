"""COCO instances JSON: reading (every bad-input case), writing, and the format detection
and class checks of utils.data.sources."""

import json

import numpy as np
import pytest
from PIL import Image

from utils.data import coco
from utils.data.coco import read_coco, write_coco
from utils.data.report import DatasetError
from utils.data.sources import ClassNames, detect_format, read_dataset


def _image(path, size=(100, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 160)).save(path)
    return path


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def coco_file(tmp_path):
    """A file as annotation tools export them, with one of every problem.

    Categories 7 "dog", 3 "cat", 12 "bird" (non-contiguous, out of order): classes
    cat, dog, bird. Image 10 a.jpg (relative, under images/) has a dog, a cat crowd
    and a cat reaching past the right border; image 11 b.jpg has no annotation;
    image 12 is absolute; the rest is broken in one way each.
    """
    images_dir = tmp_path / "images"
    _image(images_dir / "a.jpg")
    _image(images_dir / "b.jpg")
    absolute = _image(tmp_path / "elsewhere" / "c.png", (50, 40))
    data = {
        "info": {"description": "test"},
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12, "name": "bird"}],
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 11, "file_name": "b.jpg", "width": 100, "height": 80},
            {"id": 12, "file_name": str(absolute), "width": 50, "height": 40},
            {"id": 10, "file_name": "again.jpg", "width": 100, "height": 80},
            {"id": "x13", "file_name": "d.jpg"},
            {"id": 14},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [50, 10, 20, 20], "iscrowd": 1},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [90, 60, 20, 30]},
            {"id": 4, "image_id": 12, "category_id": 7, "bbox": [0.5, 1.5, 10.25, 5]},
            {"id": 5, "image_id": 99, "category_id": 7, "bbox": [1, 1, 5, 5]},
            {"id": 6, "image_id": 12, "category_id": 5, "bbox": [1, 1, 5, 5]},
            {"id": 7, "image_id": 12, "category_id": 7, "bbox": [1, 1, 5]},
            {"id": 8, "image_id": 12, "category_id": 7, "bbox": [1, "2", 5, 5]},
            {"id": 9, "image_id": 12, "category_id": 7, "bbox": [1, 1, float("nan"), 5]},
            {"id": 10, "image_id": 12, "category_id": 7, "bbox": [5, 5, 0, 10]},
            {"id": 11, "image_id": 12, "category_id": 7, "bbox": [60, 5, 10, 10]},
            {"id": 12, "image_id": [12], "category_id": 7, "bbox": [1, 1, 5, 5]},
        ],
    }
    return _write_json(tmp_path / "annotations" / "instances.json", data), images_dir, absolute


def test_reads_boxes_classes_crowds_and_negatives(coco_file):
    path, images_dir, absolute = coco_file
    data = read_coco(path, images=images_dir)
    assert data.class_names == ["cat", "dog", "bird"]
    assert data.category_ids == [3, 7, 12]
    assert data.image_ids == [10, 11, 12]
    a, b, c = data.annotations
    assert a.path == str(images_dir / "a.jpg") and c.path == str(absolute)
    np.testing.assert_allclose(a.boxes, [[10, 20, 40, 60], [50, 10, 70, 30], [90, 60, 100, 80]])
    assert a.classes.tolist() == [1, 0, 0]
    assert a.difficult.tolist() == [False, True, False]
    assert len(b) == 0  # no annotation: a negative image
    np.testing.assert_allclose(c.boxes, [[0.5, 1.5, 10.75, 6.5]])
    assert c.classes.tolist() == [1]


def test_every_bad_entry_is_reported_and_skipped(coco_file):
    path, images_dir, _ = coco_file
    report = read_coco(path, images=images_dir).report
    counts = {reason: report.count(reason) for reason in coco.REASONS}
    assert counts == {
        coco.R_BAD_IMAGE: 2,
        coco.R_DUPLICATE_IMAGE: 1,
        coco.R_UNKNOWN_IMAGE: 2,
        coco.R_UNKNOWN_CATEGORY: 1,
        coco.R_BAD_BOX: 3,
        coco.R_EMPTY_BOX: 2,
        coco.R_UNREADABLE_IMAGE: 0,
        coco.R_OUTSIDE: 0,  # see test_file_names_leading_outside_the_images_folder_are_kept_and_reported
        coco.R_CLIPPED: 1,
        coco.R_CROWD: 1,
        coco.R_NEGATIVE: 1,
        coco.R_EMPTY_CATEGORY: 1,
    }
    text = report.format()
    # Items name the entry and quote the offending value.
    for needle in ("annotations[4] (id 5): image_id 99", "category_id 5 (known: [3, 7, 12])", "bbox [1, 1, 5]",
                   "bbox [1, '2', 5, 5]", "bbox [1, 1, nan, 5]", "images[3] id 10 ('again.jpg')",
                   "category 12 'bird'", "image 11 'b.jpg'", "[90, 60, 20, 30] -> xyxy [90, 60, 100, 80]",
                   "bbox [60, 5, 10, 10] in the 50x40 image"):
        assert needle in text, needle
    # Problems (for a training or evaluation run) leave the notes out.
    assert len(report.messages()) == 12
    assert len(report.messages(include_notes=True)) == 15


def test_relative_names_default_to_the_json_folder(tmp_path):
    _image(tmp_path / "a.jpg")
    path = _write_json(tmp_path / "ann.json", {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 300, 4]}],
        "categories": [{"id": 1, "name": "x"}],
    })
    data = read_coco(path)
    assert data.annotations[0].path == str(tmp_path / "a.jpg")
    # Without a size in the JSON the box is kept as written (the pipeline clips it).
    np.testing.assert_allclose(data.annotations[0].boxes, [[1, 2, 301, 6]])


def test_file_names_leading_outside_the_images_folder_are_kept_and_reported(tmp_path):
    images = tmp_path / "dataset" / "images"
    _image(images / "inside.jpg")
    _image(images / "sub" / "deep.jpg")
    _image(tmp_path / "elsewhere" / "outside.jpg")
    _image(tmp_path / "absolute.jpg")
    path = _write_json(tmp_path / "dataset" / "ann.json", {
        "images": [{"id": 1, "file_name": "inside.jpg"},
                   {"id": 2, "file_name": "sub/../sub/deep.jpg"},
                   {"id": 3, "file_name": "../../elsewhere/outside.jpg"},
                   {"id": 4, "file_name": str(tmp_path / "absolute.jpg")}],  # absolute: chosen, not a slip
        "annotations": [{"image_id": i, "category_id": 1, "bbox": [1, 2, 30, 40]} for i in (1, 2, 3, 4)],
        "categories": [{"id": 1, "name": "x"}],
    })

    source = read_dataset(path, images=images)
    assert len(source.annotations) == 4  # every image kept
    outside = [m for m in source.problems if "outside the images folder" in m]
    assert len(outside) == 1, source.problems
    assert "images[2] id 3 '../../elsewhere/outside.jpg'" in outside[0]
    assert str(tmp_path / "elsewhere" / "outside.jpg") in outside[0] and str(images) in outside[0]
    assert "1 problem(s)" in source.describe()

    # The converter's summary lists it too.
    data = read_coco(path, images=images)
    assert data.report.count(coco.R_OUTSIDE) == 1 and coco.R_OUTSIDE in data.report.format()


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", ["not valid JSON"]),
        ("[1, 2]", ["got a JSON list"]),
        (json.dumps({"images": [], "categories": []}), ["'annotations' missing"]),
        (json.dumps({"images": [], "annotations": [], "categories": []}), ["'categories' list is empty"]),
        (json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}),
         ["category id 1 listed twice", "'a'", "'b'"]),
        (json.dumps({"images": [], "annotations": [], "categories": [{"id": "1", "name": "a"}]}),
         ["categories[0] has no integer 'id'"]),
        (json.dumps({"images": [], "annotations": [], "categories": [{"id": 4}]}), ["category id 4 has no name"]),
        (json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}),
         ["'a' is used by ids [1, 2]"]),
    ],
)
def test_files_that_are_not_coco_fail_with_a_clear_error(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_coco(path)
    for word in words:
        assert word in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(tmp_path / "nope.json")


def test_write_then_read_keeps_boxes_crowds_and_category_ids(coco_file, tmp_path):
    path, images_dir, _ = coco_file
    data = read_coco(path, images=images_dir)
    out = tmp_path / "out" / "copy.json"
    written = write_coco(out, data.annotations, data.class_names, data.category_ids)
    assert [c["id"] for c in written["categories"]] == [3, 7, 12]
    # Images outside the JSON's folder keep absolute names; sizes come from the files.
    assert written["images"][0]["file_name"] == str(images_dir / "a.jpg")
    assert (written["images"][2]["width"], written["images"][2]["height"]) == (50, 40)
    again = read_coco(out)
    assert again.class_names == data.class_names and again.category_ids == data.category_ids
    for before, after in zip(data.annotations, again.annotations):
        assert after.path == before.path
        np.testing.assert_allclose(after.boxes, before.boxes, atol=1e-4)
        assert after.classes.tolist() == before.classes.tolist()
        assert after.difficult.tolist() == before.difficult.tolist()


def test_unreadable_image_is_reported_when_writing(tmp_path):
    from utils.data.annotation import Annotation

    report = coco.coco_report()
    good = Annotation(str(_image(tmp_path / "ok.png")), [[1, 1, 5, 5]], [0])
    data = coco.to_coco([Annotation(str(tmp_path / "gone.jpg")), good], ["a"], tmp_path, report=report)
    assert [im["file_name"] for im in data["images"]] == ["ok.png"]
    assert report.count(coco.R_UNREADABLE_IMAGE) == 1 and "gone.jpg" in report.format()


# ------------------------------------------------------------------ utils.data.sources


def test_format_is_detected_from_the_file(tmp_path, coco_file):
    path, _, _ = coco_file
    renamed = tmp_path / "export.txt"
    renamed.write_text(" \n" + path.read_text())
    lines = tmp_path / "train.txt"
    lines.write_text("a.jpg 1,2,3,4,0\n")
    (tmp_path / "yolo" / "images").mkdir(parents=True)
    (tmp_path / "data.yml").write_text("train: x\n")
    (tmp_path / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    assert detect_format(path) == "coco" and detect_format(renamed) == "coco"
    assert detect_format(lines) == "lines"
    assert detect_format(tmp_path / "yolo") == "yolo" and detect_format(tmp_path / "data.yml") == "yolo"
    assert detect_format(tmp_path / "VOCdevkit") == "voc"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        detect_format(tmp_path / "missing.json")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="neither a YOLO dataset"):
        detect_format(tmp_path / "plain")


def test_classes_come_from_the_dataset_and_a_mismatch_names_both_lists(coco_file, tmp_path):
    path, images_dir, _ = coco_file
    source = read_dataset(path, images=images_dir)
    assert source.format == "coco"
    assert source.classes.names == ["cat", "dog", "bird"] and source.classes.category_ids == [3, 7, 12]
    assert source.image_ids == [10, 11, 12]
    assert "3 images (1 without objects), 4 objects, 1 difficult/crowd; 3 classes" in source.describe()
    same = tmp_path / "same.txt"
    same.write_text("cat\ndog\nbird\n")
    assert read_dataset(path, images=images_dir, classes=same).classes.names == ["cat", "dog", "bird"]
    other = tmp_path / "voc_classes.txt"
    other.write_text("dog\ncat\nbird\n")
    with pytest.raises(DatasetError) as info:
        read_dataset(path, images=images_dir, classes=other)
    message = str(info.value)
    assert "['cat', 'dog', 'bird']" in message and "['dog', 'cat', 'bird']" in message and "voc_classes.txt" in message
    # A model trained with other category ids is caught too.
    model = ClassNames(["cat", "dog", "bird"], [1, 2, 3], "the model logs/exp/best.keras")
    with pytest.raises(DatasetError, match=r"\[3, 7, 12\].*\[1, 2, 3\]"):
        read_dataset(path, images=images_dir, classes=model)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        read_dataset(path, images=tmp_path / "no_such_folder")
