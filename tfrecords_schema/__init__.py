"""The contract at the bottom of crewstream: the CSV columns, the records of both layouts, stats.json,
the output folder and who owns it, file I/O and the serving model's contract (docs/DESIGN.md, "The
packages"). Both the writer (beam_jobs) and the readers (trainer, predict, tests) import from here.
"""

from tfrecords_schema import csv_columns
from tfrecords_schema.record import (
    CREW, END_TIME, EXPERIMENT, LABEL, LABEL_VOCABULARY, NUM_CLASSES, RAW_SIGNALS, RECORD_KEYS,
    SCALED_SIGNALS, SEAT, SEQUENCE_KEYS, WINDOW,
    encode_chunks, encode_window_block, encode_windows, feature_spec, label_index, parse_chunks, parse_examples,
    raw_signals_spec, raw_window_spec, sequence_feature_spec,
)
from tfrecords_schema.stats import StatsError, read_stats, shard_files, validate_stats, write_stats

__all__ = [
    "csv_columns", "CREW", "END_TIME", "EXPERIMENT", "LABEL", "LABEL_VOCABULARY", "NUM_CLASSES", "RAW_SIGNALS",
    "RECORD_KEYS", "SCALED_SIGNALS", "SEAT", "SEQUENCE_KEYS", "WINDOW", "encode_chunks", "encode_window_block",
    "encode_windows", "feature_spec", "label_index", "parse_chunks", "parse_examples", "raw_signals_spec",
    "raw_window_spec", "sequence_feature_spec", "StatsError", "read_stats", "shard_files", "validate_stats",
    "write_stats",
]
