"""Reading and writing the plain-text model_data files: class names and anchors."""

from pathlib import Path

import numpy as np

from utils.config import ANCHOR_MASK
from utils.run_dir import write_text_atomic


def load_classes(path):
    """Reads a classes file: one class name per line, blank lines ignored.

    Args:
        path: path of the text file.

    Returns:
        list of class names (str), in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file names no class, or names one twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Classes file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"Classes file {path} holds no class name (one name per line expected).")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"Classes file {path} names class {name!r} twice.")
        seen.add(name)
    return names


def parse_anchors(text, source="anchors"):
    """Parses anchors written as "w,h, w,h, ..." (commas and/or whitespace).

    Args:
        text: the anchors text.
        source: name used in error messages.

    Returns:
        float32 array (9, 2): anchor width, height in input pixels, sorted by area.
    """
    tokens = text.replace(",", " ").split()
    try:
        values = [float(t) for t in tokens]
    except ValueError as exc:
        raise ValueError(f"{source}: anchors must be numbers 'w,h, w,h, ...': {exc}") from None
    needed = 2 * sum(len(m) for m in ANCHOR_MASK)
    if len(values) != needed:
        raise ValueError(f"{source}: expected {needed // 2} anchors ({needed} numbers), got {len(values)} numbers.")
    anchors = np.asarray(values, dtype=np.float32).reshape(-1, 2)
    if np.any(anchors <= 0):
        raise ValueError(f"{source}: anchor sizes must be positive, got {anchors.tolist()}")
    order = np.argsort(anchors.prod(axis=1), kind="stable")
    return anchors[order]


def load_anchors(path):
    """Reads an anchors file (one line "w,h, w,h, ..." in pixels of the input).

    Returns:
        float32 array (9, 2), sorted by area.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Anchors file not found: {path}")
    return parse_anchors(path.read_text(encoding="utf-8"), source=str(path))


def format_anchors(anchors):
    """Formats anchors (N, 2) as the one-line anchors file text."""
    return ", ".join(f"{int(round(w))},{int(round(h))}" for w, h in np.asarray(anchors)) + "\n"


def save_anchors(path, anchors):
    """Writes anchors (N, 2) in the anchors file format (atomically: complete or not at all)."""
    write_text_atomic(path, format_anchors(anchors))
