"""Predict mode on images: an image file or a folder, in batches, each image drawn and
saved with its optional label file and crops (``run_predict_images``)."""

import logging

from utils.predict.job import (
    PredictionOutputs,
    finish_images,
    format_counts,
    image_loop,
    image_paths,
    print_detections,
)
from utils.predict.sources import (
    image_output_name,
    save_image,
    unique_stems,
)
from utils.predict.visualize import (
    draw_detections,
)

log = logging.getLogger(__name__)


class _PredictImages:
    """Predict mode's handler for a batch of images: draws, saves and shows each one."""

    def __init__(self, predictor, viewer, stems, single, outputs, *, count):
        self.predictor, self.viewer, self.stems, self.single = predictor, viewer, stems, single
        self.outputs, self.count = outputs, count
        self.processed = 0

    def __call__(self, loaded):
        names = self.predictor.class_names
        detections = self.predictor.predict_batch([image for _, image in loaded])
        for (path, image), det in zip(loaded, detections):
            annotated = draw_detections(image, det, names, counts=self.count)
            stem = self.stems[path]
            save_image(self.outputs.out / image_output_name(path, stem), annotated)
            counts = self.outputs.save(stem, image, det)
            self.processed += 1
            if self.single:
                print_detections(path.name, image, det, names)
                if self.count:
                    print(f"counts: {format_counts(counts)}")
            if not self.viewer.show(annotated, wait_ms=0):
                return False
        return True


def run_predict_images(predictor, source, out, viewer, *, batch_size=1, save_txt=False, crop=False, count=False):
    """Predict mode on an image or a folder.

    Saves each annotated image under ``out`` (see ``utils.predict.sources`` for the names).
    Files of a folder that cannot be read are reported, skipped and listed in
    ``<out>/skipped.txt``. A single image has its detections printed; a folder gets
    a progress bar and a summary.

    Args:
        predictor: the ``utils.predict.predictor.Predictor`` to run.
        source: an image or a folder Source.
        out: the run folder (existing) to write into.
        viewer: shows each annotated image; its ``show`` returning False stops the run.
        batch_size: images per network call.
        save_txt: also write ``<out>/labels/<stem>.txt``.
        crop: also save each detected object under ``<out>/crops/<class>/``.
        count: draw per-class counts on the images and print them (totals for a folder).

    Returns:
        ``EXIT_OK``; ``EXIT_NOTHING_READ`` if files were skipped and none was read;
        ``EXIT_INTERRUPTED`` after Ctrl-C (outputs written so far are kept).
    """
    paths = image_paths(source)
    single = source.kind == "image"
    outputs = PredictionOutputs(predictor, out, save_txt, crop)
    handler = _PredictImages(predictor, viewer, unique_stems(paths), single, outputs, count=count)
    end = image_loop(source, paths, batch_size, handler, close=(viewer.close,))
    totals = None
    if count:
        in_class_order = {name: outputs.totals[name] for name in predictor.class_names if outputs.totals[name]}
        totals = f"Per-class totals: {format_counts(in_class_order)}"
    return finish_images(out, single, handler.processed, end, totals)
