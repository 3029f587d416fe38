"""Compares detectors built on different backbones: parameters, GFLOPs and CPU latency.

For each backbone the whole detector (backbone, YOLOv3 neck and heads, random
weights) is built and measured with ``utils.model_stats``: GFLOPs of the traced
inference graph at batch 1 (a multiply-add counts as 2) and the median latency of
``--runs`` calls after two warm-up calls. ``summary.py --compare`` prints the same
table.

Usage:
    python benchmarks/bench_backbones.py [--backbones efficientnet-b0,mobilenetv2|all]
        [--input-size 416] [--num-classes 20] [--runs 5] [--alpha 1.0]
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The families side by side at the reference input size.
DEFAULT_BACKBONES = (
    "efficientnet-b0",
    "efficientnet-b1",
    "efficientnetv2-b0",
    "efficientnetv2-s",
    "efficientnet-lite0",
    "efficientnet-lite2",
    "mobilenetv2",
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES), help="comma-separated names, or all")
    parser.add_argument("--input-size", type=int, default=416, help="square input side, a multiple of 32")
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per model (median reported)")
    parser.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width multiplier (default 1.0)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from utils.image import check_input_size
    from utils.model_stats import compare, format_table, parse_names

    try:
        check_input_size(args.input_size)
        names = parse_names(args.backbones)
        rows = compare(
            names, args.num_classes, args.input_size, args.runs, args.alpha,
            progress=lambda label: print(f"measuring {label} ...", file=sys.stderr, flush=True),
        )
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows, args.input_size, args.num_classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
