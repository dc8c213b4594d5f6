"""Bounded groups (`--block-rows`): a recording cut into time blocks gives exactly the windows,
shards and stats.json of the unblocked job.

The data is built so that with --block-rows 100 (W=8, stride 3) every recording is cut into
many blocks: 20 rows a second (bins of 1 s hold 20 rows), gaps inside a block and exactly at a
block boundary, duplicate times, a recording shorter than W, and blocks shorter than W-1 (a
second of 3 rows followed by one of 99).
"""

import functools
import os
import threading

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner

from beam_jobs import blocks, preprocess
from beam_jobs import preprocess_steps as steps
from beam_jobs.csv_reader import Rows
from tests.beam_jobs.test_preprocess import FEATURES, assert_matches_reference
from tests.helpers import write_crew_csv
from tests.reference import read_output
from tfrecords_schema import LABEL_VOCABULARY
from tfrecords_schema import csv_columns as cols

WINDOW, STRIDE, BLOCK_ROWS = 8, 3, 100


def _steady(seconds, hz, t0=0.0):
    return t0 + np.arange(int(seconds * hz)) / hz


def recording_times():
    """{(crew, seat, experiment): time float64 [n]}: the shapes the blocked job must get right."""
    gap_inside = _steady(35, 20)
    gap_inside[333:] += 2.0                      # a gap inside a block
    at_edge = np.concatenate([_steady(5, 20), _steady(30, 20, t0=7.0)])  # 100 rows, then a 2 s gap
    # 4 s of 25 Hz (one full block), 3 rows in second 4, 99 in second 5, 2 + 2 in seconds 6-7,
    # 99 in second 8, then 20 Hz: blocks of 3 and 4 rows, shorter than W-1.
    uneven = np.concatenate([_steady(4, 25), [4.0, 4.3, 4.6], 5 + np.arange(99) / 100, [6.0, 6.5, 7.0, 7.5],
                             8 + np.arange(99) / 100, _steady(10, 20, t0=9.0)])
    return {
        (1, 0, "CA"): gap_inside, (1, 1, "CA"): at_edge, (1, 0, "DA"): uneven, (1, 1, "DA"): _steady(0.25, 20),
        (2, 0, "CA"): gap_inside, (2, 1, "CA"): uneven, (3, 0, "SS"): at_edge, (3, 1, "SS"): _steady(12, 20),
    }


def block_frame(seed=7):
    rng = np.random.default_rng(seed)
    frames = []
    for (crew, seat, experiment), time in recording_times().items():
        n = len(time)
        offset, scale = rng.normal(0, 50, len(FEATURES)), rng.uniform(1, 20, len(FEATURES))
        frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))) * scale + offset, columns=FEATURES)
        frame.insert(0, cols.CREW, crew)
        frame.insert(1, cols.EXPERIMENT, experiment)
        frame.insert(2, cols.TIME, time)
        frame.insert(3, cols.SEAT, seat)
        frame[cols.EVENT] = np.array(LABEL_VOCABULARY)[(np.arange(n) // 37 + crew + seat) % 4]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_with_duplicates(path, frame):
    """The frame in Kaggle order plus duplicate-time rows (train and eval crews) right after
    their twins, one with other values: the first line of a time is kept."""
    write_crew_csv(path, frame)
    header, *lines = open(path).read().splitlines()
    for crew, k in (("1,", 40), ("1,", 400), ("2,", 90)):
        i = [j for j, line in enumerate(lines) if line.startswith(crew)][k]
        lines.insert(i + 1, lines[i])
    i = [j for j, line in enumerate(lines) if line.startswith("3,")][15]
    parts = lines[i].split(",")
    values = dict(zip(header.split(","), parts))
    values.update({name: "1000000" for name in FEATURES})
    lines.insert(i + 1, ",".join(values[name] for name in header.split(",")))
    with open(path, "w") as f:
        f.write("\n".join([header] + lines) + "\n")
    return str(path)


def job_args(csv, out, block_rows):
    return ["--input", csv, "--output", str(out), "--features", ",".join(FEATURES), "--eval-crews", "2",
            "--window", str(WINDOW), "--stride", str(STRIDE), "--num-shards", "3", "--block-rows", str(block_rows),
            "--span-bytes", "4096", "--split-bytes", "20000", "--max-bad-fraction", "0.01"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same input through the job with blocks of 100 rows and with one block per recording."""
    root = tmp_path_factory.mktemp("block_rows")
    frame = block_frame()
    csv = write_with_duplicates(root / "train.csv", frame)
    for name, block_rows in (("small", BLOCK_ROWS), ("whole", 1 << 30)):
        preprocess.run(job_args(csv, root / name, block_rows))
    return {"root": root, "frame": frame}


def test_the_data_cuts_every_recording_into_blocks_some_shorter_than_the_window():
    shortest, edge_gaps = [], 0
    for time in recording_times().values():
        first_bins = blocks.plan_blocks(*blocks.time_histogram(time), BLOCK_ROWS)
        index = blocks.block_of(time, first_bins)
        sizes = np.bincount(index)
        assert sizes.max() <= BLOCK_ROWS
        if len(time) > 2 * BLOCK_ROWS:
            assert len(sizes) >= 3
        shortest.append(sizes.min())
        edges = np.flatnonzero(np.diff(index)) + 1
        edge_gaps += int(np.sum(time[edges] - time[edges - 1] > 1.0))
    assert min(shortest) < WINDOW - 1 and edge_gaps >= 2
    assert min(len(time) for time in recording_times().values()) < WINDOW


def test_small_blocks_give_byte_identical_shards_and_stats(runs):
    small, whole = runs["root"] / "small", runs["root"] / "whole"
    assert (small / "stats.json").read_bytes() == (whole / "stats.json").read_bytes()
    names = sorted(os.path.join(split, f) for split in ("train", "eval") for f in os.listdir(whole / split))
    assert len(names) == 6
    for name in names:
        assert (small / name).read_bytes() == (whole / name).read_bytes(), name
    assert (small / "rejects" / "rejects.csv").read_bytes() == (whole / "rejects" / "rejects.csv").read_bytes()


def test_small_blocks_equal_the_reference_with_duplicates_rejected_before_scaling(runs):
    stats = assert_matches_reference(runs["frame"], runs["root"] / "small", WINDOW, STRIDE)
    assert stats["rejected_rows"] == 4
    assert stats["splits"]["train"]["num_rows"] + stats["splits"]["eval"]["num_rows"] == len(runs["frame"])
    _, found, _ = read_output(str(runs["root"] / "small"))
    assert found  # windows in both splits, the short recording none
    assert not [k for k in found if k[:3] == (1, 1, "DA")]


def _rows_in_chunks(frame, chunks, seed=0):
    """The frame's rows as `Rows` batches in a shuffled order, lines numbered as in a file."""
    order = np.random.default_rng(seed).permutation(len(frame))
    for part in np.array_split(order, chunks):
        f = frame.iloc[part]
        yield Rows(crew=f[cols.CREW].to_numpy(np.int64), seat=f[cols.SEAT].to_numpy(np.int64),
                     experiment=f[cols.EXPERIMENT].to_numpy(object), time=f[cols.TIME].to_numpy(np.float64),
                     signals=f[FEATURES].to_numpy(np.float32), label=f[cols.EVENT].map("ABCD".index).to_numpy(np.int64),
                     line=part.astype(np.int64) + 2, source=np.zeros(len(part), np.int64))


def _rows_read_per_call(monkeypatch):
    """{"sort": [...], "cut": [...]}: the rows each call of SortBlockFn.process and of
    CutBlockWindowsFn.process read from block files, measured from the outside: the block-file
    readers (blocks.read_spill, blocks.read_rows) and the two DoFns' process methods are wrapped
    here, so the figure does not come from the job's own `rows_per_key` metric. Filled as the
    pipeline runs (in this process: FnApiRunner)."""
    per_call = {"sort": [], "cut": []}
    current = threading.local()

    def counting(read):
        def wrapper(*args, **kwargs):
            rows = read(*args, **kwargs)
            if getattr(current, "rows", None) is not None:
                current.rows += len(rows)
            return rows
        return wrapper

    def measured(process, name):
        @functools.wraps(process)
        def wrapper(self, *args, **kwargs):
            current.rows = 0
            try:
                yield from process(self, *args, **kwargs)
                per_call[name].append(current.rows)
            finally:
                current.rows = None
        return wrapper

    monkeypatch.setattr(blocks, "read_spill", counting(blocks.read_spill))
    monkeypatch.setattr(blocks, "read_rows", counting(blocks.read_rows))
    monkeypatch.setattr(steps.SortBlockFn, "process", measured(steps.SortBlockFn.process, "sort"))
    monkeypatch.setattr(steps.CutBlockWindowsFn, "process", measured(steps.CutBlockWindowsFn.process, "cut"))
    return per_call


def test_no_key_holds_more_than_block_rows_plus_window_minus_one(tmp_path, monkeypatch):
    from tests.helpers import identity_transform

    frame = block_frame()
    per_call = _rows_read_per_call(monkeypatch)
    params = steps.WindowParams(WINDOW, STRIDE, 1.0, 3, frozenset([2]), str(tmp_path), ("f.csv",), BLOCK_ROWS)
    p = beam.Pipeline(runner=fn_runner.FnApiRunner())
    ready = identity_transform(p, str(tmp_path))
    sorted_blocks = p | beam.Create(list(_rows_in_chunks(frame, 13)), reshuffle=False) | steps.SortBlocks(params)
    _ = sorted_blocks.blocks | steps.CutWindows(params, ready)
    p.run().wait_until_finish()
    # sorting: every row passed through exactly one key, and no key read more than a block's rows
    assert sum(per_call["sort"]) == len(frame)
    assert len(per_call["sort"]) > len(recording_times())  # recordings were cut into several blocks
    assert max(per_call["sort"]) <= BLOCK_ROWS
    # cutting: a block's rows plus at most the W-1 rows of context before it; some full block
    # did read its context
    assert BLOCK_ROWS < max(per_call["cut"]) <= BLOCK_ROWS + WINDOW - 1


def test_more_rows_in_one_second_than_block_rows_is_a_clear_error(tmp_path, capsys):
    csv = write_crew_csv(tmp_path / "train.csv", block_frame())
    assert preprocess.main(job_args(csv, tmp_path / "out", 10)) == 1  # 20 rows a second
    err = capsys.readouterr().err
    assert "more than --block-rows 10" in err and "raise --block-rows" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "stats.json").exists()
