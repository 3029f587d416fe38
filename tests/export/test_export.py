"""export.py and the runtimes that run its artifacts, on a tiny model.

One EfficientNet-B0 detector (input 64, three classes, random weights) is exported
once per format for the module. A freshly initialized network answers almost the
same for every image, so the fixture first sets the batch-norm statistics from a
batch of images and scales the prediction layers until the scores spread out
(without saturating); the comparisons with the Keras model then have many
detections of distinct scores and boxes.

Exporting costs tens of seconds per format on a small CPU, running a script as a
subprocess about fifteen; the tests that run the scripts on every artifact are
marked slow.
"""

import builtins
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import DETECTOR_CLASSES as CLASSES, DETECTOR_SIZE as SIZE, run_script, varied_images
from utils.predict.runtimes import ArtifactError, MissingRuntimeError, open_model_file

# Settings in the exported graphs; the Keras model is compared at the same ones.
SETTINGS = dict(conf=0.1, nms_iou=0.3, max_boxes=20)
FORMATS = ("onnx", "tflite", "saved_model", "openvino")
# ONNX, the default, is checked in the quick run; the other exports take minutes more.
EACH_FORMAT = [fmt if fmt == "onnx" else pytest.param(fmt, marks=pytest.mark.slow) for fmt in FORMATS]
BOX_TOLERANCE = 0.5  # pixels of the original image
SCORE_TOLERANCE = 1e-3


_images = varied_images


@pytest.fixture(scope="module")
def model(tiny_detector):
    return tiny_detector


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Images of several sizes and an annotation file listing them."""
    folder = tmp_path_factory.mktemp("data")
    lines = []
    for i, image in enumerate(_images(6, seed=3)):
        path = folder / f"img{i}.jpg"
        cv2.imwrite(str(path), image[..., ::-1])
        h, w = image.shape[:2]
        lines.append(f"{path} {w // 4},{h // 4},{w // 2},{h // 2},{i % 3} 5,5,{w - 5},{h - 5},{(i + 1) % 3}")
    annotations = folder / "ann.txt"
    annotations.write_text("\n".join(lines) + "\n")
    return folder, annotations


class _Exports(dict):
    """Format -> artifact path, each format exported the first time a test asks for it."""

    def __init__(self, model, folder):
        super().__init__()
        self.model, self.folder = model, folder

    def __missing__(self, fmt):
        from utils.export.exporter import ExportOptions, run_export

        name = {"onnx": "m.onnx", "tflite": "m.tflite", "saved_model": "m_saved", "openvino": "m.xml"}[fmt]
        options = ExportOptions(checkpoint=str(self.model[1]), format=fmt, check_images=2,
                                out=str(self.folder / name), **SETTINGS)
        self[fmt] = run_export(options)
        return self[fmt]


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    """Each format exported once, with the settings of SETTINGS, when first used."""
    return _Exports(model, tmp_path_factory.mktemp("exports"))


def _assert_same(reference, other, images):
    from utils.export.verify import compare

    result = compare(reference, other, images)
    assert result.matched > 0
    assert result.only_reference == result.only_other == 0, result.summary()
    assert result.max_box_diff <= BOX_TOLERANCE, result.summary()
    assert result.max_score_diff <= SCORE_TOLERANCE, result.summary()
    return result



def _assert_well_formed(detections, image):
    """Asserts that one image's detections are what a predictor promises: (N, 4) xyxy
    boxes inside the image, scores between the graph's threshold and 1, known classes."""
    count = len(detections)
    assert count <= SETTINGS["max_boxes"] * len(CLASSES)
    assert detections.boxes.shape == (count, 4) and detections.classes.shape == (count,)
    h, w = image.shape[:2]
    boxes = detections.boxes
    assert np.all(np.isfinite(boxes)) and np.all(boxes[:, :2] <= boxes[:, 2:])
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= w) and np.all(boxes[:, [1, 3]] <= h)
    assert np.all((detections.scores >= SETTINGS["conf"] - 1e-6) & (detections.scores <= 1))
    assert set(detections.classes.tolist()) <= set(range(len(CLASSES)))

# --- each format against the Keras model ------------------------------------------------


class _FromThreads:
    """A predictor whose batch is detected one image a thread, all at once."""

    def __init__(self, predictor, threads):
        self.predictor, self.threads = predictor, threads
        self.class_names = predictor.class_names

    def predict_batch(self, images):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(self.predictor.predict, images))


@pytest.mark.slow
def test_openvino_streams_detect_like_one_request_from_several_threads(artifacts):
    """The throughput copy a video file runs on (``for_streams``): the same detections,
    with several threads inferring at once (one request each)."""
    exported = open_model_file(artifacts["openvino"], **SETTINGS)
    twin, streams = exported.for_streams()
    assert streams >= 1 and twin.precision == exported.precision and (twin is exported) == (streams == 1)
    assert exported.for_streams()[0] is twin  # compiled once
    if streams > 1:  # one frame in flight more than the inference streams
        assert twin.compiled is not exported.compiled
        assert streams == int(twin.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) + 1
    result = _assert_same(exported, _FromThreads(twin, max(streams, 3)), _images(9, seed=13))
    assert result.matched >= 20


class _OneByOne:
    """A predictor whose batch is detected one image a call."""

    def __init__(self, predictor):
        self.predictor, self.class_names = predictor, predictor.class_names

    def predict_batch(self, images):
        return [self.predictor.predict(image) for image in images]


@pytest.mark.slow
def test_openvino_compiles_a_fixed_batch_for_each_batch_size(artifacts):
    """OpenVINO runs the IR's dynamic batch fixed at each batch size met (faster), each
    compiled once, with the detections of one image a call."""
    exported = open_model_file(artifacts["openvino"], **SETTINGS)
    assert list(exported.compiled.inputs[0].get_partial_shape()) == [1, SIZE, SIZE, 3]
    from utils.export.verify import compare

    # A batch of 5 on the predictor itself against one image a call.
    result = compare(exported, _OneByOne(exported), _images(5, seed=17), batch_size=5)
    assert result.matched >= 10 and result.only_reference == result.only_other == 0, result.summary()
    assert result.max_box_diff <= BOX_TOLERANCE and result.max_score_diff <= SCORE_TOLERANCE, result.summary()
    five = exported._compiled_for(5)
    assert list(five.inputs[0].get_partial_shape()) == [5, SIZE, SIZE, 3]
    assert exported._compiled_for(5) is five and exported._compiled_for(1) is exported.compiled


@pytest.mark.parametrize("fmt", EACH_FORMAT)
def test_export_reproduces_keras_detections(fmt, model, artifacts):
    from utils.predict.predictor import Predictor

    exported = open_model_file(artifacts[fmt], **SETTINGS)
    assert exported.host_stage == ("nms" if fmt == "tflite" else "none")
    images = _images(6, seed=5)
    result = _assert_same(Predictor(model[0], **SETTINGS), exported, images)
    assert result.matched >= 20


@pytest.mark.parametrize("fmt", EACH_FORMAT)
def test_exported_graph_has_exactly_one_image_input(fmt, artifacts):
    path = artifacts[fmt]
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [("images", onnx.TensorProto.UINT8)]
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [SIZE, SIZE, 3]
        assert [o.name for o in graph.output] == ["boxes", "scores", "classes", "count", "raw_s32", "raw_s16",
                                                   "raw_s8"]
    elif fmt == "tflite":
        signatures = open_model_file(path).interpreter.get_signature_list()
        assert signatures["serving_default"]["inputs"] == ["images"]
    elif fmt == "saved_model":
        import tensorflow as tf

        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        args, kwargs = signature.structured_input_signature
        assert args == () and list(kwargs) == ["images"] and kwargs["images"].dtype == tf.uint8
    else:
        import openvino as ov

        ov_model = ov.Core().read_model(str(path))
        assert [port.get_any_name() for port in ov_model.inputs] == ["images"]


@pytest.mark.parametrize("fmt", EACH_FORMAT)
def test_metadata_round_trips(fmt, model, artifacts):
    exported = open_model_file(artifacts[fmt])
    meta = exported.metadata
    assert meta.class_names == CLASSES and exported.class_names == CLASSES
    assert meta.input_size == SIZE == exported.input_size
    np.testing.assert_allclose(meta.anchors, model[0].anchors, rtol=1e-6)
    assert (meta.conf, meta.nms_iou, meta.max_boxes) == (SETTINGS["conf"], SETTINGS["nms_iou"], SETTINGS["max_boxes"])
    assert meta.precision == "fp32" and meta.checkpoint == "tiny.keras"
    assert meta.nms == ("host" if fmt == "tflite" else "graph")


@pytest.mark.slow
def test_other_settings_and_anchors_run_on_the_host(model, artifacts):
    from utils.predict.predictor import Predictor
    from utils.predict.runtimes import TFLitePredictor

    images = _images(4, seed=7)
    # Lower conf, another IoU: decoding and NMS on the host, as the Keras model does them.
    evaluation = dict(conf=0.01, nms_iou=0.5, max_boxes=30)
    exported = open_model_file(artifacts["onnx"], **evaluation)
    assert exported.host_stage == "decode"
    _assert_same(Predictor(model[0], **evaluation), exported, images)
    # A higher conf than the export's is a filter on the graph's detections.
    higher = dict(SETTINGS, conf=0.3)
    exported = open_model_file(artifacts["openvino"], **higher)
    assert exported.host_stage == "none"
    _assert_same(Predictor(model[0], **higher), exported, images)
    # Other anchors (and no letterbox) on TFLite, whose graph decodes with its own.
    anchors = np.asarray(model[0].anchors) * 1.3
    keras_predictor = Predictor(model[0], anchors=anchors, letterbox=False, **SETTINGS)
    exported = TFLitePredictor(artifacts["tflite"], anchors=anchors, letterbox=False, **SETTINGS)
    assert exported.host_stage == "decode"
    _assert_same(keras_predictor, exported, images)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_agnostic_nms_export_carries_it_and_detects_like_keras(fmt, model, tmp_path):
    from utils.export.exporter import ExportOptions, run_export
    from utils.predict.predictor import Predictor

    images = _images(4, seed=11)
    settings = dict(conf=0.05, nms_iou=0.3, max_boxes=100)  # no image reaches the box limit
    name = {"onnx": "agnostic.onnx", "openvino": "agnostic.xml"}[fmt]
    path = run_export(ExportOptions(checkpoint=str(model[1]), format=fmt, out=str(tmp_path / name), check_images=2,
                                    agnostic_nms=True, **settings))
    exported = open_model_file(path, **settings)
    assert exported.metadata.agnostic_nms and exported.agnostic_nms and exported.host_stage == "decode"
    _assert_same(Predictor(model[0], agnostic_nms=True, **settings), exported, images)
    # Asked per class, the same export runs its own graph's NMS, like the Keras model per class.
    per_class = open_model_file(path, agnostic_nms=False, **settings)
    assert per_class.host_stage == "none"
    _assert_same(Predictor(model[0], **settings), per_class, images)
    # Agnostic NMS removes the boxes of other classes on the same objects: fewer boxes.
    counts = [sum(len(found) for found in p.predict_batch(images)) for p in (exported, per_class)]
    assert 0 < counts[0] < counts[1]


@pytest.mark.slow
def test_agnostic_nms_asked_of_a_per_class_export_runs_on_the_host(model, artifacts):
    from utils.predict.predictor import Predictor

    exported = open_model_file(artifacts["onnx"], agnostic_nms=True, **SETTINGS)
    assert not exported.metadata.agnostic_nms and exported.host_stage == "decode"
    _assert_same(Predictor(model[0], agnostic_nms=True, **SETTINGS), exported, _images(4, seed=12))
    assert open_model_file(artifacts["onnx"], **SETTINGS).host_stage == "none"


@pytest.mark.slow
def test_heatmap_heads_match(model, artifacts):
    from utils.predict.predictor import Predictor

    images = _images(2, seed=9)
    reference = Predictor(model[0]).raw_outputs(images)
    for fmt in FORMATS:
        heads = open_model_file(artifacts[fmt]).raw_outputs(images)
        for a, b in zip(reference, heads):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_raw_export_decodes_on_the_host(model, tmp_path):
    from utils.export.exporter import ExportOptions, run_export
    from utils.predict.predictor import Predictor

    path = run_export(ExportOptions(checkpoint=str(model[1]), format="onnx", raw=True, check_images=1,
                                    out=str(tmp_path / "raw.onnx")))
    import onnx

    assert [o.name for o in onnx.load(str(path)).graph.output] == ["raw_s32", "raw_s16", "raw_s8"]
    exported = open_model_file(path, **SETTINGS)
    assert exported.metadata.nms == "none" and exported.host_stage == "decode"
    _assert_same(Predictor(model[0], **SETTINGS), exported, _images(3, seed=11))


def _with_box_coding(model, box_coding):
    """The fixture's detector with its weights and another box coding."""
    from nets.yolo import YoloV3

    net = YoloV3.from_config({**model.get_config(), "box_coding": box_coding})
    net.set_weights(model.get_weights())
    return net


def test_yolov5_box_coding_exports_and_decodes_like_keras(model, tmp_path):
    from utils.checkpoint import save_model
    from utils.export.exporter import ExportOptions, run_export
    from utils.predict.predictor import Predictor

    net = _with_box_coding(model[0], "yolov5")
    checkpoint = tmp_path / "v5.keras"
    save_model(net, checkpoint)
    path = run_export(ExportOptions(checkpoint=str(checkpoint), format="onnx", check_images=1,
                                    out=str(tmp_path / "v5.onnx"), **SETTINGS))
    exported = open_model_file(path, **SETTINGS)
    assert exported.metadata.box_coding == "yolov5" and exported.host_stage == "none"
    images = _images(6, seed=5)
    keras_v5 = Predictor(net, **SETTINGS)
    result = _assert_same(keras_v5, exported, images)
    assert result.matched >= 20
    # The same weights decode to other boxes under the other coding: the coding is used.
    v3 = Predictor(model[0], **SETTINGS).predict_batch(images)
    v5 = keras_v5.predict_batch(images)
    assert any(len(a) != len(b) or not np.allclose(a.boxes, b.boxes, atol=1.0) for a, b in zip(v3, v5))
    # Decoding on the host (other NMS settings) uses the metadata's coding too.
    evaluation = dict(conf=0.01, nms_iou=0.5, max_boxes=30)
    on_host = open_model_file(path, **evaluation)
    assert on_host.host_stage == "decode"
    _assert_same(Predictor(net, **evaluation), on_host, images[:3])


def _strip_box_coding(source, target):
    """A copy of a .keras archive whose model config has no box coding, as archives
    written before the coding existed."""
    import zipfile

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                assert config["config"].pop("box_coding") == "yolov3"
                data = json.dumps(config).encode()
            dst.writestr(item, data)


def test_checkpoint_without_a_box_coding_decodes_as_before(model, tmp_path):
    from utils.checkpoint import load_model
    from utils.predict.predictor import Predictor
    from utils.predict.runtimes import ExportMetadata

    old = tmp_path / "old.keras"
    _strip_box_coding(model[1], old)
    loaded = load_model(old)
    assert loaded.box_coding == "yolov3"
    images = _images(4, seed=13)
    for a, b in zip(Predictor(model[0], **SETTINGS).predict_batch(images),
                    Predictor(loaded, **SETTINGS).predict_batch(images)):
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    # Export metadata written before the coding existed reads as yolov3.
    meta = ExportMetadata(class_names=CLASSES, input_size=SIZE, anchors=np.ones((9, 2)).tolist())
    data = json.loads(meta.to_json())
    del data["box_coding"]
    assert ExportMetadata.from_json(json.dumps(data), "old.onnx").box_coding == "yolov3"
    data["box_coding"] = "yolov9"
    with pytest.raises(ArtifactError, match="old.onnx.*box coding"):
        ExportMetadata.from_json(json.dumps(data), "old.onnx")


def test_input_size_other_than_the_exports_is_refused(artifacts):
    with pytest.raises(ArtifactError, match="exported for input 64.*--input-size 96"):
        open_model_file(artifacts["onnx"], input_size=96)


# --- int8 ------------------------------------------------------------------------------


@pytest.mark.slow
def test_int8_onnx_and_openvino(model, data, tmp_path, capsys):
    import onnx

    from utils.export.exporter import ExportOptions, run_export

    _, annotations = data
    common = dict(checkpoint=str(model[1]), int8=True, calib=str(annotations), eval=str(annotations),
                  check_images=2, **SETTINGS)
    path = run_export(ExportOptions(format="onnx", out=str(tmp_path / "m_int8.onnx"), **common))
    printed = capsys.readouterr().out
    assert "mAP@0.5" in printed and "Keras" in printed and "onnx int8" in printed
    graph = onnx.load(str(path)).graph
    quantized = {node.name for node in graph.node if node.op_type == "QuantizeLinear"}
    assert len(quantized) > 20
    # Decoding and NMS stay in float: nothing after the raw heads is quantized.
    assert any(node.op_type == "NonMaxSuppression" for node in graph.node)
    heads = {"raw_s32", "raw_s16", "raw_s8"}
    assert not any(node.op_type == "QuantizeLinear" and heads & set(node.input) for node in graph.node)
    # The prediction convolutions keep float weights: no DequantizeLinear feeds them.
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    predictions = [node for node in graph.node if node.op_type == "Conv" and "_pred" in node.name]
    assert len(predictions) == 3 and not any(node.input[1] in dequantized for node in predictions)
    exported = open_model_file(path, **SETTINGS)
    assert exported.metadata.precision == "int8" and exported.host_stage == "none"
    image = _images(1)[0]
    _assert_well_formed(exported.predict(image), image)

    common.pop("eval")
    xml = run_export(ExportOptions(format="openvino", out=str(tmp_path / "m_int8.xml"), **common))
    exported = open_model_file(xml, **SETTINGS)
    assert exported.metadata.precision == "int8" and exported.precision == "int8"
    images = _images(2)
    for detections, image in zip(exported.predict_batch(images), images, strict=True):
        _assert_well_formed(detections, image)
    # NNCF's FakeQuantize operations, none on the prediction convolutions or after them.
    import openvino as ov

    ops = ov.Core().read_model(str(xml)).get_ordered_ops()
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) > 20
    float_ops = [op for op in ops if op.get_type_name() == "NonMaxSuppression"
                 or (op.get_type_name() == "Convolution" and "_pred" in op.get_friendly_name())]
    assert len(float_ops) == 4
    for op in float_ops:
        assert all(value.get_node().get_type_name() != "FakeQuantize" for value in op.input_values()), op


def test_int8_needs_calibration_and_a_format_that_has_it(model, tmp_path, capsys):
    import export

    assert export.main(["--model", str(model[1]), "--format", "onnx", "--int8"]) == 2
    assert "--int8 needs --calib" in capsys.readouterr().err
    assert export.main(["--model", str(model[1]), "--format", "tflite", "--int8", "--calib", "x.txt"]) == 2
    assert "--int8 is available for --format onnx and openvino" in capsys.readouterr().err
    assert export.main(["--model", str(model[1]), "--format", "onnx", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert export.main(["--model", str(tmp_path / "missing.keras"), "--format", "onnx"]) == 2
    assert "missing.keras" in capsys.readouterr().err


def test_default_output_names():
    from utils.export.exporter import default_output

    assert default_output("logs/exp/best.keras", "onnx") == Path("logs/exp/best.onnx")
    assert default_output("logs/exp/best.keras", "onnx", int8=True) == Path("logs/exp/best_int8.onnx")
    assert default_output("logs/exp/last.weights.h5", "tflite", raw=True) == Path("logs/exp/last_raw.tflite")
    assert default_output("best.keras", "saved_model") == Path("best_saved_model")
    assert default_output("best.keras", "openvino", bf16=True) == Path("best_bf16.xml")


# --- errors: missing runtimes, corrupt and foreign files --------------------------------


def _hide_module(monkeypatch, name):
    real_import = builtins.__import__

    def fake_import(module, *args, **kwargs):
        if module == name or module.startswith(name + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("fmt, module, pip", [
    ("onnx", "onnxruntime", "pip install onnxruntime=="),
    pytest.param("openvino", "openvino", "pip install openvino==", marks=pytest.mark.slow),
])
def test_missing_runtime_names_the_pip_line(fmt, module, pip, artifacts, monkeypatch):
    _hide_module(monkeypatch, module)
    with pytest.raises(MissingRuntimeError) as error:
        open_model_file(artifacts[fmt])
    assert pip in str(error.value) and str(artifacts[fmt]) in str(error.value)


def test_missing_exporter_names_the_pip_line(model, tmp_path, monkeypatch, capsys):
    import export

    _hide_module(monkeypatch, "tf2onnx")
    assert export.main(["--model", str(model[1]), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install tf2onnx==" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_corrupt_artifacts_name_the_file(tmp_path):
    from utils.predict.runtimes import ExportMetadata

    metadata = ExportMetadata(class_names=CLASSES, input_size=SIZE, anchors=np.ones((9, 2)).tolist()).to_json()
    onnx_file = tmp_path / "bad.onnx"
    onnx_file.write_bytes(b"\x08\x07 not a model")
    tflite_file = tmp_path / "bad.tflite"
    tflite_file.write_bytes(b"not a flatbuffer" * 4)
    Path(str(tflite_file) + ".json").write_text(metadata)
    xml_file = tmp_path / "bad.xml"
    xml_file.write_text("<net><layers>")
    saved = tmp_path / "bad_saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"garbage")
    (saved / "effyolo.json").write_text(metadata)
    bad_json = tmp_path / "badjson.tflite"
    bad_json.write_bytes(b"x")
    Path(str(bad_json) + ".json").write_text('{"format": "effyolo", "class_names": []}')
    for path in (onnx_file, tflite_file, xml_file, saved, bad_json):
        with pytest.raises(ArtifactError) as error:
            open_model_file(path)
        assert str(path) in str(error.value)
    alone = tmp_path / "alone.tflite"
    alone.write_bytes(b"x")
    unknown = tmp_path / "model.pt"
    unknown.write_bytes(b"x")
    for path, message in ((alone, "alone.tflite.json is missing"), (unknown, "unknown model type"),
                          (tmp_path, "not a SavedModel"), (tmp_path / "gone.onnx", "not found")):
        with pytest.raises(ArtifactError, match=message):
            open_model_file(path)


def test_truncated_onnx_export_names_the_file(artifacts, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(Path(artifacts["onnx"]).read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="truncated.onnx: not a readable ONNX model"):
        open_model_file(truncated)


def test_onnx_without_metadata_is_refused(artifacts, tmp_path):
    import onnx

    proto = onnx.load(str(artifacts["onnx"]))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with pytest.raises(ArtifactError, match="only models written by export.py"):
        open_model_file(foreign)


def test_predict_cli_reports_a_corrupt_artifact(tmp_path, capsys):
    import predict

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), _images(1)[0])
    assert predict.main(["--model", str(bad), "--source", str(image), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


# --- the scripts on every artifact ------------------------------------------------------


_run = run_script


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_and_get_map_run_on_each_artifact(fmt, model, artifacts, data, tmp_path):
    from utils.predict.predictor import Predictor

    folder, annotations = data
    image = folder / "img0.jpg"
    result = _run("predict.py", "--model", artifacts[fmt], "--source", image, "--out", tmp_path / "pred",
                  "--conf", SETTINGS["conf"], "--nms-iou", SETTINGS["nms_iou"], "--max-boxes", SETTINGS["max_boxes"],
                  "--save-txt", "--count")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in (tmp_path / "pred" / "labels" / "img0.txt").read_text().splitlines()]
    from utils.image import load_image

    expected = Predictor(model[0], **SETTINGS).predict(load_image(image))
    assert len(rows) == len(expected) > 0
    assert sorted(float(r[1]) for r in rows) == pytest.approx(sorted(expected.scores.tolist()), abs=2e-3)

    result = _run("get_map.py", "--model", artifacts[fmt], "--annotations", annotations, "--out", tmp_path / "map",
                  "--no-plots")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "map" / "results.json").read_text())
    assert summary["num_images"] == 6 and 0.0 <= summary["map"] <= 1.0
    assert len(list((tmp_path / "map" / "detection-results").glob("*.txt"))) == 6


@pytest.mark.slow
def test_export_cli_prints_the_check(model, data, tmp_path):
    _, annotations = data
    out = tmp_path / "cli.onnx"
    result = _run("export.py", "--model", model[1], "--format", "onnx", "--out", out, "--calib", annotations,
                  "--conf", SETTINGS["conf"], "--check-images", 3)
    assert result.returncode == 2 and "--calib is used with --int8 only" in result.stderr
    result = _run("export.py", "--model", model[1], "--format", "onnx", "--out", out, "--eval", annotations,
                  "--conf", SETTINGS["conf"], "--check-images", 3)
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    assert "Check on the first 3 images of" in result.stdout
    assert "raw heads: largest difference" in result.stdout and "largest box difference" in result.stdout
    assert "mAP@0.5" in result.stdout and "onnx fp32" in result.stdout


# --- --runtime: a checkpoint on the fastest runtime, its export cached -------------------


@pytest.fixture(scope="module")
def auto_checkpoint(model, tmp_path_factory):
    """A copy of the tiny checkpoint in a folder of its own, whose export cache the
    tests below share."""
    import shutil

    path = tmp_path_factory.mktemp("auto") / "tiny.keras"
    shutil.copy(model[1], path)
    return path


@pytest.fixture
def exports_made(monkeypatch):
    """A list that receives the artifact path of every export ``--runtime`` makes."""
    from utils.export import auto_runtime

    made, real = [], auto_runtime.write_export

    def write_export(options, model, out, work):
        made.append(out)
        return real(options, model, out, work)

    monkeypatch.setattr(auto_runtime, "write_export", write_export)
    return made


def test_auto_exports_once_then_reuses_and_detects_like_keras(model, auto_checkpoint, exports_made, capsys):
    from utils.export.auto_runtime import CACHE_FOLDER, choose_precision, open_on_runtime as load_auto
    from utils.export.verify import TOLERANCES, check_export
    from utils.predict.predictor import Predictor
    from utils.predict.runtimes import OpenVINOPredictor

    evaluating = load_auto(auto_checkpoint, evaluation=True, **SETTINGS)
    assert isinstance(evaluating, OpenVINOPredictor) and evaluating.precision == "fp32"
    assert len(exports_made) == 1
    assert evaluating.path.parent.parent == auto_checkpoint.parent / CACHE_FOLDER
    out = capsys.readouterr().out
    assert "Runtime: OpenVINO fp32 (auto; float32 for evaluation), exported in" in out
    # Within the tolerances export.py's checks hold float exports to.
    images = _images(6, seed=5)
    keras_predictor = Predictor(model[0], **SETTINGS)
    assert _assert_same(keras_predictor, evaluating, images).matched >= 20

    # Prediction runs at the precision auto picks for this CPU, from the same export.
    predicting = load_auto(auto_checkpoint, **SETTINGS)
    assert len(exports_made) == 1
    assert predicting.precision == choose_precision("openvino", evaluation=False)[0]
    assert f"Runtime: OpenVINO {predicting.precision} (auto;" in capsys.readouterr().out
    _, problem = check_export(keras_predictor, predicting, images, TOLERANCES[predicting.precision], SETTINGS["conf"])
    assert problem is None


class _Answers:
    """A stand-in predictor giving fixed detections (one per image) and raw heads."""

    def __init__(self, scores):
        from utils.predict.predictor import Detections

        self.detections = [Detections(np.array([[10, 10, 40, 40]] * len(s), np.float32).reshape(-1, 4),
                                      np.array(s, np.float32), np.zeros(len(s), np.int32)) for s in scores]

    def predict_batch(self, images):
        return [self.detections[int(image[0, 0, 0])] for image in images]

    def raw_outputs(self, images):
        return [np.ones((len(images), 2, 2, 3), np.float32)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_detection_at_the_threshold_found_by_one_side_alone_passes_the_check(precision):
    from utils.export.verify import TOLERANCES, check_export

    images = [np.full((8, 8, 3), i, np.uint8) for i in range(2)]
    tolerance, conf = TOLERANCES[precision], 0.5
    # Scored just above the threshold by the Keras model, just below it by the export.
    near = conf + tolerance.score / 2
    assert check_export(_Answers([[near], []]), _Answers([[], []]), images, tolerance, conf)[1] is None
    # A clear detection that the export misses, with nothing found by both, fails.
    _, problem = check_export(_Answers([[0.9], []]), _Answers([[], []]), images, tolerance, conf)
    assert problem == "none of the 1 detections is found by both"


class _Kept:
    """A stand-in predictor that kept the given boxes (class 0) of one image, at NMS IoU
    0.5 and ``max_boxes`` boxes per class."""

    nms_iou = 0.5

    def __init__(self, boxes, scores, max_boxes=100):
        from utils.predict.predictor import Detections

        self.max_boxes = max_boxes
        self.detections = Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                                     np.zeros(len(scores), np.int32))

    def predict_batch(self, images):
        return [self.detections for _ in images]

    def raw_outputs(self, images):
        return [np.ones((len(images), 2, 2, 3), np.float32)]


def test_a_detection_one_side_alone_kept_passes_the_check_where_a_near_tie_explains_it():
    """float32 sides may keep different boxes where NMS or the box limit met a near tie
    (the export's NMS decides an overlap at the IoU threshold the other way); a clear
    detection that nothing explains still fails the check."""
    from utils.export.verify import TOLERANCES, check_export

    images, tolerance, conf = [np.zeros((100, 100, 3), np.uint8)], TOLERANCES["fp32"], 0.01
    best, near, far = [0, 0, 40, 40], [16, 0, 56, 40], [60, 60, 90, 90]  # near: IoU 0.43 with best
    # NMS: the Keras model kept ``near`` beside ``best``, the export dropped it.
    comparison, problem = check_export(_Kept([best, near], [0.9, 0.6]), _Kept([best], [0.9]), images, tolerance, conf)
    assert problem is None and comparison.only_reference == 1 and comparison.unexplained == 0
    assert "1 of them near ties" in comparison.summary()
    # The same box away from every other one is a real difference.
    comparison, problem = check_export(_Kept([best, far], [0.9, 0.6]), _Kept([best], [0.9]), images, tolerance, conf)
    assert problem == "1 detections found by one side only and not near a tie, one scoring 0.600"
    # The box limit (2 per class): each side kept a different box at the cut.
    keras_side = _Kept([best, far], [0.9, 0.3], max_boxes=2)
    export_side = _Kept([best, [60, 0, 90, 30]], [0.9, 0.2999], max_boxes=2)
    comparison, problem = check_export(keras_side, export_side, images, tolerance, conf)
    assert problem is None and comparison.only_reference == comparison.only_other == 1
    # Below the limit, the same two boxes are not a near tie.
    keras_side.max_boxes = 3
    assert check_export(keras_side, export_side, images, tolerance, conf)[1] is not None


def test_auto_falls_back_to_tensorflow_and_says_why(auto_checkpoint, monkeypatch, caplog, capsys):
    from utils.export import auto_runtime, verify
    from utils.export.auto_runtime import RuntimeChoiceError, open_on_runtime as load_auto
    from utils.predict.predictor import Predictor

    # An export that fails its check (the one of the test above, from the cache).
    monkeypatch.setitem(verify.TOLERANCES, "fp32", verify.Tolerance(heads=0.0, box=0.0, score=0.0))
    monkeypatch.setattr(auto_runtime, "TOLERANCES", verify.TOLERANCES)
    with caplog.at_level("WARNING"):
        assert type(load_auto(auto_checkpoint, evaluation=True, **SETTINGS)) is Predictor
    assert "failed its check against the Keras model on 8 drawn images (raw heads differ" in caplog.text
    assert "running the Keras model on TensorFlow instead" in caplog.text
    # Named by the user, the runtime runs all the same, the finding and the export's path said.
    caplog.clear()
    with caplog.at_level("WARNING"):
        named = load_auto(auto_checkpoint, runtime="openvino", evaluation=True, **SETTINGS)
    assert named.runtime_name == "OpenVINO" and str(named.path) in caplog.text
    assert "differs from the Keras model on 8 drawn images (raw heads differ" in caplog.text
    assert "running it all the same, as --runtime openvino asks" in caplog.text
    assert "differs from the Keras model on 8 drawn images" in capsys.readouterr().out
    monkeypatch.undo()

    caplog.clear()
    _hide_module(monkeypatch, "openvino")
    with caplog.at_level("WARNING"):
        assert type(load_auto(auto_checkpoint, **SETTINGS)) is Predictor
    assert len([r for r in caplog.records if r.getMessage().startswith("Runtime:")]) == 1
    assert "openvino is not installed (pip install openvino==" in caplog.text and "TensorFlow" in caplog.text
    # Named explicitly, a missing runtime is an error.
    with pytest.raises(RuntimeChoiceError, match="--runtime openvino: openvino is not installed"):
        load_auto(auto_checkpoint, runtime="openvino", **SETTINGS)
    assert "Runtime: TensorFlow fp32 (--runtime tf)" not in capsys.readouterr().out
    assert type(load_auto(auto_checkpoint, runtime="tf")) is Predictor
    assert "Runtime: TensorFlow fp32 (--runtime tf)" in capsys.readouterr().out


def test_auto_checks_on_the_pictures_given_and_runs_float32_where_bfloat16_fails(auto_checkpoint, monkeypatch,
                                                                                   caplog, capsys):
    from utils.export import auto_runtime
    from utils.export.auto_runtime import open_on_runtime as load_auto
    from utils.export.verify import TOLERANCES
    from utils.predict.predictor import Predictor
    from utils.predict.runtimes import OpenVINOPredictor

    # bfloat16 asked for whatever this CPU has, and its check made to fail: the export
    # runs in float32, checked again on the same pictures (the run's own).
    monkeypatch.setattr(auto_runtime, "choose_precision", lambda runtime, evaluation: ("bf16", "bf16 for the test"))
    checks, real_check = [], auto_runtime.check_export
    failing = {"bf16"}

    def check_export(reference, other, images, tolerance, conf):
        asked = "fp32" if checks else "bf16"
        checks.append((tolerance, len(images)))
        comparison, problem = real_check(reference, other, images, tolerance, conf)
        return comparison, ("scores differ by 0.2, more than 0.15" if asked in failing else problem)

    monkeypatch.setattr(auto_runtime, "check_export", check_export)
    asked_for = []
    pictures = _images(3, seed=7)

    def own_pictures(count):
        asked_for.append(count)
        return pictures, "the first 3 frames of clip.mp4"

    predictor = load_auto(auto_checkpoint, check_images=own_pictures, **SETTINGS)
    assert isinstance(predictor, OpenVINOPredictor) and predictor.precision == "fp32"
    assert asked_for == [auto_runtime.CHECK_IMAGES] and checks[1] == (TOLERANCES["fp32"], 3) and len(checks) == 2
    line = capsys.readouterr().out
    assert ("Runtime: OpenVINO fp32 (auto; float32: bfloat16 failed the check (scores differ by 0.2, more than "
            "0.15)), ") in line
    assert line.rstrip().endswith("matches the Keras model on the first 3 frames of clip.mp4")
    # float32 failing too: TensorFlow, said once.
    # float32 failing too, on the export reused from the cache: the export is named and
    # made again (a cached file altered in place would fail this way), checked again,
    # and then TensorFlow runs, said once.
    checks.clear()
    failing.add("fp32")
    for note in Path(auto_checkpoint).parent.glob(f"{auto_runtime.CACHE_FOLDER}/*/{auto_runtime.CHECK_FAILED}"):
        note.unlink()  # left by the test above, whose check failed another way
    with caplog.at_level("WARNING"):
        assert type(load_auto(auto_checkpoint, check_images=own_pictures, **SETTINGS)) is Predictor
    assert len(checks) == 4 and len([r for r in caplog.records if r.getMessage().startswith("Runtime:")]) == 1
    assert "Runtime cache: the cached export " in caplog.text and "; exporting again" in caplog.text
    assert ("failed its check against the Keras model on the first 3 frames of clip.mp4 (scores differ by 0.2"
            in caplog.text)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Runtime: the OpenVINO fp32 export ")]
    assert failed and "model.xml of tiny.keras" in failed[0]
    # The same failure on the next run: no new export, the note of the failed check is in the cache.
    checks.clear()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert type(load_auto(auto_checkpoint, check_images=own_pictures, **SETTINGS)) is Predictor
    assert len(checks) == 2 and "exporting again" not in caplog.text
    # A source that gives no pictures (a webcam): drawn ones.
    checks.clear()
    failing.clear()
    assert load_auto(auto_checkpoint, check_images=lambda count: ([], "a webcam"), **SETTINGS).precision
    assert [count for _, count in checks] == [auto_runtime.CHECK_IMAGES]
    assert "matches the Keras model on 8 drawn images" in capsys.readouterr().out


def test_runtime_of_an_export_is_its_own(artifacts, capsys):
    from utils.export.auto_runtime import RuntimeChoiceError, open_on_runtime as load_auto

    assert load_auto(artifacts["onnx"], runtime="onnxruntime").runtime_name == "ONNX Runtime"
    assert "Runtime: ONNX Runtime fp32 (as exported)" in capsys.readouterr().out
    with pytest.raises(RuntimeChoiceError, match="m.onnx is a model written by export.py and runs on ONNX Runtime"):
        load_auto(artifacts["onnx"], runtime="openvino")


def _block_folder(folder):
    """Makes ``folder`` unwritable; as root, whom permissions do not stop, the cache
    folder's name is taken by a file instead."""
    from utils.export.auto_runtime import CACHE_FOLDER

    folder.chmod(0o555)
    if os.geteuid() == 0:
        folder.chmod(0o755)
        (folder / CACHE_FOLDER).write_text("not a folder")


@pytest.mark.slow
def test_changed_or_corrupt_exports_are_made_again(model, tmp_path, exports_made, monkeypatch, caplog, capsys):
    import shutil

    from utils.checkpoint import save_model
    from utils.export.auto_runtime import CACHE_FOLDER, open_on_runtime as load_auto
    from utils.predict.predictor import Predictor

    folder = tmp_path / "readonly"
    folder.mkdir()
    checkpoint = folder / "tiny.keras"
    shutil.copy(model[1], checkpoint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
    _block_folder(folder)
    # ONNX Runtime: the cache is the same for every format, and ONNX exports fastest.
    first = load_auto(checkpoint, runtime="onnxruntime", **SETTINGS)
    assert len(exports_made) == 1 and (tmp_path / "user_cache") in first.path.parents
    assert "cannot be written" in capsys.readouterr().out
    assert load_auto(checkpoint, runtime="onnxruntime", **SETTINGS).path == first.path
    assert len(exports_made) == 1

    # A damaged file is not trusted: the entry is exported again.
    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        again = load_auto(checkpoint, runtime="onnxruntime", **SETTINGS)
    assert len(exports_made) == 2 and again.path == first.path
    assert "incomplete or altered; exporting again" in caplog.text

    # The folder writable again and the checkpoint trained further: a new export beside
    # it, and the entry of the earlier content is removed.
    folder.chmod(0o755)
    if (folder / CACHE_FOLDER).is_file():
        (folder / CACHE_FOLDER).unlink()
    net = model[0]
    layer = net.get_layer("head_p3_pred")
    bias = np.asarray(layer.bias)
    layer.bias.assign(bias + 0.5)
    try:
        save_model(net, checkpoint)
        later = load_auto(checkpoint, runtime="onnxruntime", **SETTINGS)
        _assert_same(Predictor(net, **SETTINGS), later, _images(3, seed=5))
    finally:
        layer.bias.assign(bias)
    assert len(exports_made) == 3 and later.path.parent.parent == folder / CACHE_FOLDER
    assert not first.path.parent.exists()


@pytest.mark.slow
def test_predict_and_get_map_run_a_checkpoint_on_the_fast_runtime(auto_checkpoint, data, tmp_path):
    folder, annotations = data
    # The settings of the export cached above: both scripts reuse it.
    settings = ["--conf", SETTINGS["conf"], "--nms-iou", SETTINGS["nms_iou"], "--max-boxes", SETTINGS["max_boxes"]]
    result = _run("predict.py", "--model", auto_checkpoint, "--source", folder / "img0.jpg", "--out",
                  tmp_path / "pred", "--save-txt", *settings)
    assert result.returncode == 0, result.stderr
    assert "Runtime: OpenVINO" in result.stdout and "matches the Keras model on img0.jpg" in result.stdout
    assert (tmp_path / "pred" / "labels" / "img0.txt").is_file()
    result = _run("get_map.py", "--model", auto_checkpoint, "--annotations", annotations, "--out", tmp_path / "map",
                  "--no-plots", *settings)
    assert result.returncode == 0, result.stderr
    assert "Runtime: OpenVINO fp32 (auto; float32 for evaluation)" in result.stdout
    assert json.loads((tmp_path / "map" / "results.json").read_text())["num_images"] == 6


# --- the shared map back to the image ---------------------------------------------------


@pytest.mark.parametrize("letterboxed", [True, False])
def test_boxes_to_image_matches_the_decoder(letterboxed):
    import tensorflow as tf

    from utils.decode import YoloDecoder
    from utils.image import boxes_to_image

    rng = np.random.default_rng(0)
    anchors = rng.uniform(4, 60, (9, 2)).astype("float32")
    heads = [rng.normal(0, 1.5, (2, SIZE // s, SIZE // s, 3 * 8)).astype("float32") for s in (32, 16, 8)]
    shapes = np.array([[120, 200], [300, 90]], np.int32)
    decoder = YoloDecoder(anchors, 3, SIZE, conf=0.2, letterbox=letterboxed)
    in_image = decoder(heads, tf.constant(shapes))
    in_input = decoder(heads)
    for i, hw in enumerate(shapes):
        n = int(in_image["valid"][i])
        assert n == int(in_input["valid"][i]) > 0
        mapped = boxes_to_image(np.asarray(in_input["boxes"][i, :n]), hw, SIZE, letterboxed)
        np.testing.assert_allclose(mapped, np.asarray(in_image["boxes"][i, :n]), atol=1e-3)
