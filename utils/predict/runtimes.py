"""Running exported detectors (ONNX, TFLite, SavedModel, OpenVINO) like a checkpoint.

``open_model_file`` picks the runtime from the path: ``.keras`` / ``.weights.h5`` load
the Keras model (``Predictor``); ``.onnx`` runs with ONNX Runtime, ``.tflite`` with
the LiteRT interpreter (``ai_edge_litert``, else ``tf.lite``), a SavedModel folder
with TensorFlow and ``.xml`` with OpenVINO. Every runtime is a ``BasePredictor``, so
letterboxing, the map back to the image and the ``Detections`` are the Keras ones.

An exported graph takes one input, ``images``: uint8 (B, S, S, 3) RGB, already
letterboxed. Its outputs depend on what the format can hold:

* ``nms == "graph"`` (ONNX, OpenVINO, SavedModel): "boxes" (B, K, 4) xyxy input
  pixels, "scores" (B, K), "classes" (B, K), "count" (B,), plus the raw heads;
* ``nms == "host"`` (TFLite, whose built-in ops have no class-wise NMS): decoded
  "boxes" (B, N, 4) xyxy input pixels and "scores" (B, N, C) before NMS, plus the
  raw heads; NMS runs here, with ``YoloDecoder.nms``;
* ``nms == "none"`` (``export.py --raw``): only the raw heads "raw_s32", "raw_s16",
  "raw_s8"; decoding and NMS run here, with ``YoloDecoder``.

NMS settings (conf, IoU, boxes per class) are fixed in an exported graph. When other
settings are asked for (``predict.py --nms-iou``, ``get_map.py``'s evaluation
settings) or other anchors, the predictor decodes the raw heads and runs NMS on the
host with the same TensorFlow code the Keras predictor uses, so every option works
on every artifact. A higher ``conf`` than the export's is applied by filtering,
which gives exactly the detections of an export made with it.

The metadata (class names, input size, anchors, NMS settings) is one JSON document:
in the ONNX ``metadata_props`` and the OpenVINO ``rt_info`` under the key
``effyolo``, in ``<name>.tflite.json`` beside a TFLite file and in
``effyolo.json`` inside a SavedModel folder.
"""

import copy
import json
import logging
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from utils.config import (
    BOX_CODINGS,
    CHECKPOINT_SUFFIXES,
    DEFAULT_BOX_CODING,
    DEFAULT_CONF,
    DEFAULT_MAX_BOXES,
    DEFAULT_NMS_IOU,
)
from utils.image import check_input_size
from utils.model_data import load_anchors, load_classes
from utils.predict.predictor import DETECTION_OUTPUTS, RAW_OUTPUTS, BasePredictor, ClassCountError, Predictor

log = logging.getLogger(__name__)

METADATA_KEY = "effyolo"
METADATA_VERSION = 1
INPUT_NAME = "images"
SAVED_MODEL_METADATA = "effyolo.json"
# What a missing runtime is installed with (the versions of requirements*.txt).
PIP_INSTALL = {
    "onnxruntime": "pip install onnxruntime==1.32.0",
    "openvino": "pip install openvino==2026.4.1",
    "litert": "pip install ai-edge-litert==2.3.0",
}
# The extension each exported file format is recognized by (a SavedModel is a folder).
FORMAT_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml"}
# The format each runtime runs, by its ``--runtime`` name in predict.py and get_map.py.
# Frames a video keeps in flight on OpenVINO's throughput copy beyond its inference
# streams (see ``OpenVINOPredictor.for_streams``).
_SPARE_FRAMES_IN_FLIGHT = 1


class ArtifactError(ValueError):
    """An exported model that cannot be used; the message names the file and why."""


class MissingRuntimeError(ArtifactError):
    """The runtime an artifact needs is not installed; the message says how to install it."""


@dataclass
class ExportMetadata:
    """What an exported artifact carries besides its graph.

    Attributes:
        class_names: the C class names.
        input_size: side S of the square input the graph was exported for.
        anchors: (9, 2) anchors in input pixels (list of [w, h]).
        nms: "graph" (decoding and NMS in the graph), "host" (decoding in the
            graph, NMS on the host) or "none" (raw heads only).
        conf: score threshold of the NMS in the graph.
        nms_iou: IoU threshold of the NMS in the graph.
        max_boxes: boxes kept per class by the NMS in the graph.
        precision: "fp32", "int8", or "bf16" (OpenVINO inference precision).
        outputs: names of the graph's outputs.
        backbone: the backbone name.
        checkpoint: file name of the checkpoint exported.
        box_coding: how the heads encode a box ("yolov3" or "yolov5"), for decoding
            on the host; metadata written without it is "yolov3".
        agnostic_nms: a predictor of the artifact runs one NMS over all classes
            unless told otherwise (``export.py --agnostic-nms``); metadata written
            without it is per class. The graph's own NMS is always per class, so the
            agnostic one runs on the host.
    """

    class_names: list
    input_size: int
    anchors: list
    nms: str = "graph"
    conf: float = DEFAULT_CONF
    nms_iou: float = DEFAULT_NMS_IOU
    max_boxes: int = DEFAULT_MAX_BOXES
    precision: str = "fp32"
    outputs: list = field(default_factory=list)
    backbone: str = ""
    checkpoint: str = ""
    box_coding: str = DEFAULT_BOX_CODING
    agnostic_nms: bool = False

    def to_json(self):
        """The metadata as a JSON string, with its format name and version."""
        return json.dumps({"format": METADATA_KEY, "version": METADATA_VERSION, "input": INPUT_NAME,
                           "input_dtype": "uint8", "input_layout": "NHWC RGB 0-255, letterboxed",
                           **asdict(self)})

    @classmethod
    def from_json(cls, text, path):
        """Reads metadata written by ``to_json``; ArtifactError naming ``path`` if it cannot."""
        try:
            data = json.loads(text)
            if data.get("format") != METADATA_KEY:
                raise ValueError(f"format is {data.get('format')!r}")
            if int(data.get("version", 0)) > METADATA_VERSION:
                raise ValueError(f"version {data['version']} is newer than this code reads ({METADATA_VERSION})")
            names = set(cls.__dataclass_fields__)
            meta = cls(**{k: v for k, v in data.items() if k in names})
            meta.input_size = check_input_size(meta.input_size)
            anchors = np.asarray(meta.anchors, np.float32)
            if anchors.shape != (9, 2) or len(meta.class_names) < 1 or meta.nms not in ("graph", "host", "none"):
                raise ValueError("class names, anchors or nms field malformed")
            if meta.box_coding not in BOX_CODINGS:
                raise ValueError(f"box coding {meta.box_coding!r} is none of {', '.join(BOX_CODINGS)}")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ArtifactError(f"{path}: unreadable export metadata ({exc}); export the model again") from None
        return meta


def _not_exported(path, where):
    return ArtifactError(f"{path}: no {METADATA_KEY!r} metadata {where}; only models written by export.py "
                         "can be run (they carry the class names, input size and anchors)")


def open_model_file(path, classes_path=None, input_size=None, anchors_path=None, conf=DEFAULT_CONF,
                   nms_iou=DEFAULT_NMS_IOU, max_boxes=DEFAULT_MAX_BOXES, letterbox=True, agnostic_nms=None):
    """A predictor for a checkpoint or an exported artifact, chosen by the path.

    Args:
        path: ``*.keras`` / ``*.weights.h5`` checkpoint, ``*.onnx``, ``*.tflite``,
            ``*.xml`` (OpenVINO) or a SavedModel folder.
        classes_path: optional classes file overriding the names (same count).
        input_size: optional input side; an artifact only runs at its own.
        anchors_path: optional anchors file overriding the model's.
        conf: score threshold.
        nms_iou: NMS IoU threshold.
        max_boxes: boxes kept per class.
        letterbox: letterbox (True) or plain resize (False).
        agnostic_nms: one NMS over all classes (True), one per class (False), or
            None: an export's own setting, class-wise for a checkpoint.

    Returns:
        a ``BasePredictor``.

    Raises:
        ArtifactError: a missing, corrupt or foreign artifact, or a missing runtime
            (``MissingRuntimeError``, naming the ``pip install`` line).
        CheckpointError, ClassCountError, FileNotFoundError, ValueError: from the
            checkpoint, classes or anchors files.
    """
    options = dict(conf=conf, nms_iou=nms_iou, max_boxes=max_boxes, letterbox=letterbox)
    if Path(path).name.endswith(CHECKPOINT_SUFFIXES):
        return Predictor.from_checkpoint(path, classes_path=classes_path, input_size=input_size,
                                         anchors_path=anchors_path, agnostic_nms=bool(agnostic_nms), **options)
    options["agnostic_nms"] = agnostic_nms
    runtime = runtime_for(path)
    class_names = load_classes(classes_path) if classes_path else None
    anchors = load_anchors(anchors_path) if anchors_path else None
    return runtime(path, class_names=class_names, input_size=input_size, anchors=anchors, **options)


def runtime_for(path):
    """The ExportedPredictor subclass that runs ``path``; ArtifactError if none does."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SavedModelPredictor
        raise ArtifactError(f"{path}: a folder but not a SavedModel (no saved_model.pb in it)")
    if not path.exists():
        raise ArtifactError(f"Model file not found: {path}")
    by_format = {"onnx": OnnxPredictor, "tflite": TFLitePredictor, "openvino": OpenVINOPredictor}
    for fmt, suffix in FORMAT_SUFFIX.items():
        if path.suffix.lower() == suffix:
            return by_format[fmt]
    raise ArtifactError(
        f"{path}: unknown model type; expected a checkpoint (.keras, .weights.h5) or an export "
        "(.onnx, .tflite, .xml, or a SavedModel folder)"
    )


class ExportedPredictor(BasePredictor):
    """An exported artifact behind the predictor interface.

    Subclasses open the artifact (``_open``, returning its ExportMetadata) and run it
    (``_run``: a uint8 batch and output names -> dict of arrays).

    Args:
        path: the artifact.
        class_names: display names overriding the artifact's (same count).
        input_size: must be the artifact's own when given.
        anchors: (9, 2) anchors overriding the artifact's (decoding then runs here).
        conf, nms_iou, max_boxes, letterbox: as for ``Predictor``.
        agnostic_nms: as for ``Predictor``; None: the artifact's own setting.
    """

    runtime_name = "a runtime"

    def __init__(self, path, class_names=None, input_size=None, anchors=None, conf=DEFAULT_CONF,
                 nms_iou=DEFAULT_NMS_IOU, max_boxes=DEFAULT_MAX_BOXES, letterbox=True, agnostic_nms=None):
        self.path = Path(path)
        self.metadata = meta = self._open()
        if class_names is not None and len(class_names) != len(meta.class_names):
            raise ClassCountError(
                f"The classes file names {len(class_names)} classes but {self.path} detects "
                f"{len(meta.class_names)}; pass the classes file the model was trained with."
            )
        if input_size is not None and check_input_size(input_size) != meta.input_size:
            raise ArtifactError(
                f"{self.path} was exported for input {meta.input_size} and runs only at that size; "
                f"export it again with --input-size {input_size}"
            )
        super().__init__(class_names if class_names is not None else meta.class_names, meta.input_size,
                         anchors if anchors is not None else meta.anchors, conf=conf, nms_iou=nms_iou,
                         max_boxes=max_boxes, letterbox=letterbox, box_coding=meta.box_coding,
                         agnostic_nms=meta.agnostic_nms if agnostic_nms is None else agnostic_nms)
        self.host_stage = self._choose_host_stage(anchors)
        if self.host_stage == "decode":
            self._host = tf.function(self.decoder, reduce_retracing=True)
        elif self.host_stage == "nms":
            self._host = tf.function(self.decoder.nms, reduce_retracing=True)

    def _choose_host_stage(self, anchors):
        """What runs on the host: nothing ("none"), NMS ("nms") or decoding and NMS ("decode")."""
        meta = self.metadata
        same_anchors = anchors is None or np.allclose(np.asarray(anchors, np.float32), np.asarray(meta.anchors))
        if meta.nms == "none" or not same_anchors:
            if not same_anchors:
                log.info("%s: other anchors than the export's; decoding and NMS run on the host.", self.path.name)
            return "decode"
        if meta.nms == "host":
            return "nms"
        if self.agnostic_nms:
            log.info("%s: class-agnostic NMS runs on the host (the graph's NMS is per class).", self.path.name)
            return "decode"
        asked = (self.nms_iou, self.max_boxes)
        if asked == (meta.nms_iou, meta.max_boxes) and self.conf >= meta.conf:
            return "none"
        log.info("%s: NMS settings (conf %g, IoU %g, %d boxes per class) differ from the export's "
                 "(conf %g, IoU %g, %d); decoding and NMS run on the host.", self.path.name, self.conf,
                 self.nms_iou, self.max_boxes, meta.conf, meta.nms_iou, meta.max_boxes)
        return "decode"

    def _detect(self, batch):
        if self.host_stage == "none":
            return self._run(batch, DETECTION_OUTPUTS)
        if self.host_stage == "nms":
            out = self._run(batch, ("boxes", "scores"))
            found = self._host(tf.constant(out["boxes"]), tf.constant(out["scores"]))
        else:
            heads = self._run(batch, RAW_OUTPUTS)
            found = self._host([tf.constant(heads[name]) for name in RAW_OUTPUTS])
        return {"boxes": found["boxes"].numpy(), "scores": found["scores"].numpy(),
                "classes": found["classes"].numpy(), "count": found["valid"].numpy()}

    def _raw(self, batch):
        out = self._run(batch, RAW_OUTPUTS)
        return [out[name] for name in RAW_OUTPUTS]

    @property
    def precision(self):
        """What the graph runs in: "fp32", "int8" or "bf16"."""
        return self.metadata.precision

    def _open(self):
        raise NotImplementedError

    def _run(self, batch, names):
        raise NotImplementedError

    def _check_outputs(self, meta, available):
        """ArtifactError unless the graph has the outputs ``meta`` promises."""
        needed = {"graph": DETECTION_OUTPUTS, "host": ("boxes", "scores"), "none": ()}[meta.nms]
        missing = [name for name in (*needed, *RAW_OUTPUTS) if name not in available]
        if missing:
            raise ArtifactError(f"{self.path}: the graph lacks the outputs {missing} its metadata promises; "
                                "export the model again")

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r}, nms={self.metadata.nms}, host={self.host_stage})"


def _threads():
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class OnnxPredictor(ExportedPredictor):
    """An ``.onnx`` export run by ONNX Runtime on the CPU."""

    runtime_name = "ONNX Runtime"

    def _open(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingRuntimeError(
                f"{self.path}: running .onnx models needs ONNX Runtime: {PIP_INSTALL['onnxruntime']}"
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads that spin while waiting for work gain little on an idle machine and
        # double the latency when other processes share the cores (measured on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own types (InvalidProtobuf, Fail, ...)
            raise ArtifactError(f"{self.path}: not a readable ONNX model ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]})") from None
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise _not_exported(self.path, "in its metadata_props")
        meta = ExportMetadata.from_json(text, self.path)
        self._check_outputs(meta, {o.name for o in self.session.get_outputs()})
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: the graph has {len(inputs)} inputs, expected one image input")
        self._input = inputs[0].name
        return meta

    def _run(self, batch, names):
        values = self.session.run(list(names), {self._input: batch})
        return dict(zip(names, values))


class TFLitePredictor(ExportedPredictor):
    """A ``.tflite`` export run by the LiteRT interpreter (XNNPACK on the CPU)."""

    runtime_name = "LiteRT"

    def _open(self):
        meta_path = self.path.with_name(self.path.name + ".json")
        if not meta_path.is_file():
            raise _not_exported(self.path, f"beside it ({meta_path.name} is missing)")
        meta = ExportMetadata.from_json(meta_path.read_text(encoding="utf-8"), meta_path)
        interpreter_class = _litert_interpreter(self.path)
        try:
            self.interpreter = interpreter_class(model_path=str(self.path), num_threads=_threads())
            self._runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            first_line = str(exc).splitlines()[0][:300]
            raise ArtifactError(f"{self.path}: not a readable TFLite model ({first_line})") from None
        details = self._runner.get_output_details()
        self._check_outputs(meta, set(details))
        if list(self._runner.get_input_details()) != [INPUT_NAME]:
            raise ArtifactError(f"{self.path}: expected one input named {INPUT_NAME!r}")
        return meta

    def _run(self, batch, names):
        out = self._runner(**{INPUT_NAME: batch})
        return {name: out[name] for name in names}


def _litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    interpreter = getattr(getattr(tf, "lite", None), "Interpreter", None)
    if interpreter is None:
        raise MissingRuntimeError(f"{path}: running .tflite models needs LiteRT: {PIP_INSTALL['litert']}")

    def make(**kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            return interpreter(**kwargs)

    return make


class SavedModelPredictor(ExportedPredictor):
    """A SavedModel folder run by TensorFlow (its ``serving_default`` signature)."""

    runtime_name = "TensorFlow SavedModel"

    def _open(self):
        meta_path = self.path / SAVED_MODEL_METADATA
        if not meta_path.is_file():
            raise _not_exported(self.path, f"({SAVED_MODEL_METADATA} is missing from the folder)")
        meta = ExportMetadata.from_json(meta_path.read_text(encoding="utf-8"), meta_path)
        try:
            self._loaded = tf.saved_model.load(str(self.path))
            self._signature = self._loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as exc:
            raise ArtifactError(f"{self.path}: not a readable SavedModel ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]})") from None
        self._check_outputs(meta, set(self._signature.structured_outputs))
        return meta

    def _run(self, batch, names):
        out = self._signature(**{INPUT_NAME: tf.constant(batch)})
        return {name: out[name].numpy() for name in names}


class OpenVINOPredictor(ExportedPredictor):
    """An OpenVINO IR (``.xml`` with its ``.bin``) run on the CPU.

    The inference precision is the artifact's unless ``precision`` says otherwise:
    "bf16" (faster on CPUs with AMX or AVX-512 BF16; float32 on others), else float32.
    An int8 model runs its quantized operations in int8 either way.

    Args:
        path: the ``.xml``.
        precision: None (the artifact's), "fp32" or "bf16".
        **options: as for ``ExportedPredictor``.
    """

    runtime_name = "OpenVINO"

    def __init__(self, path, precision=None, **options):
        if precision not in (None, "fp32", "bf16"):
            raise ValueError(f"precision must be None, 'fp32' or 'bf16', got {precision!r}")
        self._asked_precision = precision
        self._streams = None  # (the throughput copy, its streams), made when first asked for
        super().__init__(path, **options)

    def _open(self):
        try:
            import openvino as ov
        except ImportError:
            raise MissingRuntimeError(
                f"{self.path}: running OpenVINO models (.xml) needs OpenVINO: {PIP_INSTALL['openvino']}"
            ) from None
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ArtifactError(f"{self.path}: not a readable OpenVINO model, or its .bin is missing or "
                                f"corrupt ({str(exc).splitlines()[0][:300]})") from None
        if not model.has_rt_info([METADATA_KEY]):
            raise _not_exported(self.path, "in its rt_info")
        meta = ExportMetadata.from_json(model.get_rt_info([METADATA_KEY]).astype(str), self.path)
        self._check_outputs(meta, {name for port in model.outputs for name in port.get_names()})
        self._core, self._model = core, model
        self._compile("LATENCY", meta)
        return meta

    def _compile(self, hint, meta):
        """Compiles the model for the CPU with the performance ``hint`` ("LATENCY": one
        inference stream using every core; "THROUGHPUT": several streams), for batches
        of one image; other batch sizes are compiled when first met (``_compiled_for``)."""
        precision = "bf16" if (self._asked_precision or meta.precision) == "bf16" else "f32"
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
        if "ENABLE_CPU_PINNING" in self._core.get_property("CPU", "SUPPORTED_PROPERTIES"):
            # Threads pinned to cores wait for those cores when other processes share
            # them: on 2 busy cores the median latency was 2-2.5x that of unpinned ones.
            config["ENABLE_CPU_PINNING"] = False
        self._config, self._by_batch, self._compiling = config, {}, threading.Lock()
        self._requests = threading.local()  # one infer request per calling thread and batch size
        self.compiled = self._compiled_for(1)
        runs_bf16 = "bf" in str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision == "bf16" and not runs_bf16 and hint == "LATENCY":
            log.info("%s: this CPU has no bfloat16 support; OpenVINO runs it in float32.", self.path.name)
        self._precision = "int8" if meta.precision == "int8" else "bf16" if runs_bf16 else "fp32"
        self._outputs = {name: index for index, port in enumerate(self.compiled.outputs) for name in port.get_names()}

    def _compiled_for(self, size):
        """The model compiled for batches of ``size`` images, compiled when first asked for.

        The IR's batch is dynamic; OpenVINO runs a graph of fixed shape faster (B0 at
        416 in bfloat16 on 2 cores: 15-17% less time per image at batch 1, 10% at 8),
        and compiling one takes ~0.2 s. A graph whose batch cannot be changed is
        compiled as it is.
        """
        with self._compiling:
            compiled = self._by_batch.get(size)
            if compiled is None:
                model = self._model.clone()
                try:
                    shape = list(model.inputs[0].get_partial_shape())
                    shape[0] = size
                    model.reshape({model.inputs[0]: shape})
                except RuntimeError as exc:  # OpenVINO raises subclasses of its own
                    log.debug("%s: batch fixed at %d failed (%s); compiling it as it is", self.path.name, size, exc)
                    model = self._model
                try:
                    compiled = self._core.compile_model(model, "CPU", self._config)
                except RuntimeError as exc:
                    raise ArtifactError(f"{self.path}: OpenVINO cannot compile it "
                                        f"({str(exc).splitlines()[0][:300]})") from None
                self._by_batch[size] = compiled
        return compiled

    def for_streams(self):
        """A copy compiled for throughput (several inference streams), and how many
        frames to keep in flight on it, each from its own thread: one more than the
        streams, so that a stream has its next frame waiting while the thread of the
        frame it finished hands that one on and letterboxes another (on 2 cores, 2
        streams: a video at 416 ran 5-12% faster with 3 frames in flight than with 2,
        Lite0 and B0, and -1% to +3% with 4; benchmarks/bench_video.py). Itself and 1
        when OpenVINO finds one stream best."""
        if self._streams is None:  # compiled once, for every video of a run
            twin = copy.copy(self)
            twin._compile("THROUGHPUT", self.metadata)
            streams = int(twin.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._streams = (twin, streams + _SPARE_FRAMES_IN_FLIGHT) if streams > 1 else (self, 1)
        return self._streams

    @property
    def precision(self):
        """What the graph runs in: "int8" for a quantized model, else "bf16" or "fp32" as compiled."""
        return self._precision

    def _run(self, batch, names):
        requests = getattr(self._requests, "by_batch", None)
        if requests is None:
            requests = self._requests.by_batch = {}
        request = requests.get(len(batch))
        if request is None:
            request = requests[len(batch)] = self._compiled_for(len(batch)).create_infer_request()
        result = request.infer({0: batch})
        return {name: np.asarray(result[self._outputs[name]]) for name in names}
