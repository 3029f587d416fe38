"""``train``: train.py's training from Python, returning the run folder and its final metrics."""

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from utils.train.callbacks import HISTORY_FILE
from utils.train.config import TrainConfig


@dataclass
class TrainResult:
    """A finished training run.

    Attributes:
        run_dir: the run folder (config.json, checkpoints, history.csv, plots).
        metrics: {column: value} of the last epoch in history.csv (losses, learning
            rate, and the validation mAP of the last epoch that measured one).
    """

    run_dir: Path
    metrics: dict = field(default_factory=dict)

    @property
    def best(self):
        """The best checkpoint (lowest validation loss, else the last)."""
        best = self.run_dir / "best.keras"
        return best if best.is_file() else self.last

    @property
    def last(self):
        """The checkpoint of the last epoch."""
        return self.run_dir / "last.keras"


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None, **settings) -> TrainResult | None:
    """Trains (or resumes) a detector, as ``python train.py`` does.

    Args:
        config: a TrainConfig (default: train.py's defaults).
        resume: a run folder to continue from its last checkpoint (its own
            config.json is used).
        **settings: TrainConfig fields replacing those of ``config``, named as
            train.py's options without the dashes: ``train="data.yaml"``,
            ``epochs=30``, ``input_size=320``.

    Returns:
        TrainResult.

    Raises:
        ConfigError: a setting that is not valid, named; TrainingDiverged; the
            errors of reading the data (FileNotFoundError, DatasetError).
    """
    from utils.train.config import ConfigError
    from utils.train.trainer import train as run_training

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; see python train.py --help")
    config = dataclasses.replace(config or TrainConfig(), **settings)
    run_dir = run_training(config, resume_dir=resume)
    if run_dir is None:  # a worker of a cluster other than the chief
        return None
    return TrainResult(Path(run_dir), last_metrics(Path(run_dir) / HISTORY_FILE))


def last_metrics(history_csv: str | Path) -> dict[str, float]:
    """{column: float} of the last row of a history.csv, each metric at its last
    measured value (the validation mAP is measured every few epochs only)."""
    if not Path(history_csv).is_file():
        return {}
    with open(history_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    metrics = {}
    for row in rows:
        for key, text in row.items():
            try:
                value = float(text)
            except (TypeError, ValueError):
                continue
            if not math.isnan(value):
                metrics[key] = value
    return metrics
