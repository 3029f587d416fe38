"""Training on several machines (utils/train/cluster.py): the cluster description,
the data shares, and a real two-worker run of train.py on 127.0.0.1 (free ports, CPU
only, a tiny model): the first loss equals a single-process run's, a killed worker
ends the run on the other with a clear message, --resume completes it, both workers
finish with the same weights and only the chief writes the run folder.
"""

import csv
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, run_script, script_env
from utils.train.cluster import (
    ClusterError,
    ClusterInfo,
    parse_tf_config,
    read_cluster_file,
    shard,
    worker_seed,
)
from utils.train.devices import steps_per_epoch

# Wall-clock limit of one cluster run; both workers are killed past it.
RUN_TIMEOUT = 900
# How long the surviving worker may take to notice a killed one and exit.
LOST_WORKER_TIMEOUT = 180
# Epochs of the cluster run, one step each; a worker is killed after the first, so
# the resumed run trains the second (every epoch costs tens of seconds on 2 cores).
EPOCHS = 2

# Runs train.py and then saves the model's final weights to argv[1], so that the
# test can compare the workers (the non-chief's own files are removed at the end).
WORKER_SCRIPT = """
import sys
import keras
import numpy as np

out = sys.argv[1]
fit = keras.Model.fit

def fit_and_keep(self, *args, **kwargs):
    history = fit(self, *args, **kwargs)
    np.savez(out, *[v.numpy() for v in self.weights])
    return history

keras.Model.fit = fit_and_keep
import train
sys.exit(train.main(sys.argv[2:]))
"""


def test_cluster_file_as_yaml_list_or_tf_config(tmp_path):
    listing = tmp_path / "cluster.yaml"
    listing.write_text("workers:\n  - 10.0.0.1:2222\n  - 10.0.0.2:2222\n")
    config = read_cluster_file(listing, worker_index=1)
    assert config == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                      "task": {"type": "worker", "index": 1}}
    info = parse_tf_config(json.dumps(config))
    assert (info.index, info.num_workers, info.is_chief) == (1, 2, False)

    full = tmp_path / "tf_config.json"
    full.write_text(json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
                                "task": {"type": "worker", "index": 0}}))
    info = parse_tf_config(read_cluster_file(full))
    assert info.workers == ("a:1", "b:2", "c:3") and info.index == 1 and info.task == ("worker", 0)
    chief = parse_tf_config({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}})
    assert chief.is_chief and chief.describe().startswith("worker 0 of 2 (chief")


@pytest.mark.parametrize(
    "text, index, message",
    [
        ("workers:\n  - a:1\n  - b:2\n", None, "--worker-index"),
        ("workers:\n  - a:1\n  - b:2\n", 2, "not in the cluster"),
        ("workers:\n  - a:1\n  - a:1\n", 0, "listed twice"),
        ("workers:\n  - just-a-host\n", 0, "not host:port"),
        ("workers: []\n", 0, "no workers"),
        ("[1, 2", 0, "not valid JSON or YAML"),
        ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}', None,
         "only 'chief' and 'worker'"),
    ],
)
def test_bad_cluster_files_are_refused_clearly(tmp_path, text, index, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ClusterError, match=message) as info:
        read_cluster_file(path, index)
    assert str(path) in str(info.value)


def test_shards_are_disjoint_equal_and_cover_all_but_a_remainder():
    items = list(range(23))
    shares = [shard(items, ClusterInfo(("a:1", "b:2", "c:3"), i, ("worker", i)), multiple=2) for i in range(3)]
    assert [len(s) for s in shares] == [6, 6, 6]  # 23 // 3 = 7, cut to a multiple of 2
    flat = [x for s in shares for x in s]
    assert len(set(flat)) == len(flat)
    one = shard(items, ClusterInfo(("a:1",), 0, ("worker", 0)))
    assert one == items


def test_worker_seeds_differ_and_are_reproducible():
    infos = [ClusterInfo(("a:1", "b:2"), i, ("worker", i)) for i in range(2)]
    seeds = {(s, i): worker_seed(s, info) for s in range(5) for i, info in enumerate(infos)}
    assert len(set(seeds.values())) == len(seeds)
    assert worker_seed(7, infos[1]) == worker_seed(7, infos[1])
    assert worker_seed(7, None) == 7


def test_steps_per_epoch_counts_each_workers_share():
    two = ClusterInfo(("a:1", "b:2"), 0, ("worker", 0))
    assert steps_per_epoch(13, 4) == 3
    assert steps_per_epoch(13, 4, two) == 3  # 6 images a worker, 2 a step
    assert steps_per_epoch(11, 4, two) == 2  # 5 a worker


def test_worker_index_without_cluster_is_an_error():
    proc = run_script("train.py", "--worker-index", "1")
    assert proc.returncode == 2 and "--worker-index needs --cluster" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- real clusters --------------------------------------------------------------------


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def data(shapes_voc, tmp_path_factory):
    """Annotation files of the shapes dataset: 4 training images (one global batch of 4,
    so one step per epoch) and 2 validation images."""
    root = tmp_path_factory.mktemp("cluster_data")
    lines = [line for split in ("train", "val", "test") for line in shapes_voc[split].read_text().splitlines()
             if line.strip()]
    assert len(lines) >= 10
    (root / "train.txt").write_text("\n".join(lines[:4]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[4:6]) + "\n")
    shutil.copy(shapes_voc["classes"], root / "shapes_classes.txt")
    return root


def _train_args(data, logs, epochs, period=1):
    # MobileNetV2 0.35 is the quickest backbone to build and trace; it has no
    # stochastic depth, so a training step is deterministic.
    return ["--train", data / "train.txt", "--val", data / "val.txt", "--classes", data / "shapes_classes.txt",
            "--backbone", "mobilenetv2", "--alpha", "0.35", "--backbone-weights", "none",
            "--input-size", "64", "--batch-size", "4", "--epochs", str(epochs), "--no-augment", "--sync-bn",
            "--eval-period", str(period), "--save-period", str(period), "--save-dir", logs, "--name", "run"]


def _start_cluster(tmp_path, args, tag):
    """Starts two workers of one cluster; returns [(process, log path, weights path, TMPDIR)]."""
    ports = _free_ports(2)
    cluster = tmp_path / f"cluster_{tag}.yaml"
    cluster.write_text("workers:\n" + "".join(f"  - 127.0.0.1:{p}\n" for p in ports))
    workers = []
    for index in range(2):
        tmp = tmp_path / f"tmp_{tag}_{index}"
        tmp.mkdir()
        log = tmp_path / f"worker_{tag}_{index}.log"
        weights = tmp_path / f"weights_{tag}_{index}.npz"
        cmd = [sys.executable, "-c", WORKER_SCRIPT, weights, *map(str, args), "--cluster", cluster,
               "--worker-index", str(index)]
        handle = open(log, "w")
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=script_env(TMPDIR=str(tmp)), stdout=handle,
                                stderr=subprocess.STDOUT)
        handle.close()
        workers.append((proc, log, weights, tmp))
    return workers


def _wait(workers, timeout=RUN_TIMEOUT):
    deadline = time.time() + timeout
    try:
        for proc, *_ in workers:
            proc.wait(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
        _kill(workers)
        pytest.fail("the cluster run did not finish in time:\n" + _logs(workers))


def _kill(workers):
    for proc, *_ in workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _logs(workers, n=2500):
    return "\n".join(f"--- worker {i} ---\n{log.read_text()[-n:]}" for i, (_, log, _, _) in enumerate(workers))


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_workers_train_like_one_machine_and_resume_after_losing_one(data, tmp_path, request):
    # Two workers train one step an epoch; after the first epoch one is killed: the
    # other ends the run with a clear message, and --resume completes it.
    logs = tmp_path / "logs"
    workers = _start_cluster(tmp_path, _train_args(data, logs, epochs=EPOCHS), "first")
    state = logs / "run" / "train_state.json"
    deadline = time.time() + RUN_TIMEOUT
    while not state.is_file() and time.time() < deadline and all(p.poll() is None for p, *_ in workers):
        time.sleep(0.2)
    if not state.is_file():
        _kill(workers)
        pytest.fail("no epoch finished:\n" + _logs(workers))
    workers[1][0].send_signal(signal.SIGKILL)
    killed_at = time.time()
    # The single-process run compared with below starts now: the chief mostly waits
    # for the lost worker's missed heartbeats meanwhile, so the two share the cores
    # little.
    single_logs = tmp_path / "single"
    single_log = tmp_path / "single.log"
    single_cmd = [sys.executable, "train.py", *map(str, _train_args(data, single_logs, epochs=1, period=0))]
    with open(single_log, "w") as handle:
        single_proc = subprocess.Popen(single_cmd, cwd=ROOT, env=script_env(), stdout=handle,
                                       stderr=subprocess.STDOUT)
    single_run = [(single_proc, single_log, None, None)]  # as _wait and _kill take workers
    request.addfinalizer(lambda: _kill(single_run))  # when an assertion below fails first
    chief = workers[0][0]
    try:
        chief.wait(timeout=LOST_WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(workers)
        pytest.fail("the chief did not notice the lost worker:\n" + _logs(workers))
    print(f"the chief ended {time.time() - killed_at:.0f} s after the kill")
    _kill(workers)
    chief_log = workers[0][1].read_text()
    assert chief.returncode == 1, chief_log[-3000:]
    assert "lost contact with the cluster" in chief_log and "--resume" in chief_log, chief_log[-3000:]
    assert "Traceback" not in chief_log, chief_log[-5000:]
    assert "worker 0 of 2 (chief" in chief_log and "worker 1 of 2 (worker" in workers[1][1].read_text()
    finished = json.loads(state.read_text())["epoch"]
    assert 1 <= finished < EPOCHS

    # The first step (epoch 1 is one step) sees the same global batch as one process
    # with the same settings, so its loss is the same.
    _wait(single_run)
    assert single_proc.returncode == 0, single_log.read_text()[-5000:]
    single = _history(single_logs / "run")[0]
    first = _history(logs / "run")[0]
    for key in ("loss", "box_loss", "obj_loss", "cls_loss"):
        assert float(first[key]) == pytest.approx(float(single[key]), rel=2e-3), key

    resumed = _start_cluster(tmp_path, ["--resume", logs / "run"], "resume")
    _wait(resumed)
    for proc, *_ in resumed:
        assert proc.returncode == 0, _logs(resumed)
    text = _logs(resumed, n=100_000)
    assert "Traceback" not in text, text[-5000:]
    assert f"Resuming {logs / 'run'} after epoch {finished}" in resumed[1][1].read_text()

    # Only the chief's run folder exists, complete; the other worker's files are gone.
    assert [p.name for p in logs.iterdir()] == ["run"]
    run_dir = logs / "run"
    epochs = list(range(1, EPOCHS + 1))
    for name in ("config.json", "last.keras", "best.keras", "history.csv", "loss.png", "train_state.json",
                 *(f"epoch_{epoch:03d}.keras" for epoch in epochs)):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    rows = _history(run_dir)
    assert [int(float(r["epoch"])) for r in rows] == epochs
    assert all(r["map"] != "" for r in rows)  # computed on the chief
    assert json.loads(state.read_text())["epoch"] == EPOCHS
    assert not any(resumed[1][3].iterdir()), "the non-chief worker left files in its temporary folder"

    # Both workers end with the same weights.
    with np.load(resumed[0][2]) as a, np.load(resumed[1][2]) as b:
        assert a.files == b.files and len(a.files) > 50
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
