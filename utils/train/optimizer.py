"""The run's optimizer (SGD, Adam or AdamW) and the separate learning rate of the biases."""


class BiasGroup:
    """Per-group gradient scales that give the biases their own learning rate.

    The optimizer runs at the larger of the two rates; each gradient is scaled by
    its group's rate over that one. For SGD this equals separate learning rates.
    """

    NAMES = ("bias", "beta")  # layer biases and BatchNorm offsets

    def __init__(self):
        import tensorflow as tf

        self.weight_scale = tf.Variable(1.0, trainable=False, name="weight_lr_scale")
        self.bias_scale = tf.Variable(1.0, trainable=False, name="bias_lr_scale")

    def set_rates(self, lr, bias_lr, optimizer_rate):
        optimizer_rate = max(optimizer_rate, 1e-12)
        self.weight_scale.assign(lr / optimizer_rate)
        self.bias_scale.assign(bias_lr / optimizer_rate)

    def scale_for(self, variable):
        return self.bias_scale if variable.name in self.NAMES else self.weight_scale


def make_optimizer(cfg, bias_group=None):
    """The run's optimizer: SGD (Nesterov), Adam or AdamW (decoupled decay on kernels only).

    Args:
        cfg: a resolved TrainConfig.
        bias_group: a ``BiasGroup`` for a separate bias learning rate (SGD), or None.
    """
    import keras

    if cfg.optimizer == "sgd":
        cls, kwargs = keras.optimizers.SGD, {"momentum": cfg.momentum, "nesterov": True}
    elif cfg.optimizer == "adam":
        cls, kwargs = keras.optimizers.Adam, {"beta_1": cfg.momentum}
    else:
        cls, kwargs = keras.optimizers.AdamW, {"beta_1": cfg.momentum, "weight_decay": cfg.weight_decay}
    if bias_group is not None:
        base = cls

        class GroupedOptimizer(base):
            def apply_gradients(self, grads_and_vars):
                return super().apply_gradients(
                    [(g * bias_group.scale_for(v), v) for g, v in grads_and_vars]
                )

        cls = GroupedOptimizer
    optimizer = cls(learning_rate=cfg.lr, **kwargs)
    if cfg.optimizer == "adamw":
        optimizer.exclude_from_weight_decay(var_names=list(BiasGroup.NAMES) + ["gamma"])
    return optimizer
