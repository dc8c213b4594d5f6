"""The output folder of a preprocess run (docs/DESIGN.md, "The output folder of a preprocess run").

    OUT/train/part-SSSSS-of-NNNNN.tfrecord[.gz]
    OUT/eval/part-SSSSS-of-NNNNN.tfrecord[.gz]
    OUT/stats.json            written last; its presence means the run completed
    OUT/transform_fn/  OUT/transformed_metadata/   (tf.Transform's own layout)
    OUT/metadata/schema.pbtxt  the raw schema (the graph's input), as tft_beam.WriteMetadata writes
                              it: tft.TFTransformOutput(OUT).raw_feature_spec() reads it
    OUT/rejects/              dead-letter rows with file, line and reason

Paths are joined with `posixpath` so that the same code names files on gs://, s3:// and local disk.
"""

import os
import posixpath

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)

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


def is_remote(path: str) -> bool:
    """A URL (gs://..., ram://...), which only TensorFlow's or Beam's file systems read and write;
    anything else is a local path."""
    return "://" in path


def join(root: str, *parts: str) -> str:
    """Join OUT (local path or URL such as gs://bucket/x) with relative parts."""
    return posixpath.join(root.rstrip("/") if root not in ("/",) else root, *parts)


def open_file(path: str, mode: str = "rb"):
    """`path` opened in `mode`: a local path with the builtin `open`, a URL with tf.io.gfile.GFile
    (imported only then). Writing creates the folder. The jobs' intermediate files go through here:
    tf.io.gfile's local writes ran at about 120 MB/s where `open` writes at memory speed."""
    if is_remote(path):
        import tensorflow as tf

        if "r" not in mode:
            tf.io.gfile.makedirs(posixpath.dirname(path))
        return tf.io.gfile.GFile(path, mode)
    if "r" not in mode:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, mode)


def copy_files(paths, write, block: int = 16 << 20) -> None:
    """Pass the bytes of each file of `paths` (local or URL), in order, to `write`, `block` bytes
    at a time: the copy loop of the jobs' concatenations (shards, the submission)."""
    for path in paths:
        with open_file(path, "rb") as f:
            while True:
                data = f.read(block)
                if not data:
                    break
                write(data)


def write_bytes(path: str, data: bytes) -> None:
    with open_file(path, "wb") as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def replace(src: str, dst: str) -> None:
    """Rename the file `src` over `dst` (on one file system: a local rename is atomic; on an object
    store a copy, then a delete of `src`)."""
    if is_remote(dst):
        import tensorflow as tf

        tf.io.gfile.rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)
