"""Sliced inference: tiles, the map of tile boxes back to the image, the merge of an
object cut by a tile edge, one batch per image, and the --slice flags of predict.py
and get_map.py (a fake detector that sees the objects of each tile, no model)."""

import numpy as np
import pytest
from PIL import Image

from tests.predict.video_fakes import detections
from utils.api import detector as detector_module
from utils.predict.slicing import SlicingPredictor, cut_by_tile_edge, merge_boxes, tile_offsets

WIDTH, HEIGHT = 600, 400


def coordinate_image(width=WIDTH, height=HEIGHT):
    """An image whose pixels hold their own coordinates, so a tile tells where it was cut."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x & 255, y & 255, (x >> 8) | ((y >> 8) << 4)], axis=-1).astype(np.uint8)


class TileAwareDetector:
    """A fake predictor that finds the given objects in whatever part of the image
    it is shown, clipped to that part, in the part's pixels."""

    class_names = ["speck", "dot"]
    max_boxes = 100

    def __init__(self, objects):
        self.objects = objects  # (x1, y1, x2, y2, class, score) in image pixels
        self.calls = []

    def predict_batch(self, images, timings=None):
        self.calls.append([image.shape[:2] for image in images])
        results = []
        for image in images:
            r, g, b = (int(v) for v in image[0, 0])
            left, top = r | ((b & 15) << 8), g | ((b >> 4) << 8)
            height, width = image.shape[:2]
            found = []
            for x1, y1, x2, y2, cls, score in self.objects:
                cx1, cy1 = max(x1, left) - left, max(y1, top) - top
                cx2, cy2 = min(x2, left + width) - left, min(y2, top + height) - top
                if cx2 > cx1 and cy2 > cy1:
                    found.append((cx1, cy1, cx2, cy2, cls, score))
            boxes = detections(*[f[:5] for f in found])
            boxes.scores = np.array([f[5] for f in found], np.float32)
            results.append(boxes)
        if timings is not None:
            timings.update(pre=0.001, net_post=0.002)
        return results


def test_tiles_lie_inside_the_image_and_cover_it():
    tiles = tile_offsets((HEIGHT, WIDTH), 200, 0.2)
    assert len(tiles) == 12
    assert (tiles[:, 2] - tiles[:, 0] == 200).all() and (tiles[:, 3] - tiles[:, 1] == 200).all()
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for x1, y1, x2, y2 in tiles:
        covered[y1:y2, x1:x2] = True
    assert covered.all() and tiles[:, 2].max() == WIDTH and tiles[:, 3].max() == HEIGHT
    xs = sorted(set(tiles[:, 0].tolist()))
    assert all(b - a <= 160 for a, b in zip(xs, xs[1:]))  # neighbours overlap by at least 0.2 x 200
    np.testing.assert_array_equal(tile_offsets((100, 150), 200, 0.2), [[0, 0, 150, 100]])
    with pytest.raises(ValueError, match="overlap"):
        tile_offsets((100, 100), 50, 1.0)


def test_tile_boxes_come_back_at_image_coordinates():
    objects = [(30, 40, 60, 70, 0, 0.9),       # in the first tile only
               (450, 300, 480, 330, 1, 0.8)]  # whole in two tiles: one box
    detector = TileAwareDetector(objects)
    det = SlicingPredictor(detector, 200, overlap=0.2).predict(coordinate_image())
    np.testing.assert_array_equal(det.boxes, [[30, 40, 60, 70], [450, 300, 480, 330]])
    np.testing.assert_array_equal(det.classes, [0, 1])
    np.testing.assert_allclose(det.scores, [0.9, 0.8])


def test_an_object_split_across_tiles_is_merged_into_one_box():
    # x 150..260 is cut by the first tile's right edge (200) and the second's left (160).
    objects = [(150, 100, 260, 130, 0, 0.9), (20, 20, 40, 40, 1, 0.7)]
    detector = TileAwareDetector(objects)
    slicer = SlicingPredictor(detector, 200, overlap=0.2)
    timings = {}
    det = slicer.predict_batch([coordinate_image()], timings)[0]
    np.testing.assert_array_equal(det.boxes, [[150, 100, 260, 130], [20, 20, 40, 40]])
    assert detector.calls == [[(200, 200)] * 12]  # all tiles of the image in one batch
    assert timings == {"pre": 0.001, "net_post": 0.002}
    # nms keeps the better of the two parts instead.
    det = SlicingPredictor(detector, 200, overlap=0.2, merge="nms").predict_batch([coordinate_image()])[0]
    assert len(det) == 2 and tuple(det.boxes[0]) in ((150, 100, 200, 130), (160, 100, 260, 130))


def test_a_very_large_image_goes_in_several_batches(monkeypatch):
    from utils.predict import slicing

    monkeypatch.setattr(slicing, "MAX_TILES_PER_BATCH", 5)
    detector = TileAwareDetector([(150, 100, 260, 130, 0, 0.9)])
    det = SlicingPredictor(detector, 200, overlap=0.2).predict(coordinate_image())
    assert [len(call) for call in detector.calls] == [5, 5, 2]
    np.testing.assert_array_equal(det.boxes, [[150, 100, 260, 130]])


def test_whole_image_joins_the_batch_and_the_other_attributes_are_the_predictors():
    detector = TileAwareDetector([(10, 10, 590, 390, 1, 0.95)])  # larger than any tile
    slicer = SlicingPredictor(detector, 200, overlap=0.2, full_image=True)
    det = slicer.predict_batch([coordinate_image(), coordinate_image()])
    assert [len(call) for call in detector.calls] == [13, 13] and detector.calls[0][-1] == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(det[1].boxes, [[10, 10, 590, 390]])
    assert slicer.class_names == ["speck", "dot"] and slicer.max_boxes == 100


def test_merge_boxes_by_class_and_overlap_of_the_smaller():
    boxes = [[0, 0, 50, 20], [40, 0, 90, 20], [42, 0, 48, 20], [0, 0, 50, 20]]
    merged, scores, classes = merge_boxes(boxes, [0.5, 0.6, 0.9, 0.4], [0, 0, 0, 1])
    # The small box lies inside both halves: all of class 0 become one; class 1 stays.
    np.testing.assert_array_equal(merged, [[0, 0, 90, 20], [0, 0, 50, 20]])
    np.testing.assert_allclose(scores, [0.9, 0.4])
    np.testing.assert_array_equal(classes, [0, 1])
    # A faint box around a confident one is dropped with its group, not merged into it.
    merged, scores, _ = merge_boxes([[10, 10, 30, 30], [0, 0, 60, 60]], [0.9, 0.02], [0, 0])
    np.testing.assert_array_equal(merged, [[10, 10, 30, 30]])
    # With tile edges known: two whole views of one object keep the better box (no widening), and a
    # part cut by a tile edge widens the whole view of its object even when the part scores higher.
    merged, _, _ = merge_boxes([[10, 10, 30, 30], [11, 9, 31, 31]], [0.9, 0.8], [0, 0], cut=[False, False])
    np.testing.assert_array_equal(merged, [[10, 10, 30, 30]])
    merged, scores, _ = merge_boxes([[185, 10, 200, 40], [186, 10, 215, 40]], [0.9, 0.8], [0, 0], cut=[True, False])
    np.testing.assert_array_equal(merged, [[185, 10, 215, 40]])
    np.testing.assert_allclose(scores, [0.9])
    with pytest.raises(ValueError, match="merge method"):
        merge_boxes(boxes, [1, 1, 1, 1], [0, 0, 0, 0], method="wbf")


def test_boxes_cut_by_an_inner_tile_edge():
    boxes = [[150, 100, 200, 130],  # reaches the tile's right edge, inside the image: cut
             [0, 0, 20, 20],        # reaches the image's own corner: whole
             [50, 50, 80, 80]]      # inside: whole
    np.testing.assert_array_equal(cut_by_tile_edge(boxes, (0, 0, 200, 200), (HEIGHT, WIDTH)), [True, False, False])
    assert cut_by_tile_edge([[420, 390, 440, 400]], (400, 200, 600, 400), (HEIGHT, WIDTH)).tolist() == [False]


def test_predict_slices_an_image(monkeypatch, tmp_path, capsys):
    import predict

    detector = TileAwareDetector([(150, 100, 260, 130, 0, 0.9)])
    monkeypatch.setattr(detector_module, "open_model", lambda path, options, check_images=None: detector)
    image = tmp_path / "aerial.png"
    Image.fromarray(coordinate_image()).save(image)
    out = tmp_path / "out"
    assert predict.main(["--model", "m.keras", "--source", str(image), "--out", str(out), "--save-txt",
                         "--slice", "200", "--slice-overlap", "0.2"]) == 0
    label = (out / "labels" / "aerial.txt").read_text().split()
    assert label == ["speck", "0.900000", "150.00", "100.00", "260.00", "130.00"]
    assert detector.calls == [[(200, 200)] * 12]
    with pytest.raises(SystemExit):
        predict.main(["--model", "m.keras", "--source", str(image), "--slice-overlap", "0.95"])
    assert "--slice-overlap: must be in [0, 0.9]" in capsys.readouterr().err


def test_get_map_passes_the_slice_flags_on(monkeypatch):
    import sys
    import types

    import get_map

    parser = get_map.build_parser()
    sliced = parser.parse_args(["--model", "m.keras", "--slice", "320", "--slice-overlap", "0.25", "--slice-full",
                                "--slice-merge", "nms"])
    whole = parser.parse_args(["--model", "m.keras"])
    detector = TileAwareDetector([])
    # In place of the modules that open models (and import TensorFlow).
    fake = types.SimpleNamespace(open_on_runtime=lambda path, **kwargs: detector)
    for name in ("utils.predict.runtimes", "utils.export.auto_runtime"):
        monkeypatch.setitem(sys.modules, name, fake)
    slicer = get_map.open_evaluated_model(get_map.eval_options(sliced))
    assert isinstance(slicer, SlicingPredictor) and slicer.predictor is detector
    assert (slicer.size, slicer.overlap, slicer.full_image, slicer.merge) == (320, 0.25, True, "nms")
    assert get_map.open_evaluated_model(get_map.eval_options(whole)) is detector


class _StreamingSquareFinder:
    """A fake predictor whose video copy (``for_streams``) is another SquareFinder,
    as OpenVINO's throughput copy is another predictor."""

    def __init__(self):
        from tests.predict.video_fakes import SquareFinder

        self.image_finder, self.video_finder = SquareFinder(), SquareFinder()
        self.class_names = self.image_finder.class_names

    def predict_batch(self, images, timings=None):
        return self.image_finder.predict_batch(images, timings)

    def for_streams(self):
        return self.video_finder, 2


def test_a_video_is_sliced_like_an_image(monkeypatch, tmp_path):
    import predict
    from tests.predict.video_fakes import write_squares_video

    sliced = SlicingPredictor(_StreamingSquareFinder(), 64, 0.25)
    twin, in_flight = sliced.for_streams()
    assert isinstance(twin, SlicingPredictor) and in_flight == 2
    assert twin.predictor is sliced.predictor.video_finder and (twin.size, twin.overlap) == (64, 0.25)

    finder = _StreamingSquareFinder()
    monkeypatch.setattr(detector_module, "open_model", lambda path, options, check_images=None: finder)
    video = write_squares_video(tmp_path / "clip.mp4", frames=6)
    out = tmp_path / "out"
    assert predict.main(["--model", "m.keras", "--source", str(video), "--out", str(out), "--save-txt",
                         "--slice", "64"]) == 0
    # Every frame went to the video copy in tiles (200x120 at 64 px with the default overlap: more than one).
    calls = finder.video_finder.calls + finder.image_finder.calls
    assert len(calls) >= 6 and all(n > 1 for n in calls)
    labels = sorted((out / "labels").glob("clip_*.txt"))
    assert len(labels) == 6 and all(label.read_text().strip() for label in labels)
