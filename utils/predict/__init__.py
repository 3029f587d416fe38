"""Prediction stage: from a trained model and an input to drawn detections.

``predictor`` runs preprocessing, the network and the in-graph decoder with NMS as
one compiled function; ``sources`` yields frames from images, folders, videos and
webcams; ``visualize`` draws boxes, labels, counts and heat maps; ``job`` runs the
modes of ``predict.py``. Imports the shared modules of ``utils``, ``utils.data``
and ``utils.eval`` (to write detections in the interchange format), never
``utils.train``.
"""
