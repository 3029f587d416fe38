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
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.config import ASSIGNERS  # noqa: E402
from utils.train.recipes import AUTO_MAX_ITERATIONS, RECIPE_CHOICES, RECIPE_FIELDS  # noqa: E402
from utils.train.trainer import ConfigError, TrainConfig  # noqa: E402


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: from the recipe)" for the options a recipe sets."""

    def _get_help_string(self, action):
        if action.default is None and (action.dest in RECIPE_FIELDS or action.dest == "min_lr"):
            return f"{action.help} (default: from the recipe)"
        return super()._get_help_string(action)


def parse_args(argv=None):
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description="Train EfficientNet-YOLOv3 (416 input, 300 epochs by default). How it learns comes from "
        "a recipe: --recipe auto picks one for the run's length; --recipe reference is the reference design's.",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--train", default=d.train,
                   help="training data: an annotation-line file (voc_annotation.py), a COCO JSON file, a YOLO data "
                   "YAML (its train split) or folder; the format is detected")
    g.add_argument("--val", default=d.val,
                   help="validation data, any format of --train (a YOLO data YAML: its val split); '' holds out "
                   "--val-fraction of --train")
    g.add_argument("--images", default=d.images,
                   help="folder of the images of a COCO --train file whose file names are relative ('': the JSON "
                   "file's folder)")
    g.add_argument("--val-images", default=d.val_images, help="the same for a COCO --val file ('': --images)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help="part of --train held out when --val ''")
    g.add_argument("--classes", default=d.classes,
                   help="class names file, one per line; '' takes the dataset's (COCO categories, YOLO names), "
                   "model_data/voc_classes.txt for annotation-line files; given, it must match the dataset's")
    g.add_argument("--anchors", default=d.anchors, help="anchors file (9 anchors 'w,h, ...' at the input size)")
    g.add_argument("--auto-anchors", action="store_true",
                   help="refit the anchors to the training boxes at --input-size (k-means) before training, when "
                   "they fit better; they are saved in the run folder, its config.json and the checkpoints")
    g.add_argument("--cache", action="store_true", help="keep the encoded image files in memory")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default=d.backbone,
                   help="backbone: efficientnet-b0…b7, efficientnetv2-b0…b3/s/m/l, efficientnet-lite0…lite4, "
                   "mobilenetv2 (python summary.py --list)")
    g.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width multiplier 0.35–1.4 (default 1.0)")
    g.add_argument("--drop-connect-rate", type=float, default=None,
                   help="stochastic-depth rate of EfficientNet/V2/Lite blocks (default 0.2)")
    g.add_argument("--phi", type=int, default=None, help="shorthand for --backbone efficientnet-b<phi> (0-7)")
    g.add_argument("--input-size", type=int, default=d.input_size, help="square input side, a multiple of 32")
    g.add_argument("--backbone-weights", default=d.backbone_weights,
                   help="imagenet (downloaded by Keras), none (from scratch) or a local no-top .h5 file")
    g.add_argument("--weights", default=d.weights,
                   help="initialize from a checkpoint (.keras); layers matched by name and shape, others reported")
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, default=d.epochs, help="total epochs")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size with all layers trained")
    g.add_argument("--freeze-batch-size", type=int, default=d.freeze_batch_size, help="batch size while frozen")
    g.add_argument("--lr-schedule", choices=("cos", "step"), default=d.lr_schedule, help="cosine, or step decay")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="class label smoothing")
    g.add_argument("--mosaic", action="store_true", help="Mosaic augmentation during the first --mosaic-ratio of epochs")
    g.add_argument("--mixup", action="store_true", help="MixUp augmentation during the first --mosaic-ratio of epochs")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                   help="augment the training images; --no-augment trains on letterboxed images only "
                        "(no flip, HSV, placement, Mosaic or MixUp)")
    g = p.add_argument_group(
        "recipe",
        "A recipe sets every option of this group (python -m utils.train.recipes prints the table); "
        "an option given here overrides it. The values used are printed and saved in config.json.",
    )
    g.add_argument("--recipe", choices=RECIPE_CHOICES, default=d.recipe,
                   help="reference: the reference design's SGD recipe; short: AdamW + EMA for runs of up to "
                   f"{AUTO_MAX_ITERATIONS:,} nominal iterations; long: SGD + EMA for longer ones; auto: short or "
                   "long by the run's iterations")
    g.add_argument("--freeze-epochs", type=int, default=None,
                   help="first epochs with the backbone frozen (only with pretrained weights)")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help="SGD (Nesterov), Adam, or AdamW (decoupled weight decay)")
    g.add_argument("--lr", type=float, default=None,
                   help="initial learning rate; every recipe uses the optimizer's default: sgd 1e-2, adam 1e-3, "
                   "adamw 0.002*5/(4+classes)")
    g.add_argument("--min-lr", type=float, default=None, help="final learning rate, lr/100 in every recipe")
    g.add_argument("--lr-batch-scaling", action=argparse.BooleanOptionalAction, default=None,
                   help="scale the learning rates by batch/64 and clip them, as the reference does")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum or Adam beta_1")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="L2 on neck/head kernels (sgd, adam) or decoupled decay (adamw)")
    g.add_argument("--warmup-epochs", type=float, default=None,
                   help="per-step linear warm-up length; negative: the reference's per-epoch warm-up")
    g.add_argument("--warmup-min-steps", type=int, default=None, help="shortest per-step warm-up")
    g.add_argument("--warmup-bias-lr", type=float, default=None,
                   help="biases' starting learning rate during the warm-up (SGD; 0: like the other weights)")
    g.add_argument("--box-gain", type=float, default=None, help="weight of the box (CIoU) loss")
    g.add_argument("--obj-gain", type=float, default=None, help="weight of the objectness loss at 416x416")
    g.add_argument("--cls-gain", type=float, default=None, help="weight of the class loss at 80 classes")
    g.add_argument("--loss-batch-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="multiply the loss by the batch size (YOLOv5/v8)")
    g.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="validate and save an exponential moving average of the weights (--no-ema: off)")
    g.add_argument("--ema-decay", type=float, default=None, help="final EMA decay")
    g.add_argument("--ema-tau", type=float, default=None, help="updates over which the EMA decay ramps up")
    g.add_argument("--jitter", type=float, default=None, help="aspect-ratio jitter of the augmentation")
    g.add_argument("--scale-min", type=float, default=None,
                   help="smallest random scale of an image, relative to the input size")
    g.add_argument("--scale-max", type=float, default=None,
                   help="largest random scale of an image, relative to the input size")
    g.add_argument("--mosaic-ratio", type=float, default=None,
                   help="part of the epochs with Mosaic/MixUp on; they are off for the rest")
    g.add_argument("--assigner", choices=ASSIGNERS, default=None,
                   help="yolov3: each box trains its best anchor in the cell of its centre; yolov5: every anchor "
                   "within --anchor-t of its shape, in its cell and the two nearest neighbours, with the YOLOv5 box "
                   "coding (stored in the model)")
    g.add_argument("--anchor-t", type=float, default=None,
                   help="largest box/anchor width or height ratio of a yolov5 match and of the anchor check")
    g.add_argument("--obj-iou-target", action=argparse.BooleanOptionalAction, default=None,
                   help="objectness target of a positive = its box's IoU with the target (detached) instead of 1; "
                   "the ignore threshold (IoU 0.5) applies to the yolov3 assigner only")
    g = p.add_argument_group("run")
    g.add_argument("--save-dir", default=d.save_dir, help="folder of run folders")
    g.add_argument("--name", default=d.name, help="run folder name (default exp, exp2, …; never reused)")
    g.add_argument("--save-period", type=int, default=d.save_period, help="epochs between epoch_NNN.keras checkpoints (0: none)")
    g.add_argument("--eval-period", type=int, default=d.eval_period, help="epochs between validation mAP runs (0: never)")
    g.add_argument("--eval-images", type=int, default=d.eval_images, help="validation images used for mAP (0: all)")
    g.add_argument("--best-by", choices=("loss", "map"), default=d.best_by, help="what best.keras is chosen by")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (data order and augmentation)")
    g.add_argument("--devices", default=d.devices,
                   help="devices to train on, e.g. '0,1' for two GPUs (MirroredStrategy) or 'cpu:0,cpu:1'")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue logs/<name> from its last checkpoint with its own configuration")
    g = p.add_argument_group(
        "several machines",
        "Run the same command on every machine; each is one worker of a tf.distribute cluster "
        "(MultiWorkerMirroredStrategy). The cluster comes from TF_CONFIG or from --cluster. --batch-size is the "
        "global batch of all workers. Only the chief (worker 0) writes the run folder.",
    )
    g.add_argument("--cluster", default=None, metavar="FILE",
                   help="JSON/YAML file listing the workers ('workers: [host:port, ...]', the chief first); "
                        "sets TF_CONFIG")
    g.add_argument("--worker-index", type=int, default=None, help="this machine's place in --cluster's workers")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch of all devices and workers (one all-reduce "
                        "per layer and step; for small per-device batches)")
    return p.parse_args(argv)


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
    from utils.train.callbacks import TrainingDiverged
    from utils.checkpoint import CheckpointError
    from utils.train.cluster import ClusterError, use_cluster_file

    try:
        if args.cluster:
            use_cluster_file(args.cluster, args.worker_index)
        elif args.worker_index is not None:
            raise ConfigError("--worker-index needs --cluster (or set TF_CONFIG instead of both)")
    except (ClusterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
        from utils.train.trainer import train

        run_dir = train(cfg, resume_dir=args.resume)
    except (TrainingDiverged, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, BackboneWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted: the last finished epoch's checkpoint is kept; continue with --resume.", file=sys.stderr)
        return 130
    if run_dir is None:
        print("Done. This worker's part is finished; the chief wrote the run folder.")
    else:
        print(f"Done. Run folder: {run_dir} (last.keras, best.keras, history.csv, loss.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
