"""Class separation: whether the class head tells the classes apart, not only finds objects.

At every positive cell of the targets (the cells and anchors that the loss trains to
predict an object), the head's class probabilities ``sigmoid(t_c)`` are read for the
object's true class and for the best-scoring other class. Per class ``k``, over the
positives of its objects:

* ``true[k]``: mean probability of class ``k``;
* ``other[k]``: mean of the highest probability of any other class;
* ``separation[k] = true[k] - other[k]``.

A head that has learned the classes scores the true class near 1 and the others near
0: separation near 1. A head that has only learned how often each class occurs scores
every look-alike class at its prior (1/C for C equally frequent classes): separation
near 0, whatever its objectness and boxes. A negative separation means another class
wins at the objects of ``k``. The figure is reported per class and as the mean over
the classes that have positives.
"""

import keras
import numpy as np
from keras import ops

# Below this mean separation the class scores "sit at the prior" (see the training summary).
AT_PRIOR_SEPARATION = 0.05


class ClassSeparation(keras.metrics.Metric):
    """Accumulates, per class, the positives and their true- and best-other-class probabilities.

    Args:
        num_classes: C.
        name: the metric's name in the logs (``cls_sep``; ``val_cls_sep`` on validation).

    ``update_state(y_true, y_pred)`` takes the loss's arguments: ``y_true`` holds the
    three target tensors (B, H, W, 3, 5+C) first (more items are ignored), ``y_pred``
    the three raw heads (B, H, W, 3*(5+C)) in the same order. ``result()`` is the mean
    separation over the classes with positives (0 when there are none);
    ``per_class()`` gives the three per-class arrays.
    """

    def __init__(self, num_classes, name="cls_sep", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        shape = (self.num_classes,)
        self.count = self.add_variable(shape=shape, initializer="zeros", name="count", aggregation="sum")
        self.true_sum = self.add_variable(shape=shape, initializer="zeros", name="true_sum", aggregation="sum")
        self.other_sum = self.add_variable(shape=shape, initializer="zeros", name="other_sum", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        count = ops.zeros((self.num_classes,), "float32")
        true_sum = ops.zeros((self.num_classes,), "float32")
        other_sum = ops.zeros((self.num_classes,), "float32")
        for target, raw in zip(y_true, y_pred):
            target = ops.cast(target, "float32")
            # (B, H, W, 3*(5+C)) -> one row per cell and anchor, as the targets.
            raw = ops.reshape(ops.cast(raw, "float32"), (-1, 5 + self.num_classes))
            target = ops.reshape(target, (-1, 5 + self.num_classes))
            positive = target[:, 4]
            onehot = ops.cast(target[:, 5:] > 0.5, "float32")
            probs = ops.sigmoid(raw[:, 5:])
            true_p = ops.sum(probs * onehot, axis=-1)
            if self.num_classes > 1:
                # The true class is pushed below every probability before the max.
                other_p = ops.max(probs - 2.0 * onehot, axis=-1)
            else:
                other_p = ops.zeros_like(true_p)
            weight = onehot * positive[:, None]  # (N, C): the positive's class
            count = count + ops.sum(weight, axis=0)
            true_sum = true_sum + ops.sum(weight * true_p[:, None], axis=0)
            other_sum = other_sum + ops.sum(weight * other_p[:, None], axis=0)
        self.count.assign_add(count)
        self.true_sum.assign_add(true_sum)
        self.other_sum.assign_add(other_sum)

    def result(self):
        has = ops.cast(self.count > 0, "float32")
        separation = (self.true_sum - self.other_sum) / ops.maximum(self.count, 1.0)
        return ops.sum(separation * has) / ops.maximum(ops.sum(has), 1.0)

    def per_class(self):
        """(true, other, count): NumPy arrays of C values; classes without positives are NaN."""
        count = np.asarray(ops.convert_to_numpy(self.count), np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            true = np.where(count > 0, np.asarray(ops.convert_to_numpy(self.true_sum)) / count, np.nan)
            other = np.where(count > 0, np.asarray(ops.convert_to_numpy(self.other_sum)) / count, np.nan)
        return true, other, count

    def reset_state(self):
        for variable in (self.count, self.true_sum, self.other_sum):
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
