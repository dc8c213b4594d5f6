"""beam_jobs.live: each row's probabilities as the row arrives, equal to the batch predict's.

The reference is the batch job itself (`crewstream predict` on the whole file, the real tcn), whose
windows tests/beam_jobs/test_predict.py checks against an independent pandas rebuild. The live
job reads the same file replayed as recorders would deliver it (live_sources.recorded_deliveries:
rows in time order, in deliveries of a second; shuffled within the delay bound) through Beam's
TestStream, or, end to end, files landing in a folder while `crewstream live` runs.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from beam_jobs import blocks, live, live_sources, live_state, predict
from beam_jobs.live_steps import Delivery, format_lines, parse_delivery, Predicted
from tfrecords_schema import live as live_output

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = ["A", "B", "C", "D"]


# --- the state of one recording, in plain numpy -------------------------------------------------

def _rows(times, first_id=0, source=0, line0=2, features=2):
    times = np.asarray(times, np.float64)
    n = len(times)
    ids = first_id + np.arange(n)
    signals = np.stack([ids * 1.0, -ids * 2.0], axis=1)[:, :features].astype(np.float32)
    return blocks.RecordingRows(times, signals, np.full(n, -1, np.int8), line0 + np.arange(n),
                                np.full(n, source, np.int32), ids.astype(np.int64))


def test_a_row_is_final_once_a_row_more_than_the_delay_later_has_arrived():
    state = live_state.RecordingState()
    late, _ = live_state.admit(state, _rows([0.0, 0.5, 1.0]), max_delay=1.0)
    assert not len(late)
    rows, padded = live_state.take_final(state, window=3, max_delay=1.0)
    assert rows is None and state.pending_rows() == 3  # 1.0 - 1.0 = 0: nothing lies before 0
    live_state.admit(state, _rows([1.6, 1.2], first_id=3, line0=5), max_delay=1.0)
    rows, padded = live_state.take_final(state, window=3, max_delay=1.0)
    np.testing.assert_array_equal(rows.time, [0.0, 0.5])  # before 1.6 - 1.0
    np.testing.assert_array_equal(padded[:, 0], [0, 0, 0, 1])  # the first row repeated in front
    rows, padded = live_state.take_final(state, window=3, max_delay=1.0, flush=True)
    np.testing.assert_array_equal(rows.time, [1.0, 1.2, 1.6])  # time order, not arrival order
    np.testing.assert_array_equal(padded[:, 0], [0, 1, 2, 4, 3])  # the W-1 rows before them first
    assert state.pending is None and state.context.shape == (2, 2)


def test_rows_behind_the_watermark_or_after_a_flush_are_refused_with_a_reason():
    state = live_state.RecordingState()
    live_state.admit(state, _rows([5.0, 6.0]), max_delay=2.0)
    late, codes = live_state.admit(state, _rows([3.9, 4.0, 3.0], first_id=10), max_delay=2.0)
    np.testing.assert_array_equal(late.time, [3.9, 3.0])  # 4.0 is exactly at the bound: still in time
    assert list(codes) == [live_state.LATE_BEHIND] * 2
    assert "--max-delay 2 s" in live_state.late_reason(codes[0], 2.0)
    live_state.take_final(state, window=2, max_delay=2.0, flush=True)
    late, codes = live_state.admit(state, _rows([5.5, 7.0], first_id=20), max_delay=2.0)
    np.testing.assert_array_equal(late.time, [5.5])
    assert list(codes) == [live_state.LATE_FLUSHED]


def test_memory_per_recording_is_bounded_by_the_delay_whatever_the_length():
    """A long recording fed in order a second at a time: the rows held never exceed W-1 plus the
    rows of the delay and of one delivery."""
    state, rate, delay, window = live_state.RecordingState(), 256, 1.5, 64
    held = []
    for second in range(200):
        times = second + np.arange(rate) / rate
        live_state.admit(state, _rows(times, first_id=second * rate), delay)
        live_state.take_final(state, window, delay)
        held.append(state.pending_rows() + (0 if state.context is None else len(state.context)))
    assert max(held) <= window - 1 + int((delay + 1) * rate) + 1
    assert max(held[100:]) == max(held[:100])  # flat, not growing with the length


def test_a_delivery_is_read_like_a_batch_span_and_keeps_its_replayed_lines():
    header = ("id", "crew", "experiment", "time", "seat", "r")
    data = b"7,1,LOFT,0.5,0,1.5\n8,1,LOFT,x,0,2.5\n9,2,LOFT,0.25,1,3.5\n"
    per_recording, rejects = parse_delivery(Delivery("f.csv", 4, 2, header, data, np.array([40, 10, 30])), ["r"])
    assert [key for key, _ in per_recording] == [(1, 0, "LOFT"), (2, 1, "LOFT")]
    assert per_recording[0][1].line.tolist() == [40] and per_recording[1][1].source.tolist() == [4]
    assert [(r.file, r.line, r.column, r.id) for r in rejects] == [("f.csv", 10, "time", 8)]
    bad_header = parse_delivery(Delivery("g.csv", 0, 2, ("id", "crew"), b"1,2\n3,4\n"), ["r"])
    assert [(r.line, "missing column" in r.reason) for r in bad_header[1]] == [(2, True), (3, True)]


def test_output_lines_carry_the_submission_columns_and_where_the_row_belongs():
    lines = format_lines([Predicted((3, 1, "LOFT"), np.array([5, 6]), np.array([[0.5, 0.25, 0.125, 0.125]] * 2,
                                                                                np.float32), np.array([1.5, 2.0])),
                          Predicted(None, np.array([9]), np.full((1, 4), 0.25, np.float32), np.array([np.nan]))])
    assert lines.decode().splitlines() == ["5,0.5,0.25,0.125,0.125,3,1,LOFT,1.5",
                                           "6,0.5,0.25,0.125,0.125,3,1,LOFT,2", "9,0.25,0.25,0.25,0.25,,,,"]
    assert live_output.COLUMNS[:5] == ("id", "A", "B", "C", "D")


# --- the job: equal to the batch predict --------------------------------------------------------

@pytest.fixture(scope="module")
def batch(tmp_path_factory, exported_tcn, sample_dir):
    """The batch submission of the sample's test file (the tcn, one pass), as a DataFrame."""
    out = tmp_path_factory.mktemp("live_batch") / "submission.csv"
    predict.run(["--model-dir", str(exported_tcn.model_dir), "--input", str(sample_dir / "test.csv"),
                 "--output", str(out), "--progress", "none"])
    return pd.read_csv(out)


def replay(model_dir, deliveries, out, max_delay=1.0):
    """(counts, every output row, every reject row) of the live job over `deliveries` (a TestStream)."""
    inbox = out.parent / (out.name + "-in")
    inbox.mkdir(exist_ok=True)
    counts = live.run(["--model-dir", str(model_dir), "--input-folder", str(inbox), "--output", str(out),
                       "--max-delay", str(max_delay)], events=live_sources.replay_events(deliveries))
    return (counts,) + read_live(out)


def read_live(out):
    def read(prefix, dtype=None):
        files = sorted(p for p in os.listdir(out) if p.startswith(prefix))
        frames = [pd.read_csv(os.path.join(out, p), dtype=dtype, keep_default_na=False) for p in files]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    return read(live_output.PART_PREFIX), read(live_output.REJECTS_PREFIX, dtype=str)


def assert_equal_to_batch(got, batch):
    assert got.id.is_unique and len(got) == len(batch)
    joined = batch.merge(got, on="id", suffixes=("", "_live"), validate="one_to_one")
    assert len(joined) == len(batch)
    np.testing.assert_allclose(joined[[c + "_live" for c in COLUMNS]].to_numpy(), joined[COLUMNS].to_numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("delay", [0.0, 0.9])
def test_a_replayed_file_gives_every_id_once_with_the_batch_probabilities(tmp_path, exported_tcn, sample_dir,
                                                                          batch, delay):
    """In order, and shuffled within the bound (each row up to 0.9 s late, --max-delay 1)."""
    deliveries = live_sources.recorded_deliveries(str(sample_dir / "test.csv"), 1.0, delay, seed=3)
    if delay:
        assert any((np.diff(d.lines) < 0).any() for d in deliveries)  # really out of file order
    counts, got, rejected = replay(exported_tcn.model_dir, deliveries, tmp_path / "live")
    assert rejected.empty and counts["rejects"] == 0 and counts["rows"] == len(batch)
    assert_equal_to_batch(got, batch)
    # where each row belongs: its recording and time, as in the file
    test = pd.read_csv(sample_dir / "test.csv")
    where = got.merge(test, on="id", suffixes=("", "_file"))
    for column in ("crew", "seat", "experiment", "time"):
        assert (where[column].astype(str) == where[column + "_file"].astype(str)).all() or column == "time"
    np.testing.assert_array_equal(where.time.astype(float), where.time_file)


def test_rows_later_than_the_delay_are_rejected_and_the_rest_equal_the_batch(tmp_path, exported_tcn, sample_dir,
                                                                            batch):
    """Rows up to 3 s late against --max-delay 1: the late ones are rejected (never dropped in
    silence) and get the uniform row; every other row has the probabilities of a batch run over the
    file without the late rows."""
    deliveries = live_sources.recorded_deliveries(str(sample_dir / "test.csv"), 1.0, 3.0, seed=5)
    counts, got, rejected = replay(exported_tcn.model_dir, deliveries, tmp_path / "live")
    assert len(rejected) > 0 and counts["rejects"] == len(rejected)
    assert set(rejected.column) == {"time"} and rejected.reason.str.contains("--max-delay 1 s").all()
    assert got.id.is_unique and set(got.id) == set(batch.id)
    late = got[got.id.isin(rejected.id.astype(int))]
    np.testing.assert_allclose(late[COLUMNS].to_numpy(), 0.25)
    # the reference: the batch job on the file without the late lines
    lines = (sample_dir / "test.csv").read_text().splitlines(keepends=True)
    dropped = set(rejected.line.astype(int))
    kept = tmp_path / "kept.csv"
    kept.write_text("".join(line for no, line in enumerate(lines, 1) if no not in dropped))
    predict.run(["--model-dir", str(exported_tcn.model_dir), "--input", str(kept), "--output",
                 str(tmp_path / "kept_sub.csv"), "--progress", "none"])
    assert_equal_to_batch(got[~got.id.isin(late.id)], pd.read_csv(tmp_path / "kept_sub.csv"))


def test_bad_rows_are_rejected_as_the_batch_job_rejects_them(tmp_path, exported_tcn, sample_dir):
    lines = (sample_dir / "test.csv").read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    for no, column, value in ((40, "r", "abc"), (900, "time", "nan"), (2000, "id", "x7"), (3000, "seat", "3")):
        cells = lines[no - 1].rstrip("\n").split(",")
        cells[header.index(column)] = value
        lines[no - 1] = ",".join(cells) + "\n"
    bad = tmp_path / "test.csv"
    bad.write_text("".join(lines))
    predict.run(["--model-dir", str(exported_tcn.model_dir), "--input", str(bad), "--output",
                 str(tmp_path / "sub.csv"), "--progress", "none"])
    want_rejects = pd.read_csv(tmp_path / "sub.rejects.csv", dtype=str, keep_default_na=False)
    deliveries = live_sources.recorded_deliveries(str(bad))
    counts, got, rejected = replay(exported_tcn.model_dir, deliveries, tmp_path / "live")
    key = ["file", "line", "column", "reason", "id"]
    assert len(want_rejects) == 4
    pd.testing.assert_frame_equal(rejected[key].sort_values("line").reset_index(drop=True),
                                  want_rejects[key].sort_values("line").reset_index(drop=True))
    assert_equal_to_batch(got, pd.read_csv(tmp_path / "sub.csv"))  # uniform rows of readable ids included


def test_a_recording_that_starts_mid_stream_equals_the_batch(tmp_path, exported_tcn, sample_dir, batch):
    """Crew 3 joins 12 s after the others: its rows' own times start at 0 all the same."""
    test = pd.read_csv(sample_dir / "test.csv")
    early, late = tmp_path / "early.csv", tmp_path / "late.csv"
    test[test.crew != 3].to_csv(early, index=False)
    test[test.crew == 3].to_csv(late, index=False)
    first = live_sources.recorded_deliveries(str(early), 1.0, 0.5, seed=1)
    joined = live_sources.recorded_deliveries(str(late), 1.0, 0.5, seed=2)
    joined = [d._replace(source=1) for d in joined]
    deliveries = first[:12] + [d for pair in zip(first[12:], joined) for d in pair] + joined[len(first) - 12:]
    assert len(deliveries) == len(first) + len(joined)
    counts, got, rejected = replay(exported_tcn.model_dir, deliveries, tmp_path / "live")
    assert rejected.empty
    assert_equal_to_batch(got, batch)


def test_the_windows_path_equals_the_batch_too(tmp_path, exported_tcn, sample_dir, batch):
    deliveries = live_sources.recorded_deliveries(str(sample_dir / "test.csv"), 2.0, 0.5, seed=4)
    out = tmp_path / "live"
    (tmp_path / "in").mkdir()
    live.run(["--model-dir", str(exported_tcn.model_dir), "--input-folder", str(tmp_path / "in"), "--output",
              str(out), "--path", "windows"], events=live_sources.replay_events(deliveries))
    assert_equal_to_batch(read_live(out)[0], batch)


# --- end to end: files landing in a folder while `crewstream live` runs ---------------------------

def _command(*args):
    return [sys.executable, "-m", "crewstream.cli", "live", *map(str, args)]


def test_files_landing_in_a_folder_are_followed_until_it_goes_quiet(tmp_path, exported_tcn, sample_dir, batch):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "notes.txt").write_text("not a csv: ignored\n")
    process = subprocess.Popen(_command("--model-dir", exported_tcn.model_dir, "--input-folder", inbox,
                                        "--output", out, "--max-delay", 1, "--stop-after-idle", 4),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i, d in enumerate(live_sources.recorded_deliveries(str(sample_dir / "test.csv"), 1.0, 0.0)):
            hidden = inbox / f".{i:04d}.csv.part"  # a recorder writes under another name, then renames
            hidden.write_bytes((",".join(d.header) + "\n").encode() + d.data)
            os.rename(hidden, inbox / f"{i:04d}.csv")
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "read 30 file(s)" in stdout and f"wrote {len(batch):,} rows" in stdout
    got, rejected = read_live(out)
    assert rejected.empty
    assert_equal_to_batch(got, batch)
    assert not [n for n in os.listdir(out) if n.startswith(".") and n not in (".crewstream.json",)]
    ticks = [live_output.parse_name(n)[2] for n in os.listdir(out) if live_output.parse_name(n)]
    assert len(ticks) > 1 and len(set(ticks)) == len(ticks)  # no two files of the run share a tick
    # another run into the same output adds its files beside the first run's
    before = set(os.listdir(out))
    subprocess.run(_command("--model-dir", exported_tcn.model_dir, "--input-folder", inbox, "--output", out,
                            "--stop-after-idle", 0.5), cwd=REPO, check=True, capture_output=True)
    assert before < set(os.listdir(out))


def test_usage_errors_and_refusals_are_one_line(tmp_path, exported_tcn):
    inbox = tmp_path / "in"
    inbox.mkdir()
    cases = [
        (["--model-dir", exported_tcn.model_dir, "--input-folder", inbox], 2, "--input-folder needs --output"),
        (["--model-dir", exported_tcn.model_dir, "--input-folder", inbox, "--output", inbox / "out"], 1,
         "must not hold one another"),
        (["--model-dir", exported_tcn.model_dir, "--input-folder", tmp_path / "nope", "--output", tmp_path / "o"], 1,
         "not found"),
        (["--model-dir", exported_tcn.model_dir, "--input-subscription", "projects/my-project/subscriptions/s"], 2,
         "needs --output-topic"),
        (["--model-dir", exported_tcn.model_dir, "--input-folder", inbox, "--output", tmp_path / "o",
          "--max-delay", "-1"], 2, "--max-delay"),
    ]
    for args, code, text in cases:
        done = subprocess.run(_command(*args), cwd=REPO, capture_output=True, text=True)
        assert done.returncode == code, (args, done.stderr)
        assert text in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr
    # an output folder that is not a live output is never written into
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    done = subprocess.run(_command("--model-dir", exported_tcn.model_dir, "--input-folder", inbox, "--output", other,
                                   "--stop-after-idle", 0), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and "not empty" in done.stderr
    assert os.listdir(other) == ["mine.txt"]


def test_an_interrupted_run_exits_130_and_keeps_what_it_wrote_and_a_second_run_is_refused(
        tmp_path, exported_tcn, sample_dir):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    deliveries = live_sources.recorded_deliveries(str(sample_dir / "test.csv"), 1.0, 0.0)
    for i, d in enumerate(deliveries[:5]):
        (inbox / f"{i:04d}.csv").write_bytes((",".join(d.header) + "\n").encode() + d.data)
    process = subprocess.Popen(_command("--model-dir", exported_tcn.model_dir, "--input-folder", inbox,
                                        "--output", out), cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not [n for n in os.listdir(out) if n.startswith("part-")] if out.exists() \
            else time.time() < deadline:
        time.sleep(0.2)
    # a second run into the same output while the first runs: refused in one line
    second = subprocess.run(_command("--model-dir", exported_tcn.model_dir, "--input-folder", inbox, "--output", out,
                                     "--stop-after-idle", 0), cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 1
    assert f"is in use by another crewstream run (process {process.pid} on " in second.stderr.strip().splitlines()[-1]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "crewstream live: interrupted (SIGINT)"
    got, _ = read_live(out)
    assert len(got) > 0 and got.id.is_unique
    assert not [n for n in os.listdir(out) if n.startswith(".") and n not in (".crewstream.json",)]
    assert not (out / ".crewstream.lock").exists()


def test_the_dataflow_pipeline_builds_with_pubsub_source_and_sinks(exported_tcn):
    """Not run here (no Pub/Sub): the graph is built and the local runner refused with one line."""
    import apache_beam as beam

    from tfrecords_schema import serving

    config = serving.read_config(exported_tcn.model_dir)
    params = live.params_for(str(exported_tcn.model_dir), config, "sweep", 1.0, 1024)
    pipeline = beam.Pipeline()
    live.build_pipeline(pipeline, live.pubsub_source("projects/my-project/subscriptions/s"), params,
                        live.pubsub_sink("projects/my-project/topics/out", "projects/my-project/topics/rejects"))
    labels = {t.full_label for t in pipeline.transforms_stack[0].parts}
    assert {"Read", "Parse", "Follow", "Gather", "Write"} <= labels
    with pytest.raises(live.LiveError, match="runs on Dataflow"):
        live.run(["--model-dir", str(exported_tcn.model_dir),
                  "--input-subscription", "projects/my-project/subscriptions/s",
                  "--output-topic", "projects/my-project/topics/o", "--rejects-topic", "projects/my-project/topics/r"])


def test_the_folder_source_reads_landed_files_once_in_spans_a_grpc_message_can_carry(tmp_path, sample_dir, caplog):
    """Each delivery travels to the runner as one gRPC message (at most 4 MiB): a big file is cut
    into spans of FOLDER_SPAN_BYTES (to the end of a line), every line once, lines numbered as
    in the file; hidden and non-CSV names are not read; the stream ends once the folder is quiet."""
    text = (sample_dir / "test.csv").read_bytes()
    header, body = text.split(b"\n", 1)
    big = header + b"\n" + body * 3  # about 3 x 4.6 MB
    (tmp_path / "b.csv").write_bytes(big)
    (tmp_path / "a.csv").write_bytes(text)
    (tmp_path / ".c.csv").write_bytes(b"being written")
    (tmp_path / "d.csv.part").write_bytes(b"being written")
    (tmp_path / "e.csv").mkdir()  # not a file: warned about, not read
    reader = live_sources.FolderEvents(str(tmp_path), stop_after_idle=0.3, span_bytes=64 << 20)
    deliveries = [d for d in reader.deliveries() if d is not None]
    assert reader.files_read == ["a.csv", "b.csv", "e.csv"]
    assert any("e.csv: not read" in r.getMessage() for r in caplog.records)
    longest = max(len(line) + 1 for line in big.split(b"\n"))
    assert max(len(d.data) for d in deliveries) <= live_sources.FOLDER_SPAN_BYTES + longest  # whole lines
    for source, content in ((0, text), (1, big)):
        mine = [d for d in deliveries if d.source == source]
        assert b"".join(d.data for d in mine) == content.split(b"\n", 1)[1]
        lines = [d.first_line for d in mine]
        assert lines[0] == 2 and all(b - a == d.data.count(b"\n") for a, b, d in zip(lines, lines[1:], mine))
        assert {d.name for d in mine} == {str(tmp_path / ("a.csv" if source == 0 else "b.csv"))}


def test_a_recording_that_goes_quiet_has_its_waiting_rows_predicted_and_goes_on_after_the_pause(
        tmp_path, exported_tcn, sample_dir, batch):
    """Deliveries stamped with their arrival second and the watermark following it: crew 3 sends
    nothing from second 10 to 19, then the rest of its flight. With --quiet-seconds 3 its waiting
    rows are predicted during the pause: a row of it that arrives then, earlier than them, is
    rejected as late (it would have been taken without the pause); every other row equals the batch."""
    from apache_beam.coders import PickleCoder
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    test = pd.read_csv(sample_dir / "test.csv")
    early, c3 = tmp_path / "early.csv", tmp_path / "c3.csv"
    test[test.crew != 3].to_csv(early, index=False)
    test[test.crew == 3].to_csv(c3, index=False)
    others = live_sources.recorded_deliveries(str(early), 1.0)
    crew3 = [d._replace(source=1) for d in live_sources.recorded_deliveries(str(c3), 1.0)]
    row = test[(test.crew == 3) & (test.seat == 0) & (test.time > 9.4) & (test.time < 9.9)].iloc[0].copy()
    row["id"] = 999_999_999
    late = Delivery("late.csv", 2, 2, tuple(test.columns), (",".join(map(str, row.tolist())) + "\n").encode())
    arrivals = [(i, d) for i, d in enumerate(others)] + [(i if i < 10 else i + 10, d) for i, d in enumerate(crew3)]
    arrivals.append((15, late))
    stream = TestStream(coder=PickleCoder())
    for second in sorted({a for a, _ in arrivals}):
        stream = stream.advance_watermark_to(second).add_elements(
            [TimestampedValue(d, second) for a, d in arrivals if a == second])
    stream = stream.advance_watermark_to_infinity()
    out, inbox = tmp_path / "live", tmp_path / "in"
    inbox.mkdir()
    live.run(["--model-dir", str(exported_tcn.model_dir), "--input-folder", str(inbox), "--output", str(out),
              "--max-delay", "1", "--quiet-seconds", "3"], events=stream)
    got, rejected = read_live(out)
    assert rejected.id.astype(int).tolist() == [999_999_999]
    assert "were predicted" in rejected.reason[0]
    assert_equal_to_batch(got[got.id != 999_999_999], batch)


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path, exported_tcn, sample_dir):
    from tests.test_failures import mounted

    inbox = tmp_path / "in"
    inbox.mkdir()
    for i, d in enumerate(live_sources.recorded_deliveries(str(sample_dir / "test.csv"), 1.0)):
        (inbox / f"{i:04d}.csv").write_bytes((",".join(d.header) + "\n").encode() + d.data)
    with mounted(tmp_path / "small", "size=1m") as small:
        out = os.path.join(small, "out")
        done = subprocess.run(_command("--model-dir", exported_tcn.model_dir, "--input-folder", inbox, "--output", out,
                                       "--stop-after-idle", 1), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"crewstream live: error: no space left on device while writing --output {out}")
        names = os.listdir(out)
        assert any(n.startswith("part-") for n in names)  # what it wrote before the disk filled stays
        assert not [n for n in names if n.startswith(".") and n != ".crewstream.json"]
