"""Pictures with known objects and a stand-in detector that finds them, for the
pre-labelling tests."""

from pathlib import Path

import numpy as np
from PIL import Image

from utils.eval.structures import ImageDetections

CLASSES = ["square", "red thing"]


def picture(path, size=(120, 90), white=None, red=None):
    """Writes a grey picture with a white rectangle (class 0) and a red one (class 1),
    each given as (x1, y1, x2, y2) pixels or None; returns the path."""
    image = np.full((size[1], size[0], 3), 90, np.uint8)
    if white is not None:
        x1, y1, x2, y2 = white
        image[y1:y2, x1:x2] = 255
    if red is not None:
        x1, y1, x2, y2 = red
        image[y1:y2, x1:x2] = (230, 20, 20)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


class ColourPredictor:
    """Finds the white rectangle (class 0) and the red one (class 1) of a picture: the box
    around their pixels, so that it follows a mirrored picture. The white one scores
    ``white_score``, the red one ``red_score``; boxes at or under ``conf`` are dropped,
    as a predictor does.

    Args:
        white_score, red_score: the score of each class's box.
        conf: the predictor's threshold.
        lopsided_width: also put a box at the top-left corner, which does not follow
            the flip (a known disagreement with the mirrored picture), on pictures this
            wide.
    """

    def __init__(self, white_score=0.9, red_score=0.9, conf=0.0, lopsided_width=None):
        self.class_names = list(CLASSES)
        self.white_score, self.red_score = white_score, red_score
        self.conf = conf
        self.lopsided_width = lopsided_width
        self.calls = 0

    def predict_batch(self, images):
        out = []
        for image in images:
            self.calls += 1
            boxes, scores, classes = [], [], []
            masks = ((image.min(axis=2) > 200, self.white_score, 0),
                     ((image[..., 0] > 200) & (image[..., 1] < 80), self.red_score, 1))
            for mask, score, cls in masks:
                ys, xs = np.nonzero(mask)
                if len(xs) and score > self.conf:
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    scores.append(score)
                    classes.append(cls)
            if self.lopsided_width is not None and image.shape[1] == self.lopsided_width:
                boxes.append([0, 0, 20, 20])
                scores.append(0.8)
                classes.append(0)
            out.append(ImageDetections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                                       np.asarray(classes, np.int64)))
        return out
