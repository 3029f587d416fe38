"""EfficientNet-Lite0…Lite4 as functional Keras models.

EfficientNet-Lite is the edge-device variant of EfficientNet (Tan & Le, 2019,
and the TensorFlow "efficientnet/lite" release). It keeps EfficientNet-B0's
seven MBConv block groups and compound scaling, with three changes:

* no squeeze-and-excite in the MBConv blocks;
* ReLU6 instead of swish everywhere;
* the stem (32 channels), the head (1280 channels) and the repeats of the first
  and last block groups stay fixed when the network is scaled up.

The models take 0–255 RGB images, like ``keras.applications`` models, and
normalize inside with a ``Rescaling`` layer to ``(x - 127) / 128``, the mean and
standard deviation the Lite models were trained with.

Layer names follow ``keras.applications.EfficientNetB*`` (``stem_conv``,
``block1a_dwconv``, ``block2b_project_bn``, ``block3b_add``, ``top_conv``, …),
so feature levels can be found by name or at the stride changes: the outputs of
block groups 3, 5 and 7 are the stride-8, 16 and 32 maps.
"""

import difflib
import math
import os
from typing import NamedTuple

import keras


class LiteVariant(NamedTuple):
    """Published scaling of one EfficientNet-Lite variant.

    Attributes:
        width: Width (channel) coefficient.
        depth: Depth (repeat) coefficient.
        resolution: Input side the published model was trained at.
        dropout: Dropout rate before the classifier.
    """

    width: float
    depth: float
    resolution: int
    dropout: float


class BlockGroup(NamedTuple):
    """One group of MBConv blocks of the unscaled (Lite0/B0) network.

    Attributes:
        kernel: Depthwise kernel size.
        repeats: Number of blocks in the group.
        filters_in: Input channels of the group's first block.
        filters_out: Output channels of every block of the group.
        expand: Expansion ratio of the 1x1 expand convolution.
        stride: Stride of the group's first block (the others use 1).
    """

    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand: int
    stride: int


LITE_VARIANTS = {
    "lite0": LiteVariant(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "lite1": LiteVariant(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "lite2": LiteVariant(width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "lite3": LiteVariant(width=1.2, depth=1.4, resolution=280, dropout=0.3),
    "lite4": LiteVariant(width=1.4, depth=1.8, resolution=300, dropout=0.3),
}

# EfficientNet-B0's block groups: (kernel, repeats, in, out, expand, stride).
BLOCK_GROUPS = (
    BlockGroup(3, 1, 32, 16, 1, 1),
    BlockGroup(3, 2, 16, 24, 6, 2),
    BlockGroup(5, 2, 24, 40, 6, 2),
    BlockGroup(3, 3, 40, 80, 6, 2),
    BlockGroup(5, 3, 80, 112, 6, 1),
    BlockGroup(5, 4, 112, 192, 6, 2),
    BlockGroup(3, 1, 192, 320, 6, 1),
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
RELU6_MAX = 6.0
DEFAULT_DROP_CONNECT_RATE = 0.2
# Inception-style normalization of the published Lite models, chosen there
# because it quantizes better than per-channel ImageNet statistics.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
# Classes of the published ImageNet classifiers.
IMAGENET_CLASSES = 1000
# Smallest input side that still leaves a 1x1 map after the five stride-2 steps.
MIN_INPUT_SIDE = 32

# He-normal on fan-out for convolutions and a fan-out uniform for the
# classifier, as in the published EfficientNet training code.
_CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
_DENSE_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


def round_filters(filters, width, divisor=DEPTH_DIVISOR):
    """Scales a channel count by the width coefficient, as EfficientNet does.

    The scaled count is rounded to the nearest multiple of ``divisor`` (at least
    ``divisor``), and bumped up one step if rounding lost more than 10%.

    Args:
        filters: Channel count of the unscaled network.
        width: Width coefficient.
        divisor: The result is a multiple of this.

    Returns:
        The scaled channel count (int).
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, depth):
    """Scales a block group's repeat count by the depth coefficient.

    Args:
        repeats: Repeat count of the unscaled network.
        depth: Depth coefficient.

    Returns:
        ``ceil(depth * repeats)`` (int).
    """
    return int(math.ceil(depth * repeats))


def _check_variant(variant):
    if not isinstance(variant, str) or variant.lower() not in LITE_VARIANTS:
        close = difflib.get_close_matches(str(variant).lower(), LITE_VARIANTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown EfficientNet-Lite variant {variant!r}; expected one of "
            f"{sorted(LITE_VARIANTS)}.{hint}"
        )
    return variant.lower()


def _check_input_shape(input_shape):
    if input_shape is None:
        return (None, None, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(
            f"input_shape must be (height, width, 3) for channels-last RGB, "
            f"got {input_shape!r}."
        )
    for side in shape[:2]:
        if side is not None and (not isinstance(side, int) or side < MIN_INPUT_SIDE):
            raise ValueError(
                f"input_shape sides must be None or integers >= {MIN_INPUT_SIDE}, "
                f"got {input_shape!r}."
            )
    return shape


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


def _batch_norm(name):
    return keras.layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


def _relu6(name):
    return keras.layers.ReLU(max_value=RELU6_MAX, name=name)


def _conv(filters, kernel, strides, name):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_CONV_INITIALIZER,
        name=name,
    )


def mbconv_block(x, filters_out, kernel, stride, expand, drop_rate, prefix):
    """One MBConv block without squeeze-excite: expand, depthwise, project.

    Padding is "same" (the published networks' choice); a residual connection
    with drop-connect is added when the block keeps the resolution and the
    channel count.

    Args:
        x: Input tensor, ``(batch, H, W, C_in)``.
        filters_out: Output channels.
        kernel: Depthwise kernel size.
        stride: Depthwise stride (1 or 2).
        expand: Expansion ratio; 1 means no expand convolution.
        drop_rate: Drop-connect rate of the residual branch.
        prefix: Layer name prefix, e.g. ``"block2b_"``.

    Returns:
        Output tensor, ``(batch, H / stride, W / stride, filters_out)``.
    """
    filters_in = x.shape[-1]
    inputs = x
    if expand != 1:
        x = _conv(filters_in * expand, 1, 1, f"{prefix}expand_conv")(x)
        x = _batch_norm(f"{prefix}expand_bn")(x)
        x = _relu6(f"{prefix}expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=_CONV_INITIALIZER,
        name=f"{prefix}dwconv",
    )(x)
    x = _batch_norm(f"{prefix}bn")(x)
    x = _relu6(f"{prefix}activation")(x)
    x = _conv(filters_out, 1, 1, f"{prefix}project_conv")(x)
    x = _batch_norm(f"{prefix}project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per sample.
            x = keras.layers.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop"
            )(x)
        x = keras.layers.add([x, inputs], name=f"{prefix}add")
    return x


def EfficientNetLite(
    variant,
    include_top=True,
    weights=None,
    input_shape=None,
    classes=IMAGENET_CLASSES,
    drop_connect_rate=DEFAULT_DROP_CONNECT_RATE,
    dropout_rate=None,
    name=None,
    classifier_activation="softmax",
):
    """Builds an EfficientNet-Lite network.

    The model takes 0–255 RGB images, channels last, and normalizes them inside.

    With ``include_top=True`` it is the full classifier: the MBConv blocks, then
    the 1280-channel 1x1 head convolution with BatchNorm and ReLU6, global
    average pooling, dropout and a ``Dense(classes)`` layer named
    ``predictions``. With ``include_top=False`` it is a detection backbone: it
    ends at the last MBConv block (``block7a_project_bn``, 320 channels for
    Lite0, stride 32) and has no 1280-channel head convolution, since a
    detector only reads the block outputs. The stride-8/16/32 maps are the last
    layers of block groups 3, 5 and 7 (``block3*``, ``block5*``, ``block7*``).

    Args:
        variant: One of ``"lite0"`` … ``"lite4"``.
        include_top: Whether to build the head convolution and the classifier.
        weights: None (random initialization) or the path of a weights file
            saved from a model built with the same arguments. The ImageNet
            weights of Lite0…Lite2 are such a file, made by
            ``utils.weights.lite_imagenet.imagenet_weights_file`` (with the top
            it needs ``classes=1000``).
        input_shape: ``(height, width, 3)``; sides may be None. Defaults to
            ``(None, None, 3)``. The published resolution of each variant is
            ``LITE_VARIANTS[variant].resolution``.
        classes: Number of classes of the classifier (``include_top`` only).
        drop_connect_rate: Drop-connect rate of the last block; it grows
            linearly from 0 over the blocks.
        dropout_rate: Dropout before the classifier; None uses the published
            rate of the variant (0.2 for Lite0/1, 0.3 for Lite2/3/4).
        name: Model name; defaults to ``"efficientnetlite0"`` etc.
        classifier_activation: Activation of the ``predictions`` layer
            (``None`` for logits).

    Returns:
        A functional ``keras.Model``: ``(batch, H, W, 3)`` 0–255 RGB to
        ``(batch, classes)`` with ``include_top``, else to
        ``(batch, ceil(H/32), ceil(W/32), C)`` with C the last block's channels.

    Raises:
        ValueError: For an unknown variant or an invalid argument, for
            ``weights="imagenet"`` (pass the converted file's path), or when the
            weights file does not fit the model.
        FileNotFoundError: When ``weights`` is not an existing file.
    """
    variant = _check_variant(variant)
    spec = LITE_VARIANTS[variant]
    input_shape = _check_input_shape(input_shape)
    drop_connect_rate = _check_rate("drop_connect_rate", drop_connect_rate)
    dropout_rate = _check_rate(
        "dropout_rate", spec.dropout if dropout_rate is None else dropout_rate
    )
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer, got {classes!r}.")
    weights_path = None if weights is None else os.fspath(weights)
    if weights_path == "imagenet":
        raise ValueError(
            f"EfficientNetLite takes the path of a weights file, got weights={weights!r}. Build the "
            "backbone with nets.backbones.build_backbone(name, weights=\"imagenet\"), or convert the "
            "ImageNet weights of Lite0…Lite2 into a file with "
            "utils.weights.lite_imagenet.imagenet_weights_file and pass its path."
        )
    if weights_path is not None and not os.path.isfile(weights_path):
        raise FileNotFoundError(
            f"EfficientNet-Lite weights file {weights_path!r} does not exist. "
            "Pass None for random initialization or the path of a local weights file "
            "(utils.weights.lite_imagenet.imagenet_weights_file makes the ImageNet one)."
        )

    inputs = keras.layers.Input(shape=input_shape, name="input_layer")
    x = keras.layers.Rescaling(
        scale=1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="rescaling"
    )(inputs)
    x = _conv(STEM_FILTERS, 3, 2, "stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)

    last = len(BLOCK_GROUPS) - 1
    repeats = [
        g.repeats if i in (0, last) else round_repeats(g.repeats, spec.depth)
        for i, g in enumerate(BLOCK_GROUPS)
    ]
    total_blocks = sum(repeats)
    block_index = 0
    for i, (group, group_repeats) in enumerate(zip(BLOCK_GROUPS, repeats)):
        filters_out = round_filters(group.filters_out, spec.width)
        for j in range(group_repeats):
            x = mbconv_block(
                x,
                filters_out=filters_out,
                kernel=group.kernel,
                stride=group.stride if j == 0 else 1,
                expand=group.expand,
                drop_rate=drop_connect_rate * block_index / total_blocks,
                prefix=f"block{i + 1}{chr(ord('a') + j)}_",
            )
            block_index += 1

    if include_top:
        x = _conv(HEAD_FILTERS, 1, 1, "top_conv")(x)
        x = _batch_norm("top_bn")(x)
        x = _relu6("top_activation")(x)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=_DENSE_INITIALIZER,
            name="predictions",
        )(x)

    model = keras.Model(inputs, x, name=name or f"efficientnet{variant}")

    if weights_path is not None:
        try:
            model.load_weights(weights_path)
        except Exception as err:  # Keras raises several types; re-raise as one.
            built = f"variant={variant!r}, include_top={include_top}"
            if include_top:
                built += f", classes={classes}"
            raise ValueError(
                f"Could not load weights file {weights_path!r} into {model.name} "
                f"({built}); it must come from a model built with the same "
                f"arguments: {err}"
            ) from err
    return model
