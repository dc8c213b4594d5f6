"""Replayed bundles: a runner that retries work gives the same output, byte for byte.

Beam may run a bundle more than once (a retry after a worker failure, a speculative copy); the
FnApiRunner's bundle repeat (`--direct_runner_bundle_repeat N`) runs every bundle N extra
times before the real run, side effects included, and discards the extra runs' outputs. Every
DoFn of the job that writes files (block files, shard pieces, shards, rejects, the manifest) must
therefore write the same file with the same bytes on each attempt.

tf.Transform's own WriteTransformFn is not replay-safe: its last step renames a temporary folder
into place and deletes the temporary root, so a second attempt finds nothing to rename
(NotFoundError). The first test pins that down (why the job uses beam_jobs.scaling's writer); the
second runs the job as it is under replay.
"""

import os

import pytest

from beam_jobs import preprocess
from tests.helpers import make_frame, write_crew_csv
from tests.reference import read_output

FLAGS = ["--features", "r,ecg,gsr", "--window", "16", "--stride", "4", "--eval-crews", "2",
         "--num-shards", "3", "--split-bytes", "200000"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    """Several byte ranges, with an unknown label and a duplicate-time row (the rejects paths)."""
    path = tmp_path_factory.mktemp("replay") / "train.csv"
    write_crew_csv(path, make_frame(crews=(1, 2, 3), rows_per_recording=400, seed=4))
    lines = path.read_text().splitlines()
    lines[50] = lines[50].rsplit(",", 1)[0] + ",E"
    lines.insert(70, lines[90])
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(csv, out, *extra):
    return preprocess.run(["--input", csv, "--output", str(out), *FLAGS, *extra])


def output_files(out):
    """{relative path: bytes} of the shards, stats.json and rejects."""
    names = ["stats.json", "rejects/rejects.csv"]
    names += [os.path.join(split, n) for split in ("train", "eval") for n in sorted(os.listdir(out / split))]
    return {name: (out / name).read_bytes() for name in names}


@pytest.mark.slow
def test_tf_transform_write_transform_fn_fails_when_replayed(tmp_path, csv, monkeypatch):
    """Why the job has its own writer: with tf.Transform's, a replayed bundle fails its publish step."""
    import tensorflow_transform.beam as tft_beam

    from beam_jobs import scaling

    # tf.Transform's writer in the job's place (ours also takes the feature count, for the raw schema)
    monkeypatch.setattr(scaling, "WriteTransformFn", lambda path, num_features: tft_beam.WriteTransformFn(path))
    with pytest.raises(Exception, match="PublishMetadataAndTransformFn"):
        run(csv, tmp_path / "replayed", "--direct_runner_bundle_repeat", "1")
    assert not (tmp_path / "replayed" / "stats.json").exists()


@pytest.mark.slow
def test_replayed_bundles_give_the_same_records_and_stats(tmp_path, csv):
    once = run(csv, tmp_path / "once")
    replayed = run(csv, tmp_path / "replayed", "--direct_runner_bundle_repeat", "2")
    assert once["rejected_rows"] == 2
    assert replayed == once
    assert output_files(tmp_path / "replayed") == output_files(tmp_path / "once")
    # read_output fails on a window written twice; the key sets say none is missing
    _, found_once, _ = read_output(str(tmp_path / "once"))
    _, found_replayed, _ = read_output(str(tmp_path / "replayed"))
    assert found_replayed.keys() == found_once.keys()
    assert len(found_once) == sum(once["splits"][s]["num_windows"] for s in ("train", "eval")) > 0
