"""One tf.train.Example per window: the record contract of docs/DESIGN.md.

| key          | type              | value                                                |
|--------------|-------------------|------------------------------------------------------|
| `window`     | float_list, W*F   | scaled values, time-major (row 0's F features, ...)  |
| `label`      | int64             | index into LABEL_VOCABULARY                          |
| `crew`       | int64             |                                                      |
| `seat`       | int64             |                                                      |
| `experiment` | bytes             | `CA`, `DA`, `SS`, `LOFT`                             |
| `end_time`   | float             | `time` of the window's last row                      |

The writer encodes with `encode_windows` (protobuf's deterministic bytes, laid out once per
recording and filled in by numpy: no Python loop over windows' values) and readers parse with
`feature_spec` / `parse_examples`.
"""

from typing import Dict, List, Sequence

import numpy as np
import pyarrow as pa

WINDOW = "window"
LABEL = "label"
CREW = "crew"
SEAT = "seat"
EXPERIMENT = "experiment"
END_TIME = "end_time"

RECORD_KEYS = (WINDOW, LABEL, CREW, SEAT, EXPERIMENT, END_TIME)

LABEL_VOCABULARY = ("A", "B", "C", "D")
NUM_CLASSES = len(LABEL_VOCABULARY)


def label_index(event: str) -> int:
    """`A` -> 0 ... `D` -> 3; ValueError for anything else."""
    try:
        return LABEL_VOCABULARY.index(event)
    except ValueError:
        raise ValueError(f"unknown label {event!r}; expected one of {LABEL_VOCABULARY}") from None


def feature_spec(window: int, num_features: int) -> Dict[str, object]:
    """The `tf.io.parse_example` spec of one record, for windows of `window` rows x `num_features`."""
    import tensorflow as tf  # readers only; the writer side needs no TensorFlow import

    if window < 1 or num_features < 1:
        raise ValueError(f"window ({window}) and num_features ({num_features}) must be >= 1")
    return {
        WINDOW: tf.io.FixedLenFeature([window * num_features], tf.float32),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        CREW: tf.io.FixedLenFeature([], tf.int64),
        SEAT: tf.io.FixedLenFeature([], tf.int64),
        EXPERIMENT: tf.io.FixedLenFeature([], tf.string),
        END_TIME: tf.io.FixedLenFeature([], tf.float32),
    }


def parse_examples(serialized, window: int, num_features: int):
    """Parse a batch of serialized records.

    Args:
      serialized: string tensor [B].
    Returns:
      dict: `window` float32 [B, window, num_features]; `label`, `crew`, `seat` int64 [B];
      `experiment` string [B]; `end_time` float32 [B].
    """
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(window, num_features))
    parsed[WINDOW] = tf.reshape(parsed[WINDOW], [-1, window, num_features])
    return parsed


def _list_column(values: np.ndarray, width: int) -> pa.Array:
    """A ListArray whose rows are consecutive runs of `width` values (tfx_bsl wants list columns)."""
    n = len(values) // width
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values))


# Protobuf's wire format, for the one message layout encode_windows writes: every field below is
# length-delimited (wire type 2), so a tag is one byte, (field number << 3) | 2.
_FIELD_1, _FIELD_2, _FIELD_3 = 0x0A, 0x12, 0x1A  # Example.features, Features.feature (a map: key 1,
# value 2), Feature.bytes_list / float_list / int64_list (1 / 2 / 3), their packed `value` (1)


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of an int64 (a negative value as its 64-bit two's complement)."""
    value = int(value) & ((1 << 64) - 1)  # int(): a numpy integer would overflow on the mask
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def _feature_entry(key: str, kind: int, values: bytes) -> bytes:
    """One entry of Features' `feature` map: `key` -> a Feature whose list (`kind`) holds `values`:
    packed numbers, or a bytes list's one value."""
    return _field(_FIELD_1, _field(_FIELD_1, key.encode()) + _field(_FIELD_2, _field(kind, _field(_FIELD_1, values))))


def encode_windows(
    windows: np.ndarray,
    labels: Sequence[int],
    crew: int,
    seat: int,
    experiment: str,
    end_times: Sequence[float],
) -> List[bytes]:
    """Serialize windows of one recording (crew, seat, experiment) as tf.train.Example bytes.

    Args:
      windows: float [N, W, F] scaled values (any float dtype; stored as float32).
      labels: int [N] label indices.
      end_times: float [N] `time` of each window's last row.
    Returns:
      N serialized tf.train.Example, in input order: the bytes of protobuf's deterministic
      serialization (feature map keys sorted), so the same window always serializes the same, in
      any process. (`encode_window_block`: the same bytes as the rows of one array.)
    """
    return [record.tobytes() for record in encode_window_block(windows, labels, crew, seat, experiment, end_times)]


def encode_window_block(
    windows: np.ndarray,
    labels: Sequence[int],
    crew: int,
    seat: int,
    experiment: str,
    end_times: Sequence[float],
) -> np.ndarray:
    """`encode_windows` as uint8 [N, L]: record i is row i (all records of a recording have the
    same length L), for a writer that frames them without a bytes object per record.

    Every record of a recording has the same layout and length: only the label (one varint byte:
    0-3), end_time (4 bytes) and the window's W*F floats (little-endian float32, packed) differ.
    So one record is laid out once (a template, from the wire format) and the N records are filled
    in by numpy, instead of building N protobufs: tfx_bsl's compiled encoder writes the feature
    map in a per-process hash order that then had to be parsed and re-serialized, 5x slower
    (benchmarks/README.md; tests/tfrecords_schema/test_record.py checks the bytes against
    protobuf's own).
    """
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 3:
        raise ValueError(f"windows must be [N, W, F], got shape {windows.shape}")
    n = windows.shape[0]
    if n == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    end_times = np.asarray(end_times, dtype=np.float32)
    if labels.shape != (n,) or end_times.shape != (n,):
        raise ValueError(f"labels {labels.shape} and end_times {end_times.shape} must be ({n},)")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"label indices must be in [0, {NUM_CLASSES}), got {sorted(set(labels))}")
    filled = {  # what differs per record, as bytes [N, width]: each entry's last `width` bytes
        END_TIME: end_times.astype("<f4").view(np.uint8).reshape(n, 4),
        LABEL: labels.astype(np.uint8).reshape(n, 1),  # 0-3: a one-byte varint
        WINDOW: windows.astype("<f4", copy=False).reshape(n, -1).view(np.uint8),
    }
    entries = {
        CREW: _feature_entry(CREW, _FIELD_3, _varint(crew)),
        END_TIME: _feature_entry(END_TIME, _FIELD_2, bytes(4)),
        EXPERIMENT: _feature_entry(EXPERIMENT, _FIELD_1, experiment.encode()),
        LABEL: _feature_entry(LABEL, _FIELD_3, bytes(1)),
        SEAT: _feature_entry(SEAT, _FIELD_3, _varint(seat)),
        WINDOW: _feature_entry(WINDOW, _FIELD_2, bytes(filled[WINDOW].shape[1])),
    }
    body = b"".join(entries[key] for key in sorted(entries))  # deterministic: keys sorted
    template = np.frombuffer(_field(_FIELD_1, body), dtype=np.uint8)
    records = np.empty((n, len(template)), dtype=np.uint8)
    end, fixed = len(template) - len(body), 0  # fixed: where the template's bytes still to copy start
    for key in sorted(entries):
        end += len(entries[key])
        if key in filled:  # each byte written once: the template up to the filled bytes, then them
            start = end - filled[key].shape[1]
            records[:, fixed:start] = template[fixed:start]
            records[:, start:end] = filled[key]
            fixed = end
    records[:, fixed:] = template[fixed:]
    return records


# The sequence layout (docs/DESIGN.md "Layouts"; arithmetic in tfrecords_schema/sequence.py):
# one tf.train.Example per chunk of a segment.
#
# | key          | type                | value                                                    |
# |--------------|---------------------|----------------------------------------------------------|
# | `rows`       | float_list, (k+c)*F | the k context rows, then the chunk's c rows; scaled,     |
# |              |                     | time-major                                               |
# | `context`    | int64               | k = min(W-1, position): rows of the SAME segment before  |
# | `position`   | int64               | the chunk's first row's index in its segment (j*C)       |
# | `labels`     | int64_list, c       | label index of each chunk row                            |
# | `crew`, `seat` | int64             |                                                          |
# | `experiment` | bytes               |                                                          |
# | `first_time`, `last_time` | float  | time of the chunk's first and last row                   |
ROWS = "rows"
CONTEXT = "context"
POSITION = "position"
LABELS = "labels"
FIRST_TIME = "first_time"
LAST_TIME = "last_time"

SEQUENCE_KEYS = (ROWS, CONTEXT, POSITION, LABELS, CREW, SEAT, EXPERIMENT, FIRST_TIME, LAST_TIME)


def sequence_feature_spec() -> Dict[str, object]:
    """The `tf.io.parse_example` spec of one chunk record: `rows` and `labels` are RaggedFeatures
    (their length varies per record: [k+c]*F floats and c labels), the rest scalars."""
    import tensorflow as tf

    return {
        ROWS: tf.io.RaggedFeature(tf.float32),
        CONTEXT: tf.io.FixedLenFeature([], tf.int64),
        POSITION: tf.io.FixedLenFeature([], tf.int64),
        LABELS: tf.io.RaggedFeature(tf.int64),
        CREW: tf.io.FixedLenFeature([], tf.int64),
        SEAT: tf.io.FixedLenFeature([], tf.int64),
        EXPERIMENT: tf.io.FixedLenFeature([], tf.string),
        FIRST_TIME: tf.io.FixedLenFeature([], tf.float32),
        LAST_TIME: tf.io.FixedLenFeature([], tf.float32),
    }


def parse_chunks(serialized, num_features: int):
    """Parse a batch of serialized chunk records.

    Args:
      serialized: string tensor [B].
    Returns:
      dict: `rows` float32 RaggedTensor [B, (k+c), num_features] (context rows first);
      `labels` int64 RaggedTensor [B, (c)]; `context`, `position`, `crew`, `seat` int64 [B];
      `experiment` string [B]; `first_time`, `last_time` float32 [B].
    """
    import tensorflow as tf

    if num_features < 1:
        raise ValueError(f"num_features ({num_features}) must be >= 1")
    parsed = tf.io.parse_example(serialized, sequence_feature_spec())
    flat = parsed[ROWS]
    parsed[ROWS] = tf.RaggedTensor.from_row_lengths(
        tf.reshape(flat.flat_values, [-1, num_features]), flat.row_lengths() // num_features)
    return parsed


def encode_chunks(
    rows: Sequence[np.ndarray],
    contexts: Sequence[int],
    positions: Sequence[int],
    labels: Sequence[np.ndarray],
    crew: int,
    seat: int,
    experiment: str,
    first_times: Sequence[float],
    last_times: Sequence[float],
) -> List[bytes]:
    """Serialize chunks of one recording (crew, seat, experiment) as tf.train.Example bytes (the
    compiled tfx_bsl encoder, 30x faster than filling protobufs; a chunk's lengths vary, and a
    layout has few chunks next to the windows encode_windows writes).

    Args:
      rows: per chunk float [k+c, F]: its k context rows, then its c rows (stored as float32).
      contexts: per chunk k (>= 0); positions: per chunk its first row's index in its segment.
      labels: per chunk int [c] (c >= 1) label indices.
      first_times, last_times: per chunk the time of its first and last row.
    Returns:
      one serialized tf.train.Example per chunk, in input order; deterministic bytes.
    """
    from tensorflow.core.example import example_pb2
    from tfx_bsl.coders import example_coder

    n = len(rows)
    if n == 0:
        return []
    rows = [np.asarray(r, dtype=np.float32) for r in rows]
    labels = [np.asarray(run, dtype=np.int64) for run in labels]
    contexts = np.asarray(contexts, dtype=np.int64)
    for name, column in (("contexts", contexts), ("positions", positions), ("labels", labels),
                         ("first_times", first_times), ("last_times", last_times)):
        if len(column) != n:
            raise ValueError(f"{name} has {len(column)} entries for {n} chunks")
    num_features = rows[0].shape[1] if rows[0].ndim == 2 else -1
    for i, (r, lab, k) in enumerate(zip(rows, labels, contexts)):
        if r.ndim != 2 or r.shape[1] != num_features or lab.ndim != 1 or len(lab) < 1 or k < 0 \
                or r.shape[0] != k + len(lab):
            raise ValueError(f"chunk {i}: rows {r.shape} must be [context ({k}) + labels ({lab.shape}), "
                             f"F ({num_features})] with at least one label")
        if lab.min() < 0 or lab.max() >= NUM_CLASSES:
            raise ValueError(f"chunk {i}: label indices must be in [0, {NUM_CLASSES}), got {sorted(set(lab.tolist()))}")

    def ragged(parts, dtype):
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(parts).astype(dtype, copy=False)))

    batch = pa.RecordBatch.from_arrays(
        [
            ragged([r.reshape(-1) for r in rows], np.float32),
            _list_column(contexts, 1),
            _list_column(np.asarray(positions, dtype=np.int64), 1),
            ragged(labels, np.int64),
            _list_column(np.full(n, crew, dtype=np.int64), 1),
            _list_column(np.full(n, seat, dtype=np.int64), 1),
            _list_column(np.array([experiment.encode()] * n, dtype=object), 1),
            _list_column(np.asarray(first_times, dtype=np.float32), 1),
            _list_column(np.asarray(last_times, dtype=np.float32), 1),
        ],
        list(SEQUENCE_KEYS),
    )
    parse = example_pb2.Example.FromString
    return [parse(record).SerializeToString(deterministic=True)
            for record in example_coder.RecordBatchToExamplesEncoder().encode(batch)]


# The tf.Transform graph in OUT/transform_fn (written by the preprocess job, reused by serving):
# input `signals` float32 [N, F] raw values in stats.json feature order; output
# `signals_scaled` float32 [N, F].
RAW_SIGNALS = "signals"
SCALED_SIGNALS = "signals_scaled"


def raw_signals_spec(num_features: int) -> Dict[str, object]:
    """The raw feature spec of the tf.Transform graph: one row's `signals` float32 [F], raw values
    in stats.json feature order. It is what the preprocess job analyzes, and what OUT/metadata
    holds (tft.TFTransformOutput(OUT).raw_feature_spec() returns it)."""
    import tensorflow as tf

    if num_features < 1:
        raise ValueError(f"num_features ({num_features}) must be >= 1")
    return {RAW_SIGNALS: tf.io.FixedLenFeature([num_features], tf.float32)}


def raw_window_spec(window: int, num_features: int) -> Dict[str, object]:
    """The `tf.io.parse_example` spec of a RAW window, the serving model's tf.Example input:
    `window` float_list of W*F raw (unscaled) values, time-major like the record's. Any other
    feature in the Example (a record's `label`, `crew`, ...) is ignored."""
    return {WINDOW: feature_spec(window, num_features)[WINDOW]}
