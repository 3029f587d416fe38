"""Fakes shared by the video, tracking and slicing tests: detections built by hand,
a detector that finds coloured squares, and videos of moving squares."""

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ["red", "blue"]


@dataclass
class Boxes:
    """Detections of one image, as a predictor returns them."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self):
        return len(self.scores)


def detections(*objects, score=0.9):
    """Boxes of (x1, y1, x2, y2, class) objects, each with ``score``."""
    boxes = np.array([o[:4] for o in objects], np.float32).reshape(-1, 4)
    return Boxes(boxes, np.full(len(objects), score, np.float32), np.array([o[4] for o in objects], np.int32))


class SquareFinder:
    """A fake predictor: one box around the red pixels and one around the blue ones.

    Args:
        delay: function() -> seconds to sleep per image (a detector of uneven speed).
    """

    class_names = CLASSES

    def __init__(self, delay=None):
        self.delay = delay
        self.calls = []

    def predict_batch(self, images, timings=None):
        import time

        self.calls.append(len(images))
        results = []
        for image in images:
            if self.delay is not None:
                time.sleep(self.delay())
            red, green, blue = (image[..., c].astype(int) for c in range(3))
            objects = []
            for cls, mask in enumerate(((red > 150) & (green < 100) & (blue < 100),
                                        (blue > 150) & (green < 100) & (red < 100))):
                ys, xs = np.nonzero(mask)
                if len(xs) > 20:
                    objects.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, cls))
            results.append(detections(*objects))
        return results


def write_squares_video(path, frames=24, size=(200, 120), fps=10.0):
    """A red square moving right in the upper half and a blue one moving left in the
    lower half; frame i is grey level 40 + 8 i elsewhere (its number, readable after
    lossy encoding)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), frame_level(i), np.uint8)
        cv2.rectangle(frame, (5 + 6 * i, 20), (29 + 6 * i, 44), (0, 0, 255), -1)
        cv2.rectangle(frame, (170 - 6 * i, 70), (194 - 6 * i, 94), (255, 0, 0), -1)
        writer.write(frame)
    writer.release()
    return path


def frame_level(index):
    """The grey level of frame ``index`` of ``write_squares_video``."""
    return 40 + 8 * index


def read_frames(path):
    """Every frame OpenCV can read from a video file (BGR)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames
