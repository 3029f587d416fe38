"""Predicting a list of images with any detector, then scoring the detections.

``Evaluator`` is the one evaluation that training (its mAP after each period),
export verification, the benchmarks and ``get_map.py`` share. The detector is
anything with ``class_names`` and ``predict_batch``, the interface of
``utils.predict.predictor.BasePredictor``: the Keras ``Predictor`` or an exported
model opened by ``utils.predict.runtimes.open_model_file``. This stage never opens a
model itself; the caller passes the predictor in.

The parts serve alone too: ``predict_images`` runs a predictor over images in
batches, skipping and reporting the ones that cannot be read, and
``score_detections`` computes the VOC or COCO metric of the detections.
"""

from dataclasses import dataclass, field

from utils.config import EVAL_MATCH_IOU, EVAL_SCORE_THRESHOLD
from utils.eval.coco_metric import evaluate_coco
from utils.eval.images import images_from_annotation_file, images_from_annotations, read_pixels
from utils.eval.structures import ImageDetections
from utils.eval.voc_metric import evaluate_voc

#: The metrics: VOC all-point AP (VOC2010+), VOC2007 11-point AP, pycocotools' COCO metrics.
METRICS = ("voc", "voc07", "coco")
DEFAULT_BATCH_SIZE = 8


def predict_images(predictor, images, batch_size=DEFAULT_BATCH_SIZE, problems=None, progress=False):
    """Runs a predictor over images in batches and yields each image with its detections.

    Args:
        predictor: object with ``predict_batch(list of RGB uint8 (H, W, 3) arrays)``
            returning one object per image with ``boxes`` (N, 4) xyxy pixels of the
            image, ``scores`` (N,) and ``classes`` int (N,).
        images: list of ``utils.eval.images.EvalImage``; each is read from its
            ``path`` unless its ``pixels`` are given.
        batch_size: readable images per ``predict_batch`` call.
        problems: list receiving a message per image that cannot be read.
        progress: show a progress bar over the images.

    Yields:
        (EvalImage, detections) in the order of ``images``, for every image read; the
        others are skipped.

    Raises:
        ValueError: ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    problems = [] if problems is None else problems
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc="detections", unit="img")
    batch = []
    try:
        for image in images:
            pixels = read_pixels(image, problems)
            if pixels is not None:
                batch.append((image, pixels))
            if len(batch) >= batch_size:
                yield from _predict_batch(predictor, batch)
            if bar is not None:
                bar.update(1)
        if batch:
            yield from _predict_batch(predictor, batch)
    finally:
        if bar is not None:
            bar.close()


def _predict_batch(predictor, batch):
    """Predicts the (image, pixels) pairs of ``batch``, empties it, and returns (image, detections) pairs."""
    results = predictor.predict_batch([pixels for _, pixels in batch])
    done = [image for image, _ in batch]
    batch.clear()
    return list(zip(done, results))


def score_detections(
    ground_truth,
    detections,
    class_names,
    metric="voc",
    iou_threshold=EVAL_MATCH_IOU,
    score_threshold=EVAL_SCORE_THRESHOLD,
):
    """The VOC or COCO metric of per-image detections.

    Args:
        ground_truth: per-image ground truth (see ``utils.eval.structures``).
        detections: per-image detections (see ``utils.eval.structures``).
        class_names: list of class names; class ids index it.
        metric: one of ``METRICS``.
        iou_threshold: VOC metrics: minimum IoU for a match.
        score_threshold: VOC metrics: score at which precision, recall and F1 are reported.

    Returns:
        the dict of ``utils.eval.voc_metric.evaluate_voc`` or
        ``utils.eval.coco_metric.evaluate_coco``.

    Raises:
        ValueError: an unknown metric, or inputs the metric rejects.
    """
    if metric == "coco":
        return evaluate_coco(ground_truth, detections, class_names)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return evaluate_voc(
        ground_truth,
        detections,
        class_names,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        use_07_metric=metric == "voc07",
    )


@dataclass
class Evaluation:
    """What one evaluation of a predictor produced.

    Attributes:
        result: the metric's dict (``score_detections``).
        ground_truth: ``{image_id: ImageGroundTruth}`` of the images predicted.
        detections: ``{image_id: ImageDetections}`` of the same images, xyxy pixels.
        problems: a message per thing skipped: images that could not be read, and
            what was skipped when the images were listed.
    """

    result: dict
    ground_truth: dict = field(default_factory=dict, repr=False)
    detections: dict = field(default_factory=dict, repr=False)
    problems: list = field(default_factory=list)

    @property
    def map(self):
        """The headline number: the VOC mAP, or COCO's AP@[.5:.95] (NaN or -1 without ground truth)."""
        if self.result["metric"] == "coco":
            return self.result["stats"]["AP"]
        return self.result["map"]


class Evaluator:
    """Predicts a fixed list of images with any predictor and scores the detections.

    Images that cannot be read are skipped and reported, and the metric covers the
    images predicted. Calling the evaluator again (another predictor, or the same
    model after more training) reads the images again.

    Args:
        images: list of ``utils.eval.images.EvalImage``.
        class_names: list of class names the ground truth's class ids index, or None
            for the predictor's.
        metric: one of ``METRICS``.
        iou_threshold: VOC metrics: minimum IoU for a match.
        score_threshold: VOC metrics: score at which precision, recall and F1 are reported.
        batch_size: images per ``predict_batch`` call.
        progress: show a progress bar while predicting.
        problems: messages about what was skipped when the images were listed; every
            Evaluation repeats them.

    Example:
        >>> evaluator = Evaluator.from_annotation_file("2007_test.txt", predictor.class_names)
        >>> evaluator(predictor).map
    """

    def __init__(
        self,
        images,
        class_names=None,
        metric="voc",
        iou_threshold=EVAL_MATCH_IOU,
        score_threshold=EVAL_SCORE_THRESHOLD,
        batch_size=DEFAULT_BATCH_SIZE,
        progress=False,
        problems=(),
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.images = list(images)
        self.class_names = list(class_names) if class_names is not None else None
        self.metric = metric
        self.iou_threshold = iou_threshold
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.progress = progress
        self.problems = list(problems)

    @classmethod
    def from_annotations(cls, annotations, class_names=None, where="the evaluation set", **options):
        """An evaluator of annotated images, each named by its path.

        Args:
            annotations: list of ``utils.data.annotation.Annotation``.
            class_names: as for ``Evaluator``.
            where: what the annotations come from, named in the messages.
            **options: the other ``Evaluator`` arguments.
        """
        images, problems = images_from_annotations(annotations, where)
        return cls(images, class_names, problems=problems, **options)

    @classmethod
    def from_annotation_file(cls, path, class_names, **options):
        """An evaluator of the images of an annotation-line file; boxes of other class ids are skipped.

        Args:
            path: the annotation file (``utils.data.annotation``).
            class_names: the class names the file's class ids index.
            **options: the other ``Evaluator`` arguments.

        Raises:
            FileNotFoundError: the file does not exist.
        """
        images, problems = images_from_annotation_file(path, class_names)
        return cls(images, class_names, problems=problems, **options)

    def __call__(self, predictor):
        """Predicts every image with ``predictor`` and scores the detections.

        Args:
            predictor: a ``utils.predict.predictor.BasePredictor`` or any object with
                ``class_names`` and ``predict_batch`` (see ``predict_images``); it
                should use the evaluation settings (``utils.config.EVAL_CONF``,
                ``EVAL_NMS_IOU``).

        Returns:
            an Evaluation.
        """
        problems = list(self.problems)
        ground_truth, detections = {}, {}
        for image, found in predict_images(predictor, self.images, self.batch_size, problems, self.progress):
            ground_truth[image.image_id] = image.ground_truth
            detections[image.image_id] = ImageDetections(found.boxes, found.scores, found.classes)
        class_names = self.class_names if self.class_names is not None else predictor.class_names
        result = score_detections(
            ground_truth, detections, class_names, self.metric, self.iou_threshold, self.score_threshold
        )
        return Evaluation(result, ground_truth, detections, problems)
