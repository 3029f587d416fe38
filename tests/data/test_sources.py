"""utils.data.sources: a run's training and validation data in any format, their classes."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.data.report import DatasetError
from utils.data.sources import read_dataset, read_training_data


def _image(path, size=(80, 60)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (100, 50, 20)).save(path)
    return path


def _yolo(root):
    for split, count in (("train", 3), ("val", 1)):
        for i in range(count):
            _image(root / "images" / split / f"{split}{i}.jpg")
            label = root / "labels" / split / f"{split}{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("1 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat, dog]\n")
    return root / "data.yaml"


def test_train_and_val_splits_of_one_data_yaml(tmp_path):
    data_yaml = _yolo(tmp_path / "ds")
    data = read_training_data(data_yaml, data_yaml)
    assert len(data.train) == 3 and len(data.val) == 1
    assert data.classes.names == ["cat", "dog"] and data.classes.category_ids is None
    np.testing.assert_allclose(data.val[0].boxes, [[30, 15, 50, 45]])
    assert data.problems == []
    assert data.descriptions[0].startswith(f"--train {data_yaml} (YOLO txt, split train): 3 images")
    assert data.descriptions[1].startswith(f"--val {data_yaml} (YOLO txt, split val): 1 images")


def test_the_data_read_line_counts_the_images_used_not_those_skipped(tmp_path):
    lines = []
    for i in range(4):
        path = tmp_path / f"im{i}.jpg"
        if i != 2:  # im2.jpg is listed but missing
            _image(path)
        lines.append(f"{path} 10,10,40,30,0{' 1,1,5,5,1' if i == 0 else ''}\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "train.txt").write_text("".join(lines))

    data = read_training_data(tmp_path / "train.txt", classes=tmp_path / "classes.txt")
    assert len(data.train) == 3
    line = data.descriptions[0]
    assert ": 3 images (0 without objects; 1 more listed but skipped), 4 objects;" in line, line
    assert line.endswith("; 1 problem(s)") and any("im2.jpg" in p for p in data.problems)


def test_validation_classes_must_agree_with_the_training_ones(tmp_path):
    data_yaml = _yolo(tmp_path / "ds")
    _image(tmp_path / "v.jpg")
    coco = tmp_path / "val.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "v.jpg"}], "annotations": [],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
    }))
    with pytest.raises(DatasetError) as info:
        read_training_data(data_yaml, coco)
    message = str(info.value)
    assert message.startswith("--val:") and "['dog', 'cat']" in message and "['cat', 'dog']" in message


def test_a_dataset_without_usable_images_is_an_error(tmp_path):
    coco = tmp_path / "train.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "gone.jpg"}], "annotations": [],
        "categories": [{"id": 1, "name": "dog"}],
    }))
    with pytest.raises(DatasetError, match=r"--train file .*train.json holds no usable image .*gone.jpg"):
        read_training_data(coco)


def test_a_voc_folder_is_read_through_its_split_with_names_from_the_xml(tmp_path):
    folder = tmp_path / "VOCdevkit" / "VOC2012"
    for image_id, name in (("a", "zebra"), ("b", "ant")):
        _image(folder / "JPEGImages" / f"{image_id}.jpg")
        xml = folder / "Annotations" / f"{image_id}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(f"<annotation><size><width>80</width><height>60</height></size><object><name>{name}</name>"
                       "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"
                       "</annotation>")
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    (folder / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    source = read_dataset(tmp_path / "VOCdevkit", split="train")
    assert source.format == "voc" and source.classes.names == ["ant", "zebra"]
    assert [a.classes.tolist() for a in source.annotations] == [[1], [0]]
    with pytest.raises(DatasetError, match="split file .*val.txt not found"):
        read_dataset(tmp_path / "VOCdevkit", split="val")


def test_annotation_lines_use_the_default_classes_unless_given(tmp_path):
    _image(tmp_path / "a.jpg")
    lines = tmp_path / "train.txt"
    lines.write_text(f"{tmp_path / 'a.jpg'} 1,1,20,20,19 1,1,20,20,20\n")
    source = read_dataset(lines)
    assert len(source.classes.names) == 20 and "default" in source.classes.origin
    assert source.annotations[0].classes.tolist() == [19]
    assert len(source.problems) == 1 and "class id 20" in source.problems[0]


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_each_format_of_one_dataset_reads_the_same_boxes(tiny_datasets, shapes_voc, fmt):
    """The shapes training split as annotation lines, and as VOC, COCO and YOLO written
    from them: the same images, classes and boxes (YOLO's normalised text within a pixel)."""
    def by_stem(source):
        return {Path(a.path).stem: a for a in source.annotations}

    lines = by_stem(read_dataset(tiny_datasets["lines"], classes=shapes_voc["classes"]))
    source = read_dataset(tiny_datasets[fmt], split="train", classes=shapes_voc["classes"])
    assert source.format == fmt and not source.problems
    other = by_stem(source)
    assert sorted(other) == sorted(lines) and len(lines) >= 8
    for stem, expected in lines.items():
        assert other[stem].classes.tolist() == expected.classes.tolist(), stem
        np.testing.assert_allclose(other[stem].boxes, expected.boxes, atol=1.0, err_msg=stem)
