"""Tiny crew CSVs for tests, written the way the real file is ordered.

`write_crew_csv` lays rows out like Kaggle's train.csv: one (crew, experiment) after another,
both seats interleaved, and `time` ordered as TEXT within it (so 10.5 comes before 2.0).
"""

import numpy as np
import pandas as pd
from tfrecords_schema import LABEL_VOCABULARY
from tfrecords_schema import csv_columns as cols

def make_frame(crews=(1, 2, 3), experiments=("CA", "DA", "SS"), rows_per_group=700, seed=0,
               gap_at=None, features=cols.SIGNALS):
    """A train-layout DataFrame; `gap_at` = (row index, seconds) inserts a time gap in every group.

    Signals differ per person (offset and scale) and per class, labels change every ~150 rows.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for crew in crews:
        for experiment in experiments:
            for seat in cols.SEATS:
                time = np.arange(rows_per_group) / cols.SAMPLE_RATE_HZ
                if gap_at is not None:
                    time[gap_at[0]:] += gap_at[1]
                labels = np.array(LABEL_VOCABULARY)[(np.arange(rows_per_group) // 150 + crew + seat) % 4]
                offset, scale = rng.normal(0, 50, len(features)), rng.uniform(1, 20, len(features))
                values = rng.normal(size=(rows_per_group, len(features))) * scale + offset
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

