"""trainer.score: the competition's log loss, accuracy and macro F1, rows matched by id.

The expected numbers come from scikit-learn: log_loss on probabilities clipped to [1e-15, 1-1e-15]
and renormalized per row, which is what Kaggle does before scoring.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from beam_jobs import predict
from tfrecords_schema import LABEL_VOCABULARY, csv_columns as cols
from trainer import score

LABELS = list(LABEL_VOCABULARY)


def kaggle_clip(p):
    p = np.clip(np.asarray(p, np.float64), 1e-15, 1 - 1e-15)
    return p / p.sum(axis=1, keepdims=True)


def make_case(n=5000, seed=0):
    """Truth labels int [n] and awkward probabilities [n, 4]: exact zeros and ones on the true class,
    rows that do not sum to 1, an all-zero row, values below the clip."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    p = rng.dirichlet([0.3] * 4, n)
    p[0] = 0.0                              # nothing anywhere
    p[1] = np.eye(4)[(y[1] + 1) % 4]        # certain and wrong: the true class gets 0
    p[2] = np.eye(4)[y[2]]                  # certain and right
    p[3:50] *= rng.uniform(0.2, 3.0, (47, 1))  # not normalized
    p[50, y[50]] = 1e-20                    # below the clip
    return y, p


def write_files(tmp_path, y, p, order=None, columns=None):
    ids = np.arange(len(y)) * 7 + 3  # ids need not be 0..n-1
    truth = pd.DataFrame({cols.ID: ids, cols.EVENT: np.array(LABELS)[y]})
    sub = pd.DataFrame(p, columns=LABELS)
    sub.insert(0, cols.ID, ids)
    if order is not None:
        sub = sub.iloc[order]
    if columns is not None:
        sub = sub[columns]
    truth.to_csv(tmp_path / "truth.csv", index=False)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    return str(tmp_path / "sub.csv"), str(tmp_path / "truth.csv")


def test_log_loss_is_sklearns_with_the_competition_clipping(tmp_path):
    y, p = make_case()
    report = score.score(*write_files(tmp_path, y, p))
    assert report["log_loss"] == pytest.approx(log_loss(y, kaggle_clip(p), labels=[0, 1, 2, 3]), rel=1e-12)
    assert np.isfinite(report["log_loss"])  # p(true) = 0 on row 1: only the clip keeps it finite
    assert report["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(axis=1)))
    assert report["macro_f1"] == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    assert report["rows"] == len(y)


def test_rows_are_matched_by_id_in_any_row_and_column_order(tmp_path):
    y, p = make_case(n=3000, seed=1)
    plain = score.score(*write_files(tmp_path, y, p))
    shuffled = np.random.default_rng(2).permutation(len(y))
    moved = score.score(*write_files(tmp_path, y, p, order=shuffled, columns=["D", "id", "B", "A", "C"]))
    assert moved["log_loss"] == pytest.approx(plain["log_loss"], rel=1e-12)
    assert moved["confusion_matrix"] == plain["confusion_matrix"]


@pytest.mark.parametrize("change, message", [
    (lambda s: s.iloc[1:], "missing"),
    (lambda s: pd.concat([s, s.iloc[[5]]]), "more than once"),
    (lambda s: s.assign(id=s["id"].where(s.index != 3, 10**9)), "not in the truth"),
    (lambda s: s.assign(B=s["B"].where(s.index != 4, np.nan)), "finite"),
    (lambda s: s.drop(columns=["C"]), "cannot read the columns"),
])
def test_unscorable_submissions_are_errors_naming_the_problem(tmp_path, capsys, change, message):
    y, p = make_case(n=200)
    sub_path, truth_path = write_files(tmp_path, y, p)
    change(pd.read_csv(sub_path)).to_csv(sub_path, index=False)
    with pytest.raises(score.ScoreError, match=message):
        score.score(sub_path, truth_path)
    assert score.main(["--submission", sub_path, "--truth", truth_path]) == 1
    assert message in capsys.readouterr().err


def test_score_of_a_predicted_synth_test_file(tmp_path, exported, sample_dir, capsys):
    """The demo's last two steps: predict synth's test.csv, then score it against test_truth.csv."""
    sub_path = tmp_path / "submission.csv"
    assert predict.main(["--model-dir", exported.model_dir, "--input", str(sample_dir / "test.csv"),
                         "--output", str(sub_path), "--progress", "none"]) == 0
    assert score.main(["--submission", str(sub_path), "--truth", str(sample_dir / "test_truth.csv"),
                       "--output", str(tmp_path / "score.json")]) == 0
    out = capsys.readouterr().out
    assert "log loss (Kaggle" in out and "macro F1" in out

    truth = pd.read_csv(sample_dir / "test_truth.csv")
    joined = truth.merge(pd.read_csv(sub_path), on=cols.ID, validate="one_to_one")
    assert len(joined) == len(truth)
    y = joined[cols.EVENT].map(LABELS.index).to_numpy()
    expected = log_loss(y, kaggle_clip(joined[LABELS].to_numpy()), labels=[0, 1, 2, 3])
    report = pd.read_json(tmp_path / "score.json", typ="series")
    assert report["log_loss"] == pytest.approx(expected, rel=1e-9)
    assert f"{expected:.5f}" in out


def test_output_replaces_a_score_report_and_refuses_any_other_file(tmp_path, capsys):
    """--output follows tfrecords_schema.ownership: an earlier score report is replaced; a file
    crewstream did not write is refused with one line, before scoring, and left as it was."""
    y, p = make_case(n=300, seed=3)
    sub_path, truth_path = write_files(tmp_path, y, p)
    report_path = tmp_path / "score.json"
    report_path.write_text('{"log_loss": 9, "accuracy": 0, "macro_f1": 0, "confusion_matrix": [], "rows": 1}\n')
    assert score.main(["--submission", sub_path, "--truth", truth_path, "--output", str(report_path)]) == 0
    written = json.loads(report_path.read_text())
    assert written["log_loss"] == pytest.approx(log_loss(y, kaggle_clip(p), labels=[0, 1, 2, 3]), rel=1e-12)
    for name, content in [("notes.json", '{"log_loss": 1.0}\n'), ("notes.txt", "my notes\n"),
                          ("eval.json", '{"split": "eval", "log_loss": 1.0, "accuracy": 0.5}\n')]:
        other = tmp_path / name
        other.write_text(content)
        capsys.readouterr()
        assert score.main(["--submission", sub_path, "--truth", truth_path, "--output", str(other)]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line == (f"crewstream score: error: --output {other} exists and was not written by crewstream "
                        "(not a JSON object with accuracy, confusion_matrix, log_loss, macro_f1, rows); move it "
                        "or choose another output file")
        assert other.read_text() == content
    assert score.main(["--submission", sub_path, "--truth", truth_path, "--output", truth_path]) == 1
    assert "is the input" in capsys.readouterr().err


def test_the_report_is_written_by_output_only(tmp_path, capsys):
    """--output is the one spelling: any other flag is a usage error, and nothing is written."""
    y, p = make_case(n=100, seed=4)
    sub_path, truth_path = write_files(tmp_path, y, p)
    with pytest.raises(SystemExit) as e:
        score.main(["--submission", sub_path, "--truth", truth_path, "--json", str(tmp_path / "score.json")])
    assert e.value.code == 2 and "unrecognized arguments: --json" in capsys.readouterr().err
    assert not (tmp_path / "score.json").exists()


def test_urls_are_read_and_written_through_gfile(tmp_path, capsys):
    """TensorFlow's in-memory file system (ram://) stands for gs://: the same files, a gzipped truth
    among them, give the same report as on local disk, written back through tf.io.gfile."""
    import gzip

    import tensorflow as tf

    y, p = make_case(n=400, seed=4)
    sub_path, truth_path = write_files(tmp_path, y, p)
    local_json = tmp_path / "score.json"
    assert score.main(["--submission", sub_path, "--truth", truth_path, "--output", str(local_json)]) == 0
    root = f"ram://crewstream-score-{os.getpid()}"
    tf.io.gfile.makedirs(root)
    with open(sub_path, "rb") as f, tf.io.gfile.GFile(f"{root}/sub.csv", "wb") as g:
        g.write(f.read())
    with open(truth_path, "rb") as f, tf.io.gfile.GFile(f"{root}/truth.csv.gz", "wb") as g:
        g.write(gzip.compress(f.read()))
    assert not os.path.exists(f"{root}/sub.csv")  # not a local path in disguise
    assert score.main(["--submission", f"{root}/sub.csv", "--truth", f"{root}/truth.csv.gz",
                       "--output", f"{root}/score.json"]) == 0
    with tf.io.gfile.GFile(f"{root}/score.json") as f:
        assert json.load(f) == json.loads(local_json.read_text())
    with tf.io.gfile.GFile(f"{root}/notes.json", "w") as f:
        f.write("[]")
    assert score.main(["--submission", f"{root}/sub.csv", "--truth", f"{root}/truth.csv.gz",
                       "--output", f"{root}/notes.json"]) == 1
    capsys.readouterr()
    assert score.main(["--submission", f"{root}/missing.csv", "--truth", f"{root}/truth.csv.gz"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"crewstream score: error: submission {root}/missing.csv: not found"]
    # a file system TensorFlow does not know: one line, for an input and for the output
    assert score.main(["--submission", f"{root}/sub.csv", "--truth", "nosuch://b/truth.csv"]) == 1
    assert score.main(["--submission", f"{root}/sub.csv", "--truth", f"{root}/truth.csv.gz",
                       "--output", "nosuch://b/score.json"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "crewstream score: error: truth nosuch://b/truth.csv: File system scheme 'nosuch' not implemented "
        "(file: 'nosuch://b/truth.csv')",
        "crewstream score: error: nosuch://b/score.json: File system scheme 'nosuch' not implemented "
        "(file: 'nosuch://b/score.json')"]
