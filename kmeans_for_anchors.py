"""Computes anchor boxes for a dataset by k-means on box shapes (distance 1 - IoU).

Example:
    python kmeans_for_anchors.py --annotations 2007_train.txt --out anchors.txt

Box sizes are letterboxed to the network input (--input-size); image sizes are read
from the image file headers. The anchors file written is read by
utils.model_data.load_anchors; pass it to training and prediction in place of
model_data/yolo_anchors.txt.
"""

import argparse
import sys
from pathlib import Path

from utils.cli import int_at_least
from utils.config import ANCHOR_MASK, ANCHOR_T, DEFAULT_INPUT_SIZE
from utils.data.kmeans import INIT_METHODS, anchor_fit, kmeans_anchors, load_box_sizes, round_anchors
from utils.model_data import save_anchors

# The detector takes exactly this many anchors (three per output level).
DETECTOR_ANCHORS = sum(len(mask) for mask in ANCHOR_MASK)
PROBLEMS_SHOWN = 20



def build_parser():
    parser = argparse.ArgumentParser(
        description=(
            "Cluster the box shapes of an annotation file with k-means (distance 1 - IoU, boxes "
            "centred at the origin) and write the anchors, sorted by area, in the anchors file format."
        ),
    )
    parser.add_argument(
        "--annotations",
        required=True,
        help="annotation file (image_path x1,y1,x2,y2,class_id ...), e.g. 2007_train.txt, or any dataset "
        "train.py reads: a COCO JSON file, a YOLO data YAML or folder, a VOC folder.",
    )
    parser.add_argument(
        "--split",
        default="train",
        help="split of a YOLO data YAML or a VOC folder (default: %(default)s).",
    )
    parser.add_argument(
        "--images",
        default=None,
        help="folder of a COCO file's images when its file names are relative (default: the JSON file's folder).",
    )
    parser.add_argument(
        "--input-size",
        type=int_at_least(1),
        default=DEFAULT_INPUT_SIZE,
        help="side S of the square network input; boxes are scaled by min(S/image_w, S/image_h) "
        "(default: %(default)s).",
    )
    parser.add_argument(
        "--clusters",
        type=int_at_least(1),
        default=DETECTOR_ANCHORS,
        help=f"number of anchors; the detector needs {DETECTOR_ANCHORS} (default: %(default)s).",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same anchors (default: %(default)s)."
    )
    parser.add_argument(
        "--iterations",
        type=int_at_least(1),
        default=300,
        help="most k-means rounds per restart (default: %(default)s).",
    )
    parser.add_argument(
        "--restarts",
        type=int_at_least(1),
        default=5,
        help="independent starts; the one with the best mean IoU is kept (default: %(default)s).",
    )
    parser.add_argument(
        "--init",
        choices=INIT_METHODS,
        default="kmeans++",
        help="how each start picks its centres (default: %(default)s).",
    )
    parser.add_argument(
        "--out",
        default="anchors.txt",
        help=(
            "anchors file to write (default: %(default)s in the current folder); model_data/yolo_anchors.txt "
            "is only written when passed here."
        ),
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        wh, problems = load_box_sizes(args.annotations, args.input_size, split=args.split, images=args.images)
    except (FileNotFoundError, ValueError) as exc:  # DatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"skipped (lines, boxes or images): {len(problems)}")
        for message in problems[:PROBLEMS_SHOWN]:
            print(f"  - {message}")
        if len(problems) > PROBLEMS_SHOWN:
            print(f"  ... and {len(problems) - PROBLEMS_SHOWN} more")
    if len(wh) == 0:
        print(
            f"error: no usable box in {args.annotations}; it needs lines 'image_path x1,y1,x2,y2,class_id' "
            "whose images can be opened.",
            file=sys.stderr,
        )
        return 2
    try:
        result = kmeans_anchors(
            wh,
            k=args.clusters,
            iterations=args.iterations,
            restarts=args.restarts,
            seed=args.seed,
            init=args.init,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    anchors = round_anchors(result.anchors)
    print(f"{len(wh)} boxes, input size {args.input_size}, {args.clusters} clusters")
    print("anchors (width, height in input pixels, sorted by area):")
    for i, (w, h) in enumerate(anchors):
        print(f"  {i}: {int(w)},{int(h)}")
    fit = anchor_fit(wh, anchors, ANCHOR_T)
    print(f"mean best IoU: {fit.mean_best_iou:.4f}")
    print(f"best possible recall at ratio {ANCHOR_T:g}: {fit.best_possible_recall:.4f} "
          f"({fit.anchors_per_box:.2f} anchors per box)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_anchors(args.out, anchors)
    print(f"wrote {args.out}")
    if args.clusters != DETECTOR_ANCHORS:
        print(
            f"warning: wrote {args.clusters} anchors, but the detector needs exactly {DETECTOR_ANCHORS}; "
            f"rerun with --clusters {DETECTOR_ANCHORS} before using {args.out} for training.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
