"""A shortened `make demo`: every step of the chain runs as the real command line
(data generation, voc_annotation, k-means anchors, train, get_map, predict on images
and on a video), and each output exists and loads."""

import json

import pytest

from tests.helpers import TRAIN_TIMEOUT, run_script


@pytest.mark.slow
def test_short_demo_runs_every_step(tmp_path, monkeypatch, capsys):
    data, logs = tmp_path / "data", tmp_path / "logs"
    cmd = ["-m", "utils.demo", "--data", data, "--save-dir", logs, "--num-images", "24", "--epochs", "1",
           "--input-size", "64", "--batch-size", "4", "--samples", "2"]
    result = run_script(*cmd, timeout=TRAIN_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # Each step is printed as the command a user would type.
    for step in ("utils.demo.shapes_dataset", "voc_annotation.py", "kmeans_for_anchors.py", "train.py", "get_map.py",
                 "predict.py"):
        assert f" {step}" in out, f"step {step} not printed"
    run_dir = logs / "demo"
    assert (run_dir / "best.keras").is_file() and (run_dir / "history.csv").is_file()
    results = json.loads((run_dir / "map_out" / "results.json").read_text())
    # The held-out split was scored with the VOC metric: a mAP for the five shape classes.
    assert results["metric"] == "voc" and results["totals"]["num_gt"] > 0
    assert 0.0 <= results["map"] <= 1.0
    assert [c["name"] for c in results["classes"]] == (data / "shapes_classes.txt").read_text().split()
    assert (run_dir / "map_out" / "ap_per_class.png").is_file()
    annotated = list((run_dir / "predict").glob("*.jpg"))
    assert len(annotated) == 2
    assert (run_dir / "predict_video" / "demo_video.mp4").stat().st_size > 0
    assert str(run_dir / "best.keras") in out  # the closing summary says where things are

    from utils.checkpoint import load_model

    model = load_model(run_dir / "best.keras")
    assert model.class_names == (data / "shapes_classes.txt").read_text().split()

    # A second run reuses the data and makes a new run folder: its commands, recorded
    # instead of run (the same steps again would double the test's minutes).
    from utils.demo import driver

    commands = []
    monkeypatch.setattr(driver, "run", lambda command, env=None: commands.append([str(c) for c in command]))
    capsys.readouterr()
    driver.main([str(c) for c in cmd[2:]])
    assert "Reusing the dataset" in capsys.readouterr().out
    steps = [command[1] for command in commands]
    assert steps == ["train.py", "get_map.py", "predict.py", "predict.py"], steps
    train = commands[0]
    assert train[train.index("--name") + 1] == "demo2" and train[train.index("--save-dir") + 1] == str(logs)
    assert all(str(logs / "demo2") in " ".join(command) for command in commands[1:])
