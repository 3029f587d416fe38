"""The Python API: one import for what the scripts do, over every stage below it.

``Detector`` opens a checkpoint or any export on the runtime the command line would
choose (``runtime="auto"``: the checked, cached OpenVINO export on a CPU) and
predicts on paths, folders, PIL images and arrays, tracks objects through a video,
evaluates on a dataset and exports. ``train`` runs ``train.py``'s training from a
``TrainConfig`` or its settings and returns the run folder with its final metrics.
``utils.api.cli`` holds the command-line arguments of the option objects that
predict.py and get_map.py share. Names are imported on first use, so that a script
that only parses its arguments loads no deep-learning framework.
"""

_EXPORTS = {
    "Detector": "utils.api.detector",
    "Result": "utils.api.results",
    "Metrics": "utils.api.results",
    "train": "utils.api.training",
    "TrainResult": "utils.api.training",
    "TrainConfig": "utils.train.config",
    "PredictOptions": "utils.predict.options",
    "EvalOptions": "utils.eval.options",
    "SliceOptions": "utils.predict.slicing",
    "TrackingOptions": "utils.predict.tracking",
    "ExportOptions": "utils.export.exporter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'utils.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
