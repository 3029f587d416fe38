"""What the Python API returns: the detections of one image (``Result``) and the
metrics of an evaluation (``Metrics``), each with ``to_dict``."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Result:
    """The detections of one image or video frame.

    Attributes:
        image: the picture, RGB uint8 (H, W, 3).
        boxes: float32 (N, 4) xyxy in the image's own pixels.
        scores: float32 (N,) objectness x class probability.
        class_ids: int32 (N,).
        class_names: the model's class names, indexed by class id.
        path: the file the image came from (None for an array or PIL image).
        frame_index: the frame's number in a video, from 1 (None for an image).
        track_ids: int (N,) track IDs from 1, -1 for a box not (yet) a track; None
            when not tracking.
    """

    image: np.ndarray = field(repr=False)
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: list = field(repr=False)
    path: str | None = None
    frame_index: int | None = None
    track_ids: np.ndarray | None = None

    def __len__(self):
        return len(self.scores)

    @property
    def names(self):
        """The class name of each box."""
        return [self.class_names[int(i)] for i in self.class_ids]

    @property
    def classes(self):
        """The class ids, under the name the drawing code reads."""
        return self.class_ids

    def to_dict(self):
        """A JSON-ready dict: the image's size and one entry per box."""
        height, width = self.image.shape[:2]
        detections = []
        for i in range(len(self)):
            entry = {"box": [round(float(v), 2) for v in self.boxes[i]], "score": round(float(self.scores[i]), 5),
                     "class_id": int(self.class_ids[i]), "class_name": self.class_names[int(self.class_ids[i])]}
            if self.track_ids is not None:
                entry["track_id"] = int(self.track_ids[i])
            detections.append(entry)
        out = {"path": self.path, "width": int(width), "height": int(height), "detections": detections}
        if self.frame_index is not None:
            out["frame_index"] = self.frame_index
        return out

    def to_json(self, **kwargs):
        """``to_dict`` as JSON text (``json.dumps`` keyword arguments pass through)."""
        return json.dumps(self.to_dict(), **kwargs)

    def plot(self):
        """The image with its boxes and labels drawn as predict.py draws them (RGB uint8)."""
        from utils.predict.visualize import draw_detections

        return draw_detections(self.image, self, self.class_names)

    def save(self, path):
        """Writes ``plot()`` to ``path`` (format by suffix); returns the path."""
        from utils.predict.sources import save_image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, self.plot())
        return path


@dataclass
class Metrics:
    """The metrics of one evaluation.

    Attributes:
        metric: "voc", "voc07" or "coco".
        map50: mAP at IoU 0.5 (VOC all-point or 11-point; COCO's AP50).
        map50_95: COCO's AP@[.5:.95] (None for the VOC metrics).
        per_class: {class name: AP at IoU 0.5} (VOC metrics; empty for COCO).
        best_f1_conf: the confidence of best F1 (VOC metrics), the threshold to
            predict with; None where there is none.
        out: the folder holding results.json and the plots.
        summary: everything results.json holds.
    """

    metric: str
    map50: float
    map50_95: float | None
    per_class: dict
    best_f1_conf: float | None
    out: Path
    summary: dict = field(repr=False)

    @classmethod
    def from_summary(cls, summary, out):
        """The metrics of a results.json summary written into ``out``."""
        if summary["metric"] == "coco":
            stats = summary["stats"]
            return cls("coco", stats["AP50"], stats["AP"], {}, None, Path(out), summary)
        per_class = {c["name"]: c["ap"] for c in summary["classes"] if c.get("num_gt", 0) > 0}
        best = summary.get("best_f1") or {}
        return cls(summary["metric"], _number(summary["map"]), None, per_class, best.get("conf"), Path(out), summary)

    def to_dict(self):
        """A JSON-ready dict of the headline figures (``summary`` holds the rest)."""
        return {"metric": self.metric, "map50": self.map50, "map50_95": self.map50_95, "per_class": self.per_class,
                "best_f1_conf": self.best_f1_conf, "out": str(self.out)}


def _number(value):
    return math.nan if value is None else float(value)
