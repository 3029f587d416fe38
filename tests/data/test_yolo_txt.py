"""YOLO txt datasets: data YAMLs and folders, every bad-input case, writing."""

import numpy as np
import pytest
from PIL import Image

from utils.data import yolo_txt
from utils.data.annotation import Annotation
from utils.data.report import DatasetError
from utils.data.sources import read_dataset
from utils.data.yolo_txt import label_path, read_yolo, write_yolo


def _image(path, size=(200, 100), orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.new("RGB", size, (90, 120, 30)).save(path, exif=exif)
    return path


def _text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path):
    """A dataset in the Ultralytics layout with its data YAML one folder up.

    train: a.jpg (200x100) with good, polygon and bad lines; b.jpg without label file;
    c.jpg with an empty label file; r.jpg stored 200x100 with EXIF orientation 6
    (displayed 100x200). val: v.jpg, listed in a .txt file with one missing entry.
    """
    root = tmp_path / "ds"
    for name in ("a", "b", "c"):
        _image(root / "images" / "train" / f"{name}.jpg")
    _image(root / "images" / "train" / "r.jpg", orientation=6)
    _image(root / "images" / "val" / "v.jpg")
    _text(root / "labels" / "train" / "a.txt", "\n".join([
        "0 0.5 0.5 0.2 0.4",          # 1: x 80-120, y 30-70
        "2 0.1 0.2 0.3 0.2",          # 2: x -10..50 -> clipped to 0..50
        "1 0.3 0.3 0.1",              # 3: four values
        "1 a 0.3 0.1 0.1",            # 4: not a number
        "1 0.3 nan 0.1 0.1",          # 5: not finite
        "-1 0.3 0.3 0.1 0.1",         # 6: negative class
        "1.5 0.3 0.3 0.1 0.1",        # 7: fractional class
        "3 0.3 0.3 0.1 0.1",          # 8: class id past the names
        "1 0.3 0.3 0 0.1",            # 9: zero width
        "1 1.5 0.5 0.2 0.2",          # 10: wholly outside
        "",                           # 11: blank, ignored
        "1 0.1 0.1 0.3 0.1 0.2 0.4",  # 12: polygon -> x 20-60, y 10-40
        "1.0 0.25 0.75 0.1 0.1",      # 13: class written as 1.0, fine
    ]) + "\n")
    _text(root / "labels" / "train" / "c.txt", "")
    _text(root / "labels" / "train" / "r.txt", "0 0.5 0.25 0.2 0.1\n")  # in the displayed 100x200 frame
    _text(root / "labels" / "train" / "stray.txt", "0 0.5 0.5 0.1 0.1\n")
    _text(root / "labels" / "classes.txt", "cat\ndog\nbird\n")
    _text(root / "labels" / "train" / "classes.txt", "cat\ndog\nbird\n")  # written by some tools, not a label
    _text(root / "labels" / "val" / "v.txt", "2 0.5 0.5 1 1\n")
    _text(root / "val_list.txt", "images/val/v.jpg\nimages/val/gone.jpg\n")
    yaml_path = _text(tmp_path / "cfg" / "data.yaml",
                      "path: ../ds\ntrain: images/train\nval: val_list.txt\nnames:\n  0: cat\n  1: dog\n  2: bird\n")
    return root, yaml_path


def test_label_path_replaces_the_last_images_folder():
    assert label_path("/d/images/train/a.b.JPG").as_posix() == "/d/labels/train/a.b.txt"
    assert label_path("/images/x/images/v/a.png").as_posix() == "/images/x/labels/v/a.txt"
    assert label_path("/d/pics/a.jpg").as_posix() == "/d/pics/a.txt"


def test_reads_a_split_of_a_data_yaml(dataset):
    root, yaml_path = dataset
    data = read_yolo(yaml_path, split="train")
    assert data.class_names == ["cat", "dog", "bird"] and data.names_from == str(yaml_path)
    by_name = {a.path.rsplit("/", 1)[-1]: a for a in data.annotations}
    assert sorted(by_name) == ["a.jpg", "b.jpg", "c.jpg", "r.jpg"]
    a = by_name["a.jpg"]
    np.testing.assert_allclose(a.boxes, [[80, 30, 120, 70], [0, 10, 50, 30], [20, 10, 60, 40], [40, 70, 60, 80]],
                               atol=1e-4)
    assert a.classes.tolist() == [0, 2, 1, 1]
    assert len(by_name["b.jpg"]) == 0 and len(by_name["c.jpg"]) == 0
    # Normalized by the displayed size: 100 wide, 200 high.
    np.testing.assert_allclose(by_name["r.jpg"].boxes, [[40, 40, 60, 60]], atol=1e-4)
    assert by_name["r.jpg"].path == str(root / "images" / "train" / "r.jpg")


def test_every_bad_line_is_reported_with_file_and_line(dataset):
    root, yaml_path = dataset
    report = read_yolo(yaml_path, split="train").report
    label = root / "labels" / "train" / "a.txt"
    counts = {r: report.count(r) for r in yolo_txt.REASONS if report.count(r)}
    assert counts == {
        yolo_txt.R_MALFORMED: 5,
        yolo_txt.R_CLASS: 1,
        yolo_txt.R_EMPTY_BOX: 2,
        yolo_txt.R_ORPHAN_LABEL: 1,
        yolo_txt.R_CLIPPED: 1,
        yolo_txt.R_NO_LABEL: 1,
        yolo_txt.R_NEGATIVE: 1,
    }
    items = report.messages(include_notes=True)
    for lineno, words in ((3, "got 4 values"), (4, "not numbers"), (5, "not finite"), (6, "'-1'"), (7, "'1.5'"),
                          (8, "class id 3 with 3 class names"), (9, "'1 0.3 0.3 0 0.1'"), (10, "outside the image"),
                          (2, "xyxy [-0.05, 0.1, 0.25, 0.3] -> [0, 0.1, 0.25, 0.3]")):
        hits = [m for m in items if f"{label}:{lineno}:" in m]
        assert len(hits) == 1 and words in hits[0], (lineno, hits)
    assert any("stray.txt" in m for m in items) and not any("classes.txt" in m for m in items)
    assert any("b.jpg" in m and "no " in m for m in items)


def test_a_txt_list_split_reports_missing_images(dataset):
    root, yaml_path = dataset
    data = read_yolo(yaml_path, split="val")
    assert [a.path for a in data.annotations] == [str(root / "images" / "val" / "v.jpg")]
    np.testing.assert_allclose(data.annotations[0].boxes, [[0, 0, 200, 100]])
    assert data.report.count(yolo_txt.R_MISSING_IMAGE) == 1
    assert f"{root / 'val_list.txt'}:2: 'images/val/gone.jpg'" in data.report.format()


def test_a_folder_reads_its_split_subfolder_and_takes_names_from_classes_txt(dataset):
    root, _ = dataset
    data = read_yolo(root, split="val")
    assert data.class_names == ["cat", "dog", "bird"]
    assert data.names_from == str(root / "labels" / "classes.txt")
    assert len(data.annotations) == 1
    with pytest.raises(DatasetError, match=r"no split 'test' in the dataset \(splits: train, val\)"):
        read_yolo(root, split="test")


def test_a_flat_folder_without_names_needs_class_names(tmp_path):
    root = tmp_path / "flat"
    _image(root / "images" / "x.png", (40, 20))
    _text(root / "labels" / "x.txt", "1 0.5 0.5 0.5 0.5\n")
    with pytest.raises(DatasetError, match="names no classes"):
        read_yolo(root)
    data = read_yolo(root, split="train", class_names=["a", "b"])  # a flat folder is read whole
    np.testing.assert_allclose(data.annotations[0].boxes, [[10, 5, 30, 15]])
    source = read_dataset(root, split="train", classes=_text(tmp_path / "c.txt", "a\nb\n"))
    assert source.format == "yolo" and source.classes.names == ["a", "b"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("train: [1, 2\n", ["not readable YAML"]),
        ("- a\n- b\n", ["expected a mapping"]),
        ("names: [a]\n", ["no 'train', 'val' or 'test' entry"]),
        ("train: images\nnames: {0: a, 2: b}\n", ["'names' keys must be 0..1", "[0, 2]"]),
        ("train: images\nnames: [a, b]\nnc: 3\n", ["'nc' is 3", "2 classes"]),
        ("train: images\nnames: [a, null]\n", ["class name 1 is None"]),
        ("train: 5\nnames: [a]\n", ["'train' must be a path"]),
    ],
)
def test_bad_data_yaml_fails_with_a_clear_error(tmp_path, text, words):
    path = _text(tmp_path / "data.yaml", text)
    with pytest.raises(DatasetError) as info:
        read_yolo(path, split="train")
    for word in words:
        assert word in str(info.value)


def test_missing_split_folder_and_unknown_split_are_errors(tmp_path):
    path = _text(tmp_path / "data.yaml", "train: images/train\nnames: [a]\n")
    with pytest.raises(DatasetError, match="images/train"):
        read_yolo(path, split="train")
    with pytest.raises(DatasetError, match=r"no split 'val' in the dataset \(splits: train\)"):
        read_yolo(path, split="val")


def test_class_names_mismatch_names_both_lists(dataset, tmp_path):
    _, yaml_path = dataset
    with pytest.raises(DatasetError, match=r"\['cat', 'dog', 'bird'\].*\['cat', 'dog'\]"):
        read_dataset(yaml_path, split="train", classes=_text(tmp_path / "two.txt", "cat\ndog\n"))


def test_write_then_read_gives_the_boxes_back(tmp_path):
    sources = []
    for i, (size, orientation) in enumerate([((200, 100), None), ((64, 48), 6), ((30, 30), None)]):
        sources.append(_image(tmp_path / "src" / f"im{i}.jpg", size, orientation))
    twin = _image(tmp_path / "other" / "im0.jpg", (50, 50))
    annotations = [
        Annotation(str(sources[0]), [[10, 20, 110, 90], [150.5, 0, 200, 40.25]], [0, 1], [False, True]),
        Annotation(str(sources[1]), [[5, 10, 40, 60]], [1]),  # displayed 48x64
        Annotation(str(sources[2])),
        Annotation(str(twin), [[-5, 0, 20, 70]], [0]),  # reaches past two borders: clipped
        Annotation(str(tmp_path / "src" / "gone.jpg"), [[1, 1, 2, 2]], [0]),
    ]
    report = yolo_txt.yolo_report()
    out = tmp_path / "yolo"
    stats = write_yolo(out, annotations, ["a", "b"], split="val", report=report)
    assert stats["images"] == 4 and stats["objects"] == 4
    assert (out / "images" / "val" / "im0.jpg").is_symlink()
    assert (out / "images" / "val" / "im0_2.jpg").exists()  # the second im0.jpg, renamed
    assert (out / "labels" / "val" / "im2.txt").read_text() == ""
    for reason in (yolo_txt.R_RENAMED, yolo_txt.R_CLIPPED, yolo_txt.R_DIFFICULT, yolo_txt.R_UNREADABLE_IMAGE):
        assert report.count(reason) == 1, reason

    back = read_yolo(stats["data_yaml"], split="val")
    assert back.class_names == ["a", "b"] and back.report.messages() == []
    by_name = {a.path.rsplit("/", 1)[-1]: a for a in back.annotations}
    np.testing.assert_allclose(by_name["im0.jpg"].boxes, annotations[0].boxes, atol=1e-3)
    np.testing.assert_allclose(by_name["im1.jpg"].boxes, annotations[1].boxes, atol=1e-3)
    np.testing.assert_allclose(by_name["im0_2.jpg"].boxes, [[0, 0, 20, 50]], atol=1e-3)
    assert by_name["im0.jpg"].classes.tolist() == [0, 1]

    # A second split joins the data YAML; the same split twice, or other names, are refused.
    write_yolo(out, annotations[2:3], ["a", "b"], split="train", copy_images=True)
    assert not (out / "images" / "train" / "im2.jpg").is_symlink()
    assert {"train", "val"} <= set(yolo_txt.load_data_yaml(out / "data.yaml").splits)
    with pytest.raises(DatasetError, match="already holds files"):
        write_yolo(out, annotations[2:3], ["a", "b"], split="train")
    with pytest.raises(DatasetError, match=r"\['a', 'b'\].*\['a', 'c'\]"):
        write_yolo(out, annotations[2:3], ["a", "c"], split="test")
