"""The command line as a user meets it: quiet by default, usage errors before TensorFlow or Beam
loads, the same flags everywhere, `--version`, and a closed pipe ends it without a traceback.

The subprocess tests run `python -m crewstream.cli` with TF_CPP_MIN_LOG_LEVEL unset (tests/
conftest.py sets it for the suite), as a user's shell would.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beam_jobs import predict
from cli_common import console
from trainer import evaluate, score, task

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "crewstream.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_version_is_the_one_in_setup_py():
    declared = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"crewstream {declared}\n"


@pytest.mark.parametrize("command", ["help", "synth"])
def test_a_closed_pipe_ends_the_command_without_a_traceback(command, tmp_path):
    # `crewstream --help | head -0`, `crewstream synth ... | head -0`: stdout's reader is gone
    args = {"help": ["--help"],
            "synth": ["synth", "--output", tmp_path, "--crews", "1", "--seconds", "1", "--test-seconds", "1"]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    child = subprocess.Popen([sys.executable, "-m", "crewstream.cli", *map(str, args[command])], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child (still starting Python) writes: its writes hit a closed pipe
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 1  # Python's own exit status on EPIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


# In a child process: each usage error, its exit status, its stderr, and the heavy modules loaded.
USAGE_ERRORS = r"""
import contextlib, io, json, sys
from crewstream import cli
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    results.append([code, err.getvalue()])
heavy = sorted(m for m in ("tensorflow", "tensorflow_transform", "apache_beam", "tf_keras") if m in sys.modules)
print(json.dumps({"results": results, "heavy": heavy}))
"""


def test_a_missing_path_is_reported_before_tensorflow_or_beam_is_imported(tmp_path):
    missing = str(tmp_path / "nope")
    commands = [
        ["preprocess", "--input", f"{missing}.csv", "--output", str(tmp_path / "out")],
        ["train", "--data", missing, "--model-dir", str(tmp_path / "model")],
        ["evaluate", "--data", missing, "--model-dir", missing],
        ["predict", "--model-dir", missing, "--input", f"{missing}.csv", "--output", str(tmp_path / "s.csv")],
        ["verify", missing],
    ]
    child = subprocess.run([sys.executable, "-c", USAGE_ERRORS, json.dumps(commands)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["heavy"] == []
    for argv, (code, err) in zip(commands, report["results"]):
        assert code == 1, (argv, err)
        lines = err.splitlines()
        assert lines and all(line.startswith(f"crewstream {argv[0]}: ") and missing in line for line in lines), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "model").exists()


def usage_error(argv):
    """(exit status, stderr, heavy modules loaded) of one command run in a fresh child."""
    child = subprocess.run([sys.executable, "-c", USAGE_ERRORS, json.dumps([argv])], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    (code, err), = report["results"]
    return code, err, report["heavy"]


def test_predict_usage_errors_answer_before_tensorflow_is_imported(tmp_path):
    """A missing --input and a flag neither predict nor Beam knows: exit 2 with one error line,
    nothing written, and TensorFlow never imported (the unknown flag needs Beam's flag list)."""
    base = ["predict", "--model-dir", str(tmp_path / "model"), "--output", str(tmp_path / "s.csv")]
    code, err, heavy = usage_error(base)
    assert (code, heavy) == (2, [])
    assert err.splitlines()[-1] == "crewstream predict: error: the following arguments are required: --input"
    assert err.startswith("usage: crewstream predict ")  # argparse's usage, then the one error line

    code, err, heavy = usage_error(base + ["--input", str(tmp_path / "t.csv"), "--max-bad-fractoin", "0.1"])
    assert code == 2 and not {"tensorflow", "tensorflow_transform", "tf_keras"} & set(heavy), heavy
    assert err.splitlines() == ["crewstream predict: error: unknown flag --max-bad-fractoin: neither crewstream "
                                "predict nor Beam's PipelineOptions know it; did you mean --max-bad-fraction?"]
    assert os.listdir(tmp_path) == []


def test_only_crewstreams_lines_by_default_and_the_libraries_with_verbose(tmp_path):
    # evaluate imports TensorFlow and tf.Transform (trainer.export) before it finds no MODEL/serving
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stats.json").write_text("{}")
    (tmp_path / "model").mkdir()
    argv = ["evaluate", "--data", tmp_path / "out", "--model-dir", tmp_path / "model"]
    quiet, verbose = run_cli(*argv), run_cli(*argv, "--verbose")
    expected = f"crewstream evaluate: error: {tmp_path / 'model' / 'serving'} not found: train a model first\n"
    assert (quiet.returncode, quiet.stderr) == (1, expected)
    assert verbose.returncode == 1
    assert verbose.stderr.endswith(expected)
    # TensorFlow's start-up lines (C++, written while it loads) and its Python loggers are back
    assert re.search(r"^[IWE]\d{4} .*\.cc:\d+\]", verbose.stderr, re.M), verbose.stderr[:2000]
    assert re.search(r"^\S+ \S+ DEBUG (?!crewstream)", verbose.stderr, re.M), verbose.stderr[:2000]


# ---------------------------------------------------------------------------------------------
# The same flag, the same meaning

PROGRESS_PARSERS = {
    "train": (task._parse_args, ["--data", "d", "--model-dir", "m"]),
    "evaluate": (evaluate._parse_args, ["--data", "d", "--model-dir", "m"]),
    "predict": (lambda argv: predict._parse_args(argv)[0],  # (args, Beam's flags)
                ["--model-dir", "m", "--input", "t.csv", "--output", "s.csv"]),
}


@pytest.mark.parametrize("command", sorted(PROGRESS_PARSERS))
def test_progress_takes_the_same_modes_everywhere(command, capsys):
    parse, required = PROGRESS_PARSERS[command]
    assert parse(required).progress == "auto"
    for mode in console.PROGRESS_MODES:
        assert parse(required + ["--progress", mode]).progress == mode
    for other in ("epoch", "epochs"):  # `epoch` was train's spelling of `log` before 0.1.0
        with pytest.raises(SystemExit) as exit_info:
            parse(required + ["--progress", other])
        assert exit_info.value.code == 2
        assert f"--progress: invalid choice: '{other}' (choose from auto, bar, log, none)" in capsys.readouterr().err


def test_auto_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(tmp_path):
    with open(tmp_path / "log", "w") as not_a_terminal:
        assert console.resolve_progress("auto", not_a_terminal) == "log"

    class Terminal:
        def isatty(self):
            return True

    assert console.resolve_progress("auto", Terminal()) == "bar"
    assert console.resolve_progress("none", Terminal()) == "none"
    # train's Keras verbosity follows it: log is one line per epoch
    assert task.config_from_argv(["--data", "d", "--model-dir", "m", "--progress", "log"]).verbose == 2


def test_output_and_data_name_the_same_things_everywhere_and_no_other_spelling(capsys):
    from crewstream import demo, synth, verify

    assert synth._parse_args(["--output", "x"]).out == demo._parse_args(["--workdir", "x"]).workdir == "x"
    for parse, argv in ((demo._parse_args, ["--output", "x"]),
                        (score._parse_args, ["--submission", "s", "--truth", "t", "--json", "r"])):
        with pytest.raises(SystemExit) as exit_info:  # spellings of crewstream before 0.1.0
            parse(argv)
        assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert score._parse_args(["--submission", "s", "--truth", "t", "--output", "r"]).output == "r"
    assert verify._parse_args(["o"]).out == verify._parse_args(["--data", "o"]).out == "o"
    with pytest.raises(SystemExit):
        verify._parse_args([])


def test_the_demo_trains_at_trains_measured_defaults_and_scores_a_crew_in_no_split():
    """The demo's train step, as its parser reads it: all 23 signals' tcn of 64 filters, center,
    trained at gains up to 2x for 16 epochs, train's defaults (benchmarks/README.md, "Defaults on a
    flight");
    crew 4 is val, crew 2 eval, and the flight scored is crew 5's."""
    from crewstream import demo

    steps = {subcommand: argv for _, subcommand, argv in demo.steps("w", 60.0, demo._parse_args([]).epochs)}
    config = task.config_from_argv(steps["train"])
    assert (config.epochs, config.model.kind, config.model.filters, config.model.normalize,
            config.model.augment_gain) == (16, "tcn", 64, "center", 2.0)
    assert config == task.config_from_argv(["--data", config.data, "--model-dir", config.model_dir])
    assert "--features" not in steps["preprocess"]  # all 23 signals
    flags = dict(zip(steps["preprocess"][::2], steps["preprocess"][1::2]))
    assert (flags["--val-crews"], flags["--eval-crews"]) == ("4", "2")
    synth_flags = dict(zip(steps["synth"][::2], steps["synth"][1::2]))
    assert synth_flags["--test-crews"] == "5" and "5" not in synth_flags["--crews"].split(",")
