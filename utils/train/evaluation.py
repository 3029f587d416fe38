"""The validation mAP computed during training."""

import logging

from utils.config import EVAL_CONF, EVAL_NMS_IOU

log = logging.getLogger(__name__)


def make_map_evaluator(model, val, class_names, input_size, max_images):
    """Returns a function evaluating ``model`` on the validation set now: its
    ``utils.eval.evaluator.Evaluation`` (``.map`` the mAP@0.5)."""
    from utils.eval.evaluator import Evaluator
    from utils.predict.predictor import Predictor

    subset = val[:max_images] if max_images else val
    predictor = Predictor(model, input_size=input_size, conf=EVAL_CONF, nms_iou=EVAL_NMS_IOU)
    evaluator = Evaluator.from_annotations(subset, class_names, where="the validation set")

    def evaluate():
        evaluation = evaluator(predictor)
        for problem in evaluation.problems:
            log.warning("mAP evaluation: %s", problem)
        return evaluation

    return evaluate
