"""Train EfficientNet-YOLOv3 on annotation lines, COCO JSON, YOLO txt or VOC datasets.

Examples:
    python train.py --train 2007_train.txt --val 2007_val.txt --classes model_data/voc_classes.txt
    python train.py --train coco/annotations/instances_train2017.json --images coco/train2017 \
        --val coco/annotations/instances_val2017.json --val-images coco/val2017
    python train.py --train data.yaml --val data.yaml
    python train.py --train 2007_train.txt --val 2007_val.txt --backbone efficientnet-lite0 --epochs 30
    python train.py --train 2007_train.txt --val 2007_val.txt --recipe reference
    python train.py --resume logs/exp
"""

import argparse
import dataclasses
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.train.config import ConfigError, TrainConfig  # noqa: E402
from utils.train.recipes import RECIPE_CHOICES  # noqa: E402
from utils.train.settings import HelpFormatter, add_arguments  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train EfficientNet-YOLOv3 (416 input, 300 epochs by default). How it learns comes from "
        "a recipe: --recipe auto picks one for the run's length; --recipe reference is the reference design's.",
        formatter_class=HelpFormatter,
    )
    groups = add_arguments(p, choices={"recipe": RECIPE_CHOICES})
    groups["model"].add_argument("--phi", type=int, default=None,
                                 help="shorthand for --backbone efficientnet-b<phi> (0-7)")
    groups["run"].add_argument("--resume", default=None, metavar="RUN_DIR",
                               help="continue logs/<name> from its last checkpoint with its own configuration")
    machines = groups["several machines"]
    machines.add_argument("--cluster", default=None, metavar="FILE",
                          help="JSON/YAML file listing the workers ('workers: [host:port, ...]', the chief first); "
                               "sets TF_CONFIG")
    machines.add_argument("--worker-index", type=int, default=None, help="this machine's place in --cluster's workers")
    return p.parse_args(argv)


# Options --resume takes from the command line; every other one comes from the run's config.json.
RESUME_OPTIONS = ("resume", "epochs", "cluster", "worker_index")


def options_ignored_on_resume(args):
    """The flags given with --resume whose values the resumed run does not use (its
    config.json decides them; only a larger --epochs extends the run)."""
    defaults = vars(parse_args([]))
    return ["--" + name.replace("_", "-") for name, value in vars(args).items()
            if name not in RESUME_OPTIONS and value != defaults.get(name)]


def config_from_args(args):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.phi is not None:
        from nets.backbones import backbone_from_phi

        try:
            values["backbone"] = backbone_from_phi(args.phi)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return TrainConfig(**values)


def main(argv=None):
    args = parse_args(argv)
    from nets.backbones import BackboneWeightsError
    from utils.checkpoint import CheckpointError
    from utils.train.callbacks import TrainingDiverged
    from utils.train.cluster import ClusterError, use_cluster_file

    try:
        if args.cluster:
            use_cluster_file(args.cluster, args.worker_index)
        elif args.worker_index is not None:
            raise ConfigError("--worker-index needs --cluster (or set TF_CONFIG instead of both)")
    except (ClusterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.resume:
        ignored = options_ignored_on_resume(args)
        if ignored:
            logging.getLogger("train").warning(
                "--resume %s continues with the run's own config.json; ignored: %s (only --epochs is taken, to "
                "extend the run).", args.resume, ", ".join(ignored))
    try:
        cfg = config_from_args(args)
        from utils.api.training import train

        result = train(cfg, resume=args.resume)
    except (TrainingDiverged, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, BackboneWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted: the last finished epoch's checkpoint is kept; continue with --resume.", file=sys.stderr)
        return 130
    if result is None:
        print("Done. This worker's part is finished; the chief wrote the run folder.")
    else:
        print(f"Done. Run folder: {result.run_dir} (last.keras, best.keras, history.csv, loss.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
