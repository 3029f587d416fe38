"""The TensorFlow function every export format is made from, and its frozen form.

The function takes one input, ``images``: uint8 (B, S, S, 3) RGB, letterboxed as
``utils.image.letterbox`` does. What it returns depends on the NMS placement (see
``utils.predict.runtimes``): "graph" returns the detections and the raw heads,
"host" the decoded candidates before NMS and the raw heads, "none" the raw heads.
"""

import tensorflow as tf

from utils.decode import YoloDecoder
from utils.predict.predictor import RAW_OUTPUTS, detection_outputs
from utils.predict.runtimes import INPUT_NAME

NMS_PLACEMENTS = ("graph", "host", "none")


def export_function(model, input_size, anchors, conf, nms_iou, max_boxes, nms="graph"):
    """Builds the function to export.

    Args:
        model: the YoloV3 model.
        input_size: side S of the input.
        anchors: (9, 2) anchors in input pixels.
        conf: score threshold of the NMS.
        nms_iou: IoU threshold of the NMS.
        max_boxes: boxes kept per class.
        nms: "graph", "host" or "none" (see the module docstring).

    Returns:
        a ``tf.function`` with one input signature, uint8 (None, S, S, 3) named
        ``images``, returning a dict of named outputs.
    """
    if nms not in NMS_PLACEMENTS:
        raise ValueError(f"nms must be one of {NMS_PLACEMENTS}, got {nms!r}")
    decoder = YoloDecoder(anchors, model.num_classes, input_size, conf=conf, nms_iou=nms_iou, max_boxes=max_boxes,
                          box_coding=model.box_coding)
    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.uint8, name=INPUT_NAME)

    def detect(images):
        if nms == "graph":
            return detection_outputs(model, decoder, images)
        outputs = detection_outputs(model, decoder, images, raw=True)
        if nms == "host":
            boxes, scores = decoder.decode_input_boxes([outputs[name] for name in RAW_OUTPUTS])
            outputs.update(boxes=boxes, scores=scores)
        return outputs

    return tf.function(detect, input_signature=[spec])


def _freeze(function):
    """(frozen ConcreteFunction, output names in its order) of an export function.

    Keras keeps some of the backbone's constants (the input normalization's mean
    and variance) as captured tensors; a converter would turn each capture into one
    more graph input, so all captures are folded, leaving the image as the one input.
    """
    from utils.keras_compat import freeze_concrete_function

    concrete = function.get_concrete_function()
    frozen = freeze_concrete_function(concrete)
    if len(frozen.inputs) != 1:
        raise RuntimeError(f"the frozen graph has {len(frozen.inputs)} inputs; expected the image alone")
    # Dicts flatten in sorted key order, as the frozen function lists its outputs.
    return frozen, sorted(concrete.structured_outputs)


def frozen_graph(function):
    """The function's graph with every weight folded into a constant.

    Args:
        function: a ``tf.function`` from ``export_function``.

    Returns:
        (graph_def, input_name, outputs): the GraphDef, the input tensor's name
        ("images:0") and a dict from output name to tensor name in the GraphDef.
    """
    frozen, names = _freeze(function)
    outputs = {name: tensor.name for name, tensor in zip(names, frozen.outputs)}
    return frozen.graph.as_graph_def(), frozen.inputs[0].name, outputs


def frozen_function(function):
    """The function with every weight folded into a constant, as a ``tf.function``.

    It has the same input signature and named outputs, and holds no variables (the
    TFLite converter needs a graph in this form).
    """
    frozen, names = _freeze(function)
    spec = function.input_signature[0]

    def detect(images):
        return dict(zip(names, frozen(images)))

    return tf.function(detect, input_signature=[spec])
