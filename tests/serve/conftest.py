"""Fixtures of the serve tests: the tiny detector loaded as predict.py loads it, and
real uvicorn servers on free loopback ports, run in a thread of the test process."""

import contextlib
import socket
import threading
import time

import pytest
import requests

from tests.helpers import varied_images

# The settings every served model of these tests starts from (a low conf: many boxes to compare).
CONF, NMS_IOU, MAX_BOXES = 0.2, 0.3, 20
STARTUP_TIMEOUT_S = 20


def predict_py_predictor(model, **settings):
    """The predictor predict.py runs for ``model`` on TensorFlow with these tests' settings:
    ``open_on_runtime`` with the options predict.open_predictor passes for a checkpoint."""
    from utils.config import DEFAULT_AGNOSTIC_NMS
    from utils.export.auto_runtime import open_on_runtime

    options = dict(conf=CONF, nms_iou=NMS_IOU, max_boxes=MAX_BOXES, **settings)
    return open_on_runtime(str(model), runtime="tf", classes_path=None, input_size=None, anchors_path=None,
                           letterbox=True, agnostic_nms=DEFAULT_AGNOSTIC_NMS, **options)


@pytest.fixture(scope="session")
def served_model(tiny_detector):
    """The tiny checkpoint as a ``ServedModel`` on TensorFlow, loaded as serve.py loads it."""
    from utils.config import DEFAULT_AGNOSTIC_NMS
    from utils.serve.model import Thresholds
    from utils.serve.server import open_served_model

    served, _ = open_served_model(tiny_detector[1], "tf", "detector", Thresholds(CONF, NMS_IOU, MAX_BOXES),
                                  agnostic_nms=DEFAULT_AGNOSTIC_NMS)
    return served


@pytest.fixture(scope="session")
def images():
    """Six RGB images of 60-200 pixels."""
    return varied_images(6, seed=5)


class LiveServer:
    """A uvicorn server of an application on a free loopback port, in a thread.

    Attributes:
        url: "http://127.0.0.1:PORT".
        port: the port.
    """

    def __init__(self, app):
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self._thread.join(STARTUP_TIMEOUT_S)
        self._socket.close()


@pytest.fixture(scope="session")
def live_server():
    """``live_server(app)``: a context manager running ``app`` on a free loopback port."""
    return LiveServer


@pytest.fixture(scope="module")
def server(served_model):
    """The tiny detector served with the default options (batches of up to 8)."""
    from utils.serve.app import ServeOptions, create_app

    with LiveServer(create_app(served_model, ServeOptions(max_upload_mb=1))) as live:
        yield live


@contextlib.contextmanager
def session(timeout=10):
    """A requests session whose calls default to a timeout."""
    with requests.Session() as http:
        http.request = _with_timeout(http.request, timeout)
        yield http


def _with_timeout(request, timeout):
    def call(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


@pytest.fixture(scope="session")
def triton_repository(tiny_detector, tmp_path_factory):
    """The tiny checkpoint written by export.py --format triton (ONNX, these tests'
    settings in the graph): the model's folder ``<repository>/detector``."""
    import export

    repository = tmp_path_factory.mktemp("repository")
    status = export.main(["--model", str(tiny_detector[1]), "--format", "triton", "--out", str(repository),
                          "--conf", str(CONF), "--nms-iou", str(NMS_IOU), "--max-boxes", str(MAX_BOXES),
                          "--check-images", "2", "--max-batch-size", "8"])
    assert status == 0
    return repository / "detector"
