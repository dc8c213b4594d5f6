"""`crewstream score` / `python -m trainer.score`: a submission against a truth file, as Kaggle scores it.

    crewstream score --submission submission.csv --truth test_truth.csv

- log_loss: the competition's multi-class log loss. Each probability is clipped to
  [1e-15, 1 - 1e-15], each row is then divided by its sum, and the score is the mean over the
  truth's rows of -ln p(true class) (trainer.metrics.log_loss_terms; clipping first means a row of
  zeros cannot divide by zero).
- accuracy, macro_f1, per-class precision / recall / F1 / support and the confusion matrix: of the
  arg-max class, with scikit-learn's definitions (trainer.metrics).

Files: the submission has a header `id,A,B,C,D` (columns found by name, any order, extra ones
ignored), the truth `id,event` (what `crewstream synth` writes as test_truth.csv); `.csv.gz` too.
Rows are matched by id, in any order. As on Kaggle, every truth id must be in the submission exactly
once and no other id may be; a missing, repeated or unknown id, or a probability that is not a
finite number, is an error (exit 1) naming it.

Paths: local, or any file system TensorFlow's tf.io.gfile knows (gs://...), for --submission,
--truth and --output. A URL is read and written through tf.io.gfile (TensorFlow imported only
then); a local path through Arrow and open(), so scoring a local file never loads TensorFlow.

--output writes the report as JSON: {log_loss, accuracy, macro_f1, per_class, labels,
confusion_matrix, ece, reliability, num_windows, rows} (ece and reliability: trainer.metrics, of the
renormalized probabilities). Following tfrecords_schema.ownership, an existing file there
is replaced only if it is such a report (a JSON object with SCORE_KEYS); anything else is refused
with one line, before scoring.

Memory: the truth's ids and labels (sorted, about 10 bytes a row); the submission is streamed.
"""

import argparse
import contextlib
import dataclasses
import io
import json
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from cli_common import console, failure
from tfrecords_schema import LABEL_VOCABULARY, ownership, file_io
from tfrecords_schema import csv_columns as cols

CLIP = 1e-15  # Kaggle's bounds: [CLIP, 1 - CLIP]
_BATCH_BYTES = 16 << 20  # CSV bytes per streamed batch (Arrow's block_size)
# The keys that make a JSON file a score report (what --output may replace)
SCORE_KEYS = ("log_loss", "accuracy", "macro_f1", "confusion_matrix", "rows")


class ScoreError(ValueError):
    """The submission or the truth cannot be scored (layout, ids, values)."""


@dataclasses.dataclass
class Truth:
    """ids int64 [n] sorted ascending; labels int8 [n] (index into LABEL_VOCABULARY), same order."""

    ids: np.ndarray
    labels: np.ndarray


@contextlib.contextmanager
def _csv_source(path: str, what: str):
    """What Arrow reads `path` from: the path itself when local (Arrow opens it and decompresses
    `.gz`); a tf.io.gfile stream for a URL (gunzipped for `.gz`). ScoreError when a URL is absent."""
    import pyarrow as pa

    if not file_io.is_remote(path):
        yield path
        return
    import tensorflow as tf

    try:
        if not tf.io.gfile.exists(path):
            raise ScoreError(f"{what} {path}: not found")
        with tf.io.gfile.GFile(path, "rb") as f:
            yield pa.input_stream(io.BufferedReader(_RawGFile(f)), compression="gzip" if path.endswith(".gz") else None)
    except tf.errors.OpError as e:  # permission, network: one line, as for a local file
        raise ScoreError(f"{what} {path}: {e.message}") from None


class _RawGFile(io.RawIOBase):
    """A tf.io.gfile.GFile as the raw stream io.BufferedReader wraps (Arrow takes io streams, not a
    GFile, which lacks `closed`)."""

    def __init__(self, gfile):
        super().__init__()
        self._gfile = gfile

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._gfile.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _batches(path: str, types: Dict[str, Any], what: str):
    """Record batches of the named columns; ScoreError when the header lacks one."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    with _csv_source(path, what) as source:
        try:
            reader = pa_csv.open_csv(
                source, read_options=pa_csv.ReadOptions(block_size=_BATCH_BYTES),
                convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=list(types),
                                                      strings_can_be_null=True))
        except (pa.ArrowInvalid, KeyError) as e:
            raise ScoreError(f"{what} {path}: cannot read the columns {', '.join(types)} ({e})") from None
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as e:
                raise ScoreError(f"{what} {path}: {e}") from None


def write_report(report: Dict[str, Any], path: str) -> None:
    """The report as JSON at `path` (local, or a URL through tf.io.gfile), through a temporary
    name: a kill mid-write leaves the earlier report whole. ScoreError when a URL cannot be
    written (the file system's reason)."""
    text = json.dumps(report, indent=2) + "\n"
    if not file_io.is_remote(path):
        file_io.write_atomic(path, text)
        return
    import tensorflow as tf

    try:
        file_io.write_atomic(path, text)
    except tf.errors.OpError as e:
        raise ScoreError(f"--output {path}: {e.message}") from None


def read_truth(path: str, labels: Sequence[str] = LABEL_VOCABULARY) -> Truth:
    """The truth file's ids and labels, sorted by id; ScoreError on a repeated id or unknown label."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids, codes = [], []
    vocabulary = pa.array(list(labels))
    for batch in _batches(path, {cols.ID: pa.int64(), cols.EVENT: pa.string()}, "truth"):
        index = pc.index_in(batch.column(cols.EVENT), value_set=vocabulary)
        if index.null_count or batch.column(cols.ID).null_count:
            bad = batch.filter(pc.or_(pc.is_null(index), pc.is_null(batch.column(cols.ID)))).slice(0, 1)
            raise ScoreError(f"truth {path}: a row without an id or with an unknown label "
                             f"(expected one of {list(labels)}): {bad.to_pylist()[0]}")
        ids.append(batch.column(cols.ID).to_numpy())
        codes.append(index.to_numpy().astype(np.int8))
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    codes = np.concatenate(codes) if codes else np.zeros(0, np.int8)
    order = np.argsort(ids, kind="stable")
    ids, codes = ids[order], codes[order]
    repeated = ids[1:][ids[1:] == ids[:-1]]
    if len(repeated):
        raise ScoreError(f"truth {path}: id {repeated[0]} appears more than once")
    return Truth(ids=ids, labels=codes)


def score(submission: str, truth_path: str, labels: Sequence[str] = LABEL_VOCABULARY) -> Dict[str, Any]:
    """Score `submission` against `truth_path`.

    Returns {log_loss (Kaggle's), accuracy, macro_f1, per_class, labels, confusion_matrix,
    num_windows, rows}; raises ScoreError when the files cannot be scored.
    """
    import pyarrow as pa

    from trainer import metrics

    truth = read_truth(truth_path, labels)
    n = len(truth.ids)
    seen = np.zeros(n, dtype=bool)
    stream = metrics.StreamingMetrics(labels, clip=CLIP, renormalize=True)  # the competition's log loss
    types = {cols.ID: pa.int64(), **{label: pa.float64() for label in labels}}
    for batch in _batches(submission, types, "submission"):
        if batch.column(cols.ID).null_count:
            raise ScoreError(f"submission {submission}: a row without an id")
        ids = batch.column(cols.ID).to_numpy()
        p = np.stack([batch.column(label).to_numpy(zero_copy_only=False) for label in labels], axis=1)
        where = _positions(truth.ids, ids, seen, submission)
        if not np.isfinite(p).all():
            row = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
            raise ScoreError(f"submission {submission}: id {ids[row]}: probabilities {p[row].tolist()} "
                             "are not all finite numbers")
        y = truth.labels[where].astype(np.int64)
        stream.update(y, p)
    if not seen.all():
        missing = truth.ids[~seen]
        raise ScoreError(f"submission {submission}: {len(missing):,} id(s) of the truth are missing, "
                         f"e.g. {missing[:5].tolist()}")
    if n == 0:
        raise ScoreError(f"truth {truth_path}: no rows")
    report = stream.report()
    report["rows"] = n
    return report


def _positions(truth_ids: np.ndarray, ids: np.ndarray, seen: np.ndarray, submission: str) -> np.ndarray:
    """Where each submission id is in the sorted truth ids; marks them seen. ScoreError on an
    id that is not in the truth, or one seen before."""
    where = np.searchsorted(truth_ids, ids)
    known = np.zeros(len(ids), bool)
    inside = where < len(truth_ids)
    known[inside] = truth_ids[where[inside]] == ids[inside]
    if not known.all():
        raise ScoreError(f"submission {submission}: id {ids[~known][0]} is not in the truth")
    again = seen[where] | _repeats(where)
    if again.any():
        raise ScoreError(f"submission {submission}: id {ids[again][0]} appears more than once")
    seen[where] = True
    return where


def _repeats(where: np.ndarray) -> np.ndarray:
    """True at every position of `where` whose value occurred earlier in `where`."""
    order = np.argsort(where, kind="stable")
    repeat_sorted = np.r_[False, where[order][1:] == where[order][:-1]]
    out = np.zeros(len(where), bool)
    out[order] = repeat_sorted
    return out


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crewstream score",
        description="Score a submission (id,A,B,C,D) against a truth file (id,event) as the Kaggle "
                    "competition does: multi-class log loss with probabilities clipped to "
                    "[1e-15, 1-1e-15] and rows renormalized; also accuracy and macro F1.")
    parser.add_argument("--submission", required=True, help="submission CSV: id,A,B,C,D (.csv or .csv.gz)")
    parser.add_argument("--truth", required=True, help="truth CSV: id,event (e.g. synth's test_truth.csv)")
    parser.add_argument("--output", default=None, metavar="PATH", help="also write the report as JSON here")
    console.add_verbose(parser)
    return parser.parse_args(argv)


@failure.command("score")
def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    from trainer import metrics

    console.check_exists(args.submission, "--submission")
    console.check_exists(args.truth, "--truth")
    hold = (ownership.hold(args.output, f"--output {args.output}", folder=False)
            if args.output else contextlib.nullcontext())
    with hold:
        if args.output:
            ownership.check_output_json(args.output, SCORE_KEYS, [args.submission, args.truth],
                                        label=f"--output {args.output}")
        report = score(args.submission, args.truth)
        if args.output:
            write_report(report, args.output)
    print(f"{args.submission} against {args.truth}: {report['rows']:,} ids\n")
    print(metrics.format_report(report))
    print(f"\nlog loss (Kaggle: clipped to [1e-15, 1-1e-15], rows renormalized) {report['log_loss']:.5f}  "
          f"accuracy {report['accuracy']:.4f}  macro F1 {report['macro_f1']:.4f}")
    return 0


if __name__ == "__main__":
    failure.run_process(main)
