"""export.py --format triton: a model repository whose config.pbtxt is Triton's own
ModelConfig message and whose ONNX model batches; the same client code against
serve.py serving that model."""

import numpy as np
import pytest

from tests.helpers import varied_images
from tests.serve.conftest import CONF

BATCH_SIZES = range(1, 9)


@pytest.fixture(scope="module")
def config(triton_repository):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((triton_repository / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_config_is_a_triton_model_config(config, triton_repository, tiny_detector):
    from tritonclient.grpc import model_config_pb2

    model = tiny_detector[0]
    size = model.input_size
    assert sorted(p.name for p in triton_repository.rglob("*") if p.is_file()) == ["config.pbtxt", "model.onnx"]
    assert config.name == "detector" and config.backend == "onnxruntime" and config.max_batch_size == 8
    assert config.HasField("dynamic_batching")
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    (images,) = config.input
    assert (images.name, images.data_type, list(images.dims)) == ("images", model_config_pb2.TYPE_UINT8,
                                                                  [size, size, 3])
    outputs = {o.name: o for o in config.output}
    assert list(outputs) == ["boxes", "scores", "classes", "count", "raw_s32", "raw_s16", "raw_s8"]
    assert outputs["boxes"].data_type == model_config_pb2.TYPE_FP32 and outputs["boxes"].dims[-1] == 4
    assert outputs["classes"].data_type == model_config_pb2.TYPE_INT32
    assert list(outputs["count"].dims) == [1] and list(outputs["count"].reshape.shape) == []
    assert list(outputs["raw_s8"].dims) == [size // 8, size // 8, 3 * (5 + model.num_classes)]


def test_openvino_variant_config():
    """The OpenVINO IR variant's configuration names its backend, file and parameters."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from utils.export.triton import OPENVINO_PARAMETERS, model_config

    text = model_config("detector_ov", "openvino", 4, 64, [("boxes", "TYPE_FP32", [-1, 4]),
                                                            ("count", "TYPE_INT32", [])])
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (config.backend, config.default_model_filename, config.max_batch_size) == ("openvino", "model.xml", 4)
    assert {key: value.string_value for key, value in config.parameters.items()} == OPENVINO_PARAMETERS
    assert [list(o.dims) for o in config.output] == [[-1, 4], [1]]


def test_model_batches_give_the_detections_of_batch_one(triton_repository):
    """At batch 1 to 8 in ONNX Runtime, each image gets the detections it gets alone."""
    import onnxruntime as ort

    from utils.image import letterbox

    session = ort.InferenceSession(str(triton_repository / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[1]
    batch = np.stack([letterbox(image, size) for image in varied_images(8, seed=11)])
    names = ["boxes", "scores", "classes", "count"]
    alone = [dict(zip(names, session.run(names, {"images": batch[i:i + 1]}))) for i in range(len(batch))]
    assert sum(int(a["count"][0]) for a in alone) > 0
    for size_ in BATCH_SIZES:
        together = dict(zip(names, session.run(names, {"images": batch[:size_]})))
        for i in range(size_):
            n = int(alone[i]["count"][0])
            assert int(together["count"][i]) == n
            np.testing.assert_allclose(together["boxes"][i, :n], alone[i]["boxes"][0, :n], atol=1e-3)
            np.testing.assert_allclose(together["scores"][i, :n], alone[i]["scores"][0, :n], atol=1e-5)
            np.testing.assert_array_equal(together["classes"][i, :n], alone[i]["classes"][0, :n])


def test_same_client_code_against_serve(triton_repository, live_server):
    """Triton's client on serve.py serving the repository's model: the tensors ONNX Runtime gives."""
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from utils.serve.app import ServeOptions, create_app
    from utils.serve.model import Thresholds
    from utils.serve.server import open_served_model

    model = triton_repository / "1" / "model.onnx"
    served, _ = open_served_model(model, "auto", "detector", Thresholds(CONF, 0.3, 20))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = served.predictor.batch(varied_images(3, seed=12))
    names = ["boxes", "scores", "classes", "count", "raw_s16"]
    expected = dict(zip(names, session.run(names, {"images": batch})))
    with live_server(create_app(served, ServeOptions())) as live:
        client = httpclient.InferenceServerClient(url=live.url.removeprefix("http://"), network_timeout=30)
        try:
            tensor = httpclient.InferInput("images", list(batch.shape), "UINT8")
            tensor.set_data_from_numpy(batch)
            result = client.infer("detector", [tensor], outputs=[httpclient.InferRequestedOutput(n) for n in names])
        finally:
            client.close()
    for name in names:
        got = result.as_numpy(name)
        assert got.dtype == expected[name].dtype and got.shape == expected[name].shape, name
        np.testing.assert_allclose(got, expected[name], atol=1e-5, err_msg=name)


def test_existing_model_folder_is_not_written_over(triton_repository, tiny_detector, capsys):
    import export

    marker = triton_repository / "config.pbtxt"
    before = marker.read_bytes()
    status = export.main(["--model", str(tiny_detector[1]), "--format", "triton", "--out",
                          str(triton_repository.parent)])
    assert status == 2 and "already exists" in capsys.readouterr().err
    assert marker.read_bytes() == before
