"""`crewstream verify OUT`: a real preprocess output passes; each kind of damage is named."""

import gzip
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crewstream import cli
from tests.helpers import make_frame, write_crew_csv
from tfrecords_schema import verify

SHARD = "train/part-00001-of-00002.tfrecord"
RECORD = 5  # the record the tests damage


@pytest.fixture(scope="module")
def good_out(tmp_path_factory):
    """OUT of the real preprocess job on a tiny CSV (read-only: tests damage copies)."""
    from beam_jobs import preprocess

    root = tmp_path_factory.mktemp("verify")
    csv = write_crew_csv(root / "train.csv", make_frame(crews=(1, 2), rows_per_recording=120, seed=3))
    out = root / "out"
    preprocess.run(["--input", csv, "--output", str(out), "--features", "r,ecg,gsr", "--window", "8",
                    "--stride", "2", "--eval-crews", "2", "--num-shards", "2"])
    return out


@pytest.fixture
def out(tmp_path, good_out):
    copy = tmp_path / "out"
    shutil.copytree(good_out, copy)
    return copy


def record_offsets(path):
    """(start, length) of each record of an uncompressed TFRecord file, from its framing."""
    data, offsets, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        offsets.append((pos, length))
        pos += 12 + length + 4
    return offsets


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


def edit_stats(out, change):
    stats = json.loads((out / "stats.json").read_text())
    change(stats)
    (out / "stats.json").write_text(json.dumps(stats))


def problems(out):
    report = verify.verify(str(out))
    assert not report.ok
    return report.problems


def test_a_complete_output_passes(good_out, capsys):
    report = verify.verify(str(good_out))
    stats = json.loads((good_out / "stats.json").read_text())
    assert report.ok, report.problems
    assert report.num_records == sum(stats["splits"][s]["num_windows"] for s in ("train", "eval")) > 0
    assert report.num_shards == 4
    assert cli.main(["verify", str(good_out)]) == 0
    assert "ok: 4 shard(s)" in capsys.readouterr().out


@pytest.mark.parametrize("where, reason", [
    ("data", "data CRC mismatch (corrupted record)"),
    ("length", "length CRC mismatch (corrupted record header)"),
    ("data_crc", "data CRC mismatch (corrupted record)"),
])
def test_a_flipped_byte_names_the_shard_and_the_record(out, where, reason, capsys):
    path = out / SHARD
    start, length = record_offsets(path)[RECORD]
    flip_byte(path, start + {"data": 12 + 40, "length": 3, "data_crc": 12 + length}[where])
    assert problems(out) == [f"{SHARD}: record {RECORD} (byte {start:,}): {reason}"]
    assert cli.main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{SHARD}: record {RECORD} " in err and "1 problem(s)" in err


@pytest.mark.parametrize("cut", [12 + 30, 5], ids=["inside-the-data", "inside-the-header"])
def test_a_truncated_shard_names_the_record_where_it_ends(out, cut):
    """Cut inside a header too: tf.data would read that file as a valid, shorter one."""
    path = out / SHARD
    start, _ = record_offsets(path)[RECORD]
    path.write_bytes(path.read_bytes()[:start + cut])
    (problem,) = problems(out)
    assert problem.startswith(f"{SHARD}: record {RECORD} (byte {start:,}): truncated")


def test_a_wrong_record_count_in_stats_json(out):
    def add_one(stats):  # stays a valid stats.json: the split's totals move with the shard
        train = stats["splits"]["train"]
        train["shards"][1]["num_windows"] += 1
        train["num_windows"] += 1
        train["class_counts"]["A"] += 1

    edit_stats(out, add_one)
    n = len(record_offsets(out / SHARD))
    assert problems(out) == [f"{SHARD}: {n:,} record(s), stats.json lists {n + 1:,}"]


def test_wrong_class_counts_in_stats_json(out):
    def move_one(stats):
        counts = stats["splits"]["eval"]["class_counts"]
        label = next(c for c, n in counts.items() if n > 0)
        other = next(c for c in "ABCD" if c != label)
        counts[label] -= 1
        counts[other] += 1

    edit_stats(out, move_one)
    (problem,) = problems(out)
    assert problem.startswith("eval: class counts {")


def test_a_shard_not_listed_in_stats_json(out):
    shutil.copy(out / SHARD, out / "train" / "part-00002-of-00003.tfrecord")
    assert problems(out) == ["train/part-00002-of-00003.tfrecord: not listed in stats.json (no reader will read it)"]


def test_a_listed_shard_that_is_missing(out):
    os.remove(out / SHARD)
    assert problems(out) == [f"{SHARD}: listed in stats.json but missing"]


@pytest.mark.parametrize("damage", ["absent", "invalid"])
def test_a_folder_without_a_valid_stats_json(out, damage, capsys):
    if damage == "absent":
        os.remove(out / "stats.json")
    else:
        edit_stats(out, lambda s: s.pop("splits"))
    (problem,) = problems(out)
    assert "stats.json" in problem
    assert cli.main(["verify", str(out)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_record_that_does_not_parse_with_the_schema(out):
    """Intact framing around bytes that are not a record of this schema (a foreign writer)."""
    import tensorflow as tf

    path = out / SHARD
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    records[RECORD] = b"not an Example"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    digest, parse = problems(out)
    assert parse.startswith(f"{SHARD}: record {RECORD}: does not parse with the schema")
    assert digest.startswith(f"{SHARD}: its bytes are not the shard stats.json lists (sha256 ")


def test_a_leftover_staging_folder_is_a_note_not_a_problem(out):
    (out / ".staging-0123456789ab" / "pieces").mkdir(parents=True)
    report = verify.verify(str(out))
    assert report.ok and report.notes == [".staging-0123456789ab: left by a killed run; not part of the output"]


def gzip_copy(out):
    """The same output with GZIP shards (what --compression GZIP writes: the records, gzipped)."""
    def rename(stats):
        stats["compression"] = "GZIP"
        for split in ("train", "eval"):
            for shard in stats["splits"][split]["shards"]:
                src = out / shard["file"]
                shard["file"] += ".gz"
                (out / shard["file"]).write_bytes(gzip.compress(src.read_bytes()))
                shard["sha256"] = hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest()
                os.remove(src)

    edit_stats(out, rename)
    return out / (SHARD + ".gz")


def test_gzip_shards_pass_and_a_truncated_one_is_named(out):
    path = gzip_copy(out)
    assert verify.verify(str(out)).ok
    path.write_bytes(path.read_bytes()[:-30])
    (problem,) = problems(out)
    assert problem.startswith(f"{SHARD}.gz: record ") and ("truncated" in problem or "gzip" in problem)


def test_gzip_shard_with_a_flipped_record_byte_names_the_record(out):
    start, _ = record_offsets(out / SHARD)[RECORD]
    flip_byte(out / SHARD, start + 12 + 40)
    gzip_copy(out)
    assert problems(out) == [f"{SHARD}.gz: record {RECORD} (byte {start:,}): data CRC mismatch (corrupted record)"]


# Content, not just counts: each case below passed `verify` before shard digests and the
# transform graph were checked.

def test_stats_json_lists_the_sha256_of_every_shard(good_out):
    stats = json.loads((good_out / "stats.json").read_text())
    for split in ("train", "eval"):
        for shard in stats["splits"][split]["shards"]:
            assert shard["sha256"] == hashlib.sha256((good_out / shard["file"]).read_bytes()).hexdigest()


def another_runs_shard(path, shift=0.5):
    """The same windows (count, labels, crews, times) with other values: what a run with other
    scaling writes. Re-encoded with the schema's own encoder."""
    import tensorflow as tf

    from tfrecords_schema import encode_windows, parse_examples

    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    parsed = parse_examples(tf.constant(records), 8, 3)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(len(records)):
            (record,) = encode_windows(parsed["window"][i:i + 1].numpy() + shift, parsed["label"][i:i + 1].numpy(),
                                       int(parsed["crew"][i]), int(parsed["seat"][i]),
                                       parsed["experiment"][i].numpy().decode(), parsed["end_time"][i:i + 1].numpy())
            writer.write(record)
    return len(records)


def test_a_shard_replaced_by_a_same_count_shard_of_another_run(out):
    n = len(record_offsets(out / SHARD))
    assert another_runs_shard(out / SHARD) == n == len(record_offsets(out / SHARD))
    (problem,) = problems(out)
    assert problem.startswith(f"{SHARD}: its bytes are not the shard stats.json lists (sha256 ")
    assert problem.endswith("...): replaced or moved")


def test_two_shards_swapped(out):
    a, b = out / "train/part-00000-of-00002.tfrecord", out / SHARD
    assert len(record_offsets(a)) == len(record_offsets(b))  # same counts: only content tells them apart
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert [p.split(":")[0] for p in problems(out)] == ["train/part-00000-of-00002.tfrecord", SHARD]


def test_an_edited_scaling_in_stats_json(out):
    edit_stats(out, lambda s: s["scaling"]["ecg"].update(mean=s["scaling"]["ecg"]["mean"] + 0.01))
    (problem,) = problems(out)
    assert problem.startswith("scaling.ecg: stats.json says mean ")
    assert "the transform graph applies" in problem and "to signal 1 (`features` lists ecg there)" in problem


def test_swapped_features_in_stats_json(out):
    """`features` r,ecg,gsr edited to ecg,r,gsr: still a valid stats.json with the same window size."""
    edit_stats(out, lambda s: s.update(features=["ecg", "r", "gsr"]))
    found = problems(out)
    assert [p.split(":")[0] for p in found] == ["scaling.ecg", "scaling.r"]
    assert "to signal 0 (`features` lists ecg there)" in found[0]


def test_deleted_transform_variables(out, capsys):
    import tensorflow_transform as tft

    shutil.rmtree(out / "transform_fn" / "variables")
    with pytest.raises(Exception):  # what a reader of this output meets
        tft.TFTransformOutput(str(out)).transform_raw_features({"signals": np.zeros((1, 3), np.float32)})
    (problem,) = problems(out)
    assert problem.startswith("transform_fn/: tft.TFTransformOutput(OUT) does not load or run (")
    assert "variables" in problem
    assert cli.main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "does not load or run" in err


def test_no_digests_is_a_note(out):
    """A stats.json written before digests existed: content is checked by CRCs and counts only."""
    def drop(stats):
        for split in ("train", "eval"):
            for shard in stats["splits"][split]["shards"]:
                del shard["sha256"]

    edit_stats(out, drop)
    report = verify.verify(str(out))
    assert report.ok and report.notes == ["stats.json lists no shard digests (a run before they existed): shard "
                                          "contents are checked by CRCs and counts only"]


def test_raw_feature_spec_is_the_raw_row_the_job_analyzed(good_out):
    """TFX's reading of OUT: raw tf.Examples parsed with raw_feature_spec() and transformed by the
    graph give stats.json's scaling of those values."""
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(good_out))
    assert output.raw_feature_spec() == {"signals": tf.io.FixedLenFeature([3], tf.float32)}
    rows = np.array([[0.5, -2.0, 7.25], [3.0, 1.0, -1.5]], np.float32)
    examples = [tf.train.Example(features=tf.train.Features(feature={"signals": tf.train.Feature(
        float_list=tf.train.FloatList(value=row))})).SerializeToString() for row in rows]
    parsed = tf.io.parse_example(examples, output.raw_feature_spec())
    scaled = output.transform_raw_features(parsed)["signals_scaled"].numpy()
    stats = json.loads((good_out / "stats.json").read_text())
    mean = np.array([stats["scaling"][f]["mean"] for f in ("r", "ecg", "gsr")])
    std = np.array([stats["scaling"][f]["std"] for f in ("r", "ecg", "gsr")])
    np.testing.assert_allclose(scaled, (rows - mean) / std, rtol=1e-5, atol=1e-5)


def test_missing_raw_metadata_is_a_note(out):
    """An output written before OUT/metadata existed still verifies; the note says what is missing."""
    shutil.rmtree(out / "metadata")
    report = verify.verify(str(out))
    assert report.ok and report.notes == ["metadata/: absent (a run before it was written): "
                                          "tft.TFTransformOutput(OUT).raw_feature_spec() is unavailable"]


def test_raw_metadata_of_another_width_or_unreadable_is_named(out):
    schema = out / "metadata" / "schema.pbtxt"
    schema.write_text(schema.read_text().replace("size: 3", "size: 2"))
    (problem,) = problems(out)
    assert problem.startswith("metadata/: the raw feature spec is ") and "shape=[2]" in problem
    schema.write_text("feature {")
    (problem,) = problems(out)
    assert problem.startswith("metadata/: tft.TFTransformOutput(OUT).raw_feature_spec() does not load (")


def test_the_command_prints_no_library_notices_by_default(good_out, caplog):
    """tf.Transform logs a notice per optional module it lacks each time it applies the graph
    (struct2tensor...), and TensorFlow writes start-up lines while it loads: the command hides
    both (cli_common.console), the library call shows that there are notices to hide."""
    with caplog.at_level(logging.INFO, logger="tensorflow"):
        assert verify.verify(str(good_out)).ok
    assert any("is not available" in r.getMessage() for r in caplog.records)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "crewstream.cli", "verify", str(good_out)], env=env,
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{good_out}: ok: 4 shard(s)")


def test_the_contract_package_depends_on_neither_crewstream_nor_beam():
    """tfrecords_schema is imported by every other package: importing all of it (verify included)
    loads no crewstream module and no Beam."""
    import pkgutil
    import subprocess
    import sys

    import tfrecords_schema

    names = [f"tfrecords_schema.{m.name}" for m in pkgutil.iter_modules(tfrecords_schema.__path__)]
    code = (f"import importlib, sys; [importlib.import_module(n) for n in {names!r}]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('crewstream', 'apache_beam')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "tfrecords_schema.verify" in names and out.strip() == "[]"
