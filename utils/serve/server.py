"""Running the service: the model loaded as predict.py loads it, the checks of the
address and key, and uvicorn until SIGTERM or Ctrl-C.

On SIGTERM (or Ctrl-C) the server stops taking connections, answers the requests
already in flight, runs the batches already queued, and returns; serve.py then
exits with 0.
"""

import ipaddress
import logging
import os
import signal

import uvicorn

from utils.serve.app import create_app
from utils.serve.model import FLOOR_CONF, ServedModel

log = logging.getLogger(__name__)

API_KEY_ENV = "DETECTOR_API_KEY"
# How long requests in flight get to finish after SIGTERM before their connections are closed.
GRACEFUL_SHUTDOWN_S = 30


class ServeError(ValueError):
    """A server that cannot start as asked; the message says what to change."""


def is_loopback(host):
    """Whether ``host`` (an address or "localhost") only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_for(host, key):
    """The API key to ask for: ``key``, else $DETECTOR_API_KEY, else None; ServeError when
    ``host`` is reachable from other machines and there is no key."""
    key = key or os.environ.get(API_KEY_ENV) or None
    if key is None and not is_loopback(host):
        raise ServeError(f"--host {host} takes connections from other machines: give --api-key KEY or set "
                         f"${API_KEY_ENV}, which every endpoint but the health checks will then ask for")
    return key


def open_served_model(model, runtime, name, thresholds, throughput=True, **loading):
    """The ``ServedModel`` of a checkpoint or export, loaded as predict.py loads it.

    Args:
        model: a checkpoint or an export (as predict.py's --model).
        runtime: predict.py's --runtime.
        name: the model's name in URLs.
        thresholds: the ``Thresholds`` of a request that gives none.
        throughput: on OpenVINO, the copy compiled with several inference streams.
        **loading: further options of ``open_on_runtime`` (classes_path,
            input_size, anchors_path, letterbox, agnostic_nms).

    Returns:
        (ServedModel, workers: how many batches to run side by side).
    """
    from utils.export.auto_runtime import open_on_runtime

    predictor = open_on_runtime(model, runtime=runtime, conf=served_conf(thresholds),
                                nms_iou=thresholds.nms_iou, max_boxes=thresholds.max_boxes, **loading)
    return serve_predictor(predictor, name, thresholds, throughput)


def served_conf(thresholds):
    """The confidence a served model is opened at: low enough for any request's."""
    return min(thresholds.conf, FLOOR_CONF)


def serve_predictor(predictor, name, thresholds, throughput=True):
    """The ``ServedModel`` of an open predictor (opened at ``served_conf``), warmed up;
    returns (ServedModel, workers), as ``open_served_model``."""
    workers, alone = 1, None
    if throughput:
        streams, workers = predictor.for_streams()
        if streams is not predictor:
            log.info("Runtime: up to %d batches run side by side on %s's throughput setting; a batch running "
                     "alone takes the latency setting", workers, predictor.runtime_name)
            predictor, alone = streams, predictor
    served = ServedModel(predictor, name, thresholds, alone=alone)
    served.warm_up()
    return served, workers


def serve(served, options, host, port, log_level="info"):
    """Serves ``served`` on ``host``:``port`` until SIGTERM or Ctrl-C; returns when done."""
    config = uvicorn.Config(create_app(served, options), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False)
    server = uvicorn.Server(config)
    # uvicorn sends the signal that stopped it to the process again once it has shut
    # down; with this handler that ends the run normally instead of killing it.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise ServeError(f"the server could not start on {host}:{port} (see the message above: a port in use?)")

