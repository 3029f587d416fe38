"""Every use of private Keras and TensorFlow API in the product, in one place.

Each name below stands for something Keras or TensorFlow keeps private (under
``keras.src``, ``tensorflow.python``, or an attribute whose name starts with ``_``),
with what it works around. All were checked against Keras 3.15.1 and TensorFlow
2.21.0 (``CHECKED_KERAS_VERSION``, ``CHECKED_TENSORFLOW_VERSION``);
``tests/nets/test_keras_compat.py`` fails when one of them moves, disappears or changes
its parameters, which is the signal to look here first after an upgrade.

One use cannot live here: ``nets.yolo.YoloV3`` overrides the private
``keras.Model._maybe_symbolic_build`` (a method override must sit in its class).
``SYMBOLIC_BUILD_METHOD`` and ``SYMBOLIC_BUILD_PARAMETERS`` name it and the
signature it was written against, for the test to check.

The same test lists the product files allowed to touch private API directly: this
module and that override.
"""

from keras.src.applications import (
    efficientnet as _keras_efficientnet,
    efficientnet_v2 as _keras_efficientnet_v2,
    mobilenet_v2 as _keras_mobilenet_v2,
)

CHECKED_KERAS_VERSION = "3.15.1"
CHECKED_TENSORFLOW_VERSION = "2.21.0"

# --- keras.applications internals ---------------------------------------------------
# keras.applications.EfficientNetB0…B7 and EfficientNetV2* do not take
# drop_connect_rate; the family builders behind them do (checked: Keras 3.15.1).
build_efficientnet = _keras_efficientnet.EfficientNet
build_efficientnet_v2 = _keras_efficientnet_v2.EfficientNetV2
# Where Keras downloads the ImageNet files from, and their hashes, read from the same
# modules so that a download matches what keras.applications itself fetches; Keras
# exports neither (checked: Keras 3.15.1). The hashes are keyed by variant ("b0",
# "-s", …), each a (with top, no top) pair.
EFFICIENTNET_WEIGHTS_URL = _keras_efficientnet.BASE_WEIGHTS_PATH
EFFICIENTNET_WEIGHTS_HASHES = _keras_efficientnet.WEIGHTS_HASHES
EFFICIENTNETV2_WEIGHTS_URL = _keras_efficientnet_v2.BASE_WEIGHTS_PATH
EFFICIENTNETV2_WEIGHTS_HASHES = _keras_efficientnet_v2.WEIGHTS_HASHES
MOBILENETV2_WEIGHTS_URL = _keras_mobilenet_v2.BASE_WEIGHT_PATH
# The standard deviations EfficientNet's ImageNet file stores as its input
# normalization's variance (TensorFlow issue 49930; checked: Keras 3.15.1).
EFFICIENTNET_IMAGENET_STDDEV_RGB = tuple(_keras_efficientnet.IMAGENET_STDDEV_RGB)

# --- keras.Model internals ------------------------------------------------------------
# fit() and evaluate() call this method once with the first batch to build the model
# under the distribution strategy. YoloV3 overrides it for MultiWorkerMirroredStrategy
# (tensorflow/tensorflow#72388), whose first batch Keras cannot reduce over the
# workers (checked: Keras 3.15.1, TensorFlow backend).
SYMBOLIC_BUILD_METHOD = "_maybe_symbolic_build"
SYMBOLIC_BUILD_PARAMETERS = ("self", "iterator", "data_batch")


def nested_layers(model):
    """Every layer inside ``model``, nested models' layers included, not the model itself.

    ``model.layers`` lists only the top level, and Keras has no public walk of the
    nested ones (checked: Keras 3.15.1, ``Layer._flatten_layers``).

    Args:
        model: a Keras model or layer.

    Returns:
        list of layers, depth first.
    """
    return list(model._flatten_layers(include_self=False, recursive=True))


def model_distribute_strategy(model):
    """The strategy whose scope the model was built in, or None outside any scope.

    The public ``model.distribute_strategy`` falls back to the current strategy, so it
    cannot tell whether Keras will build the model symbolically; ``_maybe_symbolic_build``
    tests exactly this attribute (checked: Keras 3.15.1, TensorFlow backend).

    Args:
        model: a Keras model.

    Returns:
        a ``tf.distribute.Strategy`` or None.
    """
    return model._distribute_strategy


def worker_count(strategy):
    """How many workers a ``tf.distribute`` strategy spans (1 for single-machine ones).

    TensorFlow exposes the count of a ``MultiWorkerMirroredStrategy`` only as a private
    attribute of its extended object (checked: TensorFlow 2.21.0,
    ``CollectiveAllReduceExtended._num_workers``); other strategies lack it.

    Args:
        strategy: a ``tf.distribute.Strategy``.

    Returns:
        int.
    """
    return getattr(strategy.extended, "_num_workers", 1)


def freeze_concrete_function(concrete):
    """The concrete function with every variable and captured tensor folded into a constant.

    TensorFlow has no public way to freeze a TF2 function, which the export needs for a
    graph with the image as its one input (checked: TensorFlow 2.21.0,
    ``tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2``).

    Args:
        concrete: a ``tf.types.experimental.ConcreteFunction``.

    Returns:
        the frozen ConcreteFunction.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete)
