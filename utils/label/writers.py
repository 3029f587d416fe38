"""Pre-labels written as an annotation set in the format people label in, one that
training, ``check_dataset.py`` and ``convert_dataset.py`` read back with the same boxes.

What each format writes into the run folder (every set also gets ``classes.txt``, the
model's class names in the order of its class ids):

* ``voc``: ``Annotations/<id>.xml``, ``ImageSets/Main/train.txt`` (every id) and
  ``JPEGImages/`` (links to the images); read back as the folder with split ``train``.
* ``coco``: ``annotations.json`` with the images linked into ``images/`` (file names
  relative to the JSON file).
* ``yolo``: ``data.yaml``, ``images/train/`` (links) and ``labels/train/``.
* ``label-studio``: ``tasks.json`` (Label Studio's import JSON, the boxes as
  predictions with their scores), ``label_config.xml`` (the labelling interface for
  these classes) and ``images/`` (links).
* ``cvat``: ``annotations.xml`` (CVAT for images 1.1, boxes with ``source="auto"``)
  and ``images/`` (links).

Images are linked, not copied (copied where the file system has no links). Box
coordinates are written with two decimals (COCO four, YOLO six of the normalized
values), well inside a pixel.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from utils.data.annotation import Annotation
from utils.data.report import ConversionReport
from utils.run_dir import write_text_atomic

FORMATS = ("voc", "coco", "yolo", "label-studio", "cvat")
#: The file (or folder) of each format that ``train.py --train`` takes, and its split.
DATASET_PATHS = {"voc": (".", "train"), "coco": ("annotations.json", None), "yolo": ("data.yaml", "train"),
                 "label-studio": ("tasks.json", None), "cvat": ("annotations.xml", None)}
#: How a Label Studio task names its image: a local-files URL relative to the source folder.
DEFAULT_IMAGE_URL = "/data/local-files/?d={relpath}"
CLASSES_TXT = "classes.txt"
LABEL_CONFIG = "label_config.xml"
IMAGES_DIR = "images"
SPLIT = "train"


@dataclass
class PreLabel:
    """The pre-labels of one image.

    Attributes:
        path: the image file.
        relpath: its path relative to the source folder (POSIX separators), the name a
            labelling tool knows it by.
        width, height: its size in pixels, as displayed (EXIF orientation applied).
        boxes: float32 (N, 4) xyxy pixels of the image.
        scores: float32 (N,) the detector's scores.
        classes: int32 (N,) class ids.
    """

    path: Path
    relpath: str
    width: int
    height: int
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass
class WrittenSet:
    """An annotation set written.

    Attributes:
        format: one of FORMATS.
        dataset: what ``train.py --train`` and ``check_dataset.py`` take.
        split: the split to read (VOC, YOLO), or None.
        files: the annotation files written.
        report: what the writer skipped or changed (YOLO: boxes clipped to the image).
    """

    format: str
    dataset: Path
    split: str
    files: list = field(default_factory=list)
    report: ConversionReport = field(default_factory=ConversionReport)

    def read_command(self, script="check_dataset.py"):
        """The command line that reads the set back."""
        split = f" --split {self.split}" if self.split and script == "check_dataset.py" else ""
        return f"python {script} {self.dataset}{split}"


def image_url_template(text):
    """Checks a Label Studio image reference template (``{relpath}``, ``{name}``, ``{path}``).

    Returns:
        the template.

    Raises:
        ValueError: another placeholder, or a brace that is not one, quoting the template.
    """
    try:
        text.format(relpath="a/b.jpg", name="b.jpg", path="/a/b.jpg")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"image URL template {text!r} is unusable ({exc!r}); use {{relpath}}, {{name}} or "
                         "{path}, e.g. 'http://localhost:8081/{relpath}'") from None
    return text


def link_image(source, target):
    """Places ``source`` at ``target`` as a symbolic link, or a copy where links cannot be made."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(os.path.abspath(source), target)
    except OSError:
        shutil.copy2(source, target)
    return target


def output_names(items):
    """A file name per pre-labelled image, unique in one folder: its own, or
    ``<stem>_<ext><ext>`` where two images share a stem (``a.jpg`` and ``a.png``)."""
    stems = {}
    for item in items:
        stems.setdefault(Path(item.path).stem, []).append(item)
    names = []
    for item in items:
        path = Path(item.path)
        shared = len(stems[path.stem]) > 1
        names.append(f"{path.stem}_{path.suffix.lstrip('.')}{path.suffix}" if shared else path.name)
    return names


def write_prelabels(fmt, out, items, class_names, model_version="", image_url=DEFAULT_IMAGE_URL, task_data=None):
    """Writes pre-labels as an annotation set into the run folder ``out``.

    Args:
        fmt: one of FORMATS.
        out: the run folder (fresh, see ``utils.run_dir.next_run_dir``).
        items: list of PreLabel.
        class_names: the C class names of the model.
        model_version: what made the boxes, for Label Studio (e.g. the model's file name).
        image_url: Label Studio only: how a task names its image, with ``{relpath}``
            (the path relative to the source folder), ``{name}`` (the file name) or
            ``{path}`` (the absolute path) filled in, quoted for a URL (a space as %20).
        task_data: Label Studio only: {image path: dict} of more ``data`` fields per
            task (e.g. the review rank, shown as columns).

    Returns:
        WrittenSet.

    Raises:
        ValueError: an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    class_names = list(class_names)
    write_text_atomic(out / CLASSES_TXT, "".join(f"{name}\n" for name in class_names))
    name, split = DATASET_PATHS[fmt]
    written = WrittenSet(fmt, out if name == "." else out / name, split)
    writer = {"voc": _write_voc, "coco": _write_coco, "yolo": _write_yolo, "label-studio": _write_label_studio,
              "cvat": _write_cvat}[fmt]
    writer(out, items, class_names, written, model_version=model_version, image_url=image_url,
           task_data=task_data or {})
    return written


def _rounded(boxes):
    return np.round(np.asarray(boxes, np.float64).reshape(-1, 4), 2)


def _write_voc(out, items, class_names, written, **_):
    from utils.data.voc import VocImage, VocObject, voc_xml

    ids = []
    for item, name in zip(items, output_names(items)):
        image_id = Path(name).stem
        link_image(item.path, out / "JPEGImages" / name)
        objects = [VocObject(class_names[int(c)], *map(float, box), difficult=False)
                   for box, c in zip(_rounded(item.boxes), item.classes)]
        xml = voc_xml(VocImage(name, int(item.width), int(item.height), objects), out.name)
        path = out / "Annotations" / f"{image_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, xml.decode("utf-8"))
        written.files.append(path)
        ids.append(image_id)
    split_file = out / "ImageSets" / "Main" / f"{SPLIT}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(split_file, "".join(f"{i}\n" for i in ids))
    written.files.append(split_file)


def _linked_annotations(out, items):
    annotations = []
    for item, name in zip(items, output_names(items)):
        link = link_image(item.path, out / IMAGES_DIR / name)
        annotations.append(Annotation(str(link), item.boxes, item.classes))
    return annotations


def _write_coco(out, items, class_names, written, **_):
    from utils.data.coco import coco_report, write_coco

    report = coco_report()
    write_coco(written.dataset, _linked_annotations(out, items), class_names, report=report)
    written.report.extend(report)
    written.files.append(written.dataset)


def _write_yolo(out, items, class_names, written, **_):
    from utils.data.yolo_txt import write_yolo, yolo_report

    report = yolo_report()
    annotations = [Annotation(str(item.path), item.boxes, item.classes) for item in items]
    write_yolo(out, annotations, class_names, split=SPLIT, report=report)
    written.report.extend(report)
    written.files += [written.dataset, out / "labels" / SPLIT]


def _write_label_studio(out, items, class_names, written, model_version="", image_url=DEFAULT_IMAGE_URL,
                        task_data=None, **_):
    from utils.data.label_studio import LabelStudioTask, labelling_config, write_label_studio

    tasks = []
    for item, name in zip(items, output_names(items)):
        link_image(item.path, out / IMAGES_DIR / name)
        reference = image_url.format(relpath=quote(item.relpath), name=quote(Path(item.path).name),
                                     path=quote(os.path.abspath(item.path)))
        tasks.append(LabelStudioTask(reference, item.width, item.height, item.boxes, item.classes, item.scores,
                                     dict(task_data.get(str(item.path), {}))))
    write_label_studio(written.dataset, tasks, class_names, model_version)
    write_text_atomic(out / LABEL_CONFIG, labelling_config(class_names))
    written.files += [written.dataset, out / LABEL_CONFIG]


def _write_cvat(out, items, class_names, written, **_):
    from utils.data.cvat import CvatImage, write_cvat

    images = []
    for item, name in zip(items, output_names(items)):
        link_image(item.path, out / IMAGES_DIR / name)
        # CVAT knows an image by its path in the task; the link of that name is found first.
        images.append(CvatImage(item.relpath if name == Path(item.path).name else name, item.width, item.height,
                                item.boxes, item.classes))
    write_cvat(written.dataset, images, class_names, task_name=out.name)
    written.files.append(written.dataset)
