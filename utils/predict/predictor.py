"""Running a detector on images: preprocessing, the network with decoding and NMS,
and the boxes mapped back onto each image.

``BasePredictor`` is what every runtime shares: letterboxing (``utils.image``),
batching, the map from input pixels back to each image and the ``Detections``.
``Predictor`` runs a Keras model, with decoding and NMS, as one TensorFlow graph;
``utils.predict.runtimes`` runs exported artifacts (ONNX, TFLite, SavedModel,
OpenVINO) behind the same interface. The graph is written once, in
``detection_outputs``, and exported as it is.
"""

import logging
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from utils.checkpoint import load_model
from utils.config import DEFAULT_BOX_CODING, DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU, STRIDES
from utils.decode import YoloDecoder
from utils.image import boxes_to_image, check_input_size, letterbox, stretch
from utils.model_data import load_anchors, load_classes

log = logging.getLogger(__name__)

# Names of the detection graph's outputs, as exported artifacts carry them.
DETECTION_OUTPUTS = ("boxes", "scores", "classes", "count")
# Names of the raw head outputs, in STRIDES order.
RAW_OUTPUTS = tuple(f"raw_s{stride}" for stride in STRIDES)


@dataclass
class Detections:
    """Detections of one image.

    Attributes:
        boxes: float32 (N, 4) xyxy pixels of the original image.
        scores: float32 (N,) objectness × class probability.
        classes: int32 (N,) class ids.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self):
        return len(self.scores)


class ClassCountError(ValueError):
    """A classes file whose length differs from the model's class count."""


def detection_outputs(model, decoder, images, raw=False):
    """The detection graph: network, decoding and NMS on a batch of input images.

    Args:
        model: a YoloV3 model.
        decoder: the YoloDecoder holding the anchors and the NMS settings.
        images: (B, S, S, 3) uint8 or float RGB, 0–255, already letterboxed.
        raw: return the raw head outputs only (no decoding, no NMS).

    Returns:
        dict of tensors: "boxes" (B, K, 4) xyxy pixels of the input, "scores" (B, K),
        "classes" (B, K) int32, "count" (B,) int32 (the first count[i] rows of image
        i are detections, best first) and the raw heads under ``RAW_OUTPUTS``,
        (B, S/stride, S/stride, 3·(5+C)); with ``raw`` only the raw heads.
    """
    heads = model(tf.cast(images, tf.float32), training=False)
    outputs = dict(zip(RAW_OUTPUTS, heads))
    if raw:
        return outputs
    found = decoder(heads)
    outputs.update(boxes=found["boxes"], scores=found["scores"], classes=found["classes"], count=found["valid"])
    return outputs


class BasePredictor:
    """Letterboxing, batching and the map back to the images, around any runtime.

    Subclasses run the network: ``_detect`` returns the detection outputs of a
    batch (``DETECTION_OUTPUTS`` as NumPy arrays, boxes in input pixels) and
    ``_raw`` the raw heads.

    Args:
        class_names: C display names.
        input_size: side S of the square network input.
        anchors: (9, 2) anchors in input pixels.
        conf: score threshold.
        nms_iou: NMS IoU threshold.
        max_boxes: boxes kept per class.
        letterbox: letterbox (True) or plain resize (False).
        box_coding: how the heads encode a box, "yolov3" or "yolov5".
        agnostic_nms: one NMS over all classes instead of one per class
            (``utils.decode.YoloDecoder``'s ``agnostic``).
    """

    def __init__(self, class_names, input_size, anchors, conf=DEFAULT_CONF, nms_iou=DEFAULT_NMS_IOU,
                 max_boxes=DEFAULT_MAX_BOXES, letterbox=True, box_coding=DEFAULT_BOX_CODING, agnostic_nms=False):
        self.class_names = list(class_names)
        self.input_size = check_input_size(input_size)
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.conf = float(conf)
        self.nms_iou = float(nms_iou)
        self.max_boxes = int(max_boxes)
        self.letterbox = bool(letterbox)
        self.agnostic_nms = bool(agnostic_nms)
        self.decoder = YoloDecoder(self.anchors, len(self.class_names), self.input_size, conf=self.conf,
                                   nms_iou=self.nms_iou, max_boxes=self.max_boxes, letterbox=self.letterbox,
                                   box_coding=box_coding, agnostic=self.agnostic_nms)

    @property
    def num_classes(self):
        return len(self.class_names)

    def preprocess(self, image):
        """RGB uint8 (H, W, 3) -> uint8 (S, S, 3) network input."""
        return letterbox(image, self.input_size) if self.letterbox else stretch(image, self.input_size)

    def batch(self, images):
        """RGB uint8 images of any sizes -> uint8 (B, S, S, 3) network input."""
        return np.stack([self.preprocess(im) for im in images])

    def raw_outputs(self, images):
        """Raw head outputs for RGB uint8 images: list of (B, S/stride, S/stride, 3·(5+C)) arrays."""
        return [np.asarray(t, np.float32) for t in self._raw(self.batch(images))]

    def predict_batch(self, images, timings=None):
        """Detects objects in a list of RGB uint8 (H, W, 3) images.

        Args:
            images: list of arrays, any sizes.
            timings: optional dict; receives "pre" (letterboxing) and "net_post"
                (network, decoding and NMS) seconds.

        Returns:
            list of Detections, one per image.
        """
        if not images:
            return []
        t0 = time.perf_counter()
        batch = self.batch(images)
        t1 = time.perf_counter()
        out = self._detect(batch)
        if timings is not None:
            timings["pre"] = t1 - t0
            timings["net_post"] = time.perf_counter() - t1
        results = []
        for i, image in enumerate(images):
            n = int(out["count"][i])
            scores = np.asarray(out["scores"][i, :n], np.float32)
            # Artifacts exported with a lower threshold than asked for: NMS never lets a
            # lower score suppress a higher one, so filtering afterwards is exact.
            keep = scores > self.conf
            boxes = boxes_to_image(out["boxes"][i, :n][keep], image.shape[:2], self.input_size, self.letterbox)
            results.append(Detections(boxes, scores[keep], np.asarray(out["classes"][i, :n][keep], np.int32)))
        return results

    def predict(self, image):
        """Detections of one RGB uint8 (H, W, 3) image."""
        return self.predict_batch([image])[0]

    def for_streams(self):
        """The predictor to run over a video file, where frames per second matter more
        than the delay of one frame, and how many frames it takes at once, each from
        a thread of its own: ``(predictor, frames in flight)``. Here itself and 1;
        a runtime with parallel inference streams overrides it."""
        return self, 1

    def _detect(self, batch):
        raise NotImplementedError

    def _raw(self, batch):
        raise NotImplementedError


class Predictor(BasePredictor):
    """A Keras detector ready for images: letterbox, network, decoding and NMS.

    Args:
        model: a YoloV3 model.
        class_names: display names (defaults to the model's own).
        input_size: network input side (defaults to the model's).
        anchors: (9, 2) anchors in input pixels (defaults to the model's).
        conf: score threshold.
        nms_iou: NMS IoU threshold.
        max_boxes: boxes kept per class.
        letterbox: letterbox (True) or plain resize (False).
        agnostic_nms: one NMS over all classes instead of one per class.
    """

    def __init__(self, model, class_names=None, input_size=None, anchors=None, conf=DEFAULT_CONF,
                 nms_iou=DEFAULT_NMS_IOU, max_boxes=DEFAULT_MAX_BOXES, letterbox=True, agnostic_nms=False):
        if class_names is not None and len(class_names) != model.num_classes:
            raise ClassCountError(
                f"The classes file names {len(class_names)} classes but the model was trained "
                f"with {model.num_classes}; pass the classes file the model was trained with."
            )
        super().__init__(
            class_names if class_names is not None else model.class_names,
            input_size if input_size is not None else model.input_size,
            anchors if anchors is not None else model.anchors,
            conf=conf, nms_iou=nms_iou, max_boxes=max_boxes, letterbox=letterbox,
            box_coding=getattr(model, "box_coding", DEFAULT_BOX_CODING), agnostic_nms=agnostic_nms,
        )
        self.model = model
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.uint8)
        self._detect_graph = tf.function(lambda x: detection_outputs(model, self.decoder, x), input_signature=[spec])
        self._raw_graph = tf.function(lambda x: detection_outputs(model, None, x, raw=True), input_signature=[spec])

    @classmethod
    def from_checkpoint(cls, path, classes_path=None, input_size=None, anchors_path=None, **kwargs):
        """Loads a checkpoint written by train.py; optional files override its metadata."""
        model = load_model(path)
        class_names = load_classes(classes_path) if classes_path else None
        anchors = load_anchors(anchors_path) if anchors_path else None
        return cls(model, class_names=class_names, input_size=input_size, anchors=anchors, **kwargs)

    def _detect(self, batch):
        out = self._detect_graph(batch)
        return {key: out[key].numpy() for key in DETECTION_OUTPUTS}

    def _raw(self, batch):
        out = self._raw_graph(batch)
        return [out[key].numpy() for key in RAW_OUTPUTS]
