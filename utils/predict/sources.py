"""Inputs of a prediction run (an image, a folder, a video file or a webcam) and the
files it writes.

Sources:
    image:  one image file (any of ``utils.image.IMAGE_EXTENSIONS``).
    folder: every regular file in the folder, not recursive; hidden files (names
            starting with ".") are ignored; a file that is not a readable image is
            reported and skipped.
    video:  a video file OpenCV can read (``VIDEO_EXTENSIONS``).
    webcam: a camera index, 0, 1, ...
A folder can also be read as the frames of one video, in name order
(``FrameSequence``, for tracking).

Outputs under the run folder ``<out>``, for an input with stem ``<stem>``:
    ``<out>/<stem>.png`` for PNG inputs, ``<out>/<stem>.jpg`` for other images;
    ``<out>/<stem>.mp4`` for a video, ``<out>/webcam<index>.mp4`` for a webcam;
    ``<out>/labels/<stem>.txt`` one ``class_name score x1 y1 x2 y2`` line per detection
    (xyxy pixels; spaces in class names written as underscores);
    ``<out>/crops/<class>/<stem>_<k>.jpg`` the k-th detection (0 = highest score).
Two inputs of a folder with the same stem (``a.jpg``, ``a.png``) get their extension
appended to it (``a_jpg``, ``a_png``) so that no output overwrites another.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.eval.map_files import class_token, format_detections
from utils.image import IMAGE_EXTENSIONS, ImageLoadError, load_image
from utils.run_dir import atomic_write, write_text_atomic

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
# Frame rate written when the source does not report one (typical for webcams).
FALLBACK_FPS = 30.0
#: Share of a video header's frame count that may be missing at the end without a
#: remark (some containers only estimate the count).
FRAME_COUNT_SLACK = 0.01
JPEG_QUALITY = 95
LABELS_DIR = "labels"
CROPS_DIR = "crops"


class SourceError(ValueError):
    """A source that cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class Source:
    """One input of a prediction run.

    Attributes:
        kind: "image", "folder", "video" or "webcam".
        path: the file or folder (None for a webcam).
        index: the camera index (None unless a webcam).
    """

    kind: str
    path: Path = None
    index: int = None

    @property
    def stem(self):
        """Base name of the outputs: the file's stem, or ``webcam<index>``."""
        return f"webcam{self.index}" if self.kind == "webcam" else self.path.stem

    def __str__(self):
        return f"webcam {self.index}" if self.kind == "webcam" else str(self.path)


def parse_source(text):
    """Works out what ``--source`` names.

    Args:
        text: a camera index ("0", "1", ...), an image or video file, or a folder.

    Returns:
        Source.

    Raises:
        SourceError: the path does not exist, or is a file of an unknown type.
    """
    text = str(text).strip()
    if text.isdigit():
        return Source("webcam", index=int(text))
    path = Path(text).expanduser()
    if path.is_dir():
        return Source("folder", path)
    if not path.exists():
        raise SourceError(
            f"Source not found: {text!r}; pass an image, a folder, a video file or a webcam index (0, 1, ...)."
        )
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return Source("image", path)
    if suffix in VIDEO_EXTENSIONS:
        return Source("video", path)
    raise SourceError(
        f"Source {text!r} has the extension {path.suffix!r}, which is neither an image "
        f"({' '.join(IMAGE_EXTENSIONS)}) nor a video ({' '.join(VIDEO_EXTENSIONS)}); rename or convert it."
    )


def folder_files(folder):
    """The files a folder source processes: regular, non-hidden files, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class Skipped:
    """A file of a folder that was not processed.

    Attributes:
        path: the file.
        reason: short reason, shared by files skipped for the same cause.
        detail: the full message.
    """

    path: Path
    reason: str
    detail: str


def read_image(path):
    """Reads an image of a source as RGB uint8 (H, W, 3), EXIF orientation applied.

    Raises:
        ImageLoadError: unreadable, truncated, not an image, or a video file.
    """
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        raise ImageLoadError(f"{path}: a video file; pass it as --source on its own")
    return load_image(path)


def _skip_reason(path, message):
    """The short part of an ImageLoadError message: without the path and the details."""
    reason = message[len(f"{path}: "):] if message.startswith(f"{path}: ") else message
    return reason.split(" (")[0].split(";")[0].strip()


def iter_batches(paths, batch_size):
    """Reads image files in batches, skipping those that cannot be read.

    Args:
        paths: image file paths.
        batch_size: images per batch (>= 1).

    Yields:
        (loaded, skipped, files_done): ``loaded`` a list of (path, RGB uint8 image)
        with up to ``batch_size`` entries, ``skipped`` the list of ``Skipped`` met
        while filling it, ``files_done`` how many paths were consumed for it. The last
        batch may be short, or empty if only skipped files remained.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    loaded, skipped, done = [], [], 0
    for path in paths:
        done += 1
        try:
            loaded.append((path, read_image(path)))
        except ImageLoadError as exc:
            skipped.append(Skipped(Path(path), _skip_reason(path, str(exc)), str(exc)))
        if len(loaded) == batch_size:
            yield loaded, skipped, done
            loaded, skipped, done = [], [], 0
    if loaded or skipped:
        yield loaded, skipped, done


def unique_stems(paths):
    """Output stems for input files, made unique when two share a stem.

    Args:
        paths: input file paths.

    Returns:
        dict {path: stem}: the file's stem, or ``<stem>_<extension>`` for files whose
        stem another input has too.
    """
    paths = [Path(p) for p in paths]
    seen = {}
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
    return {p: (f"{p.stem}_{p.suffix.lstrip('.')}" if seen[p.stem] > 1 else p.stem) for p in paths}


def image_output_name(path, stem=None):
    """File name of an annotated image: PNG inputs stay PNG, the others become JPEG."""
    path = Path(path)
    stem = path.stem if stem is None else stem
    return f"{stem}.png" if path.suffix.lower() == ".png" else f"{stem}.jpg"


def save_image(path, image):
    """Writes an RGB uint8 image, whole or not at all; the format follows the extension (JPEG quality 95)."""
    path = Path(path)
    options = {"quality": JPEG_QUALITY} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    picture = Image.fromarray(np.ascontiguousarray(image))
    atomic_write(path, lambda tmp: picture.save(tmp, **options), path.suffix)
    return path


def save_labels(out_dir, stem, detections, class_names):
    """Writes ``<out_dir>/labels/<stem>.txt``: ``class_name score x1 y1 x2 y2`` per line.

    Args:
        out_dir: the run folder.
        stem: the input's output stem.
        detections: object with ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,),
            ``classes`` int (N,).
        class_names: list of names indexed by the class ids.

    Returns:
        the file's Path (written even when empty, so every input has one).
    """
    path = Path(out_dir) / LABELS_DIR / f"{stem}.txt"
    write_text_atomic(path, format_detections(detections.boxes, detections.scores, detections.classes, class_names))
    return path


def crop_folder_name(class_name):
    """Folder name of a class under ``crops/``: spaces and path separators as underscores."""
    token = class_token(class_name).replace("/", "_").replace("\\", "_")
    return token if token not in ("", ".", "..") else f"_{token}_"


def save_crops(out_dir, stem, image, detections, class_names):
    """Saves each detection's box as ``<out_dir>/crops/<class>/<stem>_<k>.jpg``.

    Args:
        out_dir: the run folder.
        stem: the input's output stem.
        image: RGB uint8 (H, W, 3) the boxes refer to.
        detections: object with ``boxes`` (N, 4) xyxy pixels and ``classes`` int (N,),
            in descending score order; ``k`` is the index in that order.
        class_names: list of names indexed by the class ids.

    Returns:
        list of the Paths written; boxes less than a pixel wide or high are skipped.
    """
    height, width = image.shape[:2]
    written = []
    for k, (box, cls) in enumerate(zip(np.asarray(detections.boxes).reshape(-1, 4), np.asarray(detections.classes))):
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x2 <= x1 or y2 <= y1:  # entirely outside the image
            continue
        path = Path(out_dir) / CROPS_DIR / crop_folder_name(class_names[int(cls)]) / f"{stem}_{k}.jpg"
        written.append(save_image(path, image[y1:y2, x1:x2]))
    return written


def _quiet_opencv():
    """Lowers OpenCV's own logging to errors only; returns the previous level (or None)."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:
        return None
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    return previous


def _restore_opencv(level):
    if level is not None:
        cv2.utils.logging.setLogLevel(level)


class VideoReader:
    """Frames of a video file or a webcam, as RGB uint8 (H, W, 3) arrays.

    Use as a context manager (or call ``close``) so the capture is released.

    Args:
        source: a Source of kind "video" or "webcam".

    Raises:
        SourceError: the video or camera cannot be opened, or gives no frame.
    """

    def __init__(self, source):
        if source.kind not in ("video", "webcam"):
            raise ValueError(f"VideoReader reads videos and webcams, got a source of kind {source.kind!r}")
        self.source = source
        level = _quiet_opencv()
        try:
            target = source.index if source.kind == "webcam" else str(source.path)
            self.capture = cv2.VideoCapture(target)
            opened = self.capture.isOpened()
        finally:
            _restore_opencv(level)
        if not opened:
            self.capture.release()
            if source.kind == "webcam":
                raise SourceError(
                    f"Cannot open webcam {source.index}: no camera with that index is available "
                    "(check that it is connected and not used by another program, or try another index)."
                )
            raise SourceError(
                f"Cannot open video {source.path}: OpenCV cannot read it (corrupt file or unsupported codec); "
                "convert it, e.g. to H.264 MP4."
            )
        self._announced = self._header_count()

    @property
    def fps(self):
        """Frame rate the source reports, or FALLBACK_FPS when it reports none."""
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else FALLBACK_FPS

    @property
    def frame_count(self):
        """Frames in a video file as its header says (may be approximate); None for a webcam
        or a header that gives none."""
        return self.announced_frames or None

    @property
    def announced_frames(self):
        """The frame count in a video file's header, 0 included, as read when it was
        opened (it stays known after ``close``); None for a webcam."""
        return self._announced

    def _header_count(self):
        if self.source.kind == "webcam":
            return None
        count = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        return max(0, int(count)) if count and np.isfinite(count) else 0

    @property
    def frame_size(self):
        """(width, height) of the frames as the source reports them, or None when it reports none."""
        width, height = (self.capture.get(prop) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if not (width and height and np.isfinite(width) and np.isfinite(height)) or width < 1 or height < 1:
            return None
        return int(width), int(height)

    def __iter__(self):
        while True:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        """Releases the capture."""
        self.capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def frames_read_note(reader, read):
    """What to tell the user when a video file gave fewer frames than its header
    announces, read to its end; None when it gave them all.

    A header's count may be an estimate (from the duration, in some containers), so
    a shortfall of up to ``FRAME_COUNT_SLACK`` of it (at least one frame) is not
    reported; a video that gives no frame at all always is.

    Args:
        reader: the VideoReader (or FrameSequence, whose skipped files are reported
            on their own) the frames came from.
        read: how many frames were read.

    Returns:
        A sentence without its final full stop, or None.
    """
    if reader.source.kind != "video":
        return None
    announced = reader.announced_frames
    name = reader.source.path.name
    if read == 0:
        if not announced:
            return f"{name} has no frames: its header announces none and none could be read"
        return (f"None of the {announced} frames {name} announces in its header could be read "
                "(a truncated or damaged file)")
    if announced and read < announced - max(1, int(announced * FRAME_COUNT_SLACK)):
        return (f"{name}: {read} of the {announced} frames announced in its header were read; the rest could not "
                "be decoded (a truncated or damaged file)")
    return None


def _natural_key(path):
    """Sort key putting ``frame2`` before ``frame10``: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", Path(path).name)]


class FrameSequence:
    """The images of a folder read as the frames of one video, in name order
    (``frame2`` before ``frame10``), with the interface of ``VideoReader``.

    A file that cannot be read as an image, or whose size differs from the first
    frame's, is skipped with a warning and listed in ``skipped``.

    Args:
        source: a Source of kind "folder".
        fps: the frame rate the sequence is written at (default FALLBACK_FPS).
    """

    def __init__(self, source, fps=None):
        if source.kind != "folder":
            raise ValueError(f"FrameSequence reads a folder, got a source of kind {source.kind!r}")
        self.source = source
        self.paths = sorted(folder_files(source.path), key=_natural_key)
        self.fps = float(fps) if fps else FALLBACK_FPS
        self.skipped = []

    @property
    def frame_count(self):
        """Files in the folder (frames, unless some are skipped)."""
        return len(self.paths)

    @property
    def frame_size(self):
        """(width, height) of the first readable image, which every frame must have; None if none is readable."""
        for path in self.paths:
            try:
                height, width = read_image(path).shape[:2]
            except ImageLoadError:
                continue
            return width, height
        return None

    def __iter__(self):
        size = None
        for path in self.paths:
            try:
                frame = read_image(path)
            except ImageLoadError as exc:
                self._skip(path, _skip_reason(path, str(exc)), str(exc))
                continue
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                self._skip(path, "size differs from the first frame's",
                           f"{path}: {frame.shape[1]}x{frame.shape[0]}, but the sequence is {size[1]}x{size[0]}")
                continue
            yield frame

    def _skip(self, path, reason, detail):
        self.skipped.append(Skipped(Path(path), reason, detail))
        log.warning("skipped %s", detail)

    def close(self):
        """Nothing to release; there for the interface of ``VideoReader``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class VideoWriter:
    """Writes RGB frames to an MP4 file (mp4v), opened on the first frame.

    Use as a context manager (or call ``close``) so the file is finalized; frames
    written before an interruption stay in the file.

    Args:
        path: the .mp4 file.
        fps: frame rate written in the file.
    """

    def __init__(self, path, fps):
        self.path = Path(path)
        self.fps = float(fps)
        self.frames = 0
        self._writer = None

    def write(self, frame):
        """Appends an RGB uint8 (H, W, 3) frame; all frames must have the first one's size."""
        if self._writer is None:
            height, width = frame.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(
                    f"Cannot write video {self.path}: OpenCV has no mp4v encoder here or the folder is not writable."
                )
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self):
        """Finalizes the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
