"""Data stage: from a user's dataset to training batches.

Annotation lines (``annotation``) are the one format every other stage reads;
``voc`` converts VOC XML into them, ``kmeans`` fits anchors to their boxes, and
``dataset`` turns them into a tf.data pipeline that decodes, augments
(``augment``) and encodes YOLO targets (``targets``). Imports only the shared
modules of ``utils``.
"""
