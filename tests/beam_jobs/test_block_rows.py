"""Time blocks (`--block-rows`): a recording cut into time blocks gives exactly the windows,
shards and stats.json of the unblocked job (the data: tests/helpers.py's block_frame).
"""

import functools
import os
import threading

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner

from beam_jobs import blocks, preprocess
from beam_jobs import preprocess_steps as steps
from beam_jobs.csv_reader import Rows
from tests.helpers import BLOCKED_ROWS as BLOCK_ROWS, BLOCKED_STRIDE as STRIDE, BLOCKED_WINDOW as WINDOW
from tests.helpers import SMALL_FEATURES as FEATURES, block_frame, blocked_job_args as job_args, recording_times
from tests.helpers import write_crew_csv, write_with_duplicates
from tests.reference import assert_matches_reference, read_output
from tfrecords_schema import csv_columns as cols



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
    """{"sort": [...], "cut": [...]}: the rows each call of SortBlockFn.process and each read of
    a block's part of a shard (blocks.recording_rows: one per time block and shard) read from block
    files, measured from the outside: the block-file readers (blocks.read_spill, blocks.read_rows)
    and the two callers are wrapped here, so the figure does not come from the job's own
    `rows_per_key` metric. Filled as the pipeline runs (in this process: FnApiRunner)."""
    per_call = {"sort": [], "cut": []}
    current = threading.local()  # .kind: the call being measured; .rows: what it read so far

    def counting(read, kind):
        def wrapper(*args, **kwargs):
            rows = read(*args, **kwargs)
            if getattr(current, "kind", None) == kind:
                current.rows += len(rows)
            return rows
        return wrapper

    def start(kind):
        saved = getattr(current, "kind", None), getattr(current, "rows", 0)
        current.kind, current.rows = kind, 0
        return saved

    def measured(process, name):
        @functools.wraps(process)
        def wrapper(self, *args, **kwargs):
            saved = start(name)
            try:
                for out in process(self, *args, **kwargs):
                    mine = current.rows
                    current.kind = None  # steps fused after this one run during the yield: not its reads
                    yield out
                    current.kind, current.rows = name, mine
                per_call[name].append(current.rows)
            finally:
                current.kind, current.rows = saved
        return wrapper

    read_part = blocks.recording_rows

    def measured_part(*args, **kwargs):
        saved = start("cut")
        try:
            rows = read_part(*args, **kwargs)
            per_call["cut"].append(current.rows)
            return rows
        finally:
            current.kind, current.rows = saved

    monkeypatch.setattr(blocks, "read_spill", counting(blocks.read_spill, "sort"))
    monkeypatch.setattr(blocks, "read_rows", counting(blocks.read_rows, "cut"))
    monkeypatch.setattr(steps.SortBlockFn, "process", measured(steps.SortBlockFn.process, "sort"))
    monkeypatch.setattr(blocks, "recording_rows", measured_part)
    return per_call


def test_no_key_holds_more_than_block_rows_plus_window_minus_one(tmp_path, monkeypatch):
    from tests.helpers import identity_transform

    frame = block_frame()
    per_call = _rows_read_per_call(monkeypatch)
    params = steps.WindowParams(WINDOW, STRIDE, 1.0, 3, frozenset([2]), str(tmp_path), ("f.csv",), BLOCK_ROWS)
    p = beam.Pipeline(runner=fn_runner.FnApiRunner())
    ready = identity_transform(p, str(tmp_path))
    sorted_blocks = p | beam.Create(list(_rows_in_chunks(frame, 13)), reshuffle=False) | steps.SortBlocks(params)
    _ = sorted_blocks.blocks | steps.WriteShards(params, "NONE", steps.cut_block_windows, ready)
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
