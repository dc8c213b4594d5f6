"""What several test modules share: tiny crew CSVs written the way the real file is ordered, a
local TestPipeline, row batches, a folder's tree.

`write_crew_csv` lays rows out like Kaggle's train.csv: one (crew, experiment) after another,
both seats interleaved, and `time` ordered as TEXT within it (so 10.5 comes before 2.0).
"""

import os

import numpy as np
import pandas as pd

from tfrecords_schema import LABEL_VOCABULARY
from tfrecords_schema import csv_columns as cols

SMALL_FEATURES = ["r", "ecg", "gsr"]  # the signals most job tests read


def make_frame(crews=(1, 2, 3), experiments=("CA", "DA", "SS"), rows_per_recording=700, seed=0,
               gap_at=None, features=cols.SIGNALS):
    """A train-file DataFrame; `gap_at` = (row index, seconds) inserts a time gap in every recording.

    Signals differ per person (offset and scale) and per class, labels change every ~150 rows.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for crew in crews:
        for experiment in experiments:
            for seat in cols.SEATS:
                time = np.arange(rows_per_recording) / cols.SAMPLE_RATE_HZ
                if gap_at is not None:
                    time[gap_at[0]:] += gap_at[1]
                labels = np.array(LABEL_VOCABULARY)[(np.arange(rows_per_recording) // 150 + crew + seat) % 4]
                offset, scale = rng.normal(0, 50, len(features)), rng.uniform(1, 20, len(features))
                values = rng.normal(size=(rows_per_recording, len(features))) * scale + offset
                frame = pd.DataFrame(values, columns=list(features))
                frame.insert(0, cols.CREW, crew)
                frame.insert(1, cols.EXPERIMENT, experiment)
                frame.insert(2, cols.TIME, time)
                frame.insert(3, cols.SEAT, seat)
                frame[cols.EVENT] = labels
                frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def kaggle_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of one (crew, experiment) together, time ordered as text, seats interleaved."""
    frame = frame.copy()
    frame["_time_text"] = frame[cols.TIME].map(repr)
    frame = frame.sort_values([cols.CREW, cols.EXPERIMENT, "_time_text", cols.SEAT], kind="stable")
    return frame.drop(columns="_time_text")


def write_crew_csv(path, frame: pd.DataFrame) -> str:
    """Write in Kaggle order with shortest-repr floats; returns the path as str."""
    ordered = kaggle_order(frame)
    ordered.to_csv(path, index=False, float_format=None)
    return str(path)



def pipeline():
    """A TestPipeline on Beam's in-process runner (never the Prism download)."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner=fn_runner.FnApiRunner())


def rows_of(crews, t0=0.0, first_line=2):
    """A `Rows` batch of one row per entry of `crews` (seat 0, CA, 3 signals, lines from `first_line`)."""
    from beam_jobs.csv_reader import Rows

    k = len(crews)
    return Rows(crew=np.array(crews), seat=np.zeros(k, np.int64), experiment=np.array(["CA"] * k, object),
                time=t0 + np.arange(k) / 256, signals=np.arange(3 * k, dtype=np.float32).reshape(k, 3),
                label=np.arange(k) % 4, line=np.arange(k) + first_line, source=np.zeros(k, np.int64))


def identity_transform(p, staging):
    """Write a transform graph whose statistics make zscore the identity (mean 0, std 1)."""
    return zscore_transform(p, staging, -1, 1)


def zscore_transform(p, staging, low, high):
    """Write a zscore transform graph (3 signals) analyzed on two rows, all `low` and all `high`:
    mean (low + high) / 2, std (high - low) / 2."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from beam_jobs import scaling

    rows = [np.float32([low] * 3), np.float32([high] * 3)]
    with tft_beam.Context(temp_dir=os.path.join(staging, "tmp")):
        transform_fn = (
            (p | "Stats" >> beam.Create([scaling.signals_record_batch(np.stack(rows))]),
             scaling.tensor_adapter_config(3))
            | tft_beam.AnalyzeDataset(scaling.zscore_preprocessing_fn))
        return transform_fn | tft_beam.WriteTransformFn(staging)


def tree(root):
    """{relative path: bytes | ("link", target) | "dir"} of everything under root, links not followed."""
    found = {}
    for where, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(where, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                found[rel] = open(path, "rb").read()
    return found


def good_stats():
    """A valid stats.json of a windows folder (W 256, stride 32, 3 features, 2 train shards)."""
    return {
        "layout": "windows", "window": 256, "stride": 32, "max_gap": 1.0, "features": ["r", "ecg", "gsr"],
        "label_vocabulary": ["A", "B", "C", "D"], "scale": "zscore",
        "scaling": {f: {"mean": 0.0, "std": 1.0} for f in ["r", "ecg", "gsr"]},
        "compression": "NONE", "rejected_rows": 0,
        "splits": {
            "train": {"crews": [1, 3], "num_rows": 100, "num_windows": 5,
                      "class_counts": {"A": 2, "B": 0, "C": 3, "D": 0},
                      "shards": [{"file": "train/part-00000-of-00002.tfrecord", "num_windows": 4},
                                 {"file": "train/part-00001-of-00002.tfrecord", "num_windows": 1}]},
            "eval": {"crews": [], "num_rows": 0, "num_windows": 0, "class_counts": {}, "shards": []},
        },
    }


# --- recordings cut into many time blocks (tests of --block-rows and of the sequence layout) ------
# With --block-rows 100 (W=8, stride 3) every recording is cut into many blocks: 20 rows a second,
# gaps inside a block and exactly at a block boundary, duplicate times, a recording shorter than W,
# and blocks shorter than W-1 (a second of 3 rows followed by one of 99).
BLOCKED_WINDOW, BLOCKED_STRIDE, BLOCKED_ROWS = 8, 3, 100


def _steady(seconds, hz, t0=0.0):
    """float64 [seconds * hz]: times at hz from t0."""
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
    """A train-file DataFrame of recording_times' recordings, SMALL_FEATURES signals per person."""
    rng = np.random.default_rng(seed)
    frames = []
    for (crew, seat, experiment), time in recording_times().items():
        n = len(time)
        offset, scale = rng.normal(0, 50, len(SMALL_FEATURES)), rng.uniform(1, 20, len(SMALL_FEATURES))
        frame = pd.DataFrame(rng.normal(size=(n, len(SMALL_FEATURES))) * scale + offset, columns=SMALL_FEATURES)
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
    values.update({name: "1000000" for name in SMALL_FEATURES})
    lines.insert(i + 1, ",".join(values[name] for name in header.split(",")))
    with open(path, "w") as f:
        f.write("\n".join([header] + lines) + "\n")
    return str(path)


def blocked_job_args(csv, out, block_rows):
    """preprocess's flags for block_frame's CSV: small spans and byte ranges, 3 shards, eval crew 2."""
    return ["--input", csv, "--output", str(out), "--features", ",".join(SMALL_FEATURES),
            "--eval-crews", "2", "--window", str(BLOCKED_WINDOW), "--stride", str(BLOCKED_STRIDE), "--num-shards", "3",
            "--block-rows", str(block_rows), "--span-bytes", "4096", "--split-bytes", "20000",
            "--max-bad-fraction", "0.01"]


# --- a hand-made sequence folder (the trainer's tests of the sequence layout) --------------------
SEQUENCE_FEATURES = ["a", "b", "c"]
SEQUENCE_WINDOW, SEQUENCE_STRIDE, SEQUENCE_CHUNK_ROWS = 24, 8, 20
SEQUENCE_LENGTHS = {"train": (5, 23, 24, 25, 57, 130, 61, 90), "eval": (40, 70)}


def _recording(rng, n):
    """(rows float32 [n, F], labels int64 [n], each label held for 5 to 29 rows); the rows' level
    tells the label apart, so that a model can learn it."""
    labels = np.repeat(rng.integers(0, 4, size=n), rng.integers(5, 30, size=n))[:n]
    rows = (rng.normal(size=(n, len(SEQUENCE_FEATURES))) + labels[:, None]).astype(np.float32)
    return rows, labels


def write_sequence_folder(out, rng, num_shards=2):
    """Shards and the stats dict of a sequence folder, written with the contract's own encoder;
    returns (stats, {split: [(rows, labels)]})."""
    import tensorflow as tf

    from tfrecords_schema import sequence
    from tfrecords_schema.record import encode_chunks

    recordings = {}
    splits = {}
    for split, lengths in SEQUENCE_LENGTHS.items():
        recs = [_recording(rng, n) for n in lengths]
        recordings[split] = recs
        shards = [[] for _ in range(num_shards)]  # (record, summary) per shard
        for crew, (rows, labels) in enumerate(recs):
            for position, stop in sequence.chunk_bounds(len(labels), SEQUENCE_CHUNK_ROWS):
                k = sequence.context_rows(position, SEQUENCE_WINDOW)
                record, = encode_chunks([rows[position - k:stop]], [k], [position], [labels[position:stop]],
                                        crew=crew, seat=0, experiment="CA",
                                        first_times=[float(position)], last_times=[float(stop - 1)])
                shards[rng.integers(num_shards)].append(
                    (record, sequence.chunk_summary(position, labels[position:stop])))
        (out / split).mkdir(parents=True)
        entries = []
        for i, shard in enumerate(shards):
            name = f"{split}/part-{i:05d}-of-{num_shards:05d}.tfrecord"
            with tf.io.TFRecordWriter(str(out / name)) as writer:
                for record, _ in shard:
                    writer.write(record)
            entries.append({"file": name, "num_chunks": len(shard), "chunks": [s for _, s in shard]})
        splits[split] = {"crews": [], "num_rows": int(sum(lengths)),
                         "num_chunks": sum(e["num_chunks"] for e in entries), "shards": entries}
    stats = {"layout": "sequence", "window": SEQUENCE_WINDOW, "stride": SEQUENCE_STRIDE,
             "chunk_rows": SEQUENCE_CHUNK_ROWS, "max_gap": 1.0, "features": SEQUENCE_FEATURES,
             "label_vocabulary": list(LABEL_VOCABULARY), "compression": "NONE", "splits": splits}
    return stats, recordings


def dataset_graph_report(ds):
    """(op types in a tf.data.Dataset's graph and functions, bytes of all constants in them)."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(ds._as_serialized_graph().numpy())
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    ops = {n.op for n in nodes}
    const_bytes = 0
    for n in nodes:
        if n.op == "Const":
            t = n.attr["value"].tensor
            const_bytes += len(t.tensor_content) + sum(len(s) for s in t.string_val) + 4 * (
                len(t.float_val) + len(t.int_val)) + 8 * len(t.int64_val)
    return ops, const_bytes
