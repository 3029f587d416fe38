"""Checking an export against the Keras model: detections side by side, and mAP.

Detections of two predictors are matched per image and class (greedy by score, to
the nearest box of the class if their IoU is at least 0.5 or no coordinate differs by
more than a pixel); the comparison reports the largest box and score differences of the
matched pairs and the detections only one side found, and which of those a near tie
explains (below). ``check_export`` turns that and the raw heads' difference into a
verdict, with a ``Tolerance`` per inference precision.

A near tie: two sides whose scores differ in the fifth decimal can still keep different
boxes. NMS drops a box that overlaps a better one of its class by more than its IoU
threshold, so a box at nearly that IoU is kept by one side and dropped by the other; and
the per-class box limit cuts the boxes below the last one kept, which moves with any
box kept or dropped above it. A detection one side alone found is explained when the
other side shows such a tie: it kept a box of the class overlapping it by nearly the NMS
IoU (boxes are clipped to the image after NMS, which moves their IoU a little), or it
reached the per-class limit with boxes scoring as high.

The mAP is the one of ``utils.eval.evaluator.Evaluator``, on images read into memory
once and shared by the predictors compared.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from utils.boxes import np_iou
from utils.eval.evaluator import Evaluator
from utils.eval.images import EvalImage, images_from_annotation_file, read_pixels

MATCH_IOU = 0.5
MATCH_PIXELS = 1.0
# How far below the NMS IoU threshold an overlap still counts as a near tie, and how far
# above the last score kept at the box limit a score still counts as cut by it.
NEAR_TIE_IOU = 0.1
NEAR_TIE_SCORE = 1e-3


@dataclass
class Comparison:
    """How two predictors' detections differ over a set of images.

    Attributes:
        images: images compared.
        matched: detection pairs found by both.
        only_reference: detections only the reference found.
        only_other: detections only the other predictor found.
        max_box_diff: largest coordinate difference of a matched pair, pixels.
        max_score_diff: largest score difference of a matched pair.
        unmatched_max_score: highest score among the unmatched detections (0 if none);
            near the threshold, a score difference flips a detection in or out.
        unexplained: unmatched detections that no near tie explains (see the module
            docstring; all of them when ``nms_iou`` and ``max_boxes`` are None).
        unexplained_max_score: highest score among those (0 if none).
        nms_iou: the NMS IoU threshold both sides ran at (None: unknown).
        max_boxes: the boxes per class both sides kept at most (None: unknown).
    """

    images: int = 0
    matched: int = 0
    only_reference: int = 0
    only_other: int = 0
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    unmatched_max_score: float = 0.0
    unexplained: int = 0
    unexplained_max_score: float = 0.0
    nms_iou: float = None
    max_boxes: int = None
    box_diffs: list = field(default_factory=list, repr=False)

    def add(self, reference, other):
        """Adds one image: two Detections (boxes (N, 4) xyxy pixels, scores, classes)."""
        self.images += 1
        used = np.zeros(len(other), bool)
        for i in np.argsort(-reference.scores, kind="stable"):
            candidates = np.flatnonzero((other.classes == reference.classes[i]) & ~used)
            best = None
            if len(candidates):
                # The nearest box of the class; boxes clipped to a sliver at the image
                # border have no area, so a near-identical box also counts as a match.
                distance = np.abs(other.boxes[candidates] - reference.boxes[i]).max(axis=1)
                nearest = int(np.argmin(distance))
                iou = np_iou(reference.boxes[i], other.boxes[candidates[nearest]])
                if iou >= MATCH_IOU or distance[nearest] <= MATCH_PIXELS:
                    best = candidates[nearest]
            if best is None:
                self.only_reference += 1
                self._unmatched(reference, i, other)
                continue
            used[best] = True
            self.matched += 1
            box_diff = float(np.abs(reference.boxes[i] - other.boxes[best]).max())
            self.box_diffs.append(box_diff)
            self.max_box_diff = max(self.max_box_diff, box_diff)
            self.max_score_diff = max(self.max_score_diff, float(abs(reference.scores[i] - other.scores[best])))
        self.only_other += int((~used).sum())
        for j in np.flatnonzero(~used):
            self._unmatched(other, j, reference)

    def _unmatched(self, found, i, missing):
        """Counts detection ``i`` of ``found``, which ``missing`` lacks."""
        score = float(found.scores[i])
        self.unmatched_max_score = max(self.unmatched_max_score, score)
        if not self._near_tie(found.boxes[i], score, found.classes[i], missing):
            self.unexplained += 1
            self.unexplained_max_score = max(self.unexplained_max_score, score)

    def _near_tie(self, box, score, cls, other):
        """Whether ``other`` (Detections) shows a near tie that explains it lacks this box."""
        same = other.classes == cls
        if self.nms_iou is not None and same.any():
            if float(np.max(np_iou(box, other.boxes[same]))) >= self.nms_iou - NEAR_TIE_IOU:
                return True
        if self.max_boxes is not None and int(same.sum()) >= self.max_boxes:
            return score <= float(other.scores[same].min()) + NEAR_TIE_SCORE
        return False

    def summary(self):
        """One line for the console."""
        line = (f"{self.images} images, {self.matched} detections matched: largest box difference "
                f"{self.max_box_diff:.3f} px, largest score difference {self.max_score_diff:.2e}")
        if self.only_reference or self.only_other:
            line += (f"; unmatched: {self.only_reference} only in the Keras model, {self.only_other} only in the "
                     f"export (highest score {self.unmatched_max_score:.3f})")
            if self.unexplained < self.only_reference + self.only_other:
                line += f", {self.only_reference + self.only_other - self.unexplained} of them near ties"
        return line


def compare(reference, other, images, batch_size=1):
    """Runs two predictors on the same images and compares their detections.

    Args:
        reference: the predictor taken as the truth (the Keras model); its
            ``nms_iou`` and ``max_boxes``, where it has them, tell near ties apart.
        other: the predictor checked (an export), at the same settings.
        images: RGB uint8 (H, W, 3) arrays.
        batch_size: images per call.

    Returns:
        a Comparison.
    """
    result = Comparison(nms_iou=getattr(reference, "nms_iou", None), max_boxes=getattr(reference, "max_boxes", None))
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        for a, b in zip(reference.predict_batch(chunk), other.predict_batch(chunk)):
            result.add(a, b)
    return result


def load_eval_set(annotation_path, class_names):
    """The images of an annotation file with their ground truth, read into memory.

    Args:
        annotation_path: annotation-line file (``utils.data.annotation``).
        class_names: the model's class names (boxes of other class ids are skipped).

    Returns:
        (images, ground_truth): lists of RGB arrays and of ImageGroundTruth, in
        file order; unreadable images are left out.
    """
    listed, _ = images_from_annotation_file(annotation_path, class_names)
    images, truth = [], []
    for image in listed:
        pixels = read_pixels(image, problems=[])
        if pixels is not None:
            images.append(pixels)
            truth.append(image.ground_truth)
    return images, truth


def voc_map(predictor, images, ground_truth, batch_size=8):
    """VOC all-point mAP@0.5 of a predictor on images with their ground truth.

    The predictor should use the evaluation settings (conf 0.001, NMS IoU 0.5).

    Args:
        predictor: a ``utils.predict.predictor.BasePredictor`` (Keras or exported).
        images: RGB uint8 (H, W, 3) arrays.
        ground_truth: ImageGroundTruth of each image.
        batch_size: images per call.

    Returns:
        the mAP in [0, 1] (NaN without ground truth).
    """
    pairs = enumerate(zip(images, ground_truth))
    listed = [EvalImage(str(i), None, truth, pixels=pixels) for i, (pixels, truth) in pairs]
    return Evaluator(listed, batch_size=batch_size)(predictor).map


@dataclass(frozen=True)
class Tolerance:
    """How far an export's answers may lie from the Keras model's and still pass.

    Attributes:
        heads: largest raw-head difference, as a fraction of the largest raw-head
            magnitude (at least 1).
        box: largest box difference of a matched pair, pixels of the image.
        score: largest score difference of a matched pair.
        one_sided: whether detections found by one side only may score more than
            ``score`` above the threshold even where no near tie explains them.
            Near-equal scores of overlapping boxes decide which one NMS keeps, and a
            lower precision may choose the other.
    """

    heads: float
    box: float
    score: float
    one_sided: bool = False


# float32 runtimes agree with TensorFlow to ~1e-5 (the tests' limits: 0.5 px, 1e-3).
# bfloat16 keeps 8 bits of mantissa: on the real-photo Lite0 model its heads differed
# by up to 17% of their largest value and scores by 0.04, at the Keras model's mAP.
# Its box error grows with the box (46 px on large boxes scoring 0.001), so matched
# boxes (IoU >= 0.5 already) are not held to a pixel limit; a broken export shows in
# the heads.
TOLERANCES = {"fp32": Tolerance(heads=1e-3, box=0.5, score=1e-3),
              "bf16": Tolerance(heads=0.5, box=math.inf, score=0.15, one_sided=True)}


def head_difference(reference, other, images):
    """(largest difference, largest magnitude) of two predictors' raw heads on ``images``."""
    pairs = list(zip(reference.raw_outputs(images), other.raw_outputs(images)))
    return (max(float(np.abs(a - b).max()) for a, b in pairs), max(float(np.abs(a).max()) for a, _ in pairs))


def check_export(reference, other, images, tolerance, conf):
    """Compares an export with the Keras model and says whether it passes.

    Args:
        reference: the Keras model's predictor.
        other: the export's predictor, at the same settings.
        images: RGB uint8 (H, W, 3) arrays.
        tolerance: a Tolerance (``TOLERANCES`` by precision).
        conf: the score threshold both run at.

    Returns:
        (comparison, problem): the Comparison of the detections and None, or a
        sentence saying what lies outside the tolerance.
    """
    difference, magnitude = head_difference(reference, other, images)
    result = compare(reference, other, images)
    unmatched = result.only_reference + result.only_other
    if difference > tolerance.heads * max(1.0, magnitude):
        return result, (f"raw heads differ by {difference:.3g}, more than {tolerance.heads:g} of their largest value "
                        f"{magnitude:.3g}")
    # A detection scoring within the tolerance of the threshold may fall on either side
    # of it (a lower precision rounds its score); only a clearer one found by one side
    # alone, with none found by both, says that the export sees something else.
    confident = result.unmatched_max_score > conf + tolerance.score
    if unmatched and not result.matched and confident:
        return result, f"none of the {unmatched} detections is found by both"
    if result.max_box_diff > tolerance.box:
        return result, f"boxes differ by {result.max_box_diff:.2f} px, more than {tolerance.box:g}"
    if result.max_score_diff > tolerance.score:
        return result, f"scores differ by {result.max_score_diff:.3g}, more than {tolerance.score:g}"
    if result.unexplained and not tolerance.one_sided and result.unexplained_max_score > conf + tolerance.score:
        return result, (f"{result.unexplained} detections found by one side only and not near a tie, one scoring "
                         f"{result.unexplained_max_score:.3f}")
    return result, None
