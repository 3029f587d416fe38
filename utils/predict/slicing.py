"""Sliced inference for small objects in large images: the detector runs on
overlapping tiles at full resolution, and the boxes are mapped back and merged.

``SlicingPredictor`` wraps any predictor (``utils.predict.predictor.BasePredictor``:
the Keras graph or an exported runtime) and has the same ``predict_batch``, so
predict.py, the video pipeline and the evaluator use it unchanged. The tiles of one
image (and, with ``full_image``, the whole image, downscaled as usual) go through
the network as one batch (up to ``MAX_TILES_PER_BATCH``). Boxes of one class that overlap by at least
``MERGE_OVERLAP`` of the smaller box (intersection over smaller, as SAHI does) are
one object: ``nmm`` (the default) keeps the best box that no tile edge cuts and
widens it to the parts of the object that tiles cut off, so an object cut by a
tile's edge is one box again; ``nms`` keeps the best box.

Tiles are ``size`` x ``size`` pixels of the image, neighbours overlapping by
``overlap`` of that; the last tile of a row or column is moved inwards so that
every tile lies whole inside the image (an image smaller than a tile is one tile
along that side).
"""

import dataclasses
import logging

import numpy as np

log = logging.getLogger(__name__)

MERGE_METHODS = ("nmm", "nms")
DEFAULT_OVERLAP = 0.2
#: Intersection over the smaller box at which boxes of two tiles are one object.
MERGE_OVERLAP = 0.5
#: Share of a group's best score a box needs to widen the merged box; weaker boxes
#: of the group are dropped, so that at a low threshold (evaluation) faint boxes
#: around an object do not blow its box up.
MERGE_SCORE_RATIO = 0.5
#: Pixels from a tile's edge within which a box counts as cut by it.
CUT_TOLERANCE = 2.0
MIN_TILE = 32
MAX_OVERLAP = 0.9
#: Most tiles in one network call: more (a very large image) go in several, to
#: bound the memory a batch takes.
MAX_TILES_PER_BATCH = 64


@dataclasses.dataclass(frozen=True)
class SliceOptions:
    """Sliced inference as asked for (predict.py's and get_map.py's ``--slice*``).

    Attributes:
        size: tile side in pixels of the image (at least ``MIN_TILE``).
        overlap: overlap of neighbouring tiles, a fraction of ``size`` in [0, ``MAX_OVERLAP``].
        full_image: also run the whole image and merge its boxes with the tiles'.
        merge: one of ``MERGE_METHODS``.

    Raises:
        ValueError: a value out of range, naming it.
    """

    size: int
    overlap: float = DEFAULT_OVERLAP
    full_image: bool = False
    merge: str = MERGE_METHODS[0]

    def __post_init__(self):
        if int(self.size) < MIN_TILE:
            raise ValueError(f"the tile size must be at least {MIN_TILE} pixels, got {self.size}")
        if not 0.0 <= float(self.overlap) <= MAX_OVERLAP:
            raise ValueError(f"the tile overlap must be in [0, {MAX_OVERLAP}], got {self.overlap}")
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"the merge method must be one of {', '.join(MERGE_METHODS)}, got {self.merge!r}")

    def wrap(self, predictor):
        """``predictor`` running on the tiles: a SlicingPredictor."""
        return SlicingPredictor(predictor, int(self.size), overlap=float(self.overlap), full_image=self.full_image,
                                merge=self.merge)


def _axis_starts(length, size, stride):
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    if not starts or starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tile_offsets(image_hw, size, overlap=DEFAULT_OVERLAP):
    """The tiles of an image.

    Args:
        image_hw: (height, width) of the image.
        size: tile side in pixels.
        overlap: overlap of neighbouring tiles, a fraction of ``size`` in [0, 1).

    Returns:
        int (K, 4) xyxy pixels, row by row; each tile is ``size`` x ``size`` or the
        whole image along a side shorter than ``size``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    stride = max(1, int(round(size * (1.0 - overlap))))
    height, width = int(image_hw[0]), int(image_hw[1])
    tiles = [(x, y, min(x + size, width), min(y + size, height))
             for y in _axis_starts(height, size, stride) for x in _axis_starts(width, size, stride)]
    return np.asarray(tiles, np.int64).reshape(-1, 4)


def merge_boxes(boxes, scores, classes, method="nmm", threshold=MERGE_OVERLAP, score_ratio=MERGE_SCORE_RATIO,
                cut=None):
    """Merges the boxes of one class that overlap, by intersection over the smaller box.

    Boxes are grouped greedily: the best box left takes every box of its class that
    overlaps it by ``threshold``; each group becomes one box with the best score.

    Args:
        boxes: (N, 4) xyxy pixels.
        scores: (N,).
        classes: (N,) class ids.
        method: "nmm": the group's box is its best box that is not ``cut`` (its best
            box if all are cut), widened to the union with the cut boxes; boxes
            scoring below ``score_ratio`` of the group's best take no part. "nms":
            the group's best box.
        threshold: intersection over smaller at which boxes are grouped.
        score_ratio: see ``method``.
        cut: bool (N,), boxes cut by a tile's edge, i.e. parts of an object (None:
            all, which makes "nmm" the plain union of the group).

    Returns:
        (boxes float32 (M, 4), scores float32 (M,), classes int32 (M,)), by
        descending score.
    """
    import supervision as sv

    if method not in MERGE_METHODS:
        raise ValueError(f"merge method must be one of {', '.join(MERGE_METHODS)}, got {method!r}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    classes = np.asarray(classes, np.int32).reshape(-1)
    cut = np.ones(len(scores), bool) if cut is None else np.asarray(cut, bool).reshape(-1)
    if len(scores) > 1:
        predictions = np.concatenate([boxes, scores[:, None], classes[:, None]], axis=1).astype(np.float64)
        if method == "nms":
            keep = sv.box_non_max_suppression(predictions, threshold, sv.OverlapMetric.IOS)
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        else:
            merged, best = [], []
            for group in sv.box_non_max_merge(predictions, threshold, sv.OverlapMetric.IOS):
                group = np.asarray(group, np.int64)
                group = group[np.argsort(-scores[group], kind="stable")]
                strong = group[scores[group] >= score_ratio * scores[group[0]]]
                whole = strong[~cut[strong]]
                parts = np.concatenate([whole[:1] if len(whole) else strong[:1], strong[cut[strong]]])
                merged.append([*boxes[parts, :2].min(axis=0), *boxes[parts, 2:].max(axis=0)])
                best.append(group[0])
            best = np.asarray(best, np.int64)
            boxes, scores, classes = np.asarray(merged, np.float32), scores[best], classes[best]
    order = np.argsort(-scores, kind="stable")
    return boxes.reshape(-1, 4)[order], scores[order], classes[order]


def cut_by_tile_edge(boxes, tile, image_hw, tolerance=CUT_TOLERANCE):
    """Which boxes reach an edge of their tile that lies inside the image (objects
    the tile may show only part of).

    Args:
        boxes: (N, 4) xyxy pixels of the image.
        tile: (x1, y1, x2, y2) of the tile the boxes were found in.
        image_hw: (height, width) of the image.
        tolerance: pixels from the edge that count as reaching it.

    Returns:
        bool (N,).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in tile)
    height, width = image_hw
    return (((boxes[:, 0] <= x1 + tolerance) & (x1 > 0)) | ((boxes[:, 1] <= y1 + tolerance) & (y1 > 0))
            | ((boxes[:, 2] >= x2 - tolerance) & (x2 < width)) | ((boxes[:, 3] >= y2 - tolerance) & (y2 < height)))


class SlicingPredictor:
    """A predictor that detects on overlapping tiles of each image and merges the boxes.

    ``predict_batch`` has the interface of
    ``utils.predict.predictor.BasePredictor.predict_batch``; every other attribute
    (class names, input size, ``raw_outputs``, ...) is the wrapped predictor's.

    Args:
        predictor: the predictor run on the tiles.
        size: tile side in pixels.
        overlap: overlap of neighbouring tiles, a fraction of ``size``.
        full_image: also detect on the whole image and merge those boxes in.
        merge: "nmm" or "nms" (see ``merge_boxes``).
    """

    def __init__(self, predictor, size, overlap=DEFAULT_OVERLAP, full_image=False, merge="nmm"):
        if int(size) < MIN_TILE:
            raise ValueError(f"tile size must be at least {MIN_TILE} pixels, got {size!r}")
        if merge not in MERGE_METHODS:
            raise ValueError(f"merge method must be one of {', '.join(MERGE_METHODS)}, got {merge!r}")
        tile_offsets((1, 1), int(size), overlap)  # checks the overlap
        self.predictor, self.size, self.overlap = predictor, int(size), float(overlap)
        self.full_image, self.merge = bool(full_image), merge

    def __getattr__(self, name):
        # Only called for attributes this class lacks: those of the wrapped predictor.
        if name == "predictor":
            raise AttributeError(name)
        return getattr(self.predictor, name)

    def for_streams(self):
        """The wrapped predictor's video copy (``BasePredictor.for_streams``), sliced the
        same way, and its frames in flight: a video is sliced like an image."""
        inner = getattr(self.predictor, "for_streams", None)
        if inner is None:
            return self, 1
        twin, in_flight = inner()
        if twin is self.predictor:
            return self, in_flight
        return SlicingPredictor(twin, self.size, self.overlap, self.full_image, self.merge), in_flight

    def tiles(self, image):
        """Offsets (K, 4) xyxy of ``image``'s tiles."""
        return tile_offsets(image.shape[:2], self.size, self.overlap)

    def predict_batch(self, images, timings=None):
        """Detects objects in a list of RGB uint8 (H, W, 3) images, tile by tile.

        Args:
            images: list of arrays, any sizes.
            timings: optional dict; receives "pre" and "net_post" seconds, summed
                over the images' tile batches.

        Returns:
            list of Detections (boxes (N, 4) xyxy pixels of each image), one per image.
        """
        results, total = [], {}
        for image in images:
            tiles = self.tiles(image)
            crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in tiles]
            if self.full_image:
                crops.append(image)
                tiles = np.concatenate([tiles, [[0, 0, image.shape[1], image.shape[0]]]])
            found = []
            for start in range(0, len(crops), MAX_TILES_PER_BATCH):
                spent = {}
                found += self.predictor.predict_batch(crops[start:start + MAX_TILES_PER_BATCH], spent)
                for key, value in spent.items():
                    total[key] = total.get(key, 0.0) + value
            results.append(self._merge(found, tiles, image.shape[:2]))
        if timings is not None:
            timings.update(total)
        return results

    def predict(self, image):
        """Detections of one RGB uint8 (H, W, 3) image, tile by tile."""
        return self.predict_batch([image])[0]

    def _merge(self, found, tiles, image_hw):
        """One image's Detections from those of its tiles (xyxy in the image, the whole
        image last with ``full_image``), boxes moved by the tile offsets."""
        moved = [np.asarray(det.boxes, np.float32).reshape(-1, 4) + np.tile(tile[:2], 2).astype(np.float32)
                 for det, tile in zip(found, tiles)]
        boxes = np.concatenate(moved)
        scores = np.concatenate([np.asarray(det.scores, np.float32).reshape(-1) for det in found])
        classes = np.concatenate([np.asarray(det.classes, np.int32).reshape(-1) for det in found])
        if len(found) > 1:
            cut = np.concatenate([cut_by_tile_edge(b, tile, image_hw) for b, tile in zip(moved, tiles)])
            boxes, scores, classes = merge_boxes(boxes, scores, classes, self.merge, cut=cut)
            boxes, scores, classes = self._cap(boxes, scores, classes)
        return dataclasses.replace(found[0], boxes=boxes, scores=scores, classes=classes)

    def _cap(self, boxes, scores, classes):
        """Keeps the best ``max_boxes`` per class, as the wrapped predictor does per image."""
        limit = getattr(self.predictor, "max_boxes", None)
        if limit is None:
            return boxes, scores, classes
        rank = np.zeros(len(scores), np.int64)
        for cls in np.unique(classes):
            members = np.flatnonzero(classes == cls)  # already by descending score
            rank[members] = np.arange(len(members))
        keep = rank < limit
        return boxes[keep], scores[keep], classes[keep]
