"""Tests of utils/keras_compat.py: the private Keras and TensorFlow API it wraps still
exists with the parameters and meaning the product relies on, and no other product
module uses private API directly.

A failure here after an upgrade names the private API that changed; the comment
beside it in utils/keras_compat.py says what it works around.
"""

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import ROOT
from utils import keras_compat

# Private API in product code, and the files allowed to use it.
PRIVATE_API = {
    "keras.src": ("utils/keras_compat.py",),
    "tensorflow.python": ("utils/keras_compat.py",),
    "._flatten_layers": ("utils/keras_compat.py",),
    "._distribute_strategy": ("utils/keras_compat.py",),
    "_num_workers": ("utils/keras_compat.py",),
    # The override in YoloV3 cannot move; keras_compat names it.
    "_maybe_symbolic_build": ("utils/keras_compat.py", "nets/yolo.py"),
}


def _parameters(function):
    return inspect.signature(function).parameters


def _assert_takes(function, *names):
    missing = [name for name in names if name not in _parameters(function)]
    assert not missing, f"{function.__qualname__} no longer takes {missing}: {inspect.signature(function)}"


# --- keras.applications internals ---------------------------------------------------


def test_family_builders_take_the_arguments_the_backbones_pass():
    common = ("width_coefficient", "depth_coefficient", "default_size", "drop_connect_rate", "name",
              "include_top", "weights", "input_shape")
    _assert_takes(keras_compat.build_efficientnet, *common, "dropout_rate")
    _assert_takes(keras_compat.build_efficientnet_v2, *common, "include_preprocessing")


def test_family_builders_build_the_public_models():
    # The private builder with B0's coefficients is keras.applications.EfficientNetB0.
    private = keras_compat.build_efficientnet(1.0, 1.0, 224, include_top=False, weights=None, input_shape=(64, 64, 3))
    public = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    assert [type(layer) for layer in private.layers] == [type(layer) for layer in public.layers]
    assert private.count_params() == public.count_params()


def test_weights_urls_and_hashes_cover_every_variant():
    for url in (keras_compat.EFFICIENTNET_WEIGHTS_URL, keras_compat.EFFICIENTNETV2_WEIGHTS_URL,
                keras_compat.MOBILENETV2_WEIGHTS_URL):
        assert isinstance(url, str) and url.startswith("https://") and url.endswith("/"), url
    hashes = [(keras_compat.EFFICIENTNET_WEIGHTS_HASHES, [f"b{i}" for i in range(8)]),
              (keras_compat.EFFICIENTNETV2_WEIGHTS_HASHES, ["b0", "b1", "b2", "b3", "-s", "-m", "-l"])]
    for table, keys in hashes:
        for key in keys:
            with_top, no_top = table[key]  # the backbones read the no-top hash, index 1
            assert re.fullmatch(r"[0-9a-f]{32,64}", no_top), (key, no_top)


def test_efficientnet_imagenet_stddev_is_what_its_file_stores():
    np.testing.assert_allclose(keras_compat.EFFICIENTNET_IMAGENET_STDDEV_RGB, (0.229, 0.224, 0.225))


# --- keras.Model internals ------------------------------------------------------------


def test_symbolic_build_method_exists_with_the_overridden_parameters():
    from nets.yolo import YoloV3

    method = getattr(keras.Model, keras_compat.SYMBOLIC_BUILD_METHOD, None)
    assert method is not None, f"keras.Model.{keras_compat.SYMBOLIC_BUILD_METHOD} is gone; YoloV3's override is dead"
    parameters = _parameters(method)
    assert tuple(parameters) == keras_compat.SYMBOLIC_BUILD_PARAMETERS, inspect.signature(method)
    assert all(parameters[name].default is None for name in keras_compat.SYMBOLIC_BUILD_PARAMETERS[1:])
    override = YoloV3.__dict__[keras_compat.SYMBOLIC_BUILD_METHOD]
    assert tuple(_parameters(override)) == keras_compat.SYMBOLIC_BUILD_PARAMETERS


@pytest.mark.parametrize("entry", ["fit", "evaluate"])
def test_fit_and_evaluate_still_go_through_the_symbolic_build(entry):
    # Otherwise YoloV3's override would never run and multi-worker training would break.
    assert keras_compat.SYMBOLIC_BUILD_METHOD in inspect.getsource(getattr(keras.Model, entry))


def test_nested_layers_reach_into_nested_models():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")], name="inner")
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="outer_dense")(inner(inputs)), name="outer")

    names = [layer.name for layer in keras_compat.nested_layers(outer)]

    assert {"inner", "inner_dense", "outer_dense"} <= set(names)
    assert "outer" not in names
    _assert_takes(keras.layers.Layer._flatten_layers, "include_self", "recursive")


def test_model_distribute_strategy_is_the_build_scope_or_none():
    def small_model():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    assert keras_compat.model_distribute_strategy(small_model()) is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = small_model()
    assert keras_compat.model_distribute_strategy(model) is strategy


def test_worker_count_reads_the_multi_worker_strategy():
    from tensorflow.python.distribute import collective_all_reduce_strategy

    assert keras_compat.worker_count(tf.distribute.get_strategy()) == 1
    # MultiWorkerMirroredStrategy's extended object keeps the count in a private attribute.
    assert "CollectiveAllReduceExtended(" in inspect.getsource(tf.distribute.MultiWorkerMirroredStrategy.__init__)
    source = inspect.getsource(collective_all_reduce_strategy.CollectiveAllReduceExtended)
    assert "self._num_workers =" in source


def test_freeze_concrete_function_folds_variables_into_constants():
    from tensorflow.python.framework import convert_to_constants

    _assert_takes(convert_to_constants.convert_variables_to_constants_v2, "func")
    scale = tf.Variable(3.0)

    @tf.function(input_signature=[tf.TensorSpec((2,), tf.float32)])
    def times_scale(x):
        return x * scale

    frozen = keras_compat.freeze_concrete_function(times_scale.get_concrete_function())

    assert len(frozen.inputs) == 1 and not frozen.variables
    np.testing.assert_allclose(frozen(tf.constant([1.0, 2.0]))[0], [3.0, 6.0])


# --- the one place ------------------------------------------------------------------


def _product_files():
    return sorted(ROOT.glob("*.py")) + sorted((ROOT / "utils").rglob("*.py")) + sorted((ROOT / "nets").rglob("*.py"))


def test_private_api_is_used_only_in_keras_compat():
    found = []
    for path in _product_files():
        relative = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for name, allowed in PRIVATE_API.items():
                if name in line and relative not in allowed:
                    found.append(f"{relative}:{number} uses {name}: {line.strip()}")
    assert found == [], "use utils.keras_compat instead:\n" + "\n".join(found)


def test_the_checked_versions_are_recorded():
    for version in (keras_compat.CHECKED_KERAS_VERSION, keras_compat.CHECKED_TENSORFLOW_VERSION):
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    text = (ROOT / "utils" / "keras_compat.py").read_text()
    assert f"Keras {keras_compat.CHECKED_KERAS_VERSION}" in text
    assert f"TensorFlow {keras_compat.CHECKED_TENSORFLOW_VERSION}" in text
