"""Builds a detection dataset whose classes look alike, for judging whether a training
recipe learns to tell similar classes apart and not only to find objects.

Ten classes are the digits 0-9, rendered in the fonts that matplotlib ships (DejaVu
Sans, Serif and Mono, STIX and Computer Modern, upright, bold and slanted): they
differ in shape detail only (6/8/9/0, 1/7, 3/5/8). An eleventh class, ``coin``, is
cut from scikit-image's coins photo and looks like none of them. Everything is pasted
onto real photos (scikit-image's grass, gravel, brick, Hubble deep field, cameraman)
with a random colour, an optional plate behind the glyph, rotation, blur, brightness
and scale (two size ranges: small and large objects), among unlabeled distractors:
capital letters that resemble no digit, drawn the same way, and a few stray strokes.

Boxes are the glyph's ink, not its text cell. The photos are read from scikit-image's
data folder, as ``real_photos.py`` does (an installed ``skimage`` or its wheel given
with ``--source``); the fonts from the installed matplotlib. Nothing is downloaded.
Writes ``images/``, ``classes.txt``, ``groups.json`` (which classes look alike) and
annotation-line files ``train.txt``, ``val.txt`` and ``test.txt`` into ``--out``, and
prints the objects per class.

Usage:
    python benchmarks/lookalike_photos.py --source scikit_image-*.whl --out lookalike
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_photos import BACKGROUNDS, PhotoSource, coin_crops, soft_ellipse, write_dataset  # noqa: E402

from utils.boxes import np_iou  # noqa: E402

DIGITS = [str(d) for d in range(10)]
DISTINCT = "coin"
CLASS_NAMES = DIGITS + [DISTINCT]
# Capitals that resemble no digit (no O, I, S, B, Z, G, Q, D, J, L, T, A): unlabeled clutter.
DISTRACTOR_GLYPHS = "CEFHKMNPRUVWXY"
# matplotlib's fonts with digits drawn as digits (cmmi10 and the symbol fonts are left out).
FONTS = [
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
]
RENDER_SIZE = 96  # glyphs are drawn at this size, then scaled to the object's size


def load_fonts():
    """The FONTS that the installed matplotlib ships, as ImageFont objects."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("matplotlib is not installed: its fonts draw the digits (pip install -r requirements.txt)")
    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    fonts = [ImageFont.truetype(str(folder / name), RENDER_SIZE) for name in FONTS if (folder / name).is_file()]
    if len(fonts) < 5:
        sys.exit(f"only {len(fonts)} of the fonts found in {folder}")
    return fonts


def glyph(rng, fonts, text):
    """One glyph as (RGB patch, alpha mask), cropped to its ink, with colour, plate and rotation."""
    font = fonts[rng.integers(len(fonts))]
    pad = RENDER_SIZE // 4
    canvas = Image.new("L", (RENDER_SIZE * 2, RENDER_SIZE * 2), 0)
    ImageDraw.Draw(canvas).text((pad, pad), text, font=font, fill=255)
    if rng.random() < 0.5:
        canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR, expand=False)
    left, top, right, bottom = canvas.getbbox()
    ink = canvas.crop((left, top, right, bottom))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    patch = Image.new("RGB", ink.size, colour)
    if rng.random() < 0.35:
        # A plate behind the glyph (a sign, a meter's dial): the box is the plate's.
        margin = max(2, int(0.15 * max(ink.size)))
        plate_colour = tuple(255 - c for c in colour)
        plate = Image.new("RGB", (ink.width + 2 * margin, ink.height + 2 * margin), plate_colour)
        plate.paste(patch, (margin, margin), ink)
        return plate, Image.new("L", plate.size, 255)
    return patch, ink


def paste(rng, canvas, patch, mask, longest, boxes):
    """Pastes ``patch`` scaled to ``longest`` px where it overlaps no box; returns its box or None."""
    scale = longest / max(patch.size)
    size = (max(3, round(patch.width * scale)), max(3, round(patch.height * scale)))
    if size[0] >= canvas.width or size[1] >= canvas.height:
        return None
    patch = patch.resize(size, Image.BILINEAR)
    mask = mask.resize(size, Image.BILINEAR)
    patch = ImageEnhance.Brightness(patch).enhance(float(rng.uniform(0.7, 1.3)))
    blur = float(rng.choice([0.0, 0.0, 0.5, 1.0]))
    if blur:
        patch = patch.filter(ImageFilter.GaussianBlur(blur))
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    for _try in range(20):
        x = int(rng.integers(0, canvas.width - size[0] + 1))
        y = int(rng.integers(0, canvas.height - size[1] + 1))
        box = (x, y, x + size[0], y + size[1])
        if all(np_iou(box, b[:4]) < 0.05 for b in boxes):
            canvas.paste(patch, (x, y), mask)
            return box
    return None


def object_size(rng, sizes):
    """Longest side in pixels: small or large objects, half of each."""
    low, high = sizes[int(rng.integers(len(sizes)))]
    return float(rng.uniform(low, high))


def make_image(rng, backgrounds, fonts, coins, args):
    width, height = (int(rng.integers(args.min_side, args.max_side + 1)) for _ in range(2))
    background = backgrounds[rng.integers(len(backgrounds))]
    crop_w = int(min(background.width, rng.integers(width, 2 * width + 1)))
    crop_h = int(min(background.height, crop_w * height / width))
    left = int(rng.integers(0, background.width - crop_w + 1))
    top = int(rng.integers(0, background.height - crop_h + 1))
    canvas = background.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BILINEAR)
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.7, 1.3)))
    sizes = [(args.min_object, args.split_object), (args.split_object, args.max_object)]
    boxes, taken = [], []
    for _ in range(int(rng.integers(0, args.max_distractors + 1))):
        if rng.random() < 0.8:
            patch, mask = glyph(rng, fonts, DISTRACTOR_GLYPHS[rng.integers(len(DISTRACTOR_GLYPHS))])
        else:  # a stray stroke
            patch = Image.new("RGB", (40, 6), tuple(int(c) for c in rng.integers(0, 256, 3)))
            mask = Image.new("L", patch.size, 255)
        box = paste(rng, canvas, patch, mask, object_size(rng, sizes), taken)
        if box is not None:
            taken.append(box)
    for _ in range(int(rng.integers(1, args.max_objects + 1))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        if CLASS_NAMES[cls] == DISTINCT:
            patch = coins[rng.integers(len(coins))]
            mask = soft_ellipse(patch.size)
        else:
            patch, mask = glyph(rng, fonts, CLASS_NAMES[cls])
        box = paste(rng, canvas, patch, mask, object_size(rng, sizes), taken)
        if box is not None:
            taken.append(box)
            boxes.append((*box, cls))
    return canvas, boxes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default=None, help="scikit-image data folder or wheel (default: installed skimage)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-images", type=int, default=520, help="images in all")
    p.add_argument("--val", type=int, default=40, help="validation images")
    p.add_argument("--test", type=int, default=100, help="test images")
    p.add_argument("--min-side", type=int, default=256, help="smallest image side")
    p.add_argument("--max-side", type=int, default=384, help="largest image side")
    p.add_argument("--min-object", type=int, default=12, help="smallest object, longest side in pixels")
    p.add_argument("--split-object", type=int, default=32, help="border between small and large objects")
    p.add_argument("--max-object", type=int, default=110, help="largest object, longest side in pixels")
    p.add_argument("--max-objects", type=int, default=7, help="most labelled objects in an image")
    p.add_argument("--max-distractors", type=int, default=4, help="most unlabeled distractors in an image")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args(argv)

    photos = PhotoSource(args.source)
    coins = coin_crops(photos.open("coins.png"))
    fonts = load_fonts()
    backgrounds = [photos.open(name) for name in BACKGROUNDS]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # bench_recipe.py reports the look-alike classes' mean AP next to the others'.
    (out / "groups.json").write_text(json.dumps({"look-alike": DIGITS, "distinct": [DISTINCT]}, indent=1) + "\n")
    rng = np.random.default_rng(args.seed)
    print(f"{len(fonts)} fonts")
    write_dataset(out, CLASS_NAMES, args, lambda: make_image(rng, backgrounds, fonts, coins, args))

if __name__ == "__main__":
    main()
