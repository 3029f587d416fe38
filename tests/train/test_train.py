"""End-to-end tests of train.py on a tiny synthetic VOC dataset, run as the user runs
it (subprocesses in the repository root), plus unit tests of the NaN guard.

Trainings are few (each takes minutes on a small shared CPU) and combined: a 2-epoch run
on the default device, killed after its first epoch and resumed for its second, checks
resuming and the whole run folder; one epoch on two CPU devices (MirroredStrategy) checks that it trains,
validates and saves. The checks made before any model is built run in parallel processes.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, TRAIN_TIMEOUT, assert_ran, run_script, script_env
from utils.train.callbacks import NanGuard, TrainingDiverged
from utils.train.devices import validation_batch

TRAIN = str(ROOT / "train.py")
# MobileNetV2 0.35: the quickest backbone to build and trace (the trainer is the same for
# every backbone; the default one is built by tests/nets).
SMALL = ["--backbone", "mobilenetv2", "--alpha", "0.35", "--backbone-weights", "none", "--input-size", "64",
         "--batch-size", "4", "--eval-period", "1",
         "--save-period", "1"]
# Epochs of the run that is killed after its first and resumed: the second is the
# resumed one (each epoch costs tens of seconds of tracing and evaluation on 2 cores).
RESUMED_EPOCHS = 2


def _run(args, timeout=TRAIN_TIMEOUT):
    return run_script(TRAIN, *args, timeout=timeout)


def _tail(text, n=3000):
    return text[-n:]


_assert_ok = assert_ran


@pytest.fixture(scope="module")
def data(shapes_voc):
    """16 shapes images at 64–128 px in VOC layout, converted by voc_annotation.py."""
    return shapes_voc


def _data_args(data):
    return ["--train", data["train"], "--val", data["val"], "--classes", data["classes"]]


def _history_epochs(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [int(float(row["epoch"])) for row in rows], rows


def _check_run_folder(run_dir, epochs, class_names):
    """The files every finished run leaves behind, and their contents."""
    for name in ("config.json", "last.keras", "best.keras", "history.csv", "loss.png", "train_state.json"):
        assert (run_dir / name).is_file(), f"{name} missing from {sorted(os.listdir(run_dir))}"
    for epoch in range(1, epochs + 1):
        assert (run_dir / f"epoch_{epoch:03d}.keras").is_file()
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    seen, rows = _history_epochs(run_dir)
    assert seen == list(range(1, epochs + 1))
    for row in rows:
        assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"]))
        assert row["map"] != "" and 0.0 <= float(row["map"]) <= 1.0  # --eval-period 1
        assert float(row["lr"]) > 0
        # The class separation at the validation objects, per class and overall.
        per_class = [float(row[f"val_cls_sep/{name}"]) for name in class_names if row.get(f"val_cls_sep/{name}")]
        assert per_class and all(-1.0 <= v <= 1.0 for v in per_class)
        assert float(row["val_cls_true"]) - float(row["val_cls_other"]) == pytest.approx(float(row["val_cls_sep"]),
                                                                                         abs=1e-4)
    assert (run_dir / "class_separation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    state = json.loads((run_dir / "train_state.json").read_text())
    assert state["epoch"] == epochs
    assert [row["epoch"] for row in state["history"]] == list(range(1, epochs + 1))

    config = json.loads((run_dir / "config.json").read_text())
    assert config["input_size"] == 64 and config["epochs"] == epochs and config["name"] == "run"

    from utils.checkpoint import load_model

    model = load_model(run_dir / "last.keras")
    assert model.class_names == class_names
    assert model.num_classes == len(class_names) and model.input_size == 64


@pytest.mark.slow
def test_training_on_two_cpu_devices(data, tmp_path):
    logs = tmp_path / "logs"
    # Validation on more than one image, so that both devices get a share of it.
    val = tmp_path / "val.txt"
    val.write_text(data["val"].read_text() + (data["root"] / "2007_test.txt").read_text())
    # The quickest backbone to build: what is tested is the devices, not the network.
    args = ["--train", data["train"], "--val", val, "--classes", data["classes"], "--backbone", "mobilenetv2",
            "--alpha", "0.35", "--backbone-weights", "none",
            "--input-size", "64", "--batch-size", "4", "--epochs", "1", "--eval-period", "0", "--save-period", "0",
            "--save-dir", logs, "--name", "run", "--devices", "cpu:0,cpu:1"]
    proc = _run(args)
    _assert_ok(proc)
    run_dir = logs / "run"
    assert json.loads((run_dir / "config.json").read_text())["devices"] == "cpu:0,cpu:1"
    assert json.loads((run_dir / "train_state.json").read_text())["epoch"] == 1
    seen, rows = _history_epochs(run_dir)
    assert seen == [1]
    assert np.isfinite(float(rows[0]["loss"])) and np.isfinite(float(rows[0]["val_loss"]))
    assert "Epoch 1 took" in proc.stdout and "it was the last." in proc.stdout  # a 1-epoch run

    from utils.checkpoint import load_model

    model = load_model(run_dir / "last.keras")
    assert model.class_names == data["classes"].read_text().split()


@pytest.mark.slow
def test_interrupted_training_resumes_where_it_stopped(data, tmp_path):
    logs = tmp_path / "logs"
    run_dir = logs / "run"
    state_path = run_dir / "train_state.json"
    log_path = tmp_path / "first.log"
    cmd = [sys.executable, TRAIN, *map(str, [*_data_args(data), *SMALL, "--epochs", RESUMED_EPOCHS, "--save-dir",
                                            logs, "--name", "run", "--auto-anchors"])]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=script_env(), stdout=log, stderr=subprocess.STDOUT)
        killed_after = None
        deadline = time.monotonic() + TRAIN_TIMEOUT
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if state_path.is_file():
                    try:
                        epoch = json.loads(state_path.read_text())["epoch"]
                    except (ValueError, KeyError):  # being replaced right now
                        epoch = 0
                    if epoch >= 1:
                        proc.send_signal(signal.SIGKILL)
                        killed_after = epoch
                        break
                time.sleep(0.25)
        finally:
            if proc.poll() is None and killed_after is None:
                proc.kill()
            proc.wait(timeout=60)
    output = log_path.read_text()
    assert killed_after is not None, f"no epoch finished before exit or timeout:\n{_tail(output)}"
    assert proc.returncode == -signal.SIGKILL
    assert killed_after < RESUMED_EPOCHS, "the run finished before it could be interrupted"

    # --auto-anchors refitted the anchors to the 64-pixel boxes and stored them with the run.
    assert "--auto-anchors refitted them" in output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["anchors"] == str(run_dir / "anchors.txt") and config["auto_anchors"]
    from utils.config import DEFAULT_ANCHORS
    from utils.model_data import load_anchors

    refitted = load_anchors(run_dir / "anchors.txt")
    assert not np.allclose(refitted, load_anchors(DEFAULT_ANCHORS))

    proc = _run(["--resume", run_dir])
    _assert_ok(proc)
    assert f"after epoch {killed_after}" in proc.stdout
    assert "refitted" not in proc.stdout  # resuming keeps the run's anchors
    from utils.checkpoint import load_model

    np.testing.assert_allclose(load_model(run_dir / "last.keras").anchors, refitted)
    class_names = data["classes"].read_text().split()
    _check_run_folder(run_dir, RESUMED_EPOCHS, class_names)
    assert sorted(os.listdir(logs)) == ["run"], "resuming must not start a new run folder"


def _error_cases(data, tmp_path):
    """(name, argv, texts the error message must hold) for inputs that cannot work."""
    lines = data["train"].read_text().splitlines()
    few = tmp_path / "few.txt"
    few.write_text("\n".join(lines[:3]) + "\n")
    unusable = tmp_path / "unusable.txt"
    unusable.write_text(f"not an annotation line\n{tmp_path / 'missing.jpg'} 1,2,30,40,0\n")
    fake_weights = tmp_path / "efficientnetb0_notop.h5"
    fake_weights.write_bytes(b"not read: the check comes first")
    classes = ["--classes", data["classes"], "--val", data["val"]]
    base = ["--backbone-weights", "none", "--input-size", "64", "--batch-size", "4"]
    return [
        ("missing train", ["--train", tmp_path / "nope.txt", *classes, *base], ["--train", "nope.txt"]),
        ("input size", ["--train", data["train"], *classes, *base, "--input-size", "100"], ["100", "multiple of 32"]),
        ("no usable line", ["--train", unusable, *classes, *base], ["unusable.txt", "no usable line"]),
        ("too few images", ["--train", few, *classes, *base],
         ["Too few training images", "3 usable", "batch size 4 (--batch-size)"]),
        # With a pretrained backbone the first epochs run frozen at --freeze-batch-size.
        ("too few for the frozen batch",
         ["--train", data["train"], *classes, "--input-size", "64", "--batch-size", "4",
          "--backbone-weights", fake_weights, "--freeze-epochs", "1", "--freeze-batch-size", "16"],
         ["Too few training images", f"{len(lines)} usable", "batch size 16 (--freeze-batch-size)"]),
        ("batch not shared evenly by the devices",
         ["--train", data["train"], *classes, *base, "--batch-size", "3", "--devices", "cpu:0,cpu:1"],
         ["Batch size 3", "2 devices"]),
    ]


def test_unusable_inputs_fail_early_with_a_clear_message(data, tmp_path):
    cases = _error_cases(data, tmp_path)
    procs = []
    # Started together: each costs mostly the TensorFlow import.
    for i, (name, args, _) in enumerate(cases):
        save_dir = tmp_path / f"logs{i}"
        cmd = [sys.executable, TRAIN, *map(str, args), "--save-dir", str(save_dir), "--epochs", "2"]
        procs.append((save_dir, subprocess.Popen(cmd, cwd=ROOT, env=script_env(), stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)))
    failures = []
    for (name, _, texts), (save_dir, proc) in zip(cases, procs):
        out, err = proc.communicate(timeout=600)
        problems = []
        if proc.returncode != 2:
            problems.append(f"exit code {proc.returncode}")
        if "Traceback" in out + err:
            problems.append("a traceback was printed")
        if "error:" not in err:
            problems.append("no 'error:' line on stderr")
        problems += [f"message lacks {t!r}" for t in texts if t not in err]
        if save_dir.exists() and any(save_dir.iterdir()):
            problems.append("a run folder was created")
        if "Run folder:" in out:
            problems.append("the run started")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}\n  stderr: {_tail(err, 1500)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "num_images, batch, replicas, expected",
    [(1, 4, 1, (4, False)), (7, 4, 1, (4, False)), (9, 4, 2, (4, True)), (3, 4, 2, (2, True)),
     (1, 4, 2, (0, True)), (5, 8, 4, (4, True))],
)
def test_validation_batch_splits_evenly_over_devices(num_images, batch, replicas, expected):
    assert validation_batch(num_images, batch, replicas) == expected


def test_nan_guard_names_epoch_and_step():
    guard = NanGuard()
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 1.25})
    guard.on_train_batch_end(1, None)
    guard.on_train_batch_end(2, {})
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 3, step 5"):
        guard.on_train_batch_end(4, {"loss": float("nan")})
    guard.on_epoch_begin(0)
    with pytest.raises(TrainingDiverged, match=r"inf at epoch 1, step 1"):
        guard.on_train_batch_end(0, {"loss": np.float32("inf")})
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 8"):
        guard.on_train_batch_end(7, {"loss": np.array(-np.inf)})


def _saved_config(**changes):
    """The config.json of a short run of 3 epochs at input 64, with ``changes``."""
    import dataclasses

    from utils.train.config import TrainConfig

    cfg = dataclasses.asdict(TrainConfig(recipe="short", epochs=3, input_size=64).resolved(100, 3))
    cfg.update(changes)
    return cfg


def _finished_run(tmp_path, box_coding="yolov5", **changes):
    """A run folder as train.py leaves it after epoch 1 of 3 (the checkpoint holds only its config)."""
    import zipfile

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = _saved_config(**changes)
    (run_dir / "config.json").write_text(json.dumps(cfg))
    (run_dir / "train_state.json").write_text(json.dumps({"epoch": 1, "history": []}))
    model = {"backbone": cfg["backbone"], "input_size": 64, "num_classes": 3, "box_coding": box_coding}
    with zipfile.ZipFile(run_dir / "last.keras", "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "YoloV3", "config": model}))
    return run_dir


def test_resume_names_the_file_and_key_of_a_broken_config(tmp_path):
    from utils.train.config import ConfigError, TrainConfig
    from utils.train.trainer import _resume_state

    run_dir = _finished_run(tmp_path)
    cfg, state = _resume_state(TrainConfig(), run_dir)
    assert cfg.assigner == "yolov5" and state.epoch == 1
    (run_dir / "config.json").write_text('{"epochs": 3, "backbone": ')
    with pytest.raises(ConfigError, match=r"unreadable .*config\.json.*start a new run"):
        _resume_state(TrainConfig(), run_dir)
    (run_dir / "config.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(ConfigError, match=r"unreadable .*config\.json"):
        _resume_state(TrainConfig(), run_dir)
    (run_dir / "config.json").write_text(json.dumps(_saved_config(assigner="yolov9")))
    with pytest.raises(ConfigError, match=r"config\.json \(the key 'assigner' is 'yolov9'; it must be one of"):
        _resume_state(TrainConfig(), run_dir)


def test_resume_refuses_settings_that_change_the_model(tmp_path):
    from utils.train.config import ConfigError, TrainConfig
    from utils.train.trainer import _resume_state

    run_dir = _finished_run(tmp_path, box_coding="yolov5", assigner="yolov3")
    with pytest.raises(ConfigError, match=r"assigner 'yolov3' in config\.json, 'yolov5' in the checkpoint"):
        _resume_state(TrainConfig(), run_dir)
