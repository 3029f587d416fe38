"""The served detector: its predictor, the variants other thresholds need, and the runs the batcher makes.

The predictor is opened with a score threshold no higher than ``FLOOR_CONF``, and a
request's own threshold is applied by filtering: NMS never lets a lower score
suppress a higher one, so this gives exactly the detections of a predictor made at
the request's threshold (``utils.predict.runtimes`` relies on the same fact). Other
NMS settings, or a threshold under the floor, need a predictor of their own: one
is made from the same model or artifact when first asked for, and the last few are
kept.
"""

import collections
import math
import threading
from dataclasses import dataclass

import numpy as np

from utils.predict.predictor import DETECTION_OUTPUTS, RAW_OUTPUTS, Detections, Predictor
from utils.predict.runtimes import ExportedPredictor, OpenVINOPredictor

# The highest score threshold the served predictor is opened with: requests (and the
# browser page's slider) down to it are answered by filtering.
FLOOR_CONF = 0.1
# Predictors kept for other NMS settings (each holds a compiled graph).
KEPT_VARIANTS = 4
# The step that thresholds under the floor are rounded down to, so that a few variants serve them all.
CONF_STEP = 0.01
# What the batcher's key is for v2 tensors (the served settings, input already letterboxed).
TENSOR_KEY = "tensor"


@dataclass(frozen=True)
class Thresholds:
    """The detection settings of one request.

    Attributes:
        conf: lowest score kept.
        nms_iou: IoU above which NMS drops the weaker box.
        max_boxes: most boxes kept per class.
    """

    conf: float
    nms_iou: float
    max_boxes: int


class ServedModel:
    """A predictor behind the service, with the settings requests start from.

    Args:
        predictor: a ``BasePredictor`` (``open_on_runtime``), opened at a ``conf``
            no higher than ``defaults.conf``.
        name: the model's name in URLs (``/v2/models/{name}``).
        defaults: the Thresholds of a request that gives none.
        alone: optional predictor of the same model for a batch that runs while no
            other does: OpenVINO's latency copy (one stream on every core) beside the
            throughput copy (``predictor``, several streams of fewer cores each), so
            that a single client waits no longer than ``predict.py`` takes.
    """

    def __init__(self, predictor, name, defaults, alone=None):
        self.predictor = predictor
        self._alone = alone
        self._running = 0
        self._counting = threading.Lock()
        self.name = name
        self.defaults = defaults
        self.class_names = list(predictor.class_names)
        self.input_size = int(predictor.input_size)
        self.runtime = getattr(predictor, "runtime_name", "TensorFlow")
        self.precision = getattr(predictor, "precision", "fp32")
        self._base = (predictor.conf, predictor.nms_iou, predictor.max_boxes)
        self._variants = collections.OrderedDict()
        self._making = threading.Lock()

    def warm_up(self, sizes=(1,)):
        """Runs the detection and raw-head calls on batches of grey images of each of
        ``sizes``, so that requests do not wait for graphs to be built or compiled (and,
        from a batch worker's thread, for its OpenVINO infer requests to be made)."""
        for size in sizes:
            images = [np.full((self.input_size, self.input_size, 3), 128, np.uint8)] * size
            for predictor in {id(p): p for p in (self.predictor, self._alone) if p is not None}.values():
                predictor.predict_batch(images)
                predictor.raw_outputs(images)

    def batch_sizes(self, max_batch):
        """The batch sizes the batcher may form: powers of two up to ``max_batch`` on
        OpenVINO, which compiles a graph and keeps buffers per batch size in each thread
        (B0 at 416: a few tens of MB each), so that their number stays small; None
        (any size) on the other runtimes."""
        if not isinstance(self.predictor, OpenVINOPredictor):
            return None
        return [2**k for k in range(max_batch.bit_length()) if 2**k <= max_batch]

    def key_for(self, thresholds):
        """The batcher key of a request's thresholds: (conf floor, nms_iou, max_boxes)."""
        floor = self._base[0]
        if thresholds.conf < floor:
            floor = math.floor(thresholds.conf / CONF_STEP) * CONF_STEP
        return (floor, thresholds.nms_iou, thresholds.max_boxes)

    def run(self, key, payloads):
        """Runs one batch for the batcher.

        Args:
            key: ``TENSOR_KEY`` or a key of ``key_for``.
            payloads: for ``TENSOR_KEY``, (uint8 (B, S, S, 3) letterboxed batch,
                output names) pairs; else (RGB uint8 image, conf) pairs.

        Returns:
            one result per payload: a dict of output arrays, or ``Detections``.
        """
        with self._counting:
            self._running += 1
            alone = self._running == 1
        try:
            if key == TENSOR_KEY:
                return self._run_tensors(payloads, alone)
            return self._run_images(key, payloads, alone)
        finally:
            with self._counting:
                self._running -= 1

    def _run_images(self, key, payloads, alone):
        predictor = self._predictor_for(key)
        if predictor is self.predictor and alone and self._alone is not None:
            predictor = self._alone
        found = predictor.predict_batch([image for image, _ in payloads])
        results = []
        for detections, (_, conf) in zip(found, payloads):
            keep = detections.scores > conf
            results.append(Detections(detections.boxes[keep], detections.scores[keep], detections.classes[keep]))
        return results

    def _run_tensors(self, payloads, alone):
        """The v2 outputs of several requests' batches, run as one batch."""
        predictor = self._alone if alone and self._alone is not None else self.predictor
        batch = np.concatenate([tensor for tensor, _ in payloads])
        names = set().union(*(set(wanted) for _, wanted in payloads))
        out = {}
        if names & set(DETECTION_OUTPUTS):
            # The runtime's own call on a letterboxed batch (BasePredictor's contract with its runtimes).
            out.update(self._filtered(predictor._detect(batch)))
        if names & set(RAW_OUTPUTS):
            out.update(zip(RAW_OUTPUTS, predictor._raw(batch)))
        results, start = [], 0
        for tensor, wanted in payloads:
            stop = start + len(tensor)
            results.append({name: out[name][start:stop] for name in wanted})
            start = stop
        return results

    def _filtered(self, detected):
        """The detection outputs at the served threshold: the rows scoring at most
        ``defaults.conf`` are dropped from ``count`` and zeroed, as in an export
        made at that threshold."""
        boxes = np.asarray(detected["boxes"], np.float32).copy()
        scores = np.asarray(detected["scores"], np.float32).copy()
        classes = np.asarray(detected["classes"]).astype(np.int32)
        count = np.asarray(detected["count"]).astype(np.int32).copy()
        rows = np.arange(scores.shape[1])[None, :]
        keep = (rows < count[:, None]) & (scores > self.defaults.conf)
        count = keep.sum(axis=1).astype(np.int32)
        boxes[~keep] = 0.0
        scores[~keep] = 0.0
        classes[~keep] = 0
        return {"boxes": boxes, "scores": scores, "classes": classes, "count": count}

    def _predictor_for(self, key):
        if key == self._base:
            return self.predictor
        with self._making:
            predictor = self._variants.get(key)
            if predictor is None:
                predictor = self._variants[key] = with_thresholds(self.predictor, *key)
                while len(self._variants) > KEPT_VARIANTS:
                    self._variants.popitem(last=False)
            self._variants.move_to_end(key)
        return predictor


def with_thresholds(predictor, conf, nms_iou, max_boxes):
    """A predictor of the same model or artifact, with other detection settings.

    Args:
        predictor: a ``Predictor`` or an ``ExportedPredictor``.
        conf, nms_iou, max_boxes: the settings of the new one.

    Returns:
        a new predictor with the same class names, anchors, letterbox and NMS kind.
    """
    options = dict(class_names=predictor.class_names, anchors=predictor.anchors, conf=conf, nms_iou=nms_iou,
                   max_boxes=max_boxes, letterbox=predictor.letterbox, agnostic_nms=predictor.agnostic_nms)
    if isinstance(predictor, Predictor):
        return Predictor(predictor.model, input_size=predictor.input_size, **options)
    if isinstance(predictor, ExportedPredictor):
        if isinstance(predictor, OpenVINOPredictor) and predictor.precision in ("fp32", "bf16"):
            options["precision"] = predictor.precision
        return type(predictor)(predictor.path, **options)
    raise TypeError(f"cannot change the thresholds of a {type(predictor).__name__}")
