"""Keras' models folder, where converted weights are kept, and their atomic write."""

import os
from pathlib import Path

from utils.run_dir import atomic_write


def keras_models_dir():
    """The folder where Keras keeps model weights: ``$KERAS_HOME/models``.

    Like Keras, uses ``KERAS_HOME`` when set, else ``~/.keras`` (``/tmp/.keras``
    when the home folder is not writable). Read at each call, so a changed
    ``KERAS_HOME`` takes effect at once.

    Returns:
        pathlib.Path of the folder (it may not exist yet).
    """
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(os.path.expanduser(home)) / "models"


def save_weights_atomically(model, path):
    """Writes the model's weights so that ``path`` is either absent or complete.

    Two processes converting the same weights at once each rename a complete file
    of their own into place; the last one stays.

    Args:
        model: a built Keras model.
        path: the ``.weights.h5`` file to write; its folder is made when missing.
    """
    atomic_write(path, model.save_weights, ".weights.h5")
