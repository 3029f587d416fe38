"""Serve stage: a trained detector behind an HTTP service that other programs and a
browser can call.

``server`` loads a checkpoint or an export the way ``predict.py`` does and runs the
FastAPI application of ``app`` on uvicorn. The application answers ``POST
/v1/detect`` (an uploaded image in, boxes in the image's pixels out), the Open
Inference Protocol (KServe v2) over HTTP/JSON with the input and output tensors of
the ONNX export (``protocol``), health checks, Prometheus metrics (``metrics``) and
a browser page (``page.html``). Requests that arrive together are run as one batch
by ``batcher`` in threads of its own, so the event loop keeps answering while the
network works; ``model`` holds the predictor and its variants for other thresholds,
``uploads`` turns request bodies into images with the limits a public service needs.
Imports the shared modules of ``utils`` and the stages ``utils.data``,
``utils.eval``, ``utils.predict`` and ``utils.export``, never ``utils.train``.
"""
