"""Every command that writes refuses an output that is not crewstream's (docs/DESIGN.md, "Outputs
crewstream owns"): one case per row of CASES, each refused with its exact line,
exit code 1, and the tmp folder, links and bytes included, exactly as before.

The refusals come before any work, so no case runs a pipeline; the preprocess cases that need an
earlier output share one tiny run (`previous`), and one more run shows what a rerun into an earlier
output replaces and what it leaves. Reruns into crewstream's own outputs are also exercised by
tests/beam_jobs/test_kill.py, tests/trainer/test_train_resume.py and tests/beam_jobs/test_predict.py.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from beam_jobs import predict, preprocess, publish, rejects
from crewstream import demo, synth
from tests.helpers import make_frame, tree, write_crew_csv
from tfrecords_schema import ownership, read_stats
from trainer import task

FLAGS = ["--features", "r,ecg,gsr", "--window", "16", "--stride", "4", "--eval-crews", "2", "--num-shards", "2"]
NOT_CREWSTREAMS = "not written by crewstream (a run would replace it): move it or choose another folder"
LINK = "is a symbolic link; crewstream never writes or deletes through one: remove the link or choose another folder"
SUBMISSION_HEADER = "id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n"


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return write_crew_csv(root / "train.csv", make_frame(crews=(1, 2), rows_per_recording=120, seed=3))


@pytest.fixture(scope="module")
def previous(tmp_path_factory, train_csv):
    """A complete preprocess output (2 shards per split), copied by the cases that need one."""
    out = tmp_path_factory.mktemp("previous") / "out"
    preprocess.run(["--input", train_csv, "--output", str(out), *FLAGS])
    return out


def put(path, text="mine\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def copy(previous, out):
    shutil.copytree(previous, out, symlinks=True)
    return str(out)


# --- the cases: setup(root, train_csv, previous) -> (module main, argv, exit code, expected line) ---

def preprocess_case(make, line):
    def setup(root, train_csv, previous):
        out = str(root / "out")
        source = make(root, out, train_csv, previous) or train_csv
        return preprocess.main, ["--input", source, "--output", out, *FLAGS], 1, \
            "crewstream preprocess: error: " + line.format(out=out, source=source, root=root)
    return setup


def users_folder(name):
    return lambda root, out, csv, prev: put(f"{out}/{name}/notes.txt") and None


def symlinked_train(root, out, csv, previous):
    copy(previous, out)
    put(root / "elsewhere" / "precious.txt")
    shutil.rmtree(f"{out}/train")
    os.symlink(root / "elsewhere", f"{out}/train")


def symlinked_shard(root, out, csv, previous):
    copy(previous, out)
    put(root / "elsewhere" / "precious.tfrecord")
    shard = f"{out}/train/part-00000-of-00002.tfrecord"
    os.remove(shard)
    os.symlink(root / "elsewhere" / "precious.tfrecord", shard)


def unmarked_earlier_output(root, out, csv, previous):
    copy(previous, out)
    os.remove(f"{out}/{ownership.MARKER}")  # as an older crewstream wrote it: no marker


def input_under_train(root, out, csv, previous):
    copy(previous, out)
    return put(f"{out}/train/input.csv", open(csv).read())


def output_in_another_kind(root, out, csv, previous):
    ownership.write_marker(out, synth.OUTPUT.name)
    put(f"{out}/train.csv")


def predict_case(output, make, line, source="t.csv"):
    def setup(root, train_csv, previous):
        src, out = str(root / source), str(root / output)
        put(src, "id,crew,experiment,time,seat,r,ecg,gsr\n")
        make(root, src, out)
        return predict.main, ["--model-dir", str(root / "model"), "--input", src, "--output", out,
                              "--progress", "none"], 1, \
            "crewstream predict: error: " + line.format(src=src, out=out, rejects=rejects.beside(out))
    return setup


def train_case(make, line, model_dir="model"):
    def setup(root, train_csv, previous):
        data, model = copy(previous, root / "data"), str(root / model_dir)
        make(root, model)
        return task.main, ["--data", data, "--model-dir", model, "--epochs", "1"], 1, \
            "crewstream train: error: " + line.format(model=model, data=data)
    return setup


def synth_case(make, line):
    def setup(root, train_csv, previous):
        out = str(root / "kaggle")
        make(out)
        return synth.main, ["--out", out, "--crews", "1", "--seconds", "1"], 1, \
            "crewstream synth: error: " + line.format(out=out)
    return setup


def demo_case(make, line):
    def setup(root, train_csv, previous):
        workdir = str(root / "work")
        make(workdir)
        return demo.main, ["--workdir", workdir, "--epochs", "1"], 1, \
            "crewstream demo: error: " + line.format(workdir=workdir)
    return setup


CASES = {
    # preprocess --output
    "preprocess: a user's train/": preprocess_case(
        users_folder("train"), "--output {out} is not empty (train) and not the output of an earlier "
                               "crewstream preprocess run; choose a new or empty folder"),
    "preprocess: a user's eval/": preprocess_case(
        users_folder("eval"), "--output {out} is not empty (eval) and not the output of an earlier "
                              "crewstream preprocess run; choose a new or empty folder"),
    "preprocess: a user's rejects/": preprocess_case(
        users_folder("rejects"), "--output {out} is not empty (rejects) and not the output of an earlier "
                                 "crewstream preprocess run; choose a new or empty folder"),
    "preprocess: the input under OUT/train": preprocess_case(
        input_under_train, "--output {out} holds the input {source}; a run would write over it: move the "
                           "input or choose another output folder"),
    "preprocess: a user's file in an earlier output's train/": preprocess_case(
        lambda root, out, csv, prev: copy(prev, out) and put(f"{out}/train/mine.csv") and None,
        "--output {out}: train/mine.csv " + NOT_CREWSTREAMS),
    "preprocess: OUT/train is a link": preprocess_case(symlinked_train, "--output {out}: train " + LINK),
    "preprocess: a shard is a link": preprocess_case(
        symlinked_shard, "--output {out}: train/part-00000-of-00002.tfrecord " + LINK),
    "preprocess: an output of an older crewstream (no marker)": preprocess_case(
        unmarked_earlier_output, "--output {out} is not empty (eval, metadata, stats.json and 3 more) "
                                 "and not the output of an earlier crewstream preprocess run; "
                                 "choose a new or empty folder"),
    "preprocess: OUT is a synth output": preprocess_case(
        output_in_another_kind, "--output {out} is a crewstream synth output, not a preprocess output; "
                                "choose another folder"),
    "preprocess: OUT is a file": preprocess_case(
        lambda root, out, csv, prev: put(out) and None,
        "--output {out} is an existing file, not a folder; give a new or empty folder"),
    # predict --output
    "predict: --output is --input": predict_case(
        "t.csv", lambda root, src, out: None, "--output {out} is the input {src}; choose another output file"),
    "predict: the rejects file is --input": predict_case(
        "r.csv", lambda root, src, out: None,
        "--output {out}: its rejects file {rejects} is the input {src}; choose another output file",
        source="r.rejects.csv"),
    "predict: --output is a user's file": predict_case(
        "sub.csv", lambda root, src, out: put(out, "id,event\n1,A\n"),
        "--output {out} exists and was not written by crewstream (its first line is not 'id,A,B,C,D'); "
        "move it or choose another output file"),
    "predict: --output is a folder": predict_case(
        "sub.csv", lambda root, src, out: os.makedirs(out),
        "--output {out} is a folder, not a file; choose an output file"),
    "predict: --output is a link": predict_case(
        "sub.csv", lambda root, src, out: put(root / "elsewhere.csv", SUBMISSION_HEADER) and os.symlink(
            root / "elsewhere.csv", out),
        "--output {out} is a symbolic link; crewstream never writes through one: remove the link or "
        "choose another output file"),
    "predict: the rejects file is a user's": predict_case(
        "sub.csv", lambda root, src, out: put(out, SUBMISSION_HEADER) and put(rejects.beside(out)),
        "--output {out}: its rejects file {rejects} exists and was not written by crewstream (its first "
        "line is not 'file,line,column,reason,id,text'); move it or choose another output file"),
    # train --model-dir
    "train: a user's folder": train_case(
        lambda root, model: put(f"{model}/serving/saved_model.pb"),
        "--model-dir {model} is not empty (serving) and not the output of an earlier crewstream model "
        "run; choose a new or empty folder"),
    "train: --model-dir is --data": train_case(
        lambda root, model: None, "--model-dir {model} holds the input {data}; a run would write over it: "
                                  "move the input or choose another output folder", model_dir="data"),
    "train: MODEL/checkpoints is a link": train_case(
        lambda root, model: ownership.claim(model, ownership.MODEL) or put(root / "elsewhere" / "ckpt")
        and os.symlink(root / "elsewhere", f"{model}/checkpoints"),
        "--model-dir {model}: checkpoints " + LINK),
    "train: a preprocess output as --model-dir": train_case(
        lambda root, model: copy(root / "data", model) and None,
        "--model-dir {model} is a crewstream preprocess output, not a model output; choose another folder"),
    # synth --out
    "synth: a folder of the real files": synth_case(
        lambda out: put(f"{out}/train.csv", "crew,experiment,time,seat\n"),
        "--output {out} is not empty (train.csv) and not the output of an earlier crewstream synth run; "
        "choose a new or empty folder"),
    "synth: train.csv is a link in an earlier output": synth_case(
        lambda out: ownership.write_marker(out, "synth") and os.symlink("/etc/hostname", f"{out}/train.csv"),
        "--output {out}: train.csv " + LINK),
    "synth: --out is a file": synth_case(
        lambda out: put(out), "--output {out} is an existing file, not a folder; give a new or empty folder"),
    # demo --workdir
    "demo: a user's folder": demo_case(
        lambda workdir: put(f"{workdir}/notes.txt"),
        "--workdir {workdir} is not empty (notes.txt) and not the output of an earlier crewstream demo "
        "run; choose a new or empty folder"),
    "demo: --workdir is a file": demo_case(
        lambda workdir: put(workdir), "--workdir {workdir} is an existing file, not a folder; give a new or "
                                      "empty folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_one_line_and_nothing_written_or_deleted(tmp_path, train_csv, previous, capsys, case):
    main, argv, code, line = CASES[case](tmp_path, train_csv, previous)
    before = tree(tmp_path)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.splitlines() == [line]  # one line, no traceback, no log before it
    assert tree(tmp_path) == before


def test_the_train_check_runs_before_tensorflow_is_imported(tmp_path):
    put(tmp_path / "model" / "notes.txt")
    code = ("import sys; from trainer import task; "
            f"code = task.main(['--data', {str(tmp_path / 'data')!r}, '--model-dir', {str(tmp_path / 'model')!r}]); "
            "print(code, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["1", "False"], result.stderr
    assert "is not empty (notes.txt)" in result.stderr


def test_a_rerun_replaces_only_what_crewstream_wrote(tmp_path, train_csv, previous):
    """An earlier output with a user's files beside the entries and a killed run's staging folder:
    the rerun (3 shards, not 2) replaces every listed file, removes crewstream's staging folder and
    leaves the user's files, byte for byte."""
    out = copy(previous, tmp_path / "out")
    put(f"{out}/README.txt")
    put(f"{out}/.staging-someones/keep.txt")
    ownership.write_marker(f"{out}/.staging-0123456789ab", ownership.STAGING_KIND)
    put(f"{out}/.staging-0123456789ab/spills/x.spill")
    theirs = {k: v for k, v in tree(out).items() if k.startswith(("README", ".staging-someones"))}

    stats = preprocess.run(["--input", train_csv, "--output", out, *FLAGS[:-1], "3"])
    after = tree(out)
    assert {k: v for k, v in after.items() if k.startswith(("README", ".staging-"))} == theirs
    files = {k for k, v in after.items() if v != "dir"} - set(theirs)
    marker = ownership.read_marker(out)
    assert marker["kind"] == "preprocess" and set(marker["files"]) == files - {ownership.MARKER}
    assert sorted(f for f in files if f.startswith(("train/", "eval/"))) == sorted(
        s["file"] for split in stats["splits"].values() for s in split["shards"])
    assert len(stats["splits"]["train"]["shards"]) == 3
    assert read_stats(out) == stats


def test_publish_refuses_a_file_that_appeared_during_the_run(tmp_path, previous):
    out = copy(previous, tmp_path / "out")
    staging = f"{out}/.staging-0123456789ab"
    os.makedirs(staging)
    for name in publish.PUBLISHED:
        if os.path.exists(previous / name):
            shutil.copytree(previous / name, f"{staging}/{name}")
    put(f"{out}/train/arrived-during-the-run.csv")
    before = tree(tmp_path)
    expected = re.escape(f"train/arrived-during-the-run.csv {NOT_CREWSTREAMS}")
    with pytest.raises(ownership.OwnershipError, match=expected):
        publish.publish(staging, out, read_stats(str(previous)))
    assert tree(tmp_path) == before


def test_synth_reruns_into_its_own_output(tmp_path, capsys):
    out = str(tmp_path / "sample")
    argv = ["--out", out, "--crews", "1", "--seconds", "1", "--test-seconds", "1"]
    assert synth.main(argv) == 0
    first = tree(out)
    assert json.loads(first[ownership.MARKER]) == {"kind": "synth", "files": []}
    assert synth.main(argv) == 0
    assert tree(out) == first

