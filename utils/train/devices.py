"""Devices and strategies: the tf.distribute strategy of ``--devices``, and how batches
and epochs split over devices and the workers of a cluster.
"""

from utils.train.config import ConfigError


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


def steps_per_epoch(num_images, batch, cluster=None):
    """Optimizer steps in an epoch: full global batches, on a cluster of each
    worker's equal share of the images."""
    if cluster is None:
        return num_images // batch
    return num_images // cluster.num_workers // (batch // cluster.num_workers)


def check_batches_split(phases, replicas, devices):
    uneven = sorted({p.batch for p in phases if p.batch % replicas})
    if uneven:
        raise ConfigError(f"Batch size {uneven[0]} cannot be split evenly over {replicas} devices ({devices}); "
                          "use a multiple of the device count for --batch-size and --freeze-batch-size.")


def check_shares_fit(phases, num_train, cluster):
    largest = max(p.batch for p in phases)
    if largest % cluster.num_workers:
        raise ConfigError(f"Batch size {largest} cannot be split evenly over {cluster.num_workers} workers; use a "
                          "multiple of the worker count (--batch-size is the global batch of all workers).")
    if steps_per_epoch(num_train, largest, cluster) < 1:
        raise ConfigError(f"Too few training images for one step on {cluster.num_workers} workers: "
                          f"{num_train} image(s), global batch {largest}.")
