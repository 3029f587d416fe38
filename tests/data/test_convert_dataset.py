"""convert_dataset.py run as a command: round trips between the formats, the summary of
what was skipped, and errors."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import assert_ran, run_script
from utils.data.annotation import read_annotation_file
from utils.data.sources import read_dataset

run_cli = functools.partial(run_script, "convert_dataset.py", timeout=120)


def _ok(proc):
    assert_ran(proc)
    return proc


def _voc(root):
    """VOC2007 with a test split: boxes, a difficult object, a negative, one box past
    the border (clipped when read) and an XML without its image."""
    folder = root / "VOCdevkit" / "VOC2007"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    images = {
        "000001": [("dog", 5, 6, 40, 41, 0), ("cat", 1, 1, 20, 30, 1)],
        "000002": [("person", 10, 12, 63, 47, 0), ("dog", 30, 2, 80, 20, 0)],
        "000003": [],
        "000004": [("cat", 1, 1, 9, 9, 0)],
    }
    for image_id, objects in images.items():
        if image_id != "000004":
            Image.new("RGB", (64, 48), (70, 110, 150)).save(folder / "JPEGImages" / f"{image_id}.jpg")
        objs = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for n, x1, y1, x2, y2, d in objects
        )
        (folder / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{objs}</annotation>"
        )
    (folder / "ImageSets" / "Main" / "test.txt").write_text("\n".join(images) + "\n")
    return folder


def _by_path(annotations):
    return {Path(a.path).name: a for a in annotations}


def test_voc_to_coco_to_lines_gives_the_same_boxes(tmp_path):
    voc = _voc(tmp_path)
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\nperson\n")
    proc = _ok(run_cli("--from", "voc", "--input", voc, "--split", "test", "--classes", classes,
                       "--to", "coco", "--out", tmp_path / "coco" / "test.json"))
    # The summary names what was skipped or changed, and the report file holds it all.
    assert "000004" in proc.stdout and "image not found" in proc.stdout
    assert "box outside the image" in proc.stdout
    assert (tmp_path / "coco" / "convert_dataset_report.txt").is_file()
    data = json.loads((tmp_path / "coco" / "test.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["cat", "dog", "person"]
    assert sum(a["iscrowd"] for a in data["annotations"]) == 1

    _ok(run_cli("--input", tmp_path / "coco" / "test.json", "--to", "lines", "--out", tmp_path / "back.txt"))
    assert (tmp_path / "back_classes.txt").read_text().split() == ["cat", "dog", "person"]
    back, problems = read_annotation_file(tmp_path / "back.txt")
    assert problems == []
    direct = read_dataset(voc, split="test", classes=classes).annotations
    assert len(direct) == 3 and len(back) == 3
    direct, back = _by_path(direct), _by_path(back)
    assert sorted(direct) == sorted(back) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    for name, a in direct.items():
        b = back[name]
        np.testing.assert_array_equal(b.boxes, a.boxes)
        assert b.classes.tolist() == a.classes.tolist() and b.difficult.tolist() == a.difficult.tolist()
        assert Path(b.path) == Path(a.path)
    # The clipped box: dog 30,2,80,20 -> 30,2,64,20.
    assert [30, 2, 64, 20] in back["000002.jpg"].boxes.tolist()


def test_lines_to_yolo_to_lines_within_rounding(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        w, h = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        path = tmp_path / "pics" / f"p{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (w, h)).save(path)
        boxes = []
        for _ in range(i % 3):
            x1, y1 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            x2, y2 = rng.uniform(x1 + 2, w), rng.uniform(y1 + 2, h)
            boxes.append(f"{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f},{int(rng.integers(3))}")
        lines.append(" ".join([str(path), *boxes]))
    source = tmp_path / "train.txt"
    source.write_text("\n".join(lines) + "\n")
    classes = tmp_path / "names.txt"
    classes.write_text("a\nb\nc\n")

    _ok(run_cli("--input", source, "--classes", classes, "--to", "yolo", "--out", tmp_path / "yolo"))
    assert (tmp_path / "yolo" / "images" / "train" / "p0.png").exists()
    _ok(run_cli("--from", "yolo", "--input", tmp_path / "yolo" / "data.yaml", "--split", "train", "--to", "lines",
                "--out", tmp_path / "again.txt"))
    assert (tmp_path / "again_classes.txt").read_text().split() == ["a", "b", "c"]
    before, _ = read_annotation_file(source)
    after, _ = read_annotation_file(tmp_path / "again.txt")
    assert [Path(a.path).name for a in after] == [Path(a.path).name for a in before]
    for a, b in zip(before, after):
        # 6 decimals of the normalized values, then 2 in the line: well under a pixel.
        np.testing.assert_allclose(b.boxes, a.boxes, atol=0.02)
        assert b.classes.tolist() == a.classes.tolist()


def test_coco_to_coco_keeps_category_ids(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.jpg")
    (tmp_path / "in.json").write_text(json.dumps({
        "images": [{"id": 5, "file_name": "a.jpg", "width": 30, "height": 20}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 90, "bbox": [1, 2, 3, 4]}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}],
    }))
    proc = _ok(run_cli("--input", tmp_path / "in.json", "--to", "coco", "--out", tmp_path / "out" / "o.json"))
    assert "COCO JSON" in proc.stdout and "toothbrush" in proc.stdout
    data = json.loads((tmp_path / "out" / "o.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    assert data["annotations"][0]["category_id"] == 90 and data["annotations"][0]["bbox"] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--input", "{tmp}/nope.json", "--to", "lines", "--out", "{tmp}/x.txt"], ["nope.json", "not found"]),
        (["--input", "{tmp}/bad.json", "--to", "lines", "--out", "{tmp}/x.txt"], ["bad.json", "not valid JSON"]),
        (["--input", "{tmp}/in.json", "--classes", "{tmp}/other.txt", "--to", "yolo", "--out", "{tmp}/y"],
         ["['person']", "['cat']"]),
        (["--from", "voc", "--input", "{tmp}", "--to", "coco", "--out", "{tmp}/v.json"], ["no VOC<year> folder"]),
    ],
)
def test_unusable_inputs_fail_with_a_clear_message(tmp_path, args, words):
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "in.json").write_text(json.dumps({"images": [], "annotations": [],
                                                  "categories": [{"id": 1, "name": "person"}]}))
    (tmp_path / "other.txt").write_text("cat\n")
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr


def test_nothing_converted_is_an_error(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg"}], "annotations": [],
                                                  "categories": [{"id": 1, "name": "person"}]}))
    proc = run_cli("--input", tmp_path / "in.json", "--to", "coco", "--out", tmp_path / "o.json")
    assert proc.returncode == 2 and "no image could be converted" in proc.stderr
    assert "gone.jpg" in proc.stdout
