"""Heatmap mode: saves the objectness heat map of each image, and with ``levels`` one
map per output level (``run_heatmap``)."""

import logging

import numpy as np

from utils.config import STRIDES
from utils.predict.job import (
    finish_images,
    image_loop,
    image_paths,
)
from utils.predict.sources import (
    save_image,
    unique_stems,
)
from utils.predict.visualize import (
    blend_heatmap,
    heat_to_image,
    objectness_map,
)

log = logging.getLogger(__name__)


class _Heatmaps:
    """Heatmap mode's handler for a batch of images: saves each one's objectness map."""

    def __init__(self, predictor, out, stems, single, levels):
        self.predictor, self.out, self.stems, self.single, self.levels = predictor, out, stems, single, levels
        self.processed = 0

    def __call__(self, loaded):
        predictor = self.predictor
        raw = predictor.raw_outputs([image for _, image in loaded])
        for i, (path, image) in enumerate(loaded):
            maps = [heat_to_image(objectness_map(level[i], predictor.num_classes), image.shape[:2],
                                  predictor.input_size, letterboxed=predictor.letterbox) for level in raw]
            heat = np.max(maps, axis=0)
            stem = self.stems[path]
            target = save_image(self.out / f"{stem}_heatmap.png", blend_heatmap(image, heat))
            if self.levels:
                for stride, level_map in zip(STRIDES, maps):
                    save_image(self.out / f"{stem}_heatmap_s{stride}.png", blend_heatmap(image, level_map))
            self.processed += 1
            if self.single:
                print(f"{path.name}: objectness max {heat.max():.3f}, mean {heat.mean():.3f} -> {target}")
        return True


def run_heatmap(predictor, source, out, *, batch_size=1, levels=False):
    """Heatmap mode on an image or a folder.

    Saves ``<out>/<stem>_heatmap.png`` per image: the objectness (max over the anchors
    of sigmoid(objectness), per cell of each output level, the levels combined by
    their max) mapped back onto the original image and blended with a colour map.
    Unreadable files of a folder are handled as in predict mode.

    Args:
        predictor: the ``utils.predict.predictor.Predictor`` to run.
        source: an image or a folder Source.
        out: the run folder (existing) to write into.
        batch_size: images per network call.
        levels: also save one map per output level, ``<stem>_heatmap_s<stride>.png``.

    Returns:
        ``EXIT_OK``; ``EXIT_NOTHING_READ`` if files were skipped and none was read;
        ``EXIT_INTERRUPTED`` after Ctrl-C (outputs written so far are kept).
    """
    paths = image_paths(source)
    single = source.kind == "image"
    handler = _Heatmaps(predictor, out, unique_stems(paths), single, levels)
    end = image_loop(source, paths, batch_size, handler)
    return finish_images(out, single, handler.processed, end)
