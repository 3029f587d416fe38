"""Converts a detection dataset (annotation lines, COCO JSON, YOLO txt or VOC) to lines, COCO or YOLO.

Examples:
    python convert_dataset.py --from coco --input annotations/instances_val2017.json --images val2017 \\
        --to lines --out coco_val.txt
    python convert_dataset.py --from voc --input VOCdevkit/VOC2007 --split test --to coco --out voc07_test.json
    python convert_dataset.py --from yolo --input data.yaml --split val --to lines --out val.txt
    python convert_dataset.py --from lines --input 2007_train.txt --classes model_data/voc_classes.txt \\
        --to yolo --out voc_yolo --split train

writes the dataset in the target format (annotation lines also get a classes file
``<out stem>_classes.txt``), prints objects per class, and ends with a summary of
every file, line or object that was skipped or changed and why; the full list goes to
``<out folder>/convert_dataset_report.txt``.
"""

import sys
from pathlib import Path

from utils.cli import docstring_parser, int_at_least
from utils.data.convert import TARGETS, convert_dataset, format_class_table
from utils.data.report import DatasetError
from utils.data.sources import FORMAT_NAMES, FORMATS

REPORT_NAME = "convert_dataset_report.txt"


def build_parser():
    parser = docstring_parser(__doc__)
    parser.add_argument("--from", dest="source_format", choices=("auto", *FORMATS), default="auto",
                        help="source format: " + ", ".join(f"{k} ({v})" for k, v in FORMAT_NAMES.items())
                        + "; auto detects it from --input (default: %(default)s)")
    parser.add_argument("--input", required=True,
                        help="the source: an annotation-line file, a COCO JSON file, a YOLO data YAML or folder, or a "
                             "VOCdevkit or VOC<year> folder")
    parser.add_argument("--split", default=None,
                        help="split to read from a YOLO data YAML or a VOC folder (train, val, test, ...); also the "
                             "YOLO split written (default: train)")
    parser.add_argument("--images", default=None,
                        help="folder of a COCO file's images when its file names are relative (default: the JSON "
                             "file's folder)")
    parser.add_argument("--classes", default=None,
                        help="class names file, one a line: the names of annotation lines (default "
                             "model_data/voc_classes.txt), checked against the names of the other formats")
    parser.add_argument("--to", required=True, choices=TARGETS, help="target format")
    parser.add_argument("--out", required=True,
                        help="target: the annotation-line file, the COCO JSON file, or the YOLO dataset folder")
    parser.add_argument("--copy-images", action="store_true",
                        help="YOLO target: copy the images into the dataset instead of linking them")
    parser.add_argument("--list-limit", type=int_at_least(0), default=20,
                        help="list at most this many items per reason in the printed summary, 0 for all (default: "
                             "%(default)s); the report file lists all")
    parser.add_argument("--report", default=None,
                        help=f"file receiving the full summary when anything was skipped or changed (default: "
                             f"{REPORT_NAME} in the output's folder)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        result = convert_dataset(
            args.input,
            args.to,
            args.out,
            fmt=None if args.source_format == "auto" else args.source_format,
            split=args.split,
            images=args.images,
            classes=args.classes,
            copy_images=args.copy_images,
        )
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"read {result.source.describe()}")
    for path in result.written:
        print(f"wrote {path}")
    print(f"{result.images} images written")
    print()
    print(format_class_table(result.source.classes.names, result.objects))
    print()
    print(result.report.format(limit=args.list_limit))
    if len(result.report):
        out = Path(args.out)
        report_path = Path(args.report) if args.report else (out if args.to == "yolo" else out.parent) / REPORT_NAME
        report_path.parent.mkdir(parents=True, exist_ok=True)
        result.report.write(report_path)
        print(f"\nfull summary written to {report_path}")
    if not result.images:
        print(f"error: no image could be converted from {args.input}; see the summary above.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
