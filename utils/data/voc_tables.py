"""Console tables of a VOC conversion: objects per class and images per split.

Formats the :class:`utils.data.voc_convert.VocConversion` that ``voc_annotation.py``
prints after a run; the conversion itself is :mod:`utils.data.voc_convert`.
"""


def format_tables(result):
    """Formats, per year, objects per class and images per split.

    Args:
        result: VocConversion.

    Returns:
        multi-line str (split sizes only, for mode 1).
    """
    blocks = []
    for year in result.years:
        if not year.stats:
            sizes = ", ".join(f"{s} {n}" for s, n in year.split_sizes.items())
            blocks.append(f"VOC{year.year}: ids per split: {sizes}")
            continue
        splits = list(year.stats)
        name_width = max([len("class"), len("images (negative)")] + [len(n) for n in result.class_names])
        col = max(8, *(len(s) + 1 for s in splits))
        header = f"{'class':<{name_width}}" + "".join(f"{s:>{col}}" for s in splits) + f"{'total':>{col}}"
        lines = [f"VOC{year.year}: objects per class", header, "-" * len(header)]
        for i, name in enumerate(result.class_names):
            counts = [int(year.stats[s].objects[i]) for s in splits]
            lines.append(f"{name:<{name_width}}" + "".join(f"{c:>{col}}" for c in counts) + f"{sum(counts):>{col}}")
        lines.append("-" * len(header))
        totals = [int(year.stats[s].objects.sum()) for s in splits]
        lines.append(f"{'objects':<{name_width}}" + "".join(f"{c:>{col}}" for c in totals) + f"{sum(totals):>{col}}")
        images = [year.stats[s].images for s in splits]
        lines.append(f"{'images':<{name_width}}" + "".join(f"{c:>{col}}" for c in images) + f"{sum(images):>{col}}")
        negatives = [year.stats[s].negatives for s in splits]
        lines.append(
            f"{'images (negative)':<{name_width}}"
            + "".join(f"{c:>{col}}" for c in negatives)
            + f"{sum(negatives):>{col}}"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def empty_class_warnings(result):
    """Lists the classes that have no object in some annotation file, and empty files.

    Returns:
        list of str: one per (year, class) naming the splits where the class is
        absent, and one per annotation file without any image.
    """
    messages = []
    for year in result.years:
        filled = {s: stats for s, stats in year.stats.items() if stats.images}
        for split in year.stats:
            if split not in filled:
                messages.append(f"VOC{year.year} {split} holds no image")
        for i, name in enumerate(result.class_names):
            empty = [s for s, stats in filled.items() if stats.objects[i] == 0]
            if empty:
                messages.append(f"class {name!r} has no objects in VOC{year.year} {', '.join(empty)}")
    return messages
