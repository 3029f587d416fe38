"""The EfficientNet-YOLOv3 detector: backbone pyramid, YOLOv3 FPN neck and heads.

Calling the model returns the raw head tensors, in ``STRIDES`` order (32, 16, 8),
each (B, H/stride, W/stride, 3·(5+C)). Decoding and NMS live in ``utils.decode``.
The model's config carries everything prediction needs (classes, backbone, input
size, anchors, the box coding of the heads), so a saved ``.keras`` archive is a
complete artifact.
"""

import keras
import numpy as np
import tensorflow as tf

from nets.backbones import backbone_options, build_backbone, get_spec
from nets.class_separation import ClassSeparation
from utils import keras_compat
from utils.config import (
    ANCHOR_MASK,
    BN_MOMENTUM,
    CONV_INIT_STDDEV,
    DEFAULT_ANCHORS,
    DEFAULT_BACKBONE,
    DEFAULT_BOX_CODING,
    DEFAULT_INPUT_SIZE,
    DEFAULT_WEIGHT_DECAY,
    LEAKY_SLOPE,
    NUM_ANCHORS_PER_LEVEL,
    STRIDES,
)
from utils.decode import check_box_coding
from utils.model_data import load_anchors


def _cbl(x, filters, kernel_size, name, weight_decay):
    """Conv2D (no bias, L2 on the kernel) + BatchNorm + LeakyReLU(0.1)."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=CONV_INIT_STDDEV),
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay else None,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_act")(x)


def _five_conv(x, filters, name, weight_decay):
    for i, (mult, k) in enumerate([(1, 1), (2, 3), (1, 1), (2, 3), (1, 1)]):
        x = _cbl(x, mult * filters, k, f"{name}_{i + 1}", weight_decay)
    return x


def _head(x, filters, out_channels, name, weight_decay):
    x = _cbl(x, 2 * filters, 3, f"{name}_conv3", weight_decay)
    return keras.layers.Conv2D(
        out_channels,
        1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=CONV_INIT_STDDEV),
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay else None,
        name=f"{name}_pred",
    )(x)


def build_neck_and_heads(pyramid, num_classes, weight_decay=DEFAULT_WEIGHT_DECAY):
    """The YOLOv3 FPN neck and three heads over a pyramid.

    Args:
        pyramid: dict {"P3", "P4", "P5"} of feature tensors (B, H/8|16|32, W/…, c).
        num_classes: C.
        weight_decay: L2 factor on the convolution kernels (0 disables).

    Returns:
        list of raw head tensors in STRIDES order (32, 16, 8), each
        (B, H/stride, W/stride, 3·(5+C)).
    """
    out_channels = NUM_ANCHORS_PER_LEVEL * (5 + num_classes)
    c3, c4, c5 = (int(pyramid[k].shape[-1]) for k in ("P3", "P4", "P5"))

    x = _five_conv(pyramid["P5"], c5, "neck_p5", weight_decay)
    out_32 = _head(x, c5, out_channels, "head_p5", weight_decay)

    x = _cbl(x, c4, 1, "neck_p5_reduce", weight_decay)
    x = keras.layers.UpSampling2D(2, name="neck_p5_up")(x)
    x = keras.layers.Concatenate(name="neck_p4_concat")([x, pyramid["P4"]])
    x = _five_conv(x, c4, "neck_p4", weight_decay)
    out_16 = _head(x, c4, out_channels, "head_p4", weight_decay)

    x = _cbl(x, c3, 1, "neck_p4_reduce", weight_decay)
    x = keras.layers.UpSampling2D(2, name="neck_p4_up")(x)
    x = keras.layers.Concatenate(name="neck_p3_concat")([x, pyramid["P3"]])
    x = _five_conv(x, c3, "neck_p3", weight_decay)
    out_8 = _head(x, c3, out_channels, "head_p3", weight_decay)
    return [out_32, out_16, out_8]


@keras.saving.register_keras_serializable(package="effyolo")
class YoloV3(keras.Model):
    """EfficientNet-YOLOv3 detector (a functional model with its own config).

    Args:
        num_classes: number of object classes C.
        backbone: backbone name, e.g. "efficientnet-b0".
        class_names: optional list of C class names, stored for prediction.
        category_ids: optional list of C dataset category ids (the original COCO ids
            of a model trained on COCO JSON), stored so that evaluation writes
            results with them; None for other datasets.
        input_size: default square input side for prediction (a multiple of 32).
        anchors: (9, 2) anchors in input pixels, sorted by area; defaults to
            model_data/yolo_anchors.txt.
        backbone_weights: "imagenet", a local file, or None. Used only when the model
            is first built; not part of the saved config.
        weight_decay: L2 factor on neck and head kernels.
        alpha: width multiplier of a ``mobilenetv2`` backbone (0.35–1.4, default 1.0);
            must be None for other backbones.
        drop_connect_rate: stochastic-depth rate of an EfficientNet-family backbone
            (default 0.2); MobileNetV2 has none. Stored in the config, like ``alpha``,
            so a saved model is rebuilt with the same architecture.
        box_coding: how the heads encode a box, "yolov3" or "yolov5" (set by the
            assigner it is trained with; see ``utils.decode.decode_head``). A model
            saved without it decodes as "yolov3".
        **kwargs: passed to keras.Model (e.g. name).
    """

    def __init__(
        self,
        num_classes,
        backbone=DEFAULT_BACKBONE,
        class_names=None,
        input_size=DEFAULT_INPUT_SIZE,
        anchors=None,
        backbone_weights=None,
        weight_decay=DEFAULT_WEIGHT_DECAY,
        alpha=None,
        drop_connect_rate=None,
        category_ids=None,
        box_coding=DEFAULT_BOX_CODING,
        **kwargs,
    ):
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for a model with {num_classes} classes.")
        if category_ids is not None and (len(category_ids) != num_classes or len(set(category_ids)) != num_classes):
            raise ValueError(f"category_ids must be {num_classes} distinct ids, one per class, got {category_ids!r}")
        box_coding = check_box_coding(box_coding)
        anchors = load_anchors(DEFAULT_ANCHORS) if anchors is None else np.asarray(anchors, np.float32).reshape(-1, 2)
        # Fails early, with suggestions, for an unknown name or a bad option.
        spec = get_spec(backbone)
        options = backbone_options(spec.name, alpha=alpha, drop_connect_rate=drop_connect_rate)

        inputs = keras.Input((None, None, 3), name="image")
        pyramid = build_backbone(spec.name, weights=backbone_weights, **options)(inputs)
        outputs = build_neck_and_heads(pyramid, num_classes, weight_decay)
        kwargs.setdefault("name", "yolov3")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.num_classes = num_classes
        self.backbone_name = spec.name
        self.backbone_alpha = options["alpha"]
        self.drop_connect_rate = options["drop_connect_rate"]
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.category_ids = [int(i) for i in category_ids] if category_ids is not None else None
        self.input_size = int(input_size)
        self.anchors = anchors
        self.weight_decay = float(weight_decay)
        self.box_coding = box_coding
        self.loss_fn = None
        init_head_biases(self)
        set_batchnorm_momentum(self, BN_MOMENTUM)
        # Loss parts shown beside the total in fit()'s logs.
        self._component_trackers = {
            key: keras.metrics.Mean(name=f"{key}_loss") for key in ("box", "obj", "cls")
        }
        # Whether the classes are told apart at the objects (nets.class_separation).
        self.class_separation = ClassSeparation(num_classes)

    @property
    def level_anchors(self):
        """List of (3, 2) anchors in input pixels per head, in STRIDES order."""
        return [self.anchors[list(mask)] for mask in ANCHOR_MASK]

    def get_config(self):
        config = {
            "name": self.name,
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "class_names": self.class_names,
            "input_size": self.input_size,
            "anchors": self.anchors.tolist(),
            "weight_decay": self.weight_decay,
            "alpha": self.backbone_alpha,
            "drop_connect_rate": self.drop_connect_rate,
            "box_coding": self.box_coding,
        }
        if self.category_ids is not None:  # only then, so that other checkpoints stay as before
            config["category_ids"] = self.category_ids
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        return cls(**config)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """YOLOv3 loss plus the kernels' L2 penalties; needs ``loss_fn`` set for training."""
        if self.loss_fn is None:
            raise RuntimeError("YoloV3.loss_fn is not set: assign a nets.loss.YoloLoss before fit/evaluate.")
        total, components = self.loss_fn(y, y_pred)
        for key, tracker in self._component_trackers.items():
            tracker.update_state(components[key])
        self.class_separation.update_state(y[: len(STRIDES)], y_pred)
        if self.losses:
            total = total + keras.ops.sum(keras.ops.stack(self.losses))
        # Each replica returns its own batch mean; the gradients of all replicas are
        # summed, so scale as Keras' built-in losses do (fit() unscales for the logs).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return total / replicas if replicas > 1 else total

    # Keras 3 and MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388): fit()
    # reduces the first input batch over the workers to learn its shapes, which fails
    # for a batch of several tensors, and reduces each scalar log along an axis it
    # does not have. The shapes are read from this worker's own batch instead, and the
    # logs are handed over as length-1 vectors, whose mean over workers is a scalar.
    # Overrides private Keras API: keras_compat.SYMBOLIC_BUILD_METHOD names it, with
    # the signature checked by tests/nets/test_keras_compat.py.

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = keras_compat.model_distribute_strategy(self)
        if iterator is None or not _multi_worker(strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            break
        local = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, batch)
        return super()._maybe_symbolic_build(data_batch=local)

    def train_step(self, data):
        return _vector_logs(super().train_step(data))

    def test_step(self, data):
        return _vector_logs(super().test_step(data))


def _multi_worker(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and keras_compat.worker_count(strategy) > 1)


def _vector_logs(logs):
    if not _multi_worker(tf.distribute.get_strategy()):
        return logs
    return {key: tf.reshape(value, [1]) if tf.is_tensor(value) and value.shape.rank == 0 else value
            for key, value in logs.items()}


def set_synchronized_batchnorm(model, synchronized=True):
    """Makes every BatchNormalization layer compute its batch statistics over all
    replicas (all devices and workers) instead of each replica's own share of the
    batch: the statistics of the global batch, at the cost of one all-reduce per layer
    and step. Not part of the saved model."""
    for layer in keras_compat.nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-statistics momentum of every BatchNormalization layer, nested ones too.

    keras.applications uses 0.99, which needs about a thousand steps before the
    moving statistics describe a network trained from scratch; until then the model
    in inference mode (validation, mAP) sees wrong statistics in every layer and its
    outputs barely depend on the image.
    """
    for layer in keras_compat.nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def init_head_biases(model):
    """Starts the prediction biases at sensible priors instead of 0.

    With zero biases every cell starts at objectness 0.5 and the first epochs go
    into pushing all of them down; from scratch that can stall learning for many
    epochs. Objectness starts at about 8 objects per image spread over a level's
    cells, class probabilities at 0.6 / (C − 0.99).

    Args:
        model: a freshly built YoloV3 (weights loaded later overwrite these).
    """
    num_classes = model.num_classes
    cls_logit = float(np.log(0.6 / max(num_classes - 0.99, 0.01)))
    for stride, level in zip(STRIDES, ("p5", "p4", "p3")):
        cells = max((model.input_size / stride) ** 2, 1.0)
        prior = float(np.clip(8.0 / cells, 1e-4, 0.5))
        bias = np.zeros((NUM_ANCHORS_PER_LEVEL, 5 + num_classes), np.float32)
        bias[:, 4] = np.log(prior / (1.0 - prior))
        bias[:, 5:] = cls_logit
        model.get_layer(f"head_{level}_pred").bias.assign(bias.reshape(-1))


def freeze_backbone(model, frozen=True):
    """Freezes (or unfreezes) the backbone sub-model by its name, "backbone"."""
    model.get_layer("backbone").trainable = not frozen

