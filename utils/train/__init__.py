"""Training stage: the engine behind ``train.py``.

``trainer`` validates the configuration, builds the model, the data pipelines and
the optimizer and runs the epochs; ``callbacks`` write checkpoints, history, plots
and validation mAP, with the evaluation outputs of the best checkpoint, and make a run
resumable; ``previews`` draws the first batches as the network receives them and the
box statistics; ``lr_schedule`` holds the warm-up, cosine and step schedules;
``cluster`` makes one run span several machines. The top stage: it may import every
other stage (the data pipeline, the evaluator and the predictor used for validation mAP).
"""
