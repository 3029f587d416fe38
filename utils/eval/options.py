"""What an evaluation is asked to do: the options of get_map.py as one object.

``EvalOptions`` is what ``utils.eval.job.run`` reads; get_map.py fills it from its
command line, and ``utils.api.Detector.evaluate`` from its arguments. Its defaults are
get_map.py's.
"""

from dataclasses import dataclass, field

from utils.config import (
    DEFAULT_MAX_BOXES,
    EVAL_CONF,
    EVAL_MATCH_IOU,
    EVAL_NMS_IOU,
    EVAL_SCORE_THRESHOLD,
)
from utils.eval.confusion import CONFUSION_CONF
from utils.eval.evaluator import DEFAULT_BATCH_SIZE


@dataclass
class EvalOptions:
    """The options of one evaluation (get_map.py's, by the same names).

    Attributes:
        mode: a name of ``utils.eval.job.MODES``.
        out: the output folder.
        model: the checkpoint or export (the modes that predict need one).
        runtime: what runs a checkpoint (a name of ``utils.config.RUNTIMES``).
        annotations: the dataset file or folder (None: the VOC split under ``voc_root``).
        split: the VOC split, or the split of a YOLO data YAML.
        images: the images folder of a COCO file with relative names.
        voc_root, year: the VOCdevkit folder and year, without ``annotations``.
        classes: a class names file (None: the model's, the dataset's or the default).
        classes_from_files: the score and coco modes take the names in the files.
        conf, nms_iou, max_boxes, agnostic_nms, input_size: the detector's settings.
        iou: the IoU a detection needs to match an object (VOC metrics).
        score_threshold: where precision, recall and F1 are reported.
        metric: "voc", "voc07" or "coco".
        batch_size: images per prediction batch.
        problems_shown: problems printed (all go to problems.txt).
        plots: draw the VOC plots.
        confusion_conf, confusion_iou: the confusion matrix's and the error gallery's.
        save_errors: images with the most errors drawn (mode all).
        slice: a ``utils.predict.slicing.SliceOptions``-like object, or None; read by
            whoever opens the model, not by this stage.
    """

    mode: str = "all"
    out: str = "map_out"
    model: str | None = None
    runtime: str = "auto"
    annotations: str | None = None
    split: str = "test"
    images: str | None = None
    voc_root: str = "VOCdevkit"
    year: str = "2007"
    classes: str | None = None
    classes_from_files: bool = False
    conf: float = EVAL_CONF
    nms_iou: float = EVAL_NMS_IOU
    max_boxes: int = DEFAULT_MAX_BOXES
    agnostic_nms: bool = False
    input_size: int | None = None
    iou: float = EVAL_MATCH_IOU
    score_threshold: float = EVAL_SCORE_THRESHOLD
    metric: str = "voc"
    batch_size: int = DEFAULT_BATCH_SIZE
    problems_shown: int = 20
    plots: bool = True
    confusion_conf: float = CONFUSION_CONF
    confusion_iou: float = EVAL_MATCH_IOU
    save_errors: int = 0
    slice: object = field(default=None, repr=False)
