"""Data, boxes, decoding, metrics and training utilities for EfficientNet-YOLOv3."""
