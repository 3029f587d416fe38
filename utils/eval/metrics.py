"""Detection metrics in one import: the VOC and COCO metrics and their text tables.

The code lives in ``structures`` (the per-image ground truth and detections),
``voc_metric``, ``coco_metric`` and ``tables``; this module gathers their public
names for callers that want all of them.
"""

from utils.eval.coco_metric import COCO_STAT_NAMES, coco_datasets, evaluate_coco
from utils.eval.structures import ImageDetections, ImageGroundTruth
from utils.eval.tables import format_coco_summary, format_voc_table, json_ready
from utils.eval.voc_metric import average_precision, evaluate_voc

__all__ = [
    "COCO_STAT_NAMES",
    "ImageDetections",
    "ImageGroundTruth",
    "average_precision",
    "coco_datasets",
    "evaluate_coco",
    "evaluate_voc",
    "format_coco_summary",
    "format_voc_table",
    "json_ready",
]
