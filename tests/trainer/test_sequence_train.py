"""`crewstream train --window W --stride S` and `--dense`: their command line and refusals."""

import pytest

from trainer import task


@pytest.mark.parametrize("argv", [["--window", "0"], ["--stride", "0"], ["--dense", "--model", "lstm"],
                                  ["--dense", "--stride", "4"],
                                  ["--dense", "--strategy", "multiworker"]])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        task._parse_args(["--data", "d", "--model-dir", "m", *argv])
    assert e.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--window", "32"], "a windows-layout folder holds only window 64, stride 32; asked for window 32, stride 32"),
    (["--stride", "8"], "a windows-layout folder holds only window 64, stride 32; asked for window 64, stride 8"),
    (["--dense"], "--dense reads a sequence folder's chunks; this one has the windows layout"),
])
def test_a_windows_folder_refuses_other_windows_in_one_line(tmp_path, prep_dir, capsys, flags, message):
    model_dir = tmp_path / "model"
    assert task.main(["--data", prep_dir, "--model-dir", str(model_dir), "--progress", "none", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crewstream train: error: ") and err.count("\n") == 1 and message in err, err
    assert not (model_dir / "train_config.json").exists()
