"""The Python API (utils.api): Detector on every kind of input, its results, tracking,
evaluation and export, training, and the README's Python block run as written."""

import json
import logging
import re
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.helpers import DETECTOR_CLASSES, ROOT, varied_images
from tests.predict.video_fakes import CLASSES, SquareFinder, write_squares_video
from utils.api import detector as detector_module


@pytest.fixture(scope="module")
def detector(tiny_detector):
    """The tiny checkpoint on TensorFlow at a threshold low enough to give boxes."""
    from utils.api import Detector

    _, path = tiny_detector
    return Detector(path, runtime="tf", conf=0.05)


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i, image in enumerate(varied_images(3, seed=4)):
        paths.append(folder / f"p{i}.png")
        Image.fromarray(image).save(paths[-1])
    return folder, paths


def test_predict_takes_paths_folders_lists_pil_images_and_arrays(detector, photos):
    from utils.image import load_image

    folder, paths = photos
    direct = [detector.predictor.predict(load_image(p)) for p in paths]
    assert sum(len(d) for d in direct) > 0, "the tiny model should find something at conf 0.05"
    rgb = load_image(paths[1])
    by_kind = {
        "folder": detector.predict(folder),
        "list": detector.predict([str(p) for p in paths]),
        "stream": list(detector.predict(folder, stream=True, batch_size=2)),
    }
    for kind, results in by_kind.items():
        assert [r.path for r in results] == [str(p) for p in paths], kind
        for result, expected in zip(results, direct):
            np.testing.assert_allclose(result.boxes, expected.boxes, atol=1e-3, err_msg=kind)
            np.testing.assert_array_equal(result.class_ids, expected.classes)
    for result in (detector.predict(paths[1])[0], detector.predict(Image.fromarray(rgb))[0],
                   detector.predict(rgb)[0], detector.predict(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr")[0]):
        np.testing.assert_allclose(result.boxes, direct[1].boxes, atol=1e-3)
        np.testing.assert_allclose(result.scores, direct[1].scores, atol=1e-5)


def test_a_result_gives_json_a_drawing_and_a_file(detector, photos, tmp_path):
    _, paths = photos
    result = max(detector.predict(paths), key=len)
    data = json.loads(result.to_json())
    height, width = result.image.shape[:2]
    assert (data["width"], data["height"], data["path"]) == (width, height, result.path)
    assert len(data["detections"]) == len(result) > 0
    first = data["detections"][0]
    assert first["class_name"] == DETECTOR_CLASSES[first["class_id"]]
    assert first["box"] == pytest.approx(result.boxes[0].tolist(), abs=0.01)
    assert result.names == [DETECTOR_CLASSES[i] for i in result.class_ids]
    drawn = result.plot()
    assert drawn.shape == result.image.shape and not np.array_equal(drawn, result.image)
    saved = result.save(tmp_path / "out" / "drawn.png")
    np.testing.assert_array_equal(np.asarray(Image.open(saved).convert("RGB")), drawn)


def test_bad_inputs_get_clear_errors_and_a_folder_skips_what_it_cannot_read(detector, photos, caplog):
    from utils.image import ImageLoadError

    folder, paths = photos
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        results = detector.predict(folder)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert "broken.jpg" in caplog.text
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        detector.predict(folder / "broken.jpg")
    with pytest.raises(ValueError, match="uint8"):
        detector.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        detector.predict(np.zeros((32, 32, 5), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        detector.predict(paths[0], channels="bgra")


def test_track_gives_each_frame_its_track_ids(monkeypatch, tmp_path):
    from utils.api import Detector

    monkeypatch.setattr(detector_module, "open_model", lambda path, options, check_images=None: SquareFinder())
    video = write_squares_video(tmp_path / "squares.mp4", frames=12)
    frames = list(Detector("squares.keras", conf=0.5).track(video, max_frames=10))
    assert [f.frame_index for f in frames] == list(range(1, 11))
    assert all(f.class_names == CLASSES for f in frames)
    # The two squares keep their IDs from the frame the tracker confirms them on.
    later = [dict(zip(f.class_ids.tolist(), f.track_ids.tolist())) for f in frames[3:]]
    assert all(ids == later[0] for ids in later) and len(set(later[0].values())) == 2
    assert min(later[0].values()) >= 1
    assert "track_id" in frames[-1].to_dict()["detections"][0]


def test_evaluate_runs_the_model_at_the_evaluation_settings_and_gives_the_metrics(monkeypatch, tmp_path):
    from tests.helpers import QuarterPredictor
    from utils.api import Detector, Metrics
    from utils.config import EVAL_CONF, EVAL_NMS_IOU

    opened = []

    def fake_open(path, options, check_images=None):
        opened.append(options)
        return QuarterPredictor(DETECTOR_CLASSES, score=0.8)

    monkeypatch.setattr(detector_module, "open_model", fake_open)
    lines = []
    for i, image in enumerate(varied_images(4, seed=7)):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(image).save(path)
        h, w = image.shape[:2]
        # Objects 0 and 2 lie where QuarterPredictor draws its class-0 box; 1 and 3 elsewhere.
        box = f"0,0,{w // 2},{h // 2},0" if i % 2 == 0 else f"{w // 2},{h // 2},{w - 1},{h - 1},1"
        lines.append(f"{path} {box}")
    dataset = tmp_path / "test.txt"
    dataset.write_text("\n".join(lines) + "\n")
    detector = Detector("tiny.keras", conf=0.4)
    metrics = detector.evaluate(dataset, out=tmp_path / "eval")
    assert isinstance(metrics, Metrics) and metrics.metric == "voc"
    # The evaluation opens the model again at its own settings, in float32.
    assert (opened[0].conf, opened[0].evaluation) == (0.4, False)
    assert (opened[1].conf, opened[1].nms_iou, opened[1].evaluation) == (EVAL_CONF, EVAL_NMS_IOU, True)
    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    # cat: four equal-score boxes in image order, right, wrong, right, wrong: precision 1 at
    # recall 1/2, 2/3 at recall 1 -> AP 5/6; traffic light: never detected -> AP 0.
    assert metrics.map50 == pytest.approx(written["map"]) == pytest.approx(5 / 12)
    assert metrics.per_class == pytest.approx({"cat": 5 / 6, "traffic light": 0.0})
    assert metrics.to_dict()["map50"] == metrics.map50 and metrics.map50_95 is None
    assert metrics.best_f1_conf == pytest.approx(written["best_f1"]["conf"])


def test_export_returns_the_written_file_and_an_export_cannot_be_exported_again(detector, tmp_path):
    from utils.api import Detector
    from utils.export.exporter import ExportError

    path = detector.export("onnx", out=tmp_path / "tiny.onnx")
    assert path == tmp_path / "tiny.onnx" and path.stat().st_size > 10_000
    exported = Detector(path, conf=0.05)
    image = varied_images(1, seed=4)[0]
    ours, theirs = detector.predict(image)[0], exported.predict(image)[0]
    np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=0.5)
    with pytest.raises(ExportError, match="export already"):
        exported.export("onnx")


def test_train_refuses_unknown_settings():
    from utils.api import train
    from utils.train.config import ConfigError

    with pytest.raises(ConfigError, match="epoch"):
        train(epoch=3)


def test_scripts_open_their_models_through_the_api(monkeypatch, tmp_path, photos):
    """predict.py builds the Detector's options from its flags: --slice and --no-letterbox arrive."""
    import predict

    seen = {}

    def fake_open(path, options, check_images=None):
        seen["path"], seen["options"] = path, options
        return SquareFinder()

    monkeypatch.setattr(detector_module, "open_model", fake_open)
    folder, _ = photos
    status = predict.main(["--model", "m.keras", "--source", str(folder), "--out", str(tmp_path / "out"),
                           "--conf", "0.3", "--no-letterbox", "--slice", "64", "--runtime", "tf"])
    assert status == 0
    options = seen["options"]
    assert (seen["path"], options.conf, options.letterbox, options.runtime) == ("m.keras", 0.3, False, "tf")
    assert options.slice.size == 64 and options.agnostic_nms is True


def readme_python_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no Python block"
    return textwrap.dedent(blocks[0])


@pytest.mark.slow
def test_the_readme_python_block_runs_as_written(tiny_datasets, shapes_voc, tmp_path, monkeypatch):
    """The README's block, in a folder holding what it names: data.yaml (a YOLO dataset),
    photos/ and clip.mp4. Only the training call's length is made tiny."""
    import shutil

    block = readme_python_block()
    assert "train(" in block and "Detector(" in block
    yolo = tiny_datasets["yolo"]
    for item in yolo.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp_path / item.name)
    import yaml

    spec = yaml.safe_load((tmp_path / "data.yaml").read_text())
    spec["val"] = spec["train"]  # a tiny set: its images serve as the validation split too
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(spec))
    photos = tmp_path / "photos"
    photos.mkdir()
    for line in shapes_voc["test"].read_text().splitlines()[:2]:
        shutil.copy(line.split()[0], photos)
    write_squares_video(tmp_path / "clip.mp4", frames=6)
    tiny = ('epochs=1, backbone="mobilenetv2", alpha=0.35, backbone_weights="none", input_size=64, batch_size=4, '
            'save_dir="logs"')
    code, count = re.subn(r"epochs=\d+", tiny, block, count=1)
    assert count == 1, "the README's train() call names its epochs"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert (tmp_path / "annotated.jpg").stat().st_size > 1000
    assert namespace["onnx_path"].is_file() and namespace["onnx_path"].suffix == ".onnx"
    assert namespace["metrics"].map50 >= 0.0 and set(namespace["metrics"].per_class) <= set(
        namespace["detector"].class_names)
    assert len(namespace["results"]) == 2
