"""The submission file predict writes: `id,A,B,C,D`, one row per input id, complete or absent.

Workers write their rows as pieces (headerless CSV text, one per predicted time block, plus one
of the uniform rows of rejected rows that keep their id) under the run's staging folder; the
launcher then concatenates them, header first, in a fixed order (`piece_order`) into a file in
the staging folder and renames it over the output, so the bytes do not depend on the runner, the
workers or --block-rows, and a killed run leaves the earlier file (or none) under the output name.

Probabilities are written as Arrow writes a float32: the shortest text that reads back as the same
float32 (a row's four values still sum to 1 within float32 rounding). A `.gz` output is
gzip-compressed as it is concatenated.
"""

import contextlib
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from tfrecords_schema import LABEL_VOCABULARY, csv_columns as cols
from tfrecords_schema import ownership, file_io

COPY_BLOCK = 16 << 20
HEADER = ",".join([cols.ID, *LABEL_VOCABULARY])


def check_outputs(output: str, input_path: str) -> None:
    """OwnershipError unless the submission and its rejects file may be written: neither is the
    input, and each is absent or a file crewstream wrote, known by its exact first line (HEADER;
    beam_jobs.rejects.HEADER), never a folder or a symbolic link."""
    from beam_jobs import rejects

    label = f"--output {output}"
    ownership.check_output_file(output, HEADER, [input_path], label)
    path = rejects.beside(output)
    ownership.check_output_file(path, ",".join(rejects.HEADER), [input_path], f"{label}: its rejects file {path}")


def csv_rows(ids: np.ndarray, probabilities: np.ndarray) -> bytes:
    """Headerless `id,A,B,C,D` lines: ids int64 [n], probabilities float32 [n, K] in label order.

    Each column is cast to text by pyarrow (the cast its CSV writer makes: shortest float32 text,
    `1`, `0.25`, `3e-8`) and the cells joined by pyarrow's element-wise join, off the GIL; the
    lines' bytes are the joined array's data buffer. The same bytes as
    pyarrow.csv.write_csv(include_header=False, quoting_style="none"), about 1.5 times faster
    (tests/beam_jobs/test_submission.py holds the two side by side)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(ids) == 0:
        return b""
    cells = [pc.cast(pa.array(np.asarray(ids, np.int64)), pa.string())]
    cells += [pc.cast(pa.array(np.asarray(probabilities[:, k], np.float32)), pa.string())
              for k in range(probabilities.shape[1])]
    return joined_lines(cells)


def joined_lines(cells) -> bytes:
    """Headerless CSV lines of pyarrow string arrays of one length (one per column, cells that
    need no quoting), joined by pyarrow off the GIL; the bytes are the joined array's data."""
    import pyarrow.compute as pc

    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*cells, ","), "", "\n")  # line + "\n" + ""
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]].tobytes()


@contextlib.contextmanager
def piece_writer(path: str) -> Iterator[Callable[[np.ndarray, np.ndarray], None]]:
    """A function (ids, probabilities) that appends their `csv_rows` to the piece at `path`."""
    with file_io.open_file(path, "wb") as f:
        yield lambda ids, probabilities: f.write(csv_rows(ids, probabilities))


def write_piece(path: str, ids: np.ndarray, probabilities: np.ndarray) -> None:
    with piece_writer(path) as write:
        write(ids, probabilities)


def piece_path(staging: str, name: str) -> str:
    return file_io.join(staging, "pieces", name)


def merge(pieces: Sequence[str], staging: str, output: str) -> None:
    """HEADER and the pieces, in the order given, into `output` (local or URL): written whole in
    the staging folder, then renamed over `output`."""
    import gzip

    staged = file_io.join(staging, "submission" + (".csv.gz" if output.endswith(".gz") else ".csv"))
    with file_io.open_file(staged, "wb") as raw:
        sink = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if output.endswith(".gz") else raw
        sink.write((HEADER + "\n").encode())
        if sink is raw:
            file_io.append_files(pieces, raw, COPY_BLOCK)
        else:
            file_io.copy_files(pieces, sink.write, COPY_BLOCK)
        if sink is not raw:
            sink.close()
    file_io.replace(staged, output)


def piece_order(pieces: Iterable[dict]) -> list:
    """The pieces' paths in submission order: the uniform rows of rejected rows first (in line
    order), then each recording in key order, its time blocks in time order."""
    return [p["path"] for p in sorted(pieces, key=lambda p: (p["recording"] is not None,
                                                             tuple(p["recording"] or ()), p["block"]))]
