"""The overlapped video pipeline and the live camera: frames in order, errors and
Ctrl-C, the newest frame for a busy detector (fake cameras and detectors, no model)."""

import random
import threading
import time

import numpy as np
import pytest

from tests.predict.video_fakes import SquareFinder, frame_level, read_frames, write_squares_video
from utils.predict.pipeline import FrameStream, NewestFrame


@pytest.mark.parametrize("detectors", [1, 3])
def test_stream_keeps_source_order_with_uneven_stages(detectors):
    rng = random.Random(0)
    busy, most = [0], [0]
    lock = threading.Lock()

    def detect(frame):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(rng.uniform(0, 0.004) if detectors == 1 else 0.012 if frame % 3 == 0 else 0.001)
        with lock:
            busy[0] -= 1
        return frame * 10

    seen = []
    with FrameStream(range(40), detect, depth=2, detectors=detectors) as stream:
        for item in stream:
            time.sleep(rng.uniform(0, 0.004))
            seen.append((item.index, item.frame, item.result))
    assert seen == [(i, i, 10 * i) for i in range(40)]
    # Several detectors detect at once (frames finish out of order, and come out in order).
    assert (most[0] > 1) == (detectors > 1)
    # The sequential way gives the same.
    assert [(s.index, s.result) for s in FrameStream(range(5), detect, overlap=False)] == [(i, 10 * i)
                                                                                          for i in range(5)]


def _stage_threads():
    return [thread for thread in threading.enumerate()
            if thread.is_alive() and (thread.name == "frame-reader" or thread.name.startswith("detector"))]


@pytest.mark.parametrize("detectors", [1, 2])
@pytest.mark.parametrize("where", ["reader", "detector"])
def test_a_stage_error_arrives_after_the_frames_before_it(where, detectors):
    def frames():
        for i in range(10):
            if where == "reader" and i == 6:
                raise OSError("camera unplugged")
            yield i

    def detect(frame):
        if where == "detector" and frame == 6:
            raise KeyboardInterrupt  # as Ctrl-C would, inside the detector
        return frame

    stream = FrameStream(frames(), detect, detectors=detectors)
    got = []
    with pytest.raises(OSError if where == "reader" else KeyboardInterrupt):
        for item in stream:
            got.append(item.index)
    assert got == list(range(6))
    assert not _stage_threads()


def test_every_detector_stops_at_the_end_and_the_end_comes_once():
    with FrameStream(range(7), lambda frame: frame, detectors=3) as stream:
        assert [item.index for item in stream] == list(range(7))
        assert next(stream, "ended") == "ended"
    assert not _stage_threads()


def test_a_detector_goes_on_while_another_is_slow_within_the_room_given():
    depth, detectors = 2, 2
    slow_started, slow_done = threading.Event(), threading.Event()
    ahead = []

    def detect(frame):
        if frame == 0:
            slow_started.set()
            slow_done.wait(60)
        elif slow_started.is_set() and not slow_done.is_set():
            ahead.append(frame)
        return frame

    with FrameStream(range(20), detect, depth=depth, detectors=detectors) as stream:
        assert slow_started.wait(5)
        deadline = time.monotonic() + 10
        while len(ahead) < depth + detectors - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # room for a frame too many to show up
        frames_ahead = list(ahead)
        slow_done.set()
        assert [item.index for item in stream] == list(range(20))
    # The other detector did not wait for frame 0: it detected the frames after it,
    # as many as there was room for (frame 0 holds one place).
    assert frames_ahead == list(range(1, depth + detectors))


def test_several_detectors_need_an_overlapped_stream_of_every_frame():
    for options in (dict(overlap=False), dict(newest_only=True), dict(detectors=0)):
        with pytest.raises(ValueError, match="detectors"):
            FrameStream(range(3), lambda frame: frame, **{"detectors": 2, **options})


def test_newest_frame_slot_drops_stale_frames():
    slot = NewestFrame()
    for i in range(5):
        slot.put(i)
    assert slot.get(timeout=1) == 4 and slot.dropped == 4 and slot.read == 5
    slot.put(5)
    slot.put(6)
    assert slot.get(timeout=1) == 6 and slot.dropped == 5


def test_busy_detector_always_gets_the_newest_camera_frame():
    """A fake camera at ~500 FPS and a detector taking 20 ms: the detector gets the
    newest frame each time, the others are dropped and counted."""
    stop, ready = threading.Event(), threading.Event()

    def camera():
        ready.wait(10)  # until the test holds the stream
        i = 0
        while not stop.is_set():
            time.sleep(0.002)
            yield np.full((4, 4, 3), i % 256, np.uint8), i
            i += 1

    received = []

    def detect(frame):
        # What the camera had delivered when this frame was handed over (the reader
        # may have put one more in the meantime).
        received.append((frame[1], stream_ref[0].frames_read - 1))
        time.sleep(0.02)
        return None

    stream_ref = []
    stream = FrameStream(camera(), detect, newest_only=True)
    stream_ref.append(stream)
    ready.set()
    shown = []
    for item in stream:
        shown.append(item.index)
        if len(shown) == 12:
            break
    stop.set()
    stream.close()
    assert shown == sorted(shown) and len(set(shown)) == len(shown)
    assert stream.dropped > 0 and stream.camera_fps > stream.detector_fps
    for index, newest in received[1:]:
        assert newest - 1 <= index <= newest


class _StreamingFinder(SquareFinder):
    """SquareFinder as a runtime with three inference streams."""

    def for_streams(self):
        return self, 3


@pytest.mark.parametrize("finder_class", [SquareFinder, _StreamingFinder])
def test_video_pipeline_writes_every_frame_in_order(monkeypatch, tmp_path, capsys, finder_class):
    import predict

    rng = random.Random(1)
    finder = finder_class(delay=lambda: rng.uniform(0, 0.01))
    monkeypatch.setattr(predict, "open_predictor", lambda args: finder)
    video = write_squares_video(tmp_path / "clip.mp4", frames=24)
    out = tmp_path / "out"
    assert predict.main(["--model", "m.keras", "--source", str(video), "--out", str(out), "--track"]) == 0
    frames = read_frames(out / "clip.mp4")
    assert len(frames) == 24
    # Below both squares and their labels, each frame is still its own grey level.
    levels = [float(np.median(frame[104:, :, 1])) for frame in frames]
    np.testing.assert_allclose(levels, [frame_level(i) for i in range(24)], atol=4)
    out_text = capsys.readouterr().out
    assert "Wrote 24 frames" in out_text
    assert ("Detecting 3 frames at once" in out_text) == (finder_class is _StreamingFinder)


def test_ctrl_c_while_drawing_leaves_a_playable_video(monkeypatch, tmp_path, capsys):
    import predict
    from utils.predict import video_job

    monkeypatch.setattr(predict, "open_predictor", lambda args: SquareFinder())
    calls = {"n": 0}
    real = video_job.draw_detections

    def interrupt_on_sixth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(video_job, "draw_detections", interrupt_on_sixth)
    video = write_squares_video(tmp_path / "clip.mp4", frames=24)
    out = tmp_path / "out"
    assert predict.main(["--model", "m.keras", "--source", str(video), "--out", str(out), "--track"]) == 130
    frames = read_frames(out / "clip.mp4")
    assert len(frames) == 5 and frames[0].shape == (120, 200, 3)
    assert "Stopped with Ctrl-C" in capsys.readouterr().out
    tracks = (out / "clip_tracks.txt").read_text().splitlines()
    assert max(int(line.split(",")[0]) for line in tracks) == 6  # tracked up to the interrupted frame
    assert not any(thread.name in ("frame-reader", "detector") and thread.is_alive()
                   for thread in threading.enumerate())


def test_live_camera_draws_both_rates_and_drops(monkeypatch, tmp_path, capsys):
    """A webcam run with a fake camera: newest frames only, the status drawn, exit 0."""
    from utils.predict import job, video_job
    from utils.predict.sources import Source

    class FakeCamera:
        source = Source("webcam", index=0)
        fps = 30.0
        frame_count = None

        def __iter__(self):
            for i in range(200):
                time.sleep(0.002)
                frame = np.full((60, 80, 3), 90, np.uint8)
                frame[10:30, (i // 4) % 50 : (i // 4) % 50 + 20] = (220, 20, 20)
                yield frame

        def close(self):
            pass

    statuses = []
    real = video_job.draw_detections

    def record(*args, **kwargs):
        statuses.append(list(kwargs.get("status", ())))
        return real(*args, **kwargs)

    monkeypatch.setattr(video_job, "draw_detections", record)
    finder = SquareFinder(delay=lambda: 0.02)
    status = video_job.run_predict_video(finder, FakeCamera(), tmp_path, job._NoViewer(), max_frames=8)
    assert status == job.EXIT_OK
    text = capsys.readouterr().out
    assert "Wrote 8 frames" in text and "camera frames dropped while the detector was busy" in text
    dropped = int(text.split("; ")[1].split()[0])
    assert dropped > 0
    last = statuses[-1]
    assert any(line.startswith("detector ") and line.endswith(" FPS") for line in last)
    assert any(line.startswith("camera ") for line in last) and last[-1].startswith("dropped ")


def test_closing_the_window_stops_like_q(monkeypatch):
    from utils.predict import visualize

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(visualize, "_probe_window", lambda: None)
    monkeypatch.setattr(visualize.cv2, "imshow", lambda *args: None)
    monkeypatch.setattr(visualize.cv2, "waitKey", lambda ms: -1)
    visibility = iter([1.0, 1.0, 0.0])
    monkeypatch.setattr(visualize.cv2, "getWindowProperty", lambda title, prop: next(visibility))
    viewer = visualize.Viewer()
    image = np.zeros((8, 8, 3), np.uint8)
    assert [viewer.show(image), viewer.show(image), viewer.show(image)] == [True, True, False]
    # A backend that never reports the window visible does not stop the run.
    monkeypatch.setattr(visualize.cv2, "getWindowProperty", lambda title, prop: -1.0)
    viewer = visualize.Viewer()
    assert [viewer.show(image), viewer.show(image)] == [True, True]
