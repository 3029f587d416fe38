"""The evaluation plots drawn the fast way are the pictures the plain way draws."""

import numpy as np
from PIL import Image

from utils.eval.plots import PNG_COMPRESSION, plot_pr_curves, pyplot, safe_file_name, tight_layout


def _result():
    """A VOC result's fields that the per-class curves read: two classes with points, one
    with ground truth but no detection, one without ground truth."""
    rng = np.random.default_rng(0)
    curves, classes = {}, []
    for name, points, num_gt in (("cat", 300, 40), ("traffic light", 3000, 10), ("dog", 0, 2), ("bird", 5, 0)):
        hits = np.cumsum(rng.random(points) < 0.4)
        curves[name] = (hits / max(num_gt, 1), hits / np.arange(1, points + 1))
        classes.append({"name": name, "num_gt": num_gt, "ap": float(rng.random())})
    return {"classes": classes, "curves": curves}


def _drawn_whole(result, stats, path):
    """One class's curve as a figure of its own, drawn and saved whole by savefig."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    recall, precision = (np.asarray(v, np.float64) for v in result["curves"][stats["name"]])
    if len(recall):
        recall, precision = np.concatenate([[0.0], recall]), np.concatenate([precision[:1], precision])
        keep = np.arange(len(recall))
        if len(recall) > 2000:  # thinned to 2000 points, the first and last kept
            keep = np.unique(np.linspace(0, len(recall) - 1, 2000).round().astype(int))
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        ax.plot(recall[keep], precision[keep], lw=1.5, label="precision")
        ax.plot(recall[keep], envelope[keep], lw=1.0, ls="--", label="envelope (AP)")
        ax.legend(loc="lower left")
    else:
        ax.plot([], [], lw=1.5)
        ax.plot([], [], lw=1.0, ls="--")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title(f"{stats['name']}: AP {100.0 * stats['ap']:.2f}%")
    fig.subplots_adjust(left=0.13, right=0.96, bottom=0.11, top=0.92)
    fig.savefig(path, format="png", dpi=80, pil_kwargs={"compress_level": PNG_COMPRESSION})
    plt.close(fig)
    return path


def test_each_class_curve_is_the_picture_a_whole_drawing_gives(tmp_path):
    result = _result()
    written = plot_pr_curves(result, tmp_path / "pr")
    assert [p.name for p in written] == ["cat.png", "traffic_light.png", "dog.png"]  # bird has no ground truth
    pictures = []
    for stats, path in zip(result["classes"], written):
        assert path.name == f"{safe_file_name(stats['name'])}.png"
        reference = _drawn_whole(result, stats, tmp_path / f"whole_{path.name}")
        ours, theirs = Image.open(path), Image.open(reference)
        assert ours.info == theirs.info  # the same PNG metadata (dpi, software)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
        pictures.append(np.asarray(ours))
    assert not np.array_equal(pictures[0], pictures[1])  # each class its own curve and title


def test_tight_layout_fits_as_figure_tight_layout_does_and_leaves_no_layout_engine():
    plt = pyplot()
    figures = []
    for fit in (tight_layout, lambda fig: fig.tight_layout()):
        fig, ax = plt.subplots(figsize=(6.5, 5))
        ax.plot([0, 1], [0, 1], label="a rather long label")
        ax.legend()
        ax.set_ylabel("a long axis label, to move the margin")
        ax.set_title("title")
        fit(fig)
        figures.append(fig)
    ours, theirs = (vars(fig.subplotpars) for fig in figures)
    assert {k: ours[k] for k in ("left", "right", "bottom", "top")} == {
        k: theirs[k] for k in ("left", "right", "bottom", "top")}
    assert ours["left"] > 0.1  # the label moved the margin
    # figure.tight_layout leaves a placeholder engine, which makes savefig lay the figure out again.
    assert figures[0].get_layout_engine() is None and figures[1].get_layout_engine() is not None
    for fig in figures:
        plt.close(fig)
