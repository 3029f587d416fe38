"""utils.data.label_studio and utils.data.cvat: the files Label Studio and CVAT export,
read as datasets by every script (format detection, class names, boxes in pixels)."""

import json

import numpy as np
import pytest

from tests.label.fakes import picture
from utils.data.report import DatasetError
from utils.data.sources import FORMATS, detect_format, read_dataset


def _ls_rect(x, y, w, h, label, width=200, height=100, rotation=0, score=None):
    result = {"id": "a1", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
              "original_width": width, "original_height": height, "image_rotation": 0,
              "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}}
    if score is not None:
        result["score"] = score
    return result


def test_a_label_studio_export_reads_as_a_dataset(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        picture(tmp_path / "pics" / name, size=(200, 100))
    tasks = [
        # A person's annotation wins over the prediction; a local-files URL names the image.
        {"id": 1, "data": {"image": "/data/local-files/?d=pics/a.jpg"},
         "annotations": [{"result": [_ls_rect(10, 20, 30, 40, "dog"), {"type": "choices", "value": {}}],
                          "was_cancelled": False}],
         "predictions": [{"model_version": "m", "score": 0.5, "result": [_ls_rect(50, 50, 10, 10, "cat", score=0.5)]}]},
        # A cancelled annotation is not used: the prediction is (a note).
        {"id": 2, "data": {"image": "/data/upload/3/0a1b2c3d-b.jpg"},
         "annotations": [{"result": [_ls_rect(0, 0, 50, 50, "dog")], "was_cancelled": True}],
         "predictions": [{"model_version": "m", "score": 0.9, "result": [_ls_rect(50, 10, 20, 80, "cat", score=0.9)]}]},
        # Rotated 90 degrees clockwise about its top-left corner; a box reaching outside is clipped.
        {"id": 3, "data": {"image": "pics/c.jpg"},
         "annotations": [{"result": [_ls_rect(50, 10, 10, 20, "cat", rotation=90), _ls_rect(95, 90, 10, 20, "dog")]}]},
        {"id": 4, "data": {"image": "http://host/pics/d.jpg"}},
        {"id": 5, "data": {"text": "no image here"}},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))

    assert detect_format(path) == "label-studio" and "label-studio" in FORMATS
    # Paths under the images folder, or file names alone (uploads, URLs) found in it.
    data = read_dataset(path, images=tmp_path / "pics")
    assert data.classes.names == ["cat", "dog"]  # the labels found, sorted
    assert [a.path for a in data.annotations] == [str(tmp_path / "pics" / n) for n in ("a.jpg", "b.jpg", "c.jpg",
                                                                                        "d.jpg")]
    a, b, c, d = data.annotations
    np.testing.assert_allclose(a.boxes, [[20, 20, 80, 60]], atol=1e-4)
    assert a.classes.tolist() == [1]
    np.testing.assert_allclose(b.boxes, [[100, 10, 140, 90]], atol=1e-4)
    # 20x20 px box turned 90 degrees about (100, 10): x from 80 to 100, y from 10 to 30.
    np.testing.assert_allclose(c.boxes, [[80, 10, 100, 30], [190, 90, 200, 100]], atol=1e-3)
    assert len(d) == 0
    problems = "\n".join(data.problems)
    assert "task 5" in problems and "not a rectangle" in problems and "clipped" in problems
    notes = data.report.messages(include_notes=True)
    assert any("task 2" in m and "prediction read" in m for m in notes)
    assert any("rotated" in m for m in notes)


def test_label_studio_classes_come_from_classes_txt_beside_the_file(tmp_path):
    picture(tmp_path / "images" / "a.jpg", size=(200, 100))
    (tmp_path / "classes.txt").write_text("zebra\ncat\n")
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"data": {"image": "/data/local-files/?d=a.jpg"},
                                 "annotations": [{"result": [_ls_rect(10, 10, 10, 10, "cat"),
                                                             _ls_rect(10, 10, 10, 10, "lion")]}]}]))
    data = read_dataset(path)
    assert data.classes.names == ["zebra", "cat"] and data.classes.origin.endswith("classes.txt")
    assert data.annotations[0].path == str(tmp_path / "images" / "a.jpg")  # found in images/ beside the file
    assert data.annotations[0].classes.tolist() == [1]
    assert any("'lion'" in p and "outside the class names" in p for p in data.problems)


def test_bad_label_studio_files_are_refused_by_name(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text('[{"data": ')
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_dataset(path)
    path.write_text(json.dumps([{"data": {"image": "a.jpg"}}]))
    with pytest.raises(DatasetError, match="no rectangle label"):
        read_dataset(path)


CVAT_EXPORT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <job>
      <id>7</id><size>2</size><mode>annotation</mode>
      <labels>
        <label><name>dog</name><color>#ff0000</color><type>rectangle</type><attributes/></label>
        <label><name>cat</name><color>#00ff00</color><type>any</type><attributes/></label>
      </labels>
    </job>
    <dumped>2026-01-01 00:00:00+00:00</dumped>
  </meta>
  <image id="0" name="a.jpg" width="200" height="100">
    <box label="cat" source="manual" occluded="0" xtl="10.50" ytl="20.00" xbr="60.25" ybr="70.00" z_order="0">
      <attribute name="colour">grey</attribute>
    </box>
    <box label="dog" source="auto" occluded="1" xtl="150" ytl="50" xbr="250" ybr="90" z_order="0"/>
    <box label="dog" source="manual" occluded="0" xtl="100" ytl="40" xbr="120" ybr="60" z_order="0" rotation="90"/>
    <polygon label="cat" source="manual" occluded="0" points="5.0,5.0;15.0,2.0;12.0,30.0" z_order="0"/>
    <points label="cat" source="manual" occluded="0" points="1,1" z_order="0"/>
  </image>
  <image id="1" name="sub/b.jpg" width="200" height="100">
  </image>
</annotations>
"""


def test_a_cvat_for_images_export_reads_as_a_dataset(tmp_path):
    picture(tmp_path / "images" / "a.jpg", size=(200, 100))
    picture(tmp_path / "images" / "sub" / "b.jpg", size=(200, 100))
    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_EXPORT)

    assert detect_format(path) == "cvat" and "cvat" in FORMATS
    data = read_dataset(path)
    assert data.classes.names == ["dog", "cat"]  # the labels of <meta>, in their order
    assert [a.path for a in data.annotations] == [str(tmp_path / "images" / "a.jpg"),
                                                  str(tmp_path / "images" / "sub" / "b.jpg")]
    a, b = data.annotations
    np.testing.assert_allclose(a.boxes, [[10.5, 20, 60.25, 70], [150, 50, 200, 90], [100, 40, 120, 60], [5, 2, 15, 30]],
                               atol=1e-4)
    assert a.classes.tolist() == [1, 0, 0, 1] and len(b) == 0
    problems = "\n".join(data.problems)
    assert "clipped" in problems and "(points)" in problems
    assert any("polygon" in m for m in data.report.messages(include_notes=True))


def test_cvat_classes_given_skip_other_labels_and_video_files_are_refused(tmp_path):
    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_EXPORT)
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\n")
    data = read_dataset(path, classes=classes)
    assert data.classes.names == ["cat"] and data.annotations[0].classes.tolist() == [0, 0]
    assert sum("outside the class names" in p for p in data.problems) == 2

    path.write_text('<?xml version="1.0"?><annotations><version>1.1</version><meta/>'
                    '<track id="0" label="cat"><box frame="0" xtl="1" ytl="1" xbr="5" ybr="5" outside="0" '
                    'occluded="0" keyframe="1"/></track></annotations>')
    with pytest.raises(DatasetError, match="CVAT for video"):
        read_dataset(path)
    path.write_text("<annotations><image id='0' name='a.jpg'")
    with pytest.raises(DatasetError, match="malformed XML"):
        read_dataset(path)


def test_a_corrected_export_goes_through_the_dataset_check_and_conversion(tmp_path):
    from utils.data.check import check_dataset
    from utils.data.convert import convert_dataset

    picture(tmp_path / "images" / "a.jpg", size=(200, 100))
    picture(tmp_path / "images" / "sub" / "b.jpg", size=(200, 100))
    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_EXPORT)
    report = check_dataset(str(path), split="train")
    assert report.trainable
    result = convert_dataset(str(path), "lines", tmp_path / "train.txt")
    assert result.images == 2 and result.objects.tolist() == [2, 2]
    lines = (tmp_path / "train.txt").read_text().splitlines()
    assert lines[0].endswith("10.50,20,60.25,70,1 150,50,200,90,0 100,40,120,60,0 5,2,15,30,1")
