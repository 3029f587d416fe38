"""check_dataset.py on small datasets in tmp_path: each planted problem found once with its
file and line, a clean dataset passed, an untrainable one refused."""


import pytest
from PIL import Image

from tests.helpers import run_script
from utils.data.check import ERROR, NOTE, WARNING, check_dataset

# Anchors near the test boxes' sizes, so that the anchor fit is no problem.
SMALL_ANCHORS = "6,6, 8,8, 10,10, 12,12, 16,16, 20,20, 24,24, 30,30, 40,40\n"


def _image(path, size=(64, 48)):
    Image.new("RGB", size, (40, 80, 120)).save(path)
    return path


def _dataset(tmp_path, lines, classes=("a", "b", "c")):
    for line in lines:
        name = line.split(" ")[0]
        if not name.startswith("gone"):
            _image(tmp_path / name)
    annotations = tmp_path / "train.txt"
    annotations.write_text("".join(f"{tmp_path / line}\n" for line in lines))
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"{c}\n" for c in classes))
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(SMALL_ANCHORS)
    return annotations, names, anchors


PLANTED = [
    "ok.png 10,10,30,30,0 10,10,30,30,0",  # 1: a duplicate box
    "gone.png 10,10,30,30,0",  # 2: an image that does not exist
    "out.png 40,10,90,30,0",  # 3: a box reaching past the 64 px wide image
    "flat.png 10,10,10,30,0 5,5,25,25,0",  # 4: a degenerate box
    "alien.png 1,1,30,30,7 5,5,25,25,0",  # 5: an unknown class id
    "empty.png",  # 6: an image without labels
    "tiny.png 1,1,4,4,1",  # 7: a box of 3 px, below the 8 px cell at input 64
    "many.png " + " ".join(f"{2 * k},{k},{2 * k + 20},{k + 20},0" for k in range(12)),  # 8: class a far more than b
]
# The kind of each planted problem and the line it is on; class "c" has no object.
EXPECTED = {
    "duplicate box": 1, "unreadable image": 2, "box outside the image": 3, "degenerate box": 4,
    "unknown class": 5, "image without objects": 6, "box smaller than a cell": 7,
}


def test_each_planted_problem_is_found_once_with_file_and_line(tmp_path, capsys):
    import check_dataset as cli

    annotations, names, anchors = _dataset(tmp_path, PLANTED)
    report = check_dataset(annotations, classes=names, input_size=64,
                           anchors=[[float(v) for v in pair.split(",")] for pair in SMALL_ANCHORS.split(", ")])
    by_kind = {}
    for finding in report.findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    for kind, line in EXPECTED.items():
        assert len(by_kind.get(kind, [])) == 1, (kind, [str(f) for f in report.findings])
        assert f"{annotations}:{line}" in str(by_kind[kind][0]), (kind, str(by_kind[kind][0]))
    assert [f.message for f in by_kind["class without objects"]] == ["class 'c' has no object"]
    assert len(by_kind["class imbalance"]) == 1 and "'a' has" in by_kind["class imbalance"][0].message
    assert by_kind["class with few objects"][0].severity == NOTE
    assert report.trainable and "anchors fit poorly" not in by_kind
    assert report.anchor_fit.best_possible_recall == pytest.approx(1.0)

    status = cli.main([str(annotations), "--classes", str(names), "--input-size", "64", "--anchors", str(anchors),
                       "--plot", str(tmp_path / "labels.png")])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"{annotations}:3: warning: " in printed and "extends outside" in printed
    assert "anchors: best possible recall 1.0000 at ratio 4" in printed and "mean best IoU" in printed
    assert "classes without objects: c" in printed
    assert "Verdict: usable for training, with problems to look at" in printed
    assert (tmp_path / "labels.png").read_bytes()[:4] == b"\x89PNG"


def test_a_clean_dataset_passes_and_an_untrainable_one_fails(tmp_path):
    (tmp_path / "clean").mkdir()
    clean, names, anchors = _dataset(tmp_path / "clean", [f"i{k}.png 10,10,30,30,{k % 2}" for k in range(20)],
                                     classes=("a", "b"))
    proc = run_script("check_dataset.py", clean, "--classes", names, "--input-size", "64", "--anchors", anchors)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verdict: usable for training (0 error(s), 0 warning(s), 0 note(s))" in proc.stdout

    (tmp_path / "gone").mkdir()
    gone, names, _ = _dataset(tmp_path / "gone", ["gone1.png 1,1,9,9,0", "gone2.png 1,1,9,9,0"])
    report = check_dataset(gone, classes=names)
    assert not report.trainable
    assert [f.kind for f in report.findings if f.severity == ERROR] == ["no usable image"]
    assert sum(f.severity == WARNING for f in report.findings) == 2
    assert "training is impossible" in report.verdict()


def test_a_binary_file_is_refused_by_name_without_a_traceback(tmp_path):
    from tests.helpers import run_script

    junk = tmp_path / "junk.txt"
    junk.write_bytes(bytes(range(256)) * 4)
    proc = run_script("check_dataset.py", str(junk))
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{junk} is not a text annotation file" in proc.stdout + proc.stderr
    assert proc.returncode == 1


def test_an_image_listed_many_times_is_reported_as_repeated(tmp_path):
    annotations, names, _ = _dataset(tmp_path, ["one.png 10,10,30,30,0", "two.png 5,5,25,25,1"])
    # The same line 1,000 times, then two.png twice.
    annotations.write_text(f"{tmp_path / 'one.png'} 10,10,30,30,0\n" * 1000
                           + f"{tmp_path / 'two.png'} 5,5,25,25,1\n" * 2)
    report = check_dataset(annotations, classes=names, input_size=64)
    repeated = [f for f in report.findings if f.kind == "repeated image"]
    assert [f.severity for f in repeated] == [WARNING] * 3
    assert repeated[0].message.startswith("1000 of the 1002 images listed repeat one listed before "
                                          "(2 distinct images; 2 listed more than once)")
    assert repeated[1].where == f"{annotations}:1"
    assert repeated[1].message == (f"{tmp_path / 'one.png'} is listed 1000 times: here and at {annotations}:2, "
                                   f"{annotations}:3, {annotations}:4 and 996 more")
    assert repeated[2].where == f"{annotations}:1001" and "listed 2 times" in repeated[2].message
    assert "with problems to look at" in report.verdict()
    printed = report.format()
    assert "1000 of the 1002 images listed repeat one listed before" in printed and "listed 1000 times" in printed
