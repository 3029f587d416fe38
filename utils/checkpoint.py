"""Saving and loading complete model artifacts.

An artifact carries everything prediction needs: weights plus class names, backbone,
input size and anchors. Two forms are read:
    ``*.keras``: a Keras archive, loaded with safe_mode on;
    ``*.weights.h5``: weights, with the model config in ``<same stem>.json`` beside it.
Writes are atomic (temporary file in the same folder, then rename), so an interrupted
save leaves the previous file intact.
"""

import json
import logging
import re
import zipfile
from pathlib import Path

import keras
import numpy as np

from utils.run_dir import atomic_write  # noqa: F401  the writers of the other modules import it from here

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and why."""


def _sidecar(path):
    name = Path(path).name
    stem = name[: -len(".weights.h5")] if name.endswith(".weights.h5") else Path(path).stem
    return Path(path).with_name(stem + ".json")


def save_model(model, path, include_optimizer=True):
    """Saves a YoloV3 as a complete artifact, atomically.

    Args:
        model: the YoloV3 model.
        path: ``*.keras`` (one archive, optimizer state included when compiled) or
            ``*.weights.h5`` (weights plus a JSON config beside it).
        include_optimizer: keep the optimizer state in a ``.keras`` archive (needed
            to resume training).
    """
    path = Path(path)
    if path.name.endswith(".weights.h5"):
        atomic_write(path, model.save_weights, ".weights.h5")
        config = {"class_name": type(model).__name__, "config": model.get_config()}
        atomic_write(_sidecar(path), lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)), ".json")
    elif path.suffix == ".keras":
        atomic_write(path, lambda tmp: _save_keras(model, tmp, include_optimizer), ".keras")
    else:
        raise ValueError(f"Checkpoint path must end in .keras or .weights.h5, got {path}")


def _save_keras(model, path, include_optimizer):
    optimizer = getattr(model, "optimizer", None)
    if include_optimizer or optimizer is None:
        model.save(path)
        return
    # Keras 3 ignores include_optimizer for .keras archives and always writes the
    # optimizer's variables (doubling the file with momentum); detach it for the save.
    model.optimizer = None
    try:
        model.save(path)
    finally:
        model.optimizer = optimizer


def load_model(path, compile=False):
    """Loads an artifact written by ``save_model``.

    Args:
        path: ``*.keras`` archive or ``*.weights.h5`` with its JSON beside it.
        compile: restore the optimizer too (for resuming training; ``.keras`` only).

    Returns:
        the YoloV3 model.

    Raises:
        CheckpointError: missing, truncated or foreign file, or a valid Keras model
            that is not a YoloV3 of this project; names the file.
    """
    import nets.yolo  # noqa: F401  registers YoloV3 for deserialization

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}")
    if path.name.endswith(".weights.h5"):
        return _load_weights_artifact(path)
    if path.suffix != ".keras":
        raise CheckpointError(f"{path}: expected a .keras archive or a .weights.h5 file with its .json beside it")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a valid .keras archive (the file is truncated or corrupt)")
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: the archive is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model from this archive: {exc}") from None
    _check_detector(model, path)
    return model


def read_model_config(path):
    """The detector's own config (``YoloV3.get_config``) stored in a ``.keras`` archive,
    read without building the model; ValueError if the file holds none."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        return dict(config["config"])
    except (zipfile.BadZipFile, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a .keras archive with a model config ({exc})") from None


def _check_detector(model, path):
    """Raises CheckpointError unless ``model`` is a detector of this project (a YoloV3)."""
    from nets.yolo import YoloV3

    if not isinstance(model, YoloV3):
        raise CheckpointError(
            f"{path}: a valid Keras model, but not a detector of this project (it holds a "
            f"{type(model).__name__} model named {getattr(model, 'name', '?')!r}, not a YoloV3 with its class "
            "names, input size and anchors); pass a checkpoint written by train.py, e.g. logs/exp/best.keras"
        )


def _load_weights_artifact(path):
    from nets.yolo import YoloV3

    config_path = _sidecar(path)
    if not config_path.is_file():
        raise CheckpointError(
            f"{path}: weights need their model config {config_path.name} beside them "
            "(written together by train.py); without it use the .keras checkpoint"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: unreadable model config ({exc})") from None
    if not isinstance(config, dict) or config.get("class_name", YoloV3.__name__) != YoloV3.__name__:
        found = config.get("class_name") if isinstance(config, dict) else f"a JSON {type(config).__name__}"
        raise CheckpointError(
            f"{config_path}: not the config of a detector of this project ({found!r}, not YoloV3); "
            f"{path.name} needs the .json that train.py wrote beside it"
        )
    try:
        model = YoloV3.from_config(config.get("config", config))
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{config_path}: unreadable model config ({type(exc).__name__}: {exc})") from None
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot load the weights (truncated or from another model): {exc}") from None
    return model


def _unsuffixed(path):
    return re.sub(r"_\d+(?=/)", "", path)


def transfer_weights(model, source):
    """Copies weights from ``source`` into ``model``, layer by layer, by name and shape.

    Layers are matched by their path of names (nested backbone layers included); a
    weight whose shape differs (e.g. the prediction convs of a model with another
    class count) is skipped and reported.

    Args:
        model: the model to initialize.
        source: a model, or a checkpoint path that ``load_model`` reads.

    Returns:
        dict with "loaded", "skipped_shape" (list of (name, source shape, target
        shape)) and "missing" (names absent from the source).
    """
    if not isinstance(source, keras.Model):
        source = load_model(source)
    src = {v.path: v for v in source.weights}
    # Layers Keras names itself ("normalization", "normalization_1", ...) get a
    # numeric suffix that depends on what was built before in the process; match
    # those by their unsuffixed path when that is unambiguous.
    by_base = {}
    for v in source.weights:
        by_base.setdefault(_unsuffixed(v.path), []).append(v)
    report = {"loaded": 0, "skipped_shape": [], "missing": []}
    for var in model.weights:
        other = src.get(var.path)
        if other is None:
            candidates = by_base.get(_unsuffixed(var.path), [])
            other = candidates[0] if len(candidates) == 1 else None
        if other is None:
            report["missing"].append(var.path)
        elif tuple(other.shape) != tuple(var.shape):
            report["skipped_shape"].append((var.path, tuple(other.shape), tuple(var.shape)))
        else:
            var.assign(np.asarray(other))
            report["loaded"] += 1
    return report
