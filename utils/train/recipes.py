"""Training recipes: every constant of how a run learns, in one table.

A recipe fixes the optimizer, learning rates, warm-up, weight decay, loss gains and
normalization, EMA, augmentation strength, the frozen epochs and when Mosaic/MixUp
stop. ``train.py --recipe NAME`` picks one; each of its fields can still be
overridden by the flag of the same name, and the run's config.json records the
values used.

* ``reference``: the reference design's recipe, unchanged (SGD, lr 1e-2 × batch/64
  clipped, cosine with the 5%-of-epochs quadratic warm-up, L2 5e-4 on the neck and
  head kernels, loss gains box 0.05 / obj 5 / cls 1 and no batch scaling, 50 of
  300 epochs frozen, no EMA).
* ``short``: for runs of a few thousand optimizer steps, typically a few hundred to
  a few thousand images: AdamW at 0.002 · 5 / (4 + classes) (Ultralytics'
  ``optimizer=auto`` rule), decoupled weight decay, a per-step linear warm-up, the
  YOLOv5 loss gains (box 0.05, obj 1 at 640² i.e. 0.42 at 416², cls 0.5) with the
  loss multiplied by the batch size, an EMA of the weights, 3 epochs with a pretrained
  backbone frozen, and light augmentation (aspect jitter 0.1, scale 0.75-1.25): a few
  thousand steps are too few to learn through the reference's strong jitter.
* ``long``: for long runs on large datasets: the reference optimizer and schedule
  with the YOLOv5 loss normalization (gains as ``short``, loss × batch), a per-step
  warm-up with a high bias learning rate, an EMA of the weights, and the reference's
  frozen epochs and augmentation strength.

``--recipe auto`` (the default) picks ``short`` when the run takes at most
``AUTO_MAX_ITERATIONS`` nominal iterations, ``ceil(images / max(batch, 64)) · epochs``
(the rule Ultralytics uses to choose AdamW), and ``long`` above that.
"""

import dataclasses
import math
from dataclasses import dataclass

from utils.config import ANCHOR_T, BOX_RATIO, CLS_RATIO, DEFAULT_WEIGHT_DECAY, OBJ_RATIO
from utils.train.ema import DEFAULT_DECAY as EMA_DECAY
from utils.train.ema import DEFAULT_TAU as EMA_TAU

AUTO_MAX_ITERATIONS = 10_000
NOMINAL_BATCH = 64
# The YOLOv5 objectness gain (1.0 at 640x640) expressed at this loss's 416x416 reference area.
_YOLOV5_OBJ_AT_416 = round(1.0 * (416.0 / 640.0) ** 2, 4)


@dataclass(frozen=True)
class Recipe:
    """One recipe's constants. Fields named like TrainConfig fields are their defaults.

    Attributes:
        optimizer: "sgd" (momentum, Nesterov), "adam" or "adamw" (decoupled decay).
        lr: initial learning rate; 0 means the optimizer's default
            (sgd 1e-2, adam 1e-3, adamw 0.002 · 5 / (4 + classes)).
        lr_batch_scaling: scale the learning rates by batch/64 and clip them to the
            optimizer's bounds, as the reference does.
        min_lr_ratio: the final learning rate as a fraction of ``lr``.
        momentum: SGD momentum, or Adam's beta_1.
        weight_decay: SGD/Adam: L2 factor on neck and head kernels; AdamW: the
            decoupled decay of every kernel (biases and BatchNorm excluded).
        warmup_epochs: per-step linear warm-up over this many epochs (at least
            ``warmup_min_steps`` steps); a negative value keeps the reference's
            per-epoch quadratic warm-up over 5% of the epochs.
        warmup_min_steps: the shortest per-step warm-up.
        warmup_bias_lr: starting learning rate of the biases during the warm-up,
            falling to the schedule's rate (SGD only; 0: biases warm up like the rest).
        box_gain, obj_gain, cls_gain: loss weights (see nets.loss.YoloLoss).
        loss_batch_scale: multiply the loss by the batch size (YOLOv5/v8).
        ema: keep an EMA of the weights for validation and checkpoints.
        ema_decay, ema_tau: see utils.train.ema.
        freeze_epochs: first epochs with the backbone frozen (pretrained only).
        jitter, scale_min, scale_max: augmentation strength.
        mosaic_ratio: part of the epochs with Mosaic/MixUp (when asked for).
        assigner: how boxes become targets, "yolov3" (one anchor, one cell) or
            "yolov5" (every anchor within ``anchor_t``, three cells); it also fixes
            the model's box coding (see utils.data.targets and utils.decode).
        anchor_t: largest box/anchor width or height ratio of a yolov5 match, and the
            ratio of the anchor check at the start of training.
        obj_iou_target: the objectness target of a positive is its box's detached
            CIoU with the target (instead of 1).
    """

    name: str
    summary: str
    optimizer: str
    lr: float
    lr_batch_scaling: bool
    min_lr_ratio: float
    momentum: float
    weight_decay: float
    warmup_epochs: float
    warmup_min_steps: int
    warmup_bias_lr: float
    box_gain: float
    obj_gain: float
    cls_gain: float
    loss_batch_scale: bool
    ema: bool
    ema_decay: float
    ema_tau: float
    freeze_epochs: int
    jitter: float
    scale_min: float
    scale_max: float
    mosaic_ratio: float
    assigner: str
    anchor_t: float
    obj_iou_target: bool


RECIPES = {
    "reference": Recipe(
        name="reference",
        summary="the reference design's recipe (SGD, reference loss, no EMA)",
        optimizer="sgd",
        lr=0.0,
        lr_batch_scaling=True,
        min_lr_ratio=0.01,
        momentum=0.937,
        weight_decay=DEFAULT_WEIGHT_DECAY,
        warmup_epochs=-1.0,
        warmup_min_steps=0,
        warmup_bias_lr=0.0,
        box_gain=BOX_RATIO,
        obj_gain=OBJ_RATIO,
        cls_gain=CLS_RATIO,
        loss_batch_scale=False,
        ema=False,
        ema_decay=EMA_DECAY,
        ema_tau=EMA_TAU,
        freeze_epochs=50,
        jitter=0.3,
        scale_min=0.25,
        scale_max=2.0,
        mosaic_ratio=0.7,
        assigner="yolov3",
        anchor_t=ANCHOR_T,
        obj_iou_target=False,
    ),
    "short": Recipe(
        name="short",
        summary="AdamW with a class-count learning rate, YOLOv5 loss gains, EMA",
        optimizer="adamw",
        lr=0.0,
        lr_batch_scaling=False,
        min_lr_ratio=0.01,
        momentum=0.9,
        weight_decay=DEFAULT_WEIGHT_DECAY,
        warmup_epochs=3.0,
        warmup_min_steps=100,
        warmup_bias_lr=0.0,
        box_gain=0.05,
        obj_gain=_YOLOV5_OBJ_AT_416,
        cls_gain=0.5,
        loss_batch_scale=True,
        ema=True,
        ema_decay=EMA_DECAY,
        ema_tau=EMA_TAU,
        freeze_epochs=3,
        jitter=0.1,
        scale_min=0.75,
        scale_max=1.25,
        mosaic_ratio=0.9,
        assigner="yolov5",
        anchor_t=ANCHOR_T,
        obj_iou_target=True,
    ),
}
# The long recipe is the short one's loss normalization and EMA on the reference's optimizer.
RECIPES["long"] = dataclasses.replace(
    RECIPES["short"],
    name="long",
    summary="SGD with YOLOv5 loss gains and batch scaling, bias warm-up, EMA",
    optimizer="sgd",
    momentum=0.937,
    warmup_bias_lr=0.1,
    freeze_epochs=50,
    jitter=0.3,
    scale_min=0.25,
    scale_max=2.0,
)
RECIPE_CHOICES = ("auto", *RECIPES)
# The fields a recipe sets (its name and summary aside).
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "summary"))


def nominal_iterations(num_images, batch_size, epochs):
    """Optimizer iterations of a run counted at a batch of at least 64 (Ultralytics' rule)."""
    return math.ceil(num_images / max(batch_size, NOMINAL_BATCH)) * epochs


def choose_recipe(name, num_images, batch_size, epochs):
    """Resolves ``--recipe``.

    Args:
        name: "auto" or a key of ``RECIPES``.
        num_images: training images.
        batch_size: the batch with all layers trained.
        epochs: total epochs.

    Returns:
        (Recipe, reason): the recipe and one sentence saying why it was chosen.
    """
    if name != "auto":
        if name not in RECIPES:
            raise ValueError(f"Unknown recipe {name!r}; choose one of {', '.join(RECIPE_CHOICES)}")
        return RECIPES[name], "chosen with --recipe"
    iterations = nominal_iterations(num_images, batch_size, epochs)
    if iterations <= AUTO_MAX_ITERATIONS:
        pick = "short"
        reason = f"{iterations:,} nominal iterations <= {AUTO_MAX_ITERATIONS:,}"
    else:
        pick = "long"
        reason = f"{iterations:,} nominal iterations > {AUTO_MAX_ITERATIONS:,}"
    reason += f" (ceil({num_images} images / max(batch {batch_size}, 64)) x {epochs} epochs)"
    return RECIPES[pick], reason


def default_lr(optimizer, num_classes):
    """The optimizer's default initial learning rate; AdamW's depends on the class count."""
    if optimizer == "adamw":
        return round(0.002 * 5 / (4 + num_classes), 6)
    return {"sgd": 1e-2, "adam": 1e-3}[optimizer]


def format_table(recipes=None):
    """The recipes side by side, one row per constant (``python -m utils.train.recipes``)."""
    recipes = list(recipes or RECIPES.values())
    width = max(len(f) for f in RECIPE_FIELDS) + 2
    lines = [f"{'':<{width}}" + "".join(f"{r.name:>12}" for r in recipes)]
    for field in RECIPE_FIELDS:
        cells = []
        for recipe in recipes:
            value = getattr(recipe, field)
            if field == "lr" and not value:
                value = "auto"
            cells.append(f"{value!s:>12}" if not isinstance(value, float) else f"{value:>12g}")
        lines.append(f"{field:<{width}}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table())
