"""Training callbacks: learning-rate setting, NaN guard, the weights' EMA, mAP
evaluation and the run folder's checkpoints, history CSV, plots and resumable state.
"""

import contextlib
import csv
import io
import json
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from utils.checkpoint import atomic_write, save_model

log = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "last_optimizer.npz"
# With an EMA, last.keras holds the averaged weights; the raw ones training goes on
# from are kept here for --resume.
RAW_WEIGHTS_FILE = "last_raw_weights.npz"
HISTORY_FILE = "history.csv"
BEST_FILE = "best.keras"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class LearningRateSetter(keras.callbacks.Callback):
    """Sets the optimizer's learning rate from ``schedule(epoch)`` and shows it in the
    progress bar as ``lr``.

    With ``warmup_steps`` the rate also rises linearly, step by step, from near 0 over
    the first ``warmup_steps`` optimizer steps of the run; with a ``bias_group`` the
    biases meanwhile fall linearly from ``warmup_bias_lr`` to the schedule's rate. The
    optimizer then runs at the larger of the two rates and ``bias_group`` scales each
    group's gradients down to its own rate (exact for SGD).

    Args:
        schedule: callable(epoch) -> learning rate of that epoch.
        warmup_steps: length of the per-step warm-up (0: none).
        steps_per_epoch: optimizer steps in an epoch (to count steps across epochs).
        warmup_bias_lr: the biases' starting rate (used with ``bias_group``).
        bias_group: a ``BiasGroup`` whose scales this callback sets, or None.
    """

    def __init__(self, schedule, warmup_steps=0, steps_per_epoch=1, warmup_bias_lr=0.0, bias_group=None):
        super().__init__()
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_bias_lr = float(warmup_bias_lr)
        self.bias_group = bias_group
        self.epoch = 0
        self.epoch_lr = None
        self.current = None

    def rates(self, step):
        """(weights' rate, biases' rate) at the 0-based optimizer step ``step``."""
        if step >= self.warmup_steps:
            return self.epoch_lr, self.epoch_lr
        fraction = (step + 1) / (self.warmup_steps + 1)  # never a step at rate 0
        lr = fraction * self.epoch_lr
        if self.bias_group is None:
            return lr, lr
        return lr, self.warmup_bias_lr + fraction * (self.epoch_lr - self.warmup_bias_lr)

    def _set(self, lr, bias_lr):
        rate = max(lr, bias_lr)
        if rate != self.current:
            self.model.optimizer.learning_rate = rate
            self.current = rate
        if self.bias_group is not None:
            self.bias_group.set_rates(lr, bias_lr, rate)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_lr = float(self.schedule(epoch))
        self._set(*self.rates(epoch * self.steps_per_epoch))

    def on_train_batch_begin(self, batch, logs=None):
        step = self.epoch * self.steps_per_epoch + batch
        if step <= self.warmup_steps:  # one more call ends the warm-up exactly
            self._set(*self.rates(step))

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None:
            logs["lr"] = self.current

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.current


class EmaUpdater(keras.callbacks.Callback):
    """Updates a ``ModelEMA`` after every optimizer step and evaluates the validation
    loss with the averaged weights."""

    def __init__(self, ema):
        super().__init__()
        self.ema = ema
        self._swap = None

    def on_train_batch_end(self, batch, logs=None):
        self.ema.update()

    def on_test_begin(self, logs=None):
        self._swap = self.ema.swapped()
        self._swap.__enter__()

    def on_test_end(self, logs=None):
        if self._swap is not None:
            self._swap.__exit__(None, None, None)
            self._swap = None


def averaged(ema):
    """``ema.swapped()``, or a context that changes nothing without an EMA."""
    return ema.swapped() if ema is not None else contextlib.nullcontext()


class NanGuard(keras.callbacks.Callback):
    """Stops training with a clear error when the loss is NaN or infinite."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"Loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}. Training stopped; "
                "the last good checkpoint is kept. Try a lower --lr, check the annotations for "
                "broken boxes, or use --optimizer adam."
            )


class MapEvaluator(keras.callbacks.Callback):
    """Every ``period`` epochs (and at the last), evaluates the model with ``evaluate()``
    -> ``utils.eval.evaluator.Evaluation`` and adds its mAP@0.5 to the epoch logs as
    ``map``; then calls each of ``on_evaluated(epoch, evaluation)`` (1-based epoch),
    still with the averaged weights of an EMA in the model."""

    def __init__(self, evaluate, period, total_epochs, ema=None, on_evaluated=()):
        super().__init__()
        self.evaluate = evaluate
        self.period = period
        self.total_epochs = total_epochs
        self.ema = ema
        self.on_evaluated = list(on_evaluated)

    def on_epoch_end(self, epoch, logs=None):
        if self.period <= 0 or logs is None:
            return
        if (epoch + 1) % self.period == 0 or epoch + 1 == self.total_epochs:
            with averaged(self.ema):
                evaluation = self.evaluate()
                value = float(evaluation.map)
                logs["map"] = value
                print(f"\nEpoch {epoch + 1}: validation mAP@0.5 = {value:.4f}")
                for hook in self.on_evaluated:
                    hook(epoch + 1, evaluation)


class BestEvaluationOutputs:
    """The evaluation outputs of the checkpoint in ``best.keras``, in the run folder.

    When ``best.keras`` is written at an epoch that was evaluated, the confusion
    matrix, the PR, F1, P and R curves (``utils.eval.diagnostics``) go to the run
    folder and the best-F1 confidence beside the checkpoint
    (``utils.eval.operating_point``: ``best.eval.json``, the default of
    ``predict.py --conf``). When it is written at an epoch that was not, the
    confidence file of the checkpoint it replaces is removed, and ``finish``
    evaluates ``best.keras`` at the end of the run instead.

    Args:
        run_dir: the run folder.
        class_names: the C class names.
        evaluated_on: what the evaluation set is, for the confidence file.
    """

    def __init__(self, run_dir, class_names, evaluated_on="the validation set"):
        self.run_dir = Path(run_dir)
        self.class_names = list(class_names)
        self.evaluated_on = evaluated_on
        self.latest = None
        self.best_epoch = None

    @property
    def checkpoint(self):
        return self.run_dir / BEST_FILE

    def record(self, epoch, evaluation):
        """Keeps the evaluation of ``epoch`` (MapEvaluator's ``on_evaluated``)."""
        self.latest = (epoch, evaluation)

    def best_saved(self, epoch):
        """``best.keras`` was just written at ``epoch`` (1-based)."""
        from utils.eval.operating_point import remove_conf_file

        self.best_epoch = epoch
        if self.latest is not None and self.latest[0] == epoch:
            self.write(self.latest[1], epoch)
        else:
            remove_conf_file(self.checkpoint)

    def write(self, evaluation, epoch=None):
        """Writes the outputs of ``evaluation``, the evaluation of ``best.keras``; returns the diagnostics."""
        from utils.eval.diagnostics import diagnose, format_best_f1, save_diagnostics
        from utils.eval.operating_point import write_conf_file

        diagnostics = diagnose(evaluation.result, evaluation.ground_truth, evaluation.detections, self.class_names)
        save_diagnostics(diagnostics, evaluation.result, self.run_dir)
        if diagnostics.best is not None:
            write_conf_file(self.checkpoint, diagnostics.best, epoch=epoch, map=evaluation.map,
                            evaluated_on=f"{self.evaluated_on} ({len(evaluation.ground_truth)} images)")
        print(f"best.keras{f' (epoch {epoch})' if epoch else ''}: {format_best_f1(diagnostics.best)}")
        return diagnostics

    def finish(self, evaluate_checkpoint):
        """At the end of the run: evaluates ``best.keras`` when its outputs are missing.

        Args:
            evaluate_checkpoint: function(path) -> the Evaluation of that checkpoint.
        """
        from utils.eval.operating_point import conf_file

        if self.checkpoint.is_file() and not conf_file(self.checkpoint).is_file():
            self.write(evaluate_checkpoint(self.checkpoint), self.best_epoch)


def separation_lines(epoch, class_names, true, other, count, worst=3):
    """The epoch summary's class-separation line, and a second one when the class
    scores sit at the prior (see ``nets.class_separation``).

    Args:
        epoch: the 1-based epoch.
        class_names: the C class names.
        true, other, count: ``ClassSeparation.per_class()``.
        worst: how many of the least separated classes the warning names.

    Returns:
        A list of one or two lines ([] when no class had a positive).
    """
    from nets.class_separation import AT_PRIOR_SEPARATION

    has = count > 0
    if not has.any():
        return []
    separation = true - other
    mean_sep = float(np.mean(separation[has]))
    lines = [f"Epoch {epoch}: classes at the objects: true class {np.mean(true[has]):.2f}, best other class "
             f"{np.mean(other[has]):.2f}, separation {mean_sep:.2f} (1: told apart, 0: at the prior)"]
    order = [i for i in np.argsort(separation) if has[i]][:worst]
    if mean_sep < AT_PRIOR_SEPARATION:
        lines.append(
            "  The class scores sit at the prior: objects are found, but not yet told apart. Least separated: "
            + ", ".join(f"{class_names[i]} {separation[i]:+.2f}" for i in order)
            + ". If it stays so, train longer or with a stronger class term (--cls-gain 3); see "
              "docs/troubleshooting.md, 'When mAP is low'.")
    return lines


def _tag(name):
    """A class name as a TensorBoard tag and CSV column part."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


class TimeLeft(keras.callbacks.Callback):
    """After the first epoch of each phase, prints how long an epoch takes and about how
    long the run has left, and when it should end.

    The first step of a phase builds its graph, so the epoch's pace is taken from the
    steps after it (scaled to the whole epoch, validation included). Epochs of a
    later phase are counted at this one's pace; a frozen backbone trains faster than
    the whole network, which the estimate of a frozen phase says.

    Args:
        phase: the ``utils.train.phases.Phase`` this fit runs.
        total_epochs: the run's last epoch (its ``epochs``).
    """

    def __init__(self, phase, total_epochs):
        super().__init__()
        self.phase, self.total_epochs = phase, int(total_epochs)
        self._started = self._after_first_step = None
        self._reported = False

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._after_first_step = time.monotonic(), None

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and self._after_first_step is None:
            self._after_first_step = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self._reported or self._started is None:
            return
        self._reported = True
        now = time.monotonic()
        steps = (self.params or {}).get("steps") or 0
        seconds = now - self._started
        if self._after_first_step is not None and steps > 1:
            seconds = (now - self._after_first_step) * steps / (steps - 1)
        print("\n" + time_left_line(epoch + 1, seconds, self.total_epochs,
                                    self.phase.frozen and self.phase.end < self.total_epochs))


def time_left_line(epoch, seconds, total_epochs, faster_now=False):
    """The line of ``TimeLeft``: an epoch like epoch ``epoch`` (from 1) takes ``seconds``."""
    left = total_epochs - epoch
    if left <= 0:
        return f"Epoch {epoch} took {seconds:.0f} s; it was the last."
    ends = time.strftime("%H:%M", time.localtime(time.time() + left * seconds))
    note = " (more: the epochs that train the whole network are slower than these frozen ones)" if faster_now else ""
    return (f"Epoch {epoch}: an epoch takes about {seconds:.0f} s; the {left} epochs left take about "
            f"{left * seconds / 60:.1f} min{note}, ending about {ends}.")


class ClassSeparationReport(keras.callbacks.Callback):
    """After each epoch with validation: the validation class separation of every
    class into the logs (``val_cls_sep/<class>``, with ``val_cls_true`` and
    ``val_cls_other``), so that history.csv and TensorBoard hold it, and the summary
    line of ``separation_lines``. Needs a model with a ``class_separation`` metric
    (``nets.yolo.YoloV3``), which holds the validation pass's sums at the epoch's end."""

    def __init__(self, class_names):
        super().__init__()
        self.class_names = list(class_names)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_cls_sep" not in logs:
            return
        true, other, count = self.model.class_separation.per_class()
        has = count > 0
        if has.any():
            logs["val_cls_true"] = float(np.mean(true[has]))
            logs["val_cls_other"] = float(np.mean(other[has]))
        for name, t, o, n in zip(self.class_names, true, other, count):
            if n > 0:
                logs[f"val_cls_sep/{_tag(name)}"] = float(t - o)
        for line in separation_lines(epoch + 1, self.class_names, true, other, count):
            print(line if line.startswith(" ") else "\n" + line)


class RunCheckpointer(keras.callbacks.Callback):
    """Writes the run folder at every epoch end, each file atomically.

    Files: ``last.keras`` (+ ``last_optimizer.npz``), ``best.keras`` (by validation loss or
    mAP), ``epoch_NNN.keras`` every ``save_period`` epochs, ``history.csv``,
    ``loss.png`` / ``class_separation.png`` / ``map.png`` and ``train_state.json`` (what ``--resume`` reads). With an
    EMA the checkpoints hold the averaged weights, and ``last_raw_weights.npz`` the raw
    ones training continues from.

    Args:
        run_dir: the run folder.
        save_period: epochs between ``epoch_NNN`` checkpoints (0: none).
        best_by: "loss" (lowest val_loss, or loss without validation) or "map".
        history: rows of earlier epochs (when resuming).
        best: best value so far (when resuming).
        ema: the run's ``ModelEMA``, or None.
        on_best: function(epoch) called, 1-based, after ``best.keras`` is written, or None.
    """

    def __init__(self, run_dir, save_period, best_by="loss", history=None, best=None, ema=None, on_best=None):
        super().__init__()
        self.ema = ema
        self.on_best = on_best
        self.run_dir = Path(run_dir)
        self.save_period = save_period
        self.best_by = best_by
        self.history = list(history or [])
        self.best = best
        # Whether the current epochs run with a frozen backbone (set by the trainer);
        # resuming restores the optimizer state only into the same phase.
        self.frozen = None

    def _score(self, logs):
        if self.best_by == "map":
            value = logs.get("map")
            return None if value is None else -float(value)
        value = logs.get("val_loss", logs.get("loss"))
        return None if value is None or not math.isfinite(float(value)) else float(value)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in logs.items() if np.ndim(v) == 0})
        self.history.append(row)

        optimizer_vars = {f"v{i:04d}": np.asarray(v) for i, v in enumerate(self.model.optimizer.variables)}
        atomic_write(self.run_dir / OPTIMIZER_FILE, lambda tmp: np.savez(tmp, **optimizer_vars), ".npz")
        if self.ema is not None:
            raw = {f"v{i:04d}": np.asarray(v) for i, v in enumerate(self.model.weights)}
            atomic_write(self.run_dir / RAW_WEIGHTS_FILE, lambda tmp: np.savez(tmp, **raw), ".npz")
        with averaged(self.ema):
            save_model(self.model, self.run_dir / "last.keras", include_optimizer=False)
            score = self._score(logs)
            if score is not None and (self.best is None or score < self.best):
                self.best = score
                save_model(self.model, self.run_dir / BEST_FILE, include_optimizer=False)
                if self.on_best is not None:
                    self.on_best(epoch + 1)
            if self.save_period and (epoch + 1) % self.save_period == 0:
                save_model(self.model, self.run_dir / f"epoch_{epoch + 1:03d}.keras", include_optimizer=False)

        write_history_csv(self.run_dir / HISTORY_FILE, self.history)
        plot_history(self.run_dir, self.history)
        state = {
            "epoch": epoch + 1,
            "best": self.best,
            "best_by": self.best_by,
            "frozen": self.frozen,
            "ema_updates": int(self.ema.updates.numpy()) if self.ema is not None else None,
            "history": self.history,
        }
        atomic_write(self.run_dir / STATE_FILE, lambda tmp: Path(tmp).write_text(json.dumps(state, indent=1)), ".json")


def restore_optimizer(optimizer, path, variables):
    """Builds ``optimizer`` for ``variables`` and loads its saved state from ``path``.

    Returns:
        True if the state was restored, False if the file does not fit (then the
        optimizer starts fresh and a warning says so).
    """
    optimizer.build(variables)
    with np.load(path) as data:
        saved = [data[k] for k in sorted(data.files)]
    if len(saved) != len(optimizer.variables) or any(
        tuple(s.shape) != tuple(v.shape) for s, v in zip(saved, optimizer.variables)
    ):
        log.warning("Optimizer state in %s does not fit this phase's variables; starting it fresh.", path)
        return False
    for value, var in zip(saved, optimizer.variables):
        var.assign(value)
    return True


def restore_raw_weights(model, path):
    """Loads the raw (non-averaged) weights saved beside an EMA checkpoint into ``model``."""
    with np.load(path) as data:
        saved = [data[k] for k in sorted(data.files)]
    if len(saved) != len(model.weights) or any(
        tuple(s.shape) != tuple(v.shape) for s, v in zip(saved, model.weights)
    ):
        raise ValueError(f"{path} does not fit the model ({len(saved)} arrays for {len(model.weights)} weights).")
    for value, var in zip(saved, model.weights):
        var.assign(value)


def write_history_csv(path, history):
    """Writes the per-epoch rows (dicts with an "epoch" key) as CSV, atomically."""
    keys = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in keys})
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()), ".csv")


def plot_history(run_dir, history):
    """Writes loss.png (training and validation loss), class_separation.png (when
    validation measured it) and map.png (when mAP exists)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("loss", "train loss"), ("val_loss", "val loss")):
        points = [(e, row[key]) for e, row in zip(epochs, history) if key in row]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Loss")
    _save_figure(fig, Path(run_dir) / "loss.png")

    _plot_separation(run_dir, epochs, history)
    points = [(e, row["map"]) for e, row in zip(epochs, history) if "map" in row]
    if points:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(*zip(*points), marker="o", color="tab:green")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mAP@0.5")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"Validation mAP@0.5 (best {max(p[1] for p in points):.3f})")
        _save_figure(fig, Path(run_dir) / "map.png")


def _plot_separation(run_dir, epochs, history):
    """class_separation.png: at the validation objects, the true class's and the best
    other class's mean probability per epoch (when validation measured them)."""
    import matplotlib.pyplot as plt

    keys = (("val_cls_true", "true class"), ("val_cls_other", "best other class"), ("val_cls_sep", "separation"))
    if not any(keys[0][0] in row for row in history):
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in keys:
        points = [(e, row[key]) for e, row in zip(epochs, history) if key in row]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean class probability at the objects")
    ax.set_ylim(-0.05, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Class separation (validation; 0: class scores at the prior)")
    _save_figure(fig, Path(run_dir) / "class_separation.png")


def _save_figure(fig, path):
    """Writes ``fig`` as a PNG at ``path`` atomically, and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), ".png")
    plt.close(fig)
