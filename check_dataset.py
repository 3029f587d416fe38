"""Checks a detection dataset before training: one line per problem with its file (and
line), the box statistics, how well the anchors fit, and a verdict.

Any format train.py reads: an annotation-line file, a COCO JSON file, a YOLO data YAML
or folder, or a VOC folder. Reported: unreadable images and annotation lines, boxes
outside the image or degenerate, duplicate boxes, unknown or unused classes, class
imbalance, images without objects, boxes smaller than the stride-8 cell at
--input-size, and the anchors' best possible recall at ratio --anchor-t and mean best
IoU. Problems are errors (training impossible), warnings or notes.

Exit status: 0 the dataset can be trained on (warnings included); 1 it cannot (no
usable image, no object, the dataset cannot be read).

Examples:
  python check_dataset.py 2007_train.txt --classes model_data/voc_classes.txt
  python check_dataset.py data.yaml --split train --input-size 640
  python check_dataset.py VOCdevkit/VOC2007 --split trainval --plot labels.png
"""

import sys

from utils.cli import docstring_parser, input_size, int_at_least
from utils.config import ANCHOR_T, DEFAULT_ANCHORS, DEFAULT_INPUT_SIZE
from utils.data.check import check_dataset


def build_parser():
    """The command-line parser (every option documented in --help)."""
    parser = docstring_parser(__doc__)
    parser.add_argument("dataset", help="the dataset: annotation-line file, COCO JSON, YOLO YAML or folder, VOC folder")
    parser.add_argument("--split", default="train",
                        help="split of a YOLO data YAML or a VOC folder (default train)")
    parser.add_argument("--images", help="folder of a COCO file's images when its file names are relative")
    parser.add_argument("--classes", help="class names file (default: the dataset's names; model_data/voc_classes.txt "
                                          "for annotation lines)")
    parser.add_argument("--input-size", type=input_size, default=DEFAULT_INPUT_SIZE,
                        help=f"network input side the boxes are letterboxed to (default {DEFAULT_INPUT_SIZE})")
    parser.add_argument("--anchors", default=str(DEFAULT_ANCHORS),
                        help="anchors file to measure against the boxes (default model_data/yolo_anchors.txt)")
    parser.add_argument("--anchor-t", type=float, default=ANCHOR_T,
                        help=f"largest width or height ratio of a box and a matching anchor (default {ANCHOR_T:g})")
    parser.add_argument("--max-lines", type=int_at_least(0), default=20,
                        help="lines shown per kind of problem, 0 for all (default 20)")
    parser.add_argument("--plot", metavar="PNG",
                        help="also draw the box statistics (objects per class, centres, sizes and anchors) there")
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from utils.model_data import load_anchors

    try:
        anchors = load_anchors(args.anchors)
    except (FileNotFoundError, ValueError) as exc:
        print(f"check_dataset.py: error: {exc}", file=sys.stderr)
        return 2
    report = check_dataset(args.dataset, split=args.split, images=args.images, classes=args.classes,
                           input_size=args.input_size, anchors=anchors, anchor_t=args.anchor_t)
    print(report.format(limit=args.max_lines))
    if args.plot and report.stats is not None:
        from utils.train.previews import plot_labels

        print(f"Box statistics drawn in {plot_labels(report.stats, anchors, args.plot)}")
    return 0 if report.trainable else 1


if __name__ == "__main__":
    sys.exit(main())
