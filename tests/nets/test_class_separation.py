"""The class-separation figure on constructed head outputs and targets."""

import numpy as np
import pytest

from nets.class_separation import ClassSeparation
from utils.train.callbacks import separation_lines

C = 4
GRIDS = (2, 4, 8)  # three levels, STRIDES order


def _targets(positives):
    """Three target tensors (1, G, G, 3, 5+C); ``positives`` lists (level, row, col, anchor, class)."""
    targets = [np.zeros((1, g, g, 3, 5 + C), np.float32) for g in GRIDS]
    for level, row, col, anchor, cls in positives:
        targets[level][0, row, col, anchor, 4] = 1.0
        targets[level][0, row, col, anchor, 5 + cls] = 1.0
    return targets


def _heads(class_logits_at):
    """Raw heads (1, G, G, 3*(5+C)) at logit -8 for every class, except the given cells."""
    heads = [np.full((1, g, g, 3, 5 + C), -8.0, np.float32) for g in GRIDS]
    for (level, row, col, anchor), logits in class_logits_at.items():
        heads[level][0, row, col, anchor, 5:] = logits
    return [h.reshape(1, g, g, 3 * (5 + C)) for h, g in zip(heads, GRIDS)]


POSITIVES = [(0, 1, 1, 2, 0), (1, 2, 3, 0, 1), (2, 5, 6, 1, 2), (2, 0, 0, 0, 2)]


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_a_head_that_scores_the_true_class_high_separates_the_classes():
    logits = {}
    for level, row, col, anchor, cls in POSITIVES:
        row_logits = np.full(C, _logit(0.05), np.float32)
        row_logits[cls] = _logit(0.95)
        logits[(level, row, col, anchor)] = row_logits
    metric = ClassSeparation(C)
    metric.update_state(_targets(POSITIVES), _heads(logits))
    true, other, count = metric.per_class()
    assert count.tolist() == [1, 1, 2, 0]
    np.testing.assert_allclose(true[:3], 0.95, atol=1e-5)
    np.testing.assert_allclose(other[:3], 0.05, atol=1e-5)
    assert np.isnan(true[3]) and np.isnan(other[3])
    assert float(metric.result()) == pytest.approx(0.9, abs=1e-5)


def test_a_head_at_the_class_prior_separates_nothing():
    prior = np.full(C, _logit(1.0 / C), np.float32)
    logits = {tuple(p[:4]): prior for p in POSITIVES}
    metric = ClassSeparation(C)
    metric.update_state(_targets(POSITIVES), _heads(logits))
    true, other, _ = metric.per_class()
    np.testing.assert_allclose(true[:3], 0.25, atol=1e-5)
    np.testing.assert_allclose(other[:3], 0.25, atol=1e-5)
    assert float(metric.result()) == pytest.approx(0.0, abs=1e-6)
    lines = separation_lines(7, list("abcd"), true, other, metric.per_class()[2])
    assert len(lines) == 2 and "sit at the prior" in lines[1] and lines[0].startswith("Epoch 7:")


def test_a_head_that_prefers_another_class_is_negative_and_only_positives_count():
    logits = {}
    for level, row, col, anchor, cls in POSITIVES:
        row_logits = np.full(C, _logit(0.1), np.float32)
        row_logits[(cls + 1) % C] = _logit(0.7)
        row_logits[cls] = _logit(0.2)
        logits[(level, row, col, anchor)] = row_logits
    # A confident cell that is not a positive must not count.
    logits[(2, 7, 7, 2)] = np.full(C, _logit(0.99), np.float32)
    metric = ClassSeparation(C)
    metric.update_state(_targets(POSITIVES), _heads(logits))
    assert float(metric.result()) == pytest.approx(-0.5, abs=1e-5)
    # Accumulates over batches, and resets.
    metric.update_state(_targets(POSITIVES), _heads(logits))
    assert metric.per_class()[2].tolist() == [2, 2, 4, 0]
    metric.reset_state()
    assert metric.per_class()[2].sum() == 0 and float(metric.result()) == 0.0


def test_separated_classes_give_no_warning():
    true, other, count = np.array([0.9, 0.8]), np.array([0.1, 0.2]), np.array([3.0, 2.0])
    lines = separation_lines(3, ["x", "y"], true, other, count)
    assert len(lines) == 1 and "separation 0.70" in lines[0]
    assert separation_lines(3, ["x", "y"], true, other, np.zeros(2)) == []
