"""Writing the synthetic shapes dataset in VOC layout.

The images are drawn by :mod:`utils.demo.shapes_render`; the same seed and options
always write byte-identical files. Layout written under ``out_dir``::

    VOCdevkit/VOC<year>/JPEGImages/000001.jpg
    VOCdevkit/VOC<year>/Annotations/000001.xml
    VOCdevkit/VOC<year>/ImageSets/Main/   (split files only with write_splits=True)
    shapes_classes.txt                    (class names, one per line)

Boxes are written as VOC does: 1-based, inclusive integer pixel coordinates.
"""

import dataclasses
import difflib
from pathlib import Path

import numpy as np
from PIL import Image

from utils.data.split import check_fraction, hold_out, permuted, voc_splits
from utils.data.voc import VocImage, VocObject, voc_xml, write_splits as write_split_files, year_dir
from utils.demo.shapes_render import SHAPE_CLASSES, SPLIT_STREAM, ShapeOptions, check_seed, render_image, stream_rng

CLASSES_FILENAME = "shapes_classes.txt"
JPEG_QUALITY = 92
DEFAULT_YEAR = 2007


def image_id(index):
    """File id of image ``index`` (0-based): ``000001`` for index 0."""
    return f"{index + 1:06d}"


def split_ids(ids, seed, test_fraction=0.2, val_fraction=0.1):
    """Deterministic VOC splits of image ids.

    Args:
        ids: list of image ids (str).
        seed: dataset seed, a non-negative int.
        test_fraction: fraction of all images put in ``test``.
        val_fraction: fraction of ``trainval`` put in ``val``.

    Returns:
        dict ``{"trainval", "train", "val", "test"}`` of sorted id lists.

    Raises:
        ValueError: a fraction outside [0, 1].
    """
    check_seed(seed)
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction)
    test, trainval = hold_out(list(ids), test_fraction, permuted(stream_rng(seed, SPLIT_STREAM)))
    # trainval is already in random order: val is cut from its head.
    val, train = hold_out(trainval, val_fraction)
    return voc_splits(train, val, test)


def _make_options(options):
    """Builds ShapeOptions from keyword overrides, naming near misses."""
    known = [f.name for f in dataclasses.fields(ShapeOptions)]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known options: {', '.join(known)}."
            raise TypeError(f"Unknown shape dataset option {name!r}.{hint}")
    return ShapeOptions(**options)


def generate_dataset(
    out_dir,
    num_images,
    seed=0,
    *,
    year=DEFAULT_YEAR,
    write_splits=False,
    test_fraction=0.2,
    val_fraction=0.1,
    overwrite=False,
    **options,
):
    """Writes the shapes dataset in VOC layout, plus the class names file.

    Args:
        out_dir: output folder; ``VOCdevkit/VOC<year>`` and ``shapes_classes.txt`` go in it.
        num_images: number of images, at least 1.
        seed: non-negative int; the same seed and options give byte-identical files.
        year: the VOC year in the folder name.
        write_splits: also write ``ImageSets/Main/{trainval,train,val,test}.txt``.
        test_fraction: with write_splits, fraction of images put in ``test``.
        val_fraction: with write_splits, fraction of ``trainval`` put in ``val``.
        overwrite: replace the images, annotations and split files of an earlier run in
            the same VOC folder; without it such a folder is an error.
        **options: ShapeOptions fields, e.g. ``min_size=256, max_objects=6``.

    Returns:
        dict with ``images``, ``objects``, ``empty_images``, ``difficult`` (counts),
        ``per_class`` (class name -> object count, in SHAPE_CLASSES order),
        ``image_ids``, ``splits`` (split name -> count, or None), and the paths
        ``out_dir``, ``voc_dir``, ``classes_file`` (str).

    Raises:
        ValueError: num_images, seed, year or a fraction out of range, or a bad option value.
        TypeError: an unknown option name.
        FileExistsError: the VOC folder already holds files and overwrite is False.
    """
    shape_options = _make_options(options)
    _check_generate_args(seed, num_images, year, test_fraction, val_fraction)
    out_dir = Path(out_dir)
    voc_dir = year_dir(out_dir / "VOCdevkit", year)
    jpeg_dir, ann_dir = _prepare_voc_folders(voc_dir, overwrite)
    classes_file = out_dir / CLASSES_FILENAME
    classes_file.write_text("".join(f"{name}\n" for name in SHAPE_CLASSES), encoding="utf-8")

    per_class = {name: 0 for name in SHAPE_CLASSES}
    ids = []
    empty = difficult = 0
    for index in range(int(num_images)):
        sample = render_image(seed, index, shape_options)
        ident = image_id(index)
        ids.append(ident)
        Image.fromarray(sample.image).save(jpeg_dir / f"{ident}.jpg", format="JPEG", quality=JPEG_QUALITY)
        objects = [VocObject(obj.name, *obj.box, difficult=obj.difficult) for obj in sample.objects]
        voc_image = VocImage(f"{ident}.jpg", sample.width, sample.height, objects)
        (ann_dir / f"{ident}.xml").write_bytes(voc_xml(voc_image, voc_dir.name))
        empty += not sample.objects
        for obj in sample.objects:
            per_class[obj.name] += 1
            difficult += obj.difficult

    splits = None
    if write_splits:
        parts = split_ids(ids, seed, test_fraction=test_fraction, val_fraction=val_fraction)
        write_split_files(voc_dir, parts)
        splits = {name: len(members) for name, members in parts.items()}

    return {
        "out_dir": str(out_dir),
        "voc_dir": str(voc_dir),
        "classes_file": str(classes_file),
        "images": len(ids),
        "objects": sum(per_class.values()),
        "empty_images": int(empty),
        "difficult": int(difficult),
        "per_class": per_class,
        "image_ids": ids,
        "splits": splits,
    }


def _check_generate_args(seed, num_images, year, test_fraction, val_fraction):
    check_seed(seed)
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}.")
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or year < 0:
        raise ValueError(f"year must be a non-negative int such as 2007, got {year!r}.")
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction)


def _prepare_voc_folders(voc_dir, overwrite):
    """Creates JPEGImages/, Annotations/ and ImageSets/Main/ in ``voc_dir`` and returns
    the first two; files of an earlier run are removed with ``overwrite``, an error
    without."""
    jpeg_dir = voc_dir / "JPEGImages"
    ann_dir = voc_dir / "Annotations"
    sets_dir = voc_dir / "ImageSets" / "Main"
    earlier = [p for d, pattern in ((jpeg_dir, "*.jpg"), (ann_dir, "*.xml"), (sets_dir, "*.txt"))
               for p in sorted(d.glob(pattern))]
    if earlier:
        if not overwrite:
            raise FileExistsError(
                f"{voc_dir} already holds {len(earlier)} dataset files (e.g. {earlier[0].name}); "
                "choose another output folder or pass overwrite=True (--overwrite)."
            )
        for path in earlier:
            path.unlink()
    for d in (jpeg_dir, ann_dir, sets_dir):
        d.mkdir(parents=True, exist_ok=True)
    return jpeg_dir, ann_dir
