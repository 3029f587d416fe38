"""``Detector``: a trained model, opened once, for predicting, tracking, evaluating and
exporting from Python.

It opens a model as predict.py does (``utils.export.auto_runtime.open_on_runtime``:
a checkpoint on the runtime asked for, with its checked and cached export; an
export on its own runtime) and wraps it for tiles when ``PredictOptions.slice``
asks. predict.py and get_map.py open their models through it.
"""

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from utils.api.results import Metrics, Result
from utils.config import CHECKPOINT_SUFFIXES, DEFAULT_AGNOSTIC_NMS, DEFAULT_CONF, EVAL_CONF, EVAL_NMS_IOU
from utils.image import list_images, load_image, to_rgb
from utils.predict.options import PredictOptions

log = logging.getLogger(__name__)

#: Images per network call of ``Detector.predict``.
DEFAULT_BATCH = 8
CHANNEL_ORDERS = ("rgb", "bgr")


class Detector:
    """A trained detector.

    Args:
        model: a ``.keras`` / ``.weights.h5`` checkpoint written by train.py, or a model
            written by export.py (``.onnx``, ``.tflite``, ``.xml``, SavedModel folder).
        options: PredictOptions (default: predict.py's defaults).
        check_images: function(count) -> (RGB uint8 images, what they are): the
            pictures a checkpoint's export is checked on against the Keras model
            (default: drawn ones).
        **settings: fields of PredictOptions, replacing those of ``options``; e.g.
            ``Detector("best.keras", runtime="tf", conf=0.4)``.

    Raises:
        CheckpointError, ArtifactError, FileNotFoundError, ValueError: a model, classes
            or anchors file that cannot be used, with a message naming it.
        RuntimeChoiceError: a runtime asked for by name that cannot run the model.
    """

    def __init__(self, model: str | Path, options: PredictOptions | None = None, *,
                 check_images: Callable | None = None, **settings):
        options = dataclasses.replace(options or PredictOptions(), **settings)
        self.model_path = str(model)
        self.conf_origin = "given"
        if options.conf is None:
            from utils.eval.operating_point import default_conf

            conf, self.conf_origin = default_conf(self.model_path, DEFAULT_CONF)
            options = dataclasses.replace(options, conf=conf)
        if options.agnostic_nms is None and self.model_path.endswith(CHECKPOINT_SUFFIXES):
            options = dataclasses.replace(options, agnostic_nms=DEFAULT_AGNOSTIC_NMS)
        self.options = options
        predictor = open_model(self.model_path, options, check_images)
        #: What runs the network: a ``utils.predict.predictor.BasePredictor`` (or its tiled wrapper).
        self.predictor = options.slice.wrap(predictor) if options.slice is not None else predictor
        self._evaluator = None

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    def __repr__(self):
        return f"Detector({self.model_path!r}, {self.predictor!r}, conf={self.options.conf:g})"

    # --- prediction ---------------------------------------------------------------------

    def predict(self, source, *, batch_size: int = DEFAULT_BATCH, channels: str = "rgb",
                stream: bool = False) -> list[Result] | Iterator[Result]:
        """Detects objects in images.

        Args:
            source: an image file, a folder (its image files, in name order), a list
                of files, a PIL image, a NumPy array (H, W, 3) uint8 in ``channels``
                order or (H, W) grey, or a list of any of these.
            batch_size: images per network call.
            channels: the channel order of NumPy arrays: "rgb" (PIL, matplotlib) or
                "bgr" (OpenCV's ``cv2.imread``).
            stream: return a generator (one image in memory at a time) instead of a list.

        Returns:
            list (or generator) of Result, one per image, in order. A file of a folder
            that cannot be read is skipped with a warning; a file named on its own
            that cannot be read is an error.

        Raises:
            ImageLoadError: a file named on its own cannot be read.
            ValueError: an array that is not an image, an unknown ``channels``.
        """
        if channels not in CHANNEL_ORDERS:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_ORDERS)}, got {channels!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = self._predict(_images_of(source, channels), int(batch_size))
        return results if stream else list(results)

    def __call__(self, source, **kwargs):
        return self.predict(source, **kwargs)

    def _predict(self, images, batch_size):
        batch = []
        for item in images:
            batch.append(item)
            if len(batch) == batch_size:
                yield from self._detect(batch)
                batch = []
        if batch:
            yield from self._detect(batch)

    def _detect(self, batch):
        found = self.predictor.predict_batch([image for image, _ in batch])
        for (image, path), det in zip(batch, found):
            yield Result(image, det.boxes, det.scores, det.classes, self.class_names, path=path)

    def track(self, video: str | Path, *, tracker: str = "bytetrack", max_frames: int | None = None,
              **settings) -> Iterator[Result]:
        """Follows objects through a video file or a folder of frames.

        Args:
            video: a video file, or a folder of images read as frames in name order.
            tracker: a key of ``utils.predict.tracking.TRACKERS``.
            max_frames: stop after this many frames (None: the whole video).
            **settings: tracker settings (``utils.predict.tracking.TRACKER_SETTINGS``
                keys, e.g. ``track_buffer=60``).

        Yields:
            Result per frame, with ``frame_index`` (from 1) and ``track_ids``.

        Raises:
            SourceError: the video cannot be opened; TrackingError: an unknown tracker
                or setting.
        """
        from utils.predict.sources import FrameSequence, VideoReader, parse_source
        from utils.predict.tracking import ObjectTracker, TrackingOptions, tracker_settings

        options = TrackingOptions(tracker, dict(settings))
        tracker_settings(options.tracker, options.overrides)  # unknown settings fail before the video opens
        source = parse_source(video)
        if source.kind not in ("video", "folder"):
            raise ValueError(f"track() reads a video file or a folder of frames, not {source.kind} {source}")
        reader = VideoReader(source) if source.kind == "video" else FrameSequence(source)
        try:
            objects = ObjectTracker.create(options, self.class_names, frame_rate=reader.fps)
            for index, frame in enumerate(reader, 1):
                det = self.predictor.predict_batch([frame])[0]
                tracked = objects.update(det, frame.shape[:2], frame=frame, frame_number=index)
                yield Result(frame, tracked.boxes, tracked.scores, tracked.classes, self.class_names,
                             path=str(source.path), frame_index=index, track_ids=tracked.track_ids)
                if max_frames and index >= max_frames:
                    break
            objects.close()
        finally:
            reader.close()

    # --- evaluation and export ------------------------------------------------------------

    def evaluate(self, dataset: str | Path, *, split: str = "test", images: str | None = None, metric: str = "voc",
                 out: str | Path | None = None, plots: bool = False, **options) -> Metrics:
        """The mAP of the model on a dataset, as get_map.py computes it.

        The model runs at the evaluation settings (confidence ``EVAL_CONF``, NMS IoU
        ``EVAL_NMS_IOU``, float32 on every runtime), whatever this detector predicts with.

        Args:
            dataset: an annotation-line file, a COCO JSON file, a YOLO data YAML or folder.
            split: the split of a YOLO data YAML.
            images: the images folder of a COCO file with relative names.
            metric: "voc", "voc07" or "coco".
            out: the folder for results.json, the text files and the plots (None: a
                new temporary folder, named in ``Metrics.out``).
            plots: draw the plots.
            **options: other fields of ``utils.eval.options.EvalOptions`` (e.g. ``iou``,
                ``save_errors``).

        Returns:
            Metrics.
        """
        from utils.eval.job import run
        from utils.eval.options import EvalOptions

        out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="evaluate_"))
        eval_options = EvalOptions(mode="all", model=self.model_path, annotations=str(dataset), split=split,
                                   images=images, metric=metric, out=str(out), plots=plots,
                                   classes=self.options.classes, input_size=self.options.input_size, **options)
        outcome = run(eval_options, lambda _: self._evaluation_predictor())
        if outcome.summary is None:
            raise ValueError(f"{dataset}: no image could be evaluated (see {out / 'problems.txt'})")
        return Metrics.from_summary(outcome.summary, outcome.out)

    def _evaluation_predictor(self):
        if self._evaluator is None:
            settings = dict(conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU, evaluation=True)
            self._evaluator = Detector(self.model_path, self.options, **settings).predictor
        return self._evaluator

    def export(self, format: str = "onnx", out: str | Path | None = None, **options) -> Path:
        """Exports the checkpoint as export.py does; returns the written path.

        Args:
            format: a format of ``utils.export.formats`` (onnx, tflite, saved_model, openvino).
            out: the artifact's path (None: beside the checkpoint).
            **options: other fields of ``utils.export.exporter.ExportOptions`` (e.g.
                ``int8=True``); the NMS settings default to this detector's.

        Raises:
            ExportError: the model is not a checkpoint, or the export failed.
        """
        from utils.export.exporter import ExportError, ExportOptions, run_export

        if not self.model_path.endswith(CHECKPOINT_SUFFIXES):
            raise ExportError(f"{self.model_path} is an export already; export the checkpoint it was made from")
        settings = dict(conf=self.options.conf, nms_iou=self.options.nms_iou, max_boxes=self.options.max_boxes,
                        input_size=self.options.input_size, agnostic_nms=bool(self.options.agnostic_nms))
        settings.update(options)
        return Path(run_export(ExportOptions(checkpoint=self.model_path, format=format, out=out, **settings)))


def open_model(path, options, check_images=None):
    """The predictor of a model file at PredictOptions (without the tiling), on the
    runtime they ask for (``utils.export.auto_runtime.open_on_runtime``)."""
    from utils.export.auto_runtime import open_on_runtime

    return open_on_runtime(
        path, runtime=options.runtime, evaluation=options.evaluation, classes_path=options.classes,
        input_size=options.input_size, anchors_path=options.anchors, conf=options.conf, nms_iou=options.nms_iou,
        max_boxes=options.max_boxes, letterbox=options.letterbox, check_images=check_images,
        cache_dir=options.cache_dir, agnostic_nms=options.agnostic_nms,
    )


def _images_of(source, channels):
    """(RGB uint8 image, path or None) of each image of ``source`` (see ``Detector.predict``)."""
    if isinstance(source, (list, tuple)):
        for item in source:
            yield from _images_of(item, channels)
        return
    if isinstance(source, np.ndarray):
        yield _array_image(source, channels), None
        return
    if hasattr(source, "mode") and hasattr(source, "convert"):  # a PIL image
        yield to_rgb(source), None
        return
    path = Path(source)
    if path.is_dir():
        from utils.image import ImageLoadError

        for file in list_images(path):
            try:
                yield load_image(file), str(file)
            except ImageLoadError as exc:
                log.warning("Skipped %s", exc)
        return
    yield load_image(path), str(path)


def _array_image(array, channels):
    if array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (0-255), got {array.dtype}; convert it with "
                         "np.clip(a, 0, 255).astype(np.uint8)")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"an image array must be (H, W, 3) or (H, W) grey, got shape {array.shape}")
    rgb = array[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if channels == "bgr" else rgb)
