"""Tests of nets/backbones.py with every family, of the backbone options in
nets/yolo.py, and of summary.py / utils/model_stats.py.

One detector per family is built once per module (building is slow) and shared;
tests that change it (freezing, training) put it back as they found it.
"""

import functools
import re

import h5py
import keras
import numpy as np
import pytest

from nets.backbones import (
    MOBILENETV2_IMAGENET_ALPHAS,
    backbone_names,
    backbone_options,
    build_backbone,
    find_pyramid,
    get_spec,
)
from nets.efficientnet_lite import EfficientNetLite
from nets.loss import YoloLoss
from nets.yolo import YoloV3, build_neck_and_heads, freeze_backbone
from tests.helpers import run_script
from utils.data.targets import build_targets
from utils.model_stats import count_flops, format_table, measure_latency, trace
from utils.weights.keras_imagenet import fold_efficientnet_imagenet_scaling

SIZE = 64
NUM_CLASSES = 20
# keras.applications' EfficientNet adds its input normalization (mean, variance, count).
NORMALIZATION_PARAMS = 7
REFERENCE_PARAMS = {  # REFERENCE_DESIGN.md, whole detector
    ("efficientnet-b0", 20): 10_654_029,
    ("efficientnet-b0", 80): 10_824_489,
    ("efficientnet-b1", 20): 13_179_697,
    ("efficientnet-b1", 80): 13_350_157,
}
# One backbone per family, with options that differ from the defaults where the
# family has them, so that a reload that dropped an option would be caught.
FAMILIES = {
    "efficientnet-b0": {},
    "efficientnetv2-b0": {"drop_connect_rate": 0.1},
    "efficientnet-lite0": {"drop_connect_rate": 0.3},
    "mobilenetv2": {"alpha": 0.35},
}
# P3/P4/P5 channels: the outputs of the last blocks at strides 8, 16, 32.
# MobileNetV2 at alpha 0.35: 32, 96, 320 channels scaled and rounded to multiples of 8.
CHANNELS = {
    "efficientnet-b0": (40, 112, 320),
    "efficientnetv2-b0": (48, 112, 192),
    "efficientnet-lite0": (40, 112, 320),
    "mobilenetv2": (16, 32, 112),
}
# The classifier top each keras.applications family adds after its last block.
TOP_LAYERS = {
    "efficientnet-b0": ("top_conv", "top_bn"),
    "efficientnetv2-b0": ("top_conv", "top_bn"),
    "mobilenetv2": ("Conv_1", "Conv_1_bn"),
}

_CACHE = {}


def cached(key, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def detector(name):
    """The family's detector (20 classes), built once for the module."""
    return cached(("detector", name), lambda: YoloV3(NUM_CLASSES, backbone=name, input_size=SIZE, **FAMILIES[name]))


def keras_application(name):
    """keras.applications' own no-top model of the family, random weights."""
    builders = {
        "efficientnet-b0": lambda: keras.applications.EfficientNetB0(include_top=False, weights=None),
        "efficientnetv2-b0": lambda: keras.applications.EfficientNetV2B0(include_top=False, weights=None),
        "mobilenetv2": lambda: keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None),
    }
    return cached(("application", name), builders[name])


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    _CACHE.clear()


def neck_and_heads_params(channels, num_classes):
    """Parameters of the YOLOv3 neck and heads over a pyramid with these channels."""
    pyramid = {k: keras.Input((None, None, c)) for k, c in zip(("P3", "P4", "P5"), channels)}
    return keras.Model(list(pyramid.values()), build_neck_and_heads(pyramid, num_classes)).count_params()


def tiny_batch(model):
    """Two 64×64 images and their targets: one box on the first image, none on the second."""
    anchors = model.anchors * (SIZE / 416.0)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    per_image = [
        build_targets(np.array([[10.0, 12.0, 40.0, 50.0]]), np.array([3]), anchors, SIZE, NUM_CLASSES, max_boxes=4),
        build_targets(np.zeros((0, 4)), np.zeros((0,), int), anchors, SIZE, NUM_CLASSES, max_boxes=4),
    ]
    y = tuple(np.stack([np.asarray(t[i]) for t in per_image]) for i in range(4))
    assert sum(float(t[..., 4].sum()) for t in y[:3]) == 1.0, "the batch needs exactly one positive"
    return images, y, anchors


# --- names and options -------------------------------------------------------------


def test_every_family_is_registered():
    names = backbone_names()
    expected = (
        [f"efficientnet-b{i}" for i in range(8)]
        + [f"efficientnetv2-{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")]
        + [f"efficientnet-lite{i}" for i in range(5)]
        + ["mobilenetv2"]
    )
    assert sorted(names) == sorted(expected)
    assert get_spec("EfficientNet_B3").name == "efficientnet-b3"
    assert get_spec("efficientnet-lite0").has_imagenet_weights
    assert not get_spec("efficientnet-lite3").has_imagenet_weights
    assert get_spec("mobilenetv2").imagenet_file(0.35).endswith("_0.35_224_no_top.h5")


def test_unknown_backbone_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"'efficientnetv2-bo'.*Did you mean efficientnetv2-b0"):
        get_spec("efficientnetv2-bo")
    with pytest.raises(ValueError, match=r"Did you mean mobilenetv2"):
        build_backbone("mobilenet-v2")
    with pytest.raises(ValueError, match=r"Did you mean efficientnet-lite1"):
        YoloV3(3, backbone="efficientnet-lite-1")


def test_options_are_checked_with_the_value():
    assert backbone_options("efficientnet-b0") == {"alpha": None, "drop_connect_rate": 0.2}
    assert backbone_options("mobilenetv2") == {"alpha": 1.0, "drop_connect_rate": None}
    with pytest.raises(ValueError, match=r"\[0\.35, 1\.4\], got 0\.2"):
        backbone_options("mobilenetv2", alpha=0.2)
    with pytest.raises(ValueError, match=r"alpha=0\.5.*only mobilenetv2"):
        backbone_options("efficientnet-b0", alpha=0.5)
    with pytest.raises(ValueError, match=r"0\.3.*no stochastic depth"):
        backbone_options("mobilenetv2", drop_connect_rate=0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\), got 1\.5"):
        backbone_options("efficientnet-lite0", drop_connect_rate=1.5)


def test_weights_errors_name_the_alternatives(monkeypatch, tmp_path):
    # MobileNetV2 ImageNet weights exist only for some widths; checked before any download.
    with pytest.raises(ValueError, match=r"alpha=0\.6.*Did you mean 0\.5\?"):
        build_backbone("mobilenetv2", weights="imagenet", alpha=0.6)
    assert 0.35 in MOBILENETV2_IMAGENET_ALPHAS and 0.6 not in MOBILENETV2_IMAGENET_ALPHAS
    with pytest.raises(ValueError, match=r"no ImageNet weights for efficientnet-lite3.*none"):
        build_backbone("efficientnet-lite3", weights="imagenet")
    with pytest.raises(FileNotFoundError, match=r"missing\.h5.*imagenet.*none"):
        build_backbone("efficientnetv2-b0", weights=str(tmp_path / "missing.h5"))

    requested = []

    def offline(fname, origin, **kwargs):
        requested.append((fname, origin))
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    alternatives = r"efficientnetv2-s_notop\.h5.*--backbone-weights PATH.*--backbone-weights none"
    with pytest.raises(RuntimeError, match=alternatives):
        build_backbone("efficientnetv2-s", weights="imagenet")
    assert requested and requested[0][1].endswith("efficientnetv2-s_notop.h5")


# --- pyramid and parameters ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_pyramid_strides_and_channels_on_a_non_square_input(name):
    backbone = detector(name).get_layer("backbone")
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    pyramid = backbone(x, training=False)
    c3, c4, c5 = CHANNELS[name]
    assert {k: tuple(v.shape) for k, v in pyramid.items()} == {
        "P3": (1, 8, 12, c3),
        "P4": (1, 4, 6, c4),
        "P5": (1, 2, 3, c5),
    }
    assert all(np.all(np.isfinite(np.asarray(v))) for v in pyramid.values())
    # The classifier's top convolution is not part of the backbone.
    names = {layer.name for layer in backbone.layers}
    assert not names & {"top_conv", "top_bn", "Conv_1", "Conv_1_bn", "out_relu"}


def test_find_pyramid_picks_the_last_block_of_each_stride():
    assert find_pyramid(keras_application("efficientnet-b0")) == {
        "P3": "block3b_add", "P4": "block5c_add", "P5": "block7a_project_bn",
    }
    assert find_pyramid(keras_application("mobilenetv2")) == {
        "P3": "block_5_add", "P4": "block_12_add", "P5": "block_16_project_BN",
    }
    levels = find_pyramid(keras_application("efficientnetv2-b0"))
    assert [levels[k].split("_")[0][:6] for k in ("P3", "P4", "P5")] == ["block3", "block5", "block6"]


@pytest.mark.parametrize("name", sorted(TOP_LAYERS))
def test_backbone_parameters_equal_the_keras_application_without_its_top(name):
    app = keras_application(name)
    top = sum(app.get_layer(layer).count_params() for layer in TOP_LAYERS[name])
    assert top > 0
    assert detector(name).get_layer("backbone").count_params() == app.count_params() - top


def test_lite_backbone_parameters_equal_the_lite_model_without_top():
    lite = EfficientNetLite("lite0", include_top=False)
    assert detector("efficientnet-lite0").get_layer("backbone").count_params() == lite.count_params()


def test_detector_parameter_counts_match_the_reference():
    model = detector("efficientnet-b0")
    assert model.count_params() == REFERENCE_PARAMS[("efficientnet-b0", 20)] + NORMALIZATION_PARAMS
    # The detector is its backbone plus the neck and heads over the pyramid channels,
    # which lets the other counts be checked without building more detectors.
    b0 = model.get_layer("backbone").count_params()
    assert b0 + neck_and_heads_params(CHANNELS["efficientnet-b0"], 20) == model.count_params()
    b1_backbone = build_backbone("efficientnet-b1")
    assert tuple(b1_backbone.output[k].shape[-1] for k in ("P3", "P4", "P5")) == (40, 112, 320)
    b1 = b1_backbone.count_params()
    for (name, classes), reference in REFERENCE_PARAMS.items():
        backbone = b0 if name == "efficientnet-b0" else b1
        assert backbone + neck_and_heads_params((40, 112, 320), classes) == reference + NORMALIZATION_PARAMS


def test_drop_connect_rate_reaches_the_blocks():
    def max_rate(name):
        backbone = detector(name).get_layer("backbone")
        return max((layer.rate for layer in backbone.layers if isinstance(layer, keras.layers.Dropout)), default=0.0)

    # The rate grows linearly over the blocks up to (almost) the given value.
    assert 0.75 * 0.2 < max_rate("efficientnet-b0") < 0.2
    assert 0.75 * 0.1 < max_rate("efficientnetv2-b0") < 0.1
    assert 0.75 * 0.3 < max_rate("efficientnet-lite0") < 0.3
    assert max_rate("mobilenetv2") == 0.0


# --- weights files -------------------------------------------------------------------


def write_legacy_h5(model, path):
    """Writes weights the way Keras' downloadable ImageNet files are stored."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_local_weights_file_of_the_keras_model_loads(tmp_path):
    app = keras_application("mobilenetv2")
    rng = np.random.default_rng(2)
    kernel = app.get_layer("block_5_project").kernel
    kernel.assign(rng.normal(0, 0.1, kernel.shape).astype(np.float32))
    path = tmp_path / "mobilenet_v2_0.35_no_top.h5"
    write_legacy_h5(app, path)
    backbone = build_backbone("mobilenetv2", weights=str(path), alpha=0.35)
    np.testing.assert_array_equal(np.asarray(backbone.get_layer("block_5_project").kernel), np.asarray(kernel))


def test_efficientnet_imagenet_normalization_is_folded_once(tmp_path):
    app = keras_application("efficientnet-b0")
    norm = next(layer for layer in app.layers if isinstance(layer, keras.layers.Normalization))
    std = np.array([0.229, 0.224, 0.225], np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    # Keras' ImageNet file holds the standard deviations as the variance, and
    # keras.applications(weights="imagenet") divides by a further sqrt(std) to
    # normalize by std; the backbone folds that into the variance.
    norm.adapt_mean.assign(mean)
    norm.adapt_variance.assign(std)
    norm.finalize_state()
    path = tmp_path / "efficientnetb0_notop.h5"
    write_legacy_h5(app, path)
    backbone = build_backbone("efficientnet-b0", weights=str(path))
    folded = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization))
    x = np.random.default_rng(3).uniform(0, 1, (1, 4, 4, 3)).astype(np.float32)
    expected = (x - mean) / std
    np.testing.assert_allclose(np.asarray(folded(x)), expected, rtol=1e-5)
    # Weights that were already folded (e.g. saved from this backbone) stay as they are.
    variance = np.asarray(folded.adapt_variance)
    fold_efficientnet_imagenet_scaling(backbone)
    np.testing.assert_array_equal(np.asarray(folded.adapt_variance), variance)


# --- detector: freezing, training, saving ---------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_freeze_backbone_freezes_exactly_the_backbone(name):
    model = detector(name)
    backbone = model.get_layer("backbone")
    backbone_ids = {id(v) for v in backbone.weights}
    neck_and_head = [v for layer in model.layers if layer is not backbone for v in layer.trainable_weights]
    try:
        freeze_backbone(model)
        trainable = {id(v) for v in model.trainable_weights}
        assert not backbone_ids & trainable, "a backbone variable is still trainable"
        assert neck_and_head and all(id(v) in trainable for v in neck_and_head)
        assert {id(v) for v in model.trainable_weights} == {id(v) for v in neck_and_head}
    finally:
        freeze_backbone(model, False)
    assert backbone_ids & {id(v) for v in model.trainable_weights}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_one_training_step_with_the_backbone_frozen(name):
    model = detector(name)
    images, y, anchors = tiny_batch(model)
    model.loss_fn = YoloLoss(anchors, NUM_CLASSES, SIZE)
    backbone = model.get_layer("backbone")
    head = model.get_layer("head_p3_pred").kernel
    before = [np.array(v) for v in backbone.weights]
    head_before = np.array(head)
    try:
        freeze_backbone(model)
        # Eager steps: tracing the training graph would dominate the test's time.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), run_eagerly=True)
        loss = model.train_on_batch(images, y, return_dict=True)["loss"]
        assert np.isfinite(loss) and loss > 0
        assert not np.array_equal(np.asarray(head), head_before)
        # Nothing in the backbone moves, batch-norm statistics included.
        assert all(np.array_equal(np.asarray(v), b) for v, b in zip(backbone.weights, before))
        if name == "mobilenetv2":  # the cheapest family also trains a step unfrozen
            freeze_backbone(model, False)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), run_eagerly=True)
            loss = model.train_on_batch(images, y, return_dict=True)["loss"]
            assert np.isfinite(loss)
            assert any(not np.array_equal(np.asarray(v), b) for v, b in zip(backbone.weights, before))
    finally:
        freeze_backbone(model, False)
        model.loss_fn = None


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_save_load_round_trip(name, tmp_path):
    model = detector(name)
    # Batch-norm statistics away from their defaults, so a reload that lost them shows.
    rng = np.random.default_rng(4)
    for v in model.weights:
        if "moving_mean" in v.path:
            v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
        elif "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    path = tmp_path / f"{name}.keras"
    model.save(path, include_optimizer=False)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, YoloV3)
    assert loaded.get_config() == model.get_config()
    assert loaded.backbone_name == name
    assert loaded.backbone_alpha == FAMILIES[name].get("alpha", 1.0 if name == "mobilenetv2" else None)
    assert loaded.count_params() == model.count_params()
    assert [type(layer) for layer in loaded.get_layer("backbone").layers] == [
        type(layer) for layer in model.get_layer("backbone").layers
    ]
    x = rng.uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    for a, b in zip(model(x, training=False), loaded(x, training=False)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_config_carries_the_backbone_options():
    assert detector("efficientnet-b0").get_config()["drop_connect_rate"] == 0.2
    assert detector("efficientnet-lite0").get_config()["drop_connect_rate"] == 0.3
    config = detector("mobilenetv2").get_config()
    assert config["alpha"] == 0.35 and config["drop_connect_rate"] is None


# --- compute and summary -------------------------------------------------------------


def test_gflops_of_b0_at_416_match_the_reference():
    gflops = count_flops(detector("efficientnet-b0"), 416) / 1e9
    assert abs(gflops - 6.3) < 0.1, gflops


def test_latency_and_table():
    model = detector("mobilenetv2")
    function = trace(model, SIZE)
    seconds = measure_latency(function, SIZE, runs=2, warmup=1)
    assert 0 < seconds < 60
    flops = count_flops(function)
    row = {
        "backbone": "mobilenetv2 0.35", "params": model.count_params(),
        "backbone_params": model.get_layer("backbone").count_params(), "pyramid": CHANNELS["mobilenetv2"],
        "gflops": flops / 1e9, "latency_ms": seconds * 1e3,
    }
    table = format_table([row], SIZE, NUM_CLASSES).splitlines()
    assert "64x64" in table[0] and table[1].split()[0] == "backbone"
    assert table[-1].split()[:2] == ["mobilenetv2", "0.35"]
    assert f"{model.count_params():,}" in table[-1] and "16/32/112" in table[-1]
    with pytest.raises(ValueError, match="runs"):
        measure_latency(function, SIZE, runs=0)


run_summary = functools.partial(run_script, "summary.py")


def test_summary_cli_prints_total_params_and_gflops():
    proc = run_summary("--backbone", "efficientnet-b0", "--num-classes", 20, "--input-size", 64)
    assert proc.returncode == 0, proc.stderr[-2000:]
    total = re.search(r"Total params: ([\d,]+)", proc.stdout)
    assert total, proc.stdout[-2000:]
    assert int(total.group(1).replace(",", "")) == REFERENCE_PARAMS[("efficientnet-b0", 20)] + NORMALIZATION_PARAMS
    gflops = re.search(r"GFLOPs per image at 64x64: (\d+\.\d+)", proc.stdout)
    assert gflops and 0.05 < float(gflops.group(1)) < 0.5, proc.stdout[-500:]


def test_summary_rejects_bad_arguments_with_the_value(capsys):
    import summary

    assert summary.main(["--backbone", "efficientnet-b9", "--input-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "'efficientnet-b9'" in err and "Did you mean" in err
    assert summary.main(["--phi", "0", "--input-size", "100"]) == 2
    assert "100" in capsys.readouterr().err
    assert summary.main(["--backbone", "efficientnet-b0", "--alpha", "0.5", "--input-size", "64"]) == 2
    assert "alpha=0.5" in capsys.readouterr().err
    assert summary.main(["--compare", "efficientnet-b0,mobilenet", "--input-size", "64"]) == 2
    assert "'mobilenet'" in capsys.readouterr().err
