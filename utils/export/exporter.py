"""The export job behind export.py: write an artifact, check it, report accuracy.

``run_export`` loads the checkpoint, writes the artifact of the format asked for
(int8 through ``quantize``), opens it with the runtime ``predict.py`` would use, and
prints how its detections and raw heads differ from the Keras model's on a few
images; with an evaluation file it also prints the mAP of the Keras model, the
float export and, for int8, the quantized one.
"""

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.checkpoint import CheckpointError, load_model
from utils.config import DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU, EVAL_CONF, EVAL_NMS_IOU
from utils.export.formats import (
    FORMATS,
    NMS_PLACEMENT,
    ExportError,
    onnx_model,
    output_order,
    write_onnx,
    write_openvino,
    write_saved_model,
    write_tflite,
)
from utils.export.graph import export_function
from utils.export.quantize import DEFAULT_CALIB_IMAGES, calibration_images, quantize_onnx, quantize_openvino
from utils.export.verify import compare, head_difference, load_eval_set, voc_map
from utils.image import check_input_size
from utils.predict.predictor import Predictor
from utils.predict.runtimes import FORMAT_SUFFIX, METADATA_KEY, ArtifactError, ExportMetadata, open_model_file

INT8_FORMATS = ("onnx", "openvino")
CHECK_IMAGES = 8


@dataclass
class ExportOptions:
    """What to export and how (the options of export.py).

    Attributes:
        checkpoint: the ``.keras`` / ``.weights.h5`` checkpoint.
        format: one of ``FORMATS``.
        out: the artifact path (None: beside the checkpoint, see ``default_output``).
        input_size: input side (None: the checkpoint's).
        int8: quantize to int8 (ONNX and OpenVINO).
        calib: annotation file whose images calibrate int8.
        calib_images: calibration images drawn from ``calib``.
        eval: annotation file on which the mAPs are reported.
        raw: export the raw heads only (decoding and NMS are left to the user).
        bf16: OpenVINO runs in bfloat16.
        conf: score threshold of the NMS in the graph.
        nms_iou: IoU threshold of the NMS in the graph.
        max_boxes: boxes kept per class.
        check_images: images compared with the Keras model after the export.
        agnostic_nms: predictors of the artifact run one NMS over all classes by
            default (recorded in the metadata). The graph's own NMS stays per class:
            the batched class-agnostic NMS of TensorFlow converts to neither ONNX nor
            OpenVINO, so the agnostic one runs on the host, from the raw heads.
    """

    checkpoint: str
    format: str
    out: str | None = None
    input_size: int | None = None
    int8: bool = False
    calib: str | None = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    eval: str | None = None
    raw: bool = False
    bf16: bool = False
    conf: float = DEFAULT_CONF
    nms_iou: float = DEFAULT_NMS_IOU
    max_boxes: int = DEFAULT_MAX_BOXES
    check_images: int = CHECK_IMAGES
    agnostic_nms: bool = False


def check_options(options):
    """Rejects combinations that cannot work, before the (slow) model load."""
    if options.format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {options.format!r}")
    if options.int8:
        if options.format not in INT8_FORMATS:
            raise ExportError(f"--int8 is available for --format {' and '.join(INT8_FORMATS)}, "
                              f"not {options.format}")
        if not options.calib:
            raise ExportError("--int8 needs --calib ANNOTATIONS: an annotation file whose images calibrate "
                              "the quantization (e.g. the training file)")
    elif options.calib:
        raise ExportError("--calib is used with --int8 only")
    if options.bf16 and options.format != "openvino":
        raise ExportError("--bf16 sets OpenVINO's inference precision; use it with --format openvino")
    if options.bf16 and options.int8:
        raise ExportError("--bf16 and --int8 exclude each other")
    for name in ("calib", "eval"):
        value = getattr(options, name)
        if value and not Path(value).is_file():
            raise ExportError(f"--{name} {value}: annotation file not found")


def default_output(checkpoint, fmt, int8=False, raw=False, bf16=False):
    """The artifact path beside the checkpoint: ``logs/exp/best.keras`` -> ``logs/exp/best.onnx``.

    Variants get a suffix (``best_int8.onnx``, ``best_raw.tflite``, ``best_bf16.xml``);
    a SavedModel is the folder ``best_saved_model``.
    """
    checkpoint = Path(checkpoint)
    name = checkpoint.name
    stem = name[: -len(".weights.h5")] if name.endswith(".weights.h5") else checkpoint.stem
    stem += "_raw" if raw else ""
    stem += "_int8" if int8 else "_bf16" if bf16 else ""
    return checkpoint.with_name(stem + FORMAT_SUFFIX.get(fmt, "_saved_model"))


def _check_suffix(path, fmt):
    expected = FORMAT_SUFFIX.get(fmt)
    if expected and Path(path).suffix.lower() != expected:
        raise ExportError(f"--out {path}: a {fmt} export must end in {expected} (predict.py picks the runtime "
                          "by the extension)")
    if fmt == "saved_model" and Path(path).suffix:
        raise ExportError(f"--out {path}: a SavedModel is a folder; give a name without an extension")


def check_images(options, count):
    """RGB images the export is compared on: from --eval or --calib, else drawn ones."""
    from utils.image import ImageLoadError, load_image

    source = options.eval or options.calib
    images = []
    if source:
        from utils.data.annotation import read_annotation_file

        annotations, _ = read_annotation_file(source)
        for ann in annotations:
            try:
                images.append(load_image(ann.path))
            except ImageLoadError:
                continue
            if len(images) == count:
                break
    if images:
        return images, f"the first {len(images)} images of {source}"
    return synthetic_images(count), f"{count} drawn test images"


def synthetic_images(count, seed=0):
    """Images of coloured rectangles and discs on noise, of varied sizes and aspect ratios."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h, w = int(rng.integers(160, 480)), int(rng.integers(160, 640))
        image = rng.integers(60, 200, (h, w, 3)).astype(np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            x1, y1 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            x2, y2 = x1 + int(rng.integers(30, w // 2)), y1 + int(rng.integers(30, h // 2))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            if i % 2:
                cv2.ellipse(image, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360,
                            color, -1)
            else:
                cv2.rectangle(image, (x1, y1), (x2, y2), color, -1)
        images.append(image)
    return images


def _write(options, model, metadata, function, out, work):
    """Writes the artifact; returns the path of a float twin for int8 (else None)."""
    fmt = options.format
    if fmt == "tflite":
        write_tflite(function, metadata, out)
    elif fmt == "saved_model":
        write_saved_model(function, metadata, out, model)
    elif not options.int8:
        (write_onnx if fmt == "onnx" else write_openvino)(function, metadata, out)
    else:
        print(f"Calibrating int8 on {options.calib} ...")
        images = calibration_images(options.calib, metadata.input_size, options.calib_images)
        print(f"  {len(images)} calibration images")
        float_meta = ExportMetadata(**{**metadata.__dict__, "precision": "fp32"})
        if fmt == "onnx":
            import onnx

            fp32 = work / "fp32.onnx"
            onnx.save(onnx_model(function, float_meta), str(fp32))
            quantize_onnx(fp32, out, images, metadata)
            return fp32
        fp32 = work / "fp32.xml"

        def quantize(ov_model):
            import openvino as ov

            ov_model.set_rt_info(float_meta.to_json(), [METADATA_KEY])
            ov.save_model(ov_model, str(fp32), compress_to_fp16=False)
            return quantize_openvino(ov_model, images)

        write_openvino(function, metadata, out, transform=quantize)
        return fp32
    return None


def export_metadata(options, model, input_size):
    """The ExportMetadata of the artifact ``options`` asks for, of ``model`` at ``input_size``."""
    nms = "none" if options.raw else NMS_PLACEMENT[options.format]
    return ExportMetadata(
        class_names=list(model.class_names), input_size=input_size, anchors=np.asarray(model.anchors).tolist(),
        nms=nms, conf=options.conf, nms_iou=options.nms_iou, max_boxes=options.max_boxes,
        precision="int8" if options.int8 else "bf16" if options.bf16 else "fp32", outputs=output_order(nms),
        backbone=model.backbone_name, checkpoint=Path(options.checkpoint).name, box_coding=model.box_coding,
        agnostic_nms=bool(options.agnostic_nms),
    )


def write_export(options, model, out, work):
    """Writes the artifact ``options`` asks for at ``out``, saying what it exports.

    Args:
        options: ExportOptions (checked by ``check_options``).
        model: the checkpoint's YoloV3 model.
        out: the artifact path.
        work: a scratch folder (the float twin of an int8 artifact is left there).

    Returns:
        (input_size, float twin): the input side exported and, for int8, the path
        of the same graph in float (None otherwise).

    Raises:
        ExportError: a bad input size, a missing exporter or a failed conversion.
    """
    try:
        input_size = check_input_size(options.input_size or model.input_size)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    metadata = export_metadata(options, model, input_size)
    function = export_function(model, input_size, model.anchors, options.conf, options.nms_iou, options.max_boxes,
                               nms=metadata.nms)
    placement = {"graph": "decoding and NMS in the graph", "host": "decoding in the graph, NMS on the host",
                 "none": "raw heads only"}[metadata.nms]
    print(f"Exporting {options.checkpoint} as {options.format} ({metadata.precision}, input {input_size}, "
          f"{placement}) ...")
    return input_size, _write(options, model, metadata, function, out, work)


def run_export(options):
    """Exports, checks and reports; returns the artifact's Path.

    Raises:
        ExportError: bad options, an unreadable checkpoint, a missing exporter
            package or a failed conversion; the message says what to do.
    """
    check_options(options)
    out = Path(options.out) if options.out else default_output(options.checkpoint, options.format, options.int8,
                                                               options.raw, options.bf16)
    _check_suffix(out, options.format)
    try:
        model = load_model(options.checkpoint)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    work = Path(tempfile.mkdtemp(prefix="export_"))
    try:
        started = time.perf_counter()
        input_size, fp32_twin = write_export(options, model, out, work)
        print(f"Wrote {out} in {time.perf_counter() - started:.0f} s")
        report(options, model, out, input_size, fp32_twin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _open(path, **settings):
    try:
        return open_model_file(path, **settings)
    except ArtifactError as exc:
        raise ExportError(f"the export cannot be run: {exc}") from None


def report(options, model, out, input_size, fp32_twin=None):
    """Prints the export's differences from the Keras model, and the mAPs with --eval."""
    settings = dict(conf=options.conf, nms_iou=options.nms_iou, max_boxes=options.max_boxes)
    exported = _open(out, **settings)
    keras_predictor = Predictor(model, input_size=input_size, **settings)
    images, where = check_images(options, options.check_images)
    difference, _ = head_difference(keras_predictor, exported, images[:2])
    print(f"Check on {where}, {exported.runtime_name} against the Keras model:")
    print(f"  raw heads: largest difference {difference:.2e}")
    print(f"  detections (conf {options.conf}, NMS IoU {options.nms_iou}): "
          f"{compare(keras_predictor, exported, images).summary()}")
    # At the evaluation settings too: far more boxes, NMS on the host unless exported so.
    low = dict(conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU, max_boxes=options.max_boxes)
    print(f"  detections (conf {EVAL_CONF}, NMS IoU {EVAL_NMS_IOU}): "
          f"{compare(Predictor(model, input_size=input_size, **low), _open(out, **low), images).summary()}")
    if not options.eval:
        return
    print(f"mAP@0.5 (VOC all-point) on {options.eval} (conf {EVAL_CONF}, NMS IoU {EVAL_NMS_IOU}):")
    eval_settings = dict(conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU, max_boxes=options.max_boxes)
    keras_eval = Predictor(model, input_size=input_size, **eval_settings)
    images, truth = load_eval_set(options.eval, keras_eval.class_names)
    rows = [("Keras", voc_map(keras_eval, images, truth))]
    if fp32_twin is not None:
        rows.append((f"float {options.format}", voc_map(_open(fp32_twin, **eval_settings), images, truth)))
    rows.append((f"{options.format} {exported.metadata.precision}",
                 voc_map(_open(out, **eval_settings), images, truth)))
    for name, value in rows:
        print(f"  {name:<18} {100 * value:6.2f}")
