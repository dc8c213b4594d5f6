"""The preprocess job end to end, against the independent reference in tests/reference.py."""

import argparse
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from beam_jobs import preprocess
from tests import shard_writers
from tests.helpers import SMALL_FEATURES as FEATURES, make_frame, write_crew_csv
from tests.reference import assert_matches_reference, read_output
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import ownership



def run_job(csv, out, *extra):
    return preprocess.run(["--input", csv, "--output", str(out), "--features", ",".join(FEATURES),
                           "--eval-crews", "2", *map(str, extra)])


@pytest.fixture(scope="module")
def gap_frame():
    # Three crews, three experiments, both seats; a 2 s gap inside every recording.
    return make_frame(rows_per_recording=700, gap_at=(300, 2.0), seed=5)


@pytest.mark.parametrize("window, stride, scale", [(64, 16, "zscore"), (32, 50, "minmax")])
def test_windows_scaling_and_stats_equal_reference(tmp_path, gap_frame, window, stride, scale):
    csv = write_crew_csv(tmp_path / "train.csv", gap_frame)
    out = tmp_path / "out"
    stats = run_job(csv, out, "--window", window, "--stride", stride, "--scale", scale, "--num-shards", 3)
    stats = assert_matches_reference(gap_frame, out, window, stride, scale)
    assert stats["splits"]["train"]["crews"] == [1, 3] and stats["splits"]["eval"]["crews"] == [2]
    assert stats["splits"]["train"]["num_rows"] == 2 * 700 * 3 * 2
    assert stats["rejected_rows"] == 0
    assert stats["inputs"] == [{"file": csv, "rows_read": len(gap_frame), "rows_used": len(gap_frame),
                                "rows_rejected": 0}]
    assert sorted(os.listdir(out)) == sorted([ownership.MARKER, "eval", "stats.json", "train", "transform_fn",
                                              "transformed_metadata", "metadata"])  # no val/ without --val-crews
    assert len(os.listdir(out / "train")) == 3
    assert "val" not in stats["splits"]


@pytest.mark.parametrize("layout", ["windows", "sequence"])
def test_val_crews_are_a_third_split_left_out_of_the_scaling(tmp_path, gap_frame, layout):
    """--val-crews 3: crew 3's windows go to val, counted there, and the scaling is the train
    crews' alone (crew 1), as the reference computes it."""
    csv = write_crew_csv(tmp_path / "train.csv", gap_frame)
    out = tmp_path / "out"
    stats = run_job(csv, out, "--window", 64, "--stride", 16, "--num-shards", 2, "--val-crews", 3,
                    "--layout", layout)
    assert [stats["splits"][s]["crews"] for s in ("train", "val", "eval")] == [[1], [3], [2]]
    assert stats["splits"]["val"]["num_rows"] == stats["splits"]["train"]["num_rows"] == 700 * 3 * 2
    assert len(stats["splits"]["val"]["shards"]) == 2 and len(os.listdir(out / "val")) == 2
    assert preprocess.summarize(stats).splitlines()[3].split()[:2] == ["val", "3"]
    from tfrecords_schema import verify

    report = verify.verify(str(out))  # every record's crew belongs to its split, counts agree
    assert report.ok and report.num_shards == 6, report.problems
    if layout == "windows":
        assert_matches_reference(gap_frame, out, 64, 16, val_crews=(3,))
    else:  # the sequence layout counts val's windows as the windows layout does
        windows = run_job(csv, tmp_path / "windows", "--window", 64, "--stride", 16, "--num-shards", 2,
                          "--val-crews", 3)
        for split in ("train", "val", "eval"):
            for key in ("num_windows", "class_counts", "crews", "num_rows"):
                assert stats["splits"][split][key] == windows["splits"][split][key], (split, key)
        assert stats["scaling"] == windows["scaling"]


def test_bad_rows_go_to_rejects_and_good_rows_are_all_kept(tmp_path):
    frame = make_frame(crews=(1, 2), rows_per_recording=300, seed=2)
    csv_path = write_crew_csv(tmp_path / "train.csv", frame)
    lines = open(csv_path).read().splitlines()
    lines[10] = lines[10].rsplit(",", 1)[0] + ",E"  # an unknown label
    lines.insert(20, lines[30])  # a duplicate (crew, seat, experiment, time)
    with open(csv_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = tmp_path / "out"
    stats = run_job(csv_path, out, "--window", 32, "--stride", 8, "--num-shards", 2, "--max-bad-fraction", 0.002)
    assert stats["rejected_rows"] == 2  # 2 of 1,201 rows: under --max-bad-fraction 0.002
    with open(out / "rejects" / "rejects.csv", newline="") as f:
        header, *rejects = list(csv.reader(f))
    assert header == ["file", "line", "column", "reason", "id", "text"]  # predict's columns too
    assert [r[1:3] for r in rejects] == [["11", "event"], ["32", "time"]]
    assert [r[4] for r in rejects] == ["", ""]  # a train file has no id
    total = stats["splits"]["train"]["num_rows"] + stats["splits"]["eval"]["num_rows"]
    assert total == len(frame) - 1  # the label-E row; the duplicate's twin stays
    assert stats["inputs"] == [{"file": csv_path, "rows_read": len(frame) + 1, "rows_used": total,
                                "rows_rejected": 2}]


def test_rerun_with_fewer_shards_leaves_no_stale_shard(tmp_path, gap_frame):
    frame = make_frame(crews=(1, 2), rows_per_recording=200, seed=1)
    csv = write_crew_csv(tmp_path / "train.csv", frame)
    out = tmp_path / "out"
    run_job(csv, out, "--window", 32, "--stride", 32, "--num-shards", 4)
    run_job(csv, out, "--window", 32, "--stride", 32, "--num-shards", 2)
    assert sorted(os.listdir(out / "train")) == ["part-00000-of-00002.tfrecord", "part-00001-of-00002.tfrecord"]
    assert not [name for name in os.listdir(out) if name.startswith(".staging")]
    assert_matches_reference(frame, out, 32, 32)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "beam_jobs.preprocess", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_cli_file_level_errors_are_one_clear_line_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    result = _cli("--input", tmp_path / "nothing*.csv", "--output", out)
    assert result.returncode == 1
    assert "no file matches" in result.stderr and "Traceback" not in result.stderr
    test_layout = tmp_path / "test.csv"
    signals = make_frame(rows_per_recording=1).columns[4:-1]
    test_layout.write_text("id,crew,experiment,time,seat," + ",".join(signals) + "\n")
    result = _cli("--input", test_layout, "--output", out)
    assert result.returncode == 1 and "test file" in result.stderr
    assert not out.exists()
    result = _cli("--input", test_layout, "--output", out, "--features", "r,nope")
    assert result.returncode == 2 and "--features" in result.stderr


@pytest.mark.slow
def test_two_worker_processes_write_byte_identical_shards_and_stats(tmp_path, gap_frame, monkeypatch):
    csv = write_crew_csv(tmp_path / "train.csv", gap_frame)
    run_job(csv, tmp_path / "one", "--window", 64, "--stride", 16, "--num-shards", 3)
    log = tmp_path / "shard_writers"
    log.mkdir()
    for name, value in shard_writers.environment(log).items():  # inherited by Beam's workers
        monkeypatch.setenv(name, value)
    run_job(csv, tmp_path / "two", "--window", 64, "--stride", 16, "--num-shards", 3,
            "--direct_num_workers", 2, "--direct_running_mode", "multi_processing")
    stats1, found1, _ = read_output(str(tmp_path / "one"))
    stats2, found2, _ = read_output(str(tmp_path / "two"))
    assert stats1 == stats2
    # two worker processes (not this one) shared the writing of all the windows
    writers = shard_writers.records_by_process(log)
    assert len(writers) == 2 and os.getpid() not in writers, writers
    assert sum(writers.values()) == len(found2) and min(writers.values()) > 0
    assert found1.keys() == found2.keys()
    for key in found1:
        assert found1[key][:2] == found2[key][:2]
        np.testing.assert_array_equal(found1[key][2], found2[key][2])
    for name in ("stats.json", "metadata/schema.pbtxt", "transformed_metadata/schema.pbtxt"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    for shard in stats1["splits"]["train"]["shards"] + stats1["splits"]["eval"]["shards"]:
        assert (tmp_path / "one" / shard["file"]).read_bytes() == (tmp_path / "two" / shard["file"]).read_bytes()


# Runs that cannot give what was asked fail with one line, publishing nothing.

@pytest.mark.parametrize("flags, line", [
    (["--eval_crews", "2"], "unknown flag --eval_crews: neither crewstream preprocess nor Beam's PipelineOptions "
                            "know it; did you mean --eval-crews?"),
    (["--runnr", "DataflowRunner"], "unknown flag --runnr: neither crewstream preprocess nor Beam's PipelineOptions "
                                    "know it; did you mean --runner?"),
    (["--direct_num_workerz=2"], "unknown flag --direct_num_workerz: neither crewstream preprocess nor Beam's "
                                 "PipelineOptions know it; did you mean --direct_num_workers?"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_a_flag_neither_crewstream_nor_beam_knows_is_refused(tmp_path, capsys, flags, line):
    """Beam would log it and drop it, and the run would go on with defaults."""
    with pytest.raises(SystemExit) as e:
        preprocess.run(["--input", str(tmp_path / "train.csv"), "--output", str(tmp_path / "out"), *flags])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"crewstream preprocess: error: {line}\n"
    assert not (tmp_path / "out").exists()


def test_beam_flags_pass_and_the_cli_refuses_an_unknown_one_before_any_work(tmp_path):
    args, beam_args = preprocess._parse_args(["--input", "a.csv", "--output", "o", "--direct_num_workers", "2",
                                              "--runner=DirectRunner", "--eval-crews", "2"])
    assert beam_args == ["--direct_num_workers", "2", "--runner=DirectRunner"] and args.eval_crews == [2]
    result = _cli("--input", tmp_path / "train.csv", "--output", tmp_path / "out", "--eval_crews", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["crewstream preprocess: error: unknown flag --eval_crews: neither crewstream "
                                          "preprocess nor Beam's PipelineOptions know it; did you mean --eval-crews?"]
    assert not (tmp_path / "out").exists()


def reference_segments(frame, window, max_gap, eval_crews):
    """{split: (segments, segments shorter than window, rows of the longest)}, by pandas: a
    recording's rows sorted by time, a gap over max_gap starting a segment."""
    found = {"train": [], "eval": []}
    for (crew, _, _), rows in frame.groupby([cols.CREW, cols.SEAT, cols.EXPERIMENT]):
        time = np.sort(rows[cols.TIME].to_numpy())
        lengths = [len(part) for part in np.split(time, np.flatnonzero(np.diff(time) > max_gap) + 1)]
        found["eval" if crew in eval_crews else "train"] += lengths
    return {split: (len(n), sum(1 for k in n if k < window), max(n, default=0)) for split, n in found.items()}


@pytest.fixture(scope="module")
def short_head_frame():
    """Two crews; every recording starts with a 10-row segment, then a 2 s gap, then 110 rows."""
    return make_frame(crews=(1, 2), rows_per_recording=120, gap_at=(10, 2.0), seed=3)


def test_segments_shorter_than_the_window_are_counted_and_warned_about(tmp_path, short_head_frame, caplog):
    csv = write_crew_csv(tmp_path / "train.csv", short_head_frame)
    with caplog.at_level("WARNING", logger="crewstream.preprocess"):
        stats = run_job(csv, tmp_path / "out", "--window", 16, "--stride", 2, "--num-shards", 2)
    assert_matches_reference(short_head_frame, tmp_path / "out", 16, 2)
    expected = reference_segments(short_head_frame, 16, 1.0, [2])
    assert expected == {"train": (12, 6, 110), "eval": (12, 6, 110)}
    notes = []
    for split in ("train", "eval"):
        segments, short, _ = expected[split]
        assert (stats["splits"][split]["segments"], stats["splits"][split]["short_segments"]) == (segments, short)
        notes.append(f"{split}: {short} of {segments} time segment(s) are shorter than the window (16 rows) "
                     "and give no window")
    assert [r.getMessage() for r in caplog.records if "time segment" in r.getMessage()] == notes
    assert preprocess.summarize(stats).splitlines()[-2:] == [f"warning: {note}" for note in notes]


@pytest.mark.parametrize("extra, message", [
    (["--window", 100000], "no train windows: all 12 time segment(s) of the train crews are shorter than --window "
                           "100,000 rows (the longest has 110; a time gap over --max-gap 1 s starts a segment); "
                           "nothing was published"),
    (["--window", 16, "--eval-crews", "2,7"], "--eval-crews 2,7: crew 7 has no usable row in the input (crews "
                                              "found: 1, 2); nothing was published"),
    (["--window", 16, "--val-crews", "8"], "--val-crews 8: crew 8 has no usable row in the input (crews "
                                           "found: 1, 2); nothing was published"),
    (["--window", 16, "--val-crews", "1"], "no usable train rows: every row was rejected or belongs to an eval or "
                                           "val crew (--eval-crews 2; --val-crews 1)"),
])
def test_a_run_that_cannot_give_what_was_asked_fails_and_publishes_nothing(tmp_path, short_head_frame, extra, message):
    csv = write_crew_csv(tmp_path / "train.csv", short_head_frame)
    with pytest.raises(preprocess.PreprocessError) as e:
        run_job(csv, tmp_path / "out", "--stride", 2, "--num-shards", 2, *extra)
    assert str(e.value) == message
    assert not (tmp_path / "out").exists()


def _manifest(eval_windows):
    """What check_splits reads of a manifest: one train and one eval recording."""
    return {"block_counts": [{"split": "train", "crew": 1, "num_rows": 50},
                             {"split": "eval", "crew": 2, "num_rows": 20}],
            "shards": [{"split": "train", "num_windows": 3}, {"split": "eval", "num_windows": eval_windows}],
            "segments": [{"split": "train", "segments": 1, "short_segments": 0, "longest_segment": 50},
                         {"split": "eval", "segments": 2, "short_segments": 2 if not eval_windows else 1,
                          "longest_segment": 12}]}


def test_an_eval_split_without_windows_fails_only_when_eval_crews_are_asked_for():
    args = argparse.Namespace(eval_crews=[2], val_crews=[], window=16, max_gap=1.0)
    preprocess.check_splits(_manifest(eval_windows=1), args)
    expected = (r"^no eval windows: all 2 time segment\(s\) of the eval crews are shorter than --window 16 rows "
                r"\(the longest has 12;")
    with pytest.raises(preprocess.PreprocessError, match=expected):
        preprocess.check_splits(_manifest(eval_windows=0), args)
    preprocess.check_splits(_manifest(eval_windows=0),
                            argparse.Namespace(eval_crews=[], val_crews=[], window=16, max_gap=1.0))


def test_a_val_split_without_windows_fails_when_val_crews_are_asked_for():
    manifest = _manifest(eval_windows=1)
    for entry in ("block_counts", "shards", "segments"):  # crew 2's recording as the val split
        manifest[entry] = [{**e, "split": "val"} if e["split"] == "eval" else e for e in manifest[entry]]
    manifest["shards"][1]["num_windows"] = 0
    with pytest.raises(preprocess.PreprocessError, match=r"^no val windows: all 2 time segment\(s\) of the val crews"):
        preprocess.check_splits(manifest, argparse.Namespace(eval_crews=[], val_crews=[2], window=16, max_gap=1.0))


def test_a_crew_in_both_eval_and_val_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        preprocess.run(["--input", str(tmp_path / "x.csv"), "--output", str(tmp_path / "out"),
                        "--eval-crews", "2,3", "--val-crews", "3,4"])
    assert e.value.code == 2
    assert "crew 3 is in both --eval-crews and --val-crews" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
