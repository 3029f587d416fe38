"""Running a trained detector on images: preprocessing, the network and in-graph
decoding, returning detections in original-image pixels.
"""

import logging
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from utils.checkpoint import load_model
from utils.config import DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU
from utils.decode import YoloDecoder
from utils.image import check_input_size, letterbox, stretch
from utils.model_data import load_anchors, load_classes

log = logging.getLogger(__name__)


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


class Predictor:
    """A detector ready for images: letterbox, network, decoding and NMS.

    Args:
        model: a YoloV3 model.
        class_names: display names (defaults to the model's own).
        input_size: network input side (defaults to the model's).
        anchors: (9, 2) anchors in input pixels (defaults to the model's).
        conf: score threshold.
        nms_iou: NMS IoU threshold.
        max_boxes: boxes kept per class.
        letterbox: letterbox (True) or plain resize (False).
    """

    def __init__(self, model, class_names=None, input_size=None, anchors=None, conf=DEFAULT_CONF,
                 nms_iou=DEFAULT_NMS_IOU, max_boxes=DEFAULT_MAX_BOXES, letterbox=True):
        self.model = model
        if class_names is not None and len(class_names) != model.num_classes:
            raise ClassCountError(
                f"The classes file names {len(class_names)} classes but the model was trained "
                f"with {model.num_classes}; pass the classes file the model was trained with."
            )
        self.class_names = list(class_names) if class_names is not None else list(model.class_names)
        self.input_size = check_input_size(input_size if input_size is not None else model.input_size)
        self.anchors = np.asarray(anchors if anchors is not None else model.anchors, np.float32)
        self.letterbox = letterbox
        self.decoder = YoloDecoder(self.anchors, model.num_classes, self.input_size, conf=conf,
                                   nms_iou=nms_iou, max_boxes=max_boxes, letterbox=letterbox)
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._detect = tf.function(self._detect_graph, input_signature=[spec, tf.TensorSpec((None, 2), tf.int32)])
        self._raw = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    @classmethod
    def from_checkpoint(cls, path, classes_path=None, input_size=None, anchors_path=None, **kwargs):
        """Loads a checkpoint written by train.py; optional files override its metadata."""
        model = load_model(path)
        class_names = load_classes(classes_path) if classes_path else None
        anchors = load_anchors(anchors_path) if anchors_path else None
        return cls(model, class_names=class_names, input_size=input_size, anchors=anchors, **kwargs)

    @property
    def num_classes(self):
        return self.model.num_classes

    def _detect_graph(self, images, image_shapes):
        return self.decoder(self.model(images, training=False), image_shapes)

    def preprocess(self, image):
        """RGB uint8 (H, W, 3) -> uint8 (S, S, 3) network input."""
        return letterbox(image, self.input_size) if self.letterbox else stretch(image, self.input_size)

    def raw_outputs(self, images):
        """Raw head outputs for RGB uint8 images: list of (B, S/stride, S/stride, 3·(5+C)) arrays."""
        batch = np.stack([self.preprocess(im) for im in images]).astype(np.float32)
        return [np.asarray(t) for t in self._raw(batch)]

    def predict_batch(self, images, timings=None):
        """Detects objects in a list of RGB uint8 (H, W, 3) images.

        Args:
            images: list of arrays, any sizes.
            timings: optional dict; receives "pre", "net_post" seconds.

        Returns:
            list of Detections, one per image.
        """
        if not images:
            return []
        t0 = time.perf_counter()
        batch = np.stack([self.preprocess(im) for im in images]).astype(np.float32)
        shapes = np.array([im.shape[:2] for im in images], np.int32)
        t1 = time.perf_counter()
        out = self._detect(batch, shapes)
        boxes, scores = out["boxes"].numpy(), out["scores"].numpy()
        classes, valid = out["classes"].numpy(), out["valid"].numpy()
        if timings is not None:
            timings["pre"] = t1 - t0
            timings["net_post"] = time.perf_counter() - t1
        return [Detections(boxes[i, : valid[i]], scores[i, : valid[i]], classes[i, : valid[i]]) for i in range(len(images))]

    def predict(self, image):
        """Detections of one RGB uint8 (H, W, 3) image."""
        return self.predict_batch([image])[0]
