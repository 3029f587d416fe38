"""Pre-labels new images with a trained model, as an annotation set to correct in a
labelling tool and train on again, and ranks the images a person should review first.

Formats (--format): voc (Annotations/ XML, ImageSets/Main/train.txt), coco
(annotations.json), yolo (data.yaml, labels/train/), label-studio (tasks.json to import,
the boxes as predictions with their scores, and label_config.xml for the project) and
cvat (annotations.xml, CVAT for images 1.1). The images are linked into the set; it also
gets classes.txt (the model's classes in order). train.py, check_dataset.py and
convert_dataset.py read every one of them back, a corrected export of Label Studio or
CVAT too.

Images that have annotations already (a VOC .xml or YOLO .txt of the same stem beside
them, or listed in the --existing set) are left as they are and counted. An image that
cannot be read is listed (<out>/unreadable.txt) and the others are written. The run
never writes into an existing folder: the first free one of <out>2, <out>3, ... is used.

--review N ranks every image by a review score (the sum of three terms between 0 and
1: boxes whose score lies near the threshold, disagreement with the prediction of the
mirrored image mapped back, classes the model mixes up in the run's confusion matrix)
and writes <out>/review/review.csv (rank, score, terms, reason) and
<out>/review/contact_sheet.jpg with the first N and their boxes. It predicts each image
twice.

Exit status: 0 done (or nothing to do); 1 no image could be read; 2 bad arguments,
model, source or annotation set.

Examples:
  python label.py --model logs/exp/best.keras --source new_images/ --format cvat --out prelabels
  python label.py --model logs/exp/best.keras --source new_images/ --format label-studio --review 50
  python label.py --model logs/exp/best.keras --source new_images/ --format yolo --existing data.yaml
"""

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.cli import docstring_parser, fraction, int_at_least  # noqa: E402
from utils.config import DEFAULT_CONF, DEFAULT_NMS_IOU  # noqa: E402
from utils.label.writers import DEFAULT_IMAGE_URL, FORMATS, image_url_template  # noqa: E402

EXIT_OK, EXIT_NOTHING_READ, EXIT_USAGE = 0, 1, 2


def build_parser():
    """The command-line parser (every option documented in --help)."""
    from utils.export.auto_runtime import RUNTIMES

    parser = docstring_parser(__doc__)
    parser.add_argument("--model", required=True,
                        help="trained checkpoint (.keras, or .weights.h5 with its .json beside it), or a model "
                             "written by export.py (.onnx, .tflite, .xml, a SavedModel folder)")
    parser.add_argument("--source", required=True, help="a folder of images (not recursive) or one image")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the annotation format to write")
    parser.add_argument("--out", default="runs/label",
                        help="output folder (default runs/label); if it exists, the first free of <out>2, "
                             "<out>3, ... is used")
    parser.add_argument("--conf", type=fraction,
                        help="lowest score of a pre-labelled box (default: the best-F1 confidence training found "
                             f"for the model, in <model stem>.eval.json beside it; {DEFAULT_CONF} without one)")
    parser.add_argument("--review", type=int_at_least(1), metavar="N",
                        help="rank the images for review and draw the first N on a contact sheet (see above)")
    parser.add_argument("--confusion", metavar="CSV",
                        help="confusion matrix for --review (default: confusion_matrix.csv beside the model, "
                             "written by training and get_map.py; without one the term is left out)")
    parser.add_argument("--existing", metavar="ANNOTATIONS",
                        help="an annotation set of any format train.py reads whose images are labelled already")
    parser.add_argument("--existing-split", default="train",
                        help="split of a VOC or YOLO --existing set (default train)")
    parser.add_argument("--existing-images",
                        help="images folder of a COCO, Label Studio or CVAT --existing file with relative names")
    parser.add_argument("--image-url", default=DEFAULT_IMAGE_URL, type=_image_url,
                        help="label-studio: how a task names its image; {relpath} (path relative to --source), "
                             "{name} and {path} (absolute) are filled in, quoted for a URL (default '%(default)s', "
                             "Label Studio's local files with the document root at --source)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs a checkpoint, as in predict.py (default auto; tf: the Keras model)")
    parser.add_argument("--nms-iou", type=fraction, default=DEFAULT_NMS_IOU,
                        help=f"IoU above which NMS drops the weaker of two boxes (default {DEFAULT_NMS_IOU})")
    parser.add_argument("--batch-size", type=int_at_least(1), default=1,
                        help="images per network call (default 1)")
    return parser


def _image_url(text):
    """argparse type of --image-url."""
    from argparse import ArgumentTypeError

    try:
        return image_url_template(text)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


def open_predictor(args, conf):
    """The predictor of --model, predicting down to ``conf``; ValueError on bad files."""
    from utils.api.detector import Detector
    from utils.checkpoint import CheckpointError
    from utils.label.job import source_images
    from utils.predict.options import PredictOptions
    from utils.predict.sources import iter_batches

    def check_images(count):
        images = [image for batch, _, _ in iter_batches(source_images(args.source)[: count * 2], 1)
                  for _, image in batch][:count]
        return images, f"the first {len(images)} images of {args.source}"

    options = PredictOptions(runtime=args.runtime, conf=conf, nms_iou=args.nms_iou)
    try:
        return Detector(args.model, options, check_images=check_images).predictor
    except (CheckpointError, FileNotFoundError) as exc:
        raise ValueError(str(exc)) from None


def confusion_for(args, class_names):
    """``class_confusion`` of --confusion (or the matrix beside the model), or None."""
    from utils.label.review import CONFUSION_CSV, class_confusion, read_confusion

    path = Path(args.confusion) if args.confusion else Path(args.model).parent / CONFUSION_CSV
    if not path.is_file():
        if args.confusion:
            raise ValueError(f"--confusion {path} not found")
        print(f"Review: no {path}; confused classes are left out of the score.")
        return None
    matrix = read_confusion(path, class_names)
    if matrix is not None:
        print(f"Review: confused classes from {path}")
    return None if matrix is None else class_confusion(matrix)


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from utils.eval.operating_point import default_conf
    from utils.label.job import LabelError, LabelOptions, prediction_conf, run_label, source_images, summary

    try:
        source_images(args.source)  # checked before the model, which takes far longer to load
        if args.conf is None:
            args.conf, origin = default_conf(args.model, DEFAULT_CONF)
            print(f"--conf {args.conf:.3f}: {origin}")
        predictor = open_predictor(args, prediction_conf(args.conf, args.review))
        options = LabelOptions(args.format, args.out, args.conf, review=args.review or 0, batch_size=args.batch_size,
                               existing=args.existing, existing_split=args.existing_split,
                               existing_images=args.existing_images, image_url=args.image_url,
                               model_version=Path(args.model).name,
                               confusion=confusion_for(args, predictor.class_names) if args.review else None)
        run = run_label(predictor, args.source, options)
    except (LabelError, ValueError) as exc:
        print(f"label.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(run, options))
    if run.written is None and run.unreadable:
        return EXIT_NOTHING_READ
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
