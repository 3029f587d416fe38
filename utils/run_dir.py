"""Choosing a fresh output folder for a run, so that no run overwrites an earlier one.

``runs/predict`` is used when it does not exist yet; otherwise ``runs/predict2``,
``runs/predict3``, ... (the first free one). A name that already ends in a digit gets
a dash before the number (``exp1`` -> ``exp1-2``) so that the numbers stay readable.
"""

from pathlib import Path

# Far more than any real series of runs; only reached if something keeps failing.
_MAX_TRIES = 100_000


def numbered_path(base, number):
    """The ``number``-th candidate for ``base``: ``base`` itself for 1, then ``base2``, ...

    Args:
        base: the folder path asked for.
        number: 1 for the base itself, 2 and up for the numbered alternatives.

    Returns:
        Path.
    """
    base = Path(base)
    if number <= 1:
        return base
    sep = "-" if base.name[-1:].isdigit() else ""
    return base.with_name(f"{base.name}{sep}{number}")


def next_run_dir(base, mkdir=True):
    """The first of ``base``, ``base2``, ``base3``, ... that does not exist.

    With ``mkdir`` the folder is created (parents included) in the same step, with
    ``exist_ok=False``, so two processes started together still get different folders.

    Args:
        base: the wanted folder, e.g. "runs/predict" or "logs/voc_b0".
        mkdir: create the folder that is returned.

    Returns:
        Path of the chosen folder.

    Raises:
        ValueError: ``base`` has no folder name (e.g. "" or "/").
    """
    base = Path(base)
    if not base.name:
        raise ValueError(f"An output folder needs a name, got {str(base)!r}; pass e.g. runs/predict.")
    for number in range(1, _MAX_TRIES):
        candidate = numbered_path(base, number)
        if candidate.exists() or candidate.is_symlink():
            continue
        if not mkdir:
            return candidate
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue  # taken by another process between the check and mkdir
        return candidate
    raise RuntimeError(f"No free folder name found after {base} ... {numbered_path(base, _MAX_TRIES - 1)}.")
