"""The readers of a preprocess output (make_dataset, evaluate) trust only stats.json: they refuse a
folder without a valid one, and read exactly the shards it lists, nothing a killed run left."""

import json
import os
import shutil

import pytest

from tfrecords_schema import StatsError
from trainer import data, evaluate, weights


@pytest.fixture
def out(tmp_path, prep_dir):
    copy = tmp_path / "out"
    shutil.copytree(prep_dir, copy)
    return copy


def break_stats(out, how):
    if how == "absent":
        os.remove(out / "stats.json")
    elif how == "truncated":  # what a writer killed mid-file would leave, if it wrote in place
        text = (out / "stats.json").read_text()
        (out / "stats.json").write_text(text[:len(text) // 2])
    else:  # valid JSON, inconsistent counts
        stats = json.loads((out / "stats.json").read_text())
        stats["splits"]["train"]["num_windows"] += 1
        (out / "stats.json").write_text(json.dumps(stats))


def add_leftovers(out, stats):
    """An unlisted shard in train/ and eval/, and a killed run's staging folder with shards."""
    for split in ("train", "eval"):
        first = out / stats["splits"][split]["shards"][0]["file"]
        shutil.copy(first, out / split / "part-00007-of-00008.tfrecord")
        staged = out / ".staging-0123456789ab" / split
        staged.mkdir(parents=True)
        shutil.copy(first, staged / first.name)


def windows_read(out, split):
    return sum(len(y) for _, y, _ in data.make_dataset(str(out), split, 100, weighting=weights.NONE))


@pytest.mark.parametrize("how", ["absent", "truncated", "inconsistent"])
def test_make_dataset_refuses_a_folder_without_a_valid_stats_json(out, how):
    break_stats(out, how)
    with pytest.raises(StatsError):
        data.make_dataset(str(out), "train", 8)


def test_make_dataset_reads_only_the_listed_shards(out, stats):
    add_leftovers(out, stats)
    for split in ("train", "eval"):
        assert windows_read(out, split) == stats["splits"][split]["num_windows"]


@pytest.mark.parametrize("how", ["absent", "inconsistent"])
def test_evaluate_refuses_a_folder_without_a_valid_stats_json(tmp_path, out, exported, how, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(exported.model_dir, model_dir)
    break_stats(out, how)
    assert evaluate.main(["--data", str(out), "--model-dir", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "stats.json" in err and "Traceback" not in err
    assert not (model_dir / "eval.json").exists()


def test_evaluate_reads_only_the_listed_shards(tmp_path, out, exported, stats):
    model_dir = tmp_path / "model"
    shutil.copytree(exported.model_dir, model_dir)
    add_leftovers(out, stats)
    report = evaluate.evaluate(evaluate.EvalConfig(str(out), str(model_dir)))
    assert report["num_windows"] == stats["splits"]["eval"]["num_windows"]
