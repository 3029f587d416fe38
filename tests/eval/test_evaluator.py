"""The evaluator shared by training, export checks, benchmarks and get_map.py, with a
stand-in predictor on small image files, and the image lists it evaluates."""

import numpy as np
import pytest
from PIL import Image

from tests.helpers import QuarterPredictor
from utils.data.annotation import Annotation
from utils.eval.evaluator import Evaluator, predict_images, score_detections
from utils.eval.images import EvalImage, images_from_annotation_file, images_from_voc
from utils.eval.structures import ImageGroundTruth


def _image(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 10, 10)).save(path)
    return path


@pytest.fixture()
def annotations(tmp_path):
    """a.png: the quarter box (found), b.png: a box elsewhere (missed), broken.jpg: not an image."""
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    return [
        Annotation(str(a), [[0, 0, 20, 15]], [0]),
        Annotation(str(broken), [[0, 0, 5, 5]], [0]),
        Annotation(str(b), [[20, 15, 40, 30]], [0]),
    ]


def test_evaluator_batches_skips_the_unreadable_image_and_scores_the_rest(annotations):
    predictor = QuarterPredictor(["cat", "dog"])
    evaluation = Evaluator.from_annotations(annotations, batch_size=1)(predictor)
    assert predictor.batches == [1, 1]
    assert len(evaluation.problems) == 1 and "broken.jpg" in evaluation.problems[0]
    assert "not readable" in evaluation.problems[0]
    # Only the images read are scored: one of two cats found.
    assert sorted(evaluation.ground_truth) == sorted([annotations[0].path, annotations[2].path])
    assert evaluation.result["metric"] == "voc" and evaluation.result["num_images"] == 2
    assert evaluation.map == pytest.approx(0.5)
    # The class names default to the predictor's; the same evaluator runs again.
    assert [c["name"] for c in evaluation.result["classes"]] == ["cat", "dog"]
    evaluator = Evaluator.from_annotations(annotations, ["cat", "dog"])
    assert evaluator(QuarterPredictor(["cat", "dog"])).map == pytest.approx(0.5)


def test_evaluator_coco_metric_and_headline_number(annotations):
    evaluation = Evaluator.from_annotations(annotations, metric="coco")(QuarterPredictor(["cat", "dog"]))
    assert evaluation.result["metric"] == "coco"
    assert evaluation.map == evaluation.result["stats"]["AP"]
    assert evaluation.map == pytest.approx(0.5, abs=0.01)  # COCO interpolates over 101 recall points


def test_evaluator_refuses_bad_settings_with_the_value(annotations):
    with pytest.raises(ValueError, match="'f1'"):
        Evaluator.from_annotations(annotations, metric="f1")
    with pytest.raises(ValueError, match="0"):
        Evaluator.from_annotations(annotations, batch_size=0)
    with pytest.raises(ValueError, match="'map50'"):
        score_detections({}, {}, ["cat"], metric="map50")


def test_predict_images_uses_pixels_held_in_memory_and_reports_files_it_cannot_read(tmp_path):
    held = np.zeros((8, 6, 3), np.uint8)
    images = [
        EvalImage("held", None, ImageGroundTruth(), pixels=held),
        EvalImage("gone", tmp_path / "gone.png", ImageGroundTruth()),
        EvalImage("file", _image(tmp_path / "file.png", (10, 20)), ImageGroundTruth()),
    ]
    problems = []
    predictor = QuarterPredictor(["cat", "dog"])
    done = list(predict_images(predictor, images, batch_size=2, problems=problems))
    assert [image.image_id for image, _ in done] == ["held", "file"]
    np.testing.assert_allclose(done[1][1].boxes, [[0, 0, 5, 10]])
    assert predictor.batches == [2]
    assert len(problems) == 1 and "gone.png" in problems[0]


def test_annotation_file_images_skip_other_classes_and_repeats(tmp_path):
    a = _image(tmp_path / "a.png")
    listing = tmp_path / "test.txt"
    listing.write_text(f"{a} 0,0,20,15,0 1,1,5,5,3\n{a} 0,0,20,15,0\n")
    images, problems = images_from_annotation_file(listing, ["cat", "dog"])
    assert [image.image_id for image in images] == [str(a)]
    assert images[0].ground_truth.classes.tolist() == [0]
    assert any(f"{listing}:1:" in p and "class id 3" in p for p in problems)
    assert any("listed again" in p for p in problems)
    evaluation = Evaluator.from_annotation_file(listing, ["cat", "dog"])(QuarterPredictor(["cat", "dog"]))
    assert evaluation.map == pytest.approx(1.0) and len(evaluation.problems) == 2


def test_export_check_map_is_the_evaluators(annotations, tmp_path):
    from utils.export.verify import load_eval_set, voc_map

    listing = tmp_path / "test.txt"
    listing.write_text("".join(f"{ann.path} 0,0,20,15,0\n" if "a.png" in ann.path else f"{ann.path} 20,15,40,30,0\n"
                               for ann in annotations))
    images, truth = load_eval_set(listing, ["cat", "dog"])
    assert len(images) == len(truth) == 2  # broken.jpg left out
    assert voc_map(QuarterPredictor(["cat", "dog"]), images, truth, batch_size=1) == pytest.approx(
        Evaluator.from_annotation_file(listing, ["cat", "dog"])(QuarterPredictor(["cat", "dog"])).map
    )


VOC_XML = """<annotation>
  <filename>{filename}</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>cat</name><difficult>0</difficult>
    <bndbox><xmin>0</xmin><ymin>0</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object>
</annotation>
"""


def test_voc_images_take_their_extension_from_the_files_or_the_xml(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "Annotations").mkdir()
    (base / "ImageSets" / "Main" / "val.txt").write_text("png_id\nnamed\nabsent\n")
    # An image saved as PNG whose XML still says .jpg, as relabelled datasets do.
    (base / "Annotations" / "png_id.xml").write_text(VOC_XML.format(filename="png_id.jpg"))
    _image(base / "JPEGImages" / "png_id.png")
    # An image found only through the XML's <filename>.
    (base / "Annotations" / "named.xml").write_text(VOC_XML.format(filename="photo 7.PNG"))
    _image(base / "JPEGImages" / "photo 7.PNG")
    (base / "Annotations" / "absent.xml").write_text(VOC_XML.format(filename="absent.bmp"))
    images, problems = images_from_voc(tmp_path / "VOCdevkit", "2012", "val", ["cat"])
    assert problems == []
    paths = {image.image_id: image.path for image in images}
    assert paths["png_id"].name == "png_id.png" and paths["png_id"].is_file()
    assert paths["named"].name == "photo 7.PNG" and paths["named"].is_file()
    assert paths["absent"] == base / "JPEGImages" / "absent.bmp"  # reported when it is read

    evaluation = Evaluator(images, ["cat"])(QuarterPredictor(["cat", "dog"]))
    assert sorted(evaluation.ground_truth) == ["named", "png_id"]
    assert len(evaluation.problems) == 1 and "absent.bmp" in evaluation.problems[0]
    assert evaluation.map == pytest.approx(1.0)
