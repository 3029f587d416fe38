"""Tracking and counting: track IDs on constructed box sequences (no network), line
crossings, the files of a tracked run of predict.py and its usage errors.

predict.py runs in this process with a fake detector that finds the coloured squares
drawn into the test videos, so no model is loaded.
"""

import json

import numpy as np
import pytest

from tests.predict.video_fakes import CLASSES, SquareFinder, detections, read_frames, write_squares_video
from utils.predict.tracking import (
    TRACKERS,
    ObjectTracker,
    TrackingError,
    parse_count_line,
    place_count_line,
    tracker_settings,
)


def _track(tracker, frames):
    """{object key: [track IDs over the frames it was detected in]} for frames of {key: box}."""
    ids = {}
    for objects in frames:
        keys = list(objects)
        tracked = tracker.update(detections(*(objects[k] for k in keys)), (480, 640))
        for box, track in zip(tracked.boxes, tracked.track_ids):
            key = next(k for k in keys if np.allclose(objects[k][:4], box, atol=1e-3))
            ids.setdefault(key, []).append(int(track))
    return ids


@pytest.mark.parametrize("name", list(TRACKERS))
def test_two_objects_that_cross_keep_their_ids(name):
    tracker = ObjectTracker(name, tracker_settings(name), CLASSES)
    # Left to right and right to left at 8 px a frame, overlapping for several frames mid-way.
    frames = [{"a": (40 + 8 * t, 200, 100 + 8 * t, 260, 0), "b": (520 - 8 * t, 212, 580 - 8 * t, 272, 0)}
              for t in range(60)]
    ids = _track(tracker, frames)
    settled = tracker.settings["minimum_consecutive_frames"]
    for key in ("a", "b"):
        confirmed = [i for i in ids[key] if i > 0]
        assert len(confirmed) >= len(frames) - settled and len(set(confirmed)) == 1, (key, ids[key])
    assert set(ids["a"]) - {-1} != set(ids["b"]) - {-1}
    assert tracker.unique_objects() == {"red": 2}


def test_object_that_leaves_and_returns_within_the_buffer_keeps_its_id():
    tracker = ObjectTracker("bytetrack", tracker_settings("bytetrack"), CLASSES)
    path = [(100 + 4 * t, 150, 160 + 4 * t, 210, 1) for t in range(60)]
    # Gone (e.g. behind something) for 15 frames, within the buffer of 30.
    frames = [{"a": box} if not 20 <= t < 35 else {} for t, box in enumerate(path)]
    ids = _track(tracker, frames)
    assert len(set(ids["a"][5:])) == 1 and ids["a"][-1] > 0
    assert tracker.unique_objects() == {"blue": 1}

    # Gone for longer than the buffer (a lost_track_buffer of 5): a new ID.
    tracker = ObjectTracker("bytetrack", tracker_settings("bytetrack", {"track_buffer": 5}), CLASSES)
    ids = _track(tracker, frames)
    assert ids["a"][-1] > 0 and ids["a"][-1] != ids["a"][10]


def test_line_crossings_counted_once_per_direction():
    line = parse_count_line("0,0.5,1,0.5")  # across the middle of a 640x480 frame: y = 240
    tracker = ObjectTracker("bytetrack", tracker_settings("bytetrack"), CLASSES, count_line=line)
    down = [(100, 150 + 6 * t, 140, 190 + 6 * t, 0) for t in range(30)]  # red crosses downwards
    up = [(300, 330 - 6 * t, 340, 370 - 6 * t, 1) for t in range(30)]  # blue crosses upwards
    # Another red one reaches the line (its lower edge passes it, its upper edge never does) and goes back.
    touch = [(500, 150 + 5 * min(t, 29 - t), 540, 190 + 5 * min(t, 29 - t), 0) for t in range(30)]
    for t in range(30):
        tracker.update(detections(down[t], up[t], touch[t]), (480, 640))
    crossed_in, crossed_out = tracker.line_counts()
    # Leftwards of the line seen from (0, 240) towards (640, 240) is up: "in" is upwards.
    assert crossed_in == {"blue": 1} and crossed_out == {"red": 1}
    assert tracker.line == ((0.0, 240.0), (640.0, 240.0))
    summary = tracker.summary()
    assert summary["count_line"]["in_total"] == 1 and summary["count_line"]["out_total"] == 1
    assert summary["unique_objects"] == {"red": 2, "blue": 1}


def test_count_line_values():
    assert parse_count_line("0,0.5,1,0.5").fractional
    line = parse_count_line(" 10, 300 ,630,300")
    assert not line.fractional and line.in_pixels(640, 480) == ((10.0, 300.0), (630.0, 300.0))
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,0", "1,2,3,4,5", "-1,0,5,5", "0,nan,1,1"):
        with pytest.raises(TrackingError):
            parse_count_line(bad)


def test_settings_default_to_the_library_and_unknown_ones_are_refused():
    import trackers

    settings = tracker_settings("bytetrack", {"track_activation": 0.3}, frame_rate=12)
    assert settings["track_activation_threshold"] == 0.3 and settings["frame_rate"] == 12.0
    library = trackers.ByteTrackTracker()
    assert settings["minimum_iou_threshold"] == library.minimum_iou_threshold
    assert settings["high_conf_det_threshold"] == library.high_conf_det_threshold
    assert tracker_settings("ocsort", {"track_activation": 0.4})["high_conf_det_threshold"] == 0.4
    with pytest.raises(TrackingError, match="ocsort has no setting for --track-high-conf"):
        tracker_settings("ocsort", {"track_high_conf": 0.5})


# --- predict.py --track ----------------------------------------------------------------------


@pytest.fixture
def run_predict(monkeypatch):
    """``predict.main`` with a SquareFinder standing in for the model."""
    import predict

    monkeypatch.setattr(predict, "open_predictor", lambda args: SquareFinder())
    return lambda *args: predict.main(["--model", "unused.keras", *map(str, args)])


def test_tracked_video_writes_mot_file_and_summary(run_predict, tmp_path, capsys):
    from trackers import load_mot_file

    video = write_squares_video(tmp_path / "road.mp4")
    out = tmp_path / "out"
    assert run_predict("--source", video, "--out", out, "--track", "--trail", 5, "--count-line", "100,0,100,120",
                       "--track-activation", 0.5) == 0
    text = capsys.readouterr().out
    assert "Tracker bytetrack: track_activation_threshold=0.5" in text
    assert "Unique objects per class: red 1, blue 1 (2 in all)" in text
    assert "Line 100,0,100,120: in 1 (red 1), out 1 (blue 1)" in text

    rows = [line.split(",") for line in (out / "road_tracks.txt").read_text().splitlines()]
    assert rows and all(len(row) == 10 and row[7:] == ["-1", "-1", "-1"] for row in rows)
    frames = [int(row[0]) for row in rows]
    assert frames == sorted(frames) and 1 <= min(frames) and max(frames) == 24
    by_frame = {}
    for row in rows:
        by_frame.setdefault(int(row[0]), []).append(int(row[1]))
    assert all(len(ids) == len(set(ids)) for ids in by_frame.values())  # an ID once per frame
    # Each square keeps one ID: the red one stays in the upper half, the blue one in the lower.
    red = {int(row[1]) for row in rows if float(row[3]) < 60}
    blue = {int(row[1]) for row in rows if float(row[3]) >= 60}
    assert len(red) == 1 and len(blue) == 1 and red != blue and min(red | blue) >= 1
    parsed = load_mot_file(out / "road_tracks.txt")  # the library's MOT reader takes it
    assert sorted(parsed) == sorted(by_frame)

    summary = json.loads((out / "road_summary.json").read_text())
    assert summary["frames"] == 24 and summary["unique_objects"] == {"red": 1, "blue": 1}
    assert summary["count_line"]["in"] == {"red": 1} and summary["count_line"]["out"] == {"blue": 1}
    assert summary["settings"]["frame_rate"] == 10.0 and summary["tracks_file"] == "road_tracks.txt"
    assert len(read_frames(out / "road.mp4")) == 24


def test_folder_of_frames_is_tracked_in_name_order(run_predict, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(12):  # frame2 must come before frame10
        image = np.full((80, 120, 3), 90, np.uint8)
        image[20:40, 5 + 8 * i : 25 + 8 * i] = (220, 20, 20)
        Image.fromarray(image).save(folder / f"frame{i}.png")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(folder / "odd_size.png")
    out = tmp_path / "out"
    assert run_predict("--source", folder, "--out", out, "--track", "--track-frame-rate", 5) == 0
    text = capsys.readouterr().out
    assert "Unique objects per class: red 1 (1 in all)" in text and "Wrote 12 frames" in text
    rows = [line.split(",") for line in (out / "seq_tracks.txt").read_text().splitlines()]
    xs = [float(row[2]) for row in rows]
    assert xs == sorted(xs) and len({row[1] for row in rows}) == 1
    assert "odd_size.png" in (out / "skipped.txt").read_text()
    assert json.loads((out / "seq_summary.json").read_text())["settings"]["frame_rate"] == 5.0


def test_tracking_usage_errors(run_predict, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "street.jpg"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(image)
    assert run_predict("--source", image, "--out", tmp_path / "o", "--track") == 2
    assert "--track follows objects from frame to frame" in capsys.readouterr().err
    video = write_squares_video(tmp_path / "v.mp4", frames=2)
    assert run_predict("--source", video, "--out", tmp_path / "o", "--count-line", "0,0.5,1,0.5") == 2
    assert "--count-line needs --track" in capsys.readouterr().err
    assert run_predict("--source", video, "--out", tmp_path / "o", "--track", "--tracker", "ocsort",
                       "--track-high-conf", "0.5") == 2
    assert "ocsort has no setting for --track-high-conf" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_predict("--source", video, "--track", "--count-line", "0,0.5,1")
    assert exit_info.value.code == 2
    assert "--count-line: must be four numbers x1,y1,x2,y2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- the counting line on the frame, and videos with fewer frames than announced ------------


def test_count_line_mixed_values_are_refused_and_the_reading_is_named():
    with pytest.raises(TrackingError, match="mixes fractions of the frame"):
        parse_count_line("0,0.5,1.5,0.5")
    line = parse_count_line("0,0.5,1,0.5")
    assert line.read_as == "fractions of the frame"
    text = place_count_line(line, (320, 240), "road.mp4")
    assert "read as fractions of the frame, the line (0, 120) to (320, 120) in pixels" in text
    assert "320x240 frames of road.mp4" in text
    assert "read as pixels, the line (10, 20) to (300, 20)" in place_count_line(
        parse_count_line("10,20,300,20"), (320, 240), "road.mp4")


def test_count_line_outside_the_frame_or_too_short_is_refused():
    with pytest.raises(TrackingError, match=r"\(5000, 5000\) lies outside the 320x240 frame"):
        place_count_line(parse_count_line("5000,5000,6000,6000"), (320, 240), "v.mp4")
    with pytest.raises(TrackingError, match=r"\(330, 20\) lies outside"):
        place_count_line(parse_count_line("10,20,330,20"), (320, 240), "v.mp4")
    with pytest.raises(TrackingError, match="1.5 px long; a line must be at least 2 px"):
        place_count_line(parse_count_line("0,0,1.5,0"), (320, 240), "v.mp4")
    # The far edge of the frame is on it.
    assert place_count_line(parse_count_line("0,240,320,240"), (320, 240), "v.mp4")
    # A camera that tells no size: the line is placed on the first frame.
    assert "placed on the first frame" in place_count_line(parse_count_line("0,0.5,1,0.5"), None, "webcam 0")


def test_count_line_checked_before_the_run(run_predict, tmp_path, capsys):
    video = write_squares_video(tmp_path / "v.mp4", frames=3, size=(200, 120))
    assert run_predict("--source", video, "--out", tmp_path / "o", "--track",
                       "--count-line", "5000,5000,6000,6000") == 2
    err = capsys.readouterr().err
    assert "read as pixels, and (5000, 5000) lies outside the 200x120 frame" in err
    assert not (tmp_path / "o").exists()  # refused before any output folder was made
    assert run_predict("--source", video, "--out", tmp_path / "o", "--track", "--count-line", "0,0.5,1,0.5") == 0
    assert "read as fractions of the frame, the line (0, 60) to (200, 60) in pixels" in capsys.readouterr().out
    summary = json.loads((tmp_path / "o" / "v_summary.json").read_text())
    assert summary["count_line"]["read_as"] == "fractions of the frame"


def _mjpeg_avi(path, frames, size=(64, 48)):
    """An MJPEG AVI of ``frames`` noise frames (each compresses to a similar size)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def test_video_without_frames_says_so_and_leaves_nothing(run_predict, tmp_path, capsys):
    video = _mjpeg_avi(tmp_path / "empty.avi", frames=0)
    out = tmp_path / "o"
    assert run_predict("--source", video, "--out", out, "--track") == 1
    captured = capsys.readouterr()
    assert "empty.avi has no frames: its header announces none and none could be read; no video written." \
        in captured.err
    assert "Results saved" not in captured.out and "Tracks written" not in captured.out
    assert not out.exists()  # no empty run folder, no empty tracks file


def test_truncated_video_says_how_many_of_the_announced_frames_were_read(run_predict, tmp_path, capsys):
    whole = _mjpeg_avi(tmp_path / "whole.avi", frames=10)
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    readable = len(read_frames(cut))
    assert 0 < readable < 9
    out = tmp_path / "o"
    assert run_predict("--source", cut, "--out", out, "--track") == 0
    captured = capsys.readouterr()
    assert f"cut.avi: {readable} of the 10 frames announced in its header were read" in captured.err
    assert f"Wrote {readable} frames" in captured.out and "Results saved" in captured.out
    # A video read whole, or stopped by --max-frames, gets no such remark.
    assert run_predict("--source", whole, "--out", tmp_path / "w", "--max-frames", 3) == 0
    assert "announced in its header" not in capsys.readouterr().err
