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
  YOLOv5 loss gains (box 0.05, obj 1 at 640² i.e. 0.42 at 416²) with the loss
  multiplied by the batch size and the class term scaled by classes/80 as YOLOv5 does,
  but a class gain of ``SHORT_CLS_GAIN`` (1.5) instead of YOLOv5's 0.5: at 0.5 a run of
  a few thousand steps finds look-alike objects without telling them apart (their
  class scores stay at the prior); at 1.5 it learns them apart, and distinct classes
  keep their accuracy; much stronger (3.64 or more) costs objectness on distinct
  classes (docs/benchmarks.md, "Look-alike classes"); an EMA of the weights, 3 epochs
  with a pretrained backbone frozen, light augmentation (aspect jitter 0.1, scale
  0.75-1.25): a few thousand steps are too few to learn through the reference's strong
  jitter), and the yolov5 assigner with the IoU as the objectness target: several
  positives per object teach the class head many times more per step.
* ``long``: for long runs on large datasets: the reference optimizer and schedule
  with the YOLOv5 loss normalization (YOLOv5's gains, class 0.5, loss × batch), a
  per-step warm-up with a high bias learning rate, an EMA of the weights, the yolov5
  assigner, and the reference's frozen epochs and augmentation strength.

``--recipe auto`` (the default) picks ``short`` when the run takes at most
``AUTO_MAX_ITERATIONS`` nominal iterations, ``ceil(images / max(batch, 64)) · epochs``
(the rule Ultralytics uses to choose AdamW), and ``long`` above that.
"""

import math
from dataclasses import dataclass, field

from utils.config import ANCHOR_T, BOX_RATIO, CLS_RATIO, DEFAULT_WEIGHT_DECAY, OBJ_RATIO
from utils.train.ema import DEFAULT_DECAY as EMA_DECAY, DEFAULT_TAU as EMA_TAU
from utils.train.settings import BY_NAME, RECIPE_SETTINGS

AUTO_MAX_ITERATIONS = 10_000
NOMINAL_BATCH = 64
# The YOLOv5 objectness gain (1.0 at 640x640) expressed at this loss's 416x416 reference area.
_YOLOV5_OBJ_AT_416 = round(1.0 * (416.0 / 640.0) ** 2, 4)
# The class gain of YOLOv5 (tuned on COCO's 80 classes over hundreds of epochs), kept by
# the long recipe, and the short recipe's, 3x it (measured on the look-alike and the
# real-photo benchmarks, 12 epochs: see the module's docstring).
YOLOV5_CLS_GAIN = 0.5
SHORT_CLS_GAIN = 1.5


@dataclass(frozen=True)
class Recipe:
    """One recipe: a value for every recipe setting of ``utils.train.settings``
    (``RECIPE_SETTINGS``; their help texts say what each means). ``lr`` None is the
    optimizer's default rate (sgd 1e-2, adam 1e-3, adamw 0.002 · 5 / (4 + classes)).

    Raises:
        ValueError: a recipe setting without a value, an unknown one, or a value
            outside the setting's range.
    """

    name: str
    summary: str
    values: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = [key for key in RECIPE_SETTINGS if key not in self.values]
        unknown = [key for key in self.values if key not in RECIPE_SETTINGS]
        if missing or unknown:
            raise ValueError(f"recipe {self.name!r}: missing settings {missing}, unknown settings {unknown}")
        for key, value in self.values.items():
            if not BY_NAME[key].is_valid(value):
                raise ValueError(f"recipe {self.name!r}: {key} must be {BY_NAME[key].range_text()}, got {value!r}")

    def __getattr__(self, key):
        values = self.__dict__.get("values", {})
        if key in values:
            return values[key]
        raise AttributeError(key)

    def replace(self, name, summary, **changes):
        """A new recipe: this one with ``changes``."""
        return Recipe(name, summary, {**self.values, **changes})


RECIPES = {
    "reference": Recipe("reference", "the reference design's recipe (SGD, reference loss, no EMA)", dict(
        optimizer="sgd",
        lr=None,
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
        cls_norm="reference",
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
    )),
    "short": Recipe("short", "AdamW with a class-count learning rate, YOLOv5 loss gains and assignment, EMA", dict(
        optimizer="adamw",
        lr=None,
        lr_batch_scaling=False,
        min_lr_ratio=0.01,
        momentum=0.9,
        weight_decay=DEFAULT_WEIGHT_DECAY,
        warmup_epochs=3.0,
        warmup_min_steps=100,
        warmup_bias_lr=0.0,
        box_gain=0.05,
        obj_gain=_YOLOV5_OBJ_AT_416,
        cls_gain=SHORT_CLS_GAIN,
        cls_norm="reference",
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
    )),
}
# The long recipe is the short one's loss normalization, assignment and EMA on the reference's optimizer.
RECIPES["long"] = RECIPES["short"].replace(
    "long",
    "SGD with YOLOv5 loss gains, batch scaling and assignment, bias warm-up, EMA",
    optimizer="sgd",
    momentum=0.937,
    warmup_bias_lr=0.1,
    cls_gain=YOLOV5_CLS_GAIN,
    freeze_epochs=50,
    jitter=0.3,
    scale_min=0.25,
    scale_max=2.0,
)
RECIPE_CHOICES = ("auto", *RECIPES)
RECIPE_FIELDS = RECIPE_SETTINGS


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
    for name in RECIPE_FIELDS:
        cells = []
        for recipe in recipes:
            value = getattr(recipe, name)
            if name == "lr" and value is None:
                value = "auto"
            cells.append(f"{value!s:>12}" if not isinstance(value, float) else f"{value:>12g}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table())
