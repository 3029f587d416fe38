"""Drawing detections, class counts, FPS, track IDs, trails, counting lines and
objectness heat maps on images, and showing them in a window.

Images are RGB uint8 arrays (H, W, 3) throughout; drawing functions return a new
array and leave their input untouched (``draw_detections`` draws into ``out`` when
given one). Boxes are xyxy pixels of the image drawn on.
Labels use DejaVu Sans, the font that ships with matplotlib, sized with the image.
"""

import colorsys
import functools
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.boxes import np_intersection
from utils.image import letterbox_geometry

log = logging.getLogger(__name__)

_GOLDEN_RATIO = 0.618033988749895
# Label text scale and box line width, relative to the mean image side.
_FONT_FRACTION = 0.028
_MIN_FONT_SIZE = 10
_LINE_FRACTION = 0.004
_BLACK = (0, 0, 0)
_WHITE = (255, 255, 255)
# Keys that close the window and stop the run: q and Esc.
_STOP_KEYS = (ord("q"), 27)


@functools.lru_cache(maxsize=1024)
def _class_color(index):
    hue = (index * _GOLDEN_RATIO) % 1.0
    saturation = 0.85 if index % 2 == 0 else 0.65
    value = 0.95 if (index // 2) % 2 == 0 else 0.8
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def class_color(index):
    """The colour of a class, the same in every run.

    Hues step by the golden ratio from red, so neighbouring ids get well-separated
    colours for any class count; saturation and brightness alternate between two
    levels to tell apart the hues that come back close after many steps.

    Args:
        index: class id (int >= 0).

    Returns:
        (r, g, b) ints in 0–255.
    """
    return _class_color(int(index))


def _relative_luminance(rgb):
    """WCAG relative luminance of an sRGB colour (0–255 ints), in 0–1."""
    channels = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


@functools.lru_cache(maxsize=1024)
def _text_color(background):
    luminance = _relative_luminance(background)
    # WCAG contrast ratios against white (L = 1) and black (L = 0).
    return _WHITE if 1.05 / (luminance + 0.05) > (luminance + 0.05) / 0.05 else _BLACK


def text_color(background):
    """Black or white, whichever contrasts more with ``background`` (r, g, b)."""
    return _text_color(tuple(int(c) for c in background))


def font_path():
    """Path of DejaVuSans.ttf as shipped with matplotlib, or None if it is missing.

    The file is found through the installed package without importing matplotlib
    (which would build its font cache on first use).
    """
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=32)
def load_font(size):
    """DejaVu Sans at ``size`` pixels; Pillow's own default font if it cannot be found."""
    path = font_path()
    if path is not None:
        try:
            return ImageFont.truetype(str(path), int(size))
        except OSError as exc:
            log.warning("Cannot load the label font %s (%s); using Pillow's default font.", path, exc)
    else:
        log.warning("matplotlib's DejaVuSans.ttf was not found; labels use Pillow's default font.")
    return ImageFont.load_default(int(size))


def font_size_for(image_hw):
    """Label font size in pixels for an image of (height, width)."""
    return max(_MIN_FONT_SIZE, int(round(_FONT_FRACTION * (image_hw[0] + image_hw[1]) / 2)))


def line_width_for(image_hw):
    """Box outline width in pixels for an image of (height, width)."""
    return max(1, int(round(_LINE_FRACTION * (image_hw[0] + image_hw[1]) / 2)))


@functools.lru_cache(maxsize=4096)
def _tag(text, font_size, fill, width=0):
    """A label: ``text`` in black or white on a ``fill`` box, as a read-only RGB
    uint8 array.

    The height depends only on the font (ascent + descent), so labels line up; the
    box is at least ``width`` wide. Cached, since the same labels recur in a video
    or a folder and rendering text is the slow part of drawing.
    """
    font = load_font(font_size)
    ascent, descent = font.getmetrics()
    left, _, right, _ = font.getbbox(text)
    pad = max(1, (ascent + descent) // 6)
    tag = Image.new("RGB", (max(width, right - left + 2 * pad), ascent + descent + 2 * pad), fill)
    ImageDraw.Draw(tag).text((pad - left, pad), text, font=font, fill=text_color(fill))
    pixels = np.asarray(tag).copy()
    pixels.flags.writeable = False
    return pixels


def _paste_tag(canvas, tag, xy, anchor_bottom=False):
    """Copies a label into ``canvas`` with its top-left (or bottom-left) corner at
    ``xy``, moved inside the canvas (and cut where it is larger)."""
    (tag_h, tag_w), (height, width) = tag.shape[:2], canvas.shape[:2]
    x, y = xy
    if anchor_bottom:
        y -= tag_h
    x = int(min(max(0, x), max(0, width - tag_w)))
    y = int(min(max(0, y), max(0, height - tag_h)))
    canvas[y : y + tag_h, x : x + tag_w] = tag[: height - y, : width - x]


def _draw_box(canvas, box, color, line):
    """Draws a box outline ``line`` pixels wide inside xyxy ``box`` (ints; the
    right and bottom edges are exclusive), cut at the canvas's edges, as Pillow
    draws a rectangle's outline; a box thinner than two lines is filled."""
    x1, y1, x2, y2 = box
    x2, y2 = max(x1 + 1, x2), max(y1 + 1, y2)
    height, width = canvas.shape[:2]
    strips = ((y1, min(y2, y1 + line), x1, x2), (max(y1, y2 - line), y2, x1, x2),
              (y1, y2, x1, min(x2, x1 + line)), (y1, y2, max(x1, x2 - line), x2))
    for top, bottom, left, right in strips:
        top, bottom, left, right = max(top, 0), min(bottom, height), max(left, 0), min(right, width)
        if top < bottom and left < right:
            canvas[top:bottom, left:right] = color


def count_classes(classes, class_names):
    """Detections per class, in class-id order, classes with none left out.

    Args:
        classes: int (N,) class ids.
        class_names: list of C names indexed by the ids.

    Returns:
        dict {class name: count}.
    """
    ids, counts = np.unique(np.asarray(classes, np.int64).reshape(-1), return_counts=True)
    return {class_names[int(i)]: int(n) for i, n in zip(ids, counts)}


def draw_detections(image, detections, class_names, counts=False, fps=None, status=(), out=None):
    """Draws boxes with "name score" labels, optionally class counts, FPS and status lines.

    Detections with ``track_ids`` (``utils.predict.tracking.TrackedDetections``) are
    labelled "#id name score"; those with a negative ID have no "#id".

    Args:
        image: RGB uint8 (H, W, 3).
        detections: object with ``boxes`` (N, 4) xyxy pixels of ``image``, ``scores``
            (N,) and ``classes`` int (N,) (e.g. ``utils.predict.predictor.Detections``),
            optionally ``track_ids`` int (N,).
        class_names: list of C display names indexed by the class ids.
        counts: also draw the number of detections per class, in the bottom-left
            corner (another corner where that one covers more of the boxes); a
            ``CountsPanel`` instead of True keeps the panel in its corner from frame
            to frame while no other corner covers less (a video).
        fps: frames per second to draw top right (None: not drawn).
        status: more lines of text drawn top right, below the FPS.
        out: an RGB uint8 (H, W, 3) array to draw into instead of a copy of
            ``image`` (``image`` itself to draw in place).

    Returns:
        the drawn RGB uint8 (H, W, 3) array: ``out``, or a new one.
    """
    canvas = np.array(image, np.uint8, order="C") if out is None else out
    hw = canvas.shape[:2]
    font_size = font_size_for(hw)
    line = line_width_for(hw)
    boxes = np.asarray(detections.boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(detections.scores).reshape(-1)
    classes = np.asarray(detections.classes).reshape(-1)
    track_ids = getattr(detections, "track_ids", None)
    track_ids = np.full(len(scores), -1) if track_ids is None else np.asarray(track_ids).reshape(-1)
    # Weakest first, so the strongest boxes and labels end up on top.
    for i in np.argsort(scores, kind="stable"):
        color = class_color(classes[i])
        box = tuple(int(round(v)) for v in boxes[i])
        _draw_box(canvas, box, color, line)
        prefix = f"#{int(track_ids[i])} " if track_ids[i] >= 0 else ""
        tag = _tag(f"{prefix}{class_names[int(classes[i])]} {float(scores[i]):.2f}", font_size, color)
        # Above the box when it fits, else just inside its top edge.
        _paste_tag(canvas, tag, box[:2], anchor_bottom=box[1] >= tag.shape[0])
    if counts:
        _draw_counts(canvas, classes, class_names, font_size, boxes,
                     counts if isinstance(counts, CountsPanel) else CountsPanel())
    lines = ([f"FPS {fps:.1f}"] if fps is not None else []) + list(status)
    y = 0
    for text in lines:
        tag = _tag(text, font_size, _BLACK)
        _paste_tag(canvas, tag, (hw[1], y))
        y += tag.shape[0]
    return canvas


def draw_tracking(image, trails=(), line=None):
    """Draws the trails of tracked objects and a counting line, under the boxes to come.

    The line is white on black with an arrow, labelled "in", towards the side that
    objects cross into to count as "in": the left of the line seen from its first
    point towards its second (``supervision.LineZone``'s convention).

    Args:
        image: RGB uint8 (H, W, 3).
        trails: (points, class id) pairs, points (K, 2) float xy pixels, oldest first;
            each is drawn as a polyline in its class's colour.
        line: ((x1, y1), (x2, y2)) pixels, or None.

    Returns:
        new RGB uint8 (H, W, 3) array.
    """
    canvas = np.ascontiguousarray(image).copy()
    hw = image.shape[:2]
    width = line_width_for(hw)
    for points, cls in trails:
        if len(points) > 1:
            cv2.polylines(canvas, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], False,
                          class_color(cls), width, cv2.LINE_AA)
    if line is not None:
        (x1, y1), (x2, y2) = line
        start, end = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.line(canvas, start, end, _BLACK, 3 * width, cv2.LINE_AA)
        cv2.line(canvas, start, end, _WHITE, width, cv2.LINE_AA)
        length = max(np.hypot(x2 - x1, y2 - y1), 1e-9)
        arrow = 0.05 * (hw[0] + hw[1]) / 2
        mid = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        tip = mid + arrow * np.array([y2 - y1, x1 - x2]) / length
        cv2.arrowedLine(canvas, tuple(int(v) for v in mid), tuple(int(v) for v in tip), _WHITE, width,
                        cv2.LINE_AA, tipLength=0.3)
        cv2.putText(canvas, "in", tuple(int(v) for v in tip + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.4, font_size_for(hw) / 30), _WHITE, max(1, width), cv2.LINE_AA)
    return canvas


class CountsPanel:
    """Where the counts panel of a run of frames sits: it stays in its corner while no
    other corner would cover less of the boxes, so that in a video it does not move
    back each time an object leaves the corner it moved away from.

    Attributes:
        corner: 0, 1, 2 for bottom left, bottom right, top left; None before the
            first frame.
    """

    def __init__(self):
        self.corner = None


def _draw_counts(canvas, classes, class_names, font_size, boxes, panel):
    """Draws per-class counts and the total as a panel in a corner: the bottom-left
    one (box labels sit on the boxes' top edges), or, where that covers more of the
    boxes, the bottom-right or the top-left one, whichever covers the least (the
    top-right corner holds the frame rate); ``panel``'s corner while it covers no
    more than those."""
    ids, numbers = np.unique(np.asarray(classes, np.int64), return_counts=True)
    rows = [(f"{class_names[int(i)]}: {int(n)}", class_color(i)) for i, n in zip(ids, numbers)]
    rows.append((f"total: {int(numbers.sum())}", _BLACK))
    width = max(_tag(text, font_size, color).shape[1] for text, color in rows)
    tags = [_tag(text, font_size, color, width) for text, color in rows]
    panel_h = sum(tag.shape[0] for tag in tags)
    canvas_h, canvas_w = canvas.shape[:2]
    corners = [(0, canvas_h - panel_h), (canvas_w - width, canvas_h - panel_h), (0, 0)]
    coverage = [float(np_intersection(boxes, (x, y, x + width, y + panel_h)).sum()) for x, y in corners]
    least = int(np.argmin(coverage))  # the first of equals: bottom left
    if panel.corner is None or coverage[panel.corner] > coverage[least]:
        panel.corner = least
    x, y = corners[panel.corner]
    for tag in tags:
        _paste_tag(canvas, tag, (x, y))
        y += tag.shape[0]


def objectness_map(raw_level, num_classes):
    """Objectness heat map of one head: max over anchors of sigmoid(objectness).

    Args:
        raw_level: (Gh, Gw, A·(5+C)) raw head output of one image.
        num_classes: C.

    Returns:
        float32 (Gh, Gw) in 0–1.
    """
    raw = np.asarray(raw_level, np.float32)
    logits = raw.reshape(raw.shape[0], raw.shape[1], -1, 5 + num_classes)[..., 4]
    return (1.0 / (1.0 + np.exp(-logits))).max(axis=-1)


def heat_to_image(heat, image_hw, input_size, letterboxed=True):
    """Maps a heat map over the network input onto the original image.

    The map is resized to the S×S input, then the part covering the image (the
    letterbox's content, or the whole input for a plain resize) is resized to the
    image, so each value lands on the pixels it was computed from.

    Args:
        heat: float (Gh, Gw) map over the input (any grid size).
        image_hw: (height, width) of the original image.
        input_size: side S of the square network input.
        letterboxed: True if the image was letterboxed, False if plainly resized.

    Returns:
        float32 (H, W) map.
    """
    heat = cv2.resize(np.asarray(heat, np.float32), (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    if letterboxed:
        _, (new_h, new_w), (top, left) = letterbox_geometry(image_hw, input_size)
        heat = heat[top : top + new_h, left : left + new_w]
    return cv2.resize(heat, (int(image_hw[1]), int(image_hw[0])), interpolation=cv2.INTER_LINEAR)


def blend_heatmap(image, heat, alpha=0.5, colormap=cv2.COLORMAP_JET):
    """Blends a 0–1 heat map, coloured with an OpenCV colormap, over an image.

    Args:
        image: RGB uint8 (H, W, 3).
        heat: float (H, W) values in 0–1 (clipped); 1 is the hottest colour.
        alpha: weight of the colour map (0: image only, 1: map only).
        colormap: an OpenCV ``COLORMAP_*`` constant.

    Returns:
        new RGB uint8 (H, W, 3) array.
    """
    if heat.shape != image.shape[:2]:
        raise ValueError(f"Heat map shape {heat.shape} differs from the image's {image.shape[:2]}.")
    levels = np.clip(np.asarray(heat, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(np.ascontiguousarray(image), 1.0 - alpha, colored, alpha, 0.0)


# Opens and closes a window in a child process: with OpenCV's Qt backend a display
# that cannot be reached aborts the process instead of raising cv2.error.
_WINDOW_PROBE = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
_PROBE_TIMEOUT_S = 20


def _probe_window():
    """Why a child process could not open an OpenCV window, or None if it could."""
    try:
        result = subprocess.run([sys.executable, "-c", _WINDOW_PROBE], capture_output=True, text=True,
                                timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"opening a test window did not finish within {_PROBE_TIMEOUT_S} s"
    except OSError as exc:
        return f"cannot start the window test ({exc})"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return f"OpenCV cannot open a window: {lines[0] if lines else f'exit status {result.returncode}'}"


def display_problem():
    """Why no window can be opened here, or None when one can.

    On Linux a window needs an X11 or Wayland session (DISPLAY or WAYLAND_DISPLAY);
    when one is named, a child process opens a test window first, since a display
    that cannot be reached would otherwise abort this process.
    """
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return "neither DISPLAY nor WAYLAND_DISPLAY is set"
        return _probe_window()
    return None


class Viewer:
    """Shows images in an OpenCV window when a display exists, else does nothing.

    Without a display (or when OpenCV cannot open a window) a warning is logged once
    and every later ``show`` is a no-op, so a run keeps saving its outputs.

    Args:
        title: window title.
    """

    def __init__(self, title="predict"):
        self.title = title
        self.active = True
        self._opened = False
        self._seen_visible = False
        problem = display_problem()
        if problem:
            self._disable(problem)

    def _disable(self, why):
        self.active = False
        log.warning("No display available (%s): images are not shown; outputs are still saved.", why)

    def show(self, image, wait_ms=1):
        """Shows an RGB uint8 image and waits ``wait_ms`` ms for a key (0: until one).

        Returns:
            False when the user pressed q or Esc or closed the window, True otherwise.
        """
        if not self.active:
            return True
        try:
            cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            self._opened = True
            key = cv2.waitKey(wait_ms)
        except cv2.error as exc:
            self._disable(f"OpenCV cannot open a window: {str(exc).strip()}")
            return True
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            visible = -1.0
        # Closing the window with the mouse stops the run as q does. A backend that
        # does not report visibility answers below 1 from the start: only a window
        # once seen visible counts as closed.
        if visible >= 1:
            self._seen_visible = True
        elif self._seen_visible:
            self._opened = False
            return False
        return (key & 0xFF) not in _STOP_KEYS if key >= 0 else True

    def close(self):
        """Closes the window if one was opened."""
        if self._opened:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error as exc:
                log.debug("Closing the window failed: %s", exc)
            self._opened = False
