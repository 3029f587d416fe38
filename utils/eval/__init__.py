"""Evaluation stage: scoring detections against ground truth.

``metrics`` computes VOC (all-point and 11-point) and COCO mAP from in-memory
ground truth and detections; ``map_files`` reads and writes the interchange text
files (``ground-truth/``, ``detection-results/``) and results JSON; ``plots`` draws
PR curves and bar charts. Imports the shared modules of ``utils`` and ``utils.data``
(annotation lines, VOC XML), never the prediction or training stages: the model
that produces detections is the caller's business.
"""
