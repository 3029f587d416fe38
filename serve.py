"""Serves a trained detector over HTTP, for programs in any language and for a browser.

The model is loaded as predict.py loads it (a checkpoint on --runtime, or any model
written by export.py) and served by uvicorn on 127.0.0.1:8000 unless told otherwise.

Endpoints:
  POST /v1/detect          an image (JPEG, PNG, BMP, WebP) as the body or a multipart file
                           field; query parameters conf, nms_iou, max_boxes; JSON back with
                           the boxes in the image's pixels, class ids and names, scores,
                           the image size and the time spent
  GET  /v1/model           the model's name, classes, input size, runtime and defaults
  /v2/...                  the Open Inference Protocol (KServe v2) as Triton, OpenVINO
                           Model Server and KServe speak it: GET /v2/health/live,
                           /v2/health/ready, /v2/models/NAME, POST /v2/models/NAME/infer
                           with the tensors of the ONNX export (input "images": uint8
                           letterboxed (B, S, S, 3); outputs boxes, scores, classes, count
                           and the raw heads)
  GET  /                   a browser page: pick or drop an image or start the webcam
  GET  /metrics            Prometheus metrics

Requests that arrive together run as one batch (--max-batch, --max-wait-ms), in
threads of their own, so that health checks answer while the model works. An address
other than loopback needs --api-key (or $DETECTOR_API_KEY), asked for by every
endpoint but the health checks. SIGTERM lets the requests in flight finish, then
exits with 0.

Exit status: 0 stopped with SIGTERM; 1 the address cannot be bound; 2 bad arguments,
model, classes or anchors file, or a public address without a key; 130 Ctrl-C.

Examples:
  python serve.py --model logs/best.keras
  python serve.py --model logs/best.onnx --port 9000 --max-batch 16
  DETECTOR_API_KEY=secret python serve.py --model logs/best.keras --host 0.0.0.0
  curl -F image=@street.jpg 'http://127.0.0.1:8000/v1/detect?conf=0.4'
"""

import argparse
import logging
import sys

from utils.cli import docstring_parser, fraction, input_size, int_at_least
from utils.config import CHECKPOINT_SUFFIXES, DEFAULT_AGNOSTIC_NMS, DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def positive_number(text):
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def build_parser():
    """The command-line parser (every option documented in --help)."""
    from utils.export.auto_runtime import RUNTIMES
    from utils.export.triton import DEFAULT_MODEL_NAME
    from utils.serve.app import ServeOptions
    from utils.serve.server import API_KEY_ENV

    defaults = ServeOptions()
    parser = docstring_parser(__doc__)
    parser.add_argument("--model", required=True,
                        help="trained checkpoint (.keras, or .weights.h5 with its .json beside it), or a model "
                             "written by export.py (.onnx, .tflite, .xml or a SavedModel folder)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs a checkpoint, as for predict.py: auto (default) exports it once to the "
                             "fastest runtime of this CPU and checks it against the Keras model; tf runs the Keras "
                             "model; onnxruntime, openvino and tflite export to that runtime")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only); any other, such as "
                             f"0.0.0.0, needs --api-key or ${API_KEY_ENV}")
    parser.add_argument("--port", type=int_at_least(0), default=8000,
                        help="port to listen on (default 8000; 0 picks a free one)")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME,
                        help=f"the model's name in /v2/models/NAME (default {DEFAULT_MODEL_NAME}, the name "
                             "export.py --format triton gives, so one client talks to both)")
    parser.add_argument("--api-key",
                        help=f"key every endpoint but the health checks asks for, as 'Authorization: Bearer KEY', "
                             f"'X-API-Key: KEY' or a browser's password (default ${API_KEY_ENV}; none on loopback)")
    parser.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                        help="let browser pages of ORIGIN (e.g. https://app.example.com) call the server; repeat "
                             "for several (default: none, CORS off)")
    parser.add_argument("--classes",
                        help="class names file, one a line (default: the names in the model); same count")
    parser.add_argument("--input-size", type=input_size,
                        help="network input side, a multiple of 32 (default: the model's)")
    parser.add_argument("--anchors", help="anchors file, one line 'w,h, w,h, ...' (default: the model's)")
    parser.add_argument("--conf", type=fraction,
                        help="lowest score kept when a request gives no conf (default: the best-F1 confidence "
                             "training found for the checkpoint, in <model stem>.eval.json beside it; "
                             f"{DEFAULT_CONF} without one)")
    parser.add_argument("--nms-iou", type=fraction, default=DEFAULT_NMS_IOU,
                        help=f"NMS IoU when a request gives no nms_iou (default {DEFAULT_NMS_IOU})")
    parser.add_argument("--max-boxes", type=int_at_least(1), default=DEFAULT_MAX_BOXES,
                        help=f"boxes kept per class when a request gives no max_boxes (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--agnostic-nms", action=argparse.BooleanOptionalAction, default=None,
                        help="one NMS over all classes (default: an export's own setting, else "
                             f"{'on' if DEFAULT_AGNOSTIC_NMS else 'off'}), as for predict.py")
    parser.add_argument("--no-letterbox", action="store_true",
                        help="resize images to the input square ignoring their aspect ratio (a model trained so)")
    parser.add_argument("--max-batch", type=int_at_least(1), default=defaults.max_batch,
                        help=f"most images run in one network call (default {defaults.max_batch}; 1: no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="how long a batch waits for requests still being received or decoded, in "
                             f"milliseconds (default {defaults.max_wait_ms:g}); requests already queued join without "
                             "waiting, and a request with none on its way does not wait")
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True,
                        help="on OpenVINO, compile for throughput with several inference streams and run that many "
                             "batches side by side, as video files do (default on); --no-throughput: one stream "
                             "using every core, the lowest latency for one client")
    parser.add_argument("--max-upload-mb", type=positive_number, default=defaults.max_upload_mb,
                        help=f"largest request body in MiB; larger ones get 413 before they are read (default "
                             f"{defaults.max_upload_mb:g})")
    parser.add_argument("--max-pixels", type=int_at_least(1), default=defaults.max_pixels,
                        help="largest image (width x height) decoded; larger ones get 413, a guard against "
                             f"decompression bombs (default {defaults.max_pixels:,}, PIL's limit)")
    parser.add_argument("--timeout", type=positive_number, default=defaults.timeout_s,
                        help=f"longest a request may take, body and inference, in seconds (default "
                             f"{defaults.timeout_s:g}); slower ones get 408 or 504")
    parser.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info",
                        help="uvicorn's log level (default info: one line per request)")
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from utils.api.detector import Detector
    from utils.checkpoint import CheckpointError
    from utils.eval.operating_point import default_conf
    from utils.export.auto_runtime import RuntimeChoiceError
    from utils.predict.options import PredictOptions
    from utils.serve.app import ServeOptions
    from utils.serve.model import Thresholds
    from utils.serve.server import ServeError, api_key_for, serve, serve_predictor, served_conf

    try:
        api_key = api_key_for(args.host, args.api_key)
        if args.max_wait_ms < 0:
            raise ServeError(f"--max-wait-ms must be 0 or more, got {args.max_wait_ms}")
        if args.conf is None:
            args.conf, origin = default_conf(args.model, DEFAULT_CONF)
            print(f"--conf {args.conf:.3f}: {origin}")
        agnostic = args.agnostic_nms
        if agnostic is None and args.model.endswith(CHECKPOINT_SUFFIXES):
            agnostic = DEFAULT_AGNOSTIC_NMS
        thresholds = Thresholds(args.conf, args.nms_iou, args.max_boxes)
        detector = Detector(args.model, PredictOptions(
            runtime=args.runtime, conf=served_conf(thresholds), nms_iou=args.nms_iou, max_boxes=args.max_boxes,
            input_size=args.input_size, classes=args.classes, anchors=args.anchors,
            letterbox=not args.no_letterbox, agnostic_nms=agnostic))
        served, workers = serve_predictor(detector.predictor, args.name, thresholds, throughput=args.throughput)
        options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, workers=workers,
                               max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, timeout_s=args.timeout,
                               api_key=api_key, cors=args.cors)
    except (ServeError, CheckpointError, RuntimeChoiceError, FileNotFoundError, ValueError) as exc:
        # ArtifactError and ClassCountError are ValueErrors, as are bad classes and anchors files.
        print(f"serve.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        serve(served, options, args.host, args.port, log_level=args.log_level)
    except ServeError as exc:
        print(f"serve.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopped with Ctrl-C.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
