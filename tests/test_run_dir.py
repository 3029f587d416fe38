"""Numbered output folders: what the scripts' help says is what happens."""

import argparse

from utils.run_dir import next_run_dir, numbered_path, numbering_help


def test_help_and_numbering_agree(tmp_path):
    note = numbering_help()
    assert "<out>2, <out>3" in note and "run1-2" in note
    base = tmp_path / "x" / "c"
    assert [next_run_dir(base).name for _ in range(3)] == ["c", "c2", "c3"]
    assert next_run_dir(tmp_path / "run1").name == "run1"
    assert next_run_dir(tmp_path / "run1").name == numbered_path("run1", 2).name == "run1-2"


def test_every_numbering_script_gives_the_same_note(capsys):
    import predict
    from utils.train.settings import add_arguments

    help_text = predict.build_parser().format_help()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    train_help = {a.dest: a.help for a in parser._actions}
    # argparse rewraps the help; compare without line breaks.
    assert numbering_help() in " ".join(help_text.split())
    assert numbering_help("<name>") in train_help["name"]
