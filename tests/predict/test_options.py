"""Options that a mode or a source does not use are warned about, never dropped
silently (docs/options.md lists every option of predict.py against each source)."""

import logging

import numpy as np
import pytest
from PIL import Image

from tests.predict.video_fakes import SquareFinder, write_squares_video


@pytest.fixture
def run_predict(monkeypatch):
    """``predict.main`` with a SquareFinder standing in for the model."""
    import predict

    monkeypatch.setattr(predict, "open_predictor", lambda args: SquareFinder())
    return lambda *args: predict.main(["--model", "unused.keras", *map(str, args)])


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_batch_size_on_video_frames_is_warned(run_predict, tmp_path, caplog):
    video = write_squares_video(tmp_path / "v.mp4", frames=2)
    with caplog.at_level(logging.WARNING):
        assert run_predict("--source", video, "--out", tmp_path / "o", "--batch-size", 4) == 0
    assert any(m.startswith("--batch-size is not used on the frames of") for m in _warnings(caplog))


def test_max_frames_on_a_folder_is_warned(run_predict, tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(folder / f"{i}.png")
    with caplog.at_level(logging.WARNING):
        assert run_predict("--source", folder, "--out", tmp_path / "o", "--max-frames", 1,
                           "--batch-size", 2) == 0
    messages = _warnings(caplog)
    assert any(m.startswith("--max-frames stops a video, a webcam or a tracked folder") for m in messages)
    assert not any("--batch-size" in m for m in messages)  # a folder of images is batched
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


def test_show_and_count_in_heatmap_mode_are_warned(monkeypatch, tmp_path, caplog):
    import predict
    from utils.predict.job import UsageError

    def stop(args):
        raise UsageError("stopped before loading a model")

    monkeypatch.setattr(predict, "open_predictor", stop)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    with caplog.at_level(logging.WARNING):
        assert predict.main(["--model", "m.keras", "--source", str(image), "--out", str(tmp_path / "o"),
                             "--mode", "heatmap", "--show", "--count"]) == 2
    messages = _warnings(caplog)
    assert "--show is not used in heatmap mode; ignored." in messages
    assert "--count is not used in heatmap mode; ignored." in messages


def test_slice_options_without_slice_are_warned(run_predict, tmp_path, caplog):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    with caplog.at_level(logging.WARNING):
        assert run_predict("--source", image, "--out", tmp_path / "o", "--slice-full", "--slice-merge", "nms") == 0
    assert "--slice-full, --slice-merge need --slice SIZE; ignored." in _warnings(caplog)


def test_fps_options_outside_fps_mode_are_warned(run_predict, tmp_path, caplog):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    with caplog.at_level(logging.WARNING):
        assert run_predict("--source", image, "--out", tmp_path / "o", "--fps-runs", 3, "--fps-warmup", 0) == 0
    messages = _warnings(caplog)
    assert "--fps-runs is used in fps mode only; ignored in predict mode." in messages
    assert "--fps-warmup is used in fps mode only; ignored in predict mode." in messages
