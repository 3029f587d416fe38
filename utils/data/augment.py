"""Image geometry and augmentation as TensorFlow ops, for use inside ``tf.data``.

Every function takes and returns ``(image, boxes, classes)`` where ``image`` is
(H, W, 3) RGB (uint8 or float 0–255 in, float32 0–255 out), ``boxes`` is (N, 4)
xyxy pixels of that image and ``classes`` is (N,) int32. Randomness comes only from
the ``seed`` argument (a shape-[2] integer tensor) through stateless random ops, so a
given seed always gives the same result.

Training augmentation follows the reference recipe: aspect jitter 0.3, scale
U(0.25, 2) of the input side, random placement on a grey canvas, horizontal flip with
probability 0.5, HSV jitter with gains (0.1, 0.7, 0.4). Boxes follow the image, are
clipped to the canvas and dropped when 1 pixel or less wide or high.

Resampling: the training transforms sample the canvas directly from the source
image (bilinear, edges clamped, no anti-aliasing), which computes only the S×S
output pixels; the validation letterbox resizes with anti-aliasing.
"""

import numpy as np
import tensorflow as tf

from utils.config import PAD_VALUE
from utils.image import letterbox_geometry

# Reference augmentation settings.
JITTER = 0.3
SCALE_RANGE = (0.25, 2.0)
FLIP_PROB = 0.5
HSV_GAINS = (0.1, 0.7, 0.4)
# Boxes this wide or high, or less, in canvas pixels are dropped after clipping.
MIN_BOX_SIZE = 1.0
# Mosaic: each tile is scaled by U(0.4, 1) of the input side and placed against the
# mosaic centre, which is drawn in U(0.3, 0.7) of the input side on each axis.
MOSAIC_SCALE_RANGE = (0.4, 1.0)
MOSAIC_CENTRE_RANGE = (0.3, 0.7)


# ----------------------------------------------------------------------------- boxes


def clip_boxes(boxes, classes, window, min_size=MIN_BOX_SIZE):
    """Clips boxes to a window and drops those left too small.

    Args:
        boxes: (N, 4) xyxy pixels.
        classes: (N,) class ids, filtered alongside the boxes.
        window: (x1, y1, x2, y2) pixels, the region boxes are clipped to.
        min_size: boxes whose clipped width or height is <= this are dropped.

    Returns:
        (boxes, classes): (M, 4) xyxy pixels inside the window and (M,) class ids,
        M <= N, in the input order.
    """
    boxes = tf.cast(boxes, tf.float32)
    x1, y1, x2, y2 = (tf.cast(v, tf.float32) for v in window)
    lo = tf.stack([x1, y1, x1, y1])
    hi = tf.stack([x2, y2, x2, y2])
    boxes = tf.minimum(tf.maximum(boxes, lo), hi)
    keep = tf.logical_and(boxes[:, 2] - boxes[:, 0] > min_size, boxes[:, 3] - boxes[:, 1] > min_size)
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)


def _place_boxes(boxes, image_w, image_h, new_w, new_h, dx, dy, flip):
    """Maps boxes (N, 4) xyxy image pixels onto the canvas, the image being resized to
    new_w × new_h, mirrored left-right within that frame when ``flip``, and its
    top-left corner placed at (dx, dy)."""
    boxes = tf.cast(boxes, tf.float32)
    sx, sy = new_w / image_w, new_h / image_h
    x1, x2 = boxes[:, 0] * sx, boxes[:, 2] * sx
    x1, x2 = tf.where(flip, new_w - x2, x1), tf.where(flip, new_w - x1, x2)
    return tf.stack([x1 + dx, boxes[:, 1] * sy + dy, x2 + dx, boxes[:, 3] * sy + dy], axis=-1)


# ------------------------------------------------------------------------ letterbox


def letterbox_boxes(boxes, image_size, input_size):
    """Maps boxes from image pixels to letterboxed input pixels (no clipping).

    Args:
        boxes: (N, 4) xyxy pixels of the image (array-like).
        image_size: (width, height) of the image in pixels.
        input_size: S, the square input side in pixels.

    Returns:
        float32 array (N, 4) xyxy pixels of the input.
    """
    image_w, image_h = image_size
    _, (new_h, new_w), (dy, dx) = letterbox_geometry((image_h, image_w), input_size)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scale = np.array([new_w / image_w, new_h / image_h] * 2, np.float32)
    return boxes * scale + np.array([dx, dy, dx, dy], np.float32)


def letterbox(image, boxes, classes, input_size, min_size=MIN_BOX_SIZE):
    """Resizes an image to fit the square input, keeping its aspect, on a grey canvas.

    Same geometry as ``utils.image.letterbox_geometry``, computed with TensorFlow
    ops; resized bilinearly with anti-aliasing.

    Args:
        image: (H, W, 3) uint8 or float RGB.
        boxes: (N, 4) xyxy pixels of the image.
        classes: (N,) int class ids.
        input_size: S.
        min_size: boxes <= this wide or high after the resize are dropped.

    Returns:
        image float32 (S, S, 3) 0–255, boxes (M, 4) xyxy pixels of the input,
        classes (M,).
    """
    size = int(input_size)
    shape = tf.shape(image)
    # float64 so the rounding agrees with utils.image.letterbox_geometry's Python arithmetic.
    ih, iw = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    s = tf.constant(size, tf.float64)
    scale = tf.minimum(s / iw, s / ih)
    new_w = tf.clip_by_value(tf.cast(tf.round(iw * scale), tf.int32), 1, size)
    new_h = tf.clip_by_value(tf.cast(tf.round(ih * scale), tf.int32), 1, size)
    dx, dy = (size - new_w) // 2, (size - new_h) // 2
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    canvas = tf.pad(
        resized,
        [[dy, size - new_h - dy], [dx, size - new_w - dx], [0, 0]],
        constant_values=float(PAD_VALUE),
    )
    canvas = tf.ensure_shape(canvas, (size, size, 3))
    iw, ih, new_w, new_h, dx, dy = (tf.cast(v, tf.float32) for v in (iw, ih, new_w, new_h, dx, dy))
    boxes = _place_boxes(boxes, iw, ih, new_w, new_h, dx, dy, tf.constant(False))
    boxes, classes = clip_boxes(boxes, classes, (0, 0, size, size), min_size)
    return canvas, boxes, classes


# ----------------------------------------------------------------------- resampling


def _visible_span(start, length, offset, size):
    """Canvas pixels [lo, hi) within [start, start + length) whose centres fall on an
    image occupying [offset, offset + size) (float32 scalars; lo, hi int32)."""
    lo = tf.cast(tf.math.ceil(offset - 0.5), tf.int32)
    hi = tf.cast(tf.math.ceil(offset + size - 0.5), tf.int32)
    lo = tf.clip_by_value(lo, start, start + length)
    hi = tf.clip_by_value(hi, lo, start + length)
    return lo, hi


def _render(image, window, new_w, new_h, dx, dy, flip):
    """Draws part of a canvas holding one resized, placed, maybe mirrored image.

    Canvas pixel column j (centre j + 0.5) lies at t = j + 0.5 − dx in the resized
    image's frame (mirrored: new_w − t), i.e. at source column t · w / new_w − 0.5
    (pixel-centre coordinates). crop_and_resize samples exactly such linear maps.
    Only the canvas pixels covered by the image are sampled; the rest is padded with
    the pad value. The source gets a one-pixel replicated border so the half pixel
    at each edge clamps like ``tf.image.resize`` instead of turning grey.

    Args:
        image: (H, W, 3) source image.
        window: (x0, y0, out_w, out_h) int32 scalars, the canvas region drawn.
        new_w, new_h: float32 scalars, resized image size.
        dx, dy: float32 scalars, canvas position of the resized image's top-left.
        flip: bool scalar, mirror the image left-right.

    Returns:
        float32 (out_h, out_w, 3).
    """
    x0, y0, out_w, out_h = (tf.cast(v, tf.int32) for v in window)
    shape = tf.shape(image)
    ih, iw = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    # Edge replication by concatenation (several times faster than a SYMMETRIC pad).
    padded = tf.concat([image[:1], image, image[-1:]], axis=0)
    padded = tf.concat([padded[:, :1], padded, padded[:, -1:]], axis=1)
    ax, ay = iw / new_w, ih / new_h

    vx0, vx1 = _visible_span(x0, out_w, dx, new_w)
    vy0, vy1 = _visible_span(y0, out_h, dy, new_h)
    vis_w, vis_h = vx1 - vx0, vy1 - vy0
    # crop_and_resize needs a positive size: sample at least one pixel, slice after.
    crop_w, crop_h = tf.maximum(vis_w, 1), tf.maximum(vis_h, 1)

    tx0 = tf.cast(vx0, tf.float32) + 0.5 - dx
    ty0 = tf.cast(vy0, tf.float32) + 0.5 - dy
    # Source coordinate (in the padded image) of the first sampled pixel, and the step.
    ux = tf.where(flip, new_w - tx0, tx0) * ax + 0.5
    step_x = tf.where(flip, -ax, ax)
    uy = ty0 * ay + 0.5
    den_x, den_y = iw + 1.0, ih + 1.0  # padded side − 1
    last_x = ux + step_x * tf.cast(crop_w - 1, tf.float32)
    last_y = uy + ay * tf.cast(crop_h - 1, tf.float32)
    crop_box = tf.stack([uy / den_y, ux / den_x, last_y / den_y, last_x / den_x])
    sampled = tf.image.crop_and_resize(
        padded[None],
        crop_box[None],
        tf.zeros([1], tf.int32),
        tf.stack([crop_h, crop_w]),
        method="bilinear",
        extrapolation_value=float(PAD_VALUE),
    )[0, :vis_h, :vis_w]
    return tf.pad(
        sampled,
        [[vy0 - y0, y0 + out_h - vy1], [vx0 - x0, x0 + out_w - vx1], [0, 0]],
        constant_values=float(PAD_VALUE),
    )


def _jittered_size(image_w, image_h, target, uniforms, jitter, scale_range):
    """New (w, h) after aspect jitter and scaling, as in the reference: the longer
    side becomes scale · target and the other follows the jittered aspect."""
    lo, hi = 1.0 - jitter, 1.0 + jitter
    aspect = image_w / image_h * (lo + (hi - lo) * uniforms[0]) / (lo + (hi - lo) * uniforms[1])
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * uniforms[2]
    side = tf.floor(scale * target)
    new_w = tf.where(aspect < 1.0, tf.floor(side * aspect), side)
    new_h = tf.where(aspect < 1.0, side, tf.floor(side / aspect))
    return tf.maximum(new_w, 1.0), tf.maximum(new_h, 1.0)


def _image_size(image):
    shape = tf.shape(image)
    return tf.cast(shape[1], tf.float32), tf.cast(shape[0], tf.float32)


# --------------------------------------------------------------------- augmentation


def random_place(
    image,
    boxes,
    classes,
    input_size,
    seed,
    jitter=JITTER,
    scale_range=SCALE_RANGE,
    flip_prob=FLIP_PROB,
    min_size=MIN_BOX_SIZE,
):
    """Aspect jitter, random scale, random placement on a grey canvas, random flip.

    new aspect = aspect · U(1−j, 1+j) / U(1−j, 1+j); the longer side becomes
    U(scale_range) · S; the resized image's top-left lies at U(0, 1) · (S − new size)
    on each axis (negative when the image is larger than the canvas, which then crops
    it); it is mirrored left-right with probability ``flip_prob``.

    Args:
        image: (H, W, 3) uint8 or float RGB.
        boxes: (N, 4) xyxy pixels of the image.
        classes: (N,) int class ids.
        input_size: S, the canvas side.
        seed: shape-[2] int tensor for the stateless random ops.
        jitter: aspect jitter amount.
        scale_range: (low, high) of the scale relative to S.
        flip_prob: probability of the horizontal flip.
        min_size: boxes <= this wide or high after clipping are dropped.

    Returns:
        image float32 (S, S, 3) 0–255, boxes (M, 4) xyxy canvas pixels, classes (M,).
    """
    size = int(input_size)
    target = float(size)
    u = tf.random.stateless_uniform([6], seed)
    iw, ih = _image_size(image)
    new_w, new_h = _jittered_size(iw, ih, target, u, jitter, scale_range)
    dx = tf.floor(u[3] * (target - new_w))
    dy = tf.floor(u[4] * (target - new_h))
    flip = u[5] < flip_prob
    window = (0, 0, tf.constant(size), tf.constant(size))
    canvas = tf.ensure_shape(_render(image, window, new_w, new_h, dx, dy, flip), (size, size, 3))
    boxes = _place_boxes(boxes, iw, ih, new_w, new_h, dx, dy, flip)
    boxes, classes = clip_boxes(boxes, classes, (0, 0, size, size), min_size)
    return canvas, boxes, classes


@tf.function(jit_compile=True, reduce_retracing=True)
def _scale_hsv(image, factors):
    """Multiplies hue (wrapping), saturation and value (clipped) of an RGB image.

    Written with plain element-wise ops (the same formulas as
    ``tf.image.rgb_to_hsv``/``hsv_to_rgb``) and compiled with XLA, which fuses them
    into one pass: inside ``tf.data`` this is many times faster than the two image
    ops and the float ``floormod`` they would need. The canvas shape is fixed in the
    pipeline, so it compiles once.

    Args:
        image: (H, W, 3) float32 RGB 0–255.
        factors: (3,) float32 hue, saturation, value factors.

    Returns:
        float32 (H, W, 3) RGB 0–255.
    """
    rgb = image * (1.0 / 255.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = tf.maximum(tf.maximum(r, g), b)
    chroma = value - tf.minimum(tf.minimum(r, g), b)
    inv_chroma = 1.0 / tf.maximum(chroma, 1e-12)
    # Hue in sixths of the colour circle, [0, 6).
    hue = tf.where(
        value == r,
        (g - b) * inv_chroma,
        tf.where(value == g, (b - r) * inv_chroma + 2.0, (r - g) * inv_chroma + 4.0),
    )
    hue = tf.where(hue < 0.0, hue + 6.0, hue) * factors[0]
    hue = hue - 6.0 * tf.floor(hue * (1.0 / 6.0))
    sat = tf.minimum(chroma / tf.maximum(value, 1e-12) * factors[1], 1.0)
    value = tf.minimum(value * factors[2], 1.0)
    k = hue[..., None] + tf.constant([5.0, 3.0, 1.0])
    k = k - 6.0 * tf.floor(k * (1.0 / 6.0))
    weight = tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)
    return (value * 255.0)[..., None] * (1.0 - sat[..., None] * weight)


def random_hsv(image, seed, gains=HSV_GAINS):
    """Multiplies hue, saturation and value by 1 + U(−1, 1) · gains.

    Hue wraps around the colour circle; saturation and value are clipped to [0, 1]
    (as ``tf.image.rgb_to_hsv`` defines them on 0–1 RGB).

    Args:
        image: (H, W, 3) float RGB 0–255.
        seed: shape-[2] int tensor.
        gains: (hue, saturation, value) amounts.

    Returns:
        float32 (H, W, 3) RGB 0–255, same shape.
    """
    # Drawn outside the XLA function: stateless ops may draw other numbers under XLA.
    factors = 1.0 + tf.random.stateless_uniform([3], seed, -1.0, 1.0) * tf.constant(gains, tf.float32)
    return _scale_hsv(tf.cast(image, tf.float32), factors)


def mosaic(
    images,
    boxes,
    classes,
    input_size,
    seed,
    jitter=JITTER,
    scale_range=MOSAIC_SCALE_RANGE,
    centre_range=MOSAIC_CENTRE_RANGE,
    flip_prob=FLIP_PROB,
    min_size=MIN_BOX_SIZE,
):
    """Combines four images into the four quadrants around a random centre.

    The centre (cx, cy) is drawn in U(centre_range) · S on each axis. Image k
    (top-left, top-right, bottom-left, bottom-right) gets its own aspect jitter, scale
    U(scale_range) · S and flip, and is placed with the corner facing the centre on
    the centre; only the part inside its quadrant is kept. Its boxes are clipped to
    the quadrant and dropped when <= ``min_size`` wide or high.

    Args:
        images: sequence of four (H_k, W_k, 3) uint8 or float RGB images.
        boxes: sequence of four (N_k, 4) xyxy pixels of the matching image.
        classes: sequence of four (N_k,) int class ids.
        input_size: S, the canvas side.
        seed: shape-[2] int tensor.
        jitter: aspect jitter amount.
        scale_range: (low, high) of each tile's scale relative to S.
        centre_range: (low, high) of the centre position relative to S.
        flip_prob: probability of each tile's horizontal flip.
        min_size: minimum box side kept, pixels.

    Returns:
        image float32 (S, S, 3) 0–255, boxes (M, 4) xyxy canvas pixels, classes (M,)
        (tiles in the order above).
    """
    if not (len(images) == len(boxes) == len(classes) == 4):
        raise ValueError(
            f"mosaic needs four images with their boxes and classes, got {len(images)}, {len(boxes)}, {len(classes)}"
        )
    size = int(input_size)
    target = float(size)
    u = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(seed, 0))
    lo, hi = centre_range
    cx = tf.cast(tf.floor((lo + (hi - lo) * u[0]) * target), tf.int32)
    cy = tf.cast(tf.floor((lo + (hi - lo) * u[1]) * target), tf.int32)
    cxf, cyf = tf.cast(cx, tf.float32), tf.cast(cy, tf.float32)
    windows = [(0, 0, cx, cy), (cx, 0, size - cx, cy), (0, cy, cx, size - cy), (cx, cy, size - cx, size - cy)]

    tiles, all_boxes, all_classes = [], [], []
    for k in range(4):
        uk = tf.random.stateless_uniform([4], tf.random.experimental.stateless_fold_in(seed, k + 1))
        iw, ih = _image_size(images[k])
        new_w, new_h = _jittered_size(iw, ih, target, uk, jitter, scale_range)
        left, top = k in (0, 2), k in (0, 1)
        dx = cxf - new_w if left else cxf
        dy = cyf - new_h if top else cyf
        flip = uk[3] < flip_prob
        tiles.append(_render(images[k], windows[k], new_w, new_h, dx, dy, flip))
        x0, y0, ww, wh = windows[k]
        placed = _place_boxes(boxes[k], iw, ih, new_w, new_h, dx, dy, flip)
        kept_boxes, kept_classes = clip_boxes(placed, classes[k], (x0, y0, x0 + ww, y0 + wh), min_size)
        all_boxes.append(kept_boxes)
        all_classes.append(tf.cast(kept_classes, tf.int32))
    top_row = tf.concat([tiles[0], tiles[1]], axis=1)
    bottom_row = tf.concat([tiles[2], tiles[3]], axis=1)
    canvas = tf.ensure_shape(tf.concat([top_row, bottom_row], axis=0), (size, size, 3))
    return canvas, tf.concat(all_boxes, axis=0), tf.concat(all_classes, axis=0)


def mixup(sample_a, sample_b):
    """Blends two augmented samples 50/50 and keeps the boxes of both.

    Args:
        sample_a: (image, boxes, classes) with image float (S, S, 3).
        sample_b: the same, same S.

    Returns:
        (image, boxes, classes): the mean image, and boxes/classes of ``sample_a``
        followed by those of ``sample_b``.
    """
    image_a, boxes_a, classes_a = sample_a
    image_b, boxes_b, classes_b = sample_b
    image = 0.5 * tf.cast(image_a, tf.float32) + 0.5 * tf.cast(image_b, tf.float32)
    boxes = tf.concat([tf.cast(boxes_a, tf.float32), tf.cast(boxes_b, tf.float32)], axis=0)
    classes = tf.concat([tf.cast(classes_a, tf.int32), tf.cast(classes_b, tf.int32)], axis=0)
    return image, boxes, classes
