"""The HTTP service on a real uvicorn server: /v1/detect against predict.py's own
predictor, the v2 protocol through Triton's HTTP client, health, metrics, the page,
batching off the event loop, the API key, CORS and every kind of bad input."""

import concurrent.futures
import io
import socket
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import CONF, MAX_BOXES, NMS_IOU, predict_py_predictor, session

BOX_TOLERANCE = 1e-3  # pixels: the same code on the same pixels
SCORE_TOLERANCE = 1e-5


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image):
    ok, data = cv2.imencode(".jpg", image[..., ::-1])
    assert ok
    return data.tobytes()


def _assert_same(answer, expected, class_names):
    """A /v1/detect answer holds exactly the Detections ``expected``."""
    found = answer["detections"]
    assert len(found) == len(expected), (len(found), len(expected))
    if not found:
        return
    np.testing.assert_allclose([d["box"] for d in found], expected.boxes, atol=BOX_TOLERANCE)
    np.testing.assert_allclose([d["score"] for d in found], expected.scores, atol=SCORE_TOLERANCE)
    assert [d["class_id"] for d in found] == expected.classes.tolist()
    assert [d["class_name"] for d in found] == [class_names[c] for c in expected.classes]


@pytest.fixture(scope="module")
def reference(tiny_detector):
    """The predictor predict.py runs for the tiny checkpoint at the served settings."""
    return predict_py_predictor(tiny_detector[1])


def test_detect_equals_predict_py(server, images, reference, tmp_path):
    """Raw PNG bodies, multipart JPEG uploads: the boxes, scores and classes of predict.py."""
    from utils.image import load_image

    total = 0
    with session() as http:
        for i, image in enumerate(images):
            answer = http.post(f"{server.url}/v1/detect", data=_png(image),
                               headers={"Content-Type": "image/png"}).json()
            assert answer["image"] == {"width": image.shape[1], "height": image.shape[0]}
            assert answer["settings"] == {"conf": CONF, "nms_iou": NMS_IOU, "max_boxes": MAX_BOXES}
            assert answer["time_ms"]["total"] > 0
            expected = reference.predict(image)
            _assert_same(answer, expected, reference.class_names)
            total += len(expected)
            # A JPEG as a file field, compared with predict.py reading the same file.
            path = tmp_path / f"image{i}.jpg"
            path.write_bytes(_jpeg(image))
            answer = http.post(f"{server.url}/v1/detect", files={"image": ("photo.jpg", path.read_bytes(),
                                                                            "image/jpeg")}).json()
            _assert_same(answer, reference.predict(load_image(path)), reference.class_names)
    assert total >= len(images), "the tiny detector should find boxes to compare"


def test_detect_query_parameters(server, images, reference):
    """Other thresholds per request give the detections of predict.py's predictor made
    with them: a higher conf by filtering, other NMS settings by a predictor of their own."""
    from utils.predict.predictor import Predictor

    # (A higher conf than the served predictor's is answered by filtering: test_detect_equals_predict_py.)
    for query in (dict(conf=0.15, nms_iou=0.6, max_boxes=3),):
        settings = {"conf": CONF, "nms_iou": NMS_IOU, "max_boxes": MAX_BOXES, **query}
        expected = Predictor(reference.model, agnostic_nms=reference.agnostic_nms, **settings)
        with session(timeout=60) as http:
            for image in images[:3]:
                answer = http.post(f"{server.url}/v1/detect", params=query, data=_png(image)).json()
                assert answer["settings"] == settings
                _assert_same(answer, expected.predict(image), reference.class_names)


def test_v2_with_tritonclient(server, served_model, images, reference):
    """Triton's own HTTP client: health, metadata and infer on a batch of letterboxed
    images; the detections, mapped back to each image, are predict.py's."""
    import tritonclient.http as httpclient

    from utils.image import boxes_to_image

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=30)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("detector")
        metadata = client.get_model_metadata("detector")
        size = served_model.input_size
        assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, size, size, 3]}]
        assert [o["name"] for o in metadata["outputs"]] == ["boxes", "scores", "classes", "count", "raw_s32",
                                                            "raw_s16", "raw_s8"]
        batch = served_model.predictor.batch(images)
        tensor = httpclient.InferInput("images", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        result = client.infer("detector", [tensor])
        count = result.as_numpy("count")
        assert count.dtype == np.int32 and count.shape == (len(images),)
        boxes, scores, classes = (result.as_numpy(name) for name in ("boxes", "scores", "classes"))
        for i, image in enumerate(images):
            expected = reference.predict(image)
            n = int(count[i])
            assert n == len(expected)
            np.testing.assert_allclose(boxes_to_image(boxes[i, :n], image.shape[:2], size), expected.boxes,
                                       atol=BOX_TOLERANCE)
            np.testing.assert_allclose(scores[i, :n], expected.scores, atol=SCORE_TOLERANCE)
            assert classes[i, :n].tolist() == expected.classes.tolist()
            assert not scores[i, n:].any(), "rows past count are zero, as in an export"
        raw = result.as_numpy("raw_s8")
        assert raw.shape == (len(images), size // 8, size // 8, 3 * (5 + len(served_model.class_names)))
        # Asking for some outputs, in JSON rather than binary.
        wanted = [httpclient.InferRequestedOutput("count", binary_data=False)]
        again = client.infer("detector", [tensor], outputs=wanted)
        np.testing.assert_array_equal(again.as_numpy("count"), count)
        assert again.as_numpy("boxes") is None
    finally:
        client.close()


def test_v2_bad_requests(server, served_model):
    """Wrong shape, wrong datatype, unknown model or output, malformed JSON: 400 or 404
    with a message, and the server goes on."""
    size = served_model.input_size
    url = f"{server.url}/v2/models/detector/infer"

    def request(shape, datatype="UINT8", data=None):
        count = int(np.prod(shape))
        return {"inputs": [{"name": "images", "shape": shape, "datatype": datatype,
                            "data": data if data is not None else [0] * count}]}

    with session() as http:
        cases = [
            (url, request([1, size, size + 32, 3]), 400, f"[B, {size}, {size}, 3]"),
            (url, request([1, size, size, 3], "FP32"), 400, "UINT8"),
            (url, request([1, size, size, 3], data=[0] * 5), 400, "values"),
            (url, request([1, size, size, 3], data=[300] * (size * size * 3)), 400, "0 to 255"),
            (url, {"inputs": [{"name": "input_1", "shape": [1], "datatype": "UINT8", "data": [0]}]}, 400, "images"),
            (url, {**request([1, size, size, 3]), "outputs": [{"name": "logits"}]}, 400, "unknown output"),
            (f"{server.url}/v2/models/yolo/infer", request([1, size, size, 3]), 404, "unknown model"),
        ]
        for target, body, status, words in cases:
            answer = http.post(target, json=body)
            assert answer.status_code == status, (body.get("inputs"), answer.text)
            assert words in answer.json()["error"]
        answer = http.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and "JSON" in answer.json()["error"]
        ok = http.post(url, json=request([1, size, size, 3]))
        assert ok.status_code == 200 and [o["name"] for o in ok.json()["outputs"]][0] == "boxes"


def _raw_http(port, head, body=b"", read=True, timeout=10):
    """Sends ``head`` and ``body`` on a plain socket; returns (status, response text) or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        if not read:
            return None
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in header.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(header.split(b" ")[1]), rest.decode("utf-8", "replace")


def _huge_png_header(width, height):
    """A PNG whose header says width × height but holds almost no pixel data."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def test_bad_uploads(server, images):
    """Each bad upload gets its status and message; the server goes on serving."""
    good = _png(images[0])
    jpeg = _jpeg(images[1])
    with session() as http:
        url = f"{server.url}/v1/detect"
        cases = [
            (b"this is not an image\n" * 10, 415, "not an image"),
            (jpeg[:300], 400, "truncated"),
            (jpeg[: len(jpeg) * 2 // 3], 400, "truncated"),
            (_huge_png_header(20000, 20000), 413, "decompression"),
            (b"", 400, "no image"),
            (_gif(), 415, "JPEG, PNG, BMP, WebP"),
        ]
        for body, status, words in cases:
            answer = http.post(url, data=body, headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == status, answer.text
            assert words in answer.json()["error"]
        text_as_jpg = http.post(url, files={"image": ("notes.jpg", b"shopping list: eggs", "image/jpeg")})
        assert text_as_jpg.status_code == 415
        no_file = http.post(url, files={"note": (None, "photo.jpg")})
        assert no_file.status_code == 400 and "file field" in no_file.json()["error"]
        bad_queries = (({"conf": "high"}, "conf"), ({"conf": 1.5}, "from 0 to 1"), ({"max_boxes": 0}, "max_boxes"))
        for query, words in bad_queries:
            answer = http.post(url, params=query, data=good)
            assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    # Over the 1 MiB limit: refused from the Content-Length, before the body is sent at all.
    head = (b"POST /v1/detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000000\r\n\r\n")
    status, text = _raw_http(server.port, head)
    assert status == 413 and "limit" in text
    # The same without a Content-Length (chunked): refused while reading.
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(block), block) for block in [b"\x00" * 65536] * 24) + b"0\r\n\r\n"
    head = b"POST /v1/detect HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, text = _raw_http(server.port, head, chunked)
    assert status == 413 and "limit" in text
    # A client that goes away in the middle of its upload.
    head = (b"POST /v1/detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(good))
    _raw_http(server.port, head, good[: len(good) // 2], read=False)
    time.sleep(0.2)
    with session() as http:
        assert http.get(f"{server.url}/v2/health/live").status_code == 200
        answer = http.post(f"{server.url}/v1/detect", data=good)
        assert answer.status_code == 200 and answer.json()["image"]["width"] == images[0].shape[1]
        metrics = _samples(http.get(f"{server.url}/metrics").text)
    counted = {dict(labels)["status"] for (name, labels) in metrics
               if name == "detector_requests_total" and dict(labels)["endpoint"] == "/v1/detect"}
    assert {"200", "400", "413", "415", "499"} <= counted, counted


def _gif():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_page_model_and_metrics(server, served_model):
    """The page is plain HTML and script; /metrics counts requests by endpoint and
    status, with the model and runtime as labels, and the batch sizes."""
    with session() as http:
        page = http.get(server.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/v1/detect" in page.text and "getUserMedia" in page.text and "<script src" not in page.text
        model = http.get(server.url + "/v1/model").json()
        assert model["classes"] == served_model.class_names and model["defaults"]["conf"] == CONF
        http.get(server.url + "/v2/health/ready")
        http.get(server.url + "/nowhere")
        metrics = http.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = _samples(metrics.text)
    model = {"model": "detector", "runtime": "TensorFlow"}
    assert samples[("detector_requests_total", _key(model, endpoint="/v2/health/ready", method="GET",
                                                   status="200"))] >= 1
    assert samples[("detector_requests_total", _key(model, endpoint="other", method="GET", status="404"))] >= 1
    assert samples[("detector_request_duration_seconds_count", _key(model, endpoint="/v1/model"))] >= 1
    assert samples[("detector_batch_size_count", _key(model))] >= 1
    assert samples[("detector_inference_seconds_count", _key(model))] >= 1
    info = _key(model, precision="fp32", input_size=str(served_model.input_size))
    assert samples[("detector_model_info", info)] == 1


def _key(labels, **more):
    return tuple(sorted({**labels, **more}.items()))


def _samples(text):
    """{(sample name, sorted label items): value} of a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


class _Gate:
    """Wraps a predictor so that each batch waits until the test opens the gate, and records batch sizes."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.open = threading.Event()
        self.entered = threading.Event()
        self.sizes = []

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict_batch(self, images):
        self.sizes.append(len(images))
        self.entered.set()
        assert self.open.wait(20), "the test never opened the gate"
        return self._predictor.predict_batch(images)


def test_batching_off_the_event_loop(served_model, images, live_server, reference):
    """While the model works, health checks answer; the requests that queued meanwhile
    run as one batch, each getting its own detections; a request past --timeout gets
    504 and the server goes on."""
    from utils.serve.app import ServeOptions, create_app
    from utils.serve.model import ServedModel

    gate = _Gate(served_model.predictor)
    gated = ServedModel(gate, "detector", served_model.defaults)
    with live_server(create_app(gated, ServeOptions(max_batch=8, max_wait_ms=1, timeout_s=8))) as live:
        with concurrent.futures.ThreadPoolExecutor(8) as pool, session() as http:
            first = pool.submit(http.post, f"{live.url}/v1/detect", data=_png(images[0]))
            assert gate.entered.wait(10)
            rest = [pool.submit(http.post, f"{live.url}/v1/detect", data=_png(image)) for image in images[1:]]
            started = time.perf_counter()
            assert http.get(f"{live.url}/v2/health/live", timeout=2).status_code == 200
            assert http.get(f"{live.url}/v2/health/ready", timeout=2).status_code == 200
            assert time.perf_counter() - started < 2
            time.sleep(0.3)  # the other requests queue behind the running batch
            gate.open.set()
            answers = [first.result(20).json()] + [f.result(20).json() for f in rest]
        for answer, image in zip(answers, images):
            _assert_same(answer, reference.predict(image), reference.class_names)
        assert gate.sizes[0] == 1 and max(gate.sizes[1:]) == len(images) - 1, gate.sizes
    gate = _Gate(served_model.predictor)
    gated = ServedModel(gate, "detector", served_model.defaults)
    with live_server(create_app(gated, ServeOptions(timeout_s=0.5))) as live, session() as http:
        late = http.post(f"{live.url}/v1/detect", data=_png(images[0]))
        assert late.status_code == 504 and "0.5 s" in late.json()["error"]
        gate.open.set()
        assert http.post(f"{live.url}/v1/detect", data=_png(images[0])).status_code == 200


def test_api_key_and_cors(served_model, images, live_server):
    """With a key, every endpoint but health asks for it (Bearer, X-API-Key or Basic);
    CORS answers only the origins given."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from utils.serve.app import ServeOptions, create_app

    options = ServeOptions(api_key="s3cret", cors=["https://app.example"])
    with live_server(create_app(served_model, options)) as live, session() as http:
        url = f"{live.url}/v1/detect"
        missing = http.post(url, data=_png(images[0]))
        assert missing.status_code == 401 and "API key" in missing.json()["error"]
        assert missing.headers["WWW-Authenticate"].startswith("Basic")
        assert http.post(url, data=_png(images[0]), headers={"X-API-Key": "wrong"}).status_code == 401
        for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
            assert http.post(url, data=_png(images[0]), headers=headers).status_code == 200
        assert http.get(live.url + "/", auth=("anyone", "s3cret")).status_code == 200
        for path in ("/", "/metrics", "/v1/model", "/v2", "/v2/models/detector"):
            assert http.get(live.url + path).status_code == 401, path
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert http.get(live.url + path).status_code == 200, path
        preflight = http.options(url, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                               "Access-Control-Request-Headers": "x-api-key"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = http.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        client = httpclient.InferenceServerClient(url=live.url.removeprefix("http://"))
        try:
            batch = served_model.predictor.batch(images[:1])
            tensor = httpclient.InferInput("images", list(batch.shape), "UINT8")
            tensor.set_data_from_numpy(batch)
            with pytest.raises(InferenceServerException, match="API key"):
                client.infer("detector", [tensor])
            result = client.infer("detector", [tensor], headers={"Authorization": "Bearer s3cret"})
            assert result.as_numpy("count").shape == (1,)
        finally:
            client.close()
    with live_server(create_app(served_model, ServeOptions())) as live, session() as http:
        answer = http.post(f"{live.url}/v1/detect", data=_png(images[0]), headers={"Origin": "https://app.example"})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_public_address_needs_a_key(monkeypatch):
    from utils.serve.server import API_KEY_ENV, ServeError, api_key_for

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert api_key_for("127.0.0.1", None) is None and api_key_for("::1", None) is None
    assert api_key_for("localhost", "k") == "k"
    for host in ("0.0.0.0", "192.168.1.5", "example.com"):
        with pytest.raises(ServeError, match="--api-key"):
            api_key_for(host, None)
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert api_key_for("0.0.0.0", None) == "from-env"
