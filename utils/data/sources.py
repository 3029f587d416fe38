"""Datasets as users hold them: the format of a ``--train``, ``--val`` or
``--annotations`` argument detected from the file, read into annotations.

Formats:

* ``lines``: an annotation-line file (``utils.data.annotation``); the class names
  come from a classes file (``--classes``, by default ``model_data/voc_classes.txt``).
* ``coco``: a COCO instances JSON file (``utils.data.coco``); relative image file
  names are resolved against ``images`` (default: the JSON file's folder).
* ``yolo``: a YOLO data YAML, or a folder with ``images/`` and ``labels/``
  (``utils.data.yolo_txt``).
* ``voc``: a ``VOCdevkit`` folder or one ``VOC<year>`` folder, read through a split
  file of ``ImageSets/Main`` (``utils.data.voc``, converted by ``utils.data.voc_convert``).
* ``label-studio``: a Label Studio JSON file of tasks (``utils.data.label_studio``).
* ``cvat``: a CVAT for images 1.1 XML file (``utils.data.cvat``).
  For both, relative image references are resolved against ``images`` (default: the
  ``images/`` folder beside the file, then the file's folder).

Class names come from the dataset (COCO categories in id order, YOLO ``names``, the
names found in VOC XML files, sorted; CVAT's labels; Label Studio's ``classes.txt``
beside the file, else the labels found, sorted) unless a classes file is given; a dataset that
names its classes must name the same ones, in the same order, as a classes file or
an earlier dataset (``--train`` for ``--val``, a model for evaluation), or reading
stops with an error naming both lists.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.config import DEFAULT_CLASSES
from utils.data.annotation import read_annotation_file
from utils.data.report import ConversionReport, DatasetError
from utils.model_data import load_classes

FORMATS = ("lines", "coco", "yolo", "voc", "label-studio", "cvat")
FORMAT_NAMES = {"lines": "annotation lines", "coco": "COCO JSON", "yolo": "YOLO txt", "voc": "Pascal VOC",
                "label-studio": "Label Studio JSON", "cvat": "CVAT for images XML"}
R_LINE = "unreadable annotation line or box (skipped)"


@dataclass
class ClassNames:
    """The class list of a dataset or a model.

    Attributes:
        names: list of C class names; class id k is ``names[k]``.
        category_ids: for classes read from COCO, the original category id of each
            class index; None otherwise.
        origin: where the names come from, for messages (a file, a dataset).
    """

    names: list
    category_ids: list = None
    origin: str = ""


@dataclass
class DatasetSource:
    """What one dataset argument holds.

    Attributes:
        path: the argument as given.
        format: one of FORMATS.
        split: the split read (YOLO, VOC), or None.
        annotations: list of Annotation (boxes xyxy pixels of the image as displayed).
        classes: ClassNames the class ids index.
        report: everything skipped or changed while reading.
        image_ids: COCO image id of each annotation (COCO only, else None).
    """

    path: str
    format: str
    split: str
    annotations: list
    classes: ClassNames
    report: ConversionReport = field(default_factory=ConversionReport)
    image_ids: list = None

    @property
    def problems(self):
        """One message per skipped or changed line, box or image (notes left out)."""
        return self.report.messages()

    def describe(self, checked=None):
        """One line for a run's summary: what was read, how much, and the classes.

        Args:
            checked: ``(usable, problems)`` from ``utils.data.dataset.check_annotations``
                on these annotations; the line then counts the images and objects a
                run uses, says how many listed images were skipped (missing or
                unreadable files) and counts the check's problems too.

        Returns:
            str.
        """
        annotations, more_problems = (self.annotations, []) if checked is None else checked
        objects = sum(len(a) for a in annotations)
        negatives = sum(1 for a in annotations if len(a) == 0)
        difficult = int(sum(int(np.count_nonzero(a.difficult)) for a in annotations))
        what = FORMAT_NAMES[self.format] + (f", split {self.split}" if self.split else "")
        flagged = f", {difficult} difficult/crowd" if difficult else ""
        dropped = len(self.annotations) - len(annotations)
        dropped = f"; {dropped} more listed but skipped" if dropped else ""
        problems = len(self.problems) + len(more_problems)
        skipped = f"; {problems} problem(s)" if problems else ""
        return (
            f"{self.path} ({what}): {len(annotations)} images ({negatives} without objects{dropped}), "
            f"{objects} objects{flagged}; {len(self.classes.names)} classes from {self.classes.origin}{skipped}"
        )


def detect_format(path):
    """The format of a dataset argument, from what the path is and what the file holds.

    A folder is YOLO (``data.yaml`` or ``images/``) or VOC (``VOC<year>`` folders or
    ``Annotations/``); a ``.yaml``/``.yml`` file is YOLO; a file whose text starts with
    ``{`` is COCO JSON, with ``[`` a Label Studio JSON list of tasks, with ``<`` and an
    ``<annotations>`` element CVAT XML; any other file holds annotation lines.

    Raises:
        FileNotFoundError: the path does not exist.
        DatasetError: a folder of neither layout.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Dataset not found: {path}")
    if path.is_dir():
        if (path / "data.yaml").is_file() or (path / "images").is_dir():
            return "yolo"
        if (path / "Annotations").is_dir() or any(p.is_dir() and p.name.startswith("VOC") for p in path.iterdir()):
            return "voc"
        raise DatasetError(
            f"{path}: a folder that is neither a YOLO dataset (data.yaml, or images/ with labels/) nor a VOC "
            "dataset (VOC<year>/ folders, or Annotations/ with ImageSets/Main/)"
        )
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "label-studio"
    if head.startswith(b"<") and b"<annotations" in head:
        return "cvat"
    return "coco" if head.startswith(b"{") else "lines"


def class_names_from_file(path):
    """ClassNames read from a classes file (one name a line).

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: no name, or a name twice.
    """
    try:
        return ClassNames(load_classes(path), origin=str(path))
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


def check_same_classes(found, expected):
    """Raises DatasetError, naming both lists, when two class lists differ.

    Args:
        found: ClassNames of a dataset.
        expected: ClassNames it must agree with (a classes file, another dataset, a model).
    """
    if list(found.names) != list(expected.names):
        raise DatasetError(
            f"class names differ: {found.origin} has {list(found.names)} but {expected.origin} has "
            f"{list(expected.names)}; use the same classes in the same order (or leave out --classes to take "
            "the dataset's)"
        )
    if found.category_ids is not None and expected.category_ids is not None:
        if list(found.category_ids) != list(expected.category_ids):
            raise DatasetError(
                f"COCO category ids differ: {found.origin} has {list(found.category_ids)} but {expected.origin} "
                f"has {list(expected.category_ids)} for the classes {list(found.names)}"
            )


def _given_classes(classes):
    if classes is None or isinstance(classes, ClassNames):
        return classes
    return class_names_from_file(classes)


def read_dataset(path, split=None, images=None, classes=None, fmt=None):
    """Reads a dataset of any supported format.

    Args:
        path: an annotation-line file, a COCO JSON file, a YOLO data YAML or folder,
            or a VOC folder.
        split: the split to read from a YOLO data YAML (train, val, test) or a VOC
            folder (a file of ``ImageSets/Main``); ignored by the other formats.
        images: folder that relative COCO ``file_name`` values are resolved against
            (default: the JSON file's folder); ignored by the other formats.
        classes: None (the dataset's class names; for annotation lines the default
            classes file), a classes file path, or ClassNames to agree with.
        fmt: one of FORMATS to skip the detection.

    Returns:
        DatasetSource; its ``classes`` carry the COCO category ids when the names
        came from a COCO file.

    Raises:
        FileNotFoundError: the path (or a classes file) does not exist.
        DatasetError: unreadable as its format, a missing split, or class names
            that disagree with ``classes``.
    """
    fmt = detect_format(path) if fmt is None else fmt
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
    given = _given_classes(classes)
    reader = {"lines": _read_lines, "coco": _read_coco, "yolo": _read_yolo, "voc": _read_voc,
              "label-studio": _read_label_studio, "cvat": _read_cvat}[fmt]
    return reader(Path(path), split, images, given)


def _read_lines(path, split, images, given):
    classes = given or class_names_from_file(DEFAULT_CLASSES)
    if given is None:
        classes.origin = f"{DEFAULT_CLASSES} (the default; pass --classes for another)"
    annotations, bad = read_annotation_file(path, num_classes=len(classes.names))
    report = ConversionReport()
    for message in bad:
        report.add(R_LINE, message)
    return DatasetSource(str(path), "lines", None, annotations, classes, report)


def _read_coco(path, split, images, given):
    from utils.data.coco import read_coco

    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"Images folder not found: {images} (--images, where the COCO file names are)")
    data = read_coco(path, images=images)
    classes = ClassNames(data.class_names, data.category_ids, f"the COCO categories of {path}")
    if given is not None:
        check_same_classes(classes, given)
    return DatasetSource(str(path), "coco", None, data.annotations, classes, data.report, data.image_ids)


def _read_yolo(path, split, images, given):
    from utils.data.yolo_txt import read_yolo

    data = read_yolo(path, split=split, class_names=given.names if given is not None else None)
    if data.names_from:
        classes = ClassNames(data.class_names, origin=f"the names of {data.names_from}")
        if given is not None:
            check_same_classes(classes, given)
            classes.category_ids = given.category_ids
    else:
        classes = given
    return DatasetSource(str(path), "yolo", split, data.annotations, classes, data.report)


def _read_tool_export(fmt, read, path, images, given):
    """A Label Studio or CVAT file: its own class names unless a classes file is given."""
    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"Images folder not found: {images} (--images, where the image files are)")
    data = read(path, images=images, class_names=given.names if given is not None else None)
    classes = given or ClassNames(data.class_names, origin=data.names_from)
    return DatasetSource(str(path), fmt, None, data.annotations, classes, data.report)


def _read_label_studio(path, split, images, given):
    from utils.data.label_studio import read_label_studio

    return _read_tool_export("label-studio", read_label_studio, path, images, given)


def _read_cvat(path, split, images, given):
    from utils.data.cvat import read_cvat

    return _read_tool_export("cvat", read_cvat, path, images, given)


def _voc_folders(path):
    if (path / "Annotations").is_dir():
        return [path]
    from utils.data.voc import find_years, year_dir

    folders = [year_dir(path, year) for year in find_years(path)]
    if not folders:
        raise DatasetError(f"{path}: no VOC<year> folder and no Annotations/ folder")
    return folders


def _read_voc(path, split, images, given):
    from utils.data.voc import read_split, read_voc_split, split_path
    from utils.data.voc_convert import convert_entries, voc_report

    folders = _voc_folders(path)
    if not split:
        raise DatasetError(f"{path}: a VOC dataset is read through a split file; name the split (e.g. train, test)")
    ids = {}
    for folder in folders:
        list_file = split_path(folder, split)
        if not list_file.is_file():
            raise DatasetError(f"{path}: split file {list_file} not found (make splits with voc_annotation.py)")
        ids[folder] = read_split(list_file)
    entries = {folder: read_voc_split(folder, folder_ids) for folder, folder_ids in ids.items()}
    classes = given
    if classes is None:
        found = {obj.name for read in entries.values() for entry in read if entry.voc for obj in entry.voc.objects}
        if not found:
            raise DatasetError(f"{path}: no object in the {split} split's XML files; pass --classes")
        classes = ClassNames(sorted(found), origin=f"the object names in {path} (sorted)")
    report = voc_report()
    annotations = []
    for folder, read in entries.items():
        annotations += convert_entries(read, classes.names, report, split, folder.name)[0]
    return DatasetSource(str(path), "voc", split, annotations, classes, report)


@dataclass
class TrainingData:
    """The checked training and validation data of a run.

    Attributes:
        train: usable training annotations (checked by ``check_annotations``).
        val: usable validation annotations, or None when no validation set was given.
        classes: ClassNames of both.
        problems: every skipped or changed line, box and image, naming it.
        descriptions: one line per dataset read, for the run's summary.
    """

    train: list
    val: list
    classes: ClassNames
    problems: list
    descriptions: list


def read_training_data(train, val=None, classes=None, images=None, val_images=None):
    """Reads and checks the training and validation datasets of a run.

    The training set is read as its own ``train`` split (YOLO, VOC), the validation
    set as ``val``; the validation classes must agree with the training ones.

    Args:
        train: the training dataset (any format of ``read_dataset``).
        val: the validation dataset, or None.
        classes: a classes file path, or None for the dataset's names.
        images: folder of the images of a COCO training file with relative file names.
        val_images: the same for a COCO validation file (default: ``images``).

    Returns:
        TrainingData.

    Raises:
        FileNotFoundError: a dataset or the classes file does not exist.
        DatasetError: a dataset is unreadable, holds nothing usable, or its classes disagree.
    """
    from utils.data.dataset import check_annotations

    problems, descriptions = [], []

    def read(path, what, split, expected, folder):
        try:
            source = read_dataset(path, split=split, images=folder, classes=expected)
        except DatasetError as exc:
            raise DatasetError(f"{what}: {exc}") from None
        problems.extend(source.problems)
        usable, bad = check_annotations(source.annotations, len(source.classes.names))
        problems.extend(bad)
        descriptions.append(f"{what} {source.describe((usable, bad))}")
        if not usable:
            unit = "line" if source.format == "lines" else "image"
            raise DatasetError(
                f"{what} file {path} holds no usable {unit} ({len(problems)} problems; first: "
                f"{problems[0] if problems else 'the dataset is empty'})"
            )
        return usable, source.classes

    train_set, found = read(train, "--train", "train", classes, images)
    val_set = read(val, "--val", "val", found, val_images or images)[0] if val else None
    return TrainingData(train_set, val_set, found, problems, descriptions)

