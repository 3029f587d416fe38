"""Where the scripts write: fresh run folders, and files that appear only when complete.

``next_run_dir`` chooses a fresh output folder for a run, so that no run overwrites an
earlier one: ``runs/predict`` is used when it does not exist yet; otherwise
``runs/predict2``, ``runs/predict3``, ... (the first free one). A name that already ends
in a digit gets a dash before the number (``exp1`` -> ``exp1-2``) so that the numbers
stay readable.

``atomic_write`` and ``write_text_atomic`` write a file under a temporary name in the
same folder and rename it into place, so that a reader (or another run) finds either
the previous file or the new one, never a part; an interrupted write leaves the
previous file intact. The file gets the permissions an ordinary ``open(path, "w")``
would give it (0o666 less the umask), not the private 0o600 of a temporary file.
"""

import os
import tempfile
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


def numbering_help(base="<out>"):
    """How the scripts' help says a taken output folder is replaced, written from
    ``numbered_path`` itself so that the two always agree.

    Args:
        base: the folder as the help names it ("<out>", "runs/predict", ...).

    Returns:
        e.g. "if it exists, the first free of <out>2, <out>3, ... is used (a name
        ending in a digit gets a dash: run1-2)".
    """
    return (f"if it exists, the first free of {numbered_path(base, 2)}, {numbered_path(base, 3)}, ... is used "
            f"(a name ending in a digit gets a dash: {numbered_path('run1', 2)})")


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


def check_writable_folder(path, what="the output folder"):
    """ValueError, naming ``what`` and ``path``, unless ``path`` is a folder this process
    can write in, or can be created as one (its nearest existing parent writable)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; name a folder (it is created if needed)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: {existing} cannot be written by this user; choose another folder")


def _umask():
    # The umask can only be read by setting it; the restrictive value in between
    # keeps files that another thread creates meanwhile private rather than open.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def new_file_mode():
    """The permission bits a new file gets from ``open(path, "w")``: 0o666 less the umask."""
    return 0o666 & ~_umask()


def new_folder_mode():
    """The permission bits a new folder gets from ``os.mkdir``: 0o777 less the umask."""
    return 0o777 & ~_umask()


def atomic_write(path, writer, suffix):
    """Calls ``writer(tmp_path)`` then renames tmp_path onto ``path``.

    The temporary file lies in the same folder (a rename is atomic only within one
    file system) under a unique hidden name, so that two runs writing the same
    ``path`` at once each rename a complete file of their own; the last one stays.
    Before the rename the file gets the mode of an ordinary write (``new_file_mode``).

    Args:
        path: destination file.
        writer: callable taking the temporary path (str) and writing the file.
        suffix: suffix the temporary file needs (e.g. ".keras", Keras checks it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        if os.path.isfile(tmp):
            os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text):
    """Writes ``text`` (UTF-8) to ``path`` with ``atomic_write``."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), Path(path).suffix)
