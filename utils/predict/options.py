"""How a detector is opened and run: predict.py's model options as one object.

``PredictOptions`` is what ``utils.api.Detector`` takes; predict.py fills it from
its command line and get_map.py from its evaluation settings.
"""

from dataclasses import dataclass

from utils.config import DEFAULT_MAX_BOXES, DEFAULT_NMS_IOU
from utils.predict.slicing import SliceOptions


@dataclass
class PredictOptions:
    """The settings of a detector.

    Attributes:
        runtime: what runs a checkpoint: a name of ``utils.config.RUNTIMES``
            ("auto": the checked, cached export to the fastest runtime of this CPU).
            An export runs on its own runtime.
        conf: score threshold; None: the model's best-F1 confidence where an
            evaluation recorded one beside it, else ``utils.config.DEFAULT_CONF``.
        nms_iou: NMS IoU threshold.
        max_boxes: boxes kept per class.
        input_size: network input side (None: the model's).
        classes: a class names file overriding the model's (same count).
        anchors: an anchors file overriding the model's.
        letterbox: letterbox (True) or stretch (False) the images to the input.
        agnostic_nms: one NMS over all classes (True) or one per class (False); None:
            an export's own setting, ``utils.config.DEFAULT_AGNOSTIC_NMS`` for a checkpoint.
        evaluation: float32 on every runtime, so that a mAP is the Keras model's.
        slice: SliceOptions to run on tiles of each image, or None.
        cache_dir: where a checkpoint's exports are cached (None: beside it, else the
            user's cache folder).
    """

    runtime: str = "auto"
    conf: float | None = None
    nms_iou: float = DEFAULT_NMS_IOU
    max_boxes: int = DEFAULT_MAX_BOXES
    input_size: int | None = None
    classes: str | None = None
    anchors: str | None = None
    letterbox: bool = True
    agnostic_nms: bool | None = None
    evaluation: bool = False
    slice: SliceOptions | None = None
    cache_dir: str | None = None
