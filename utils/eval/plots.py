"""Plots of a VOC evaluation: precision-recall curves, AP per class, ground-truth counts.

Figures are drawn with matplotlib's Agg backend (no display needed) and saved as PNG,
each written whole under a temporary name and renamed into place (``atomic_write``).
"""

import math
import re
from pathlib import Path

import numpy as np

from utils.run_dir import atomic_write


def _save(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80), ".png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_file_name(name):
    """A class name usable as a file name: spaces to underscores, path and odd characters to ``-``."""
    text = "_".join(str(name).split())
    text = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "-", text)
    return text if text not in ("", ".", "..") else f"class-{text.strip('.') or 'empty'}"


def plot_pr_curves(result, folder):
    """Saves one precision-recall curve per class with ground truth: ``<folder>/<class>.png``.

    Args:
        result: dict returned by ``utils.eval.voc_metric.evaluate_voc`` (uses ``curves``).
        folder: output folder (created if needed).

    Returns:
        list of the written paths.
    """
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stats in result["classes"]:
        if stats["num_gt"] == 0:
            continue
        recall, precision = result["curves"][stats["name"]]
        fig, ax = plt.subplots(figsize=(5, 4.5))
        if len(recall):
            # The plotted curve starts at recall 0 with the first detection's precision.
            ax.plot([0.0, *recall], [precision[0], *precision], lw=1.5, label="precision")
            envelope = np.maximum.accumulate(np.asarray(precision)[::-1])[::-1]
            ax.plot([0.0, *recall], [envelope[0], *envelope], lw=1.0, ls="--", label="envelope (AP)")
            ax.legend(loc="lower left")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{stats['name']}: AP {100.0 * stats['ap']:.2f}%")
        ax.grid(alpha=0.3)
        path = folder / f"{safe_file_name(stats['name'])}.png"
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _bar_chart(names, values, title, xlabel, path, fmt):
    plt = _pyplot()
    height = max(3.0, 0.28 * len(names) + 1.2)
    fig, ax = plt.subplots(figsize=(7, height))
    positions = range(len(names))
    ax.barh(list(positions), values, color="tab:blue")
    ax.set_yticks(list(positions))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    for y, v in zip(positions, values):
        ax.text(v, y, " " + fmt(v), va="center", fontsize=8)
    ax.margins(x=0.15)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def plot_ap_per_class(result, path):
    """Saves a bar chart of the AP of each class with ground truth, mAP in the title.

    Args:
        result: dict returned by ``utils.eval.voc_metric.evaluate_voc``.
        path: output PNG path.

    Returns:
        the path (Path).
    """
    rows = [c for c in result["classes"] if c["num_gt"] > 0]
    mean = result["map"]
    shown = "n/a" if math.isnan(mean) else f"{100.0 * mean:.2f}%"
    title = f"AP per class: mAP@{result['iou_threshold']:g} = {shown}"
    return _bar_chart(
        [c["name"] for c in rows], [100.0 * c["ap"] for c in rows], title, "AP (%)", path, lambda v: f"{v:.1f}"
    )


def plot_gt_counts(result, path):
    """Saves a bar chart of the non-difficult ground-truth objects of each class.

    Takes the arguments and returns the path as ``plot_ap_per_class`` does.
    """
    rows = result["classes"]
    title = f"Ground-truth objects ({result['num_images']} images, {result['totals']['num_gt']} objects)"
    names, counts = [c["name"] for c in rows], [c["num_gt"] for c in rows]
    return _bar_chart(names, counts, title, "objects", path, lambda v: f"{v:d}")


def save_voc_plots(result, out_dir):
    """Saves all plots of a VOC evaluation under ``out_dir``.

    Writes ``pr_curves/<class>.png``, ``ap_per_class.png`` and ``gt_counts.png``.

    Args:
        result: dict returned by ``utils.eval.voc_metric.evaluate_voc``.
        out_dir: output folder.

    Returns:
        list of the written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = plot_pr_curves(result, out_dir / "pr_curves")
    written.append(plot_ap_per_class(result, out_dir / "ap_per_class.png"))
    written.append(plot_gt_counts(result, out_dir / "gt_counts.png"))
    return written
