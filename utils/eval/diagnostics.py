"""What an evaluation shows beyond mAP: the confidence of best F1, the confusion matrix,
the errors by kind, and the files they are written to.

``diagnose`` computes them from a VOC result and the per-image ground truth and
detections it was computed from; ``save_diagnostics`` writes ``confusion_matrix.png``,
``confusion_matrix.csv`` (counts), ``confusion_matrix_normalized.csv`` (shares of each
true class), ``PR_curve.png``, ``F1_curve.png``, ``P_curve.png`` and ``R_curve.png``;
``format_diagnostics`` gives the lines to print and ``diagnostics_json`` the entries of
a results file. ``get_map.py`` and training (at its best epoch) both call them.
"""

import csv
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from utils.config import EVAL_MATCH_IOU
from utils.eval.confusion import CONFUSION_CONF, confusion_matrix, judge_images, normalize_rows
from utils.eval.curves import best_f1
from utils.eval.gallery import describe_errors, error_totals
from utils.run_dir import write_text_atomic

CONFUSION_FILES = ("confusion_matrix.png", "confusion_matrix.csv", "confusion_matrix_normalized.csv")


@dataclass
class Diagnostics:
    """The diagnostics of one evaluation.

    Attributes:
        class_names: the C class names.
        best: dict of ``utils.eval.curves.best_f1`` (``conf``, ``f1``, ``precision``,
            ``recall``), or None without ground truth.
        matrix: int64 (C + 1, C + 1) confusion matrix, rows true classes then
            background, columns predicted classes then background.
        conf: the confidence of the matrix and the judgments.
        iou: their IoU.
        judgments: ``{image_id: ImageJudgment}``.
    """

    class_names: list
    best: dict
    matrix: object
    conf: float
    iou: float
    judgments: dict = field(repr=False, default_factory=dict)

    @cached_property
    def errors(self):
        """``{kind: count}`` of the errors over all images."""
        return error_totals(self.judgments)


def diagnose(result, ground_truth, detections, class_names, conf=CONFUSION_CONF, iou=EVAL_MATCH_IOU):
    """The best-F1 confidence, the confusion matrix and the judged images of an evaluation.

    Args:
        result: dict of ``utils.eval.voc_metric.evaluate_voc`` (its curves give the
            best F1), or of another metric (no best F1 then).
        ground_truth: the per-image ground truth it was computed from.
        detections: the per-image detections it was computed from.
        class_names: the C class names.
        conf: confidence of the confusion matrix (detections scoring above it count).
        iou: IoU of the confusion matrix.

    Returns:
        Diagnostics.
    """
    class_names = list(class_names)
    judgments = judge_images(ground_truth, detections, len(class_names), conf, iou)
    best = best_f1(result) if "curve_scores" in result else None
    return Diagnostics(class_names, best, confusion_matrix(judgments, len(class_names)), conf, iou, judgments)


def _matrix_csv(matrix, names, fmt):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, matrix):
        writer.writerow([name, *(fmt(v) for v in row)])
    return buffer.getvalue()


def save_diagnostics(diagnostics, result, out_dir, plots=True):
    """Writes the confusion matrix (CSV, and PNG with ``plots``) and the curves of a VOC result.

    Args:
        diagnostics: Diagnostics.
        result: the VOC result the curves come from (no curves for another metric).
        out_dir: output folder.
        plots: also draw the PNG files.

    Returns:
        list of the written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [*diagnostics.class_names, "background"]
    png, counts, shares = (out_dir / name for name in CONFUSION_FILES)
    write_text_atomic(counts, _matrix_csv(diagnostics.matrix, names, str))
    write_text_atomic(shares, _matrix_csv(normalize_rows(diagnostics.matrix), names, lambda v: f"{v:.4f}"))
    written = [counts, shares]
    if plots:
        from utils.eval.plots import plot_confusion_matrix, save_curve_plots

        written.append(plot_confusion_matrix(diagnostics.matrix, diagnostics.class_names, png, diagnostics.conf,
                                             diagnostics.iou))
        if "curve_scores" in result:
            written += save_curve_plots(result, diagnostics.best, out_dir)
    return written


def format_best_f1(best):
    """The line that gives the best-F1 confidence, or a line saying there is none."""
    if best is None:
        return "Best F1: n/a (no ground truth)"
    return (f"Best F1 {best['f1']:.3f} (precision {best['precision']:.3f}, recall {best['recall']:.3f}, means over "
            f"the classes) at confidence {best['conf']:.3f}: the threshold to use in predict.py --conf")


def format_diagnostics(diagnostics):
    """The lines to print: the best F1, then the errors at the confusion matrix's confidence."""
    matrix = diagnostics.matrix
    background = len(diagnostics.class_names)
    wrong = int(matrix[:background, :background].sum() - matrix.diagonal()[:background].sum())
    lines = [
        format_best_f1(diagnostics.best),
        f"At confidence {diagnostics.conf:g}, IoU {diagnostics.iou:g}: {int(matrix.diagonal()[:background].sum())} "
        f"found, {wrong} found as another class, {int(matrix[:background, background].sum())} missed, "
        f"{int(matrix[background].sum())} detections on no object; errors by kind: "
        f"{describe_errors(diagnostics.errors)}",
    ]
    return "\n".join(lines)


def diagnostics_json(diagnostics):
    """The entries a results file gets: ``best_f1``, ``confusion_matrix`` and ``errors``."""
    return {
        "best_f1": diagnostics.best,
        "confusion_matrix": {
            "conf": diagnostics.conf,
            "iou": diagnostics.iou,
            "rows": "true classes, then background (detections on no object)",
            "columns": "predicted classes, then background (missed objects)",
            "labels": [*diagnostics.class_names, "background"],
            "counts": diagnostics.matrix.tolist(),
        },
        "errors": {"conf": diagnostics.conf, "iou": diagnostics.iou, **diagnostics.errors},
    }
