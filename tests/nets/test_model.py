"""Tests of nets/yolo.py and nets/backbones.py: parameter counts, pyramid and head
shapes, freezing. Each model is built once per module (building is slow)."""

import numpy as np
import pytest

from nets.yolo import YoloV3, freeze_backbone

# keras.applications' EfficientNet adds its input normalization (mean, variance, count).
NORMALIZATION_PARAMS = 7
# Reference parameter counts of the whole detector (REFERENCE_DESIGN.md).
REFERENCE_PARAMS = {
    ("efficientnet-b0", 20): 10_654_029,
    ("efficientnet-b0", 80): 10_824_489,
    ("efficientnet-b1", 20): 13_179_697,
    ("efficientnet-b1", 80): 13_350_157,
}

_MODELS = {}


def get_model(backbone, num_classes):
    """Builds a detector once per (backbone, classes) for the whole module."""
    key = (backbone, num_classes)
    if key not in _MODELS:
        _MODELS[key] = YoloV3(num_classes, backbone=backbone, input_size=64)
    return _MODELS[key]


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    _MODELS.clear()


@pytest.mark.parametrize("backbone, num_classes", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(backbone, num_classes):
    model = get_model(backbone, num_classes)
    assert model.count_params() == REFERENCE_PARAMS[(backbone, num_classes)] + NORMALIZATION_PARAMS
    # The prediction convs alone: 1×1 from 2·c to 3·(5+C), with bias.
    out = 3 * (5 + num_classes)
    channels = (320, 112, 40)  # c5, c4, c3 of B0 and B1
    pred = sum(model.get_layer(f"head_{p}_pred").count_params() for p in ("p5", "p4", "p3"))
    assert pred == sum((2 * c + 1) * out for c in channels)


def test_backbone_pyramid_on_a_non_square_input():
    model = get_model("efficientnet-b0", 20)
    backbone = model.get_layer("backbone")
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    pyramid = backbone(x, training=False)
    assert set(pyramid) == {"P3", "P4", "P5"}
    assert tuple(pyramid["P3"].shape) == (2, 8, 12, 40)
    assert tuple(pyramid["P4"].shape) == (2, 4, 6, 112)
    assert tuple(pyramid["P5"].shape) == (2, 2, 3, 320)


def test_heads_in_stride_order_32_16_8_on_a_non_square_input():
    model = get_model("efficientnet-b0", 20)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    outputs = model(x, training=False)
    assert isinstance(outputs, (list, tuple)) and len(outputs) == 3
    shapes = [tuple(o.shape) for o in outputs]
    assert shapes == [(2, 2, 3, 75), (2, 4, 6, 75), (2, 8, 12, 75)]
    assert all(np.all(np.isfinite(np.asarray(o))) for o in outputs)
    # 80 classes: 3·(5+80) = 255 channels.
    shapes = [tuple(o.shape) for o in get_model("efficientnet-b0", 80)(x[:1], training=False)]
    assert shapes == [(1, 2, 3, 255), (1, 4, 6, 255), (1, 8, 12, 255)]


def test_model_config_carries_prediction_metadata():
    model = get_model("efficientnet-b0", 20)
    config = model.get_config()
    assert config["num_classes"] == 20 and config["backbone"] == "efficientnet-b0"
    assert config["input_size"] == 64 and len(config["class_names"]) == 20
    assert np.asarray(config["anchors"]).shape == (9, 2)
    assert [a.shape for a in model.level_anchors] == [(3, 2)] * 3
    # The largest anchors go to the stride 32 head.
    assert model.level_anchors[0].prod(axis=1).min() > model.level_anchors[2].prod(axis=1).max()


def test_freeze_backbone_by_name():
    model = get_model("efficientnet-b0", 20)
    backbone = model.get_layer("backbone")
    backbone_ids = {id(v) for v in backbone.weights}
    head_and_neck = [v for v in model.trainable_weights if id(v) not in backbone_ids]
    total = model.count_params()
    try:
        freeze_backbone(model, True)
        trainable_ids = {id(v) for v in model.trainable_weights}
        assert not backbone_ids & trainable_ids, "a backbone variable is still trainable"
        assert all(not layer.trainable for layer in backbone.layers if layer.weights)
        # Neck and heads stay trainable: every kernel, bias and BN gamma/beta.
        assert head_and_neck and all(id(v) in trainable_ids for v in head_and_neck)
        assert any(v.path.startswith("head_p3_pred") for v in model.trainable_weights)
        assert any(v.path.startswith("neck_p5_1_conv") for v in model.trainable_weights)
        assert model.count_params() == total
        freeze_backbone(model, False)
        trainable_ids = {id(v) for v in model.trainable_weights}
        assert any(id(v) in trainable_ids for v in backbone.weights)
        assert all(id(v) in trainable_ids for v in head_and_neck)
    finally:
        freeze_backbone(model, False)


def test_bad_arguments_fail_early_with_the_value():
    with pytest.raises(ValueError, match="efficientnet-b0"):
        YoloV3(3, backbone="efficientnet-bo")
    with pytest.raises(ValueError, match="0"):
        YoloV3(0)
    with pytest.raises(ValueError, match="2 class names"):
        YoloV3(3, class_names=["a", "b"])


def test_batchnorm_momentum_is_set_everywhere_including_the_backbone():
    import keras

    from utils import keras_compat
    from utils.config import BN_MOMENTUM

    model = get_model("efficientnet-b0", 20)
    batch_norm = keras.layers.BatchNormalization
    layers = [layer for layer in keras_compat.nested_layers(model) if isinstance(layer, batch_norm)]
    backbone = [layer for layer in model.get_layer("backbone").layers if isinstance(layer, batch_norm)]
    assert len(backbone) > 40 and len(layers) > len(backbone)
    assert {layer.momentum for layer in layers} == {BN_MOMENTUM}


def test_head_biases_start_at_the_priors():
    model = get_model("efficientnet-b0", 20)  # input size 64: grids 2, 4, 8
    for level, cells in (("p5", 4), ("p4", 16), ("p3", 64)):
        bias = np.asarray(model.get_layer(f"head_{level}_pred").bias).reshape(3, 25)
        objectness = 1 / (1 + np.exp(-bias[:, 4]))
        np.testing.assert_allclose(objectness, min(8 / cells, 0.5), rtol=1e-5)
        class_prior = 0.6 / (20 - 0.99) / (1 + 0.6 / (20 - 0.99))
        np.testing.assert_allclose(1 / (1 + np.exp(-bias[:, 5:])), class_prior, rtol=1e-4)
        assert np.all(bias[:, :4] == 0)
