"""Reads PyTorch checkpoints in the legacy (pre-1.6, non-zip) format without torch.

Layout of a legacy ``.pth`` file, as ``torch.save(..., _use_new_zipfile_serialization=False)``
writes it:

1. a pickle of the magic number ``0x1950a86a20f9469cfc6c``;
2. a pickle of the protocol version, 1001;
3. a pickle of the system info (byte order, C type sizes);
4. the pickled object (usually an ``OrderedDict`` state dict). Each tensor is pickled
   as a call of ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)``
   whose storage is a persistent id ``("storage", torch.FloatStorage, key, location,
   numel, view_metadata)``;
5. a pickle of the list of storage keys;
6. for each key in that order, the storage's element count as a little-endian int64
   followed by its raw little-endian elements.

Pickles can run arbitrary code when loaded, so the object pickle is read with an
unpickler that resolves only an allow-list of globals (``collections.OrderedDict``,
the tensor rebuild functions, the storage types), each mapped to a local function
or marker that only records its arguments; any other global is refused before it is
looked up. Tensors come back as NumPy arrays.

A few hundred bytes of pickle can declare a tensor far larger than the file (a
stride of 0 repeats one stored element over any shape). So before any storage is
read, every tensor is checked by name: its elements must lie inside its storage
and be no more than the storage holds, the non-contiguous tensors (copied out of
their storages; contiguous ones are views) must together hold no more elements
than all storages, and, when the caller gives them, its shape must be the one the
model expects.
"""

import collections
import math
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_ZIP_SIGNATURE = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"
_COUNT = struct.Struct("<q")

# Storage element types: name of the torch storage class -> little-endian dtype.
# BFloat16 has no NumPy dtype; its 16-bit patterns are read as uint16 and widened
# to float32, which is exact.
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
# Pickle errors that a damaged or foreign stream raises; each is reported as a
# CheckpointFormatError naming the file.
_STREAM_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    UnicodeDecodeError,
    struct.error,
    RecursionError,
    MemoryError,
)


class CheckpointFormatError(ValueError):
    """A file that is not a readable legacy PyTorch checkpoint, or that asks to run code."""


@dataclass(frozen=True)
class _StorageType:
    """Marker standing in for a torch storage class such as ``torch.FloatStorage``."""

    name: str
    dtype: np.dtype


class _Storage:
    """A storage declared in the pickle; its elements are read after the pickle."""

    def __init__(self, key, storage_type, numel):
        self.key = key
        self.storage_type = storage_type
        self.numel = numel
        self.data = None


@dataclass(frozen=True)
class _StorageView:
    """``numel`` elements of a storage starting at element ``offset``."""

    storage: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor declared in the pickle, resolved to an array once the storages are read."""

    view: _StorageView
    offset: int
    size: tuple
    stride: tuple


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of non-negative integers, got {value!r}")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stands in for ``torch._utils._rebuild_tensor`` and ``_rebuild_tensor_v2``.

    The extra arguments of v2 (requires_grad, backward hooks, metadata) do not
    affect the values and are ignored.
    """
    if not isinstance(storage, _StorageView):
        raise pickle.UnpicklingError(f"tensor storage must be a persistent storage id, got {type(storage).__name__}")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise pickle.UnpicklingError(f"tensor storage offset must be a non-negative integer, got {storage_offset!r}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    # Whether the tensor fits its storage is checked by name, in _check_tensors.
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"parameter data must be a tensor, got {type(data).__name__}")
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``_ALLOWED_GLOBALS`` and torch storage ids."""

    def __init__(self, file, path, storages):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            pass
        raise CheckpointFormatError(
            f"{self._path}: refused to load the global {module}.{name}, which the checkpoint's "
            "pickle asks for. Only tensors and (ordered) dicts are read; a file that needs "
            "other objects is not a plain state dict and may run code when loaded by torch. "
            "Do not load it unless you trust its source."
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) != 6:
            raise pickle.UnpicklingError(
                f"unsupported persistent id of kind {kind!r} (only tensor storages are read)"
            )
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage type must be a torch storage class, got {storage_type!r}")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise pickle.UnpicklingError(f"storage element count must be a non-negative integer, got {numel!r}")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type, numel)
        elif storage.storage_type != storage_type or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is declared twice with different types or sizes")
        if view is None:
            return _StorageView(storage, 0, numel)
        if not (isinstance(view, tuple) and len(view) == 3):
            raise pickle.UnpicklingError(f"storage view must be (key, offset, size), got {view!r}")
        _, offset, size = view
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, size)) or (
            offset + size > numel
        ):
            raise pickle.UnpicklingError(f"storage view {view!r} lies outside its storage of {numel} elements")
        return _StorageView(storage, offset, size)


def _load_plain(file, path):
    """Unpickles one header record; such records hold no globals at all."""
    return _RestrictedUnpickler(file, path, {}).load()


def _read_storage(file, path, storage, bytes_left):
    """Reads one storage's element count and elements into ``storage.data``."""
    header = file.read(_COUNT.size)
    if len(header) < _COUNT.size:
        raise CheckpointFormatError(
            f"{path}: the file ends before the data of storage {storage.key!r}; it is truncated. "
            "Download or reinstall it."
        )
    (count,) = _COUNT.unpack(header)
    if count != storage.numel:
        raise CheckpointFormatError(
            f"{path}: storage {storage.key!r} holds {count} elements, but the pickle declares "
            f"{storage.numel}; the file is damaged."
        )
    dtype = storage.storage_type.dtype
    nbytes = count * dtype.itemsize
    if nbytes > bytes_left - _COUNT.size:
        raise CheckpointFormatError(
            f"{path}: storage {storage.key!r} needs {nbytes} bytes, but only "
            f"{max(0, bytes_left - _COUNT.size)} remain; the file is truncated. "
            "Download or reinstall it."
        )
    data = np.empty(count, dtype)
    if nbytes and file.readinto(memoryview(data).cast("B")) != nbytes:
        raise CheckpointFormatError(f"{path}: the file ends inside storage {storage.key!r}; it is truncated.")
    if storage.storage_type.name == "BFloat16Storage":
        data = (data.astype(np.uint32) << 16).view(np.float32)
    storage.data = data
    return nbytes + _COUNT.size


def _is_view(ref):
    """Whether the tensor is a plain run of its storage (returned as a view, not copied)."""
    if math.prod(ref.size) <= 1:
        return True
    step = 1
    for n, s in zip(reversed(ref.size), reversed(ref.stride)):
        if n != 1 and s != step:
            return False
        step *= n
    return True


def _to_array(ref):
    data = ref.view.storage.data[ref.view.offset : ref.view.offset + ref.view.numel]
    numel = math.prod(ref.size)
    if _is_view(ref):
        return data[ref.offset : ref.offset + numel].reshape(ref.size)
    strided = np.lib.stride_tricks.as_strided(
        data[ref.offset :], shape=ref.size, strides=[s * data.itemsize for s in ref.stride], writeable=False
    )
    return strided.copy()


def _named_tensors(obj, name=""):
    """Yields (name, tensor reference) for every tensor that ``_resolve`` turns into an
    array; a name joins dict keys with dots and list indices in brackets."""
    if isinstance(obj, _TensorRef):
        yield name or "(the whole object)", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _named_tensors(value, f"{name}.{key}" if name else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _named_tensors(value, f"{name}[{index}]")


def _check_tensors(path, named, storages):
    """Raises CheckpointFormatError, naming the tensor, unless every tensor fits its storage.

    Runs on the declared sizes, before any storage is read or any array made: each
    tensor's elements (offset, size and stride) must lie inside its storage and be
    no more than the storage holds; the copies of the non-contiguous tensors must
    together hold no more elements than all storages.
    """
    available = sum(storage.numel for storage in storages.values())
    copied, seen = 0, set()
    for name, ref in named:
        numel = math.prod(ref.size)
        if numel == 0:
            continue
        what = f"{path}: tensor {name!r} of size {ref.size}, stride {ref.stride} at offset {ref.offset}"
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= ref.view.numel:
            raise CheckpointFormatError(
                f"{what} reaches element {last} of a storage of {ref.view.numel} elements; the file is damaged."
            )
        if numel > ref.view.numel:
            raise CheckpointFormatError(
                f"{what} would hold {numel:,} elements, more than the {ref.view.numel:,} of its storage (a stride "
                "repeats stored elements); a saved state dict holds no such tensor. The file is damaged or made "
                "to exhaust memory; nothing was read."
            )
        if not _is_view(ref) and ref not in seen:
            seen.add(ref)
            copied += numel
            if copied > available:
                raise CheckpointFormatError(
                    f"{what}: the non-contiguous tensors up to this one would be copied into {copied:,} elements, "
                    f"more than the {available:,} of all the file's storages. The file is damaged or made to "
                    "exhaust memory; nothing was read."
                )


def _resolve(obj, arrays):
    """Replaces every tensor reference in dicts, lists and tuples with its array;
    ``arrays`` keeps one array per distinct reference."""
    if isinstance(obj, _TensorRef):
        if obj not in arrays:
            arrays[obj] = _to_array(obj)
        return arrays[obj]
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve(v, arrays)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, arrays) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, arrays) for v in obj)
    return obj


def _check_header(file, path):
    start = file.read(4)
    file.seek(0)
    if not start:
        raise CheckpointFormatError(f"{path} is empty, not a PyTorch checkpoint. Download or reinstall it.")
    if start == _ZIP_SIGNATURE:
        raise CheckpointFormatError(
            f"{path} is a zip-format PyTorch checkpoint (torch >= 1.6 writes these); only the "
            "legacy format is read here. Re-save it with torch.save(obj, path, "
            "_use_new_zipfile_serialization=False), or use a legacy file."
        )
    if not start.startswith(_PICKLE_PROTO):
        raise CheckpointFormatError(
            f"{path} is not a legacy PyTorch checkpoint: it does not start with a pickle "
            f"(first bytes {start!r})."
        )
    magic = _load_plain(file, path)
    if magic != MAGIC_NUMBER:
        raise CheckpointFormatError(
            f"{path} is not a legacy PyTorch checkpoint: its first pickle holds {magic!r}, "
            f"not the magic number {MAGIC_NUMBER:#x}."
        )
    version = _load_plain(file, path)
    if version != PROTOCOL_VERSION:
        raise CheckpointFormatError(
            f"{path}: unsupported legacy checkpoint protocol version {version!r} "
            f"(only {PROTOCOL_VERSION} is read)."
        )
    sys_info = _load_plain(file, path)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise CheckpointFormatError(
            f"{path}: only checkpoints written on little-endian machines are read; the file's "
            f"system info is {sys_info!r}."
        )


def read_checkpoint(path):
    """Reads a legacy PyTorch checkpoint, with every tensor as a NumPy array.

    Nothing in the file is executed: only dicts, ``OrderedDict``, lists, tuples,
    numbers, strings and tensors are rebuilt.

    Args:
        path: the ``.pth`` file (str or path-like).

    Returns:
        The saved object, usually an ``OrderedDict`` mapping names to arrays.
        Arrays keep the tensor's shape and dtype (bfloat16 becomes float32);
        contiguous tensors are views into their storage's array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFormatError: the file is not a legacy PyTorch checkpoint, is
            truncated or damaged, declares a tensor that does not fit its storage
            (the message names the tensor), or its pickle asks for a global outside
            the allow-list (nothing is run; the message names the global).
    """
    return _read(path)


def _read(path, check=None):
    """``read_checkpoint``, calling ``check(object)`` on the unpickled object (its
    tensors still references) after the tensor checks and before any storage is read."""
    path = os.fspath(path)
    storages = {}
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            _check_header(file, path)
            obj = _RestrictedUnpickler(file, path, storages).load()
            keys = _RestrictedUnpickler(file, path, {}).load()
        except CheckpointFormatError:
            raise
        except _STREAM_ERRORS as exc:
            if isinstance(exc, EOFError) or "truncated" in str(exc) or file.tell() >= size:
                raise CheckpointFormatError(
                    f"{path}: the file ends inside its pickled data; it is truncated ({exc}). "
                    "Download or reinstall it."
                ) from None
            raise CheckpointFormatError(
                f"{path} is not a readable legacy PyTorch checkpoint: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(keys, list) or not all(isinstance(k, (str, bytes)) for k in keys):
            raise CheckpointFormatError(f"{path}: the storage key list is malformed: {keys!r:.200}")
        keys = [k.decode("ascii") if isinstance(k, bytes) else k for k in keys]
        missing = sorted(set(storages) - set(keys))
        unknown = [k for k in keys if k not in storages]
        if missing or unknown:
            raise CheckpointFormatError(
                f"{path}: the storage key list does not match the tensors (unlisted: {missing[:5]}, "
                f"never used: {unknown[:5]}); the file is damaged."
            )
        try:
            _check_tensors(path, _named_tensors(obj), storages)
        except RecursionError:
            raise CheckpointFormatError(f"{path}: the saved object is nested too deeply to be a state dict.") from None
        if check is not None:
            check(obj)
        bytes_left = size - file.tell()
        for key in keys:
            bytes_left -= _read_storage(file, path, storages[key], bytes_left)
    try:
        return _resolve(obj, {})
    except (ValueError, MemoryError) as exc:
        raise CheckpointFormatError(f"{path}: a tensor does not fit its storage: {exc}") from None


def _inner_state_dict(obj):
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"]
    return obj


def read_state_dict(path, expected_shapes=None):
    """Reads a legacy PyTorch state dict: parameter and buffer names to arrays.

    A checkpoint holding ``{"state_dict": {...}, ...}`` (as training scripts often
    save) yields its inner state dict.

    Args:
        path: the ``.pth`` file.
        expected_shapes: optional ``{name: shape}`` the model needs (PyTorch
            layout); a tensor of one of these names with another shape is refused
            before any storage is read. Names absent from the file are left to the
            caller.

    Returns:
        ``OrderedDict`` {name: np.ndarray} in the file's order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFormatError: as ``read_checkpoint``, a tensor whose shape is not
            the expected one (named), or the file holds something other than a
            mapping of names to tensors.
    """
    path = os.fspath(path)

    def check_shapes(obj):
        state = _inner_state_dict(obj)
        if not expected_shapes or not isinstance(state, dict):
            return
        for name, shape in expected_shapes.items():
            ref = state.get(name)
            if isinstance(ref, _TensorRef) and ref.size != tuple(shape):
                raise CheckpointFormatError(
                    f"{path}: tensor {name!r} has shape {ref.size}, but the model's layer expects "
                    f"{tuple(shape)}; the file does not belong to this model. Nothing was read."
                )

    obj = _inner_state_dict(_read(path, check_shapes))
    if not isinstance(obj, dict):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointFormatError(
            f"{path}: entries {bad[:5]!r} of the state dict are not named tensors."
        )
    return collections.OrderedDict(obj)
