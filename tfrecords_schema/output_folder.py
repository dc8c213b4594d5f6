"""The output folder of a preprocess run (docs/DESIGN.md, "The output folder of a preprocess run").

    OUT/train/part-SSSSS-of-NNNNN.tfrecord[.gz]
    OUT/val/part-SSSSS-of-NNNNN.tfrecord[.gz]    only with --val-crews: what is chosen or fitted after
    OUT/eval/part-SSSSS-of-NNNNN.tfrecord[.gz]   the weights looks at val; figures report eval
    OUT/stats.json            written last; its presence means the run completed
    OUT/transform_fn/  OUT/transformed_metadata/   (tf.Transform's own layout)
    OUT/metadata/schema.pbtxt  the raw schema (the graph's input), as tft_beam.WriteMetadata writes
                              it: tft.TFTransformOutput(OUT).raw_feature_spec() reads it
    OUT/rejects/              dead-letter rows with file, line and reason

Reading and writing them: tfrecords_schema.file_io.
"""

import posixpath

TRAIN = "train"
VAL = "val"
EVAL = "eval"
SPLITS = (TRAIN, VAL, EVAL)  # every split there can be; val only when preprocess had --val-crews
REQUIRED_SPLITS = (TRAIN, EVAL)  # in every output (eval empty without --eval-crews)

STATS_FILE = "stats.json"
REJECTS_DIR = "rejects"
REJECTS_FILE = "rejects.csv"
STAGING_PREFIX = ".staging-"  # OUT/.staging-XXXX/: a run's private folder until it publishes
TRANSFORM_FN_DIR = "transform_fn"
TRANSFORMED_METADATA_DIR = "transformed_metadata"
RAW_METADATA_DIR = "metadata"  # tft.TFTransformOutput.RAW_METADATA_DIR
# tf.Transform's output as TFTransformOutput(OUT) reads it: the graph and both schemas
TRANSFORM_DIRS = (TRANSFORM_FN_DIR, TRANSFORMED_METADATA_DIR, RAW_METADATA_DIR)

COMPRESSIONS = {"NONE": ".tfrecord", "GZIP": ".tfrecord.gz"}


def splits_of(stats) -> list:
    """The splits a stats.json has, in SPLITS order: train and eval, and val when it was asked for."""
    return [split for split in SPLITS if split in stats["splits"]]


def shard_name(shard: int, num_shards: int, compression: str = "NONE") -> str:
    """`part-00003-of-00016.tfrecord` (`.tfrecord.gz` for GZIP)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    return f"part-{shard:05d}-of-{num_shards:05d}{COMPRESSIONS[compression]}"


def shard_path(split: str, shard: int, num_shards: int, compression: str = "NONE") -> str:
    """The shard's path relative to OUT, as listed in stats.json: `train/part-...`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return posixpath.join(split, shard_name(shard, num_shards, compression))
