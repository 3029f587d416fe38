"""int8 post-training static quantization with ONNX Runtime's quantizer.

The network is quantized (QDQ format: int8 weights per output channel, uint8
activations), calibrated on letterboxed images of an annotation file: activation
ranges are the 99.999th percentile of their histograms, which lets rare outliers
clip instead of coarsening every other value. What quantization would hurt most
stays in float: the first convolution (it sees the raw pixels), the three
prediction convolutions (their outputs are box offsets and logits) and decoding and
NMS after them, so boxes keep their pixel precision. On an EfficientNet-Lite0 model
trained on the demo data this lost 0.65 mAP points where quantizing everything with
min/max ranges lost 2.1. The OpenVINO int8 model is converted from the quantized ONNX graph; OpenVINO
runs its QDQ pairs as int8 kernels.
"""

import contextlib
import io
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


CALIB_PERCENTILE = 99.999
# Images per calibration pass; the histogram calibrator holds a pass's activations.
CALIB_CHUNK = 8


def float_nodes(model):
    """Names of the nodes left in float: the first and the prediction convolutions,
    and everything computed from the raw heads (decoding and NMS).

    Args:
        model: the float onnx.ModelProto of an export.
    """
    consumers, producers = {}, {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node
    excluded, frontier = set(), list(RAW_OUTPUTS)
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name not in excluded:
                excluded.add(node.name)
                frontier.extend(node.output)
    for name in RAW_OUTPUTS:
        # Back from each head output (a layout transpose, a bias add) to its convolution.
        node = producers.get(name)
        while node is not None and node.op_type != "Conv":
            excluded.add(node.name)
            node = producers.get(node.input[0])
        if node is not None:
            excluded.add(node.name)
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    excluded.update(convs[:1])
    return sorted(excluded)


def quantize_onnx(fp32_path, int8_path, images, metadata):
    """Writes an int8 copy of an ONNX export, calibrated on ``images``.

    Args:
        fp32_path: the float ONNX export.
        int8_path: where the quantized model goes.
        images: uint8 (S, S, 3) calibration inputs.
        metadata: the int8 model's ExportMetadata.

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
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingExporterError(f"--int8 needs ONNX Runtime's quantizer: {PIP_QUANTIZE}") from None

    class Reader(CalibrationDataReader):
        def __init__(self, chunk):
            self._images = iter(chunk)

        def get_next(self):
            image = next(self._images, None)
            return None if image is None else {INPUT_NAME: image[None]}

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
        excluded = float_nodes(model)
        # Ranges come from the network alone (input to raw heads): decoding and NMS stay
        # float, and their tensors (some empty when nothing is detected) would upset the
        # histograms. The histograms grow pass by pass, CALIB_CHUNK images at a time.
        network = Path(tmp) / "network.onnx"
        onnx.save(onnx.utils.Extractor(model).extract_model([INPUT_NAME], list(RAW_OUTPUTS)), str(network))

        def calibrate(method, options):
            calibrator = create_calibrator(network, None, augmented_model_path=str(Path(tmp) / f"{method}.onnx"),
                                           calibrate_method=method, extra_options=options)
            for start in range(0, len(images), CALIB_CHUNK):
                calibrator.collect_data(Reader(images[start : start + CALIB_CHUNK]))
            return calibrator.compute_data()

        ranges = Path(tmp) / "ranges.json"
        staged = Path(tmp) / "int8.onnx"
        # The quantizer reports every tensor it touches through the root logger.
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))
        try:
            # The histogram calibrator prints its progress and divides empty histogram bins.
            with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore", invalid="ignore"):
                method = CalibrationMethod.Percentile
                try:
                    found = calibrate(method, {"percentile": CALIB_PERCENTILE})
                except ValueError as exc:
                    # A tensor whose values are all (nearly) equal has no histogram.
                    log.warning("percentile calibration failed (%s); using min/max ranges", exc)
                    method = CalibrationMethod.MinMax
                    found = calibrate(method, {})
                save_tensors_data(found, ranges)
                quantize_static(
                    str(prepared), str(staged), None,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                    calibrate_method=method,
                    calibration_cache_path=str(ranges),
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
