"""Plots of a VOC evaluation: precision-recall curves (per class, and all classes with
their mean), AP per class, ground-truth counts, precision, recall and F1 against the
confidence, and the confusion matrix.

Figures are drawn with matplotlib's Agg backend (no display needed) and saved as PNG
(or JPEG, by the file's suffix), each written whole under a temporary name and renamed
into place (``atomic_write``). ``pyplot`` and ``save_figure`` serve the other
stages' figures too.
"""

import math
import re
from pathlib import Path

import numpy as np

from utils.run_dir import atomic_write

# Legends list each class up to this many classes.
_MAX_LEGEND_CLASSES = 20


#: zlib level of the PNG files: 1 encodes the evaluation plots in about 60% of the time
#: of the default 6, for files about 8% larger (the same pixels).
PNG_COMPRESSION = 1


def save_figure(fig, path, dpi=80):
    """Writes a matplotlib figure to ``path`` whole, as PNG or, for .jpg/.jpeg, JPEG; closes it.

    Returns:
        the path (Path).
    """
    path = Path(path)
    fmt = "jpg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    options = {"pil_kwargs": {"compress_level": PNG_COMPRESSION}} if fmt == "png" else {}
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, **options), path.suffix or ".png")
    fig.clf()
    pyplot().close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tight_layout(fig):
    """Fits a figure's margins to its labels, as ``fig.tight_layout()`` does.

    ``fig.tight_layout()`` leaves a placeholder layout engine on the figure, which
    makes ``savefig`` lay the whole figure out once more before drawing it; running
    the engine directly leaves none, so that saving draws the figure once.
    """
    from matplotlib.layout_engine import TightLayoutEngine

    TightLayoutEngine().execute(fig)


#: Dots per inch of the pictures drawn over images: a figure pixel is an output pixel.
IMAGE_DPI = 100


def image_figure(image, size=None, header=0.0):
    """A figure showing an image, whose data coordinates are pixel edges of the figure.

    Args:
        image: RGB uint8 (H, W, 3).
        size: (width, height) the image is drawn at, in output pixels (default its own).
        header: inches of blank space above the image, for a title or a key.

    Returns:
        (fig, ax): the image fills ``ax``, x from 0 to width, y from 0 (top) to height;
        save with ``save_figure(fig, path, dpi=IMAGE_DPI)``.
    """
    width, height = size if size is not None else (image.shape[1], image.shape[0])
    inches = height / IMAGE_DPI
    fig = pyplot().figure(figsize=(width / IMAGE_DPI, inches + header), dpi=IMAGE_DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, inches / (inches + header)))
    ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    return fig, ax


def draw_box(ax, box, color, width, style="-"):
    """Draws an xyxy box (in the axes' data coordinates, y down) as an outline."""
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=width, ls=style))


def draw_label(ax, x, y, text, color, fontsize=8, dark_text=False, align="left"):
    """Draws ``text`` on a ``color`` box with its bottom-left (``align="right"``: bottom-right)
    corner at (x, y), in data coordinates."""
    ax.text(x, y, text, fontsize=fontsize, color="black" if dark_text else "white", va="bottom", ha=align,
            bbox={"facecolor": color, "edgecolor": "none", "pad": 1.0, "alpha": 0.85}, clip_on=True)


def safe_file_name(name):
    """A class name usable as a file name: spaces to underscores, path and odd characters to ``-``."""
    text = "_".join(str(name).split())
    text = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "-", text)
    return text if text not in ("", ".", "..") else f"class-{text.strip('.') or 'empty'}"


def plot_pr_curves(result, folder):
    """Saves one precision-recall curve per class with ground truth: ``<folder>/<class>.png``.

    One figure serves every class: its axes, ticks and grid, the same in every
    picture, are drawn once, and each class's picture is that drawing with the class's
    lines, the frame, the legend and the title drawn over it, in the order a full
    drawing has them. A curve of more points than the picture has pixels across is
    thinned to ``_CURVE_POINTS``: thousands of classes of thousands of detections each
    draw in a few hundredths of a second per class.

    Args:
        result: dict returned by ``utils.eval.voc_metric.evaluate_voc`` (uses ``curves``).
        folder: output folder (created if needed).

    Returns:
        list of the written paths.
    """
    from matplotlib.image import imsave

    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=_PR_CURVE_DPI)
    (curve,) = ax.plot([], [], lw=1.5, label="precision")
    (upper,) = ax.plot([], [], lw=1.0, ls="--", label="envelope (AP)")
    legend = ax.legend(loc="lower left")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.96, bottom=0.11, top=0.92)
    # What changes from class to class, drawn above the rest (lines, frame, title, legend: their z-order).
    changing = [curve, upper, *ax.spines.values(), ax.title, legend]
    canvas = fig.canvas
    written = []
    try:
        for artist in changing:
            artist.set_visible(False)
        canvas.draw()
        background = canvas.copy_from_bbox(fig.bbox)
        for artist in changing:
            artist.set_visible(True)
        for stats in result["classes"]:
            if stats["num_gt"] == 0:
                continue
            recall, precision = (np.asarray(v, np.float64) for v in result["curves"][stats["name"]])
            if len(recall):
                # The plotted curve starts at recall 0 with the first detection's precision.
                recall, precision = np.concatenate([[0.0], recall]), np.concatenate([precision[:1], precision])
                envelope = np.maximum.accumulate(precision[::-1])[::-1]
                keep = _thinned(len(recall))
                curve.set_data(recall[keep], precision[keep])
                upper.set_data(recall[keep], envelope[keep])
            else:
                curve.set_data([], [])
                upper.set_data([], [])
            legend.set_visible(bool(len(recall)))
            ax.set_title(f"{stats['name']}: AP {100.0 * stats['ap']:.2f}%")
            canvas.restore_region(background)
            for artist in changing:
                if artist.get_visible():
                    ax.draw_artist(artist)
            path = folder / f"{safe_file_name(stats['name'])}.png"
            atomic_write(path, lambda tmp: imsave(tmp, canvas.buffer_rgba(), format="png", dpi=_PR_CURVE_DPI,
                                                  pil_kwargs={"compress_level": PNG_COMPRESSION}), ".png")
            written.append(path)
    finally:
        fig.clf()
        plt.close(fig)
    return written


#: Dots per inch of the precision-recall curve of each class.
_PR_CURVE_DPI = 80
#: Points a curve is drawn with at most: more than the pixels of the widest figure.
_CURVE_POINTS = 2000


def _thinned(count):
    """Indices of ``count`` curve points to draw: all of them up to ``_CURVE_POINTS``, else
    that many evenly spaced (the first and last included)."""
    if count <= _CURVE_POINTS:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, _CURVE_POINTS).round().astype(np.int64))


def _bar_chart(names, values, title, xlabel, path, fmt):
    plt = pyplot()
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
    tight_layout(fig)
    return save_figure(fig, path)


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


def plot_pr_summary(result, path):
    """Saves the precision envelope of every class with ground truth and their mean.

    Each curve is the step curve whose area is the class's all-point AP
    (``utils.eval.curves.pr_envelope``); the mean curve's area is the mAP.

    Args:
        result: dict returned by ``utils.eval.voc_metric.evaluate_voc``.
        path: output PNG path.

    Returns:
        the path (Path).
    """
    from utils.eval.curves import mean_envelope, pr_envelope

    plt = pyplot()
    rows = [c for c in result["classes"] if c["num_gt"] > 0]
    envelopes = [pr_envelope(*result["curves"][c["name"]]) for c in rows]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    show_names = len(rows) <= _MAX_LEGEND_CLASSES
    for stats, (r, p) in zip(rows, envelopes):
        label = f"{stats['name']} {stats['ap']:.3f}" if show_names else None
        ax.plot(r, p, drawstyle="steps-pre", lw=1.0, alpha=0.8, label=label)
    r, p = mean_envelope(envelopes)
    if r is not None:
        ax.plot(r, p, drawstyle="steps-pre", lw=3.0, color="black",
                label=f"all classes {result['map']:.3f} mAP@{result['iou_threshold']:g}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (envelope)")
    ax.set_title("Precision-recall curves")
    ax.grid(alpha=0.3)
    tight_layout(fig)
    return save_figure(fig, path)


#: The confidence curves: file name, what is plotted, its axis label.
CONFIDENCE_PLOTS = (("F1_curve.png", "f1", "F1"), ("P_curve.png", "precision", "precision"),
                    ("R_curve.png", "recall", "recall"))


def plot_confidence_curves(result, best, folder):
    """Saves F1, precision and recall against the confidence: ``F1_curve.png``,
    ``P_curve.png`` and ``R_curve.png`` in ``folder``, each with every class with ground
    truth and the mean, the best-F1 confidence marked.

    Args:
        result: dict returned by ``utils.eval.voc_metric.evaluate_voc``.
        best: dict of ``utils.eval.curves.best_f1`` (or None).
        folder: output folder.

    Returns:
        list of the written paths.
    """
    from utils.eval.curves import confidence_curves

    plt = pyplot()
    curves = confidence_curves(result)
    show_names = len(curves.names) <= _MAX_LEGEND_CLASSES
    written = []
    for name, field, label in CONFIDENCE_PLOTS:
        values = getattr(curves, field)
        fig, ax = plt.subplots(figsize=(6.5, 5))
        for class_name, row in zip(curves.names, values):
            ax.plot(curves.thresholds, row, lw=1.0, alpha=0.8, label=class_name if show_names else None)
        if len(values):
            title = f"{label} against confidence"
            mean = "all classes"
            if best is not None:
                mean += f" {best[field]:.2f} at {best['conf']:.3f}"
                ax.axvline(best["conf"], color="grey", ls="--", lw=1.0)
                title += f" (best F1 {best['f1']:.2f} at confidence {best['conf']:.3f})"
            ax.plot(curves.thresholds, values.mean(axis=0), lw=3.0, color="black", label=mean)
            ax.legend(loc="lower left" if field != "precision" else "lower right", fontsize=8)
            ax.set_title(title, fontsize=10)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("confidence (detections scoring above it)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        tight_layout(fig)
        written.append(save_figure(fig, Path(folder) / name))
    return written


def plot_confusion_matrix(matrix, class_names, path, conf, iou):
    """Saves a confusion matrix as counts (left) and as shares of each true class (right).

    Args:
        matrix: int (C + 1, C + 1) of ``utils.eval.confusion.confusion_matrix``: rows
            true classes then background, columns predicted classes then background.
        class_names: the C class names.
        path: output PNG path.
        conf: the confidence it was counted at, for the title.
        iou: the IoU it was counted at, for the title.

    Returns:
        the path (Path).
    """
    from utils.eval.confusion import normalize_rows

    plt = pyplot()
    names = [*class_names, "background"]
    n = len(names)
    side = min(max(4.0, 0.45 * n + 2.0), 24.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.0, side))
    annotate = n <= 30
    panels = ((axes[0], matrix, "counts"), (axes[1], normalize_rows(matrix), "share of each true class"))
    for ax, values, what in panels:
        shown = np.ma.masked_where(values == 0, values)
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-9))
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(what)
        if annotate:
            top = float(values.max()) or 1.0
            for (row, col), value in np.ndenumerate(values):
                if value:
                    text = f"{value:d}" if what == "counts" else f"{value:.2f}"
                    ax.text(col, row, text, ha="center", va="center", fontsize=7,
                            color="white" if value > 0.6 * top else "black")
        ax.axhline(n - 1.5, color="grey", lw=0.8)
        ax.axvline(n - 1.5, color="grey", lw=0.8)
    fig.suptitle(f"Confusion matrix at confidence {conf:g}, IoU {iou:g} (background row: false positives, "
                 "background column: missed objects)", fontsize=10)
    # Margins from the longest name, not tight_layout: measuring every text of a large
    # matrix once more costs as much as drawing it.
    label = 0.07 * max(len(name) for name in names) + 0.5  # inches: tick labels at 8 pt and the axis title
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=label / width, right=1.0 - 0.2 / width, bottom=label / height,
                        top=1.0 - 0.7 / height, wspace=(label + 0.3) / (width / 2.0))
    return save_figure(fig, path)


def save_voc_plots(result, out_dir):
    """Saves all plots of a VOC evaluation under ``out_dir``.

    Writes ``pr_curves/<class>.png``, ``ap_per_class.png`` and ``gt_counts.png``; the
    curves of every class together come with the diagnostics
    (``utils.eval.diagnostics.save_diagnostics``).

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


def save_curve_plots(result, best, out_dir):
    """Saves ``PR_curve.png``, ``F1_curve.png``, ``P_curve.png`` and ``R_curve.png`` under ``out_dir``.

    Returns:
        list of the written paths.
    """
    return [plot_pr_summary(result, Path(out_dir) / "PR_curve.png"), *plot_confidence_curves(result, best, out_dir)]
