"""Exponential moving average (EMA) of a model's weights.

After every optimizer step each float weight of the model, trainable or not (so the
BatchNorm moving statistics too), is averaged into a shadow copy:

    d_n = decay · (1 − exp(−n / tau))          (n = number of updates so far)
    ema ← d_n · ema + (1 − d_n) · weight

The ramp makes the average follow the weights closely while they change fast at
the start and smooth over about ``1 / (1 − decay)`` steps later, as the YOLOv5/v8
trainers do. The averaged weights are the ones validated and saved; training goes
on with the raw weights. ``swapped()`` exchanges the two in place (no copy of the
model), so every consumer of the model sees the average inside the ``with`` block.
"""

import contextlib
import math

import numpy as np
import tensorflow as tf

DEFAULT_DECAY = 0.9999
DEFAULT_TAU = 2000.0


def ema_decay(updates, decay=DEFAULT_DECAY, tau=DEFAULT_TAU):
    """The decay used by the ``updates``-th update (1-based): ``decay · (1 − exp(−updates / tau))``."""
    return decay * (1.0 - math.exp(-float(updates) / tau))


class ModelEMA:
    """Shadow weights that follow a model's weights as an exponential moving average.

    Args:
        model: a built Keras model; its float weights (trainable and not) are tracked.
        decay: the final decay (the average spans about ``1 / (1 − decay)`` updates).
        tau: how many updates the decay takes to ramp up (by 1 − 1/e).
        updates: number of updates already made (when restoring a run).
    """

    def __init__(self, model, decay=DEFAULT_DECAY, tau=DEFAULT_TAU, updates=0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        if tau <= 0:
            raise ValueError(f"EMA tau must be > 0, got {tau!r}")
        self.model = model
        self.decay = float(decay)
        self.tau = float(tau)
        self.tracked = [v for v in model.weights if "float" in str(v.dtype)]
        self.averages = [
            tf.Variable(np.asarray(v.numpy()), trainable=False, name=f"ema_{i}") for i, v in enumerate(self.tracked)
        ]
        self.updates = tf.Variable(int(updates), dtype=tf.int64, trainable=False, name="ema_updates")
        self._swapped = False

    @tf.function
    def _update(self):
        self.updates.assign_add(1)
        n = tf.cast(self.updates, tf.float32)
        d = self.decay * (1.0 - tf.exp(-n / self.tau))
        for average, value in zip(self.averages, self.tracked):
            average.assign(d * average + (1.0 - d) * tf.cast(value.value, average.dtype))

    def update(self):
        """Averages the model's current weights in (call after each optimizer step)."""
        if self._swapped:
            raise RuntimeError("ModelEMA.update() called while the averaged weights are swapped in.")
        self._update()

    def _exchange(self):
        for average, value in zip(self.averages, self.tracked):
            raw = np.asarray(value.numpy())
            value.assign(average.numpy())
            average.assign(raw)
        self._swapped = not self._swapped

    @contextlib.contextmanager
    def swapped(self):
        """Within the block the model holds the averaged weights; the raw ones come back after."""
        if self._swapped:  # nested use: already averaged
            yield self.model
            return
        self._exchange()
        try:
            yield self.model
        finally:
            self._exchange()

    def averaged_values(self):
        """The averaged weights as numpy arrays, in the order of ``tracked``."""
        source = self.tracked if self._swapped else self.averages
        return [np.asarray(v.numpy()) for v in source]

    def set_averaged_values(self, values, updates):
        """Restores saved averaged weights and the update count (for ``--resume``)."""
        if len(values) != len(self.averages) or any(
            tuple(np.shape(a)) != tuple(b.shape) for a, b in zip(values, self.averages)
        ):
            raise ValueError(
                f"Saved EMA weights do not fit the model: {len(values)} arrays for {len(self.averages)} weights."
            )
        for average, value in zip(self.averages, values):
            average.assign(value)
        self.updates.assign(int(updates))
