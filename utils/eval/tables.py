"""The metric results as text tables for the console, and as strict JSON.

``format_voc_table`` writes a VOC result as one row per class; ``format_coco_summary``
gives pycocotools' summary lines with a heading; ``format_problems`` lists the input
problems an evaluation collected; ``json_ready`` turns any result into a dict that
``json.dump`` writes as strict JSON.
"""

import math

import numpy as np

#: Result keys holding arrays or objects for the plots, left out of the JSON.
NON_JSON_KEYS = ("curves", "curve_scores", "diagnostics")


def format_voc_table(result):
    """Formats an ``evaluate_voc`` result as a text table, one row per class, then mAP.

    Args:
        result: dict returned by ``evaluate_voc``.

    Returns:
        str, several lines, no trailing newline.
    """
    names = [c["name"] for c in result["classes"]]
    width = max([len("class"), len("total")] + [len(n) for n in names])
    thr = result["score_threshold"]
    header = (
        f"{'class':<{width}}  {'AP':>7}  {'GT':>6}  {'dets':>8}  "
        f"{'P@' + format(thr, 'g'):>7}  {'R@' + format(thr, 'g'):>7}  {'F1@' + format(thr, 'g'):>7}"
    )
    lines = [header, "-" * len(header)]

    def pct(value):
        return "    n/a" if value is None or math.isnan(value) else f"{100.0 * value:7.2f}"

    for c in result["classes"]:
        lines.append(
            f"{c['name']:<{width}}  {pct(c['ap'])}  {c['num_gt']:>6d}  {c['num_detections']:>8d}  "
            f"{pct(c['precision'])}  {pct(c['recall'])}  {pct(c['f1'])}"
        )
    t = result["totals"]
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<{width}}  {pct(result['map'])}  {t['num_gt']:>6d}  {t['num_detections']:>8d}  "
        f"{pct(t['precision'])}  {pct(t['recall'])}  {pct(t['f1'])}"
    )
    method = "VOC2007 11-point" if result["metric"] == "voc07" else "all-point"
    lines.append(
        f"mAP@{result['iou_threshold']:g} ({method}): {pct(result['map']).strip()}% "
        f"over {len(result['classes']) - len(result['classes_without_ground_truth'])} classes, "
        f"{result['num_images']} images"
    )
    if result["classes_without_ground_truth"]:
        lines.append(
            "Classes without ground truth (left out of the mean): " + ", ".join(result["classes_without_ground_truth"])
        )
    if result.get("sizes"):
        lines.append(format_size_aps(result))
    return "\n".join(lines)


def format_size_aps(result):
    """One line: the mAP of small, medium and large objects of an ``evaluate_voc`` result."""
    parts = [
        f"{size} {'n/a' if math.isnan(entry['map']) else format(100.0 * entry['map'], '.2f') + '%'} "
        f"({entry['num_gt']} objects)"
        for size, entry in result["sizes"].items()
    ]
    return f"mAP@{result['iou_threshold']:g} by object size (COCO areas 32², 96² px): " + ", ".join(parts)


def json_ready(result):
    """A copy of a metrics result without the arrays and objects of ``NON_JSON_KEYS``, NaN written as None.

    Args:
        result: dict returned by ``evaluate_voc`` or ``evaluate_coco``.

    Returns:
        dict that ``json.dump`` writes as strict JSON.
    """

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in NON_JSON_KEYS}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, float)):
            return None if math.isnan(value) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.ndarray):
            return clean(value.tolist())
        return value

    return clean(result)


def format_coco_summary(result):
    """Formats an ``evaluate_coco`` result: a line with the counts, then pycocotools' summary.

    Args:
        result: dict returned by ``utils.eval.coco_metric.evaluate_coco``.

    Returns:
        str, several lines, no trailing newline.
    """
    return (
        f"COCO metrics over {result['num_images']} images, {result['num_gt']} ground-truth objects, "
        f"{result['num_detections']} detections:\n{result['summary']}"
    )


def format_problems(problems, limit=20):
    """Formats collected problem messages: a count, then at most ``limit`` of them.

    Returns:
        str; empty when there is no problem.
    """
    if not problems:
        return ""
    lines = [f"{len(problems)} problem(s) in the input, each with what was done (skipped, clipped or kept):"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
