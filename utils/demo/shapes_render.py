"""Drawing the synthetic shapes dataset: one image of geometric shapes and its boxes.

Five classes (``SHAPE_CLASSES``) are drawn in varied colours, sizes, aspect ratios and
rotations on textured backgrounds, with limited overlap. Every image comes from its own
random stream keyed by ``(seed, index)``: image 7 is the same whether 10 or 300 images
are generated, and the same seed always draws the same pixels.

Boxes are measured on the drawn coverage masks after all occlusions, so each box
tightly bounds the visible part of its shape. They are given as VOC does: 1-based,
inclusive integer pixel coordinates. :mod:`utils.demo.shapes_voc` writes the images
as a VOC dataset.
"""

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from utils.boxes import np_iou

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")
# A pixel belongs to a shape's box when the visible shape covers at least this much of
# it; fainter antialiased fringe pixels are not visibly tinted once noise and JPEG
# compression are applied.
BOX_COVERAGE = 0.3
# Subpixel resolution used to rasterise polygons into area-coverage masks.
_SUPERSAMPLE = 4
_FILL_SHIFT = 4
# Placement attempts per object before it is left out of the image.
_PLACEMENT_TRIES = 40
# Colour draws per object while looking for one that contrasts with what lies beneath.
_COLOR_TRIES = 24
# Rotation limits (degrees) that keep each class recognisable: a square turned by 45
# degrees reads as a diamond and a cross as an "x".
_MAX_ROTATION = {"circle": 180.0, "square": 25.0, "triangle": 180.0, "star": 180.0, "cross": 30.0}
# Random-stream keys: images use (IMAGE_STREAM, index), splits use (SPLIT_STREAM,).
IMAGE_STREAM = 0
SPLIT_STREAM = 1


@dataclass(frozen=True)
class ShapeOptions:
    """What the generated images contain; every field has a working default.

    Attributes:
        min_size: smallest image side in pixels (width and height are drawn
            independently from ``[min_size, max_size]``).
        max_size: largest image side in pixels.
        max_objects: most shapes per image; an image that is not empty gets a number
            drawn uniformly from ``1..max_objects``.
        empty_fraction: probability that an image has no shape at all.
        min_object_size: smallest shape size in pixels, as the geometric mean of the
            unrotated shape's width and height.
        max_object_fraction: largest shape size as a fraction of the image's shorter
            side. Sizes are drawn log-uniformly in between.
        max_aspect: largest stretch of a shape (width/height or height/width).
        max_occlusion: largest fraction of a shape that later shapes may cover.
        max_box_iou: largest IoU between the boxes of two shapes in one image.
        min_contrast: wanted RGB distance between a shape's colour and the mean colour
            beneath it (0-255 scale, Euclidean).
        difficult_min_side: a shape whose visible box has a side shorter than this
            (pixels) is marked difficult.
        difficult_visibility: a shape with less than this fraction of its area visible
            is marked difficult.
    """

    min_size: int = 256
    max_size: int = 480
    max_objects: int = 6
    empty_fraction: float = 0.05
    min_object_size: float = 12.0
    max_object_fraction: float = 0.5
    max_aspect: float = 1.7
    max_occlusion: float = 0.3
    max_box_iou: float = 0.4
    min_contrast: float = 90.0
    difficult_min_side: int = 12
    difficult_visibility: float = 0.8

    def __post_init__(self):
        for name in ("min_size", "max_size", "max_objects", "difficult_min_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"ShapeOptions.{name} must be an int, got {value!r}.")
        if self.min_size < 64:
            raise ValueError(f"min_size must be at least 64 pixels, got {self.min_size}.")
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size ({self.max_size}) must not be smaller than min_size ({self.min_size})."
            )
        if self.max_objects < 0:
            raise ValueError(f"max_objects must be 0 or more, got {self.max_objects}.")
        for name in ("empty_fraction", "max_occlusion", "max_box_iou", "difficult_visibility"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
        if not 0.0 < self.max_object_fraction <= 1.0:
            raise ValueError(
                f"max_object_fraction must lie in (0, 1], got {self.max_object_fraction!r}."
            )
        if self.min_object_size < 4:
            raise ValueError(f"min_object_size must be at least 4 pixels, got {self.min_object_size!r}.")
        largest = self.max_object_fraction * self.min_size
        if self.min_object_size > largest:
            raise ValueError(
                f"min_object_size ({self.min_object_size}) exceeds max_object_fraction * min_size "
                f"({largest:g}); lower min_object_size or raise max_object_fraction."
            )
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be at least 1, got {self.max_aspect!r}.")
        if self.min_contrast < 0:
            raise ValueError(f"min_contrast must be 0 or more, got {self.min_contrast!r}.")


@dataclass
class ShapeObject:
    """One drawn shape.

    Attributes:
        name: class name, one of ``SHAPE_CLASSES``.
        box: ``(xmin, ymin, xmax, ymax)`` VOC pixels: 1-based, inclusive, ints.
        difficult: VOC "difficult" flag (small or heavily covered shape).
        color: RGB fill colour (0-255) before shading and noise.
        mask: float32 ``(height, width)`` visible coverage of the shape in [0, 1].
    """

    name: str
    box: tuple
    difficult: bool
    color: tuple
    mask: np.ndarray = field(repr=False)


@dataclass
class ShapeImage:
    """One rendered image and its shapes.

    Attributes:
        image: uint8 ``(height, width, 3)`` RGB pixels, before JPEG compression.
        objects: the shapes, in drawing order (later ones lie on top).
    """

    image: np.ndarray = field(repr=False)
    objects: list

    @property
    def height(self):
        """Image height in pixels."""
        return self.image.shape[0]

    @property
    def width(self):
        """Image width in pixels."""
        return self.image.shape[1]


def stream_rng(seed, *key):
    """Returns the random generator of one stream of dataset ``seed``.

    Args:
        seed: dataset seed, a non-negative int.
        *key: the stream's key, e.g. ``(IMAGE_STREAM, index)`` or ``(SPLIT_STREAM,)``.

    Returns:
        numpy.random.Generator.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def image_rng(seed, index):
    """Returns the random generator that draws image ``index`` of dataset ``seed``.

    Args:
        seed: dataset seed, a non-negative int.
        index: 0-based image index.

    Returns:
        numpy.random.Generator.
    """
    return stream_rng(seed, IMAGE_STREAM, index)


def check_seed(seed):
    """Raises ValueError unless ``seed`` is a non-negative int."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")


def _random_color(rng, sat=(0.0, 1.0), val=(0.0, 1.0)):
    """Draws an RGB colour (float, 0-255) from HSV ranges."""
    h = rng.random()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


# ----------------------------------------------------------------------------- background


# Smooth background layers are drawn this many times smaller, then upsampled.
_BACKGROUND_SCALE = 4


def _background(rng, height, width):
    """Draws a textured background: float32 ``(height, width, 3)`` RGB, 0-255."""
    lh = -(-height // _BACKGROUND_SCALE) + 1
    lw = -(-width // _BACKGROUND_SCALE) + 1
    ys = np.arange(lh, dtype=np.float32)[:, None]
    xs = np.arange(lw, dtype=np.float32)[None, :]
    c0 = _random_color(rng, sat=(0.0, 0.7), val=(0.15, 0.95))
    c1 = _random_color(rng, sat=(0.0, 0.7), val=(0.15, 0.95))
    kind = rng.choice(["linear", "radial", "clouds", "flat", "stripes"], p=[0.3, 0.2, 0.3, 0.1, 0.1])
    if kind == "linear":
        angle = rng.uniform(0.0, 2.0 * math.pi)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        low = c0 + t[..., None] * (c1 - c0)
    elif kind == "radial":
        cx = rng.uniform(-0.2, 1.2) * lw
        cy = rng.uniform(-0.2, 1.2) * lh
        d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        t = (d / max(float(d.max()), 1.0)) ** rng.uniform(0.5, 2.0)
        low = c0 + t[..., None] * (c1 - c0)
    elif kind == "clouds":
        gh, gw = rng.integers(2, 7, size=2)
        grid = c0 + rng.uniform(-1.0, 1.0, (gh, gw, 3)).astype(np.float32) * rng.uniform(25.0, 80.0)
        low = cv2.resize(grid.astype(np.float32), (lw, lh), interpolation=cv2.INTER_CUBIC)
    else:
        low = np.broadcast_to(c0, (lh, lw, 3))
    low = np.ascontiguousarray(low, dtype=np.float32)
    if rng.random() < 0.5:
        _add_blobs(rng, low)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR)
    if kind == "stripes":
        fy = np.arange(height, dtype=np.float32)[:, None]
        fx = np.arange(width, dtype=np.float32)[None, :]
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(8.0, 60.0)
        phase = (fx * math.cos(angle) + fy * math.sin(angle)) * np.float32(2.0 * math.pi / period)
        wave = np.sin(phase + np.float32(rng.uniform(0.0, 2.0 * math.pi)))
        img += wave[..., None] * ((c1 - c0) * np.float32(rng.uniform(0.1, 0.3)))
    if rng.random() < 0.5:
        _add_lines(rng, img)
    return img


def _add_blobs(rng, img):
    """Blends a few soft, irregular colour blobs into ``img`` in place."""
    height, width = img.shape[:2]
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    for _ in range(rng.integers(1, 6)):
        color = _random_color(rng, sat=(0.0, 0.8), val=(0.1, 1.0))
        alpha = np.float32(rng.uniform(0.15, 0.45))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx = rng.uniform(0.05, 0.25) * width
        ry = rng.uniform(0.05, 0.25) * height
        u = (xs - cx) / rx
        v = (ys - cy) / ry
        # Two offset lobes make the blob irregular, so it does not read as a circle.
        ox, oy = rng.uniform(-0.8, 0.8, size=2)
        m = alpha * np.maximum(np.exp(-0.5 * (u**2 + v**2)), 0.7 * np.exp(-((u - ox) ** 2 + (v - oy) ** 2)))
        img += m[..., None] * (color - img)


def _add_lines(rng, img):
    """Blends random straight lines and scribbles into ``img`` in place."""
    height, width = img.shape[:2]
    layer = img.copy()
    for _ in range(rng.integers(1, 11)):
        color = tuple(float(c) for c in _random_color(rng, sat=(0.0, 1.0), val=(0.0, 1.0)))
        thickness = int(rng.integers(1, 4))
        n_points = 2 if rng.random() < 0.6 else int(rng.integers(3, 7))
        pts = np.stack(
            [rng.uniform(-0.1, 1.1, n_points) * width, rng.uniform(-0.1, 1.1, n_points) * height], axis=1
        )
        cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, color, thickness, cv2.LINE_AA)
    alpha = rng.uniform(0.3, 0.8)
    img += alpha * (layer - img)


def _add_noise(rng, img, sigma):
    """Adds zero-mean pixel noise of standard deviation ``sigma`` to ``img`` in place."""
    # The sum of two uniform bytes (triangular, std ~104.5) looks like sensor noise and
    # is several times cheaper to draw than Gaussian samples.
    raw = np.frombuffer(rng.bytes(2 * img.size), np.uint8).reshape(2, *img.shape)
    noise = raw[0].astype(np.float32)
    noise += raw[1]
    noise -= np.float32(255.0)
    noise *= np.float32(sigma / 104.5)
    img += noise


# ----------------------------------------------------------------------------- shapes


def _unit_polygon(name, rng):
    """Returns the outline of a class as float32 ``(N, 2)`` xy points within [-1, 1]^2."""
    if name == "circle":
        t = np.linspace(0.0, 2.0 * math.pi, 96, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    elif name == "triangle":
        apex = rng.uniform(-0.6, 0.6)
        pts = np.array([[-1, 1], [1, 1], [apex, -1]], np.float64)
    elif name == "star":
        inner = rng.uniform(0.38, 0.55)
        t = np.arange(10) * (math.pi / 5.0) - math.pi / 2.0
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif name == "cross":
        a = rng.uniform(0.22, 0.38)
        pts = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
             [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
            np.float64,
        )
    else:
        raise ValueError(f"Unknown shape class {name!r}; expected one of {SHAPE_CLASSES}.")
    return pts.astype(np.float32)


def _rasterize(poly, height, width):
    """Antialiased (4x4 supersampled) coverage of a polygon, on the patch it touches.

    Args:
        poly: float ``(N, 2)`` xy points in image pixels, where pixel ``(i, j)`` spans
            ``[j, j + 1) x [i, i + 1)``.
        height: image height.
        width: image width.

    Returns:
        ``(y0, x0, alpha)``: the patch's top-left corner and its float32 coverage.
    """
    x0 = max(int(math.floor(float(poly[:, 0].min()))) - 1, 0)
    y0 = max(int(math.floor(float(poly[:, 1].min()))) - 1, 0)
    x1 = min(int(math.ceil(float(poly[:, 0].max()))) + 1, width)
    y1 = min(int(math.ceil(float(poly[:, 1].max()))) + 1, height)
    s = _SUPERSAMPLE
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    # OpenCV puts pixel centres at integer coordinates, hence the half-pixel offset.
    pts = (poly - np.array([x0, y0], np.float32)) * s - 0.5
    pts = np.round(pts * (1 << _FILL_SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_8, shift=_FILL_SHIFT)
    alpha = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return y0, x0, alpha.astype(np.float32) / 255.0


def _mask_box(mask):
    """0-based inclusive ``(x0, y0, x1, y1)`` of pixels with coverage >= BOX_COVERAGE, or None."""
    rows = np.flatnonzero((mask >= BOX_COVERAGE).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((mask >= BOX_COVERAGE).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])

@dataclass
class _Placed:
    """A shape being drawn: full-image visible coverage and bookkeeping."""

    name: str
    color: np.ndarray
    visible: np.ndarray
    area: float
    visible_area: float
    box: tuple
    low_contrast: bool


def _try_place(rng, name, canvas, placed, options):
    """Looks for a position of one shape that respects the overlap limits.

    Returns:
        ``(y0, x0, alpha, box)`` of an accepted placement, or None.
    """
    height, width = canvas.shape[:2]
    lo = math.log(options.min_object_size)
    hi = math.log(max(options.max_object_fraction * min(height, width), options.min_object_size))
    for _ in range(_PLACEMENT_TRIES):
        size = math.exp(rng.uniform(lo, hi))
        aspect = math.exp(rng.uniform(-1.0, 1.0) * math.log(options.max_aspect))
        half = np.array([size * math.sqrt(aspect), size / math.sqrt(aspect)], np.float32) / 2.0
        angle = math.radians(rng.uniform(-1.0, 1.0) * _MAX_ROTATION[name])
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
        poly = (_unit_polygon(name, rng) * half) @ rot.T
        lo_xy, hi_xy = poly.min(axis=0), poly.max(axis=0)
        span = hi_xy - lo_xy
        room = np.array([width, height], np.float32) - 2.0
        if np.any(span > room):
            poly *= float(np.min(room / span)) * 0.95
            lo_xy, hi_xy = poly.min(axis=0), poly.max(axis=0)
        cx = rng.uniform(1.0 - lo_xy[0], width - 1.0 - hi_xy[0])
        cy = rng.uniform(1.0 - lo_xy[1], height - 1.0 - hi_xy[1])
        poly = poly + np.array([cx, cy], np.float32)
        y0, x0, alpha = _rasterize(poly, height, width)
        local = _mask_box(alpha)
        if local is None:
            continue
        box = (local[0] + x0, local[1] + y0, local[2] + x0, local[3] + y0)
        earlier = np.array([p.box for p in placed]).reshape(-1, 4)
        if np.any(np_iou(box, earlier, inclusive=True) > options.max_box_iou):
            continue
        ph, pw = alpha.shape
        ok = True
        for p in placed:
            vis = p.visible[y0:y0 + ph, x0:x0 + pw]
            remaining = p.visible_area - float((vis * alpha).sum())
            if remaining < (1.0 - options.max_occlusion) * p.area:
                ok = False
                break
        if ok:
            return y0, x0, alpha, box
    return None


def _pick_color(rng, canvas, y0, x0, alpha, placed, options):
    """Draws a fill colour that stands out from the background and shapes beneath.

    Returns:
        ``(color, contrast)``: float32 RGB and its smallest distance to what lies under it.
    """
    ph, pw = alpha.shape
    weight = alpha / max(float(alpha.sum()), 1e-6)
    under = (canvas[y0:y0 + ph, x0:x0 + pw] * weight[..., None]).sum(axis=(0, 1))
    references = [under]
    for p in placed:
        if float((p.visible[y0:y0 + ph, x0:x0 + pw] * alpha).sum()) > 0.5:
            references.append(p.color)
    best, best_contrast = None, -1.0
    for _ in range(_COLOR_TRIES):
        color = _random_color(rng, sat=(0.2, 1.0), val=(0.15, 1.0))
        contrast = min(float(np.linalg.norm(color - ref)) for ref in references)
        if contrast > best_contrast:
            best, best_contrast = color, contrast
        if contrast >= options.min_contrast:
            break
    return best, best_contrast


def render_image(seed, index, options=None):
    """Draws one image of the dataset, with its shapes' boxes and coverage masks.

    ``utils.demo.shapes_voc.generate_dataset`` writes exactly this image (as JPEG) for
    the same ``seed``, ``index`` and options.

    Args:
        seed: dataset seed, a non-negative int.
        index: 0-based image index (the file id is ``index + 1``).
        options: ShapeOptions, or None for the defaults.

    Returns:
        ShapeImage with uint8 ``(H, W, 3)`` RGB pixels and its ShapeObjects, whose boxes
        are VOC ``(xmin, ymin, xmax, ymax)``: 1-based inclusive pixels.
    """
    check_seed(seed)
    options = options or ShapeOptions()
    rng = image_rng(seed, index)
    width = int(rng.integers(options.min_size, options.max_size + 1))
    height = int(rng.integers(options.min_size, options.max_size + 1))
    canvas = _background(rng, height, width)

    if options.max_objects == 0 or rng.random() < options.empty_fraction:
        n_objects = 0
    else:
        n_objects = int(rng.integers(1, options.max_objects + 1))

    placed = []
    for _ in range(n_objects):
        name = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        spot = _try_place(rng, name, canvas, placed, options)
        if spot is not None:
            placed.append(_paint_shape(rng, canvas, name, spot, placed, options))

    _add_noise(rng, canvas, sigma=rng.uniform(2.0, 10.0))
    np.clip(canvas, 0.0, 255.0, out=canvas)
    image = (canvas + np.float32(0.5)).astype(np.uint8)
    objects = [obj for obj in (_shape_object(p, options) for p in placed) if obj is not None]
    return ShapeImage(image=image, objects=objects)


def _paint_shape(rng, canvas, name, spot, placed, options):
    """Blends one shape into ``canvas`` (float32 (H, W, 3), in place) and returns its
    _Placed record; the shapes painted before lose what it covers."""
    height, width = canvas.shape[:2]
    y0, x0, alpha, box = spot
    color, contrast = _pick_color(rng, canvas, y0, x0, alpha, placed, options)
    ph, pw = alpha.shape
    # A gentle linear shading across the shape, so fills are not perfectly flat.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    gy = np.linspace(-1.0, 1.0, ph, dtype=np.float32)[:, None] * math.sin(angle)
    gx = np.linspace(-1.0, 1.0, pw, dtype=np.float32)[None, :] * math.cos(angle)
    shade = 1.0 + rng.uniform(0.0, 0.15) * (gx + gy) / math.sqrt(2.0)
    fill = color * shade[..., None]
    patch = canvas[y0:y0 + ph, x0:x0 + pw]
    patch += alpha[..., None] * (fill - patch)
    for p in placed:
        vis = p.visible[y0:y0 + ph, x0:x0 + pw]
        p.visible_area -= float((vis * alpha).sum())
        vis *= 1.0 - alpha
    visible = np.zeros((height, width), np.float32)
    visible[y0:y0 + ph, x0:x0 + pw] = alpha
    area = float(alpha.sum())
    return _Placed(
        name=name,
        color=color,
        visible=visible,
        area=area,
        visible_area=area,
        box=box,
        low_contrast=contrast < 0.5 * options.min_contrast,
    )


def _shape_object(placed, options):
    """The ShapeObject of a painted shape (VOC 1-based box of what stays visible,
    difficult flag), or None when nothing of it is visible."""
    box = _mask_box(placed.visible)
    if box is None:
        return None
    short_side = min(box[2] - box[0], box[3] - box[1]) + 1
    visibility = placed.visible_area / max(placed.area, 1e-6)
    difficult = (
        short_side < options.difficult_min_side
        or visibility < options.difficult_visibility
        or placed.low_contrast
    )
    return ShapeObject(
        name=placed.name,
        box=(box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1),
        difficult=bool(difficult),
        color=tuple(int(round(float(c))) for c in placed.color),
        mask=placed.visible,
    )
