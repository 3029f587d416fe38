"""The line a run prints after the first epoch of each phase: how long the rest takes."""

import re

from utils.train.callbacks import time_left_line


def test_the_time_left_is_the_epochs_left_at_this_pace():
    line = time_left_line(4, 30.0, 20)
    assert line.startswith("Epoch 4: an epoch takes about 30 s; the 16 epochs left take about 8.0 min")
    assert re.search(r"ending about \d\d:\d\d\.$", line)
    assert "frozen" not in line


def test_a_frozen_phase_says_the_estimate_is_a_floor_and_the_last_epoch_says_so():
    assert "slower than these frozen ones" in time_left_line(1, 12.0, 10, faster_now=True)
    assert time_left_line(10, 12.0, 10) == "Epoch 10 took 12 s; it was the last."
