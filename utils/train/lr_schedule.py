"""Learning-rate policy of the reference recipe: batch-size scaling, cosine with
warm-up and a flat tail at the minimum, or step decay. Set once per epoch.
"""

import math

# Nominal batch the base learning rate refers to.
NOMINAL_BATCH = 64
# Allowed range of the batch-scaled initial learning rate, per optimizer.
LR_BOUNDS = {"sgd": (5e-4, 5e-2), "adam": (3e-4, 1e-3), "adamw": (3e-4, 1e-3)}
MIN_LR_RATIO = 0.01
STEP_DECAY_STEPS = 10


def scaled_lr(lr, min_lr, batch_size, optimizer):
    """Scales the learning rates with the batch size, as the reference does.

    Args:
        lr: base initial learning rate (for a batch of 64).
        min_lr: base minimum learning rate.
        batch_size: the batch actually used.
        optimizer: "sgd" or "adam".

    Returns:
        (initial, minimum) learning rates, clipped to the optimizer's bounds (the
        minimum to a hundredth of them).
    """
    low, high = LR_BOUNDS[optimizer]
    factor = batch_size / NOMINAL_BATCH
    init = min(max(factor * lr, low), high)
    minimum = min(max(factor * min_lr, low * MIN_LR_RATIO), high * MIN_LR_RATIO)
    return init, minimum


def cosine_lr(epoch, total_epochs, lr, min_lr, reference_warmup=True):
    """Cosine schedule with quadratic warm-up and a flat tail.

    The first 5% of epochs (at least 1, at most 3) rise quadratically from 0.1·lr;
    the last 5% (at least 1, at most 15) stay at ``min_lr``. Without
    ``reference_warmup`` (the warm-up is then done per step elsewhere) the cosine
    runs from ``lr`` at the first epoch to ``min_lr`` at the last.

    Args:
        epoch: 0-based epoch.
        total_epochs: number of epochs of the run.
        lr: peak learning rate.
        min_lr: final learning rate.
        reference_warmup: the reference's warm-up and flat tail.

    Returns:
        the learning rate of that epoch (float).
    """
    if not reference_warmup:
        progress = epoch / max(total_epochs - 1, 1)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    warmup = min(max(round(0.05 * total_epochs), 1), 3)
    tail = min(max(round(0.05 * total_epochs), 1), 15)
    if total_epochs <= warmup + tail:
        warmup, tail = min(warmup, max(total_epochs - 1, 0)), 0
    if epoch < warmup:
        start = 0.1 * lr
        return start + (lr - start) * (epoch / warmup) ** 2
    if epoch >= total_epochs - tail:
        return min_lr
    span = max(total_epochs - warmup - tail, 1)
    progress = (epoch - warmup) / span
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def step_lr(epoch, total_epochs, lr, min_lr, steps=STEP_DECAY_STEPS):
    """Step decay from ``lr`` to ``min_lr`` in ``steps`` equal geometric steps."""
    decay = (min_lr / lr) ** (1.0 / (steps - 1))
    step_size = max(total_epochs / steps, 1)
    return lr * decay ** min(int(epoch // step_size), steps - 1)


def lr_at(epoch, total_epochs, lr, min_lr, schedule="cos", reference_warmup=True):
    """The learning rate of an epoch under ``schedule`` ("cos" or "step"); see ``cosine_lr``
    for ``reference_warmup``."""
    if schedule == "cos":
        return cosine_lr(epoch, total_epochs, lr, min_lr, reference_warmup)
    if schedule == "step":
        return step_lr(epoch, total_epochs, lr, min_lr)
    raise ValueError(f"Unknown learning-rate schedule {schedule!r}; choose cos or step")
