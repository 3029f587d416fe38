"""Training on several machines: the cluster a worker belongs to, its strategy
(``tf.distribute.MultiWorkerMirroredStrategy``), the share of the data it reads and
what it may write.

A cluster is described the way TensorFlow describes it, by ``TF_CONFIG``, or by a
small cluster file (JSON or YAML) that ``--cluster`` turns into ``TF_CONFIG``::

    workers:            # host:port of every worker, the chief first
      - 10.0.0.1:12345
      - 10.0.0.2:12345

plus the worker's own place in it (``--worker-index``). A full ``TF_CONFIG``
document (``{"cluster": {...}, "task": {...}}``) is accepted as a cluster file too.

Every worker runs the same ``train.py`` command on its own devices; gradients are
summed over all of them each step, so all workers hold the same weights. The chief
(worker 0, or the task of a "chief" job) alone writes the run folder; the others
write to a temporary folder that is removed at the end.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


class ClusterError(RuntimeError):
    """A cluster description that cannot work, or a worker lost during training."""


@dataclass(frozen=True)
class ClusterInfo:
    """Where this process sits in the cluster.

    Attributes:
        workers: "host:port" of every task, the chief first.
        index: this process's position in ``workers``.
        task: the TF_CONFIG task, e.g. ("worker", 1) or ("chief", 0).
    """

    workers: tuple
    index: int
    task: tuple

    @property
    def num_workers(self):
        return len(self.workers)

    @property
    def is_chief(self):
        return self.index == 0

    def describe(self):
        role = "chief" if self.is_chief else "worker"
        return f"worker {self.index} of {self.num_workers} ({role}, {self.workers[self.index]})"


def read_cluster_file(path, worker_index=None):
    """Reads a cluster file and returns the TF_CONFIG document it stands for.

    Args:
        path: JSON or YAML file: ``workers: [host:port, ...]`` (the chief first), or a
            full TF_CONFIG document with "cluster" and "task".
        worker_index: this process's index in ``workers`` (required unless the file
            has a "task").

    Raises:
        ClusterError: unreadable file, no workers, or a missing or bad index.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except OSError as exc:
        raise ClusterError(f"--cluster {path}: cannot read the file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"--cluster {path}: not valid JSON or YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ClusterError(f"--cluster {path}: expected a mapping with 'workers: [host:port, ...]'")
    if "cluster" in doc:
        config = {"cluster": doc["cluster"], "task": doc.get("task")}
        if worker_index is not None:
            config["task"] = {"type": "worker", "index": int(worker_index)}
    else:
        workers = doc.get("workers", doc.get("worker"))
        if worker_index is None:
            raise ClusterError(f"--cluster {path}: say which worker this is with --worker-index (0 is the chief)")
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(worker_index)}}
    parse_tf_config(config, source=f"--cluster {path}")  # checks it
    return config


def parse_tf_config(config, source="TF_CONFIG"):
    """Checks a TF_CONFIG document (a dict or its JSON text) and returns its ``ClusterInfo``.

    Jobs "chief" (at most one task) and "worker" are supported; the chief comes first.

    Raises:
        ClusterError: what is wrong, naming ``source``.
    """
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ClusterError(f"{source} is not valid JSON ({exc})") from None
    cluster = (config or {}).get("cluster") or {}
    task = (config or {}).get("task") or {}
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ClusterError(f"{source}: only 'chief' and 'worker' jobs are supported, found {unknown}")
    chief, workers = cluster.get("chief") or [], cluster.get("worker") or []
    if not isinstance(chief, list) or not isinstance(workers, list) or len(chief) > 1:
        raise ClusterError(f"{source}: 'worker' must be a list of host:port and 'chief' a list of at most one")
    tasks = [("chief", 0)] if chief else []
    tasks += [("worker", i) for i in range(len(workers))]
    addresses = [str(a) for a in chief + workers]
    if not addresses:
        raise ClusterError(f"{source}: no workers listed")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ClusterError(f"{source}: {address!r} is not host:port")
    if len(set(addresses)) != len(addresses):
        raise ClusterError(f"{source}: an address is listed twice")
    kind, index = task.get("type"), task.get("index")
    if (kind, index) not in tasks:
        count = len(workers)
        raise ClusterError(f"{source}: this process's task {kind}:{index} is not in the cluster "
                           f"(worker indices 0..{count - 1}{' and chief 0' if chief else ''})")
    return ClusterInfo(tuple(addresses), tasks.index((kind, index)), (kind, index))


def cluster_from_environment():
    """The ``ClusterInfo`` of ``TF_CONFIG`` when it names more than one task, else None."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    info = parse_tf_config(text)
    return info if info.num_workers > 1 else None


def use_cluster_file(path, worker_index=None):
    """Sets ``TF_CONFIG`` from a cluster file (see ``read_cluster_file``)."""
    os.environ["TF_CONFIG"] = json.dumps(read_cluster_file(path, worker_index))


def make_strategy(info):
    """The ``MultiWorkerMirroredStrategy`` of ``TF_CONFIG``; call before any other
    TensorFlow work. It waits until every worker of the cluster has started; a
    worker lost later ends the run on the others when TensorFlow's coordination
    service misses its heartbeats (about 10 s).

    Args:
        info: the ``ClusterInfo`` of ``TF_CONFIG``.
    """
    import tensorflow as tf

    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, tf.errors.OpError) as exc:
        raise ClusterError(f"{info.describe()}: cannot join the cluster of TF_CONFIG "
                           f"({str(exc).strip().splitlines()[0]}); are all workers started and their ports "
                           "reachable?") from None


def shard(items, info, multiple=1):
    """This worker's share of ``items``: every ``num_workers``-th item from its index,
    all shares cut to the same length, a multiple of ``multiple`` (so that every
    worker runs the same number of steps)."""
    share = len(items) // info.num_workers // multiple * multiple
    return list(items[info.index :: info.num_workers])[:share]


def worker_seed(seed, info):
    """A seed for this worker's shuffling and augmentation: different on every
    worker, the same on reruns, and ``seed`` itself on a single machine."""
    return seed if info is None else seed * info.num_workers + info.index


def is_cluster_failure(exc):
    """Whether ``exc`` is how TensorFlow reports a lost worker or aborted collectives."""
    import tensorflow as tf

    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError,
                            tf.errors.AbortedError, tf.errors.InternalError))


class WorkerFolder:
    """Where a worker writes its run files: the real run folder on the chief, a
    temporary folder elsewhere (removed by ``cleanup``)."""

    def __init__(self, info, run_dir=None):
        self.temporary = info is not None and not info.is_chief
        if self.temporary:
            self.path = Path(tempfile.mkdtemp(prefix=f"yolo-worker{info.index}-"))
        else:
            self.path = Path(run_dir)

    def cleanup(self):
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)
