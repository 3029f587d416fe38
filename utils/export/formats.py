"""Writing the export function as ONNX, TFLite, a SavedModel or OpenVINO IR.

Each writer takes the ``tf.function`` of ``utils.export.graph.export_function`` and
an ``ExportMetadata`` and writes one artifact atomically (a temporary name, then a
rename), so an interrupted export never leaves a half-written file under the final
name. Where each format keeps the metadata is described in
``utils.predict.runtimes``.

ONNX is converted by tf2onnx from the frozen graph; OpenVINO IR is converted from
that ONNX model, because OpenVINO's TensorFlow reader has no
``CombinedNonMaxSuppression``; TFLite holds decoding but not NMS, which its built-in
ops cannot express class by class (the TensorFlow op would need the Flex delegate).
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from utils.checkpoint import atomic_write
from utils.export.graph import frozen_function, frozen_graph
from utils.predict.predictor import DETECTION_OUTPUTS, RAW_OUTPUTS
from utils.predict.runtimes import INPUT_NAME, METADATA_KEY, SAVED_MODEL_METADATA
from utils.run_dir import new_folder_mode

FORMATS = ("onnx", "tflite", "saved_model", "openvino")
# Where NMS runs for each format (see utils.predict.runtimes).
NMS_PLACEMENT = {"onnx": "graph", "tflite": "host", "saved_model": "graph", "openvino": "graph"}
ONNX_OPSET = 17
PIP_EXPORT = {
    "onnx": "pip install tf2onnx==1.17.0 onnx==1.23.2",
    "openvino": "pip install openvino==2026.4.1 tf2onnx==1.17.0 onnx==1.23.2",
}


class ExportError(RuntimeError):
    """An export that cannot be made; the message says why and what to do."""


class MissingExporterError(ExportError):
    """A package an export format needs is not installed; the message names the pip line."""


def output_order(nms):
    """The artifact's output names, in the order the graph lists them."""
    if nms == "graph":
        return [*DETECTION_OUTPUTS, *RAW_OUTPUTS]
    if nms == "host":
        return ["boxes", "scores", *RAW_OUTPUTS]
    return list(RAW_OUTPUTS)


def _require(module, fmt):
    try:
        return __import__(module)
    except ImportError:
        raise MissingExporterError(f"--format {fmt} needs the package {module}: {PIP_EXPORT[fmt]}") from None


def onnx_model(function, metadata, opset=ONNX_OPSET, fmt="onnx"):
    """Converts the export function to an ONNX ModelProto with the metadata in it.

    Args:
        function: from ``export_function``.
        metadata: ExportMetadata; its ``outputs`` lists the graph's outputs.
        opset: ONNX opset.
        fmt: the format asked for (names the pip line when a package is missing).

    Returns:
        onnx.ModelProto with one input, ``images``, and the named outputs.
    """
    _require("onnx", fmt)
    tf2onnx = _require("tf2onnx", fmt)
    from tf2onnx import logging as tf2onnx_logging

    tf2onnx_logging.set_level(logging.ERROR)
    graph_def, input_name, outputs = frozen_graph(function)
    renames = {input_name: INPUT_NAME, **{tensor: name for name, tensor in outputs.items()}}
    output_tensors = [outputs[name] for name in metadata.outputs]
    with tf.Graph().as_default():
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[input_name], output_names=output_tensors, opset=opset,
            tensors_to_rename=renames,
        )
    if [i.name for i in proto.graph.input] != [INPUT_NAME]:
        raise ExportError(f"the ONNX graph has inputs {[i.name for i in proto.graph.input]}, expected [{INPUT_NAME!r}]")
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    return proto


def write_onnx(function, metadata, path):
    """Writes ``path`` (.onnx): network, decoding and NMS in one ONNX graph."""
    import onnx

    proto = onnx_model(function, metadata)
    atomic_write(path, lambda tmp: onnx.save(proto, tmp), ".onnx")
    return Path(path)


def write_tflite(function, metadata, path):
    """Writes ``path`` (.tflite) with built-in ops only, and ``<path>.json`` beside it.

    The converter reads a SavedModel of the frozen function: that keeps the named
    signature (inputs and outputs by name) and folds every weight.
    """
    import absl.logging

    frozen = frozen_function(function)
    module = tf.Module()
    module.detect = frozen
    verbosity = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # The frozen activations keep their custom gradients' captures as constants,
            # which a SavedModel cannot record; inference needs no gradients.
            options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
            tf.saved_model.save(module, tmp, signatures={"serving_default": frozen.get_concrete_function()},
                                options=options)
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            data = converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain exceptions alike
        raise ExportError(f"the TFLite converter failed: {str(exc).splitlines()[0][:500]}") from None
    finally:
        absl.logging.set_verbosity(verbosity)
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), ".tflite")
    sidecar = path.with_name(path.name + ".json")
    atomic_write(sidecar, lambda tmp: Path(tmp).write_text(metadata.to_json() + "\n", encoding="utf-8"), ".json")
    return path


def write_saved_model(function, metadata, path, model):
    """Writes the SavedModel folder ``path`` (signature ``serving_default``) with its metadata.

    ``model`` is the Keras model the function calls: its variables are saved with it.
    """
    path = Path(path)
    module = tf.Module()
    module.model = model
    module.detect = function
    _replace_folder(path, lambda tmp: _save_module(module, function, metadata, tmp))
    return path


def _save_module(module, function, metadata, folder):
    tf.saved_model.save(module, str(folder), signatures={"serving_default": function.get_concrete_function()})
    (Path(folder) / SAVED_MODEL_METADATA).write_text(metadata.to_json() + "\n", encoding="utf-8")


def _replace_folder(path, writer):
    """Calls ``writer(tmp_folder)`` then puts the folder at ``path``, replacing an old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        # mkdtemp makes a private (0o700) folder; the result gets an ordinary folder's mode.
        os.chmod(tmp, new_folder_mode())
        writer(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


def write_openvino(function, metadata, path, onnx_path=None, transform=None):
    """Writes ``path`` (.xml) and the ``.bin`` beside it, converted from the ONNX model.

    Args:
        function: from ``export_function`` (converted to ONNX first unless
            ``onnx_path`` is given).
        metadata: ExportMetadata, kept in the model's rt_info.
        path: the ``.xml`` to write.
        onnx_path: an ONNX file of the same graph to convert.
        transform: optional function(openvino.Model) -> openvino.Model applied to the
            converted model before it is saved (int8 quantization).
    """
    ov = _require("openvino", "openvino")
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        if onnx_path is None:
            import onnx

            onnx_path = Path(tmp) / "model.onnx"
            onnx.save(onnx_model(function, metadata, fmt="openvino"), str(onnx_path))
        model = ov.convert_model(str(onnx_path))
        if transform is not None:
            model = transform(model)
        model.set_rt_info(metadata.to_json(), [METADATA_KEY])
        staged = Path(tmp) / path.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The .bin first: a reader finding the new .xml finds its weights too.
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    return path
