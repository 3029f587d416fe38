"""Print the detector's Keras summary and its GFLOPs per image, or compare backbones.

The GFLOPs are the float operations of the inference graph at the input size, as
TensorFlow's profiler counts them (a multiply and an add count separately).
``--compare`` prints, instead of the summaries, one table row per backbone:
parameters, GFLOPs and the measured CPU latency per image (median of ``--runs``
calls, batch 1).

Examples:
    python summary.py --backbone efficientnet-b0 --num-classes 20 --input-size 416
    python summary.py --phi 3 --classes model_data/voc_classes.txt
    python summary.py --backbone mobilenetv2 --alpha 0.5
    python summary.py --compare efficientnet-b0,efficientnetv2-b0,efficientnet-lite0,mobilenetv2 --runs 5
    python summary.py --compare all --input-size 320
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.config import DEFAULT_BACKBONE, DEFAULT_CLASSES, DEFAULT_INPUT_SIZE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Keras summary and GFLOPs of the detector, or a comparison of backbones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--backbone", default=None,
                   help=f"backbone name (default {DEFAULT_BACKBONE}); see --list")
    g.add_argument("--phi", type=int, default=None, help="shorthand for --backbone efficientnet-b<phi> (0-7)")
    g.add_argument("--compare", default=None, metavar="NAME1,NAME2,...",
                   help="compare backbones (comma-separated names, or all) instead of printing a summary")
    g.add_argument("--list", action="store_true", help="list the backbone names and exit")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--num-classes", type=int, default=None,
                   help="number of classes (default: the count in --classes' default file)")
    c.add_argument("--classes", default=None, help=f"classes file, one name per line (default {DEFAULT_CLASSES})")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, help="square input side, a multiple of 32")
    p.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width multiplier 0.35-1.4 (default 1.0)")
    p.add_argument("--runs", type=int, default=5, help="with --compare: timed calls per model (median reported)")
    p.add_argument("--expand-nested", action="store_true", help="list the backbone's own layers in the summary")
    return p.parse_args(argv)


def num_classes_from_args(args):
    """The class count from --num-classes, or from a classes file."""
    from utils.model_data import load_classes

    if args.num_classes is not None:
        if args.num_classes < 1:
            raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
        return args.num_classes
    return len(load_classes(args.classes or DEFAULT_CLASSES))


def print_summary(backbone, num_classes, input_size, alpha=None, expand_nested=False):
    """Prints the Keras summary, the pyramid and the GFLOPs of one detector."""
    from nets.backbones import PYRAMID_LEVELS
    from nets.yolo import YoloV3
    from utils.model_stats import count_flops

    model = YoloV3(num_classes, backbone=backbone, alpha=alpha, input_size=input_size)
    model.summary(expand_nested=expand_nested)
    pyramid = model.get_layer("backbone").output
    levels = ", ".join(
        f"{level} {int(pyramid[level].shape[-1])} ch (stride {stride})" for level, stride in PYRAMID_LEVELS.items()
    )
    alpha_text = f" alpha {model.backbone_alpha}" if model.backbone_alpha is not None else ""
    print(f"Backbone {model.backbone_name}{alpha_text}: {levels}; "
          f"{model.get_layer('backbone').count_params():,} params")
    gflops = count_flops(model, input_size) / 1e9
    print(f"GFLOPs per image at {input_size}x{input_size}: {gflops:.2f} (multiply and add counted separately)")


def main(argv=None):
    args = parse_args(argv)
    try:
        from nets.backbones import backbone_from_phi, backbone_names, get_spec
        from utils.image import check_input_size

        if args.list:
            print("\n".join(backbone_names()))
            return 0
        check_input_size(args.input_size)
        num_classes = num_classes_from_args(args)
        if args.compare:
            from utils.model_stats import compare, format_table, parse_names

            if args.runs < 0:
                raise ValueError(f"--runs must be >= 0, got {args.runs}")
            rows = compare(
                parse_names(args.compare), num_classes, args.input_size, args.runs, args.alpha,
                progress=lambda label: print(f"measuring {label} ...", file=sys.stderr, flush=True),
            )
            print(format_table(rows, args.input_size, num_classes))
            return 0
        backbone = backbone_from_phi(args.phi) if args.phi is not None else (args.backbone or DEFAULT_BACKBONE)
        get_spec(backbone)
        print_summary(backbone, num_classes, args.input_size, args.alpha, args.expand_nested)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
