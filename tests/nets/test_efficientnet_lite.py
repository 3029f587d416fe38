"""Tests for nets/efficientnet_lite.py: published sizes, strides, design, saving."""

import keras
import numpy as np
import pytest

from nets.efficientnet_lite import (
    BLOCK_GROUPS,
    HEAD_FILTERS,
    LITE_VARIANTS,
    STEM_FILTERS,
    EfficientNetLite,
    round_filters,
    round_repeats,
)

# Published parameter counts of the 1000-class classifiers (TensorFlow
# efficientnet/lite release). They count trainable parameters: BatchNorm's
# moving mean and variance are not included.
PUBLISHED_PARAMS = {
    "lite0": 4.652e6,
    "lite1": 5.417e6,
    "lite2": 6.092e6,
    "lite3": 8.197e6,
    "lite4": 13.007e6,
}


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _group_outputs(model):
    """Last layer of each block group, keyed by group number (1..7)."""
    outputs = {}
    for layer in model.layers:
        if layer.name.startswith("block"):
            group = int(layer.name[len("block")])
            outputs[group] = layer
    return outputs


def _image_batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(2, *shape)).astype("float32")


@pytest.mark.parametrize("variant", sorted(PUBLISHED_PARAMS))
def test_classifier_parameter_count_matches_published(variant):
    model = EfficientNetLite(variant, include_top=True, classes=1000)
    trainable = _count(model.trainable_weights)
    assert trainable == pytest.approx(PUBLISHED_PARAMS[variant], rel=1e-3)
    # The rest is exactly BatchNorm's moving statistics (no input normalization
    # statistics, unlike keras.applications).
    bn_stats = sum(
        2 * layer.moving_mean.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model.count_params() - trainable == bn_stats


@pytest.mark.parametrize("variant", sorted(LITE_VARIANTS))
def test_stem_head_and_end_groups_are_not_scaled(variant):
    model = EfficientNetLite(variant, include_top=True, input_shape=(64, 64, 3))
    assert model.get_layer("stem_conv").filters == STEM_FILTERS
    assert model.get_layer("top_conv").filters == HEAD_FILTERS
    names = {layer.name for layer in model.layers}
    # First and last groups keep their single block at every scale.
    assert "block1a_project_bn" in names and "block1b_dwconv" not in names
    assert "block7a_project_bn" in names and "block7b_dwconv" not in names
    spec = LITE_VARIANTS[variant]
    for number, group in enumerate(BLOCK_GROUPS[1:-1], start=2):
        repeats = round_repeats(group.repeats, spec.depth)
        last = f"block{number}{chr(ord('a') + repeats - 1)}_dwconv"
        beyond = f"block{number}{chr(ord('a') + repeats)}_dwconv"
        assert last in names and beyond not in names
    assert model.get_layer("block7a_project_conv").filters == round_filters(
        320, spec.width
    )


def test_round_filters_follows_efficientnet():
    assert round_filters(32, 1.0) == 32
    assert round_filters(40, 1.1) == 48
    assert round_filters(112, 1.2) == 136
    assert round_filters(320, 1.4) == 448
    assert round_repeats(3, 1.4) == 5


def test_backbone_ends_at_last_block_with_levels_at_strides_8_16_32():
    height, width = 64, 96
    model = EfficientNetLite(
        "lite0", include_top=False, input_shape=(height, width, 3)
    )
    names = [layer.name for layer in model.layers]
    assert "top_conv" not in names and "avg_pool" not in names
    assert model.output.shape == (None, height // 32, width // 32, 320)

    groups = _group_outputs(model)
    assert groups[7].output is model.output
    expected = {3: (8, 40), 5: (16, 112), 7: (32, 320)}
    for group, (stride, channels) in expected.items():
        shape = groups[group].output.shape
        assert shape == (None, height // stride, width // stride, channels), group

    # Groups 3, 5, 7 are the last at their stride: the next group halves the map.
    def stride_of(layer):
        return height // layer.output.shape[1]

    assert [stride_of(groups[g]) for g in range(1, 8)] == [2, 4, 8, 16, 16, 32, 32]

    out = model(_image_batch((height, width, 3)), training=False)
    assert tuple(out.shape) == (2, 2, 3, 320)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_no_squeeze_excite_and_only_relu6_activations():
    model = EfficientNetLite("lite2", include_top=True, input_shape=(64, 64, 3))
    names = [layer.name for layer in model.layers]
    assert not [n for n in names if "_se_" in n]
    assert not [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Multiply, keras.layers.Reshape))
    ]
    pools = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.GlobalAveragePooling2D)
    ]
    assert pools == ["avg_pool"]

    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert relus and all(layer.max_value == 6.0 for layer in relus)
    for layer in model.layers:
        assert not isinstance(layer, keras.layers.Activation), layer.name
        activation = getattr(layer, "activation", None)
        if activation is not None and layer.name != "predictions":
            assert activation.__name__ == "linear", layer.name
    assert "swish" not in str(model.to_json()) and "silu" not in str(model.to_json())


def test_normalization_maps_0_255_to_lite_range():
    model = EfficientNetLite("lite0", include_top=False, input_shape=(32, 32, 3))
    rescaling = model.get_layer("rescaling")
    values = keras.ops.convert_to_numpy(rescaling(np.array([0.0, 127.0, 255.0])))
    np.testing.assert_allclose(values, [-127 / 128, 0.0, 1.0], atol=1e-6)


def test_drop_connect_grows_linearly_to_rate():
    model = EfficientNetLite(
        "lite0", include_top=False, input_shape=(64, 64, 3), drop_connect_rate=0.2
    )
    rates = [
        layer.rate
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout) and layer.name.endswith("_drop")
    ]
    assert rates == sorted(rates) and 0 < rates[0] < rates[-1] < 0.2
    # Lite0 has 16 blocks; the last residual block (block6d) is the 15th.
    assert model.get_layer("block6d_drop").rate == pytest.approx(0.2 * 14 / 16)
    assert all(
        model.get_layer(name).noise_shape == (None, 1, 1, 1)
        for name in ("block2b_drop", "block6d_drop")
    )


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = EfficientNetLite(
        "lite0", include_top=True, input_shape=(64, 64, 3), classes=7
    )
    images = _image_batch((64, 64, 3))
    expected = keras.ops.convert_to_numpy(model(images, training=False))

    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    actual = keras.ops.convert_to_numpy(restored(images, training=False))
    np.testing.assert_array_equal(actual, expected)
    assert [layer.name for layer in restored.layers] == [
        layer.name for layer in model.layers
    ]


def test_weights_argument_loads_a_local_file(tmp_path):
    source = EfficientNetLite("lite0", include_top=False, input_shape=(64, 64, 3))
    path = tmp_path / "lite0.weights.h5"
    source.save_weights(path)
    images = _image_batch((64, 64, 3), seed=1)

    model = EfficientNetLite(
        "lite0", include_top=False, input_shape=(64, 64, 3), weights=path
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(images, training=False)),
        keras.ops.convert_to_numpy(source(images, training=False)),
    )


# Keras warns about every layer it cannot match before the error is raised.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.weights.h5"
    with pytest.raises(FileNotFoundError, match="absent.weights.h5"):
        EfficientNetLite("lite0", include_top=False, weights=missing)

    path = tmp_path / "lite0.weights.h5"
    shape = (64, 64, 3)
    EfficientNetLite("lite0", include_top=False, input_shape=shape).save_weights(path)
    with pytest.raises(ValueError, match="lite0.weights.h5"):
        EfficientNetLite("lite1", include_top=False, input_shape=shape, weights=path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "lite9"}, "lite9"),
        ({"variant": "lite_0"}, "Did you mean 'lite0'"),
        ({"variant": "lite0", "input_shape": (64, 64, 1)}, r"\(64, 64, 1\)"),
        ({"variant": "lite0", "input_shape": (16, 64, 3)}, r"\(16, 64, 3\)"),
        ({"variant": "lite0", "drop_connect_rate": 1.5}, "1.5"),
        ({"variant": "lite0", "classes": 0}, "got 0"),
        # ImageNet weights come as a file, made by utils.weights or build_backbone.
        (
            {"variant": "lite0", "weights": "imagenet"},
            r"path of a weights file, got weights='imagenet'.*build_backbone",
        ),
    ],
)
def test_invalid_arguments_raise_with_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EfficientNetLite(**kwargs)
