"""Command line of the synthetic shapes dataset: writes it in VOC layout.

Command line::

    python -m utils.demo.shapes_dataset --out demo_data --num-images 300 --seed 0

The images are drawn by :mod:`utils.demo.shapes_render` and written by
:mod:`utils.demo.shapes_voc`; the same seed always writes byte-identical files.
"""

import argparse
import sys

from utils.demo.shapes_render import SHAPE_CLASSES, ShapeOptions
from utils.demo.shapes_voc import DEFAULT_YEAR, generate_dataset


def format_summary(summary):
    """A few human-readable lines describing what ``generate_dataset`` wrote."""
    classes = ", ".join(f"{name} {count}" for name, count in summary["per_class"].items())
    lines = [
        f"Wrote {summary['images']} images with {summary['objects']} objects "
        f"({summary['difficult']} difficult, {summary['empty_images']} images empty) to {summary['voc_dir']}",
        f"  per class: {classes}",
        f"  class names: {summary['classes_file']}",
    ]
    if summary["splits"]:
        lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    return "\n".join(lines)


def build_parser():
    """The command-line parser; every option is documented in ``--help``."""
    defaults = ShapeOptions()
    parser = argparse.ArgumentParser(
        prog="python -m utils.demo.shapes_dataset",
        description="Generate a deterministic synthetic VOC-format dataset of geometric shapes "
        f"({', '.join(SHAPE_CLASSES)}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", default=argparse.SUPPRESS,
        help="Output folder (VOCdevkit/ and the classes file go in it).",
    )
    parser.add_argument("--num-images", type=int, default=300, help="Number of images to generate.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed; the same seed writes identical files.")
    parser.add_argument("--year", type=int, default=DEFAULT_YEAR, help="VOC year used in the folder name VOC<year>.")
    parser.add_argument("--min-size", type=int, default=defaults.min_size, help="Smallest image side in pixels.")
    parser.add_argument("--max-size", type=int, default=defaults.max_size, help="Largest image side in pixels.")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects, help="Most shapes per image.")
    parser.add_argument(
        "--empty-fraction", type=float, default=defaults.empty_fraction,
        help="Probability that an image holds no shape.",
    )
    parser.add_argument(
        "--min-object-size", type=float, default=defaults.min_object_size,
        help="Smallest shape size in pixels (geometric mean of its width and height).",
    )
    parser.add_argument(
        "--max-object-fraction", type=float, default=defaults.max_object_fraction,
        help="Largest shape size as a fraction of the image's shorter side.",
    )
    parser.add_argument(
        "--max-occlusion", type=float, default=defaults.max_occlusion,
        help="Largest fraction of a shape that shapes drawn over it may cover.",
    )
    parser.add_argument(
        "--write-splits", action="store_true",
        help="Also write ImageSets/Main/{trainval,train,val,test}.txt (otherwise left to voc_annotation.py).",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="With --write-splits: fraction of images in test."
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="With --write-splits: fraction of trainval in val."
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Replace the images, annotations and split files of an earlier run in the same folder.",
    )
    return parser


def main(argv=None):
    """Command-line entry point.

    Args:
        argv: argument list (without the program name), or None for ``sys.argv``.

    Returns:
        int exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        summary = generate_dataset(
            args.out,
            args.num_images,
            seed=args.seed,
            year=args.year,
            write_splits=args.write_splits,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            overwrite=args.overwrite,
            min_size=args.min_size,
            max_size=args.max_size,
            max_objects=args.max_objects,
            empty_fraction=args.empty_fraction,
            min_object_size=args.min_object_size,
            max_object_fraction=args.max_object_fraction,
            max_occlusion=args.max_occlusion,
        )
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
