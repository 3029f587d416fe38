"""Plain helpers shared by the tests, by stage folder; the fixtures built on them are in
``conftest.py``."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Wall-clock limit of one training subprocess; the CI machine may be slow and shared.
TRAIN_TIMEOUT = 1500
# The classes and input size of the tiny detector (the ``tiny_detector`` fixture).
DETECTOR_CLASSES = ["cat", "traffic light", "dog"]
DETECTOR_SIZE = 64


def script_env(**extra):
    """The environment of a script run by a test: quiet TensorFlow on the CPU, the CI
    console (one line per epoch), no display to open windows on, unbuffered output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg", CI="true",
               PYTHONUNBUFFERED="1")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "TF_CONFIG"):  # no windows, no cluster
        env.pop(name, None)
    env.update(extra)
    return env


def run_script(*argv, timeout=300, cwd=ROOT, env=None, check=False):
    """Runs ``python *argv`` (a script of the repository and its arguments, or ``-m``
    and a module) as the user would, from ``cwd``; returns the finished process with
    its text output. With ``check``, asserts that it exited 0 without a traceback."""
    proc = subprocess.run([sys.executable, *map(str, argv)], cwd=cwd, env=env or script_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert_ran(proc)
    return proc


def assert_ran(proc, tail=3000):
    """Asserts that a finished script exited 0 and printed no traceback."""
    assert proc.returncode == 0, (
        f"{proc.args[1:3]} exited {proc.returncode}\n{proc.stdout[-tail:]}\n{proc.stderr[-tail:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-tail:]


class QuarterPredictor:
    """Stands in for a predictor (``utils.predict.predictor.BasePredictor``): one box per
    image, on its top-left quarter, class 0, with ``score``; records each batch's size."""

    def __init__(self, class_names, score=0.9):
        self.class_names = list(class_names)
        self.score = float(score)
        self.batches = []

    def predict_batch(self, images):
        from utils.eval.structures import ImageDetections

        self.batches.append(len(images))
        out = []
        for image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            h, w = image.shape[:2]
            out.append(ImageDetections(np.array([[0, 0, w / 2, h / 2]], np.float32),
                                       np.array([self.score], np.float32), np.array([0])))
        return out


def varied_images(count, seed=0):
    """``count`` synthetic RGB images of sizes between 60 and 200 pixels."""
    import cv2

    from utils.export.exporter import synthetic_images

    return [cv2.resize(im, (int(rng_w), int(rng_h)))
            for im, (rng_w, rng_h) in zip(synthetic_images(count, seed),
                                          np.random.default_rng(seed).integers(60, 200, (count, 2)))]


def varied_detector(class_names, size):
    """An untrained detector whose outputs depend on the image: batch-norm statistics
    of real activations, head logits of spread 1."""
    import keras

    from nets.yolo import YoloV3, set_batchnorm_momentum
    from utils import keras_compat
    from utils.config import DEFAULT_ANCHORS
    from utils.image import letterbox
    from utils.model_data import load_anchors

    keras.utils.set_random_seed(0)
    anchors = load_anchors(DEFAULT_ANCHORS) * size / 416
    model = YoloV3(len(class_names), class_names=list(class_names), input_size=size, anchors=anchors)
    batch = np.stack([letterbox(im, size) for im in varied_images(16, seed=1)]).astype("float32")
    # Batch-norm statistics of real activations, the variances floored at their layer's
    # mean: a channel nearly constant on these images must not blow up on others.
    set_batchnorm_momentum(model, 0.0)
    model(batch, training=True)
    set_batchnorm_momentum(model, 0.97)
    for layer in keras_compat.nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            variance = np.asarray(layer.moving_variance)
            layer.moving_variance.assign(np.maximum(variance, variance.mean()))
    for level, out in zip(("p5", "p4", "p3"), model(batch, training=False)):
        layer = model.get_layer(f"head_{level}_pred")
        spread = float(np.std(np.asarray(out) - np.asarray(layer.bias)))
        # Logits of spread 1: scores spread over (0, 1) without saturating at 1.0,
        # where ties would make the order of equal scores decide NMS.
        layer.kernel.assign(np.asarray(layer.kernel) * (1.0 / spread))
    return model
