"""Export stage: a trained detector written as an artifact other runtimes can run.

``graph`` builds the one TensorFlow function every format is made from (uint8
images in; the network, decoding and NMS inside, as far as the format can hold
them) and freezes its weights into constants, so the graph has exactly one input.
``formats`` writes it as ONNX (tf2onnx), TFLite, a SavedModel or OpenVINO IR, with
the class names, input size, anchors and NMS settings as metadata; ``quantize``
makes int8 models by static post-training quantization calibrated on the images of
an annotation file (ONNX Runtime's quantizer, NNCF for OpenVINO); ``verify``
compares an artifact's detections and mAP with the Keras model's; ``exporter`` runs
all of it for ``export.py``; ``auto_runtime`` runs a checkpoint on the runtime
``--runtime`` of predict.py and get_map.py asks for, exporting it once into a cache
and checking it against the Keras model. The runtimes that load artifacts for
prediction live in ``utils.predict.runtimes``. Imports the shared
modules of ``utils``, ``utils.data``, ``utils.eval`` and ``utils.predict``, never
``utils.train``.
"""
