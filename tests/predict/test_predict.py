"""predict.py end to end, with the helpers it is built from (sources, run folders).

The command line runs as a subprocess for the paths a user meets first: a real image
with every output option, a truncated model file, a class-count mismatch and a
webcam that cannot be opened. Starting TensorFlow and loading and tracing a model
costs tens of seconds per process on a small machine, so the remaining modes call
``predict.main`` in this process with one shared, already traced Predictor in place
of loading the checkpoint again.
"""

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import run_script
from tests.predict.video_fakes import read_frames
from utils.predict.sources import (
    SourceError,
    VideoReader,
    VideoWriter,
    image_output_name,
    iter_batches,
    parse_source,
    save_crops,
    save_labels,
    unique_stems,
)
from utils.run_dir import next_run_dir, numbered_path

CLASSES = ["cat", "traffic light", "dog"]
IMAGE_SIZE = (160, 120)  # width, height
LOW_CONF = "0.01"  # an untrained model scores every box 0.25


def _write_picture(path, size=IMAGE_SIZE, seed=0):
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(120, 250, 3)))
    draw = ImageDraw.Draw(image)
    draw.rectangle((size[0] // 8, size[1] // 4, size[0] // 2, size[1] - 10), fill=(200, 40, 40))
    draw.ellipse((size[0] // 2, 10, size[0] - 10, size[1] // 2), fill=(30, 120, 30))
    image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return path


run_cli = functools.partial(run_script, "predict.py")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from nets.yolo import YoloV3
    from utils.checkpoint import save_model

    net = YoloV3(len(CLASSES), class_names=CLASSES, input_size=64)
    path = tmp_path_factory.mktemp("model") / "m.keras"
    save_model(net, path)
    return net, path


@pytest.fixture(scope="module")
def predictor(model):
    from utils.predict.predictor import Predictor

    return Predictor(model[0], conf=float(LOW_CONF), max_boxes=5)


@pytest.fixture
def main_with(predictor, model, monkeypatch):
    """``predict.main`` with the shared Predictor standing in for loading --model."""
    import predict

    def load(args):
        assert args.model == str(model[1])
        return predictor

    monkeypatch.setattr(predict, "open_predictor", load)
    return lambda *args: predict.main([str(a) for a in args])


def _parse_label_lines(text):
    rows = []
    for line in text.splitlines():
        name, score, *box = line.split()
        rows.append((name, float(score), [float(v) for v in box]))
    return rows


# --- the command line as a subprocess ------------------------------------------------


def test_cli_image_with_all_outputs(model, tmp_path):
    image = _write_picture(tmp_path / "street.jpg")
    result = run_cli("--model", model[1], "--source", image, "--out", tmp_path / "runs" / "predict",
                     "--conf", LOW_CONF, "--max-boxes", 4, "--save-txt", "--crop", "--count", "--show")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "predict"
    annotated = out / "street.jpg"
    with Image.open(annotated) as saved:
        assert saved.format == "JPEG" and saved.size == IMAGE_SIZE
        assert not np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(Image.open(image).convert("RGB")))

    rows = _parse_label_lines((out / "labels" / "street.txt").read_text())
    assert 1 <= len(rows) <= 4 * len(CLASSES)
    assert {name for name, _, _ in rows} <= {"cat", "traffic_light", "dog"}
    for _, score, (x1, y1, x2, y2) in rows:
        assert float(LOW_CONF) <= score <= 1.0
        assert 0 <= x1 <= x2 <= IMAGE_SIZE[0] and 0 <= y1 <= y2 <= IMAGE_SIZE[1]

    crops = sorted((out / "crops").glob("*/street_*.jpg"))
    assert crops and {c.parent.name for c in crops} <= {"cat", "traffic_light", "dog"}
    k = int(crops[0].stem.split("_")[-1])
    _, _, (x1, y1, x2, y2) = rows[k]
    with Image.open(crops[0]) as crop:
        assert abs(crop.width - (x2 - x1)) <= 2 and abs(crop.height - (y2 - y1)) <= 2

    # Compact detections, the counts, the missing display and where outputs went.
    assert f"street.jpg ({IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}): {len(rows)} detections" in result.stdout
    counts = {name.replace(" ", "_"): 0 for name in CLASSES}
    for name, _, _ in rows:
        counts[name] += 1
    count_line = next(line for line in result.stdout.splitlines() if line.startswith("counts:"))
    for name in CLASSES:
        n = counts[name.replace(" ", "_")]
        assert (f"{name} {n}" in count_line) == (n > 0)
    assert result.stderr.count("No display available") == 1
    assert f"Results saved to {out}" in result.stdout


def test_cli_webcam_that_cannot_be_opened(model, tmp_path):
    result = run_cli("--model", model[1], "--source", "9", "--out", tmp_path / "out", timeout=120)
    assert result.returncode == 2
    assert "Cannot open webcam 9" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_bad_input_size_and_help():
    result = run_cli("--model", "m.keras", "--source", "x.jpg", "--input-size", "100", timeout=60)
    assert result.returncode == 2 and "multiple of 32" in result.stderr and "'100'" in result.stderr
    helped = run_cli("--help", timeout=60)
    assert helped.returncode == 0
    for option in ("--model", "--source", "--mode", "--out", "--classes", "--input-size", "--anchors", "--conf",
                   "--nms-iou", "--max-boxes", "--no-letterbox", "--batch-size", "--save-txt", "--crop", "--count",
                   "--show", "--max-frames", "--fps-runs", "--fps-warmup", "--heatmap-levels"):
        assert option in helped.stdout


# --- model errors and the other modes, in process --------------------------------------


def test_truncated_model_file(model, tmp_path, capsys):
    import predict

    broken = tmp_path / "broken.keras"
    broken.write_bytes(model[1].read_bytes()[:5000])
    image = _write_picture(tmp_path / "a.jpg")
    assert predict.main(["--model", str(broken), "--source", str(image), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "truncated or corrupt" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_class_count_mismatch(model, tmp_path, monkeypatch, capsys):
    import predict
    from utils.predict import predictor as inference

    # The real Predictor.from_checkpoint, reading the model built by the fixture.
    monkeypatch.setattr(inference, "load_model", lambda path: model[0])
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\nd\n")
    image = _write_picture(tmp_path / "a.jpg")
    status = predict.main(["--model", str(model[1]), "--source", str(image), "--classes", str(classes),
                           "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert "4 classes" in err and "with 3" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_folder_skips_bad_files_and_numbers_runs(main_with, model, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_picture(folder / "a.jpg", seed=1)
    _write_picture(folder / "b.png", size=(90, 70), seed=2)
    _write_picture(folder / "c.jpg", size=(64, 100), seed=3)
    good = (folder / "a.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".hidden").write_text("ignored\n")
    runs = tmp_path / "runs"
    (runs / "predict").mkdir(parents=True)  # an earlier run, never written into

    status = main_with("--model", model[1], "--source", folder, "--out", runs / "predict", "--batch-size", 2,
                       "--save-txt", "--count")
    captured = capsys.readouterr()
    assert status == 0
    assert list((runs / "predict").iterdir()) == []
    out = runs / "predict2"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a.jpg", "b.png", "c.jpg", "skipped.txt"]
    with Image.open(out / "b.png") as saved:
        assert saved.format == "PNG" and saved.size == (90, 70)
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.txt", "b.txt", "c.txt"]
    # Each bad file reported as it is met, and the summary says what happened.
    assert "corrupt.jpg: unreadable or truncated image" in captured.err
    assert "notes.txt: not an image file" in captured.err
    summary = "Processed 3 images; skipped 2: 1 unreadable or truncated image, 1 not an image file PIL can read."
    assert summary in captured.out
    assert "Per-class totals:" in captured.out
    skipped = (out / "skipped.txt").read_text()
    assert "corrupt.jpg" in skipped and "notes.txt" in skipped and ".hidden" not in skipped
    assert f"Results saved to {out}" in captured.out

    # A second run goes to the next number.
    assert main_with("--model", model[1], "--source", folder / "a.jpg", "--out", runs / "predict") == 0
    assert (runs / "predict3" / "a.jpg").is_file()


def _write_video(path, frames, size=(96, 80), fps=5.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 40 + 30 * i, np.uint8)
        cv2.rectangle(frame, (10 + 5 * i, 10), (50 + 5 * i, 60), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return path


def test_video_annotated_frame_for_frame(main_with, model, tmp_path, capsys):
    video = _write_video(tmp_path / "clip.mp4", frames=6)
    out = tmp_path / "out"
    assert main_with("--model", model[1], "--source", video, "--out", out, "--count", "--save-txt") == 0
    captured = capsys.readouterr()
    frames = read_frames(out / "clip.mp4")
    assert len(frames) == 6 and frames[0].shape == (80, 96, 3)
    assert len(list((out / "labels").glob("clip_*.txt"))) == 6
    assert "Wrote 6 frames to" in captured.out and "FPS" in captured.out
    assert "Detections per class, summed over frames:" in captured.out
    assert "fps=" in captured.err  # the progress bar shows the rate

    # --max-frames stops early; the file written so far is complete.
    assert main_with("--model", model[1], "--source", video, "--out", out, "--max-frames", 3) == 0
    assert len(read_frames(tmp_path / "out2" / "clip.mp4")) == 3


def test_video_interrupted_keeps_frames(main_with, model, predictor, tmp_path, monkeypatch, capsys):
    video = _write_video(tmp_path / "clip.mp4", frames=6)
    calls = {"n": 0}
    real = predictor.predict_batch

    def interrupt_on_third(images, timings=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(images, timings)

    monkeypatch.setattr(predictor, "predict_batch", interrupt_on_third)
    assert main_with("--model", model[1], "--source", video, "--out", tmp_path / "out") == 130
    assert len(read_frames(tmp_path / "out" / "clip.mp4")) == 2
    assert "Stopped with Ctrl-C" in capsys.readouterr().out


def test_fps_mode_reports_latency(main_with, model, tmp_path, capsys):
    image = _write_picture(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main_with("--model", model[1], "--source", image, "--out", out, "--mode", "fps", "--fps-runs", 4,
                     "--fps-warmup", 1) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("stage"))
    assert header.split()[1:4] == ["mean", "p50", "p95"]
    for stage in ("preprocessing", "network + decoding", "drawing / host post-processing", "total"):
        line = next(line for line in text.splitlines() if line.startswith(stage))
        mean, p50, p95 = (float(v) for v in line.split()[-3:])
        assert 0 <= p50 <= p95 and mean >= 0
    assert "4 timed runs after 1 warm-up" in text
    fps = float(next(line for line in text.splitlines() if line.startswith("FPS:")).split()[1])
    assert fps > 0
    assert (out / "fps.json").is_file() and (out / "a.png").is_file()


def test_heatmap_mode(main_with, model, tmp_path, capsys):
    image = _write_picture(tmp_path / "wide.jpg", size=(150, 70))
    out = tmp_path / "out"
    assert main_with("--model", model[1], "--source", image, "--out", out, "--mode", "heatmap",
                     "--heatmap-levels") == 0
    with Image.open(out / "wide_heatmap.png") as heat:
        assert heat.format == "PNG" and heat.size == (150, 70)
        pixels = np.asarray(heat.convert("RGB"))
    assert not np.array_equal(pixels, np.asarray(Image.open(image).convert("RGB")))
    for stride in (8, 16, 32):
        assert (out / f"wide_heatmap_s{stride}.png").is_file()
    assert "objectness max" in capsys.readouterr().out


def test_usage_errors_in_process(main_with, model, tmp_path, capsys):
    video = _write_video(tmp_path / "clip.mp4", frames=2)
    assert main_with("--model", model[1], "--source", video, "--mode", "heatmap", "--out", tmp_path / "o") == 2
    assert "--mode heatmap works on an image or a folder" in capsys.readouterr().err
    assert main_with("--model", model[1], "--source", tmp_path / "missing.jpg", "--out", tmp_path / "o") == 2
    assert "Source not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert main_with("--model", model[1], "--source", bad, "--out", tmp_path / "o") == 2
    assert "bad.jpg" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main_with("--model", model[1], "--source", empty, "--out", tmp_path / "o") == 2
    assert "holds no files" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # A folder in which nothing could be read: the run completes, the status says so.
    (empty / "x.txt").write_text("x")
    assert main_with("--model", model[1], "--source", empty, "--out", tmp_path / "o") == 1
    assert "Processed 0 images; skipped 1" in capsys.readouterr().out


def test_prediction_options_reach_the_predictor(monkeypatch, tmp_path, capsys):
    import predict
    from utils.predict import predictor as inference

    seen = {}

    def from_checkpoint(cls, path, **kwargs):
        seen.update(kwargs, path=path)
        raise inference.ClassCountError("stop before loading")

    monkeypatch.setattr(inference.Predictor, "from_checkpoint", classmethod(from_checkpoint))
    image = _write_picture(tmp_path / "a.jpg")
    status = predict.main(["--model", "m.keras", "--source", str(image), "--classes", "c.txt", "--anchors", "a.txt",
                           "--input-size", "96", "--conf", "0.3", "--nms-iou", "0.4", "--max-boxes", "7",
                           "--no-letterbox", "--out", str(tmp_path / "o")])
    assert status == 2 and "stop before loading" in capsys.readouterr().err
    assert seen == {"path": "m.keras", "classes_path": "c.txt", "anchors_path": "a.txt", "input_size": 96,
                    "conf": 0.3, "nms_iou": 0.4, "max_boxes": 7, "letterbox": False, "agnostic_nms": True}
    # --no-agnostic-nms: one NMS per class, as the reference design.
    seen.clear()
    predict.main(["--model", "m.keras", "--source", str(image), "--no-agnostic-nms", "--out", str(tmp_path / "o")])
    assert seen["agnostic_nms"] is False


# --- helpers ------------------------------------------------------------------------


def test_next_run_dir_numbering(tmp_path):
    base = tmp_path / "runs" / "predict"
    assert next_run_dir(base) == base and base.is_dir()
    assert next_run_dir(base) == tmp_path / "runs" / "predict2"
    assert next_run_dir(base) == tmp_path / "runs" / "predict3"
    assert next_run_dir(base, mkdir=False) == tmp_path / "runs" / "predict4"
    assert not (tmp_path / "runs" / "predict4").exists()
    (tmp_path / "file").write_text("")
    assert next_run_dir(tmp_path / "file") == tmp_path / "file2"
    assert numbered_path(tmp_path / "exp1", 2) == tmp_path / "exp1-2"
    with pytest.raises(ValueError, match="needs a name"):
        next_run_dir("")


def test_parse_source(tmp_path):
    image = _write_picture(tmp_path / "a.JPG")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    (tmp_path / "data.csv").write_text("1,2\n")
    assert parse_source("0").kind == "webcam" and parse_source("1").index == 1
    assert parse_source("1").stem == "webcam1"
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source(str(image)).kind == "image"
    assert parse_source(str(video)).kind == "video"
    with pytest.raises(SourceError, match="not found"):
        parse_source(str(tmp_path / "nope.jpg"))
    with pytest.raises(SourceError, match=r"'\.csv'"):
        parse_source(str(tmp_path / "data.csv"))


def test_an_export_is_checked_on_the_first_pictures_of_the_run(tmp_path):
    from tests.predict.video_fakes import frame_level, write_squares_video
    from utils.predict.job import first_images

    video = write_squares_video(tmp_path / "clip.mp4", frames=12)
    frames, where = first_images(parse_source(str(video)), 5)
    assert where == "the first 5 frames of clip.mp4" and len(frames) == 5
    # In order and from the start: frame i is grey level 40 + 8 i away from the squares
    # (the nearest level, after lossy encoding).
    levels = np.array([frame_level(i) for i in range(12)])
    assert [int(np.abs(levels - frame[110, 100].mean()).argmin()) for frame in frames] == [0, 1, 2, 3, 4]
    assert frames[0].shape == (120, 200, 3) and frames[0].dtype == np.uint8
    # A folder: its first readable images, a broken file left out.
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"not a picture")
    for name in ("b.jpg", "c.png", "d.jpg"):
        _write_picture(folder / name)
    images, where = first_images(parse_source(str(folder)), 2)
    assert len(images) == 2 and where == "the first 2 images of pictures"
    assert images[0].shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3)
    images, where = first_images(parse_source(str(folder / "c.png")), 8)
    assert len(images) == 1 and where == "c.png"
    # A webcam's frames are the run's: none are taken.
    assert first_images(parse_source("0"), 8)[0] == []


def test_output_names_never_collide(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpeg", tmp_path / "c.bmp"]
    stems = unique_stems(paths)
    assert stems == {paths[0]: "a_jpg", paths[1]: "a_png", paths[2]: "b", paths[3]: "c"}
    names = [image_output_name(p, stems[p]) for p in paths]
    assert names == ["a_jpg.jpg", "a_png.png", "b.jpg", "c.jpg"]
    assert len(set(names)) == len(names)


class _Bar:
    """Stands in for a tqdm bar: records what the frame loop does with it."""

    def __init__(self):
        self.done, self.written, self.closed = 0, [], False

    def update(self, n):
        self.done += n

    def write(self, text, file=None):
        self.written.append(text)

    def close(self):
        self.closed = True


def test_frame_loop_stops_reports_skips_and_closes_on_ctrl_c():
    from utils.predict.job import frame_loop
    from utils.predict.sources import Skipped

    bad = Skipped(Path("bad.jpg"), "unreadable", "bad.jpg: unreadable")
    batches = [(["a", "b"], [], 2), ([], [bad], 1), (["c"], [], 1), (["d"], [], 1)]
    seen, closed = [], []
    bar = _Bar()
    end = frame_loop(batches, lambda items: seen.extend(items) or "c" not in items, bar,
                     close=(lambda: closed.append(1),))
    assert seen == ["a", "b", "c"] and end.stopped and not end.interrupted and end.skipped == [bad]
    assert bar.done == 4 and bar.closed and bar.written == ["skipped bad.jpg: unreadable"] and closed == [1]

    def interrupt(items):
        raise KeyboardInterrupt

    bar = _Bar()
    end = frame_loop(batches, interrupt, bar, close=(lambda: closed.append(2),))
    assert end.interrupted and not end.stopped and bar.done == 0 and bar.closed and closed == [1, 2]


def test_iter_batches_skips_and_batches(tmp_path):
    paths = [_write_picture(tmp_path / f"{i}.jpg", size=(40, 30)) for i in range(3)]
    (tmp_path / "x.txt").write_text("hello")
    paths.insert(1, tmp_path / "x.txt")
    paths.append(tmp_path / "clip.mp4")
    batches = list(iter_batches(paths, 2))
    assert [len(loaded) for loaded, _, _ in batches] == [2, 1]
    assert sum(done for _, _, done in batches) == len(paths)
    skipped = [s for _, batch_skipped, _ in batches for s in batch_skipped]
    assert [s.path.name for s in skipped] == ["x.txt", "clip.mp4"]
    assert skipped[0].reason == "not an image file PIL can read"
    assert "video file" in skipped[1].reason
    assert all(image.shape == (30, 40, 3) for loaded, _, _ in batches for _, image in loaded)
    with pytest.raises(ValueError, match="0"):
        list(iter_batches(paths, 0))


def test_save_labels_and_crops(tmp_path):
    from types import SimpleNamespace

    image = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    det = SimpleNamespace(boxes=np.array([[10.2, 5.7, 40.0, 30.0], [70, 50, 70.4, 50.2], [-3, -2, 90, 70]], np.float32),
                          scores=np.array([0.9, 0.5, 0.3], np.float32), classes=np.array([1, 0, 2], np.int32))
    label_file = save_labels(tmp_path, "img", det, ["cat", "traffic light", "a/b"])
    rows = _parse_label_lines(label_file.read_text())
    assert rows[0] == ("traffic_light", pytest.approx(0.9), pytest.approx([10.2, 5.7, 40.0, 30.0], abs=0.01))
    written = save_crops(tmp_path, "img", image, det, ["cat", "traffic light", "a/b"])
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "crops/traffic_light/img_0.jpg", "crops/a_b/img_2.jpg"]
    with Image.open(written[0]) as crop:
        assert crop.size == (30, 25)
    with Image.open(written[1]) as crop:
        assert crop.size == (80, 60)


def test_video_reader_and_writer_round_trip(tmp_path):
    source = parse_source(str(_write_video(tmp_path / "in.mp4", frames=4, fps=7.0)))
    with VideoReader(source) as reader:
        assert reader.fps == pytest.approx(7.0) and reader.frame_count == 4
        with VideoWriter(tmp_path / "out.mp4", reader.fps) as writer:
            for frame in reader:
                assert frame.shape == (80, 96, 3)
                writer.write(frame)
    assert writer.frames == 4 and len(read_frames(tmp_path / "out.mp4")) == 4
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="Cannot open video"):
        VideoReader(parse_source(str(broken)))
