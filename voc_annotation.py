"""Makes VOC splits and annotation files for training and evaluation.

Example:
    python voc_annotation.py --voc-root VOCdevkit --years 2007 2012

writes ``VOCdevkit/VOC<year>/ImageSets/Main/{trainval,train,val,test}.txt`` and
``<year>_train.txt``, ``<year>_val.txt``, ``<year>_test.txt`` (one image a line:
absolute image path, then ``x1,y1,x2,y2,class_id[,difficult]`` boxes in pixels).
"""

import argparse
import sys
from pathlib import Path

from utils.cli import fraction, int_at_least
from utils.config import DEFAULT_CLASSES
from utils.data.voc_convert import MODE_ALL, MODE_SPLITS_ONLY, MODES, REQUIRED_SPLITS, VocDatasetError, convert_voc
from utils.data.voc_tables import empty_class_warnings, format_tables
from utils.model_data import load_classes

REPORT_NAME = "voc_annotation_report.txt"


def build_parser():
    """The command-line parser; every option is documented in ``--help``."""
    parser = argparse.ArgumentParser(
        description=(
            "Make train/val/test splits of a Pascal VOC dataset and write annotation files "
            "'<year>_{train,val,test}.txt' (absolute image path, then x1,y1,x2,y2,class_id[,difficult] "
            "boxes in pixels). Bad data never stops the run: every skipped or changed file and "
            "object is listed in a summary at the end."
        ),
    )
    parser.add_argument(
        "--voc-root", default="VOCdevkit", help="VOCdevkit folder holding the VOC<year> folders (default: %(default)s)."
    )
    parser.add_argument(
        "--years",
        nargs="+",
        default=None,
        help="years to convert, e.g. '2007 2012' or '2007,2012' (default: every VOC<year> folder present).",
    )
    parser.add_argument(
        "--classes", default=str(DEFAULT_CLASSES), help="classes file, one class name a line (default: %(default)s)."
    )
    parser.add_argument(
        "--trainval-percent",
        type=fraction,
        default=0.9,
        help="fraction of the images put in trainval, the rest is test (new splits only; default: %(default)s).",
    )
    parser.add_argument(
        "--train-percent",
        type=fraction,
        default=0.9,
        help="fraction of trainval put in train, the rest is val (new splits only; default: %(default)s).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the new splits; same seed, same splits (default: %(default)s).",
    )
    parser.add_argument(
        "--mode",
        type=int,
        choices=MODES,
        default=MODE_ALL,
        help=(
            "0: make new splits in VOC<year>/ImageSets/Main (replacing existing split files) and write "
            "the annotation files; 1: make the splits only; 2: write the annotation files from the "
            f"existing split files ({' and '.join(s + '.txt' for s in REQUIRED_SPLITS)} required, test.txt "
            "optional). Default: %(default)s."
        ),
    )
    parser.add_argument(
        "--out-dir", default=".", help="folder receiving the annotation files and the report (default: current folder)."
    )
    parser.add_argument(
        "--skip-difficult",
        action="store_true",
        help=(
            "drop objects marked difficult from the train file (default: keep them, flagged with the "
            "sixth field 1); the val and test files keep them flagged either way."
        ),
    )
    parser.add_argument(
        "--list-limit",
        type=int_at_least(0),
        default=20,
        help="list at most this many items per reason in the printed summary, 0 for all (default: %(default)s); "
        "the report file lists all.",
    )
    parser.add_argument(
        "--report",
        default=None,
        help=(
            "file receiving the full summary when anything was skipped or changed "
            f"(default: <out-dir>/{REPORT_NAME})."
        ),
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    years = None
    if args.years:
        years = [y for item in args.years for y in item.split(",") if y.strip()]
    try:
        class_names = load_classes(args.classes)
        result = convert_voc(
            args.voc_root,
            class_names,
            out_dir=args.out_dir,
            years=years,
            mode=args.mode,
            trainval_percent=args.trainval_percent,
            train_percent=args.train_percent,
            seed=args.seed,
            skip_difficult=args.skip_difficult,
        )
    except (VocDatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    for year in result.years:
        for path in year.split_files:
            print(f"wrote {path}")
        for path in year.annotation_files.values():
            print(f"wrote {path}")
    tables = format_tables(result)
    if tables:
        print()
        print(tables)
    warnings_ = empty_class_warnings(result)
    if warnings_:
        print()
        for message in warnings_:
            print(f"warning: {message}")
    print()
    print(result.report.format(limit=args.list_limit))
    if len(result.report):
        report_path = Path(args.report) if args.report else Path(args.out_dir) / REPORT_NAME
        report_path.parent.mkdir(parents=True, exist_ok=True)
        result.report.write(report_path)
        print(f"\nfull summary written to {report_path}")

    if not result.usable:
        what = "split ids" if args.mode == MODE_SPLITS_ONLY else "annotation lines"
        print(
            f"error: nothing usable was found in {args.voc_root} (no {what}); see the summary above.",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
