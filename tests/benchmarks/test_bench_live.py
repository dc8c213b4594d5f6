"""The live benchmark's figures must mean what its report says, or its latencies mean nothing.

- When a row becomes final (benchmarks/bench_live.py's final_at) is the moment the job's own rule
  (beam_jobs/live_state.py: time < latest - max_delay) makes it final, on a hand-made example and
  against live_state itself replaying the same files; rows no later row makes final are "flushed".
- Latencies, percentiles, the backlog's growth, the id check and the output reader, on small
  hand-made inputs.
- The feeder writes each file under a hidden name and renames it into place, in order, warm-up
  files first until the job is ready.
No live job runs here and nothing is timed.
"""

import os

import numpy as np
import pytest

from beam_jobs import live_state
from beam_jobs.blocks import RecordingRows
from beam_jobs.live_sources import recorded_deliveries
from beam_jobs.live_steps import Delivery
from benchmarks import bench_live as bench
from tfrecords_schema import live as live_output

NAN = float("nan")


def test_a_row_is_final_at_the_first_file_bringing_a_row_more_than_the_delay_later():
    landed = np.array([100.0, 101.0, 102.0])
    #                 recording 0: files 0, 0, 1, 1, 2, 2; recording 1: files 0, 2; recording 2: 0, 2
    recording = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    times = np.array([0.0, 0.5, 1.0, 1.6, 2.0, 2.5, 0.0, 1.0, 0.0, 1.25])
    files = np.array([0, 0, 1, 1, 2, 2, 0, 2, 0, 2])
    found = bench.final_at(recording, times, files, landed, max_delay=1.0)
    # recording 0: latest after each file 0.5, 1.6, 2.5; less the delay -0.5, 0.6, 1.5
    np.testing.assert_array_equal(found[:6], [101.0, 101.0, 102.0, NAN, NAN, NAN])
    # recording 1: 1.0 is not MORE than 1 s after 0.0 (the job's test is strict): flushed at the end
    np.testing.assert_array_equal(found[6:8], [NAN, NAN])
    # recording 2 has no row in file 1: its first row is final when file 2 lands
    np.testing.assert_array_equal(found[8:], [102.0, NAN])


def test_final_at_agrees_with_the_job_s_own_state_replaying_the_files():
    rng = np.random.default_rng(3)
    max_delay, files = 0.75, 6
    recording = np.repeat([0, 1], 40)
    times = np.concatenate([np.sort(rng.uniform(0, files, 40)), np.sort(rng.uniform(2, files, 40))])
    times[5] = times[4]  # equal times, and times exactly on a file edge, too
    times[12] = 3.0
    file_of_row = np.minimum(times.astype(np.int64), files - 1)
    landed = 1000.0 + np.arange(files)
    found = bench.final_at(recording, times, file_of_row, landed, max_delay)

    expected = np.full(len(times), NAN)
    for r in (0, 1):
        state = live_state.RecordingState()
        for k in range(files):
            rows = np.flatnonzero((recording == r) & (file_of_row == k))
            if len(rows):
                late, _ = live_state.admit(state, RecordingRows(
                    time=times[rows], signals=np.zeros((len(rows), 1), np.float32),
                    label=np.full(len(rows), -1, np.int8), line=rows.astype(np.int64) + 2,
                    source=np.full(len(rows), k, np.int32), id=rows.astype(np.int64)), max_delay)
                assert len(late) == 0
            final, _ = live_state.take_final(state, window=2, max_delay=max_delay)
            if final is not None:
                expected[final.id] = landed[k]
    assert np.isnan(found).sum() > 0 and (~np.isnan(found)).sum() > 40  # both kinds present
    np.testing.assert_array_equal(found, expected)


def test_latencies_are_written_less_final_and_flushed_rows_count_from_the_end():
    ids = np.array([10, 11, 12, 13])
    final = np.array([100.0, 101.0, NAN, NAN])
    out_ids = np.array([13, 10, 11, 12, bench.WARMUP_ID_BASE + 1])  # a warm-up row: left out
    written = np.array([106.0, 100.25, 101.75, 105.5, 99.0])
    found = bench.row_latencies(out_ids, written, ids, final, flushed_from=105.0)
    np.testing.assert_allclose(found["latency"], [0.25, 0.75])
    np.testing.assert_allclose(found["final"], [100.0, 101.0])
    np.testing.assert_allclose(found["flushed"], [1.0, 0.5])


def test_percentiles_interpolate_and_an_empty_run_has_none():
    assert bench.latency_stats(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx({"p50": 2.5, "p99": 3.97, "max": 4.0})
    assert bench.latency_stats(np.arange(101.0)) == pytest.approx({"p50": 50.0, "p99": 99.0, "max": 100.0})
    assert all(np.isnan(v) for v in bench.latency_stats(np.array([])).values())


def test_a_growing_latency_is_a_backlog():
    final = np.arange(9.0)  # quarters: final <= 2 and final >= 6
    assert bench.backlog_growth(final, np.full(9, 0.3)) == pytest.approx(0.0)
    assert bench.backlog_growth(final, 0.1 * final) == pytest.approx(0.6)  # medians 0.7 - 0.1
    assert np.isnan(bench.backlog_growth(final[:1], final[:1]))
    assert bench.kept_up({"p99": 0.9}, 0.1)
    assert not bench.kept_up({"p99": 0.9}, 0.6)  # under 1 s so far, but falling behind
    assert not bench.kept_up({"p99": 1.1}, 0.0)
    assert not bench.kept_up({"p99": NAN}, NAN)
    runs = [{"crews": 1, "kept_up": True}, {"crews": 2, "kept_up": False}, {"crews": 4, "kept_up": True}, {"crews": 8}]
    assert bench.most_followed(runs) == 4 and bench.most_followed(runs[1:2]) is None


def test_every_id_once():
    expected, warm = np.array([0, 1, 2, 3]), np.array([bench.WARMUP_ID_BASE, bench.WARMUP_ID_BASE + 1])
    good = bench.check_ids(np.array([3, bench.WARMUP_ID_BASE, 2, 1, bench.WARMUP_ID_BASE + 1, 0]), expected, warm)
    assert good == {"rows": 4, "expected": 4, "missing": 0, "duplicates": 0, "unexpected": 0}
    assert bench.ids_ok(good) and bench.ids_text(good, 0) == "4 once each"
    bad = bench.check_ids(np.array([0, 1, 1, 3, 7, bench.WARMUP_ID_BASE]), expected, warm)
    assert bad == {"rows": 4, "expected": 4, "missing": 2, "duplicates": 1, "unexpected": 1}
    assert not bench.ids_ok(bad)
    assert bench.ids_text(bad, 2) == "4 of 4; 2 missing; 1 duplicates; 1 unexpected; 2 rejected"


def test_the_output_reader_takes_part_files_with_their_mtime(tmp_path):
    header = ",".join(live_output.COLUMNS) + "\n"
    for tick, (at, ids) in enumerate([(1000.5, [3, 1]), (1002.0, [2])]):
        path = tmp_path / live_output.part_name(int(at * 1000), tick)
        path.write_text(header + "".join(f"{i},0.25,0.25,0.25,0.25,1,0,LOFT,{i}.0\n" for i in ids))
        os.utime(path, (at, at))
    (tmp_path / live_output.part_name(1003000, 2, rejects=True)).write_text("file,line,column,reason,id,text\n"
                                                                            "a.csv,2,time,late,9,\na.csv,3,,x,,\n")
    (tmp_path / ("." + live_output.part_name(1004000, 3))).write_text(header + "8,0,0,0,1,1,0,LOFT,0\n")
    (tmp_path / ".crewstream.json").write_text("{}")
    found = bench.read_output(tmp_path)
    np.testing.assert_array_equal(found["ids"], [3, 1, 2])
    np.testing.assert_allclose(found["written"], [1000.5, 1000.5, 1002.0])
    assert (found["parts"], found["rejects"], found["first"]) == (2, 2, 1000.5)
    assert bench.read_output(tmp_path / "absent")["first"] is None


def test_the_feeder_renames_each_file_into_place_in_order(tmp_path):
    bodies = [b"h\n1\n", b"h\n2\n", b"h\n3\n"]
    feeder = bench.Feeder(tmp_path, bodies, period=0.0)
    feeder.run()  # synchronously
    assert feeder.error is None and feeder.names == ["000000.csv", "000001.csv", "000002.csv"]
    assert sorted(os.listdir(tmp_path)) == feeder.names  # no hidden file left
    assert [(tmp_path / n).read_bytes() for n in feeder.names] == bodies
    assert feeder.landed == sorted(feeder.landed) and feeder.finished.is_set()


def test_warm_up_files_land_until_the_job_is_ready(tmp_path):
    probes = []

    def ready():  # ready once two files are in the folder
        return len([n for n in os.listdir(tmp_path) if n.endswith(".csv")]) >= 2

    feeder = bench.Feeder(tmp_path, [b"m0\n", b"m1\n"], 0.0, warmup=[b"w0\n", b"w1\n", b"w2\n"], ready=ready,
                          probe=lambda: probes.append(1) or len(probes))
    feeder.run()
    assert feeder.error is None and feeder.warmup_landed == 2 and feeder.ready_at is not None
    assert feeder.names == ["000002.csv", "000003.csv"]
    assert [(tmp_path / f"00000{i}.csv").read_bytes() for i in range(4)] == [b"w0\n", b"w1\n", b"m0\n", b"m1\n"]
    assert feeder.probed["start"][1] == 1 and feeder.probed["end"][1] == 2

    never = bench.Feeder(tmp_path / "x", [b"m\n"], 0.0, warmup=[b"w\n"], ready=lambda: False)
    (tmp_path / "x").mkdir()
    never.run()
    assert never.error == "not ready after 1 warm-up files" and never.landed == []


def test_a_stopped_feeder_lands_nothing_more(tmp_path):
    feeder = bench.Feeder(tmp_path, [b"a\n", b"b\n"], period=3600.0)
    feeder.start()
    while not feeder.landed:  # the first file lands at once, the next an hour later
        feeder.join(0.01)
    feeder.stop()
    feeder.join(10)
    assert not feeder.is_alive() and feeder.names == ["000000.csv"] and os.listdir(tmp_path) == ["000000.csv"]


def test_warm_up_rows_get_ids_of_their_own():
    delivery = Delivery("w.csv", 0, 2, ("crew", "id", "time"), b"1000,0,0.0\n1000,1,0.0\n")
    body, ids = bench.relabel(delivery, bench.WARMUP_ID_BASE)
    assert body == b"crew,id,time\n1000,1000000000,0.0\n1000,1000000001,0.0\n"
    np.testing.assert_array_equal(ids, [bench.WARMUP_ID_BASE, bench.WARMUP_ID_BASE + 1])


def test_rows_are_mapped_to_the_files_of_their_second(tmp_path):
    # two recordings of 3 s at 4 rows/s, interleaved in the file as synth writes a test file
    lines = ["id,crew,seat,experiment,time"]
    for i in range(12):
        for seat in (0, 1):
            lines.append(f"{len(lines) - 1},1,{seat},LOFT,{i / 4:.8f}")
    csv = tmp_path / "test.csv"
    csv.write_text("\n".join(lines) + "\n")
    deliveries = recorded_deliveries(str(csv), 1.0, 0.0)
    assert len(deliveries) == 3
    rows = bench.row_table(csv, deliveries)
    np.testing.assert_array_equal(rows["id"], np.arange(24))
    np.testing.assert_array_equal(rows["file"], np.floor(rows["time"]).astype(int))
    np.testing.assert_array_equal(rows["recording"], np.tile([0, 1], 12))
    assert bench.file_bodies(deliveries)[0].startswith(b"id,crew,seat,experiment,time\n0,1,0,LOFT,0.00000000\n")
    final = bench.final_at(rows["recording"], rows["time"], rows["file"], np.array([10.0, 11.0, 12.0]), 1.0)
    # D = 1: second 0's rows final when second 1 brings 1.75 (all but 0.75), the rest at 12 or flushed
    expected = np.where(rows["time"] < 0.75, 11.0, np.where(rows["time"] < 1.75, 12.0, NAN))
    np.testing.assert_array_equal(final, expected)
