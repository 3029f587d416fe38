"""Drawing detections, counts and heat maps; class colours, label contrast, font, window."""

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from utils.image import letterbox_geometry
from utils.predict import visualize
from utils.predict.visualize import (
    CountsPanel,
    Viewer,
    blend_heatmap,
    class_color,
    count_classes,
    draw_detections,
    font_path,
    font_size_for,
    heat_to_image,
    load_font,
    objectness_map,
    text_color,
)


def _detections(boxes, scores, classes):
    return SimpleNamespace(boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                           scores=np.asarray(scores, np.float32), classes=np.asarray(classes, np.int32))


def _contrast(a, b):
    la, lb = visualize._relative_luminance(a), visualize._relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def test_class_colors_are_fixed_and_distinct():
    colors = [class_color(i) for i in range(20)]
    # Fixed by the class index alone: the same values in every run and process.
    assert colors[0] == (242, 36, 36)
    assert class_color(np.int64(7)) == colors[7]
    assert len(set(colors)) == 20
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)
    # Neighbouring classes are far apart (not shades of one hue).
    gaps = [np.abs(np.subtract(colors[i], colors[i + 1])).sum() for i in range(19)]
    assert min(gaps) > 60


@pytest.mark.parametrize("background, expected", [
    ((0, 0, 0), (255, 255, 255)),
    ((20, 20, 120), (255, 255, 255)),
    ((255, 255, 255), (0, 0, 0)),
    ((250, 230, 40), (0, 0, 0)),
])
def test_text_color_follows_luminance(background, expected):
    assert text_color(background) == expected


def test_label_text_readable_on_every_class_color():
    for i in range(100):
        color = class_color(i)
        assert _contrast(text_color(color), color) >= 4.5, (i, color)


def test_font_ships_with_matplotlib_and_scales():
    path = font_path()
    assert path is not None and path.name == "DejaVuSans.ttf"
    font = load_font(14)
    assert isinstance(font, ImageFont.FreeTypeFont)
    assert "DejaVu" in font.getname()[0]
    assert font_size_for((1080, 1920)) > font_size_for((375, 500)) >= 10


def test_draw_detections_boxes_labels_and_input_untouched():
    image = np.full((120, 160, 3), 128, np.uint8)
    original = image.copy()
    det = _detections([[40, 50, 120, 110], [0, 0, 30, 30]], [0.9, 0.4], [1, 2])
    out = draw_detections(image, det, ["a", "b", "c"])
    assert np.array_equal(image, original)
    assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.writeable
    # Box outline in the class colour, on the left edge below the label.
    assert tuple(out[100, 40]) == class_color(1)
    # Label of the first box above it: a filled tag in the class colour with text.
    tag = out[35:50, 41:70].reshape(-1, 3)
    assert (tag == class_color(1)).all(axis=1).mean() > 0.4
    # Anti-aliased text in the contrasting colour: black here, so some dark pixels.
    assert text_color(class_color(1)) == (0, 0, 0)
    assert tag.sum(axis=1).min() < 0.4 * sum(class_color(1))
    # A box touching the top edge keeps its label inside the image, below the edge.
    assert (out[2:10, 2:20].reshape(-1, 3) == class_color(2)).all(axis=1).mean() > 0.3
    # Inside the boxes, away from the edges and labels, nothing changes.
    assert (out[80, 60:100] == 128).all()


def test_box_outlines_are_pillows_rectangles_cut_at_the_edges():
    # Boxes are drawn into the array as Pillow draws rectangle outlines (the width
    # inwards, right and bottom edges exclusive), boxes partly outside included; a
    # box thinner than two lines is filled, where Pillow draws past its sides.
    rng = np.random.default_rng(0)
    color = (9, 99, 199)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(10, 90, 2))
        x1, y1 = (int(v) for v in rng.integers(-20, 90, 2))
        x2, y2 = x1 + int(rng.integers(0, 60)), y1 + int(rng.integers(0, 60))
        line = int(rng.integers(1, 6))
        canvas = np.zeros((height, width, 3), np.uint8)
        visualize._draw_box(canvas, (x1, y1, x2, y2), color, line)
        message = f"{(x1, y1, x2, y2)} width {line}"
        if min(x2 - x1, y2 - y1) >= 2 * line:
            expected = Image.new("RGB", (width, height))
            ImageDraw.Draw(expected).rectangle((x1, y1, x2 - 1, y2 - 1), outline=color, width=line)
            np.testing.assert_array_equal(canvas, np.asarray(expected), err_msg=message)
        else:
            rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
            inside = (rows >= y1) & (rows < max(y1 + 1, y2)) & (cols >= x1) & (cols < max(x1 + 1, x2))
            drawn = (canvas == color).all(axis=-1)
            np.testing.assert_array_equal(drawn, inside, err_msg=message)


def test_draw_detections_into_a_given_array():
    image = np.full((60, 80, 3), 128, np.uint8)
    det = _detections([[10, 20, 50, 55]], [0.9], [0])
    target = image.copy()
    out = draw_detections(image, det, ["a"], fps=3.0, out=target)
    assert out is target and np.array_equal(out, draw_detections(image, det, ["a"], fps=3.0))
    assert (image == 128).all()


def test_draw_counts_and_fps():
    image = np.full((120, 160, 3), 255, np.uint8)
    det = _detections([[60, 40, 100, 80]] * 3, [0.9, 0.8, 0.7], [0, 0, 2])
    plain = draw_detections(image, det, ["a", "b", "c"])
    out = draw_detections(image, det, ["a", "b", "c"], counts=True, fps=12.5)
    # Counts: a panel in the bottom-left corner, the total row in black.
    assert (out[-3, 2] == 0).all() and (plain[-3, 2] == 255).all()
    panel = out[60:, :40].reshape(-1, 3)
    assert (panel == class_color(0)).all(axis=1).any() and (panel == class_color(2)).all(axis=1).any()
    # FPS tag in the top-right corner on black.
    assert (out[2, -2] == 0).all() and (plain[2, -2] == 255).all()
    assert count_classes(det.classes, ["a", "b", "c"]) == {"a": 2, "c": 1}


def test_the_counts_panel_moves_off_the_boxes_to_another_corner():
    image = np.full((120, 160, 3), 255, np.uint8)
    in_the_corner = _detections([[2, 90, 40, 118]], [0.9], [1])
    out = draw_detections(image, in_the_corner, ["a", "b"], counts=True)
    plain = draw_detections(image, in_the_corner, ["a", "b"])
    # The box's outline stays as drawn without counts; the panel (its total row black)
    # is in the bottom-right corner instead.
    assert np.array_equal(out[90:118, 2:6], plain[90:118, 2:6])
    assert (out[-3, -2] == 0).all() and (plain[-3, -2] == 255).all()
    # Boxes in every corner but the top-left: the panel goes there.
    everywhere = _detections([[0, 60, 80, 120], [80, 60, 160, 120], [100, 0, 160, 40]], [0.9, 0.8, 0.7], [0, 1, 0])
    out = draw_detections(image, everywhere, ["a", "b"], counts=True)
    assert (out[2, 2] == class_color(0)).all() and (draw_detections(image, everywhere, ["a", "b"])[2, 2] == 255).all()


def test_a_videos_counts_panel_stays_in_its_corner_while_no_other_covers_less():
    image = np.full((120, 160, 3), 255, np.uint8)
    names = ["a", "b"]
    panel = CountsPanel()
    in_the_corner = _detections([[2, 90, 40, 118]], [0.9], [1])
    elsewhere = _detections([[70, 30, 90, 50]], [0.9], [1])

    def total_row_at(frame):  # where the panel's black total row is: bottom left or right
        return "left" if (frame[-3, 2] == 0).all() else "right" if (frame[-3, -2] == 0).all() else None

    assert total_row_at(draw_detections(image, elsewhere, names, counts=panel)) == "left"
    assert total_row_at(draw_detections(image, in_the_corner, names, counts=panel)) == "right"
    # The object has left the bottom-left corner: a video's panel stays where it is,
    # a single picture's goes to the first free corner.
    assert total_row_at(draw_detections(image, elsewhere, names, counts=panel)) == "right"
    assert total_row_at(draw_detections(image, elsewhere, names, counts=True)) == "left"
    # An object in its corner moves it again, to the least covered one.
    in_the_right_corner = _detections([[120, 90, 158, 118]], [0.9], [1])
    assert total_row_at(draw_detections(image, in_the_right_corner, names, counts=panel)) == "left"
    assert panel.corner == 0


def test_draw_no_detections_returns_copy():
    image = np.zeros((40, 50, 3), np.uint8)
    out = draw_detections(image, _detections(np.zeros((0, 4)), [], []), ["a"], counts=True)
    assert out.shape == image.shape and out is not image


def test_objectness_map_is_max_sigmoid_over_anchors():
    num_classes = 2
    raw = np.zeros((2, 3, 3, 5 + num_classes), np.float32)
    raw[0, 0, :, 4] = [-5.0, 2.0, 0.0]
    raw[1, 2, 1, 4] = 10.0
    raw[..., 5:] = 50.0  # class logits must not leak into objectness
    heat = objectness_map(raw.reshape(2, 3, -1), num_classes)
    assert heat.shape == (2, 3)
    assert heat[0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert heat[1, 2] == pytest.approx(1 / (1 + np.exp(-10.0)))
    assert heat[0, 1] == pytest.approx(0.5)


def test_heat_to_image_undoes_the_letterbox():
    image_hw, size = (100, 200), 64
    _, (new_h, new_w), (top, left) = letterbox_geometry(image_hw, size)
    assert top > 0  # a wide image: grey bands above and below on the input
    heat_input = np.zeros((size, size), np.float32)
    heat_input[top : top + new_h, left : left + new_w] = 1.0
    mapped = heat_to_image(heat_input, image_hw, size)
    assert mapped.shape == image_hw
    # The bands are cut away: the whole image gets the content's value.
    assert mapped[2:-2].min() > 0.99
    # Top half hot on the input -> top half hot on the image.
    half = np.zeros((size, size), np.float32)
    half[: size // 2] = 1.0
    mapped = heat_to_image(half, image_hw, size)
    assert mapped[: image_hw[0] // 2 - 5].min() > 0.99 and mapped[image_hw[0] // 2 + 5 :].max() < 0.01


def test_heat_to_image_plain_resize():
    heat = np.zeros((4, 4), np.float32)
    heat[:, :2] = 1.0
    mapped = heat_to_image(heat, (30, 90), 64, letterboxed=False)
    assert mapped.shape == (30, 90)
    assert mapped[:, :30].min() > 0.99 and mapped[:, 60:].max() < 0.01


def test_blend_heatmap():
    image = np.full((30, 40, 3), 100, np.uint8)
    heat = np.zeros((30, 40), np.float32)
    heat[:, 20:] = 1.0
    assert np.array_equal(blend_heatmap(image, heat, alpha=0.0), image)
    full = blend_heatmap(image, heat, alpha=1.0)
    hot = cv2.cvtColor(cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0, 0]
    assert tuple(full[5, 30]) == tuple(hot)
    assert full[5, 30, 0] > full[5, 30, 2] and full[5, 5, 2] > full[5, 5, 0]  # red hot, blue cold
    with pytest.raises(ValueError, match=r"\(30, 41\)"):
        blend_heatmap(image, np.zeros((30, 41)))


def test_viewer_without_display_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(visualize.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    def no_window(*args):
        raise AssertionError("imshow must not be called without a display")

    monkeypatch.setattr(visualize.cv2, "imshow", no_window)
    with caplog.at_level(logging.WARNING, logger="utils.predict.visualize"):
        viewer = Viewer()
        assert viewer.show(np.zeros((8, 8, 3), np.uint8)) is True
        assert viewer.show(np.zeros((8, 8, 3), np.uint8)) is True
        viewer.close()
    assert not viewer.active
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "No display available" in messages[0]


def test_viewer_probes_an_unreachable_display(monkeypatch, caplog):
    monkeypatch.setattr(visualize.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", "127.0.0.1:4711")  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="utils.predict.visualize"):
        viewer = Viewer()
        assert viewer.show(np.zeros((8, 8, 3), np.uint8)) is True
    assert not viewer.active
    assert len(caplog.records) == 1
    assert "No display available" in caplog.records[0].getMessage()


def test_viewer_falls_back_when_opencv_cannot_open_a_window(monkeypatch, caplog):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(visualize, "_probe_window", lambda: None)

    def broken(*args):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(visualize.cv2, "imshow", broken)
    with caplog.at_level(logging.WARNING, logger="utils.predict.visualize"):
        viewer = Viewer()
        assert viewer.active
        assert viewer.show(np.zeros((8, 8, 3), np.uint8)) is True
        viewer.show(np.zeros((8, 8, 3), np.uint8))
    assert not viewer.active
    assert len(caplog.records) == 1 and "OpenCV cannot open a window" in caplog.records[0].getMessage()


def test_viewer_stops_on_q(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(visualize, "_probe_window", lambda: None)
    monkeypatch.setattr(visualize.cv2, "imshow", lambda *args: None)
    keys = iter([-1, ord("x"), ord("q")])
    monkeypatch.setattr(visualize.cv2, "waitKey", lambda ms: next(keys))
    viewer = Viewer()
    image = np.zeros((8, 8, 3), np.uint8)
    assert [viewer.show(image), viewer.show(image), viewer.show(image)] == [True, True, False]
