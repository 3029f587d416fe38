"""Everything around the network, grouped by stage.

The stage packages, from the bottom up (each may import only the ones before it):

* ``utils.data``: annotation lines, VOC conversion, anchors (k-means), the tf.data
  training pipeline with augmentation and target encoding.
* ``utils.eval``: mAP (VOC all-point, VOC07 11-point, COCO), the interchange files
  of ground truth and detections, and the evaluation plots.
* ``utils.predict``: the in-graph predictor, input sources (images, folders, video,
  webcam), drawing, the prediction jobs behind ``predict.py``, and the runtimes
  that run exported models (ONNX Runtime, LiteRT, TensorFlow, OpenVINO).
* ``utils.export``: writing a trained model as ONNX, TFLite, SavedModel or
  OpenVINO IR, int8 quantization, and the checks of an export against the model.
* ``utils.label``: pre-labels written as annotation sets (VOC, COCO, YOLO, Label
  Studio, CVAT) and the ranking of the images a person should review first.
* ``utils.serve``: the HTTP service behind ``serve.py``.
* ``utils.train``: the training engine, its callbacks and learning-rate schedules.
* ``utils.api``: the Python API (``Detector``, ``train``) over every stage below.
* ``utils.demo``: the synthetic shapes dataset and the ``make demo`` driver, which
  runs the scripts as a user would.

The modules at this level are shared by every stage and import no stage package:
``config`` (constants and defaults), ``boxes`` (box formats and IoU), ``decode``
(head outputs to boxes, used by the loss and by prediction), ``image`` (reading and
letterboxing), ``checkpoint`` (saving and loading models), ``model_data`` (class and
anchor files), ``model_stats`` (parameters, FLOPs, latency), ``cli`` (argument
types), ``run_dir`` (numbered output folders, atomic writes), ``keras_compat``
(every use of private Keras and TensorFlow API, with the versions it was checked
against) and ``weights`` (weight-file readers, conversions and their cache; it never
imports ``nets``). ``nets`` (the networks and the loss) may import these shared
modules but no stage package.
"""
