"""The confidence a model is used at: the best-F1 confidence an evaluation found, kept
in a small JSON file beside the checkpoint.

The file of ``logs/exp/best.keras`` is ``logs/exp/best.eval.json`` (the model's path
without its suffix, then ``.eval.json``); an export written beside the checkpoint
under the same name (``best.onnx``) shares it. Training writes it for ``best.keras``
when the checkpoint is evaluated; ``predict.py`` reads it when ``--conf`` is not
given. It holds::

    {"conf": 0.412, "f1": 0.73, "precision": 0.8, "recall": 0.68,
     "epoch": 20, "map": 0.62, "evaluated_on": "the validation set (34 images)"}
"""

import json
import logging
import math
from pathlib import Path

from utils.run_dir import write_text_atomic

log = logging.getLogger(__name__)

SUFFIX = ".eval.json"
# A best-F1 confidence below this comes from a model that has not learned enough to be
# used at it (hundreds of boxes an image); the default confidence is used instead.
MIN_OPERATING_CONF = 0.05


def conf_file(model_path):
    """The operating-point file of a model: its path without the suffix, then ``.eval.json``."""
    path = Path(model_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + SUFFIX)


def write_conf_file(model_path, best, **context):
    """Writes the best-F1 confidence of ``model_path`` beside it.

    Args:
        model_path: the checkpoint.
        best: dict of ``utils.eval.curves.best_f1`` (``conf``, ``f1``, ``precision``, ``recall``).
        **context: JSON values saying what was evaluated (epoch, map, evaluated_on).

    Returns:
        the file's path.
    """
    path = conf_file(model_path)
    write_text_atomic(path, json.dumps({**best, **context}, indent=2) + "\n")
    return path


def remove_conf_file(model_path):
    """Deletes the operating-point file of ``model_path`` (a checkpoint replaced without evaluation)."""
    conf_file(model_path).unlink(missing_ok=True)


def read_conf_file(model_path):
    """The operating point stored beside ``model_path``, or None when there is none or it is unusable.

    An unusable file (not JSON, no ``conf`` in [0, 1)) is reported as a warning naming it.
    """
    path = conf_file(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        conf = float(data["conf"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s); it is not used.", path, exc)
        return None
    if not (0.0 <= conf < 1.0) or math.isnan(conf):
        log.warning("%s holds conf %r, outside [0, 1); it is not used.", path, data["conf"])
        return None
    return {**data, "conf": conf}


def default_conf(model_path, fallback):
    """The confidence to use for ``model_path`` when none is given, and where it comes from.

    Args:
        model_path: the checkpoint or export.
        fallback: the confidence without an operating-point file.

    Returns:
        (conf, origin): the confidence and a sentence naming its source.
    """
    found = read_conf_file(model_path)
    if found is None:
        return float(fallback), (f"the default confidence {fallback:g} ({conf_file(model_path).name} not found "
                                 "beside the model)")
    where = found.get("evaluated_on", "an evaluation")
    epoch = f" at epoch {found['epoch']}" if found.get("epoch") is not None else ""
    if found["conf"] < MIN_OPERATING_CONF:
        return float(fallback), (f"the default confidence {fallback:g}: the best-F1 confidence "
                                 f"{found['conf']:.3f} (F1 {found.get('f1', math.nan):.3f}; {conf_file(model_path)}) "
                                 f"is below {MIN_OPERATING_CONF:g}, where an undertrained model puts it")
    return found["conf"], (f"the best-F1 confidence {found['conf']:.3f} of the model on {where}{epoch} "
                           f"(F1 {found.get('f1', math.nan):.3f}; {conf_file(model_path)})")
