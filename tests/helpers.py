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
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from beam_jobs import scaling

    rows = [np.float32([-1, -1, -1]), np.float32([1, 1, 1])]
    with tft_beam.Context(temp_dir=os.path.join(staging, "tmp")):
        transform_fn = (
            (p | "Stats" >> beam.Create([scaling.signals_record_batch(np.stack(rows))]),
             scaling.tensor_adapter_config(3))
            | tft_beam.AnalyzeDataset(scaling.zscore_preprocessing_fn))
        return transform_fn | tft_beam.WriteTransformFn(staging)
