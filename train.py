"""Train EfficientNet-YOLOv3 on annotation lines, COCO JSON, YOLO txt or VOC datasets.

Examples:
    python train.py --train 2007_train.txt --val 2007_val.txt --classes model_data/voc_classes.txt
    python train.py --train coco/annotations/instances_train2017.json --images coco/train2017 \
        --val coco/annotations/instances_val2017.json --val-images coco/val2017
    python train.py --train data.yaml --val data.yaml
    python train.py --train 2007_train.txt --val 2007_val.txt --backbone-weights none --epochs 100
    python train.py --resume logs/exp
"""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.train.trainer import ConfigError, TrainConfig  # noqa: E402


def parse_args(argv=None):
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description="Train EfficientNet-YOLOv3. Defaults follow the reference recipe "
        "(416 input, 300 epochs, first 50 with the backbone frozen, SGD, cosine LR).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    g.add_argument("--freeze-epochs", type=int, default=d.freeze_epochs,
                   help="first epochs with the backbone frozen (only with pretrained weights)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size with all layers trained")
    g.add_argument("--freeze-batch-size", type=int, default=d.freeze_batch_size, help="batch size while frozen")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer, help="SGD (momentum 0.937, Nesterov) or Adam")
    g.add_argument("--lr", type=float, default=None, help="initial LR for a batch of 64 (default sgd 1e-2, adam 1e-3)")
    g.add_argument("--min-lr", type=float, default=None, help="final LR for a batch of 64 (default lr/100)")
    g.add_argument("--lr-schedule", choices=("cos", "step"), default=d.lr_schedule, help="cosine with warm-up, or step decay")
    g.add_argument("--weight-decay", type=float, default=None, help="L2 on neck/head kernels (default sgd 5e-4, adam 0)")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="class label smoothing")
    g.add_argument("--mosaic", action="store_true", help="Mosaic augmentation during the first --mosaic-ratio of epochs")
    g.add_argument("--mixup", action="store_true", help="MixUp augmentation during the first --mosaic-ratio of epochs")
    g.add_argument("--jitter", type=float, default=d.jitter, help="aspect-ratio jitter of the augmentation")
    g.add_argument("--scale-min", type=float, default=d.scale_min,
                   help="smallest random scale of an image, relative to the input size")
    g.add_argument("--scale-max", type=float, default=d.scale_max,
                   help="largest random scale of an image, relative to the input size")
    g.add_argument("--mosaic-ratio", type=float, default=d.mosaic_ratio,
                   help="part of the epochs with Mosaic/MixUp on; they are off for the rest")
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

    try:
        cfg = config_from_args(args)
        from utils.train.trainer import train

        run_dir = train(cfg, resume_dir=args.resume)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, BackboneWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted: the last finished epoch's checkpoint is kept; continue with --resume.", file=sys.stderr)
        return 130
    print(f"Done. Run folder: {run_dir} (last.keras, best.keras, history.csv, loss.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
