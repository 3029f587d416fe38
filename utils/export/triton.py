"""A model repository that Triton Inference Server, OpenVINO Model Server and KServe load as it is.

``export.py --format triton`` writes::

    <out>/<name>/config.pbtxt
    <out>/<name>/1/model.onnx          (--triton-backend onnxruntime, the default)
    <out>/<name>/1/model.xml, .bin     (--triton-backend openvino)

The model is the ONNX (or OpenVINO IR) export, whose batch axis is dynamic, with its
check against the Keras model. ``config.pbtxt`` is Triton's model configuration in
protobuf text format: the input and output tensors as the graph declares them (the
batch axis left out, as ``max_batch_size`` > 0 asks), dynamic batching and a CPU
instance group, and for OpenVINO the backend's parameters. OpenVINO Model Server
reads the same folder (``<name>/1/``) and ignores ``config.pbtxt``.
"""

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from utils.export.exporter import run_export
from utils.export.formats import ExportError
from utils.run_dir import new_folder_mode

DEFAULT_MODEL_NAME = "detector"
DEFAULT_MAX_BATCH_SIZE = 8
# How long Triton lets the first request of a batch wait for others.
MAX_QUEUE_DELAY_US = 2000
# Triton backend name -> (export format, model file in the version folder).
BACKENDS = {"onnxruntime": ("onnx", "model.onnx"), "openvino": ("openvino", "model.xml")}
# OpenVINO backend parameters: several inference streams for concurrent requests.
OPENVINO_PARAMETERS = {"PERFORMANCE_HINT": "THROUGHPUT"}
# Element types (ONNX TensorProto numbers, OpenVINO type names) as Triton names them.
ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16", 11: "TYPE_FP64"}
OPENVINO_TYPES = {"f32": "TYPE_FP32", "u8": "TYPE_UINT8", "i32": "TYPE_INT32", "i64": "TYPE_INT64",
                  "f16": "TYPE_FP16", "f64": "TYPE_FP64"}


def default_repository(checkpoint):
    """The repository folder beside the checkpoint: ``logs/exp/best.keras`` -> ``logs/exp/best_triton``."""
    checkpoint = Path(checkpoint)
    name = checkpoint.name
    stem = name[: -len(".weights.h5")] if name.endswith(".weights.h5") else checkpoint.stem
    return checkpoint.with_name(stem + "_triton")


def run_triton_export(options, name=DEFAULT_MODEL_NAME, backend="onnxruntime",
                      max_batch_size=DEFAULT_MAX_BATCH_SIZE):
    """Writes a model repository holding one model; returns the model's folder.

    Args:
        options: ``ExportOptions``; its ``out`` is the repository (default beside the
            checkpoint), its format is replaced by the backend's.
        name: the model's name (its folder, and the name clients ask for).
        backend: "onnxruntime" or "openvino".
        max_batch_size: the largest batch Triton forms.

    Returns:
        Path of ``<repository>/<name>``.

    Raises:
        ExportError: bad options, an existing model folder, or a failed export.
    """
    if backend not in BACKENDS:
        raise ExportError(f"--triton-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not name or name in (".", "..") or any(c in name for c in "/\\") or name != name.strip():
        raise ExportError(f"--triton-name {name!r}: give a plain folder name such as {DEFAULT_MODEL_NAME!r}")
    if max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, got {max_batch_size}")
    fmt, filename = BACKENDS[backend]
    repository = Path(options.out) if options.out else default_repository(options.checkpoint)
    folder = repository / name
    if folder.exists():
        raise ExportError(f"{folder} already exists; give another --out or --triton-name (a model folder is never "
                          "written over)")
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    try:
        os.chmod(staging, new_folder_mode())
        (staging / "1").mkdir()
        artifact = run_export(replace(options, format=fmt, out=str(staging / "1" / filename)))
        size, outputs = onnx_tensors(artifact) if fmt == "onnx" else openvino_tensors(artifact)
        config = model_config(name, backend, max_batch_size, size, outputs)
        (staging / "config.pbtxt").write_text(config, encoding="utf-8")
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Model repository: {repository} (model {name!r}, {backend}, max_batch_size {max_batch_size})")
    return folder


def onnx_tensors(path):
    """(input side S, outputs) of an ONNX model; outputs are [(name, Triton data type,
    dims without the batch axis, -1 for a free one)]."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim][1:]

    outputs = [(out.name, ONNX_TYPES[out.type.tensor_type.elem_type], dims(out)) for out in graph.output]
    return dims(graph.input[0])[0], outputs


def openvino_tensors(path):
    """As ``onnx_tensors``, for an OpenVINO IR."""
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def dims(port):
        return [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()][1:]

    outputs = [(port.get_any_name(), OPENVINO_TYPES[port.get_element_type().get_type_name()], dims(port))
               for port in model.outputs]
    return dims(model.inputs[0])[0], outputs


def model_config(name, backend, max_batch_size, size, outputs):
    """Triton's ``config.pbtxt`` text for the detector.

    Args:
        name: the model's name.
        backend: "onnxruntime" or "openvino".
        max_batch_size: the largest batch.
        size: the input side S.
        outputs: from ``onnx_tensors`` or ``openvino_tensors``.

    Returns:
        the configuration in protobuf text format. A tensor with the batch axis alone
        (``count``) is declared with dims [1] and reshaped to [], as Triton asks.
    """
    lines = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch_size}"]
    if backend == "openvino":
        lines.append('default_model_filename: "model.xml"')
    lines += ["input [", "  {", '    name: "images"', "    data_type: TYPE_UINT8",
              f"    dims: [ {size}, {size}, 3 ]", "  }", "]", "output ["]
    for i, (output, datatype, dims) in enumerate(outputs):
        reshape = not dims
        lines += ["  {", f'    name: "{output}"', f"    data_type: {datatype}",
                  f"    dims: [ {', '.join(map(str, dims or [1]))} ]"]
        if reshape:
            lines.append("    reshape: { shape: [ ] }")
        lines.append("  }," if i < len(outputs) - 1 else "  }")
    lines += ["]", "dynamic_batching {", f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}", "}",
              "instance_group [", "  {", "    count: 1", "    kind: KIND_CPU", "  }", "]"]
    if backend == "openvino":
        lines.append("parameters [")
        items = list(OPENVINO_PARAMETERS.items())
        for i, (key, value) in enumerate(items):
            lines.append(f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
                         + ("," if i < len(items) - 1 else ""))
        lines.append("]")
    return "\n".join(lines) + "\n"
