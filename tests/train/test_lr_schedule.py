"""Tests of utils/train/lr_schedule.py: batch scaling, cosine with warm-up and tail, step decay."""

import math

import pytest

from utils.train.lr_schedule import cosine_lr, lr_at, scaled_lr, step_lr

LR, MIN_LR = 1e-2, 1e-4


@pytest.mark.parametrize(
    "optimizer, lr, min_lr, batch, expected",
    [
        # Linear in batch/64 inside the bounds.
        ("sgd", 1e-2, 1e-4, 64, (1e-2, 1e-4)),
        ("sgd", 1e-2, 1e-4, 8, (1.25e-3, 1.25e-5)),
        # Below the bounds: raised to 5e-4 and 5e-6 (a hundredth of the bounds).
        ("sgd", 1e-2, 1e-4, 1, (5e-4, 5e-6)),
        # Above the bounds: lowered to 5e-2 and 5e-4.
        ("sgd", 1e-2, 1e-4, 1024, (5e-2, 5e-4)),
        ("adam", 1e-3, 1e-5, 64, (1e-3, 1e-5)),
        ("adam", 1e-3, 1e-5, 16, (3e-4, 3e-6)),
        ("adam", 1e-3, 1e-5, 128, (1e-3, 1e-5)),
    ],
)
def test_scaled_lr_scales_with_batch_and_clips(optimizer, lr, min_lr, batch, expected):
    init, minimum = scaled_lr(lr, min_lr, batch, optimizer)
    assert init == pytest.approx(expected[0], rel=1e-9)
    assert minimum == pytest.approx(expected[1], rel=1e-9)


@pytest.mark.parametrize("optimizer, bounds", [("sgd", (5e-4, 5e-2)), ("adam", (3e-4, 1e-3))])
def test_scaled_lr_stays_within_bounds_for_any_batch(optimizer, bounds):
    low, high = bounds
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256, 4096):
        for lr in (1e-5, 1e-3, 1e-2, 1.0):
            init, minimum = scaled_lr(lr, lr / 100, batch, optimizer)
            assert low <= init <= high
            assert low / 100 <= minimum <= high / 100


def test_cosine_warmup_is_quadratic_from_a_tenth_and_reaches_the_peak():
    total = 100  # 5% = 5 epochs, capped at 3 for the warm-up
    values = [cosine_lr(e, total, LR, MIN_LR) for e in range(total)]
    assert values[0] == pytest.approx(0.1 * LR)
    for e in range(3):
        assert values[e] == pytest.approx(0.1 * LR + 0.9 * LR * (e / 3) ** 2)
    assert values[3] == pytest.approx(LR)  # the peak, first epoch after the warm-up
    assert max(values) == pytest.approx(LR)
    assert values[0] < values[1] < values[2] < values[3]


def test_cosine_decays_then_stays_flat_at_the_minimum():
    total = 100  # tail: 5% = 5 epochs
    values = [cosine_lr(e, total, LR, MIN_LR) for e in range(total)]
    assert all(v == pytest.approx(MIN_LR) for v in values[95:])
    assert values[94] > MIN_LR * 1.0001
    decay = values[3:96]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    # Midway through the cosine part the rate is half-way between peak and minimum.
    mid = 3 + (100 - 3 - 5) // 2
    assert values[mid] == pytest.approx(MIN_LR + 0.5 * (LR - MIN_LR), rel=1e-9)


def test_cosine_warmup_and_tail_limits():
    # 300 epochs: warm-up capped at 3, tail capped at 15.
    values = [cosine_lr(e, 300, LR, MIN_LR) for e in range(300)]
    assert values[0] == pytest.approx(0.1 * LR) and values[3] == pytest.approx(LR)
    assert all(v == pytest.approx(MIN_LR) for v in values[285:])
    assert values[284] > MIN_LR * 1.0001
    # 10 epochs: 5% rounds to less than one, so one epoch of warm-up and of tail.
    values = [cosine_lr(e, 10, LR, MIN_LR) for e in range(10)]
    assert values[0] == pytest.approx(0.1 * LR) and values[1] == pytest.approx(LR)
    assert values[9] == pytest.approx(MIN_LR) and values[8] > MIN_LR * 1.0001
    # Every value of any run length stays within [min(0.1·lr, min_lr), lr] and is finite.
    for total in (1, 2, 3, 5, 7):
        for e in range(total):
            v = cosine_lr(e, total, LR, MIN_LR)
            assert math.isfinite(v) and MIN_LR - 1e-12 <= v <= LR + 1e-12


@pytest.mark.parametrize("total", [100, 25, 300])
def test_step_schedule_is_monotone_with_ten_geometric_levels(total):
    values = [step_lr(e, total, LR, MIN_LR) for e in range(total)]
    assert values[0] == pytest.approx(LR)
    assert values[-1] == pytest.approx(MIN_LR)
    assert all(a >= b for a, b in zip(values, values[1:]))
    levels = sorted(set(round(v, 15) for v in values), reverse=True)
    assert len(levels) == 10
    ratios = [b / a for a, b in zip(levels, levels[1:])]
    assert ratios == pytest.approx([(MIN_LR / LR) ** (1 / 9)] * 9)


def test_lr_at_dispatches_and_rejects_unknown_schedules():
    assert lr_at(0, 100, LR, MIN_LR, "cos") == cosine_lr(0, 100, LR, MIN_LR)
    assert lr_at(50, 100, LR, MIN_LR, "step") == step_lr(50, 100, LR, MIN_LR)
    with pytest.raises(ValueError, match="'linear'"):
        lr_at(0, 100, LR, MIN_LR, "linear")
