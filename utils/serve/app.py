"""The FastAPI application: the endpoints, the API key, CORS, limits and metrics.

Endpoints:

* ``POST /v1/detect``: an image (JPEG, PNG, BMP, WebP) as the raw body or as a
  multipart file field; ``conf``, ``nms_iou`` and ``max_boxes`` query parameters;
  JSON with the boxes in the image's own pixels, class ids and names, scores, the
  image size and the time spent.
* ``GET /v1/model``: the model's name, classes, input size, runtime and defaults.
* The Open Inference Protocol (``utils.serve.protocol``): ``GET /v2``,
  ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``,
  ``/v2/models/{name}/ready`` and ``POST /v2/models/{name}/infer`` (also under
  ``/versions/1``).
* ``GET /``: the browser page; ``GET /metrics``: Prometheus text format.

Every endpoint but the health checks asks for the API key when the server has one:
``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or HTTP Basic with KEY as the
password (how a browser sends it after asking the person). Errors are JSON
``{"error": message}``, the v2 protocol's form.
"""

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from utils.serve.batcher import Batcher
from utils.serve.metrics import Metrics
from utils.serve.model import TENSOR_KEY, Thresholds
from utils.serve.protocol import HEADER_LENGTH, ProtocolError, infer_response, parse_infer_request, tensor_specs
from utils.serve.uploads import UploadError, decode_image

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
# The status answered to a client that went away before its request was read (as nginx counts it).
CLIENT_CLOSED = 499
# Paths answered without the API key: what orchestrators probe.
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
MEGABYTE = 1 << 20
# Most images one v2 request may hold.
MAX_V2_IMAGES = 64


@dataclass
class ServeOptions:
    """How the service answers (the options of serve.py).

    Attributes:
        max_batch: most images (or v2 requests) run in one network call; 1: no batching.
        max_wait_ms: how long the first request of a batch waits for others.
        workers: threads running batches side by side (OpenVINO's streams).
        max_upload_mb: largest request body, in MiB (413 beyond it).
        max_pixels: largest width × height decoded (413 beyond it).
        timeout_s: longest a request may take, from its first byte to its answer.
        api_key: the key every endpoint but the health checks asks for (None: none).
        cors: origins allowed to call from a browser page of theirs (none: CORS off).
    """

    max_batch: int = 8
    max_wait_ms: float = 2.0
    workers: int = 1
    max_upload_mb: float = 20.0
    max_pixels: int = 89_478_485
    timeout_s: float = 30.0
    api_key: str = None
    cors: list = field(default_factory=list)


def create_app(served, options):
    """The application serving ``served`` (a ``ServedModel``) with ``options`` (``ServeOptions``)."""
    metrics = Metrics(served.name, served.runtime, served.precision, served.input_size)

    def run_batch(key, payloads):
        started = time.perf_counter()
        results = served.run(key, payloads)
        metrics.observe_batch(len(payloads), time.perf_counter() - started)
        return results

    state = {}

    async def lifespan(app):
        sizes = served.batch_sizes(options.max_batch)
        state["batcher"] = Batcher(run_batch, options.max_batch, options.max_wait_ms / 1000, options.workers,
                                   sizes=sizes, on_start=(lambda: served.warm_up(sizes)) if sizes else None)
        log.info("Serving %s (%s %s, input %d) with batches of up to %d", served.name, served.runtime,
                 served.precision, served.input_size, options.max_batch)
        try:
            yield
        finally:
            # Requests still running have been answered: uvicorn waits for them first.
            await asyncio.to_thread(state.pop("batcher").close, options.timeout_s)

    app = FastAPI(title="Object detector", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    limit = int(options.max_upload_mb * MEGABYTE)
    page_html = PAGE.read_text(encoding="utf-8")

    @contextlib.contextmanager
    def arriving():
        """While a request's body is read and decoded: the batcher waits for it (``Batcher.arriving``)."""
        batcher = state.get("batcher")
        if batcher is None:
            yield None
            return
        with batcher.arriving() as arrival:
            yield arrival

    async def submit(key, payload, arrival=None):
        batcher = state.get("batcher")
        if batcher is None:
            return _error(503, "the server is shutting down")
        future = batcher.submit(key, payload, arrival)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), options.timeout_s)
        except TimeoutError:
            future.cancel()
            return _error(504, f"no answer from the model within {options.timeout_s:g} s (--timeout)")

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request, exc):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"bad query parameters: {problems}")

    @app.exception_handler(UploadError)
    async def bad_upload(request, exc):
        return _error(exc.status, exc.message)

    @app.exception_handler(ProtocolError)
    async def bad_v2_request(request, exc):
        return _error(exc.status, exc.message)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request, exc):
        return Response(status_code=CLIENT_CLOSED)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(page_html)

    @app.get("/v1/model")
    async def model_info():
        return {"name": served.name, "classes": served.class_names, "input_size": served.input_size,
                "runtime": served.runtime, "precision": served.precision,
                "defaults": vars(served.defaults), "lowest_conf_by_filtering": served.predictor.conf,
                "max_upload_mb": options.max_upload_mb}

    @app.post("/v1/detect")
    async def detect(request: Request, conf: float = None, nms_iou: float = None, max_boxes: int = None):
        started = time.perf_counter()
        thresholds = _thresholds(served.defaults, conf, nms_iou, max_boxes)
        with arriving() as arrival:
            data = await _read_image_body(request, limit, options.timeout_s)
            received = time.perf_counter()
            image = await asyncio.to_thread(decode_image, data, options.max_pixels)
            decoded = time.perf_counter()
            found = await submit(served.key_for(thresholds), (image, thresholds.conf), arrival)
        if isinstance(found, Response):
            return found
        done = time.perf_counter()
        height, width = image.shape[:2]
        return {
            "model": served.name,
            "image": {"width": width, "height": height},
            "detections": [
                {"box": [float(v) for v in box], "class_id": int(cls), "class_name": served.class_names[int(cls)],
                 "score": float(score)}
                for box, score, cls in zip(found.boxes, found.scores, found.classes)
            ],
            "settings": vars(thresholds),
            "time_ms": {"receive": _ms(received - started), "decode": _ms(decoded - received),
                        "inference": _ms(done - decoded), "total": _ms(done - started)},
        }

    @app.get("/v2")
    async def server_metadata():
        return {"name": "effyolo", "version": "1", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if not _ready():
            return _error(503, "not ready: the server is starting or shutting down")
        return {"ready": True}

    def _ready():
        batcher = state.get("batcher")
        return batcher is not None and batcher.ready.is_set()

    def check_model(name, version=None):
        if name != served.name:
            raise ProtocolError(f"unknown model {name!r}; this server serves {served.name!r}", status=404)
        if version not in (None, "", "1"):
            raise ProtocolError(f"model {name!r} has version 1 only, not {version!r}", status=404)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = None):
        check_model(name, version)
        inputs, outputs = tensor_specs(served.input_size, len(served.class_names))
        return {"name": served.name, "versions": ["1"], "platform": f"effyolo_{served.runtime}",
                "inputs": inputs, "outputs": outputs}

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = None):
        check_model(name, version)
        if not _ready():
            return _error(503, f"model {served.name!r} is not ready yet")
        return {"name": served.name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = None):
        check_model(name, version)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise ProtocolError("compressed requests are not accepted; send the request uncompressed", status=415)
        with arriving() as arrival:
            body = await _read_body(request, limit, options.timeout_s)
            request_id, images, wanted = parse_infer_request(body, request.headers.get(HEADER_LENGTH),
                                                             served.input_size, MAX_V2_IMAGES)
            arrays = await submit(TENSOR_KEY, (images, [name for name, _ in wanted]), arrival)
        if isinstance(arrays, Response):
            return arrays
        content, header_length = infer_response(served.name, request_id, arrays, wanted)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(header_length)})

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.add_middleware(Guard, api_key=options.api_key, metrics=metrics)
    if options.cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", HEADER_LENGTH],
                           expose_headers=[HEADER_LENGTH])
    return app


def _ms(seconds):
    return round(1000 * seconds, 2)


def _error(status, message):
    return JSONResponse({"error": message}, status_code=status)


def _thresholds(defaults, conf, nms_iou, max_boxes):
    """The request's Thresholds, each missing one the server's; UploadError(400) out of range."""
    thresholds = Thresholds(defaults.conf if conf is None else conf, defaults.nms_iou if nms_iou is None else nms_iou,
                            defaults.max_boxes if max_boxes is None else max_boxes)
    for name in ("conf", "nms_iou"):
        value = getattr(thresholds, name)
        if not 0.0 <= value <= 1.0:
            raise UploadError(400, f"{name} must be from 0 to 1, got {value}")
    if not 1 <= thresholds.max_boxes <= 1000:
        raise UploadError(400, f"max_boxes must be from 1 to 1000, got {thresholds.max_boxes}")
    return thresholds


async def _read_body(request, limit, timeout_s):
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes
    (from Content-Length before reading, else while reading), and with 408 when it takes
    longer than ``timeout_s`` to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"the request body is {int(declared):,} bytes, more than this server's limit of "
                               f"{limit:,} (--max-upload-mb)")

    async def read():
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise UploadError(413, f"the request body is more than this server's limit of {limit:,} bytes "
                                       "(--max-upload-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise UploadError(408, f"the request body did not arrive within {timeout_s:g} s (--timeout)") from None


async def _read_image_body(request, limit, timeout_s):
    """The image bytes of a /v1/detect request: the body, or its first file field when multipart."""
    data = await _read_body(request, limit, timeout_s)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return data

    async def stream():
        yield data

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
    except MultiPartException as exc:
        raise UploadError(400, f"malformed multipart body ({exc.message})") from None
    try:
        files = [value for value in form.values() if not isinstance(value, str)]
        if not files:
            raise UploadError(400, "the multipart body has no file field; send the image as a file (e.g. "
                                   "curl -F image=@photo.jpg)")
        return await files[0].read()
    finally:
        await form.close()


def _authorized(headers, api_key):
    """Whether the request's headers carry ``api_key`` (Bearer, X-API-Key or Basic password)."""
    offered = []
    if "x-api-key" in headers:
        offered.append(headers["x-api-key"])
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            offered.append(base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2])
        except (binascii.Error, UnicodeDecodeError):
            pass
    return any(hmac.compare_digest(key.encode(), api_key.encode()) for key in offered)


class Guard:
    """ASGI middleware: the API key check, and the count and latency of every request.

    Args:
        app: the application inside.
        api_key: the key asked for (None: no check).
        metrics: the ``Metrics`` to count in.
    """

    def __init__(self, app, api_key, metrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key and not self._open(scope) and not _authorized(_headers(scope), self.api_key):
                response = _error(401, "this server needs an API key: send 'Authorization: Bearer KEY' or "
                                       "'X-API-Key: KEY'")
                response.headers["WWW-Authenticate"] = 'Basic realm="detector", charset="UTF-8"'
                await response(scope, receive, send_counted)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            self.metrics.observe_request(_endpoint(scope), scope["method"], status[0],
                                         time.perf_counter() - started)

    @staticmethod
    def _open(scope):
        return scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS"


def _headers(scope):
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}


def _endpoint(scope):
    """The route template a request matched (e.g. ``/v2/models/{name}/infer``), else "other"."""
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route.path
    return "other"
