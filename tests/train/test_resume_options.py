"""train.py --resume takes the run's own config.json: options given beside it are
named as ignored, never dropped silently."""

import logging

import train


def test_options_given_with_resume_are_named_as_ignored(tmp_path, caplog, capsys):
    args = train.parse_args(["--resume", str(tmp_path), "--lr", "0.01", "--batch-size", "4", "--epochs", "9"])
    assert sorted(train.options_ignored_on_resume(args)) == ["--batch-size", "--lr"]
    with caplog.at_level(logging.WARNING):
        assert train.main(["--resume", str(tmp_path), "--mosaic", "--epochs", "9"]) == 2  # nothing to resume here
    assert any("continues with the run's own config.json; ignored: --mosaic (only --epochs" in r.getMessage()
               for r in caplog.records)
    assert "no finished epoch to resume from" in capsys.readouterr().err
    assert train.options_ignored_on_resume(train.parse_args(["--resume", str(tmp_path), "--epochs", "9"])) == []
