"""Builds a small detection dataset from real photographs, for benchmarks that must
not depend on the shapes: objects cut from the sample photos that scikit-image ships
(a cat, a coffee cup, coins, a rocket, a space shuttle, a motorcycle, a face, a
helmet) are pasted, small, onto other real photos (grass, gravel, brick, the Hubble
deep field, the cameraman) with a soft elliptical edge, a random scale, flip and
brightness.

The photos are read from scikit-image's data folder: an installed ``skimage``, or a
scikit-image wheel (``pip download scikit-image --no-deps``) given with ``--source``;
nothing is installed. Writes ``images/``, ``classes.txt`` and annotation-line files
``train.txt``, ``val.txt`` and ``test.txt`` into ``--out``.

Usage:
    python benchmarks/real_photos.py --source scikit_image-*.whl --out real_photos
"""

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.boxes import np_iou  # noqa: E402

# Object crops (photo, left, top, right, bottom) in the photo's pixels, per class.
OBJECTS = {
    "cat": [("chelsea.png", 60, 0, 400, 300)],
    "cup": [("coffee.png", 80, 0, 520, 330)],
    "rocket": [("rocket.jpg", 285, 115, 325, 425)],
    "shuttle": [("astronaut.png", 420, 0, 505, 290)],
    "motorcycle": [("motorcycle_left.png", 88, 156, 682, 448)],
    "face": [("astronaut.png", 150, 20, 265, 155)],
    "helmet": [("astronaut.png", 330, 390, 512, 512)],
    "coin": "coins.png",  # every coin, found by thresholding
}
BACKGROUNDS = ["grass.png", "gravel.png", "brick.png", "hubble_deep_field.jpg", "camera.png"]


class PhotoSource:
    """Reads scikit-image's sample photos from a folder or a wheel."""

    def __init__(self, source=None):
        if source is None:
            try:
                import skimage
            except ImportError:
                sys.exit("scikit-image is not installed: pass --source with its wheel "
                         "(pip download scikit-image --no-deps)")
            source = Path(skimage.__file__).parent / "data"
        self.source = Path(source)
        self.zip = zipfile.ZipFile(self.source) if self.source.suffix == ".whl" else None

    def open(self, name):
        if self.zip is not None:
            data = self.zip.read(f"skimage/data/{name}")
        else:
            data = (self.source / name).read_bytes()
        return Image.open(io.BytesIO(data)).convert("RGB")


def coin_crops(image):
    """One crop per coin: connected bright regions of the coins photo."""
    import cv2

    gray = np.asarray(image.convert("L"))
    _, mask = cv2.threshold(cv2.GaussianBlur(gray, (5, 5), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    crops = []
    for x, y, w, h, area in stats[1:count]:
        if 25 <= w <= 90 and 25 <= h <= 90 and area > 300:
            crops.append(image.crop((int(x) - 2, int(y) - 2, int(x + w) + 2, int(y + h) + 2)))
    return crops


def load_objects(photos):
    objects = {}
    for name, spec in OBJECTS.items():
        if isinstance(spec, str):
            objects[name] = coin_crops(photos.open(spec))
        else:
            objects[name] = [photos.open(file).crop(box) for file, *box in spec]
        if not objects[name]:
            sys.exit(f"no {name} crops found")
    return objects


def soft_ellipse(size, feather=0.12):
    w, h = size
    mask = Image.new("L", (w, h), 0)
    inset = (int(w * feather / 2), int(h * feather / 2))
    ImageDraw.Draw(mask).ellipse((inset[0], inset[1], w - inset[0] - 1, h - inset[1] - 1), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(1.0, min(w, h) * feather / 3)))


def make_image(rng, backgrounds, objects, class_names, min_side, max_side, min_object, max_object, max_objects):
    width, height = (int(rng.integers(min_side, max_side + 1)) for _ in range(2))
    background = backgrounds[rng.integers(len(backgrounds))]
    crop_w = int(min(background.width, rng.integers(width, 2 * width + 1)))
    crop_h = int(min(background.height, crop_w * height / width))
    left = int(rng.integers(0, background.width - crop_w + 1))
    top = int(rng.integers(0, background.height - crop_h + 1))
    canvas = background.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BILINEAR)
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.7, 1.3)))
    boxes = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(class_names)))
        pool = objects[class_names[cls]]
        obj = pool[rng.integers(len(pool))]
        scale = float(rng.uniform(min_object, max_object)) / max(obj.size)
        size = (max(4, round(obj.width * scale)), max(4, round(obj.height * scale)))
        if size[0] >= width or size[1] >= height:
            continue
        patch = obj.resize(size, Image.BILINEAR)
        if rng.random() < 0.5:
            patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
        patch = ImageEnhance.Brightness(patch).enhance(float(rng.uniform(0.75, 1.25)))
        for _try in range(20):
            x = int(rng.integers(0, width - size[0] + 1))
            y = int(rng.integers(0, height - size[1] + 1))
            box = (x, y, x + size[0], y + size[1])
            if all(np_iou(box, b[:4]) < 0.2 for b in boxes):
                canvas.paste(patch, (x, y), soft_ellipse(size))
                boxes.append((*box, cls))
                break
    return canvas, boxes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default=None, help="scikit-image data folder or wheel (default: installed skimage)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-images", type=int, default=400, help="images in all")
    p.add_argument("--val", type=int, default=40, help="validation images")
    p.add_argument("--test", type=int, default=80, help="test images")
    p.add_argument("--min-side", type=int, default=256, help="smallest image side")
    p.add_argument("--max-side", type=int, default=384, help="largest image side")
    p.add_argument("--min-object", type=int, default=16, help="smallest object, longest side in pixels")
    p.add_argument("--max-object", type=int, default=72, help="largest object, longest side in pixels")
    p.add_argument("--max-objects", type=int, default=6, help="most objects in an image")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args(argv)

    photos = PhotoSource(args.source)
    objects = load_objects(photos)
    class_names = list(OBJECTS)
    backgrounds = [photos.open(name) for name in BACKGROUNDS]
    rng = np.random.default_rng(args.seed)
    write_dataset(Path(args.out), class_names, args,
                  lambda: make_image(rng, backgrounds, objects, class_names, args.min_side, args.max_side,
                                     args.min_object, args.max_object, args.max_objects))
    print(f"coin crops found: {len(objects['coin'])}")


def write_dataset(out, class_names, args, make):
    """Writes ``args.num_images`` images made by ``make() -> (PIL image, boxes)`` into
    ``out/images``, ``classes.txt`` and the test, val and train annotation files (the
    first ``args.test``, the next ``args.val``, the rest), and prints the counts."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(class_names) + "\n")
    lines, counts = [], np.zeros(len(class_names), int)
    for i in range(args.num_images):
        image, boxes = make()
        path = (out / "images" / f"{i:05d}.jpg").resolve()
        image.save(path, quality=92)
        lines.append(" ".join([str(path)] + [",".join(map(str, b)) for b in boxes]))
        for b in boxes:
            counts[b[4]] += 1
    n_test, n_val = args.test, args.val
    splits = {"test": lines[:n_test], "val": lines[n_test : n_test + n_val], "train": lines[n_test + n_val :]}
    for name, part in splits.items():
        (out / f"{name}.txt").write_text("\n".join(part) + "\n")
    print(f"{args.num_images} images in {out}: " + ", ".join(f"{len(v)} {k}" for k, v in splits.items()))
    print("objects per class: " + ", ".join(f"{n} {c}" for c, n in zip(class_names, counts)))


if __name__ == "__main__":
    main()
