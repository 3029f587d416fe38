"""The error gallery: the images a detector gets most wrong, each error drawn and labelled.

Images are ranked by their errors (``utils.eval.confusion.ImageJudgment.num_errors``:
false positives of every kind plus missed objects). Each picture shows the ground
truth in green (dashed where found, solid and labelled where missed) and every
detection above the confidence in the colour of what it is: correct detections in
blue, false positives in red, wrong classes in orange, poor localizations in yellow,
duplicates in magenta, ignored ones (on difficult objects) in grey.
"""

from pathlib import Path

import numpy as np

from utils.eval.confusion import (
    CORRECT,
    DUPLICATE,
    ERROR_KINDS,
    FALSE_POSITIVE,
    IGNORED,
    MISSED,
    POOR_LOCALIZATION,
    WRONG_CLASS,
)
from utils.eval.plots import IMAGE_DPI, draw_box, draw_label, image_figure, safe_file_name, save_figure

#: The colour of each kind of detection, and of the ground truth.
KIND_COLORS = {
    CORRECT: "#1f77ff",
    FALSE_POSITIVE: "#e6194b",
    WRONG_CLASS: "#ff8c00",
    POOR_LOCALIZATION: "#ffe119",
    DUPLICATE: "#f032e6",
    IGNORED: "#a0a0a0",
}
GROUND_TRUTH_COLOR = "#3cb44b"
# The shorter side of a gallery picture is drawn at least this many pixels, so that
# labels stay readable on small images.
_MIN_SIDE = 480
# Inches above the image for the title and the colour key; label font and height in pixels.
_HEADER = 0.85
_FONT_SIZE = 8
_LABEL_HEIGHT = 16


def rank_images(judgments, count):
    """The ids of the ``count`` images with the most errors (ties in dataset order), errorless ones left out.

    Args:
        judgments: ``{image_id: ImageJudgment}``.
        count: how many.

    Returns:
        list of image ids, most errors first.
    """
    ranked = sorted(((-judged.num_errors, k, image_id) for k, (image_id, judged) in enumerate(judgments.items())))
    return [image_id for errors, _, image_id in ranked[:count] if errors < 0]


def _label(kind, judged, i, class_names):
    name = class_names[judged.det_classes[i]]
    score = f"{judged.det_scores[i]:.2f}"
    if kind == WRONG_CLASS:
        return f"wrong class: {name} {score} (is {class_names[judged.gt_classes[judged.det_object[i]]]})"
    if kind == POOR_LOCALIZATION:
        return f"poor localization: {name} {score} (IoU {judged.det_iou[i]:.2f})"
    if kind in (FALSE_POSITIVE, DUPLICATE):
        return f"{kind}: {name} {score}"
    return f"{name} {score}"


def _tag(ax, box, text, color, below=False):
    """A label on a box (xyxy in the axes' pixels): above it (below, with ``below``)
    where there is room in the picture, else just inside it."""
    x1, y1, x2, y2 = box
    bottom, right = ax.get_ylim()[0], ax.get_xlim()[1]
    if below:
        y = y2 + _LABEL_HEIGHT if y2 + _LABEL_HEIGHT <= bottom else y2 - 2
    else:
        y = y1 - 1 if y1 >= _LABEL_HEIGHT else y1 + _LABEL_HEIGHT
    dark = color in (KIND_COLORS[POOR_LOCALIZATION], GROUND_TRUTH_COLOR)
    # Boxes in the right part of the picture get their label ending at their right edge.
    right_half = x1 > 0.55 * right
    draw_label(ax, min(x2, right) if right_half else x1, y, text, color, _FONT_SIZE, dark_text=dark,
               align="right" if right_half else "left")


def _legend(fig):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=GROUND_TRUTH_COLOR, ls="--", label="object found"),
               Line2D([], [], color=GROUND_TRUTH_COLOR, lw=3, label=MISSED)]
    handles += [Line2D([], [], color=color, lw=2, label=kind) for kind, color in KIND_COLORS.items()]
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0 - _HEADER / fig.get_figheight()),
               ncol=4, fontsize=7, frameon=False, handlelength=1.5, columnspacing=1.0)


def draw_judgment(image, judged, class_names, title=""):
    """A matplotlib figure of one image with its ground truth and judged detections.

    Args:
        image: RGB uint8 (H, W, 3), the image the boxes refer to.
        judged: its ``utils.eval.confusion.ImageJudgment``.
        class_names: the C class names.
        title: one or two lines above the image, above the colour key.

    Returns:
        matplotlib Figure (save it with ``utils.eval.plots.save_figure``).
    """
    height, width = image.shape[:2]
    scale = max(1.0, _MIN_SIDE / max(1, min(height, width)))
    fig, ax = image_figure(image, (width * scale, height * scale), _HEADER)
    inches = height * scale / IMAGE_DPI
    line = max(1.5, 0.004 * (width + height) * scale / 2)
    for j, kind in enumerate(judged.gt_kind):
        box = judged.gt_boxes[j] * scale
        if kind == MISSED:
            draw_box(ax, box, GROUND_TRUTH_COLOR, 2 * line)
            _tag(ax, box, f"missed: {class_names[judged.gt_classes[j]]}", GROUND_TRUTH_COLOR, below=True)
        else:
            draw_box(ax, box, GROUND_TRUTH_COLOR, line, "--")
    # Correct detections first, so that errors are drawn on top.
    for i in sorted(range(len(judged.det_kind)), key=lambda k: judged.det_kind[k] != CORRECT):
        kind = judged.det_kind[i]
        box = judged.det_boxes[i] * scale
        draw_box(ax, box, KIND_COLORS[kind], line)
        _tag(ax, box, _label(kind, judged, i, class_names), KIND_COLORS[kind])
    fig.text(0.01, 1.0 - 0.05 / (inches + _HEADER), title, fontsize=8, va="top", ha="left")
    _legend(fig)
    return fig


def describe_errors(counts):
    """Text of an image's errors: "2 false positive, 1 missed" (kinds without one left out)."""
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "no error"


def save_error_gallery(judgments, image_paths, class_names, folder, count, conf, iou):
    """Draws the ``count`` images with the most errors into ``folder`` as JPEG files.

    Files are ``<rank>_<image id>.jpg``, rank 01 the image with the most errors.

    Args:
        judgments: ``{image_id: ImageJudgment}`` (``utils.eval.confusion.judge_images``).
        image_paths: ``{image_id: path}`` of the images.
        class_names: the C class names.
        folder: output folder (created).
        count: how many images at most.
        conf: the confidence the detections were judged at, for the titles.
        iou: the IoU, for the titles.

    Returns:
        (written paths, problems): a message per image that could not be read.
    """
    from utils.image import ImageLoadError, load_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    for rank, image_id in enumerate(rank_images(judgments, count), 1):
        path = image_paths.get(image_id)
        try:
            image = load_image(path)
        except (ImageLoadError, OSError, TypeError) as exc:
            problems.append(f"{path or image_id}: image not readable for the error gallery ({exc}); left out")
            continue
        judged = judgments[image_id]
        title = (f"#{rank} {image_id}: {describe_errors(judged.error_counts())}\n"
                 f"detections scoring above {conf:g}, pairs at IoU {iou:g}")
        fig = draw_judgment(np.asarray(image), judged, class_names, title)
        written.append(save_figure(fig, folder / f"{rank:02d}_{safe_file_name(image_id)}.jpg", dpi=IMAGE_DPI))
    return written, problems


def error_totals(judgments):
    """``{kind: count}`` over all images, for every kind of ``ERROR_KINDS``."""
    totals = dict.fromkeys(ERROR_KINDS, 0)
    for judged in judgments.values():
        for kind, n in judged.error_counts().items():
            totals[kind] += n
    return totals
