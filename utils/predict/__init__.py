"""Prediction stage: from a trained model and an input to drawn detections.

``predictor`` runs preprocessing, the network and the in-graph decoder with NMS as
one compiled function, and holds what every runtime shares (letterboxing, the map
back to the image); ``runtimes`` runs models written by ``export.py`` (ONNX
Runtime, LiteRT, TensorFlow SavedModel, OpenVINO) behind the same interface;
``sources`` yields frames from images, folders, videos and webcams; ``visualize``
draws boxes, labels, counts, track IDs and heat maps; ``tracking`` follows objects
across frames and counts line crossings; ``slicing`` runs the detector on
overlapping tiles; ``pipeline`` overlaps decoding, inference and drawing in
threads; ``job`` runs the modes of ``predict.py``. Imports the shared modules of ``utils``, ``utils.data`` and
``utils.eval`` (to write detections in the interchange format), never
``utils.export`` or ``utils.train``.
"""
