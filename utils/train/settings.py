"""Every training setting, declared once: its type, default (or "from the recipe"),
help, valid range and place in the run summary.

From this table come the ``TrainConfig`` fields (``utils.train.trainer``), the flags of
``train.py`` (``add_arguments``), the range checks (``check_ranges``), the run summary
rows (``summary_rows``) and config.json (the dataclass's fields). A recipe
(``utils.train.recipes``) is a value for each setting marked ``recipe``. Adding a
setting is one entry here plus its use.

A default of ``None`` means "not set": for a recipe setting, the chosen recipe's
value; for ``lr`` the optimizer's default rate, for ``min_lr`` ``lr x min_lr_ratio``,
for ``alpha`` and ``drop_connect_rate`` the backbone's default.
"""

import argparse
from dataclasses import dataclass

from utils.config import ASSIGNERS, CLS_NORMS, DEFAULT_ANCHORS, DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE
from utils.run_dir import numbering_help

# Argument groups of train.py, in the order --help shows them.
GROUPS = {
    "data": None,
    "model": None,
    "schedule": None,
    "recipe": "A recipe sets every option of this group (python -m utils.train.recipes prints the table); an option "
              "given here overrides it. The values used are printed and saved in config.json.",
    "run": None,
    "several machines": "Run the same command on every machine; each is one worker of a tf.distribute cluster "
                        "(MultiWorkerMirroredStrategy). The cluster comes from TF_CONFIG or from --cluster. "
                        "--batch-size is the global batch of all workers. Only the chief (worker 0) writes the run "
                        "folder.",
}


@dataclass(frozen=True)
class Setting:
    """One training setting.

    Attributes:
        name: the TrainConfig field and config.json key; the flag is ``--name`` with
            dashes.
        kind: int, float, str or bool.
        default: the value when not given; None: not set (see the module docstring).
        help: the flag's help text.
        group: the argument group (a key of ``GROUPS``).
        recipe: the value comes from the recipe unless given.
        choices: the allowed values, if a fixed set.
        low, high: the allowed range (None: unbounded); ``low_open``/``high_open``
            exclude the bound itself.
        switch: for a bool: "flag" (``--name`` turns it on) or "both" (``--name`` and
            ``--no-name``).
        summary: the run-summary row it is printed in ("" for none).
        label: its words in that row before the value (None: the name with spaces;
            "": the value alone).
        flag: False for a setting that has no command-line flag.
    """

    name: str
    kind: type
    default: object
    help: str
    group: str
    recipe: bool = False
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    switch: str = "both"
    summary: str = ""
    label: str | None = None
    flag: bool = True

    @property
    def option(self):
        return "--" + self.name.replace("_", "-")

    def range_text(self):
        """The valid range in words, e.g. "in [0, 1)" or ">= 1"; "" when unbounded."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def is_valid(self, value):
        if value is None:
            return True
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def _recipe_setting(name, kind, help, **kw):
    """A setting whose value comes from the recipe unless given."""
    return Setting(name, kind, None, help, "recipe", recipe=True, **kw)


SETTINGS = (
    # data
    Setting("train", str, "2007_train.txt", "training data: an annotation-line file (voc_annotation.py), a COCO JSON "
            "file, a YOLO data YAML (its train split) or folder; the format is detected", "data"),
    Setting("val", str, "2007_val.txt", "validation data, any format of --train (a YOLO data YAML: its val split); '' "
            "holds out --val-fraction of --train", "data"),
    Setting("images", str, "", "folder of the images of a COCO --train file whose file names are relative ('': the "
            "JSON file's folder)", "data"),
    Setting("val_images", str, "", "the same for a COCO --val file ('': --images)", "data"),
    Setting("val_fraction", float, 0.1, "part of --train held out when --val ''", "data", low=0.0, high=1.0,
            low_open=True, high_open=True),
    Setting("classes", str, "", "class names file, one per line; '' takes the dataset's (COCO categories, YOLO names), "
            "model_data/voc_classes.txt for annotation-line files; given, it must match the dataset's", "data"),
    Setting("anchors", str, str(DEFAULT_ANCHORS), "anchors file (9 anchors 'w,h, ...' at the input size)", "data"),
    Setting("auto_anchors", bool, False, "refit the anchors to the training boxes at --input-size (k-means) before "
            "training, when they fit better; they are saved in the run folder, its config.json and the checkpoints",
            "data", switch="flag"),
    Setting("cache", bool, False, "keep the encoded image files in memory", "data", switch="flag"),
    # model
    Setting("backbone", str, DEFAULT_BACKBONE, "backbone: efficientnet-b0…b7, efficientnetv2-b0…b3/s/m/l, "
            "efficientnet-lite0…lite4, mobilenetv2 (python summary.py --list)", "model", summary="backbone", label=""),
    Setting("alpha", float, None, "MobileNetV2 width multiplier 0.35–1.4 (default 1.0)", "model", low=0.0,
            low_open=True),
    Setting("drop_connect_rate", float, None, "stochastic-depth rate of EfficientNet/V2/Lite blocks (default 0.2)",
            "model", low=0.0, high=1.0, high_open=True),
    Setting("input_size", int, DEFAULT_INPUT_SIZE, "square input side, a multiple of 32", "model", low=32,
            summary="input size", label=""),
    Setting("backbone_weights", str, "imagenet", "imagenet (downloaded by Keras), none (from scratch) or a local "
            "no-top .h5 file", "model", summary="backbone", label="weights"),
    Setting("weights", str, "", "initialize from a checkpoint (.keras); layers matched by name and shape, others "
            "reported", "model", summary="init from", label=""),
    # schedule
    Setting("epochs", int, 300, "total epochs", "schedule", low=1, summary="epochs", label=""),
    Setting("batch_size", int, 8, "batch size with all layers trained", "schedule", low=1, summary="batch",
            label="unfrozen"),
    Setting("freeze_batch_size", int, 16, "batch size while frozen", "schedule", low=1, summary="batch",
            label="frozen"),
    Setting("lr_schedule", str, "cos", "cosine, or step decay", "schedule", choices=("cos", "step"),
            summary="optimizer", label="schedule"),
    Setting("label_smoothing", float, 0.0, "class label smoothing", "schedule", low=0.0, high=1.0, high_open=True,
            summary="loss"),
    Setting("mosaic", bool, False, "Mosaic augmentation during the first --mosaic-ratio of epochs", "schedule",
            switch="flag", summary="mosaic / mixup"),
    Setting("mixup", bool, False, "MixUp augmentation during the first --mosaic-ratio of epochs", "schedule",
            switch="flag", summary="mosaic / mixup"),
    Setting("augment", bool, True, "augment the training images; --no-augment trains on letterboxed images only (no "
            "flip, HSV, placement, Mosaic or MixUp)", "schedule", summary="augmentation", label="on"),
    # recipe
    Setting("recipe", str, "auto", "reference: the reference design's SGD recipe; short: AdamW + EMA for short runs; "
            "long: SGD + EMA for longer ones; auto: short or long by the run's nominal iterations", "recipe"),
    _recipe_setting("freeze_epochs", int, "first epochs with the backbone frozen (only with pretrained weights)",
                    low=0, summary="epochs", label="frozen (pretrained only)"),
    _recipe_setting("optimizer", str, "SGD (Nesterov), Adam, or AdamW (decoupled weight decay)",
                    choices=("sgd", "adam", "adamw"), summary="optimizer", label=""),
    _recipe_setting("lr", float, "initial learning rate; not set: the optimizer's default: sgd 1e-2, adam 1e-3, adamw "
                    "0.002*5/(4+classes)", low=0.0, low_open=True, summary="optimizer"),
    _recipe_setting("min_lr_ratio", float, "the final learning rate as a fraction of --lr", low=0.0, high=1.0,
                    low_open=True, summary="optimizer"),
    Setting("min_lr", float, None, "final learning rate (default: --lr x --min-lr-ratio)", "recipe", low=0.0,
            low_open=True, summary="optimizer"),
    _recipe_setting("lr_batch_scaling", bool, "scale the learning rates by batch/64 and clip them, as the reference "
                    "does", summary="optimizer"),
    _recipe_setting("momentum", float, "SGD momentum or Adam beta_1", low=0.0, high=1.0, high_open=True,
                    summary="optimizer"),
    _recipe_setting("weight_decay", float, "L2 on neck/head kernels (sgd, adam) or decoupled decay (adamw)", low=0.0,
                    summary="optimizer"),
    _recipe_setting("warmup_epochs", float, "per-step linear warm-up length; negative: the reference's per-epoch "
                    "warm-up", summary="warm-up"),
    _recipe_setting("warmup_min_steps", int, "shortest per-step warm-up", low=0, summary="warm-up"),
    _recipe_setting("warmup_bias_lr", float, "biases' starting learning rate during the warm-up (SGD; 0: like the "
                    "other weights)", low=0.0, summary="warm-up"),
    _recipe_setting("box_gain", float, "weight of the box (CIoU) loss", low=0.0, summary="loss"),
    _recipe_setting("obj_gain", float, "weight of the objectness loss at 416x416", low=0.0, summary="loss"),
    _recipe_setting("cls_gain", float, "weight of the class loss (at 80 classes with --cls-norm reference)", low=0.0,
                    summary="loss"),
    _recipe_setting("cls_norm", str, "class loss normalisation: reference: gain x classes/80 of the mean BCE over the "
                    "classes (the reference design, YOLOv5); mean: the gain x that mean, whatever the class count; "
                    "sum: the gain x the BCE summed over the classes (YOLOv8)", choices=CLS_NORMS, summary="loss"),
    _recipe_setting("loss_batch_scale", bool, "multiply the loss by the batch size (YOLOv5/v8)", summary="loss"),
    _recipe_setting("assigner", str, "yolov3: each box trains its best anchor in the cell of its centre; yolov5: every "
                    "anchor within --anchor-t of its shape, in its cell and the two nearest neighbours, with the "
                    "YOLOv5 box coding (stored in the model)", choices=ASSIGNERS, summary="assigner", label=""),
    _recipe_setting("anchor_t", float, "largest box/anchor width or height ratio of a yolov5 match and of the anchor "
                    "check", low=1.0, low_open=True, summary="assigner"),
    _recipe_setting("obj_iou_target", bool, "objectness target of a positive = its box's IoU with the target "
                    "(detached) instead of 1; the ignore threshold (IoU 0.5) applies to the yolov3 assigner only",
                    summary="assigner"),
    _recipe_setting("ema", bool, "validate and save an exponential moving average of the weights (--no-ema: off)",
                    summary="EMA of weights", label="on"),
    _recipe_setting("ema_decay", float, "final EMA decay", low=0.0, high=1.0, high_open=True, summary="EMA of weights"),
    _recipe_setting("ema_tau", float, "updates over which the EMA decay ramps up", low=0.0, low_open=True,
                    summary="EMA of weights"),
    _recipe_setting("jitter", float, "aspect-ratio jitter of the augmentation", low=0.0, high=1.0, high_open=True,
                    summary="augmentation"),
    _recipe_setting("scale_min", float, "smallest random scale of an image, relative to the input size", low=0.0,
                    low_open=True, summary="augmentation"),
    _recipe_setting("scale_max", float, "largest random scale of an image, relative to the input size", low=0.0,
                    low_open=True, summary="augmentation"),
    _recipe_setting("mosaic_ratio", float, "part of the epochs with Mosaic/MixUp on; they are off for the rest",
                    low=0.0, high=1.0, summary="mosaic / mixup"),
    # run
    Setting("save_dir", str, "logs", "folder of run folders", "run"),
    Setting("name", str, "", f"run folder name under --save-dir (default exp); {numbering_help('<name>')}, so no "
            "run is overwritten", "run"),
    Setting("save_period", int, 10, "epochs between epoch_NNN.keras checkpoints (0: none)", "run", low=0,
            summary="save / eval period"),
    Setting("eval_period", int, 10, "epochs between validation mAP runs (0: never)", "run", low=0,
            summary="save / eval period"),
    Setting("eval_images", int, 0, "validation images used for mAP (0: all)", "run", low=0),
    Setting("best_by", str, "loss", "what best.keras is chosen by", "run", choices=("loss", "map"),
            summary="save / eval period"),
    Setting("seed", int, 0, "random seed (data order and augmentation)", "run", summary="seed / devices"),
    Setting("devices", str, "", "devices to train on, e.g. '0,1' for two GPUs (MirroredStrategy) or 'cpu:0,cpu:1'",
            "run", summary="seed / devices"),
    Setting("sync_bn", bool, False, "BatchNorm statistics over the global batch of all devices and workers (one "
            "all-reduce per layer and step; for small per-device batches)", "several machines", switch="flag"),
    # Set by the run itself, saved in config.json.
    Setting("recipe_reason", str, "", "why the recipe was chosen", "recipe", flag=False),
)
BY_NAME = {s.name: s for s in SETTINGS}
RECIPE_SETTINGS = tuple(s.name for s in SETTINGS if s.recipe)


def add_arguments(parser, groups=None, choices=None):
    """Adds a flag for every setting to ``parser``, in argument groups.

    Args:
        parser: an argparse.ArgumentParser.
        groups: optional dict from group name to an existing argument group, for
            flags of the script's own added to the same groups.
        choices: optional dict from setting name to the choices its flag offers,
            for settings whose values are defined elsewhere (the recipe names).

    Returns:
        dict from group name to its argument group.
    """
    groups = dict(groups or {})
    for name, description in GROUPS.items():
        if name not in groups:
            groups[name] = parser.add_argument_group(name, description)
    for s in SETTINGS:
        if not s.flag:
            continue
        kwargs = {"help": s.help, "default": s.default}
        if s.kind is bool:
            kwargs["action"] = "store_true" if s.switch == "flag" else argparse.BooleanOptionalAction
        else:
            kwargs["type"] = s.kind
            if s.choices or (choices or {}).get(s.name):
                kwargs["choices"] = s.choices or choices[s.name]
        groups[s.group].add_argument(s.option, **kwargs)
    return groups


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: from the recipe)" for recipe settings and hides "None" defaults."""

    def _get_help_string(self, action):
        setting = BY_NAME.get(action.dest)
        if setting is not None and setting.recipe:
            return f"{action.help} (default: from the recipe)"
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def check_ranges(cfg, error=ValueError):
    """Raises ``error`` naming the flag of the first setting outside its range."""
    for s in SETTINGS:
        value = getattr(cfg, s.name)
        if not s.is_valid(value):
            raise error(f"{s.option} must be {s.range_text()}, got {value!r}")


def from_saved(saved):
    """Setting values from a config.json, with the "not set" markers of older files
    (0 or -1) read as None, and the class-loss normalisation of files older than it;
    an unknown key, or a value outside its setting's range, is a ValueError naming the key."""
    if not isinstance(saved, dict):
        raise ValueError(f"holds a {type(saved).__name__}, not the settings")
    unknown = sorted(set(saved) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
    values = dict(saved)
    # A run saved before the class-loss normalisation was a setting trained with the reference's.
    if "cls_gain" in values and "cls_norm" not in values:
        values["cls_norm"] = "reference"
    for name, unset in (("alpha", 0.0), ("drop_connect_rate", -1.0)):
        if values.get(name) is not None and values[name] <= unset:
            values[name] = None
    for name, value in values.items():
        setting = BY_NAME[name]
        try:
            valid = setting.is_valid(value)
        except TypeError:
            valid = False
        if not valid:
            must = setting.range_text() or f"a {setting.kind.__name__}"
            raise ValueError(f"the key {name!r} is {value!r}; it must be {must}")
    return values


def _format(value):
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value in ("", None) else str(value)


def summary_rows(cfg):
    """(label, text) rows of the run summary: each row lists the settings declared
    for it, each as its label and value."""
    rows = {}
    for s in SETTINGS:
        if not s.summary:
            continue
        value = _format(getattr(cfg, s.name))
        label = s.name.replace("_", " ") if s.label is None else s.label
        rows.setdefault(s.summary, []).append(f"{label} {value}" if label else value)
    return [(label, ", ".join(parts)) for label, parts in rows.items()]
