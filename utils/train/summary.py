"""What a run prints before it starts: the summary of its settings and data, the
annotation problems, and the anchor check (with the refit of ``--auto-anchors``).
"""

import numpy as np

from utils.config import ANCHOR_MIN_BPR
from utils.train.settings import summary_rows


def format_summary(cfg, run_dir, n_train, n_val, phases, class_names, datasets=(), cluster=None, out_dir=None):
    """The one-screen summary printed at the start of a run."""
    from utils.train.recipes import RECIPES

    if cluster is not None and not cluster.is_chief:
        where = f"written by the chief ({cluster.workers[0]}); this worker writes to {out_dir}, removed at the end"
        lines = [f"Run folder: {where}", "-" * 64]
    else:
        lines = [f"Run folder: {run_dir}", "-" * 64]
    rows = [
        ("train / val images", f"{n_train} / {n_val}"),
        ("classes", f"{len(class_names)}: {', '.join(class_names[:8])}{' …' if len(class_names) > 8 else ''}"),
        ("recipe", f"{cfg.recipe}: {RECIPES[cfg.recipe].summary} ({cfg.recipe_reason})"),
        *summary_rows(cfg),
    ]
    if cluster is not None:
        share = ", ".join(dict.fromkeys(str(p.batch // cluster.num_workers) for p in phases))
        rows.append(("cluster", f"{cluster.describe()}; global batch as above, per worker {share}"
                                f"{', synchronized BatchNorm' if cfg.sync_bn else ''}"))
    lines += [f"{k:<26} {v}" for k, v in rows]
    lines += [f"{'data read':<26} {line}" for line in datasets]
    lines.append("phases: " + "; ".join(
        f"epochs {p.start + 1}-{p.end} {'frozen' if p.frozen else 'all layers'} batch {p.batch}"
        f"{' mosaic' if p.mosaic else ''}" for p in phases))
    lines.append("-" * 64)
    return "\n".join(lines)


def box_report(train_set, class_names, input_size):
    """The statistics of the training boxes, and the lines a run prints of them.

    Returns:
        (``utils.data.box_stats.BoxStats``, list of str): objects and images without
        objects, classes without objects and with few.
    """
    from utils.data.box_stats import box_stats, format_box_stats

    stats = box_stats(train_set, class_names, input_size)
    return stats, [f"Training boxes: {line}" for line in format_box_stats(stats)]


def print_problems(problems, shown=20):
    if not problems:
        return
    print(f"{len(problems)} annotation problem(s), each with what was done (skipped, clipped or kept):")
    for line in problems[:shown]:
        print("  " + line)
    if len(problems) > shown:
        print(f"  … and {len(problems) - shown} more")


def check_anchor_fit(cfg, train_set, anchors, refit=False):
    """The anchor check at the start of a run (as YOLOv5's AutoAnchor reports it), and
    the refit of ``--auto-anchors``.

    The training boxes are letterboxed to the input size; the check reports the best
    possible recall (boxes with an anchor within ``cfg.anchor_t`` in width and height),
    the anchors per box and the mean best IoU, and warns below ``ANCHOR_MIN_BPR``.
    With ``refit`` the anchors are fitted anew by k-means on those boxes and used
    when they fit better.

    Args:
        cfg: the resolved TrainConfig.
        train_set: the training annotations.
        anchors: (9, 2) anchors of ``cfg.anchors``.
        refit: fit new anchors.

    Returns:
        (anchors, lines): the anchors to train with and the lines to print.
    """
    from utils.data.kmeans import anchor_fit, kmeans_anchors, letterbox_box_sizes, round_anchors

    wh, _ = letterbox_box_sizes(train_set, cfg.input_size)
    wh = wh[np.all(wh > 0, axis=1)]
    fit = anchor_fit(wh, anchors, cfg.anchor_t)

    def describe(f):
        return (f"best possible recall {f.best_possible_recall:.4f} at ratio {f.anchor_t:g}, "
                f"{f.anchors_per_box:.2f} anchors per box, mean best IoU {f.mean_best_iou:.3f}")

    lines = [f"Anchors ({cfg.anchors}) on {fit.boxes} training boxes at input {cfg.input_size}: {describe(fit)}"]
    if refit:
        if len(wh) < len(anchors):
            lines.append(f"--auto-anchors: {len(wh)} boxes are too few to fit {len(anchors)} anchors; kept.")
            return anchors, lines
        new = round_anchors(kmeans_anchors(wh, k=len(anchors), seed=cfg.seed).anchors).astype(np.float32)
        new_fit = anchor_fit(wh, new, cfg.anchor_t)
        if (new_fit.best_possible_recall, new_fit.mean_best_iou) > (fit.best_possible_recall, fit.mean_best_iou):
            lines.append(f"--auto-anchors refitted them: {describe(new_fit)}; "
                         f"anchors {', '.join(f'{int(w)},{int(h)}' for w, h in new)}")
            return new, lines
        lines.append("--auto-anchors: the refitted anchors fit no better; kept.")
    elif fit.best_possible_recall < ANCHOR_MIN_BPR:
        lines.append(
            f"Warning: the anchors fit the boxes poorly (best possible recall below {ANCHOR_MIN_BPR}). Fit anchors to "
            f"this dataset: python kmeans_for_anchors.py --annotations {cfg.train}"
            f"{f' --images {cfg.images}' if cfg.images else ''} --input-size {cfg.input_size} --out anchors.txt, "
            "then train with --anchors anchors.txt; or pass --auto-anchors."
        )
    return anchors, lines
