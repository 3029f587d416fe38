"""EfficientNet-YOLOv3 networks: backbones, the YOLOv3 neck and heads, and the loss."""
