"""Exports a trained detector for deployment: ONNX, TFLite, SavedModel, OpenVINO, or a Triton model repository.

The artifact takes one input, "images": uint8 (B, S, S, 3) RGB, letterboxed to the
input size (grey 128 borders). ONNX, SavedModel and OpenVINO hold the network,
decoding and NMS and return "boxes" (B, K, 4, xyxy pixels of the input), "scores",
"classes" and "count", with the raw heads "raw_s32", "raw_s16", "raw_s8" beside
them; TFLite holds the network and decoding, and its NMS runs on the host. The
class names, input size, anchors and NMS settings travel in the artifact's
metadata. predict.py and get_map.py run every artifact with --model, all options
included.

--format triton writes a model repository that Triton Inference Server, OpenVINO
Model Server and KServe load as it is: <out>/<name>/config.pbtxt and
<out>/<name>/1/model.onnx (or model.xml with --triton-backend openvino), with a
dynamic batch axis, dynamic batching and a CPU instance group (docs/serving.md).

After writing, the export is run beside the Keras model on a few images (from
--eval or --calib, else drawn ones) and the largest differences are printed; with
--eval the mAP of the Keras model and of the export (and of the float export, for
--int8) are printed too.

Exit status: 0 done; 2 bad arguments, checkpoint or annotation file, a missing
package (the message names the pip line) or a failed conversion.

Examples:
  python export.py --model logs/exp/best.keras --format onnx
  python export.py --model logs/exp/best.keras --format onnx --int8 --calib 2007_train.txt --eval 2007_test.txt
  python export.py --model logs/exp/best.keras --format openvino --bf16
  python export.py --model logs/exp/best.keras --format tflite --input-size 320
  python export.py --model logs/exp/best.keras --format saved_model --out deploy/detector
  python export.py --model logs/exp/best.keras --format onnx --raw
  python export.py --model logs/exp/best.keras --format triton --out model_repository
"""

import logging
import sys

from utils.cli import docstring_parser, fraction, input_size, int_at_least
from utils.config import DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU


def build_parser():
    """The command-line parser (every option documented in --help)."""
    from utils.export.exporter import CHECK_IMAGES, DEFAULT_CALIB_IMAGES, FORMATS
    from utils.export.triton import BACKENDS, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MODEL_NAME

    parser = docstring_parser(__doc__)
    parser.add_argument("--model", required=True,
                        help="trained checkpoint (.keras, or .weights.h5 with its .json beside it)")
    parser.add_argument("--format", required=True, choices=(*FORMATS, "triton"),
                        help="artifact format; triton: a model repository for Triton, OpenVINO Model Server or KServe")
    parser.add_argument("--out",
                        help="artifact path (default: beside the checkpoint, best.keras -> best.onnx, best.tflite, "
                             "best_saved_model/, best.xml, best_triton/ (a repository folder); _int8, _bf16 or _raw "
                             "added for those variants)")
    parser.add_argument("--input-size", type=input_size,
                        help="input side the artifact runs at, a multiple of 32 (default: the checkpoint's)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 static quantization of the network (onnx, openvino), calibrated on --calib")
    parser.add_argument("--calib", metavar="ANNOTATIONS",
                        help="annotation file whose images calibrate --int8 (e.g. the training file)")
    parser.add_argument("--calib-images", type=int_at_least(1), default=DEFAULT_CALIB_IMAGES,
                        help=f"calibration images drawn from --calib (default {DEFAULT_CALIB_IMAGES})")
    parser.add_argument("--eval", metavar="ANNOTATIONS",
                        help="annotation file on which the mAP of the Keras model and of the export are printed")
    parser.add_argument("--bf16", action="store_true",
                        help="openvino: run in bfloat16 (faster on CPUs with AMX or AVX-512 BF16)")
    parser.add_argument("--raw", action="store_true",
                        help="export the raw head tensors only, without decoding and NMS")
    parser.add_argument("--conf", type=fraction, default=DEFAULT_CONF,
                        help=f"score threshold of the NMS in the graph (default {DEFAULT_CONF}); predict.py "
                             "filters to a higher --conf exactly, other settings run NMS on the host")
    parser.add_argument("--nms-iou", type=fraction, default=DEFAULT_NMS_IOU,
                        help=f"IoU threshold of the NMS in the graph (default {DEFAULT_NMS_IOU})")
    parser.add_argument("--max-boxes", type=int_at_least(1), default=DEFAULT_MAX_BOXES,
                        help=f"boxes kept per class by the NMS in the graph (default {DEFAULT_MAX_BOXES})")
    parser.add_argument("--agnostic-nms", action="store_true",
                        help="predictors of the export run one NMS over all classes (one box per object where "
                             "similar classes compete), as kept in its metadata, unless predict.py is given "
                             "--no-agnostic-nms; that NMS runs on the host from the raw heads, the graph's own "
                             "is per class (default: per class)")
    parser.add_argument("--check-images", type=int_at_least(1), default=CHECK_IMAGES,
                        help=f"images the export is compared with the Keras model on (default {CHECK_IMAGES})")
    parser.add_argument("--triton-name", default=DEFAULT_MODEL_NAME,
                        help=f"triton: the model's name and folder in the repository (default {DEFAULT_MODEL_NAME}, "
                             "the name serve.py answers to)")
    parser.add_argument("--triton-backend", choices=tuple(BACKENDS), default="onnxruntime",
                        help="triton: the model as ONNX for the onnxruntime backend (default) or as OpenVINO IR for "
                             "the openvino backend")
    parser.add_argument("--max-batch-size", type=int_at_least(1), default=DEFAULT_MAX_BATCH_SIZE,
                        help=f"triton: max_batch_size of config.pbtxt (default {DEFAULT_MAX_BATCH_SIZE})")
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # TensorFlow reports each step of saving and converting a graph; its errors still show.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from utils.export.exporter import ExportError, ExportOptions, run_export

    options = ExportOptions(
        checkpoint=args.model, format=args.format, out=args.out, input_size=args.input_size, int8=args.int8,
        calib=args.calib, calib_images=args.calib_images, eval=args.eval, raw=args.raw, bf16=args.bf16,
        conf=args.conf, nms_iou=args.nms_iou, max_boxes=args.max_boxes, check_images=args.check_images,
        agnostic_nms=args.agnostic_nms,
    )
    try:
        if args.format == "triton":
            from utils.export.triton import run_triton_export

            run_triton_export(options, args.triton_name, args.triton_backend, args.max_batch_size)
        else:
            run_export(options)
    except ExportError as exc:
        print(f"export.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Stopped with Ctrl-C; no artifact was left half-written.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
