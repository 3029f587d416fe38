"""Backbones and their feature pyramids.

Every backbone takes RGB input in 0–255 and is returned as a Keras model named
``backbone`` whose outputs are the pyramid dict ``{"P3": stride 8, "P4": stride 16,
"P5": stride 32}``. The levels are found from the architecture: P_n is the output of
the last complete block at stride 2**n (the block that changes the stride belongs to
the next level), never by layer index.
"""

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import keras

log = logging.getLogger(__name__)

PYRAMID_LEVELS = {"P3": 8, "P4": 16, "P5": 32}
# Block layers in keras.applications style: "block3b_add", "block_13_expand", ...
_BLOCK_RE = re.compile(r"^(block_?\d+[a-z]?)_")
# Spatial size used to measure each layer's stride symbolically (no weights built).
_PROBE_SIZE = 256


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one named backbone.

    Attributes:
        name: the user-facing name, e.g. "efficientnet-b0".
        family: "efficientnet", "efficientnetv2", "efficientnet-lite" or "mobilenetv2".
        builder: callable(include_top, weights, input_shape, **kwargs) -> keras.Model.
        weights_file: the file name of Keras' ImageNet no-top weights, for messages.
    """

    name: str
    family: str
    builder: object
    weights_file: str = ""


def _efficientnet_specs():
    specs = {}
    for phi in range(8):
        builder = getattr(keras.applications, f"EfficientNetB{phi}")
        specs[f"efficientnet-b{phi}"] = BackboneSpec(
            f"efficientnet-b{phi}", "efficientnet", builder, f"efficientnetb{phi}_notop.h5"
        )
    return specs


BACKBONES = _efficientnet_specs()


def backbone_names():
    """Names accepted by ``build_backbone``, in a stable order."""
    return list(BACKBONES)


def backbone_from_phi(phi):
    """Maps the ``--phi`` shorthand 0..7 to "efficientnet-b<phi>"."""
    if not isinstance(phi, int) or not 0 <= phi <= 7:
        raise ValueError(f"phi must be an integer 0..7 (EfficientNet-B0…B7), got {phi!r}")
    return f"efficientnet-b{phi}"


def get_spec(name):
    """Returns the BackboneSpec for ``name``, with a helpful error for unknown names."""
    key = str(name).lower()
    if key not in BACKBONES:
        import difflib

        close = difflib.get_close_matches(key, BACKBONES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown backbone {name!r}.{hint} Choose from: {', '.join(BACKBONES)}")
    return BACKBONES[key]


def _normalize_weights(weights):
    """Maps the user's weights choice to what keras.applications expects."""
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"Backbone weights file not found: {path}. Use --backbone-weights imagenet "
            "(downloaded by Keras when online), a local .h5 file, or none."
        )
    return str(path)


def _build_base(spec, weights, input_shape):
    weights = _normalize_weights(weights)
    local = weights not in (None, "imagenet")
    try:
        base = spec.builder(include_top=False, weights=None if local else weights, input_shape=input_shape)
    except Exception as exc:  # Keras raises several types for a failed download.
        if weights != "imagenet":
            raise
        raise RuntimeError(
            f"Could not download the ImageNet weights of {spec.name} ({spec.weights_file}): {exc}. "
            "Without internet, pass --backbone-weights PATH to a local copy of that file "
            "(e.g. from ~/.keras/models on a machine that has it), or --backbone-weights none "
            "to train from scratch."
        ) from exc
    if local:
        try:
            base.load_weights(weights)
        except Exception as exc:
            raise ValueError(
                f"Could not load backbone weights from {weights} into {spec.name}: {exc}. "
                f"The file must hold the no-top weights of {spec.name} ({spec.weights_file})."
            ) from exc
    return base


def find_pyramid(model, probe_size=_PROBE_SIZE):
    """Finds the layers whose outputs form the feature pyramid.

    The stride of every layer is measured by running the model symbolically on a
    ``probe_size`` square input; P_n is the last layer of the last complete block at
    stride 2**n.

    Args:
        model: a functional backbone with block layers named ``block…_…``.
        probe_size: side of the symbolic probe input (a multiple of 32).

    Returns:
        dict {"P3": layer_name, "P4": layer_name, "P5": layer_name}.
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


def build_backbone(name="efficientnet-b0", weights=None, input_shape=(None, None, 3)):
    """Builds a backbone that returns the feature pyramid.

    Args:
        name: backbone name (see ``backbone_names()``).
        weights: "imagenet" (downloaded by Keras), a local weights file path, or
            None / "none" for random initialization.
        input_shape: (H, W, 3); H and W may be None.

    Returns:
        keras.Model named "backbone": input (B, H, W, 3) RGB 0–255 -> dict
        {"P3": (B, H/8, W/8, c3), "P4": (B, H/16, W/16, c4), "P5": (B, H/32, W/32, c5)}.
    """
    spec = get_spec(name)
    base = _build_base(spec, weights, input_shape)
    levels = find_pyramid(base)
    outputs = {level: base.get_layer(layer_name).output for level, layer_name in levels.items()}
    return keras.Model(base.inputs, outputs, name="backbone")
