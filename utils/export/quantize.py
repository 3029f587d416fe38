"""int8 post-training static quantization: ONNX Runtime's quantizer for ONNX, NNCF for OpenVINO.

Both calibrate on letterboxed images of an annotation file and leave in float what
quantization would hurt most: the prediction convolutions (their outputs are box
offsets and logits), decoding and NMS after them, so boxes keep their pixel
precision, and, where it holds accuracy, the first convolution (it sees the raw
pixels).

ONNX (``quantize_onnx``): QDQ format, int8 weights per output channel, uint8
activations whose ranges are the 99.999th percentile of their histograms, which lets
rare outliers clip instead of coarsening every other value; the first convolution
stays float. On an EfficientNet-Lite0 model trained on the demo data this lost 0.65
mAP points where quantizing everything with min/max ranges lost 2.1.

OpenVINO (``quantize_openvino``): NNCF's post-training quantization of the converted
model (the "mixed" preset: symmetric weights, asymmetric activations, then bias
correction), which places its FakeQuantize operations where OpenVINO's CPU plugin
runs int8 kernels (VNNI or AMX where the CPU has them). The graph ONNX Runtime
quantizes, converted, gained little over float in OpenVINO (23.7 against 27.4 ms for
B0 at 416); NNCF's model took 0.55 of float's network time (docs/benchmarks.md). Its first
convolution is quantized: that held accuracy (``KEEP_FIRST_CONV_FLOAT``).
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
from utils.export.formats import ExportError, MissingExporterError
from utils.image import ImageLoadError, letterbox, load_image, stretch
from utils.predict.predictor import RAW_OUTPUTS
from utils.predict.runtimes import INPUT_NAME, METADATA_KEY

log = logging.getLogger(__name__)

DEFAULT_CALIB_IMAGES = 100
PIP_QUANTIZE = "pip install onnxruntime==1.32.0 onnx==1.23.2"
PIP_NNCF = "pip install nncf==3.4.0"


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


def _float_ops(ops, keep_first_conv=True):
    """Names of the operations left in float, from a graph given as a list of operations.

    The prediction convolutions and what lies between them and the raw heads (a bias
    add, a layout transpose), everything computed from the raw heads (decoding and
    NMS) and, with ``keep_first_conv``, the first convolution.

    Args:
        ops: (name, is_conv, input tensors, output tensors) per operation, in
            topological order; tensors are any hashable names, the raw heads are
            ``RAW_OUTPUTS``, and an input produced by no operation is a constant or
            the graph's input.
        keep_first_conv: also keep the first convolution in float.
    """
    consumers, producers = {}, {}
    for op in ops:
        for tensor in op[2]:
            consumers.setdefault(tensor, []).append(op)
        for tensor in op[3]:
            producers[tensor] = op
    excluded, frontier = set(), list(RAW_OUTPUTS)
    while frontier:
        for name, _, _, outputs in consumers.get(frontier.pop(), []):
            if name not in excluded:
                excluded.add(name)
                frontier.extend(outputs)
    for head in RAW_OUTPUTS:
        op = producers.get(head)
        while op is not None and not op[1]:
            excluded.add(op[0])
            op = next((producers[t] for t in op[2] if t in producers), None)
        if op is not None:
            excluded.add(op[0])
    if keep_first_conv:
        excluded.update([op[0] for op in ops if op[1]][:1])
    return sorted(excluded)


def float_nodes(model):
    """Names of the ONNX nodes left in float (see ``_float_ops``).

    Args:
        model: the float onnx.ModelProto of an export.
    """
    return _float_ops([(node.name, node.op_type == "Conv", list(node.input), list(node.output))
                       for node in model.graph.node])


def openvino_float_ops(model, keep_first_conv):
    """Names of the operations of an OpenVINO model left in float (see ``_float_ops``).

    Args:
        model: the float openvino.Model of an export.
        keep_first_conv: also keep the first convolution in float.
    """
    heads = {}
    for port in model.outputs:
        names = port.get_names() & set(RAW_OUTPUTS)
        if names:  # the Result's input is the head tensor
            source = port.get_node().input_value(0)
            heads[(source.get_node().get_friendly_name(), source.get_index())] = names.pop()
    ops = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        name = op.get_friendly_name()
        inputs = [(value.get_node().get_friendly_name(), value.get_index()) for value in op.input_values()]
        outputs = [(name, index) for index in range(op.get_output_size())]
        ops.append((name, op.get_type_name() == "Convolution", [heads.get(t, t) for t in inputs],
                    [heads.get(t, t) for t in outputs]))
    return _float_ops(ops, keep_first_conv)


# NNCF on the real-photo Lite0 model (mAP@0.5 of its test split; float 90.26): 90.19
# with the first convolution quantized, 90.70 with it in float, 90.03 with the
# prediction convolutions quantized as well. Quantizing the first one holds accuracy
# and saves a float convolution on the largest map.
KEEP_FIRST_CONV_FLOAT = False


def quantize_openvino(model, images, keep_first_conv=KEEP_FIRST_CONV_FLOAT):
    """An int8 copy of an OpenVINO export, quantized by NNCF and calibrated on ``images``.

    Args:
        model: the float openvino.Model (network, decoding and NMS).
        images: uint8 (S, S, 3) calibration inputs, letterboxed.
        keep_first_conv: leave the first convolution in float as well.

    Returns:
        the quantized openvino.Model.
    """
    try:
        import nncf
    except ImportError:
        raise MissingExporterError(f"--int8 for OpenVINO needs NNCF: {PIP_NNCF}") from None
    nncf.set_log_level(logging.ERROR)
    ignored = nncf.IgnoredScope(names=openvino_float_ops(model, keep_first_conv))
    dataset = nncf.Dataset(images, lambda image: image[None])
    try:
        return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(images),
                             ignored_scope=ignored)
    except (RuntimeError, ValueError) as exc:  # nncf reports a failed quantization with its own subclasses
        raise ExportError(f"NNCF could not quantize the model: {str(exc).splitlines()[0][:300]}") from None


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
