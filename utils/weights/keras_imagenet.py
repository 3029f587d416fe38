"""The ImageNet weights files that Keras hosts for ``keras.applications`` models.

``download_weights_file`` fetches one into ``$KERAS_HOME/models`` (checked against
its published hash, and read from there when already present), as
``keras.applications`` does for ``weights="imagenet"``. EfficientNet's file stores
its input normalization in a form that Keras corrects only when it builds the model
itself; ``fold_efficientnet_imagenet_scaling`` makes the correction on a model that
loaded the file directly.
"""

import keras
import numpy as np

from utils.keras_compat import EFFICIENTNET_IMAGENET_STDDEV_RGB

_IMAGENET_STDDEV_RGB = np.array(EFFICIENTNET_IMAGENET_STDDEV_RGB, np.float32)


class BackboneWeightsError(RuntimeError):
    """ImageNet weights that could not be downloaded or prepared; the message names the alternatives."""


def download_weights_file(backbone, file_name, url, file_hash=None):
    """The local copy of a Keras-hosted weights file, downloaded on first use.

    Args:
        backbone: the backbone's name, for messages (e.g. "efficientnet-b0").
        file_name: the file's name, e.g. "efficientnetb0_notop.h5".
        url: the folder URL it is downloaded from (ending in "/").
        file_hash: its hash as Keras checks it, or None.

    Returns:
        str path of the file in ``$KERAS_HOME/models``.

    Raises:
        BackboneWeightsError: the download failed; the message says how to pass a
            local copy instead or train from scratch.
    """
    try:
        return keras.utils.get_file(file_name, url + file_name, cache_subdir="models", file_hash=file_hash)
    except Exception as exc:  # Keras raises several types for a failed download.
        raise BackboneWeightsError(
            f"Could not download the ImageNet weights of {backbone} ({file_name}): {exc}. "
            "Without internet, pass --backbone-weights PATH to a local copy of that file "
            "(e.g. from ~/.keras/models on a machine that has it), or --backbone-weights none "
            "to train from scratch."
        ) from exc


def fold_efficientnet_imagenet_scaling(model):
    """Makes an EfficientNet loaded with Keras' ImageNet file normalize its input
    exactly as ``keras.applications.EfficientNetB*(weights="imagenet")`` does.

    The file's ``Normalization`` layer holds the ImageNet standard deviations as its
    variance (TensorFlow issue 49930), so on its own it computes (x - m) / sqrt(s).
    Keras corrects this with an extra ``Rescaling(1 / sqrt(s))`` layer, added only
    when it downloads the weights itself: a model rebuilt from its config, or loaded
    from a local copy of the file, would normalize differently. The backbone here
    never has that layer; the correction is folded into the variance instead,
    v = s · s, giving the same (x - m) / s. Only a variance that still equals the
    file's standard deviations is changed, so weights saved from a corrected
    backbone are not corrected twice.

    Args:
        model: a ``keras.applications``-style EfficientNet (B0…B7) with its weights
            loaded; a model without a ``Normalization`` layer is left as it is.
    """
    norm = next((layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)), None)
    if norm is None or getattr(norm, "adapt_variance", None) is None:
        return
    variance = np.asarray(norm.adapt_variance, np.float32)
    if variance.shape != _IMAGENET_STDDEV_RGB.shape or not np.allclose(variance, _IMAGENET_STDDEV_RGB, rtol=1e-3):
        return
    norm.adapt_variance.assign(variance * _IMAGENET_STDDEV_RGB)
    norm.finalize_state()
