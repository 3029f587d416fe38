"""int8 post-training static quantization with ONNX Runtime's quantizer.

The network is quantized (QDQ format: int8 weights per output channel, uint8
activations), calibrated on letterboxed images of an annotation file; decoding and
NMS after the raw heads stay in float, so boxes keep their pixel precision. The
OpenVINO int8 model is converted from the quantized ONNX graph; OpenVINO runs its
QDQ pairs as int8 kernels.
"""

import logging
import random
import tempfile
from pathlib import Path

import numpy as np

from utils.checkpoint import atomic_write
from utils.data.annotation import read_annotation_file
from utils.image import ImageLoadError, letterbox, load_image, stretch
from utils.predict.predictor import RAW_OUTPUTS
from utils.predict.runtimes import INPUT_NAME, METADATA_KEY
from utils.export.formats import ExportError, MissingExporterError

log = logging.getLogger(__name__)

DEFAULT_CALIB_IMAGES = 100
PIP_QUANTIZE = "pip install onnxruntime==1.32.0 onnx==1.23.2"


def calibration_images(annotation_path, input_size, count=DEFAULT_CALIB_IMAGES, letterboxed=True, seed=0):
    """Network inputs for calibration: up to ``count`` images of an annotation file.

    Args:
        annotation_path: annotation file (one line per image).
        input_size: side S of the input.
        count: images used, drawn at random (seeded) when the file has more.
        letterboxed: letterbox (True) or stretch the images, as prediction will.
        seed: seed of the draw.

    Returns:
        list of uint8 (S, S, 3) arrays.

    Raises:
        ExportError: no image of the file can be read.
    """
    try:
        annotations, problems = read_annotation_file(annotation_path)
    except (OSError, ValueError) as exc:
        raise ExportError(f"--calib {annotation_path}: {exc}") from None
    paths = [ann.path for ann in annotations]
    if len(paths) > count:
        paths = random.Random(seed).sample(paths, count)
    fit = letterbox if letterboxed else stretch
    images, skipped = [], 0
    for path in paths:
        try:
            images.append(fit(load_image(path), input_size))
        except ImageLoadError as exc:
            skipped += 1
            log.warning("calibration: %s", exc)
    if not images:
        raise ExportError(f"--calib {annotation_path}: no image could be read ({len(problems)} lines skipped, "
                          f"{skipped} images unreadable)")
    return images


def _decoding_nodes(model):
    """Names of the nodes computed from the raw heads (decoding and NMS)."""
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    excluded, frontier = set(), list(RAW_OUTPUTS)
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name not in excluded:
                excluded.add(node.name)
                frontier.extend(node.output)
    return sorted(excluded)


def quantize_onnx(fp32_path, int8_path, images, metadata, batch_size=1):
    """Writes an int8 copy of an ONNX export, calibrated on ``images``.

    Args:
        fp32_path: the float ONNX export.
        int8_path: where the quantized model goes.
        images: uint8 (S, S, 3) calibration inputs.
        metadata: the int8 model's ExportMetadata.
        batch_size: images per calibration run.

    Returns:
        the Path written.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingExporterError(f"--int8 needs ONNX Runtime's quantizer: {PIP_QUANTIZE}") from None

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([np.stack(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    int8_path = Path(int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Shape inference and graph folding make the quantizer's job exact.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # the pre-processor fails on some graphs; quantize the original then
            log.info("quantization pre-processing skipped (%s)", str(exc).splitlines()[0][:200])
            prepared = Path(fp32_path)
        model = onnx.load(str(prepared))
        excluded = _decoding_nodes(model)
        staged = Path(tmp) / "int8.onnx"
        # The quantizer reports every tensor it touches through the root logger.
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))
        try:
            quantize_static(
                str(prepared), str(staged), Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibMaxIntermediateOutputs": 8},
            )
        finally:
            root.setLevel(level)
        int8 = onnx.load(str(staged))
        del int8.metadata_props[:]
        entry = int8.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, metadata.to_json()
        int8_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(int8_path, lambda t: onnx.save(int8, t), ".onnx")
    return int8_path
