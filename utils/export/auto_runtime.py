"""Running a checkpoint on the fastest runtime of this CPU: ``--runtime`` of predict.py and get_map.py.

``open_on_runtime`` opens a checkpoint on the runtime asked for:

* ``tf``: the Keras model on TensorFlow, as trained;
* ``onnxruntime``, ``openvino``, ``tflite``: the checkpoint exported to that
  runtime's format once, then taken from the cache (below);
* ``auto`` (the default): OpenVINO, in bfloat16 where the CPU computes it natively
  (AVX-512 BF16 or AMX) and float32 elsewhere.

Evaluation (get_map.py) runs in float32 on every runtime, so that the mAP it prints
is the Keras model's. A model written by export.py runs on its own runtime.

The cache: an export lies in ``.runtime_cache/`` beside the checkpoint or, where that
folder cannot be written, under the user's cache directory, in an entry named by a
key of the checkpoint's content (SHA-256) and the export settings (format, input
size, the NMS in the graph, the versions of the packages that export). A manifest
records each file's SHA-256; an entry that does not match it, or that its runtime
cannot open, is exported again. A checkpoint written again (a later epoch) has
another key, and the entries of its earlier content are removed.

The check: every run compares the export with the Keras model on a few images (the
run's own first pictures where the caller gives them, as predict.py does, else drawn
ones) within the tolerance of its precision (``utils.export.verify.TOLERANCES``).
bfloat16 that fails it runs in float32 instead, checked again. When the runtime is
not installed, the export fails or the float32 check does, ``auto`` runs the Keras
model and says why in one line; a runtime named explicitly that is missing or cannot
export is an error.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from importlib import metadata as package_metadata
from pathlib import Path

from utils.config import DEFAULT_CONF, DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU, RUNTIME_FORMATS, RUNTIMES
from utils.export.exporter import ExportOptions, synthetic_images, write_export
from utils.export.formats import ExportError
from utils.export.verify import TOLERANCES, check_export
from utils.predict.predictor import Predictor
from utils.predict.runtimes import (
    CHECKPOINT_SUFFIXES,
    FORMAT_SUFFIX,
    METADATA_VERSION,
    PIP_INSTALL,
    ArtifactError,
    MissingRuntimeError,
    OpenVINOPredictor,
    open_model_file as load_export,
    runtime_for,
)
from utils.run_dir import new_folder_mode, write_text_atomic

log = logging.getLogger(__name__)

AUTO_RUNTIME = "openvino"
# OpenVINO's bfloat16 against its float32, VOC mAP@0.5 (docs/benchmarks.md): 90.27
# against 90.26 on the real-photo test split (Lite0 at 256), 95.79 against 95.96 on the
# demo's (Lite0 at 192), both with AVX-512 BF16; with AMX, 41.08 against 41.04 (B0 at
# 256) and 25.10 against 25.44 (Lite0 at 256). Were bfloat16 to cost more than half a
# point, auto would run float32: set this to False.
AUTO_BF16 = True
CACHE_FOLDER = ".runtime_cache"
CACHE_VERSION = 1
CHECK_IMAGES = 8
# The highest score threshold an export's NMS is made with: a run at a higher --conf
# filters its detections, which is exact (a box scoring lower never suppresses a higher
# one), so a change of --conf above it needs no new export.
GRAPH_CONF = 0.1
MANIFEST = "manifest.json"
# Written into a cache entry whose export failed its check against the Keras model, with the finding.
CHECK_FAILED = "check_failed.txt"
STAGING_PREFIX = ".staging-"
STAGING_MAX_AGE_S = 24 * 3600
# The module each runtime is imported as, with the pip line of requirements.txt.
RUNTIME_MODULES = {"onnxruntime": ("onnxruntime", PIP_INSTALL["onnxruntime"]),
                   "openvino": ("openvino", PIP_INSTALL["openvino"])}
# Versions that change what an export holds: a new one exports again.
EXPORT_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "openvino")


class RuntimeChoiceError(ValueError):
    """A runtime asked for by name that cannot run the model; the message says why."""


def user_cache_dir():
    """This project's folder under the user's cache directory (``$XDG_CACHE_HOME``,
    ``~/.cache``, ``%LOCALAPPDATA%`` or ``~/Library/Caches``)."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "effyolo"


def cpu_flags():
    """The CPU's bfloat16 and int8 instruction sets found in /proc/cpuinfo (Linux), e.g.
    ["avx512_bf16", "avx512_vnni"]; None where the file cannot be read."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return sorted(words & {"avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "avx_vnni"})


def native_bf16():
    """True if OpenVINO computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_precision(runtime, evaluation):
    """(precision, why) for a runtime: "bf16" for OpenVINO on a CPU with native bfloat16
    (unless evaluating, or bfloat16 is switched off), else "fp32"."""
    if runtime != "openvino":
        return "fp32", None
    if evaluation:
        return "fp32", "float32 for evaluation"
    if not AUTO_BF16:
        return "fp32", "float32: bfloat16 cost accuracy"
    if not native_bf16():
        return "fp32", "float32: this CPU has no native bfloat16"
    return "bf16", "this CPU computes bfloat16 natively"


def open_on_runtime(path, runtime="auto", evaluation=False, classes_path=None, input_size=None, anchors_path=None,
                   conf=DEFAULT_CONF, nms_iou=DEFAULT_NMS_IOU, max_boxes=DEFAULT_MAX_BOXES, letterbox=True,
                   check_images=None, cache_dir=None, agnostic_nms=None):
    """A predictor for ``path`` on the runtime asked for, and one line saying which.

    Args:
        path: a ``.keras`` / ``.weights.h5`` checkpoint, or a model written by
            export.py (which runs on its own runtime).
        runtime: one of ``RUNTIMES``.
        evaluation: run in float32 whatever the runtime (get_map.py).
        classes_path, input_size, anchors_path, conf, nms_iou, max_boxes, letterbox:
            as for ``utils.predict.runtimes.open_model_file``.
        check_images: function(count) -> (RGB uint8 images, what they are, e.g. "the
            first 8 frames of clip.mp4"): the run's own pictures to check the export
            on, asked for only when there is an export to check; drawn images where
            it gives none (default).
        cache_dir: the cache folder (default: beside the checkpoint, else the user's).
        agnostic_nms: one NMS over all classes (True) or one per class (False); None:
            an export's own setting, per class for a checkpoint. A checkpoint's cached
            export keeps its NMS per class and runs the agnostic one on the host.

    Returns:
        a ``BasePredictor``.

    Raises:
        CheckpointError, ArtifactError, ClassCountError, FileNotFoundError, ValueError:
            an unusable model, classes or anchors file.
        RuntimeChoiceError: a runtime named explicitly that is missing, cannot run
            this model or cannot export it.
    """
    if runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    options = dict(classes_path=classes_path, input_size=input_size, anchors_path=anchors_path, conf=conf,
                   nms_iou=nms_iou, max_boxes=max_boxes, letterbox=letterbox)
    if not Path(path).name.endswith(CHECKPOINT_SUFFIXES):
        return _load_artifact(path, runtime, {**options, "agnostic_nms": agnostic_nms})
    keras_predictor = Predictor.from_checkpoint(path, agnostic_nms=bool(agnostic_nms), **options)
    if runtime == "tf":
        print("Runtime: TensorFlow fp32 (--runtime tf)")
        return keras_predictor
    name = AUTO_RUNTIME if runtime == "auto" else runtime
    try:
        _require_runtime(name)
        precision, why = choose_precision(name, evaluation)
        exported, how, reused = _cached_predictor(path, keras_predictor, RUNTIME_FORMATS[name], precision,
                                                  anchors_path is not None, cache_dir)
    except (ArtifactError, ExportError) as exc:
        if runtime != "auto":
            raise RuntimeChoiceError(f"--runtime {runtime}: {exc}") from None
        log.warning("Runtime: %s; running the Keras model on TensorFlow instead.", exc)
        return keras_predictor
    images, where = check_images(CHECK_IMAGES) if check_images else ([], None)
    if not images:
        images, where = synthetic_images(CHECK_IMAGES), f"{CHECK_IMAGES} drawn images"
    own_anchors = anchors_path is not None
    exported, why, problem = _checked(keras_predictor, exported, precision, why, images, conf, own_anchors)
    if problem and reused and not (exported.path.parent / CHECK_FAILED).is_file():
        # A cached export that its manifest vouches for but that no longer matches (a file altered in place);
        # one that failed when it was made fails the same way again and is not made anew on every run.
        log.warning("Runtime cache: the cached export %s fails its check against the Keras model on %s (%s); "
                    "exporting again.", exported.path, where, problem)
        shutil.rmtree(exported.path.parent, ignore_errors=True)
        exported, how, _ = _cached_predictor(path, keras_predictor, RUNTIME_FORMATS[name], precision, own_anchors,
                                             cache_dir)
        exported, why, problem = _checked(keras_predictor, exported, precision, why, images, conf, own_anchors)
    if problem:
        with contextlib.suppress(OSError):  # a read-only cache is used as it is
            write_text_atomic(exported.path.parent / CHECK_FAILED, f"{where}: {problem}\n")
    if problem and runtime != "auto":
        log.warning("Runtime: the %s %s export %s differs from the Keras model on %s (%s); running it all the "
                    "same, as --runtime %s asks (--runtime auto would run TensorFlow).", exported.runtime_name,
                    exported.precision, exported.path, where, problem, runtime)
        print(f"Runtime: {exported.runtime_name} {exported.precision} ({runtime}), {how}; differs from the Keras "
              f"model on {where}")
        return exported
    if problem:
        log.warning("Runtime: the %s %s export %s of %s failed its check against the Keras model on %s (%s); "
                    "running the Keras model on TensorFlow instead.", exported.runtime_name, exported.precision,
                    exported.path, Path(path).name, where, problem)
        return keras_predictor
    print(f"Runtime: {exported.runtime_name} {exported.precision} ({runtime}" + (f"; {why}" if why else "")
          + f"), {how}; matches the Keras model on {where}")
    return exported


def _load_artifact(path, runtime, options):
    """A model written by export.py, on its own runtime; RuntimeChoiceError if ``runtime`` names another."""
    predictor = load_export(path, **options)
    suffix = Path(path).suffix.lower()
    own = next((name for name, fmt in RUNTIME_FORMATS.items() if FORMAT_SUFFIX[fmt] == suffix), "tf")
    if runtime not in ("auto", own):
        raise RuntimeChoiceError(f"--runtime {runtime}: {path} is a model written by export.py and runs on "
                                 f"{predictor.runtime_name}; --runtime chooses the runtime of a checkpoint")
    print(f"Runtime: {predictor.runtime_name} {predictor.precision} (as exported)")
    return predictor


def _require_runtime(name):
    """MissingRuntimeError naming the pip line unless the runtime ``name`` imports."""
    if name not in RUNTIME_MODULES:
        return
    module, pip = RUNTIME_MODULES[name]
    try:
        __import__(module)
    except ImportError:
        raise MissingRuntimeError(f"{module} is not installed ({pip})") from None


def _cached_predictor(checkpoint, keras_predictor, fmt, precision, own_anchors, cache_dir):
    """(the export's predictor, what was done, whether it came from the cache); a cached
    export its runtime cannot open is exported again."""
    artifact, how, reused = cached_export(checkpoint, keras_predictor, fmt, cache_dir)
    try:
        return _open_export(artifact, keras_predictor, precision, own_anchors), how, reused
    except ArtifactError as exc:
        if not reused:
            raise
        log.warning("Runtime cache: %s cannot be opened (%s); exporting again.", artifact.parent, exc)
        shutil.rmtree(artifact.parent, ignore_errors=True)
    artifact, how, _ = cached_export(checkpoint, keras_predictor, fmt, cache_dir)
    return _open_export(artifact, keras_predictor, precision, own_anchors), how, False


def _checked(keras_predictor, exported, precision, why, images, conf, own_anchors):
    """Checks ``exported`` against the Keras model on ``images``; a bfloat16 export that
    fails is opened and checked again in float32, which is still far faster than
    TensorFlow. Returns (the predictor, why its precision, the problem or None)."""
    _, problem = check_export(keras_predictor, exported, images, TOLERANCES[exported.precision], conf)
    if problem and precision == "bf16":
        why = f"float32: bfloat16 failed the check ({problem})"
        exported = _open_export(exported.path, keras_predictor, "fp32", own_anchors)
        _, problem = check_export(keras_predictor, exported, images, TOLERANCES[exported.precision], conf)
    return exported, why, problem


def _open_export(artifact, keras_predictor, precision, own_anchors):
    """The export's predictor, at the Keras predictor's settings (names, anchors given
    by the user, NMS, letterbox) and, for OpenVINO, at ``precision``."""
    options = dict(class_names=keras_predictor.class_names, conf=keras_predictor.conf,
                   nms_iou=keras_predictor.nms_iou, max_boxes=keras_predictor.max_boxes,
                   letterbox=keras_predictor.letterbox, anchors=keras_predictor.anchors if own_anchors else None,
                   agnostic_nms=keras_predictor.agnostic_nms)
    runtime = runtime_for(artifact)
    if runtime is OpenVINOPredictor:
        options["precision"] = precision
    return runtime(artifact, **options)


# --- the cache ------------------------------------------------------------------------


def _digest(paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _checkpoint_files(path):
    """The files a checkpoint's content lies in: the archive, or the weights and their JSON."""
    path = Path(path)
    if path.name.endswith(".weights.h5"):
        return [path, path.with_name(path.name[: -len(".weights.h5")] + ".json")]
    return [path]


def _versions():
    versions = {}
    for package in EXPORT_PACKAGES:
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def export_settings(keras_predictor, fmt):
    """What an export depends on besides the checkpoint: the cache key's settings."""
    return {"format": fmt, "input_size": keras_predictor.input_size, "conf": min(keras_predictor.conf, GRAPH_CONF),
            "nms_iou": keras_predictor.nms_iou, "max_boxes": keras_predictor.max_boxes,
            "metadata_version": METADATA_VERSION, "cache_version": CACHE_VERSION, "packages": _versions()}


def cache_roots(checkpoint, cache_dir=None):
    """The cache folders looked in, in order: ``cache_dir`` alone when given, else the
    folder beside the checkpoint and the user's cache directory."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return [Path(checkpoint).resolve().parent / CACHE_FOLDER, user_cache_dir() / "runtime_cache"]


def _entry_files_match(entry, manifest):
    files = manifest.get("files")
    if not isinstance(files, dict) or manifest.get("artifact") not in files:
        return False
    return all((entry / name).is_file() and _digest([entry / name]) == digest for name, digest in files.items())


def _read_manifest(entry):
    try:
        return json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cached_export(checkpoint, keras_predictor, fmt, cache_dir=None):
    """The artifact of ``checkpoint`` in format ``fmt``: from the cache, else exported into it.

    Args:
        checkpoint: the checkpoint's path.
        keras_predictor: its ``Predictor`` (the model, the input size and the NMS
            settings the graph is exported with).
        fmt: "onnx", "openvino" or "tflite".
        cache_dir: the one cache folder to use (default: ``cache_roots``).

    Returns:
        (artifact path, what was done: one phrase for the console, whether the
        artifact came from the cache).

    Raises:
        ExportError: the export failed, or no cache folder can be written.
    """
    checkpoint = Path(checkpoint)
    content = _digest(_checkpoint_files(checkpoint))
    settings = export_settings(keras_predictor, fmt)
    key = hashlib.sha256(json.dumps({"checkpoint": content, **settings}, sort_keys=True).encode()).hexdigest()
    name = f"{checkpoint.name}.{fmt}-{key[:16]}"
    roots = cache_roots(checkpoint, cache_dir)
    for root in roots:
        _remove_stale(root, checkpoint, content)
        entry = root / name
        if not entry.is_dir():
            continue
        manifest = _read_manifest(entry)
        if manifest is not None and manifest.get("key") == key and _entry_files_match(entry, manifest):
            return entry / manifest["artifact"], f"export reused from {entry}", True
        log.warning("Runtime cache: %s is incomplete or altered; exporting again.", entry)
        shutil.rmtree(entry, ignore_errors=True)
    return _export_into(roots, name, checkpoint, keras_predictor, fmt, content, key, settings)


def _remove_stale(root, checkpoint, content):
    """Removes the entries of ``root`` made from earlier content of the same checkpoint file."""
    if not root.is_dir():
        return
    where = str(checkpoint.resolve())
    for entry in root.glob(f"{checkpoint.name}.*"):
        manifest = _read_manifest(entry) if entry.is_dir() else None
        if manifest and manifest.get("checkpoint") == where and manifest.get("checkpoint_sha256") != content:
            shutil.rmtree(entry, ignore_errors=True)


def _staging_folder(roots):
    """(a new folder in the first cache folder that can be written, that cache folder,
    the reasons the ones before it could not be)."""
    problems = []
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=root))
            os.chmod(staging, new_folder_mode())  # mkdtemp's folder is private; the entry is not
        except OSError as exc:
            problems.append(f"{root} cannot be written ({exc.strerror or exc})")
            continue
        _remove_leftovers(root, staging)
        return staging, root, problems
    raise ExportError("no cache folder can be written: " + "; ".join(problems))


def _machine_prefix():
    """The name start of this machine's staging folders."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
    return f"{STAGING_PREFIX}{host}-"


def _staging_prefix():
    """The name start of this process's staging folders: its machine and process id."""
    return f"{_machine_prefix()}{os.getpid()}-"


def _owner_gone(folder):
    """Whether ``folder`` was staged by a process of this machine that no longer runs."""
    mine = _machine_prefix()
    if not folder.name.startswith(mine):
        return False
    try:
        pid = int(folder.name[len(mine):].split("-", 1)[0])
        os.kill(pid, 0)
    except ValueError:
        return False
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process that runs
        return False
    return False


def _remove_leftovers(root, staging):
    """Removes what exports killed on the way left in ``root``: at once where the process
    that staged it is gone from this machine, else after ``STAGING_MAX_AGE_S`` (a
    folder of another machine sharing the cache may still be in use)."""
    for old in root.glob(STAGING_PREFIX + "*"):
        try:
            if old != staging and (_owner_gone(old) or time.time() - old.stat().st_mtime > STAGING_MAX_AGE_S):
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed meanwhile by another run
            continue


def _export_into(roots, name, checkpoint, keras_predictor, fmt, content, key, settings):
    """Exports into a new entry ``name`` of the first cache folder that can be written; as ``cached_export``."""
    staging, root, problems = _staging_folder(roots)
    try:
        artifact = staging / ("model" + FORMAT_SUFFIX[fmt])
        options = ExportOptions(checkpoint=str(checkpoint), format=fmt, out=str(artifact),
                                input_size=settings["input_size"], conf=settings["conf"],
                                nms_iou=settings["nms_iou"], max_boxes=settings["max_boxes"])
        started = time.perf_counter()
        write_export(options, keras_predictor.model, artifact, staging)
        seconds = time.perf_counter() - started
        files = {path.name: _digest([path]) for path in sorted(staging.iterdir()) if path.is_file()}
        manifest = {"key": key, "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": content,
                    "settings": settings, "artifact": artifact.name, "files": files,
                    "export_seconds": round(seconds, 1)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        entry = root / name
        try:
            os.rename(staging, entry)
        except OSError:
            if not entry.is_dir():  # else another run published the same entry first: use it
                raise
    except OSError as exc:
        raise ExportError(f"the export could not be written into {root} ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    where = f"exported in {seconds:.0f} s (once per checkpoint) to {entry}"
    if problems:
        where += f" ({problems[0]})"
    return entry / artifact.name, where, False
