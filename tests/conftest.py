"""Shared test setup (quiet TensorFlow, CPU only, repository root importable) and the
fixtures every stage folder uses: running a script, a tiny dataset in each format and
a tiny detector. Plain helpers are in ``tests/helpers.py``."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")
# Converted ImageNet weights are cached under KERAS_HOME: keep the tests' copies out of ~/.keras.
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tests import helpers  # noqa: E402

# Where the test files that train are. The files with end-to-end (slow) tests that
# train are collected first, then the other files with slow tests, then the rest (each
# file's tests in their order): with one file per test worker (make test keeps this
# order), the longest files run beside the others instead of finishing alone at the end.
TRAINING_FIRST = ("tests/train/", "tests/test_demo.py")


def pytest_collection_modifyitems(config, items):
    """Orders the files as ``TRAINING_FIRST`` says."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item):
        if item.path not in slow_files:
            return 2
        return 0 if item.path.relative_to(ROOT).as_posix().startswith(TRAINING_FIRST) else 1

    items.sort(key=rank)


@pytest.fixture(scope="session")
def run_script():
    """``run_script(*argv, timeout=, cwd=, env=, check=)``: a script run as the user runs
    it (see ``tests.helpers.run_script``)."""
    return helpers.run_script


@pytest.fixture(scope="session")
def shapes_voc(tmp_path_factory):
    """16 shapes images of 64-128 px in VOC layout (seed 0), converted to annotation
    lines by voc_annotation.py.

    Returns:
        dict of paths: "root", "voc" (the VOCdevkit), "train", "val", "test" (the
        annotation-line files) and "classes".
    """
    root = tmp_path_factory.mktemp("shapes")
    helpers.run_script("-m", "utils.demo.shapes_dataset", "--out", root, "--num-images", "16", "--seed", "0",
                       "--min-size", "64", "--max-size", "128", check=True)
    helpers.run_script("voc_annotation.py", "--voc-root", root / "VOCdevkit", "--classes",
                       root / "shapes_classes.txt", "--out-dir", root, check=True)
    paths = {"root": root, "voc": root / "VOCdevkit", "classes": root / "shapes_classes.txt",
             **{split: root / f"2007_{split}.txt" for split in ("train", "val", "test")}}
    n_train = len(paths["train"].read_text().splitlines())
    assert n_train >= 8 and paths["val"].read_text().strip(), "the dataset needs two batches and a val image"
    return paths


@pytest.fixture(scope="session")
def tiny_datasets(shapes_voc, tmp_path_factory):
    """The training split of ``shapes_voc`` in each format, written by convert_dataset.py.

    Returns:
        dict format -> the path train.py's ``--train`` takes: "lines" (annotation
        lines), "voc" (the VOCdevkit), "coco" (a JSON file) and "yolo" (a dataset folder).
    """
    folder = tmp_path_factory.mktemp("formats")
    paths = {"lines": shapes_voc["train"], "voc": shapes_voc["voc"], "coco": folder / "train.json",
             "yolo": folder / "yolo"}
    for fmt in ("coco", "yolo"):
        helpers.run_script("convert_dataset.py", "--input", shapes_voc["train"], "--classes", shapes_voc["classes"],
                           "--to", fmt, "--out", paths[fmt], check=True)
    return paths


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """A 3-class detector (``helpers.DETECTOR_CLASSES``) at a 64 input whose outputs depend on
    the image: batch-norm statistics of real activations and head logits of spread 1.

    Returns:
        (model, path of its .keras checkpoint).
    """
    from utils.checkpoint import save_model

    model = helpers.varied_detector(helpers.DETECTOR_CLASSES, helpers.DETECTOR_SIZE)
    path = tmp_path_factory.mktemp("detector") / "tiny.keras"
    save_model(model, path)
    return model, path
