"""A COCO JSON dataset end to end: train.py one epoch at a tiny size, then get_map.py
with --metric coco, whose results carry the dataset's own category and image ids."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TRAIN_TIMEOUT, run_script

# Non-contiguous, out-of-order ids: class 0 is "blue" (id 2), class 1 "red" (id 5).
CATEGORIES = [{"id": 5, "name": "red"}, {"id": 2, "name": "blue"}]
COLOURS = {5: (220, 40, 30), 2: (30, 60, 220)}


def _run(script, *args, timeout=TRAIN_TIMEOUT):
    return run_script(script, *args, timeout=timeout, check=True)


def _coco_split(folder, first_id, count, rng):
    """``count`` images in ``folder``/images with one or two coloured blocks, and their
    COCO dict (relative file names, ids from ``first_id``); the last image is empty
    and one block is a crowd region."""
    images, annotations = [], []
    for k in range(count):
        image_id = first_id + k
        w, h = int(rng.integers(64, 112)), int(rng.integers(64, 112))
        pixels = np.full((h, w, 3), 110, np.uint8)
        name = f"img{image_id}.jpg"
        for j in range(0 if k == count - 1 else 1 + k % 2):
            category = (5, 2)[(k + j) % 2]
            bw, bh = int(rng.integers(16, w // 2)), int(rng.integers(16, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            pixels[y : y + bh, x : x + bw] = COLOURS[category]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": int(k == 1 and j == 1)})
        Image.fromarray(pixels).save(folder / "images" / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


@pytest.mark.slow
def test_coco_json_trains_and_evaluates_with_the_dataset_ids(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    train_json = tmp_path / "annotations" / "train.json"
    val_json = tmp_path / "annotations" / "val.json"
    train_json.write_text(json.dumps(_coco_split(tmp_path, 100, 10, rng)))
    val_json.write_text(json.dumps(_coco_split(tmp_path, 500, 4, rng)))
    images = tmp_path / "images"

    proc = _run("train.py", "--train", train_json, "--images", images, "--val", val_json, "--val-images", images,
                "--backbone", "efficientnet-lite0", "--backbone-weights", "none", "--input-size", "64",
                "--batch-size", "4", "--epochs", "1", "--eval-period", "0", "--save-period", "0",
                "--save-dir", tmp_path / "logs", "--name", "coco")
    # The run's summary says what was read, classes in category id order.
    assert "COCO JSON" in proc.stdout and str(train_json) in proc.stdout and str(val_json) in proc.stdout
    assert "2: blue, red" in proc.stdout
    checkpoint = tmp_path / "logs" / "coco" / "last.keras"

    from utils.checkpoint import load_model

    model = load_model(checkpoint)
    assert model.class_names == ["blue", "red"] and model.category_ids == [2, 5]

    out = tmp_path / "map_out"
    proc = _run("get_map.py", "--model", checkpoint, "--annotations", val_json, "--images", images,
                "--metric", "coco", "--out", out, timeout=600)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "coco" and results["num_images"] == 4
    # One crowd region in the validation set is kept as difficult.
    assert sum(line.endswith("difficult") for f in (out / "ground-truth").iterdir()
               for line in f.read_text().splitlines()) == 1
    ground_truth = json.loads((out / "coco_ground_truth.json").read_text())
    assert sorted(im["id"] for im in ground_truth["images"]) == [500, 501, 502, 503]
    assert {a["category_id"] for a in ground_truth["annotations"]} == {2, 5}
    detections = json.loads((out / "coco_detections.json").read_text())
    assert detections, "the model made no detection at confidence 0.001"
    assert {d["category_id"] for d in detections} <= {2, 5}
    assert {d["image_id"] for d in detections} <= {500, 501, 502, 503}
