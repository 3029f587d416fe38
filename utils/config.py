"""The project's constants and defaults, defined once and imported everywhere else."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DATA = ROOT / "model_data"
DEFAULT_ANCHORS = MODEL_DATA / "yolo_anchors.txt"
DEFAULT_CLASSES = MODEL_DATA / "voc_classes.txt"

# Output order of the detector's heads: stride 32, then 16, then 8.
STRIDES = (32, 16, 8)
# Which of the nine anchors (sorted small to large) each head uses, in STRIDES order.
ANCHOR_MASK = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
NUM_ANCHORS_PER_LEVEL = 3
# How ground-truth boxes become training targets, and how the heads encode a box:
# "yolov3" gives each box to its best anchor in the cell of its centre and decodes
# sigmoid(t) + cell, exp(t) * anchor; "yolov5" gives it to every anchor within
# ANCHOR_T of its shape, in its own cell and the two nearest neighbours, and decodes
# 2 sigmoid(t) - 0.5 + cell, (2 sigmoid(t))^2 * anchor. The box coding is a property
# of the model; a model saved without one decodes as "yolov3".
ASSIGNERS = ("yolov3", "yolov5")
BOX_CODINGS = ASSIGNERS
DEFAULT_BOX_CODING = "yolov3"
# Largest width or height ratio between a box and an anchor that still match (both ways).
ANCHOR_T = 4.0
# Below this best possible recall of the anchors, training warns (YOLOv5's AutoAnchor threshold).
ANCHOR_MIN_BPR = 0.98
# Every input side must be a multiple of the coarsest stride.
INPUT_MULTIPLE = 32

DEFAULT_INPUT_SIZE = 416
# File names a training checkpoint has (anything else is an export).
CHECKPOINT_SUFFIXES = (".keras", ".weights.h5")
# The runtimes that run an exported checkpoint, with the export format of each, and the
# --runtime choices of predict.py and get_map.py (kept here, light, so that building
# their parsers loads no framework).
RUNTIME_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "tflite": "tflite"}
RUNTIMES = ("auto", "tf", *RUNTIME_FORMATS)
DEFAULT_BACKBONE = "efficientnet-b0"

# Prediction defaults (reference design).
DEFAULT_CONF = 0.5
DEFAULT_NMS_IOU = 0.3
DEFAULT_MAX_BOXES = 100
# predict.py runs one NMS over all classes: where similar classes compete, one box per
# object instead of a stack of boxes of different classes (evaluation stays per class).
DEFAULT_AGNOSTIC_NMS = True

# Evaluation defaults (reference design).
EVAL_CONF = 0.001
EVAL_NMS_IOU = 0.5
EVAL_MATCH_IOU = 0.5
EVAL_SCORE_THRESHOLD = 0.5

# Loss constants (reference design), in STRIDES order.
LEVEL_BALANCE = (0.4, 1.0, 4.0)
BOX_RATIO = 0.05
OBJ_RATIO = 5.0
CLS_RATIO = 1.0
# How the class term is normalised (nets.loss.YoloLoss): "reference" scales the gain by
# C / 80 (the reference design and YOLOv5); "mean" keeps it as tuned at 80 classes for
# any C; "sum" sums the BCE over the classes instead of averaging it (as Ultralytics).
CLS_NORMS = ("reference", "mean", "sum")
IGNORE_THRESHOLD = 0.5

# Neck convolutions (reference design).
CONV_INIT_STDDEV = 0.02
LEAKY_SLOPE = 0.1
# Momentum of the BatchNormalization moving statistics (backbone and neck).
BN_MOMENTUM = 0.97
DEFAULT_WEIGHT_DECAY = 5e-4

# Letterbox / augmentation canvas colour.
PAD_VALUE = 128

# Padding length of the per-image ground-truth box list in training batches.
MAX_GT_BOXES = 100
