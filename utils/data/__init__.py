"""Data stage: from a user's dataset to training batches.

Annotations (``annotation``: one image, its boxes and classes) are what every other
stage reads. Datasets as users hold them are read into annotations by ``sources``,
which detects the format: annotation-line files, COCO JSON (``coco``), YOLO txt
(``yolo_txt``) and Pascal VOC (``voc``, converted by ``voc_convert``), each
recording what it skips or changes in a ``report``; ``convert`` writes them out in
another format, and ``split`` makes the seeded random splits. ``box_stats``
gathers the statistics of the boxes, ``check`` checks a dataset before training
(``check_dataset.py``), ``kmeans`` fits anchors to the boxes and measures their fit,
and ``dataset`` turns annotations into
a tf.data pipeline that decodes, augments (``augment``) and encodes YOLO targets
(``targets``). Imports only the shared modules of ``utils``.
"""
