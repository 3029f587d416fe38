"""Measurements of a detector: parameters, GFLOPs and CPU latency.

The inference graph is traced once at batch 1 and the input size; its float
operations are counted with TensorFlow's profiler (a multiply-add counts as 2), and
the traced function is timed as the median of several calls after warm-up calls.
Used by ``summary.py`` and ``benchmarks/bench_backbones.py``.
"""

import contextlib
import logging
import statistics
import time

import numpy as np

WARMUP_RUNS = 2


def _hw(input_size):
    """An int or (height, width) as a (height, width) tuple of ints."""
    if isinstance(input_size, (int, np.integer)):
        return int(input_size), int(input_size)
    height, width = (int(v) for v in input_size)
    return height, width


def trace(model, input_size):
    """The model's inference function traced for one (1, H, W, 3) float32 image.

    Args:
        model: a Keras model taking (B, H, W, 3) images.
        input_size: S or (H, W).

    Returns:
        a ``tf.types.experimental.ConcreteFunction``.
    """
    import tensorflow as tf

    height, width = _hw(input_size)
    spec = tf.TensorSpec((1, height, width, 3), tf.float32)
    return tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)


@contextlib.contextmanager
def _quiet_tensorflow():
    # The v1 profiler logs a deprecation warning per call through TensorFlow's logger.
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def count_flops(model_or_function, input_size=None):
    """Float operations of one image's forward pass, counted from the graph.

    Every operation TensorFlow's profiler has a cost for is counted (convolutions,
    depthwise convolutions, matrix products, batch-norm and activation arithmetic),
    with a multiply and an add counted separately. For EfficientNet-B0 with 20
    classes at 416×416 this gives 6.29e9.

    Args:
        model_or_function: a Keras model (then ``input_size`` is needed) or a
            function returned by ``trace``.
        input_size: S or (H, W) when a model is given.

    Returns:
        int, float operations per image.
    """
    import tensorflow as tf

    function = model_or_function
    if not hasattr(function, "graph"):
        if input_size is None:
            raise ValueError("count_flops needs input_size when given a model, got None.")
        function = trace(model_or_function, input_size)
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    with _quiet_tensorflow():
        profile = tf.compat.v1.profiler.profile(
            graph=function.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    return int(profile.total_float_ops)


def measure_latency(function, input_size, runs=5, warmup=WARMUP_RUNS, seed=0):
    """Median seconds per call of a traced batch-1 function on a random 0–255 image.

    Args:
        function: a function returned by ``trace``.
        input_size: S or (H, W) it was traced for.
        runs: timed calls (the median is returned).
        warmup: untimed calls first.
        seed: seed of the random image.

    Returns:
        float seconds.
    """
    import tensorflow as tf

    if int(runs) < 1:
        raise ValueError(f"runs must be >= 1, got {runs!r}")
    height, width = _hw(input_size)
    image = tf.constant(np.random.default_rng(seed).uniform(0, 255, (1, height, width, 3)).astype(np.float32))

    def call():
        outputs = function(image)
        # Reading a value waits for the whole computation.
        np.asarray(tf.nest.flatten(outputs)[0])

    for _ in range(warmup):
        call()
    times = []
    for _ in range(int(runs)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def backbone_label(name, alpha=None):
    """A table label: the canonical backbone name, with MobileNetV2's alpha."""
    from nets.backbones import backbone_options, get_spec

    spec = get_spec(name)
    options = backbone_options(spec.name, alpha=alpha if spec.has_alpha else None)
    return f"{spec.name} {options['alpha']}" if spec.has_alpha else spec.name


def detector_stats(name, num_classes, input_size, runs=5, alpha=None):
    """Builds the detector on one backbone and measures it.

    Args:
        name: backbone name.
        num_classes: C.
        input_size: S or (H, W) for the GFLOPs and the latency.
        runs: timed calls for the latency; 0 skips the latency.
        alpha: width multiplier, used only when the backbone takes one.

    Returns:
        dict with "backbone" (label), "params", "backbone_params", "pyramid" (P3,
        P4, P5 channels), "gflops" and "latency_ms" (None when runs is 0).
    """
    import keras

    from nets.backbones import get_spec
    from nets.yolo import YoloV3

    spec = get_spec(name)
    model = YoloV3(num_classes, backbone=spec.name, alpha=alpha if spec.has_alpha else None)
    backbone = model.get_layer("backbone")
    function = trace(model, input_size)
    stats = {
        "backbone": backbone_label(spec.name, alpha),
        "params": model.count_params(),
        "backbone_params": backbone.count_params(),
        "pyramid": tuple(int(backbone.output[k].shape[-1]) for k in ("P3", "P4", "P5")),
        "gflops": count_flops(function) / 1e9,
        "latency_ms": measure_latency(function, input_size, runs) * 1e3 if runs else None,
    }
    del model, backbone, function
    keras.backend.clear_session()
    return stats


def compare(names, num_classes, input_size, runs=5, alpha=None, progress=None):
    """``detector_stats`` for each name, one model in memory at a time.

    Args:
        names: backbone names (all are checked before anything is built).
        num_classes: C.
        input_size: S or (H, W).
        runs: timed calls per model (0: no latency).
        alpha: MobileNetV2 width multiplier.
        progress: optional callable(label) called before each model is built.

    Returns:
        list of the stats dicts, in ``names`` order.
    """
    labels = [backbone_label(name, alpha) for name in names]  # fails early on a bad name
    rows = []
    for name, label in zip(names, labels):
        if progress is not None:
            progress(label)
        rows.append(detector_stats(name, num_classes, input_size, runs, alpha))
    return rows


def format_table(rows, input_size, num_classes):
    """The comparison as a fixed-width text table."""
    height, width = _hw(input_size)
    header = (
        f"{'backbone':<22} {'params':>12} {'backbone':>12} {'P3/P4/P5':>12} "
        f"{'GFLOPs':>8} {'CPU ms':>9}"
    )
    lines = [
        f"Detector with {num_classes} classes; GFLOPs per image at {height}x{width} (multiply and add "
        f"counted separately); CPU latency: median per image, batch 1.",
        header,
        "-" * len(header),
    ]
    for row in rows:
        latency = f"{row['latency_ms']:9.1f}" if row["latency_ms"] is not None else f"{'-':>9}"
        pyramid = "/".join(str(c) for c in row["pyramid"])
        lines.append(
            f"{row['backbone']:<22} {row['params']:>12,} {row['backbone_params']:>12,} {pyramid:>12} "
            f"{row['gflops']:8.2f} {latency}"
        )
    return "\n".join(lines)


def parse_names(text):
    """"all" or a comma-separated list of backbone names -> list of names."""
    from nets.backbones import backbone_names

    if text.strip().lower() == "all":
        return backbone_names()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"No backbone name in {text!r}; give NAME1,NAME2,... or all.")
    return names
