"""The phase plan of a run (epochs of constant frozen backbone, batch and Mosaic) and
the state a run saves after each epoch to resume from.
"""

import json
from dataclasses import dataclass, field

from utils.train.config import ConfigError


@dataclass(frozen=True)
class Phase:
    """Epochs ``start`` to ``end`` (0-based, end exclusive) trained alike.

    Attributes:
        start, end: the epochs of the phase.
        frozen: the backbone is frozen.
        batch: the batch size.
        mosaic: Mosaic/MixUp are on (when asked for).
    """

    start: int
    end: int
    frozen: bool
    batch: int
    mosaic: bool


@dataclass
class RunState:
    """What a run's train_state.json holds after each finished epoch (written by
    ``utils.train.callbacks.RunCheckpointer``).

    Attributes:
        epoch: epochs finished.
        best: the best value of the ``--best-by`` quantity so far.
        frozen: whether the backbone was frozen in the last epoch.
        ema_updates: updates of the weights' EMA (None without one).
        history: one dict of logged values per finished epoch.
    """

    epoch: int
    best: object = None
    frozen: bool = None
    ema_updates: int = None
    history: list = field(default_factory=list)

    @classmethod
    def read(cls, path):
        """The state saved in ``path``; ValueError when it cannot be read."""
        try:
            data = json.loads(path.read_text())
            return cls(int(data["epoch"]), data.get("best"), data.get("frozen"), data.get("ema_updates"),
                       list(data.get("history", [])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable run state ({exc})") from None


def phase_plan(cfg, has_pretrained):
    """Splits the epochs into phases of constant (frozen, batch, mosaic).

    Args:
        cfg: a resolved TrainConfig.
        has_pretrained: the run starts from pretrained weights (only then is the
            backbone frozen first).

    Returns:
        list of Phase, in order.
    """
    freeze = min(cfg.freeze_epochs, cfg.epochs) if has_pretrained else 0
    mosaic_end = int(round(cfg.epochs * cfg.mosaic_ratio)) if (cfg.mosaic or cfg.mixup) else 0
    cuts = sorted({0, cfg.epochs, freeze, mosaic_end} & set(range(cfg.epochs + 1)))
    phases = []
    for start, end in zip(cuts[:-1], cuts[1:]):
        frozen = start < freeze
        batch = cfg.freeze_batch_size if frozen else cfg.batch_size
        phases.append(Phase(start, end, frozen, batch, start < mosaic_end))
    return phases


def check_batch_fits(phases, num_train):
    """At least one full batch of every phase's size must fit in the training set."""
    largest = max(p.batch for p in phases)
    if num_train < largest:
        flag = "--freeze-batch-size" if any(p.frozen and p.batch == largest for p in phases) else "--batch-size"
        raise ConfigError(
            f"Too few training images for one batch: {num_train} usable image(s), batch size {largest} ({flag}). "
            "Add images or lower --batch-size / --freeze-batch-size."
        )
