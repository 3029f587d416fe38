"""Evaluation stage: predicting images and scoring detections against ground truth.

``evaluator`` is the one evaluation that training, export checks, benchmarks and
``get_map.py`` share: it runs any predictor (Keras or exported, passed in by the
caller) over a list of ``images`` in batches and scores the detections with
``voc_metric`` (all-point and 11-point AP) or ``coco_metric`` (pycocotools), both
taking the per-image ``structures``. ``tables`` formats the results; ``map_files``
reads and writes the interchange text files (``ground-truth/``,
``detection-results/``); ``job`` is get_map.py's evaluation job; ``plots`` draws PR
curves, bar charts and the confusion matrix. Beyond mAP, ``diagnostics`` (for get_map.py and training's best
checkpoint) gives the confidence of best F1 (``curves``), the confusion matrix and
each detection's error (``confusion``), drawn by ``gallery``; ``operating_point``
keeps the best-F1 confidence beside a checkpoint for predict.py.
Imports the shared modules of ``utils`` and ``utils.data`` (annotation lines, VOC
XML), never the prediction or training stages: the model that produces detections
is the caller's business.
"""
