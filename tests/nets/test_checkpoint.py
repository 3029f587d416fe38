"""Tests of utils/checkpoint.py (save, load, transfer) and of the class-count check of
utils/predict/predictor.py. Models are built once per module: building is slow."""

import os

import numpy as np
import pytest

from nets.yolo import YoloV3
from utils.checkpoint import CheckpointError, atomic_write, load_model, save_model, transfer_weights
from utils.model_data import load_classes
from utils.predict.predictor import ClassCountError, Predictor

SIZE = 64
NAMES = ["ring", "box", "spike"]
PRED_LAYERS = ("head_p5_pred", "head_p4_pred", "head_p3_pred")


@pytest.fixture(scope="module")
def model():
    """A 3-class model whose batch-norm statistics are not the defaults, so that a
    load that forgot them would predict differently."""
    m = YoloV3(3, class_names=NAMES, input_size=SIZE)
    rng = np.random.default_rng(0)
    for v in m.weights:
        if "moving_mean" in v.path:
            v.assign(rng.normal(0, 0.1, v.shape).astype("float32"))
        elif "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return m


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    save_model(model, folder / "model.keras")
    save_model(model, folder / "model.weights.h5")
    return folder


@pytest.fixture(scope="module")
def image():
    # Not square, so that the letterbox inverse is part of what is compared.
    return np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)


def detect(m, image):
    dets = Predictor(m, conf=0.01).predict(image)
    return dets.boxes, dets.scores, dets.classes


@pytest.fixture(scope="module")
def reference(model, image):
    """Detections of the original model (computed once: tracing the graph is slow)."""
    return detect(model, image)


def assert_same_detections(a, b):
    assert len(a[1]) > 0, "the comparison needs detections"
    np.testing.assert_allclose(a[0], b[0], atol=1e-3)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    np.testing.assert_array_equal(a[2], b[2])


def test_keras_round_trip_gives_identical_detections(model, saved, image, reference):
    loaded = load_model(saved / "model.keras")
    assert isinstance(loaded, YoloV3)
    assert loaded.class_names == NAMES and loaded.num_classes == 3
    assert loaded.input_size == SIZE and loaded.backbone_name == "efficientnet-b0"
    np.testing.assert_allclose(loaded.anchors, model.anchors)
    assert_same_detections(reference, detect(loaded, image))


def test_weights_and_json_round_trip_gives_identical_detections(model, saved, image, reference):
    assert (saved / "model.json").is_file()
    loaded = load_model(saved / "model.weights.h5")
    assert isinstance(loaded, YoloV3)
    assert loaded.class_names == NAMES and loaded.input_size == SIZE
    assert_same_detections(reference, detect(loaded, image))
    # transfer_weights from the loaded model: every weight found by name, even where
    # Keras gave auto-named layers another numeric suffix in this process.
    fresh_report = transfer_weights(loaded, model)
    assert fresh_report["missing"] == [] and fresh_report["skipped_shape"] == []
    assert fresh_report["loaded"] == len(loaded.weights)


def test_class_count_mismatch_names_both_counts(model, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\nd\n")
    with pytest.raises(ClassCountError) as info:
        Predictor(model, class_names=load_classes(classes))
    message = str(info.value)
    assert "4" in message and "3" in message
    # A classes file of the right length overrides the names.
    classes.write_text("x\ny\nz\n")
    assert Predictor(model, class_names=load_classes(classes)).class_names == ["x", "y", "z"]


def test_truncated_keras_file_raises_naming_it(saved, tmp_path):
    data = (saved / "model.keras").read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.keras"):
        load_model(cut)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip archive at all")
    with pytest.raises(CheckpointError, match="junk.keras"):
        load_model(junk)


def test_truncated_weights_file_raises_naming_it(saved, tmp_path):
    data = (saved / "model.weights.h5").read_bytes()
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.json").write_bytes((saved / "model.json").read_bytes())
    with pytest.raises(CheckpointError, match="cut.weights.h5"):
        load_model(cut)


def test_missing_files_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")
    with pytest.raises(CheckpointError, match="missing.weights.h5"):
        load_model(tmp_path / "missing.weights.h5")
    lonely = tmp_path / "lonely.weights.h5"
    lonely.write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match="lonely.json"):
        load_model(lonely)
    other = tmp_path / "model.h5"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="model.h5"):
        load_model(other)
    assert issubclass(CheckpointError, ValueError)


def test_transfer_weights_to_another_class_count(model):
    target = YoloV3(5, input_size=SIZE)
    before = {v.path: np.asarray(v).copy() for v in target.weights}
    report = transfer_weights(target, model)
    assert report["missing"] == []
    skipped = {name: (src, dst) for name, src, dst in report["skipped_shape"]}
    assert sorted(skipped) == sorted(f"{layer}/{w}" for layer in PRED_LAYERS for w in ("kernel", "bias"))
    for layer, c in zip(PRED_LAYERS, (320, 112, 40)):
        assert skipped[f"{layer}/kernel"] == ((1, 1, 2 * c, 24), (1, 1, 2 * c, 30))
        assert skipped[f"{layer}/bias"] == ((24,), (30,))
    assert report["loaded"] == len(target.weights) - 6

    source = {v.path: np.asarray(v) for v in model.weights}
    for v in target.weights:
        if v.path.split("/")[0] in PRED_LAYERS:
            np.testing.assert_array_equal(np.asarray(v), before[v.path])  # left as initialized
    np.testing.assert_array_equal(np.asarray(target.get_layer("neck_p4_3_conv").kernel),
                                  source["neck_p4_3_conv/kernel"])
    np.testing.assert_array_equal(np.asarray(target.get_layer("head_p3_conv3_bn").moving_variance),
                                  source["head_p3_conv3_bn/moving_variance"])
    stem = target.get_layer("backbone").get_layer("stem_conv").kernel
    source_stem = model.get_layer("backbone").get_layer("stem_conv").kernel
    np.testing.assert_array_equal(np.asarray(stem), np.asarray(source_stem))


def test_atomic_save_keeps_the_previous_file_when_the_writer_fails(model, tmp_path, monkeypatch):
    path = tmp_path / "last.keras"
    save_model(model, path, include_optimizer=False)
    original = path.read_bytes()

    def failing_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(YoloV3, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["last.keras"], "a temporary file was left behind"

    def failing_writer(tmp):
        with open(tmp, "w") as handle:
            handle.write("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, failing_writer, ".keras")
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["last.keras"]


def test_save_model_rejects_unknown_suffixes(model, tmp_path):
    with pytest.raises(ValueError, match="model.h5"):
        save_model(model, tmp_path / "model.h5")


def test_keras_archive_holds_the_optimizer_only_when_asked(model, tmp_path):
    import zipfile

    import h5py
    import keras

    def groups(path):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as handle, h5py.File(handle) as h5:
            return set(h5.keys())

    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)
    save_model(model, tmp_path / "with.keras", include_optimizer=True)
    save_model(model, tmp_path / "without.keras", include_optimizer=False)
    assert "optimizer" in groups(tmp_path / "with.keras")
    assert "optimizer" not in groups(tmp_path / "without.keras")
    # Momentum doubles the file when it is kept.
    assert (tmp_path / "without.keras").stat().st_size < 0.75 * (tmp_path / "with.keras").stat().st_size
    assert model.optimizer is optimizer, "saving must leave the model's optimizer attached"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["umask022", "umask027", "umask077"])
def test_atomic_writes_give_the_mode_of_an_ordinary_write(tmp_path, umask):
    from utils.export.formats import _replace_folder
    from utils.run_dir import write_text_atomic

    old = os.umask(umask)
    try:
        (tmp_path / "ordinary.csv").write_text("epoch\n")
        atomic_write(tmp_path / "history.csv", lambda tmp: open(tmp, "w").write("epoch\n"), ".csv")
        write_text_atomic(tmp_path / "results.json", "{}\n")
        # A replaced file gets the same mode as a new one.
        write_text_atomic(tmp_path / "results.json", "{}\n")
        _replace_folder(tmp_path / "saved_model", lambda tmp: (tmp / "saved_model.pb").write_bytes(b"pb"))
        os.mkdir(tmp_path / "ordinary_folder")
    finally:
        os.umask(old)

    def mode(name):
        return os.stat(tmp_path / name).st_mode & 0o777

    assert mode("ordinary.csv") == 0o666 & ~umask
    assert mode("history.csv") == mode("results.json") == mode("saved_model/saved_model.pb") == mode("ordinary.csv")
    assert mode("saved_model") == mode("ordinary_folder") == 0o777 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["history.csv", "ordinary.csv", "ordinary_folder", "results.json",
                                            "saved_model"]


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    """A valid .keras archive of a model that is not a detector: Input -> Dense."""
    import keras

    inputs = keras.Input((4,))
    net = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="regressor")
    path = tmp_path_factory.mktemp("foreign") / "regressor.keras"
    net.save(path)
    return path


def test_a_keras_model_that_is_not_a_detector_is_a_checkpoint_error(foreign_model, tmp_path):
    with pytest.raises(CheckpointError, match=r"regressor\.keras.*not a detector.*Functional.*train\.py"):
        load_model(foreign_model)
    with pytest.raises(CheckpointError, match=r"regressor\.keras.*not a detector"):
        transfer_weights(YoloV3(3, input_size=SIZE), foreign_model)

    weights = tmp_path / "regressor.weights.h5"
    (tmp_path / "regressor.json").write_text('{"class_name": "Functional", "config": {"name": "regressor"}}')
    weights.write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match=r"regressor\.json.*'Functional', not YoloV3"):
        load_model(weights)


def test_scripts_name_a_keras_model_that_is_not_a_detector(foreign_model, tmp_path, capsys):
    from PIL import Image

    import export
    import get_map
    import predict

    image = tmp_path / "a.png"
    Image.new("RGB", (32, 24)).save(image)
    annotations = tmp_path / "test.txt"
    annotations.write_text(f"{image} 1,1,10,10,0\n")
    runs = {
        "predict.py": lambda: predict.main(["--model", str(foreign_model), "--source", str(image),
                                            "--out", str(tmp_path / "predict")]),
        "export.py": lambda: export.main(["--model", str(foreign_model), "--format", "onnx",
                                          "--out", str(tmp_path / "m.onnx")]),
        "get_map.py": lambda: get_map.main(["--model", str(foreign_model), "--annotations", str(annotations),
                                            "--out", str(tmp_path / "map")]),
    }
    for script, run in runs.items():
        assert run() != 0, script
        err = capsys.readouterr().err
        assert f"{script}: error: {foreign_model}" in err and "not a detector of this project" in err, err
        assert "Traceback" not in err and "AttributeError" not in err
    assert sorted(os.listdir(tmp_path)) == ["a.png", "test.txt"]  # no output folder or file begun


def test_a_checkpoint_written_before_class_separation_and_agnostic_nms_predicts_the_same_boxes():
    """checkpoint_v1.keras (MobileNetV2 0.35, yolov5 box coding, input 64) and its
    detections on three drawn images were written by the code before the model
    carried a class-separation metric and the decoder an agnostic NMS."""
    import json
    from pathlib import Path

    from tests.helpers import varied_images

    data = Path(__file__).parent / "data"
    expected = json.loads((data / "checkpoint_v1_boxes.json").read_text())
    loaded = load_model(data / "checkpoint_v1.keras")
    assert loaded.box_coding == "yolov5" and loaded.class_names == ["a", "b", "c"]
    predictor = Predictor(loaded, conf=expected["conf"], nms_iou=expected["nms_iou"],
                          max_boxes=expected["max_boxes"])
    found = predictor.predict_batch(varied_images(3, seed=5))
    assert sum(len(d["scores"]) for d in expected["detections"]) > 20
    for image, want in zip(found, expected["detections"]):
        assert len(image) == len(want["scores"])
        np.testing.assert_allclose(image.scores, want["scores"], atol=1e-4)
        np.testing.assert_allclose(image.boxes, want["boxes"], atol=0.05)
        assert image.classes.tolist() == want["classes"]
