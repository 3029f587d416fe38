"""Tests of utils/data/voc.py, voc_convert.py, split.py and the voc_annotation.py command line."""

import functools
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, run_script
from utils.data.annotation import read_annotation_file
from utils.data.split import ROUND_HALF_UP, hold_out, part_size, permuted, sampled, shuffled
from utils.data.voc import (
    BAD_XML,
    MISSING_IMAGE,
    MISSING_XML,
    REPEATED_ID,
    ImageIndex,
    VocImage,
    VocObject,
    VocParseError,
    make_splits,
    parse_voc_xml,
    read_voc_split,
    voc_xml,
)
from utils.data.voc_convert import (
    R_CLIPPED,
    R_DIFFICULT,
    R_DIFFICULT_DROPPED,
    R_DUPLICATE_ID,
    R_EMPTY_BOX,
    R_MALFORMED,
    R_NEGATIVE,
    R_NO_IMAGE,
    R_NO_SIZE,
    R_NO_XML,
    R_UNKNOWN_CLASS,
)

SCRIPT = ROOT / "voc_annotation.py"
CLASSES = ["cat", "dog", "person"]
W, H = 64, 48


def xml_text(filename, objects, size=(W, H)):
    """VOC XML text; objects are (name, xmin, ymin, xmax, ymax, difficult) tuples."""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(d)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2, d in objects
    )
    return f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def make_voc(root, year="2007"):
    """Builds VOCdevkit/VOC<year> under root holding every bad-input case.

    Returns:
        the VOC<year> folder.
    """
    folder = root / f"VOC{year}"
    ann, img = folder / "Annotations", folder / "JPEGImages"
    ann.mkdir(parents=True)
    img.mkdir(parents=True)

    def add(image_id, objects, image_name=None, size=(W, H), xml_filename=None, raw=None):
        if image_name:
            Image.new("RGB", (W, H), (90, 120, 150)).save(img / image_name)
        text = raw if raw is not None else xml_text(xml_filename or image_name or f"{image_id}.jpg", objects, size)
        (ann / f"{image_id}.xml").write_text(text, encoding="utf-8")

    add("000001", [("dog", 5, 5, 30, 40, 0), ("person", 10, 10, 20, 20, 0)], "000001.jpg")
    add("000002", [("cat", 1, 1, 60, 40, 0)], "000002.PNG")  # upper-case extension
    add("000003", [("cat", 3, 3, 40, 40, 0), ("person", 2, 2, 10, 10, 1)], "000003.jpeg")  # difficult
    # Image name differs from the id: found through <filename>; the name holds a space.
    add("000004", [("person", 4, 4, 44, 44, 0)], "renamed picture.jpg")
    add("000005", [("dog", -5, 10, 80, 60, 0)], "000005.jpg")  # outside: clipped
    add("000006", [("dog", 70, 10, 90, 20, 0)], "000006.jpg")  # empty after clipping
    add("000007", [("unicorn", 1, 1, 9, 9, 0), ("Dog", 2, 2, 8, 8, 0), ("cat", 5, 5, 25, 25, 0)], "000007.jpg")
    add("000008", [], "000008.jpg")  # no object: negative line
    add("000009", [("dog", 0, 0, 100, 100, 0)], "000009.jpg", size=None)  # no size in the XML
    add("000010", [], "000010.jpg", raw="<annotation><object><name>dog</name>")  # malformed
    no_xmax = "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><ymax>9</ymax></bndbox></object>"
    add("000011", [], "000011.jpg", raw=xml_text("000011.jpg", []).replace("</annotation>", no_xmax + "</annotation>"))
    add("000012", [("dog", "abc", 1, 9, 9, 0)], "000012.jpg")  # non-numeric coordinate
    add("000013", [("cat", 1, 1, 9, 9, 0)], None, xml_filename="000013.jpg")  # image missing
    add("000014", [("person", 6, 6, 30, 30, 0)], "000014.bmp")
    add("000015", [("dog", 10.5, 5.25, 30, 40, 0)], "000015.jpg")  # fractional pixels
    add("000016", [("dog", 8, 8, 28, 28, 1)], "000016.jpg")  # difficult only
    return folder


run_cli = functools.partial(run_script, SCRIPT, timeout=120)


@pytest.fixture
def dataset(tmp_path):
    """(voc_root, classes_file, out_dir); voc_root's path holds a space."""
    voc_root = tmp_path / "my data" / "VOCdevkit"
    make_voc(voc_root)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return voc_root, classes, tmp_path / "out dir"


def read_lines(path):
    """Annotation file -> dict image file name -> Annotation, checking it reads cleanly."""
    annotations, problems = read_annotation_file(path, num_classes=len(CLASSES))
    assert problems == []
    return {Path(a.path).name: a for a in annotations}


def test_parse_voc_xml_reads_objects_size_and_difficult(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(xml_text("a.jpg", [("dog", 1, 2, 30, 40, 0), (" person ", 3.5, 4, 9, 10, 1)]), encoding="utf-8")
    image = parse_voc_xml(path)
    assert (image.filename, image.width, image.height) == ("a.jpg", W, H)
    assert [o.name for o in image.objects] == ["dog", "person"]
    assert (image.objects[1].xmin, image.objects[1].ymax, image.objects[1].difficult) == (3.5, 10.0, True)
    assert image.objects[0].difficult is False

    path.write_text(xml_text("b.jpg", [("cat", 1, 1, 5, 5, 0)], size=None), encoding="utf-8")
    assert (parse_voc_xml(path).width, parse_voc_xml(path).height) == (0, 0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<annotation><object>", "malformed XML"),
        (xml_text("a.jpg", [("dog", 1, 1, "", 9, 0)]), "xmax"),
        (xml_text("a.jpg", [("dog", 1, "1e", 9, 9, 0)]), "'1e'"),
        ("<annotation><object><name>dog</name></object></annotation>", "no <bndbox>"),
        ("<notvoc/>", "<notvoc>"),
    ],
)
def test_parse_voc_xml_errors_name_the_file(tmp_path, text, expected):
    path = tmp_path / "broken.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(VocParseError) as info:
        parse_voc_xml(path)
    assert "broken.xml" in str(info.value) and expected in str(info.value)


def test_make_splits_is_a_deterministic_partition():
    ids = [f"{i:06d}" for i in range(100)]
    splits = make_splits(ids, 0.9, 0.9, seed=3)
    assert make_splits(list(reversed(ids)), 0.9, 0.9, seed=3) == splits
    assert make_splits(ids, 0.9, 0.9, seed=4) != splits
    assert (len(splits["trainval"]), len(splits["train"]), len(splits["val"]), len(splits["test"])) == (90, 81, 9, 10)
    assert set(splits["train"]) | set(splits["val"]) == set(splits["trainval"])
    assert not set(splits["train"]) & set(splits["val"])
    assert set(splits["trainval"]) | set(splits["test"]) == set(ids)
    assert not set(splits["trainval"]) & set(splits["test"])
    with pytest.raises(ValueError, match="1.5"):
        make_splits(ids, 1.5)


def test_image_index_matches_extensions_case_insensitively(tmp_path):
    for name in ["a.JPG", "b.png", "b.jpg", "c.Bmp", "d.txt", "other name.jpeg"]:
        (tmp_path / name).write_bytes(b"")
    index = ImageIndex(tmp_path)
    assert index.find("a") == tmp_path / "a.JPG"
    assert index.find("b") == tmp_path / "b.jpg"  # .jpg preferred over .png
    assert index.find("c") == tmp_path / "c.Bmp"
    assert index.find("d") is None
    assert index.find("e", "OTHER NAME.jpeg") == tmp_path / "other name.jpeg"
    assert index.find("e", "missing.jpg") is None


def test_hold_out_draws_reproduce_each_random_source():
    items = [f"id{i}" for i in range(23)]
    part, rest = hold_out(items, 0.3, sampled(random.Random(5)))
    assert part == random.Random(5).sample(items, 7)
    assert rest == [i for i in items if i not in part]  # the rest keeps the order given
    order = list(range(23))
    random.Random(5).shuffle(order)
    expected = ([items[i] for i in order[:7]], [items[i] for i in order[7:]])
    assert hold_out(items, 0.3, shuffled(random.Random(5))) == expected
    perm = np.random.default_rng(5).permutation(23)
    assert hold_out(items, 0.3, permuted(np.random.default_rng(5)))[0] == [items[i] for i in perm[:7]]
    assert hold_out(items, 0.3) == (items[:7], items[7:])
    # 0.5 * 5 = 2.5: halves to even by default, up on request; never more than all items.
    assert part_size(5, 0.5) == 2 and part_size(5, 0.5, ROUND_HALF_UP) == 3
    assert part_size(10, 0.01, minimum=1) == 1 and part_size(0, 0.5, minimum=1) == 0
    with pytest.raises(ValueError, match="fraction must be between 0 and 1, got 1.5"):
        hold_out(items, 1.5)
    with pytest.raises(ValueError, match="rounding"):
        part_size(5, 0.5, "down")


def test_voc_xml_round_trips_through_the_reader(tmp_path):
    written = VocImage("a.png", 64, 48, [VocObject("cat", 1, 2, 30, 40, False), VocObject("dog", 3.5, 4, 60, 48, True)])
    path = tmp_path / "a.xml"
    path.write_bytes(voc_xml(written, "VOC2007"))
    assert parse_voc_xml(path) == written
    assert b"<xmin>1</xmin>" in path.read_bytes() and b"<xmin>3.5</xmin>" in path.read_bytes()


def test_read_voc_split_finds_images_by_files_then_filename(tmp_path):
    year = tmp_path / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "JPEGImages").mkdir()
    for image_id, filename in (("a", "a.jpg"), ("b", "b.jpg"), ("c", "photo_c.jpeg"), ("d", "d.jpg")):
        (year / "Annotations" / f"{image_id}.xml").write_text(xml_text(filename, [("cat", 1, 1, 9, 9, 0)]))
    (year / "Annotations" / "bad.xml").write_text("<annotation><object>")
    for name in ("a.PNG", "b.bmp", "photo_c.jpeg"):
        (year / "JPEGImages" / name).write_bytes(b"")
    entries = read_voc_split(year, ["a", "b", "c", "d", "a", "missing", "bad"])
    found = {e.image_id: e.image_path.name for e in entries if e.image_path is not None}
    assert found == {"a": "a.PNG", "b": "b.bmp", "c": "photo_c.jpeg"}
    assert [e.problem for e in entries] == [None, None, None, MISSING_IMAGE, REPEATED_ID, MISSING_XML, BAD_XML]
    assert entries[3].voc.objects[0].name == "cat"
    assert "malformed XML" in entries[6].error and str(entries[6].xml_path) not in entries[6].error


def test_cli_mode0_writes_splits_and_annotations_and_reports_every_case(dataset):
    voc_root, classes, out_dir = dataset
    result = run_cli("--voc-root", voc_root, "--classes", classes, "--out-dir", out_dir, "--list-limit", 0)
    assert result.returncode == 0, result.stderr
    out = result.stdout

    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    splits = {s: (main / f"{s}.txt").read_text().split() for s in ("trainval", "train", "val", "test")}
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == [f"{i:06d}" for i in range(1, 17)]
    assert (len(splits["trainval"]), len(splits["train"]), len(splits["val"]), len(splits["test"])) == (14, 13, 1, 2)

    lines = {}
    for split in ("train", "val", "test"):
        path = out_dir / f"2007_{split}.txt"
        assert path.is_file()
        lines.update(read_lines(path))
    # Every image with its XML and image file is written, bad XML and missing images are not.
    assert sorted(lines) == sorted(
        ["000001.jpg", "000002.PNG", "000003.jpeg", "renamed picture.jpg", "000005.jpg", "000006.jpg",
         "000007.jpg", "000008.jpg", "000009.jpg", "000014.bmp", "000015.jpg", "000016.jpg"]
    )
    for ann in lines.values():
        assert Path(ann.path).is_absolute() and Path(ann.path).is_file()
    assert " " in lines["renamed picture.jpg"].path and "my data" in lines["000001.jpg"].path
    np.testing.assert_array_equal(lines["000001.jpg"].boxes, [[5, 5, 30, 40], [10, 10, 20, 20]])
    np.testing.assert_array_equal(lines["000001.jpg"].classes, [1, 2])
    np.testing.assert_array_equal(lines["000005.jpg"].boxes, [[0, 10, W, H]])  # clipped
    np.testing.assert_array_equal(lines["000009.jpg"].boxes, [[0, 0, W, H]])  # size read from the image
    np.testing.assert_allclose(lines["000015.jpg"].boxes, [[10.5, 5.25, 30, 40]])
    assert len(lines["000006.jpg"]) == 0 and len(lines["000008.jpg"]) == 0  # negatives kept
    np.testing.assert_array_equal(lines["000007.jpg"].classes, [0])  # unknown classes skipped
    np.testing.assert_array_equal(lines["000003.jpeg"].difficult, [False, True])
    np.testing.assert_array_equal(lines["000016.jpg"].difficult, [True])

    # The summary names every case with its item.
    expected = {
        R_MALFORMED: ["Annotations/000010.xml", "Annotations/000011.xml", "Annotations/000012.xml"],
        R_NO_IMAGE: ["Annotations/000013.xml"],
        R_UNKNOWN_CLASS: ["'unicorn'", "'Dog' (did you mean 'dog'?)"],
        R_CLIPPED: ["000005.xml", "000009.xml"],
        R_EMPTY_BOX: ["000006.xml"],
        R_NEGATIVE: ["000006.xml", "000008.xml"],
        R_DIFFICULT: ["000003.xml", "000016.xml"],
        R_NO_SIZE: ["000009.xml"],
    }
    sections = out.split("\n\n")
    for reason, items in expected.items():
        section = next(s for s in sections if s.startswith(f"{reason}: "))
        assert section.startswith(f"{reason}: {len(items)}\n"), section
        for item in items:
            assert item in section, (reason, item)
    assert "000010.xml" in out and "000011.xml" in out and "xmax" in out and "'abc'" in out
    assert (out_dir / "voc_annotation_report.txt").read_text().count("  - ") == out.count("  - ")

    # Tables: objects per class and images per split; warning for classes absent from a split.
    assert "objects per class" in out and "images" in out
    assert "warning: class" in out


def test_written_lines_use_the_five_field_format_and_reference_lines_read(dataset, tmp_path):
    voc_root, classes, out_dir = dataset
    assert run_cli("--voc-root", voc_root, "--classes", classes, "--out-dir", out_dir).returncode == 0
    text = "".join((out_dir / f"2007_{s}.txt").read_text() for s in ("train", "val", "test"))
    line = next(line for line in text.splitlines() if "000001.jpg" in line)
    assert line.endswith(".jpg 5,5,30,40,1 10,10,20,20,2")  # no sixth field unless difficult
    difficult_line = next(line for line in text.splitlines() if "000003.jpeg" in line)
    assert difficult_line.endswith(" 3,3,40,40,0 2,2,10,10,2,1")

    reference = tmp_path / "reference.txt"
    reference.write_text("/data/VOC2007/JPEGImages/000001.jpg 48,240,195,371,11 8,12,352,498,14\n")
    annotations, problems = read_annotation_file(reference, num_classes=20)
    assert problems == []
    np.testing.assert_array_equal(annotations[0].boxes, [[48, 240, 195, 371], [8, 12, 352, 498]])
    np.testing.assert_array_equal(annotations[0].classes, [11, 14])
    assert not annotations[0].difficult.any()


def test_cli_splits_are_deterministic_for_a_seed(dataset):
    voc_root, classes, out_dir = dataset
    main = voc_root / "VOC2007" / "ImageSets" / "Main"

    def splits(seed):
        result = run_cli(
            "--voc-root", voc_root, "--classes", classes, "--mode", 1, "--seed", seed, "--out-dir", out_dir
        )
        assert result.returncode == 0, result.stderr
        return {s: (main / f"{s}.txt").read_text() for s in ("trainval", "train", "val", "test")}, result.stdout

    first, out = splits(7)
    assert "replaced" not in out
    second, out = splits(7)
    assert second == first and "replaced" not in out
    third, out = splits(8)
    assert third != first
    assert "existing split file replaced" in out and str(main / "train.txt") in out
    assert (out_dir / "voc_annotation_report.txt").is_file()


def test_cli_mode1_makes_splits_only(dataset):
    voc_root, classes, out_dir = dataset
    result = run_cli(
        "--voc-root", voc_root, "--classes", classes, "--out-dir", out_dir, "--mode", 1,
        "--trainval-percent", 0.5, "--train-percent", 0.5,
    )
    assert result.returncode == 0, result.stderr
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    sizes = {s: len((main / f"{s}.txt").read_text().split()) for s in ("trainval", "train", "val", "test")}
    assert sizes == {"trainval": 8, "train": 4, "val": 4, "test": 8}
    assert not out_dir.exists()  # no annotation file, no report
    assert "train 4" in result.stdout


def test_cli_mode2_uses_existing_splits_and_skip_difficult(dataset):
    voc_root, classes, out_dir = dataset
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("000003\nghost id\n000001\n000001\n")
    (main / "val.txt").write_text("000016\n")
    result = run_cli(
        "--voc-root", voc_root, "--classes", classes, "--out-dir", out_dir, "--mode", 2, "--skip-difficult"
    )
    assert result.returncode == 0, result.stderr
    assert (main / "train.txt").read_text() == "000003\nghost id\n000001\n000001\n"  # splits untouched
    assert not (main / "trainval.txt").exists()
    assert not (out_dir / "2007_test.txt").exists()  # no test split file, no test annotations

    train = read_lines(out_dir / "2007_train.txt")
    assert list(train) == ["000003.jpeg", "000001.jpg"]
    np.testing.assert_array_equal(train["000003.jpeg"].classes, [0])  # difficult person dropped
    val = read_lines(out_dir / "2007_val.txt")
    np.testing.assert_array_equal(val["000016.jpg"].difficult, [True])  # kept in val

    out = result.stdout
    assert f"{R_NO_XML}: 1" in out and "'ghost id'" in out
    assert f"{R_DUPLICATE_ID}: 1" in out and "'000001'" in out
    assert f"{R_DIFFICULT_DROPPED}: 1" in out and "000003.xml [train]: object 2 'person'" in out
    assert f"{R_DIFFICULT}: 1" in out and "000016.xml [val]" in out


def test_cli_mode2_without_split_files_is_a_clear_error(dataset):
    voc_root, classes, out_dir = dataset
    result = run_cli("--voc-root", voc_root, "--classes", classes, "--out-dir", out_dir, "--mode", 2)
    assert result.returncode == 2
    assert "train.txt" in result.stderr and "val.txt" in result.stderr and "--mode 0" in result.stderr
    assert not out_dir.exists()


def test_cli_exits_2_when_nothing_usable(tmp_path):
    voc_root = tmp_path / "VOCdevkit"
    (voc_root / "VOC2012" / "Annotations").mkdir(parents=True)
    (voc_root / "VOC2012" / "Annotations" / "x.xml").write_text("not xml")
    result = run_cli("--voc-root", voc_root, "--out-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "nothing usable" in result.stderr
    assert f"{R_MALFORMED}: 1" in result.stdout and "x.xml" in result.stdout

    missing = run_cli("--voc-root", tmp_path / "nowhere", "--out-dir", tmp_path / "out")
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "--voc-root" in missing.stderr

    wrong_year = run_cli("--voc-root", voc_root, "--years", "2007", "--out-dir", tmp_path / "out")
    assert wrong_year.returncode == 2 and "VOC2007" in wrong_year.stdout and "2012" in wrong_year.stdout


def test_cli_help_documents_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ["--voc-root", "--years", "--classes", "--trainval-percent", "--train-percent", "--seed",
                   "--mode", "--out-dir", "--skip-difficult", "--list-limit", "--report"]:
        assert option in result.stdout

