"""When the machine misbehaves (docs/DESIGN.md, "When a run fails"): every case is a real failure
of a real `crewstream` process (a full tmpfs, a read-only mount, SIGINT/SIGTERM sent to the
child, two live runs into one output), and each asserts the exit code, the exact one line on
stderr (no traceback), what is on disk afterwards (no staging folder, no lock file, the previous
output byte-identical) and that a rerun succeeds.

Mounting needs root (CI runs as root); where `mount` is refused those cases are skipped, saying so.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_common import failure
from tests.helpers import tree
from tfrecords_schema import ownership

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--features", "r,ecg,gsr", "--window", "64", "--stride", "32", "--eval-crews", "2", "--num-shards", "2"]
# a run that writes about 15 MB of shards (5 features): too much for the small tmpfs below
BIG_FLAGS = ["--window", "64", "--stride", "4", "--eval-crews", "2", "--num-shards", "2"]


def crewstream(*argv, cwd=None):
    """A child `crewstream ARGV...` process (its stdout and stderr piped)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
    env["PYTHONPATH"] = REPO
    return subprocess.Popen([sys.executable, "-m", "crewstream.cli", *map(str, argv)], cwd=cwd or REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(child, timeout=300):
    out, err = child.communicate(timeout=timeout)
    return child.returncode, out, err


def run(*argv):
    return finish(crewstream(*argv))


def one_line(err, prefix):
    """The one line a failed command printed, after crewstream's own INFO log lines."""
    lines = [line for line in err.splitlines() if " INFO " not in line and " WARNING " not in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


def leftovers(folder):
    """Staging folders and lock files of crewstream's under `folder` (at any depth)."""
    found = []
    for parent, dirs, files in os.walk(folder):
        found += [os.path.join(parent, d) for d in dirs if ".staging-" in d]
        found += [os.path.join(parent, f) for f in files if f.endswith(".lock")]
    return found


@contextlib.contextmanager
def mounted(path, *options):
    """A tmpfs at `path` with mount `options` (size=..., ro), unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): needs root, as CI has")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def wait_for(predicate, child, timeout=120):
    """Poll until predicate() or the child ended (then the test fails: the point was missed)."""
    deadline = time.time() + timeout
    while not predicate():
        assert child.poll() is None, f"the run ended before the point: {child.communicate()}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def staging_of(out):
    return lambda: os.path.isdir(out) and any(n.startswith(".staging-") for n in os.listdir(out))


# ---------------------------------------------------------------------------------------------
# The line: describe() on the errors commands meet

def raised(make):
    try:
        make()
    except BaseException as e:  # noqa: B036
        return e
    raise AssertionError("nothing raised")


def beam_reraise(error):
    """What Beam's DoFnRunner._reraise_augmented makes of a step's error: the same type with the
    step appended when it can build one, else a RuntimeError, raised while handling the original."""
    def make():
        try:
            raise error
        except BaseException as exn:
            try:
                new = type(exn)(exn.args[0] + " [while running 'WriteShards/WriteShard']", *exn.args[1:])
            except Exception:
                new = RuntimeError(f"{type(exn).__name__}: {exn} [while running 'WriteShards/WriteShard']")
            raise new
    return raised(make)


def test_an_os_error_inside_a_beam_step_names_its_file_and_reason():
    error = beam_reraise(FileNotFoundError(2, "No such file or directory", "/data/x.csv"))
    assert isinstance(error, RuntimeError)
    assert failure.describe(error) == "/data/x.csv: no such file or directory"


def test_crewstreams_own_error_inside_a_beam_step_keeps_its_message_without_the_step():
    error = beam_reraise(ownership.OwnershipError("--output o is not empty"))
    assert type(error) is ownership.OwnershipError
    assert failure.describe(error) == "--output o is not empty"


def test_a_full_disk_seen_by_tensorflow_says_where_the_run_was_writing(tmp_path):
    def write():
        with ownership.hold(str(tmp_path / "out"), "--output out"):
            raise RuntimeError("ResourceExhaustedError: /x/out/.staging-1/p.tfrecord; No space left on device")
    assert failure.describe(raised(write)) == "no space left on device while writing --output out"
    assert os.listdir(tmp_path) == []  # the folder the hold created, empty again, is gone


def test_an_os_error_without_a_file_says_where_the_run_was_writing(tmp_path):
    import errno

    def write():
        with ownership.hold(str(tmp_path / "model"), "--model-dir model"):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    assert failure.describe(raised(write)) == "too many open files while writing --model-dir model"


def test_an_unexpected_error_gives_its_type_and_first_line():
    assert failure.describe(KeyError("signals")) == "KeyError: 'signals' (--verbose shows where)"


def test_a_valueerror_crewstream_raised_is_its_message():
    from tfrecords_schema import output_folder

    error = raised(lambda: output_folder.shard_name(3, 2))
    assert failure.describe(error) == "shard 3 is outside 0..1"


def test_exit_codes_usage_failure_interrupt(capsys):
    from cli_common import console

    def usage(argv):
        raise console.UsageError("--data x not found")

    def interrupted(argv):
        raise failure.Interrupted(signal.SIGTERM)

    assert failure.run("train", usage, []) == 2
    assert failure.run("train", lambda argv: 1 / 0, []) == 1
    assert failure.run("train", interrupted, []) == 130  # no signal was received: an interrupt as Ctrl-C
    assert capsys.readouterr().err.splitlines() == [
        "crewstream train: error: --data x not found",
        "crewstream train: error: ZeroDivisionError: division by zero (--verbose shows where)",
        "crewstream train: interrupted (SIGINT)"]


def test_a_process_ends_with_its_commands_code_flushed_its_atexit_work_done_its_objects_frozen(tmp_path):
    """failure.end_process, how the `crewstream` script and every `python -m` entry exit: the
    command's exit code, stdout flushed, atexit handlers run, and by then every object is frozen
    (the interpreter's last collections skip them: about 1 s less per run, benchmarks/README.md)."""
    program = ("import atexit, gc, sys\n"
               "from cli_common import failure\n"
               "atexit.register(lambda: open(sys.argv[1], 'w').write(str(gc.get_freeze_count())))\n"
               "print('done', end='')\n"
               "failure.end_process(3)\n")
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path / "frozen")], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (3, "done")
    assert int((tmp_path / "frozen").read_text()) > 1000  # every object of the process, not a few


@pytest.mark.parametrize("own_process", [True, False])
def test_a_command_in_its_own_process_freezes_its_imports_and_a_library_call_does_not(tmp_path, own_process):
    """failure.imports_done freezes every object made so far (gc.freeze) when the command runs as
    its process's own (failure.run_process: the script, every `python -m` entry), and nothing
    when a job is called as a library, whose process keeps running (tests, notebooks)."""
    main = ("def main():\n"
            "    failure.imports_done()\n"
            "    open(sys.argv[1], 'w').write(str(gc.get_freeze_count()))\n"
            "    return 4\n")
    call = "failure.run_process(main)\n" if own_process else "sys.exit(main())\n"
    program = "import gc, sys\nfrom cli_common import failure\n" + main + call
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path / "frozen")], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4, result.stderr
    frozen = int((tmp_path / "frozen").read_text())
    assert frozen > 1000 if own_process else frozen == 0


def test_a_preprocess_freezes_once_after_everything_it_runs_on_is_imported(sample_dir, tmp_path, monkeypatch):
    """The freeze comes after TensorFlow, Beam, tf.Transform's Beam API and the job's steps are
    imported, and before the pipeline is built."""
    from beam_jobs import preprocess
    from tests.conftest import PREPROCESS_FLAGS

    events = []
    monkeypatch.setattr(failure, "_OWN_PROCESS", True)
    monkeypatch.setattr("gc.freeze", lambda: events.append(
        ("freeze", all(m in sys.modules for m in ("tensorflow", "apache_beam", "tensorflow_transform.beam",
                                                  "beam_jobs.preprocess_steps", "beam_jobs.scaling")))))
    build = preprocess.build_pipeline
    monkeypatch.setattr(preprocess, "build_pipeline", lambda *a: (events.append(("build", None)), build(*a))[1])
    preprocess.run(["--input", str(sample_dir / "train.csv"), "--output", str(tmp_path / "out"), *PREPROCESS_FLAGS])
    assert events == [("freeze", True), ("build", None)]


def test_the_crewstream_script_is_main_through_end_process():
    import importlib.metadata

    from crewstream import cli

    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "crewstream"]
    assert script.load() is cli.script
    code, out, err = finish(crewstream("--version"))
    assert (code, err) == (0, "") and out.startswith("crewstream ")


# ---------------------------------------------------------------------------------------------
# Paths

def test_an_input_that_exists_is_that_file_even_with_brackets(tmp_path, sample_dir):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(sample_dir / "train.csv", data / "[1].csv")
    with open(sample_dir / "train.csv") as f:  # a different file the glob `[1].csv` would match
        head = "".join(next(f) for _ in range(200))
    (data / "1.csv").write_text(head)
    code, out, err = run("preprocess", "--input", data / "[1].csv", "--output", tmp_path / "out", *FLAGS)
    assert code == 0, err
    from tfrecords_schema import read_stats

    stats = read_stats(str(tmp_path / "out"))
    assert [entry["file"] for entry in stats["inputs"]] == [str(data / "[1].csv")]
    assert stats["inputs"][0]["rows_read"] > 199 * 100


def test_an_input_folder_and_an_output_under_a_file_are_one_line(tmp_path, sample_dir):
    (tmp_path / "afile").write_text("x")
    code, _, err = run("preprocess", "--input", sample_dir, "--output", tmp_path / "out", *FLAGS)
    assert code == 1
    assert one_line(err, "crewstream preprocess: error: ") == (
        f"crewstream preprocess: error: --input {sample_dir} is a folder; name its files, e.g. "
        f"--input '{sample_dir}/*.csv'")
    code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", tmp_path / "afile" / "out",
                       *FLAGS)
    assert code == 1
    assert one_line(err, "crewstream") == f"crewstream preprocess: error: {tmp_path}/afile/out: not a directory"
    assert sorted(os.listdir(tmp_path)) == ["afile"]


# ---------------------------------------------------------------------------------------------
# The file system refuses

def test_a_read_only_output_is_one_line_on_every_writing_command(tmp_path, sample_dir, prep_dir, exported_tcn):
    with mounted(tmp_path / "ro", "size=1m", "ro") as ro:
        cases = [
            ("preprocess", ["--input", sample_dir / "train.csv", "--output", f"{ro}/out", *FLAGS], f"{ro}/out"),
            ("predict", ["--model-dir", exported_tcn.model_dir, "--input", sample_dir / "test.csv",
                         "--output", f"{ro}/sub.csv"], f"{ro}/sub.csv"),
            ("train", ["--data", prep_dir, "--model-dir", f"{ro}/model", "--epochs", "1"], f"{ro}/model"),
            ("synth", ["--output", f"{ro}/sample"], f"{ro}/sample"),
        ]
        children = [(name, crewstream(name, *argv), path) for name, argv, path in cases]
        for name, child, path in children:
            code, _, err = finish(child)
            assert code == 1, err
            assert one_line(err, "crewstream") == f"crewstream {name}: error: {path}: read-only file system"
        assert os.listdir(ro) == []


def test_a_full_disk_fails_in_one_line_removes_its_staging_and_keeps_the_previous_output(tmp_path, sample_dir):
    with mounted(tmp_path / "small", "size=10m") as small:
        out = os.path.join(small, "out")
        code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", out, *FLAGS)
        assert code == 0, err
        before = tree(out)
        code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", out,
                           "--features", "r,ecg,gsr,eeg_fp1,eeg_f7", *BIG_FLAGS)
        assert code == 1
        assert one_line(err, "crewstream") == (
            f"crewstream preprocess: error: no space left on device while writing --output {out}")
        assert tree(out) == before and leftovers(small) == []
        subprocess.run(["mount", "-o", "remount,size=64m", small], check=True)
        code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", out,
                           "--features", "r,ecg,gsr,eeg_fp1,eeg_f7", *BIG_FLAGS)
        assert code == 0, err
        assert leftovers(small) == []


# ---------------------------------------------------------------------------------------------
# Interrupted

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_preprocess_exits_128_plus_the_signal_and_leaves_nothing(tmp_path, sample_dir, signum):
    out = str(tmp_path / "out")
    code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", out, *FLAGS)
    assert code == 0, err
    before = tree(out)
    child = crewstream("preprocess", "--input", sample_dir / "train.csv", "--output", out, *BIG_FLAGS)
    wait_for(staging_of(out), child)  # mid-pipeline: the run has written its staging folder
    time.sleep(0.5)
    child.send_signal(signum)
    code, _, err = finish(child)
    name = signal.Signals(signum).name
    assert code == 128 + signum
    assert one_line(err, "crewstream") == f"crewstream preprocess: interrupted ({name})"
    assert tree(out) == before and leftovers(str(tmp_path)) == []


def test_ctrl_c_while_starting_up_is_one_line(tmp_path, sample_dir):
    child = crewstream("preprocess", "--input", sample_dir / "train.csv", "--output", tmp_path / "out", *FLAGS)
    time.sleep(1.0)  # importing Beam, TensorFlow and tf.Transform takes several seconds
    child.send_signal(signal.SIGINT)
    code, _, err = finish(child)
    assert code == 130
    assert one_line(err, "crewstream") == "crewstream preprocess: interrupted (SIGINT)"
    assert os.listdir(tmp_path) == []


def test_an_interrupted_predict_keeps_the_previous_submission(tmp_path, sample_dir, exported_tcn):
    sub = str(tmp_path / "sub.csv")
    argv = ["predict", "--model-dir", exported_tcn.model_dir, "--input", sample_dir / "test.csv", "--output", sub]
    code, _, err = run(*argv)
    assert code == 0, err
    with open(sub, "rb") as f:
        before = f.read()
    child = crewstream(*argv)
    wait_for(lambda: any(".staging-" in n for n in os.listdir(tmp_path)), child)
    child.send_signal(signal.SIGTERM)
    code, _, err = finish(child)
    assert code == 143
    assert one_line(err, "crewstream") == "crewstream predict: interrupted (SIGTERM)"
    with open(sub, "rb") as f:
        assert f.read() == before
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]


# ---------------------------------------------------------------------------------------------
# One run at a time

def test_a_second_run_into_a_live_runs_output_is_refused_and_the_first_completes(tmp_path, sample_dir):
    out = str(tmp_path / "out")
    first = crewstream("preprocess", "--input", sample_dir / "train.csv", "--output", out, *FLAGS)
    wait_for(staging_of(out), first)
    code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", out, *FLAGS)
    assert code == 1
    line = one_line(err, "crewstream")
    assert line.startswith(f"crewstream preprocess: error: --output {out} is in use by another crewstream run "
                           f"(process {first.pid} on "), line
    assert line.endswith("); wait for it to end or choose another output")
    code, _, err = finish(first)
    assert code == 0, err
    assert os.path.exists(os.path.join(out, "stats.json")) and leftovers(out) == []
    from tfrecords_schema import verify

    assert verify.verify(out).ok


def test_a_killed_runs_lock_is_taken_over(tmp_path, sample_dir):
    out = str(tmp_path / "out")
    child = crewstream("preprocess", "--input", sample_dir / "train.csv", "--output", out, *FLAGS)
    wait_for(staging_of(out), child)
    child.kill()
    child.communicate()
    assert os.path.exists(ownership.lock_path(out)) and leftovers(out)  # what kill -9 leaves
    code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", out, *FLAGS)
    assert code == 0, err
    assert leftovers(out) == []


def test_train_evaluate_and_predict_wait_for_nobody_but_refuse_a_held_output(tmp_path, prep_dir, sample_dir,
                                                                             exported_tcn):
    """The lock is the kernel's: held here by this test process, the commands are refused at once."""
    model = str(tmp_path / "model")
    sub = str(tmp_path / "sub.csv")
    with ownership.hold(model, "--model-dir"), ownership.hold(sub, "--output", folder=False):
        cases = [("train", ["--data", prep_dir, "--model-dir", model, "--epochs", "1"], f"--model-dir {model}"),
                 ("evaluate", ["--data", prep_dir, "--model-dir", model], f"--model-dir {model}"),
                 ("predict", ["--model-dir", exported_tcn.model_dir, "--input", sample_dir / "test.csv",
                              "--output", sub], f"--output {sub}")]
        for name, argv, label in cases:
            code, _, err = run(name, *argv)
            assert code == 1, err
            assert one_line(err, "crewstream").startswith(
                f"crewstream {name}: error: {label} is in use by another crewstream run (process {os.getpid()} ")
    assert sorted(os.listdir(tmp_path)) == []  # the holds' lock files and the folder they made are gone


# ---------------------------------------------------------------------------------------------
# Models that do not fit

def test_a_damaged_model_is_one_line_before_any_work(tmp_path, sample_dir, prep_dir, exported_tcn):
    import shutil

    model = str(tmp_path / "model")
    shutil.copytree(exported_tcn.model_dir, model)
    with open(os.path.join(model, "serving", "saved_model.pb"), "r+b") as f:
        f.truncate(200)
    pb = os.path.join(model, "serving", "saved_model.pb")
    code, _, err = run("predict", "--model-dir", model, "--input", sample_dir / "test.csv",
                       "--output", tmp_path / "sub.csv")
    assert code == 1
    line = one_line(err, "crewstream")
    assert line.startswith(f"crewstream predict: error: --model-dir {model}: {pb} is damaged (") and \
        line.endswith("): export the model again"), line
    code, _, err = run("evaluate", "--model-dir", model, "--data", prep_dir)
    assert code == 1
    assert one_line(err, "crewstream").startswith(f"crewstream evaluate: error: {pb} is damaged (")
    assert sorted(os.listdir(tmp_path)) == ["model"] and leftovers(str(tmp_path)) == []


def test_evaluate_on_a_folder_of_other_features_names_both_sides(tmp_path, sample_dir, exported_tcn):
    data = str(tmp_path / "out")
    code, _, err = run("preprocess", "--input", sample_dir / "train.csv", "--output", data,
                       "--features", "r,ecg", *FLAGS[2:])
    assert code == 0, err
    code, _, err = run("evaluate", "--model-dir", exported_tcn.model_dir, "--data", data)
    assert code == 1
    assert one_line(err, "crewstream") == (
        f"crewstream evaluate: error: --model-dir {exported_tcn.model_dir} takes windows of 64 rows of r,ecg,gsr; "
        f"--data {data} holds windows of 64 rows of r,ecg: preprocess with the model's --features and --window, "
        "or evaluate a model trained on this folder")
    assert not os.path.exists(os.path.join(exported_tcn.model_dir, "eval.json"))
