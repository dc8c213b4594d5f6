"""The tf.data input of the trainer: a split's TFRecord shards streamed into (window, label, weight).

    shard list (stats.json) -> [shuffle files] -> parallel interleave of TFRecordDatasets
    -> [bounded shuffle buffer] -> [repeat] -> batch -> vectorized parse -> weight by label
    -> prefetch

A sequence folder (docs/DESIGN.md "Layouts") yields the same batches of windows of any size and
stride, cut from its chunk records inside the pipeline (`_cut_windows`):

    ... interleave -> [shuffle records] -> cuts of records -> vectorized parse, window starts
    -> runs of windows (one gather each) -> [shuffle runs] -> [repeat] -> rebatch -> weight

With `data_service`, everything up to the weights runs on tf.data service workers; the trainer
only re-cuts the batches it receives (see `offload`).

Nothing here holds a split in memory: what is resident is the shuffle buffer, one read buffer per
open shard and a few prefetched batches. Window size, feature count and the shard list come from
stats.json (the reader learns the data from the artifact); the record is parsed with tfrecords_schema's spec.
"""

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import tensorflow as tf

from tfrecords_schema import LABEL, WINDOW, parse_examples, read_stats, sequence, shard_files, output_folder
from tfrecords_schema.record import CONTEXT, LABELS, POSITION, ROWS, parse_chunks
from trainer import weights as weights_lib
from trainer.config import DEFAULT_SHUFFLE_BUFFER

# Shards read at once. Each shard holds its windows recording after recording, so the number of
# recordings a batch can mix is bounded by the shards open; each costs one read buffer (~256 KB).
MAX_OPEN_SHARDS = 64
# Sequence layout: chunk records held in the shuffle buffer before they are cut (a chunk is C
# rows + context: ~400 KB at C=4096, F=23), chunk records per cut (parsed together; a run mixes
# their windows), cuts read in turn, and windows per run (one gather; runs are the elements of
# the window-level shuffle buffer, which holds shuffle_buffer // WINDOWS_PER_GATHER of them).
CHUNK_SHUFFLE_BUFFER = 16
CHUNKS_PER_CUT = 16
OPEN_CUTS = 2
WINDOWS_PER_GATHER = 64
_COMPRESSION_TYPES = {"NONE": "", "GZIP": "GZIP"}


class EmptySplitError(ValueError):
    """The split (or this reader's part of it) has no windows."""


class ShardingError(ValueError):
    """A split has fewer shards than the workers that read it by file."""


class WindowError(ValueError):
    """The folder cannot give the windows asked for: a window or stride other than a windows
    folder's own, a window larger than a sequence folder's, or dense input from a windows folder."""


def check_shards(stats: Dict[str, Any], split: str, num_workers: int) -> None:
    """ShardingError unless every one of `num_workers` workers gets at least one shard of `split`.

    FILE auto-sharding gives worker k the shards k, k + num_workers, ...; with fewer shards than
    workers some worker would get none (tf.data then fails deep inside the first step). A split
    without shards is left to EmptySplitError.
    """
    shards = len(stats["splits"][split]["shards"])
    if 0 < shards < num_workers:
        raise ShardingError(
            f"split {split!r} has {shards} shard(s) but {num_workers} workers read it by file; "
            f"re-run preprocess with --num-shards {num_workers} or more (a multiple of the "
            "workers balances them best), or train on fewer workers")


def reader_shards(stats: Dict[str, Any], split: str, num_readers: int = 1,
                  reader_index: int = 0) -> List[Dict[str, Any]]:
    """The stats.json shard entries that reader `reader_index` of `num_readers` reads.

    Shard i goes to reader i % num_readers, the assignment of tf.data's FILE auto-sharding and of
    `Dataset.shard` on the file list.
    """
    if not 0 <= reader_index < num_readers:
        raise ValueError(f"reader_index {reader_index} is outside 0..{num_readers - 1}")
    return stats["splits"][split]["shards"][reader_index::num_readers]


def num_windows(stats: Dict[str, Any], split: str, num_readers: int = 1, reader_index: int = 0) -> int:
    """Windows one reader sees per epoch, from the per-shard counts."""
    return sum(s["num_windows"] for s in reader_shards(stats, split, num_readers, reader_index))


def steps_per_epoch(stats: Dict[str, Any], split: str, batch_size: int, num_readers: int = 1,
                    reader_index: int = 0) -> int:
    """Batches in one pass over the reader's shards: ceil(windows / batch_size)."""
    return math.ceil(num_windows(stats, split, num_readers, reader_index) / batch_size)


def windowed_stats(stats: Dict[str, Any], window: Optional[int] = None,
                   stride: Optional[int] = None) -> Dict[str, Any]:
    """stats.json as a reader of the windows of (`window`, `stride`) sees it (None: the folder's
    own `window` / `stride`): a copy whose `window` and `stride` are those, and whose splits'
    `num_windows`, `class_counts` and shards' `num_windows` count those windows
    (tfrecords_schema.sequence.window_counts). Everything else (layout, features, shards' files
    and chunks) is kept, so the counting functions above and the weights read it as a windows
    folder's. A windows-layout folder is returned as is; WindowError for another window or stride
    there, or, on a sequence folder, a window outside 1..stats["window"] or a stride < 1."""
    window = stats["window"] if window is None else window
    stride = stats["stride"] if stride is None else stride
    try:
        per_split = {name: sequence.window_counts(stats, name, window, stride) for name in stats["splits"]}
    except ValueError as e:
        raise WindowError(str(e)) from None
    if sequence.layout_of(stats) == sequence.WINDOWS:
        return stats
    splits = {}
    for name, entry in stats["splits"].items():
        counts = per_split[name]
        shards = [dict(shard, num_windows=n["num_windows"]) for shard, n in zip(entry["shards"], counts["shards"])]
        splits[name] = dict(entry, num_windows=counts["num_windows"], class_counts=counts["class_counts"],
                            shards=shards)
    return dict(stats, window=window, stride=stride, splits=splits)


def check_distribution(stats: Dict[str, Any], data_service: Optional[str] = None) -> None:
    """WindowError for a sequence folder read through a tf.data service: its dynamic sharding
    splits the pipeline at a source, and the sequence pipeline's per-cut datasets of runs are
    sources too (they make tf.distribute's FILE auto-sharding shard the runs instead of the
    files, which is why several workers get a SHARD_HINT instead); not tested with the service."""
    if sequence.layout_of(stats) == sequence.SEQUENCE and data_service:
        raise WindowError("a sequence folder is not read through a tf.data service yet: train "
                          "without --data-service, or preprocess with --layout windows")


class _SplitSource(NamedTuple):
    """Where both dataset builders read a split from (see `_split_source`)."""

    stats: Dict[str, Any]  # stats.json as the reader's windows count it (windowed_stats)
    files: List[str]  # this reader's shard files
    readers: int  # readers the split's shards are divided between
    index: int  # this reader's place among them
    lookup: tf.Tensor  # float32 [K]: the weight of each label index


def _split_source(data_dir: str, split: str, batch_size: int, weighting: str,
                  stats: Optional[Dict[str, Any]], window: Optional[int], stride: Optional[int], *,
                  input_context: Optional[tf.distribute.InputContext] = None, num_workers: int = 1,
                  dense: bool = False) -> _SplitSource:
    """The start of `make_dataset` and `make_dense_dataset`: stats.json (`stats` if given, else
    read from `data_dir`) as `windowed_stats(stats, window, stride)` counts it, checked against
    the request, this reader's part of the split's shards (by `input_context`) and the weights
    (`weighting`, from the TRAIN split's class counts). Raises WindowError (with `dense`: for a
    folder of another layout than sequence), ValueError (an unknown split, batch_size < 1),
    ShardingError (fewer shards than `num_workers`), EmptySplitError (no window for this reader).
    """
    stats = read_stats(data_dir) if stats is None else stats
    if dense and sequence.layout_of(stats) != sequence.SEQUENCE:
        raise WindowError(f"{data_dir}: dense training reads a sequence folder's chunks; this one has the "
                          f"{sequence.layout_of(stats)} layout (preprocess with --layout sequence)")
    stats = windowed_stats(stats, window, stride)
    if split not in output_folder.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {output_folder.SPLITS}")
    if split not in stats["splits"]:
        raise EmptySplitError(f"{data_dir} has no {split} split (preprocess with --{split}-crews)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_shards(stats, split, num_workers)
    readers, index = ((input_context.num_input_pipelines, input_context.input_pipeline_id)
                      if input_context else (1, 0))
    files = shard_files(data_dir, stats, split)[index::readers]
    if not files or num_windows(stats, split, readers, index) == 0:
        raise EmptySplitError(f"{data_dir}: split {split!r} has no window of {stats['window']} rows"
                              + (f" for reader {index} of {readers}" if readers > 1 else ""))
    lookup = tf.constant(weights_lib.weight_vector(stats["splits"][output_folder.TRAIN]["class_counts"], weighting))
    return _SplitSource(stats, files, readers, index, lookup)


def make_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    weighting: str = weights_lib.BALANCED,
    shuffle: bool = False,
    repeat: bool = False,
    window: Optional[int] = None,
    stride: Optional[int] = None,
    *,
    seed: Optional[int] = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    stats: Optional[Dict[str, Any]] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    num_workers: int = 1,
    data_service: Optional[str] = None,
) -> tf.data.Dataset:
    """Stream a split of a preprocess output as weighted batches.

    Args:
      data_dir: OUT of a completed preprocess run (local path or URL).
      split: `train` or `eval`.
      batch_size: windows per batch; without `repeat` the last batch of an epoch may be smaller,
        so that every window is seen exactly once per pass.
      weighting: `none`, `balanced` or `effective:BETA` (trainer.weights), always computed from
        the TRAIN split's class counts, also when reading `eval`.
      shuffle: shuffle the shard order and windows through a buffer of `shuffle_buffer` windows;
        without it the order is fixed: one window of each open shard in turn (sequence layout:
        one record of each open shard in turn, parsed CHUNKS_PER_CUT records at a time (a cut),
        runs of WINDOWS_PER_GATHER windows of OPEN_CUTS cuts in turn). A sequence folder also
        shuffles its records (CHUNK_SHUFFLE_BUFFER) and each cut's windows, and its buffer
        holds runs of windows of many chunks (see _cut_windows).
      repeat: repeat forever (the caller then sets steps per epoch); otherwise one pass, whose
        cardinality (batches) is asserted from the per-shard counts of stats.json.
      window, stride: the windows to yield (None: stats.json's `window`, `stride`). A sequence
        folder (stats.json `layout`) cuts them from its chunks: any window in 1..stats["window"],
        any stride >= 1, counted and weighted by `windowed_stats`; the windows of the folder's own
        window and stride are exactly the windows layout's. A windows folder holds one window and
        stride: WindowError (a ValueError) for others.
      seed: seed of the shuffles (None: a different order each run). When shuffling, shards are
        also read and parsed without order guarantees (faster), so a seed does not make the
        order bit-reproducible; without `shuffle` the order is fixed.
      stats: stats.json already read (read from `data_dir` when None).
      input_context: from `distribute_datasets_from_function`: this reader takes shards
        i % num_input_pipelines == input_pipeline_id; without it the dataset is left to tf.data's
        FILE auto-sharding, which assigns shards the same way.
      num_workers: workers of a MultiWorkerMirroredStrategy that will each read this dataset
        through tf.distribute (FILE auto-sharding: worker k reads shards k, k + num_workers, ...,
        the same ones every epoch although the file order is reshuffled: the rewrite cuts the
        file list before its shuffle). ShardingError when the split has fewer shards. With more
        than one worker the batches stay global (`batch_size` windows per step over all
        workers) and the pass is left without a cardinality: the workers' parts differ in size,
        and tf.distribute's partial-batch handling steps every worker until the last one has
        run out, so each window is still seen exactly once per epoch.
      data_service: `grpc://HOST:PORT` of a tf.data service dispatcher: see `offload`.

    Returns:
      A dataset of (window float32 [B, W, F], label int64 [B], weight float32 [B]), W = `window`
      (default stats.json's) and F from stats.json, features in stats.json order.
    """
    if input_context and (num_workers > 1 or data_service):
        raise ValueError("input_context shards the input itself: it excludes num_workers > 1 "
                         "and data_service")
    if data_service and num_workers > 1:
        raise ValueError("data_service with num_workers > 1 is not supported: each worker would "
                         "run its own jobs over the whole split")
    source = _split_source(data_dir, split, batch_size, weighting, stats, window, stride,
                           input_context=input_context, num_workers=num_workers)
    stats, lookup, readers, index = source.stats, source.lookup, source.readers, source.index
    check_distribution(stats, data_service)
    window, num_features = stats["window"], len(stats["features"])

    chunked = sequence.layout_of(stats) == sequence.SEQUENCE
    hint = chunked and num_workers > 1  # tf.distribute shards the file list where the hint is
    ds = _interleave_records(source.files, _COMPRESSION_TYPES[stats["compression"]], shuffle, seed,
                             shard_hint=hint)
    if chunked:  # runs of up to WINDOWS_PER_GATHER windows, shuffled and re-cut into batches as runs
        ds = _cut_windows(ds, num_features, window, stats["stride"], shuffle, seed)
    if shuffle:
        ds = ds.shuffle(max(1, shuffle_buffer // WINDOWS_PER_GATHER) if chunked else shuffle_buffer, seed=seed,
                        reshuffle_each_iteration=True)
    if repeat and not data_service:
        ds = ds.repeat()
    ds = ds.rebatch(batch_size, drop_remainder=False) if chunked else ds.batch(batch_size, drop_remainder=False)

    def parse(serialized: tf.Tensor):
        parsed = parse_examples(serialized, window, num_features)
        label = parsed[LABEL]
        return parsed[WINDOW], label, tf.gather(lookup, label)

    def weigh(windows: tf.Tensor, label: tf.Tensor):
        return windows, label, tf.gather(lookup, label)

    ds = ds.map(weigh if chunked else parse,
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    if data_service:
        ds = offload(ds, data_service, batch_size, repeat)
    if not repeat and num_workers == 1:
        # Known steps let Keras show a progress bar and restart the pass each epoch; a stats.json
        # that disagrees with the shards fails loudly here instead of training on a partial pass.
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            steps_per_epoch(stats, split, batch_size, readers, index)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if input_context or data_service
        else tf.data.experimental.AutoShardPolicy.HINT if hint else tf.data.experimental.AutoShardPolicy.FILE)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def offload(batches: tf.data.Dataset, service: str, batch_size: int, repeat: bool) -> tf.data.Dataset:
    """Run the pipeline `batches` (one pass, not repeated) on the tf.data service at `service`.

    Sharding is DYNAMIC (processing_mode "distributed_epoch"): the dispatcher hands the
    source's elements, here the shard file names, to the service workers one at a time, so each
    shard, and therefore each window, is read once per pass however many service workers there
    are (at most once if a worker dies mid-shard). OFF ("parallel_epochs") would make every
    service worker produce the whole split, i.e. each window once per service worker.

    Every iteration (Keras starts one per epoch) is a new anonymous job, a fresh pass. Each service
    worker ends its part with its own partial batch, so the trainer re-cuts the stream into
    batches of `batch_size`: ceil(windows / batch_size) per pass, as without the service. With
    `repeat` the passes follow one another forever. The workers read the shards themselves: the
    data folder must be at the same path for them (a bucket, or a shared file system).
    """
    service_ops = tf.data.experimental.service
    ds = batches.apply(service_ops.distribute(processing_mode=service_ops.ShardingPolicy.DYNAMIC,
                                              service=service))
    if repeat:
        ds = ds.repeat()
    return ds.rebatch(batch_size, drop_remainder=False)


def _interleave_records(files: Sequence[str], compression_type: str, shuffle: bool,
                        seed: Optional[int], shard_hint: bool = False) -> tf.data.Dataset:
    """Serialized records of `files`, read in parallel; the file list is the only source tensor,
    so FILE auto-sharding splits it between readers. With `shard_hint` the list is cut by
    `shard(SHARD_HINT, SHARD_HINT)`, where the HINT auto-shard policy puts each worker's part
    (FILE auto-sharding would not find the files behind the sequence layout's nested datasets)."""
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shard_hint:
        ds = ds.shard(tf.data.experimental.SHARD_HINT, tf.data.experimental.SHARD_HINT)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression_type),
        cycle_length=min(len(files), MAX_OPEN_SHARDS),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle,
    )


def chunk_windows(position: tf.Tensor, context: tf.Tensor, num_labels: tf.Tensor, window: int,
                  stride: int):
    """The windows of (`window`, `stride`) whose last row is in each of a batch of sequence
    records' chunks (docs/DESIGN.md "Layouts"; the TensorFlow twin of
    tfrecords_schema.sequence.chunk_window_ends): their ends e = window - 1 + i * stride
    (segment rows) in [position, position + num_labels).

    Args: int64 [N] each: the records' `position`, `context` (k) and numbers of labels (c).
    Returns: int64 RaggedTensors [N, (m)]: (starts: each window's first row in its record's
    rows, e - window + 1 - position + k; label rows: its label's index in the record's labels,
    e - position).
    """
    def ends_below(x):  # window ends < x: ceil((x - window + 1) / stride), at least 0
        return tf.maximum(tf.constant(0, tf.int64), -((window - 1 - x) // stride))

    position, context, num_labels = (tf.cast(x, tf.int64) for x in (position, context, num_labels))
    ends = (window - 1) + stride * tf.ragged.range(ends_below(position), ends_below(position + num_labels))
    return ends - (window - 1) - position[:, None] + context[:, None], ends - position[:, None]


def _cut_windows(records: tf.data.Dataset, num_features: int, window: int, stride: int,
                 shuffle: bool, seed: Optional[int]) -> tf.data.Dataset:
    """Serialized sequence records -> runs (windows float32 [G, window, F], labels int64 [G]),
    G <= WINDOWS_PER_GATHER windows of a cut (CHUNKS_PER_CUT chunks).

    A cut's chunks are parsed together (one vectorized parse) and their windows listed by
    `chunk_windows`; a run is one gather of rows[start + 0..window-1] from the cut's rows, so a
    cut's windows are never all in memory at once (stride 1 gives about one window per row).
    OPEN_CUTS cuts are read in turn. With `shuffle`, the chunks go through a buffer and each
    cut's windows are permuted before they are gathered into runs, so a run holds windows of all
    the cut's chunks. Runs, not windows, are the elements after this: tf.data's per-element
    overhead, once per window, would cost more than the gather.
    """
    offsets = tf.range(window, dtype=tf.int64)

    def parse(serialized: tf.Tensor):
        chunks = parse_chunks(serialized, num_features)
        rows, labels = chunks[ROWS], chunks[LABELS]
        starts, label_rows = chunk_windows(chunks[POSITION], chunks[CONTEXT], labels.row_lengths(),
                                           window, stride)
        # into the cut's rows and labels, concatenated
        starts = (starts + tf.cast(rows.row_starts(), tf.int64)[:, None]).flat_values
        label_rows = (label_rows + tf.cast(labels.row_starts(), tf.int64)[:, None]).flat_values
        if shuffle:
            order = tf.random.shuffle(tf.range(tf.size(starts)), seed=seed)
            starts, label_rows = tf.gather(starts, order), tf.gather(label_rows, order)
        return rows.flat_values, starts, tf.gather(labels.flat_values, label_rows)

    def runs(rows: tf.Tensor, starts: tf.Tensor, labels: tf.Tensor) -> tf.data.Dataset:
        return (tf.data.Dataset.from_tensor_slices((starts, labels)).batch(WINDOWS_PER_GATHER)
                .map(lambda first, label: (tf.gather(rows, first[:, None] + offsets), label)))

    if shuffle:
        records = records.shuffle(CHUNK_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    cuts = records.batch(CHUNKS_PER_CUT).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                             deterministic=not shuffle)
    return cuts.interleave(runs, cycle_length=OPEN_CUTS, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=not shuffle)


def num_chunks(stats: Dict[str, Any], split: str, num_readers: int = 1, reader_index: int = 0) -> int:
    """Chunk records one reader of a sequence folder sees per epoch, from the per-shard counts."""
    return sum(s["num_chunks"] for s in reader_shards(stats, split, num_readers, reader_index))


def make_dense_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    weighting: str = weights_lib.BALANCED,
    shuffle: bool = False,
    repeat: bool = False,
    window: Optional[int] = None,
    *,
    seed: Optional[int] = None,
    stats: Optional[Dict[str, Any]] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
    """A sequence folder's chunks for dense training (trainer.model.DenseTraining).

    Yields (rows float32 [B, T, F], labels int64 [B, T], weights float32 [B, T]), B = up to
    `batch_size` chunks. Each chunk's rows are its last min(k, window - 1) context rows (all a
    receptive field <= `window` can use), then its c rows; T is the batch's longest, shorter
    chunks are padded at the end. A row's label is its own where a window of `window` rows ends
    at it (segment row >= window - 1), otherwise -1 (context, a segment's first window - 1 rows,
    padding): over an epoch the labelled rows are exactly the ends of the split's stride-1
    windows, each once. Weights: the label's, from the TRAIN split's stride-1 class counts of
    `window` (windowed_stats), 0 where the label is -1. One pass has exactly
    ceil(chunks / batch_size) batches (asserted); `repeat`, `shuffle` (shards and chunks) and
    `seed` as in make_dataset. WindowError on a windows folder; EmptySplitError when the split
    has no stride-1 window.
    """
    source = _split_source(data_dir, split, batch_size, weighting, stats, window, 1,
                           input_context=input_context, dense=True)
    stats, lookup, readers, index = source.stats, source.lookup, source.readers, source.index
    window, num_features = stats["window"], len(stats["features"])

    def parse(serialized: tf.Tensor):
        chunk = parse_chunks(serialized[None], num_features)
        rows, labels = chunk[ROWS][0], chunk[LABELS][0]
        position, context = chunk[POSITION][0], chunk[CONTEXT][0]
        kept = tf.minimum(context, window - 1)
        ends = position + tf.range(tf.size(labels, out_type=tf.int64))  # each row's segment index
        labels = tf.concat([tf.fill([kept], tf.constant(-1, tf.int64)),
                            tf.where(ends >= window - 1, labels, -1)], axis=0)
        weights = tf.where(labels >= 0, tf.gather(lookup, tf.maximum(labels, 0)), 0.0)
        return rows[context - kept:], labels, weights

    ds = _interleave_records(source.files, _COMPRESSION_TYPES[stats["compression"]], shuffle, seed)
    if shuffle:
        ds = ds.shuffle(CHUNK_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    ds = ds.padded_batch(batch_size, padded_shapes=([None, num_features], [None], [None]),
                         padding_values=(0.0, tf.constant(-1, tf.int64), 0.0))
    if not repeat:
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            math.ceil(num_chunks(stats, split, readers, index) / batch_size)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if input_context else tf.data.experimental.AutoShardPolicy.FILE)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
