"""Tests for the synthetic shapes dataset: files, boxes against the drawing, determinism."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_script
from utils.demo.shapes_render import BOX_COVERAGE, SHAPE_CLASSES, ShapeOptions, render_image
from utils.demo.shapes_voc import CLASSES_FILENAME, generate_dataset, split_ids

NUM_IMAGES = 200
SEED = 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 200-image dataset generated once for the tests that only read it."""
    out = tmp_path_factory.mktemp("shapes")
    summary = generate_dataset(out, NUM_IMAGES, seed=SEED)
    return out, summary


def _voc_dir(out, year=2007):
    return Path(out) / "VOCdevkit" / f"VOC{year}"


def _read_xml(path):
    """Reads an annotation with ElementTree: (filename, width, height, depth, objects)."""
    root = ET.parse(path).getroot()
    assert root.tag == "annotation"
    size = root.find("size")
    objects = []
    for node in root.findall("object"):
        bndbox = node.find("bndbox")
        objects.append(
            {
                "name": node.find("name").text,
                "pose": node.find("pose").text,
                "truncated": node.find("truncated").text,
                "difficult": node.find("difficult").text,
                "box": tuple(int(bndbox.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")),
            }
        )
    return (
        root.find("filename").text,
        int(size.find("width").text),
        int(size.find("height").text),
        int(size.find("depth").text),
        root.find("folder").text,
        objects,
    )


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_classes_file(dataset):
    out, summary = dataset
    voc = _voc_dir(out)
    ids = [f"{i:06d}" for i in range(1, NUM_IMAGES + 1)]
    assert summary["image_ids"] == ids
    assert sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg")) == ids
    assert sorted(p.stem for p in (voc / "Annotations").glob("*.xml")) == ids
    assert (voc / "ImageSets" / "Main").is_dir()
    assert list((voc / "ImageSets" / "Main").iterdir()) == []
    classes = (out / CLASSES_FILENAME).read_text(encoding="utf-8").splitlines()
    assert classes == list(SHAPE_CLASSES)
    assert summary["classes_file"] == str(out / CLASSES_FILENAME)
    assert summary["voc_dir"] == str(voc)
    assert summary["images"] == NUM_IMAGES


def test_xml_files_parse_and_match_images(dataset):
    out, summary = dataset
    voc = _voc_dir(out)
    per_class = {name: 0 for name in SHAPE_CLASSES}
    for ident in summary["image_ids"]:
        filename, width, height, depth, folder, objects = _read_xml(voc / "Annotations" / f"{ident}.xml")
        assert filename == f"{ident}.jpg"
        assert folder == "VOC2007"
        assert depth == 3
        with Image.open(voc / "JPEGImages" / filename) as im:
            assert im.format == "JPEG"
            assert im.mode == "RGB"
            assert im.size == (width, height)
        for obj in objects:
            assert obj["name"] in SHAPE_CLASSES
            assert obj["pose"] == "Unspecified"
            assert obj["truncated"] == "0"
            assert obj["difficult"] in ("0", "1")
            xmin, ymin, xmax, ymax = obj["box"]
            assert 1 <= xmin <= xmax <= width
            assert 1 <= ymin <= ymax <= height
            per_class[obj["name"]] += 1
    assert per_class == summary["per_class"]
    assert all(count > 0 for count in per_class.values())


def test_dataset_variety(dataset):
    out, summary = dataset
    voc = _voc_dir(out)
    sizes, counts, difficult = set(), [], 0
    for ident in summary["image_ids"]:
        _, width, height, _, _, objects = _read_xml(voc / "Annotations" / f"{ident}.xml")
        sizes.add((width, height))
        counts.append(len(objects))
        difficult += sum(obj["difficult"] == "1" for obj in objects)
    assert len(sizes) > NUM_IMAGES // 2
    assert sum(w != h for w, h in sizes) > 0.9 * len(sizes)
    assert all(256 <= w <= 480 and 256 <= h <= 480 for w, h in sizes)
    assert max(counts) <= 6
    empty = counts.count(0)
    assert 1 <= empty <= 0.15 * NUM_IMAGES
    assert empty == summary["empty_images"]
    total = sum(counts)
    assert 1 <= difficult <= 0.08 * total
    assert difficult == summary["difficult"]
    assert total == summary["objects"]


def test_boxes_bound_what_is_drawn(dataset):
    out, summary = dataset
    voc = _voc_dir(out)
    checked = 0
    for index, ident in enumerate(summary["image_ids"][:60]):
        sample = render_image(SEED, index)
        _, width, height, _, _, objects = _read_xml(voc / "Annotations" / f"{ident}.xml")
        assert (sample.width, sample.height) == (width, height)
        pixels = np.asarray(Image.open(voc / "JPEGImages" / f"{ident}.jpg"), np.float32)
        # The JPEG is the rendered image up to compression.
        assert np.abs(pixels - sample.image).mean() < 10.0
        assert [(o.name, o.box, "1" if o.difficult else "0") for o in sample.objects] == [
            (o["name"], o["box"], o["difficult"]) for o in objects
        ]
        drawn = [o.mask > 0.02 for o in sample.objects]
        any_drawn = np.logical_or.reduce(drawn) if drawn else np.zeros((height, width), bool)
        for k, obj in enumerate(sample.objects):
            x0, y0, x1, y1 = (v - 1 for v in obj.box)
            covered = obj.mask >= BOX_COVERAGE
            inside = np.zeros((height, width), bool)
            inside[y0:y1 + 1, x0:x1 + 1] = True
            # Tight: nothing drawn outside the box, and every box edge touches the shape.
            assert not (covered & ~inside).any()
            assert covered[y0, x0:x1 + 1].any() and covered[y1, x0:x1 + 1].any()
            assert covered[y0:y1 + 1, x0].any() and covered[y0:y1 + 1, x1].any()
            # The mask is what was painted: its solid pixels carry the object's colour.
            solid = obj.mask > 0.95
            if solid.sum() >= 4:
                assert np.linalg.norm(pixels[solid].mean(axis=0) - np.array(obj.color)) < 40.0
            # Just outside the box, around the middle of each side, the shape is absent.
            for rows, cols in (
                (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4 + 1), x0 - 2),
                (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4 + 1), x1 + 2),
                (y0 - 2, slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4 + 1)),
                (y1 + 2, slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4 + 1)),
            ):
                if (isinstance(cols, int) and 0 <= cols < width) or (isinstance(rows, int) and 0 <= rows < height):
                    assert obj.mask[rows, cols].max() < 0.05
            # The box stands out from the background ring around it.
            others = any_drawn & ~drawn[k]
            ring = np.zeros((height, width), bool)
            ring[max(y0 - 4, 0):y1 + 5, max(x0 - 4, 0):x1 + 5] = True
            ring &= ~inside & ~any_drawn
            if ring.sum() < 10:
                continue
            box_mean = pixels[inside & ~others].mean(axis=0)
            ring_mean = pixels[ring].mean(axis=0)
            assert np.linalg.norm(box_mean - ring_mean) > 20.0, (ident, obj.name, obj.box)
            checked += 1
    assert checked > 100


def test_same_seed_identical_other_seed_different(tmp_path):
    a = generate_dataset(tmp_path / "a", 6, seed=3, write_splits=True)
    b = generate_dataset(tmp_path / "b", 6, seed=3, write_splits=True)
    c = generate_dataset(tmp_path / "c", 6, seed=4, write_splits=True)
    files_a, files_b, files_c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert files_a == files_b
    assert len(files_a) == 6 + 6 + 4 + 1
    assert a["per_class"] == b["per_class"]
    jpegs = [k for k in files_a if k.endswith(".jpg")]
    assert all(files_a[k] != files_c[k] for k in jpegs)
    assert c["image_ids"] == a["image_ids"]


def test_image_does_not_depend_on_dataset_size(tmp_path):
    generate_dataset(tmp_path / "short", 2, seed=5)
    generate_dataset(tmp_path / "long", 4, seed=5)
    short, long_ = _tree_bytes(tmp_path / "short"), _tree_bytes(tmp_path / "long")
    assert all(long_[k] == v for k, v in short.items())


def test_write_splits_partition(tmp_path):
    summary = generate_dataset(tmp_path, 20, seed=1, write_splits=True, test_fraction=0.25, val_fraction=0.2)
    main = _voc_dir(tmp_path) / "ImageSets" / "Main"
    sets = {n: (main / f"{n}.txt").read_text(encoding="utf-8").split() for n in ("trainval", "train", "val", "test")}
    assert summary["splits"] == {n: len(v) for n, v in sets.items()}
    assert len(sets["test"]) == 5 and len(sets["val"]) == 3
    assert sorted(sets["trainval"] + sets["test"]) == summary["image_ids"]
    assert sorted(sets["train"] + sets["val"]) == sets["trainval"]
    assert not set(sets["train"]) & set(sets["val"])
    assert all(v == sorted(v) for v in sets.values())
    assert split_ids(summary["image_ids"], 1, 0.25, 0.2) == sets


def test_existing_output_needs_overwrite(tmp_path):
    generate_dataset(tmp_path, 4, seed=0, write_splits=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(tmp_path, 4, seed=0)
    generate_dataset(tmp_path, 2, seed=0, overwrite=True)
    voc = _voc_dir(tmp_path)
    assert sorted(p.name for p in (voc / "JPEGImages").iterdir()) == ["000001.jpg", "000002.jpg"]
    assert sorted(p.name for p in (voc / "Annotations").iterdir()) == ["000001.xml", "000002.xml"]
    assert list((voc / "ImageSets" / "Main").iterdir()) == []


def test_bad_options_are_reported(tmp_path):
    with pytest.raises(TypeError, match="max_objects"):
        generate_dataset(tmp_path, 2, max_object=3)
    with pytest.raises(ValueError, match="123"):
        generate_dataset(tmp_path, 2, min_size=256, max_size=123)
    with pytest.raises(ValueError, match="-1"):
        generate_dataset(tmp_path, 2, seed=-1)
    with pytest.raises(ValueError, match="0"):
        generate_dataset(tmp_path, 0)
    with pytest.raises(ValueError, match="1.5"):
        ShapeOptions(empty_fraction=1.5)


def test_options_change_the_images(tmp_path):
    summary = generate_dataset(tmp_path, 5, seed=2, year=2012, min_size=96, max_size=128, max_objects=2)
    voc = _voc_dir(tmp_path, 2012)
    for ident in summary["image_ids"]:
        _, width, height, _, folder, objects = _read_xml(voc / "Annotations" / f"{ident}.xml")
        assert folder == "VOC2012"
        assert 96 <= width <= 128 and 96 <= height <= 128
        assert len(objects) <= 2


def test_cli(tmp_path):
    out = tmp_path / "demo"
    cmd = ["-m", "utils.demo.shapes_dataset", "--out", out, "--num-images", "3", "--seed", "7", "--write-splits",
           "--min-size", "128", "--max-size", "160"]
    result = run_script(*cmd, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Wrote 3 images" in result.stdout
    main = _voc_dir(out) / "ImageSets" / "Main"
    assert sorted(p.name for p in main.iterdir()) == ["test.txt", "train.txt", "trainval.txt", "val.txt"]
    again = run_script(*cmd, timeout=120)
    assert again.returncode == 2
    assert "--overwrite" in again.stderr

    helped = run_script("-m", "utils.demo.shapes_dataset", "--help", timeout=120)
    assert helped.returncode == 0
    for option in ("--out", "--num-images", "--seed", "--year", "--min-size", "--max-size", "--max-objects",
                   "--write-splits", "--test-fraction", "--val-fraction", "--overwrite"):
        assert option in helped.stdout


def test_project_voc_reader_agrees(dataset):
    from utils.data.voc import parse_voc_xml

    out, summary = dataset
    voc = _voc_dir(out)
    for ident in summary["image_ids"]:
        path = voc / "Annotations" / f"{ident}.xml"
        filename, width, height, _, _, objects = _read_xml(path)
        parsed = parse_voc_xml(path)
        assert parsed.filename == filename
        assert (int(parsed.width), int(parsed.height)) == (width, height)
        assert len(parsed.objects) == len(objects)
        for got, want in zip(parsed.objects, objects):
            assert got.name == want["name"]
            assert (float(got.xmin), float(got.ymin), float(got.xmax), float(got.ymax)) == tuple(
                float(v) for v in want["box"]
            )
            assert bool(got.difficult) == (want["difficult"] == "1")
