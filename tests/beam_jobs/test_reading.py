"""The steps both jobs share (beam_jobs.reading) on a TestPipeline, empty input included."""

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import reading
from beam_jobs.csv_reader import Reject
from tests.helpers import make_frame, pipeline, rows_of, write_crew_csv

FEATURES = ["r", "ecg", "gsr"]


@pytest.mark.parametrize("split_bytes", [1 << 20, 3000])
def test_read_crew_csv_rows_and_rejects(tmp_path, split_bytes):
    frame = make_frame(crews=(1, 2), experiments=("CA",), rows_per_recording=50, features=FEATURES)
    good = write_crew_csv(tmp_path / "a.csv", frame)
    with open(good) as f:
        lines = f.read().splitlines()
    lines[5] = lines[5].replace(",CA,", ",XX,")
    bad = tmp_path / "b.csv"
    bad.write_text("\n".join(lines) + "\n")
    files = [good, str(bad)]
    with pipeline() as p:
        out = p | reading.ReadCrewCsv(files, FEATURES, span_bytes=2048, split_bytes=split_bytes)
        lines = (out.rows | beam.FlatMap(lambda r: [(int(r.source[0]), int(x)) for x in r.line])
                 | beam.combiners.ToList() | beam.Map(sorted))
        every_line = sorted([(0, i) for i in range(2, 202)] + [(1, i) for i in range(2, 202) if i != 6])
        assert_that(lines, equal_to([every_line]), label="every line once")
        assert_that(out.rejects | beam.Map(lambda r: (r.file, r.line, r.column)),
                    equal_to([(str(bad), 6, "experiment")]), label="rejects")


def test_read_crew_csv_header_only(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(",".join(make_frame(rows_per_recording=1).columns) + "\n")
    with pipeline() as p:
        out = p | reading.ReadCrewCsv([str(path)], FEATURES)
        assert_that(out.rows, equal_to([]), label="rows")
        assert_that(out.rejects, equal_to([]), label="rejects")


def test_spill_by_recording_writes_one_block_per_recording(tmp_path):
    from beam_jobs import blocks

    rows = rows_of([1, 1, 2, 1])
    rows.seat[:] = [0, 1, 0, 0]
    rows.time[:] = [0.5, 0.25, 3.0, 2.5]
    with pipeline() as p:
        out = (p | beam.Create([rows], reshuffle=False)
               | beam.ParDo(reading.SpillByRecordingFn(str(tmp_path))).with_outputs(reading.HISTOGRAM, main="files"))
        files = out.files | beam.Map(lambda kv: (kv[0], blocks.read_spill(kv[1][0]).line.tolist(),
                                                 kv[1][1].tolist(), kv[1][2].tolist()))
        assert_that(files, equal_to([((1, 0, "CA"), [2, 5], [0, 2], [1, 1]), ((1, 1, "CA"), [3], [0], [1]),
                                     ((2, 0, "CA"), [4], [3], [1])]), label="files")
        histograms = out[reading.HISTOGRAM] | beam.Map(lambda kv: (kv[0], kv[1][0].tolist(), kv[1][1].tolist()))
        assert_that(histograms, equal_to([((1, 0, "CA"), [0, 2], [1, 1]), ((1, 1, "CA"), [0], [1]),
                                          ((2, 0, "CA"), [3], [1])]), label="histograms")


def test_spill_by_recording_empty(tmp_path):
    with pipeline() as p:
        out = p | beam.Create([]) | beam.ParDo(reading.SpillByRecordingFn(str(tmp_path)))
        assert_that(out, equal_to([]))


def test_write_rejects_sorted_csv_and_empty(tmp_path):
    rejects = [Reject("b.csv", 3, "r", "not a number", 'x,"y"', id=7), Reject("a.csv", 9, "", "empty line", "")]
    one, two = tmp_path / "one" / "rejects.csv", tmp_path / "two" / "rejects.csv"
    with pipeline() as p:
        count = p | "some" >> beam.Create(rejects) | "w1" >> reading.WriteRejects(str(one))
        assert_that(count, equal_to([2]), label="count")
        none = p | "none" >> beam.Create([]) | "w2" >> reading.WriteRejects(str(two))
        assert_that(none, equal_to([0]), label="zero")
    text = one.read_text().splitlines()
    assert text == ["file,line,column,reason,id,text", "a.csv,9,,empty line,,", 'b.csv,3,r,not a number,7,"x,""y"""']
    assert pd.read_csv(one, keep_default_na=False).to_dict("records")[1]["text"] == 'x,"y"'  # any CSV reader
    assert not two.parent.exists()
