"""A training run's configuration: ``TrainConfig`` (one field per setting of
``utils.train.settings``), resolving it against a recipe, and the checks made before
any model is built.
"""

import dataclasses
from pathlib import Path

from utils.train.settings import SETTINGS, check_ranges


class ConfigError(ValueError):
    """A training setting or input that cannot work; raised before any model is built."""


class _Resolving:
    """The method of TrainConfig (whose fields come from ``utils.train.settings``)."""

    def resolved(self, num_train_images: int, num_classes: int) -> "TrainConfig":
        """A copy with the recipe chosen and every field it leaves open filled in.

        Args:
            num_train_images: training images (``--recipe auto`` counts iterations).
            num_classes: C (AdamW's default learning rate depends on it).
        """
        from utils.train.recipes import RECIPE_SETTINGS, choose_recipe, default_lr

        cfg = dataclasses.replace(self)
        try:
            recipe, reason = choose_recipe(cfg.recipe, num_train_images, cfg.batch_size, cfg.epochs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg.recipe = recipe.name
        cfg.recipe_reason = cfg.recipe_reason or reason
        optimizer_given = cfg.optimizer is not None
        for name in RECIPE_SETTINGS:
            if getattr(cfg, name) is None:
                setattr(cfg, name, getattr(recipe, name))
        cfg.optimizer = cfg.optimizer.lower()
        if cfg.lr is None:
            cfg.lr = default_lr(cfg.optimizer, num_classes)
        if cfg.min_lr is None:
            cfg.min_lr = cfg.lr * cfg.min_lr_ratio
        if optimizer_given and cfg.optimizer == "adam" and self.weight_decay is None:
            cfg.weight_decay = 0.0  # L2 on the kernels is an SGD habit; Adam runs without it
        return cfg


# Every setting of a training run, saved as the run's config.json: one field per
# entry of utils.train.settings.SETTINGS, with its default. Fields left at None come
# from the recipe (utils.train.recipes) when the run starts; ``resolved`` fills them in,
# so config.json always holds the values used. A field's type is its setting's kind,
# or that kind or None where the setting has no default of its own.
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [(s.name, s.kind if s.default is not None else s.kind | None, dataclasses.field(default=s.default))
     for s in SETTINGS],
    bases=(_Resolving,),
)
TrainConfig.__module__ = __name__


def validate(cfg):
    """Checks settings and files; raises ConfigError with what to change."""
    from nets.backbones import backbone_options, get_spec
    from utils.image import check_input_size

    check_ranges(cfg, ConfigError)
    try:
        check_input_size(cfg.input_size)
        spec = get_spec(cfg.backbone)
        backbone_options(cfg.backbone, **model_options(cfg))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if str(cfg.backbone_weights).lower() == "imagenet" and not spec.has_imagenet_weights:
        raise ConfigError(
            f"{cfg.backbone} has no ImageNet weights (efficientnet-b0…b7, efficientnetv2-*, mobilenetv2 come from "
            "Keras, efficientnet-lite0/1/2 from pip packages): pass --backbone-weights PATH to a local weights file, "
            "or --backbone-weights none to train from scratch."
        )
    if cfg.best_by == "map" and cfg.eval_period <= 0:
        raise ConfigError("--best-by map needs --eval-period > 0")
    for flag, path in (("--classes", cfg.classes), ("--anchors", cfg.anchors)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag} file not found: {path}")
    for flag, folder in (("--images", cfg.images), ("--val-images", cfg.val_images)):
        if folder and not Path(folder).is_dir():
            raise ConfigError(f"{flag} folder not found: {folder}")
    if not Path(cfg.train).exists():
        raise ConfigError(f"--train dataset not found: {cfg.train}")
    if cfg.val and not Path(cfg.val).exists():
        raise ConfigError(f"--val dataset not found: {cfg.val} (pass --val '' to hold out part of --train instead)")
    if cfg.weights and not Path(cfg.weights).is_file():
        raise ConfigError(f"--weights checkpoint not found: {cfg.weights}")
    weights = str(cfg.backbone_weights).lower()
    if weights not in ("imagenet", "none", "") and not Path(cfg.backbone_weights).is_file():
        raise ConfigError(
            f"--backbone-weights file not found: {cfg.backbone_weights} (use imagenet, none or a local file)"
        )


def validate_recipe_values(cfg):
    """Checks a resolved configuration: every setting in its declared range, and the
    combinations of settings that cannot work."""
    check_ranges(cfg, ConfigError)
    if not cfg.scale_min <= cfg.scale_max:
        raise ConfigError(f"--scale-min/--scale-max must satisfy min <= max, got {cfg.scale_min}, {cfg.scale_max}")
    if cfg.min_lr > cfg.lr:
        raise ConfigError(f"--lr and --min-lr must satisfy 0 < min-lr <= lr, got {cfg.lr:g} and {cfg.min_lr:g}")
    if cfg.warmup_bias_lr > 0 and cfg.optimizer != "sgd":
        raise ConfigError(
            f"--warmup-bias-lr {cfg.warmup_bias_lr:g} applies to SGD only (Adam normalizes the step size, so a "
            "separate bias rate has no effect there); use --warmup-bias-lr 0 with --optimizer adam/adamw."
        )


def model_options(cfg):
    """The backbone options of ``cfg`` that YoloV3 takes (None: the backbone's default)."""
    return {"alpha": cfg.alpha, "drop_connect_rate": cfg.drop_connect_rate}


def has_pretrained(cfg):
    """Whether the run starts from pretrained weights (only then is the backbone frozen first)."""
    return bool(cfg.weights) or str(cfg.backbone_weights).lower() not in ("none", "")
