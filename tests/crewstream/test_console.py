"""cli_common.console: Progress (the bar on a terminal, log lines elsewhere) and the early path checks."""

import io
import itertools
import logging

import pytest

from cli_common import console


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(caplog, monkeypatch):
    clock = itertools.count(0.0, 1.0)
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    terminal = _Terminal()
    bar = console.Progress("predict", 1000, "windows", "auto", stream=terminal)
    bar.update(250)
    bar.close()
    text = terminal.getvalue()
    assert text.startswith("\r") and "[######" in text and "25%" in text and "250/1,000 windows" in text
    assert "left" in text and text.endswith("\n")

    with caplog.at_level("INFO", logger="crewstream.predict"):
        log = console.Progress("predict", 1000, "windows", "auto", stream=io.StringIO(), log_every=1.0,
                               logger=logging.getLogger("crewstream.predict"))
        log.update(500)
        log.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "crewstream.predict"]
    assert lines and "[" not in lines[0] and "500/1,000 windows" in lines[0] and "/s" in lines[0]


def test_progress_counts_in_its_scale_and_says_when_done(monkeypatch):
    clock = itertools.count(0.0, 2.0)  # one tick per reading: start 0, update 2, its bar 4, line 6
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    progress = console.Progress("read", 3e6, "MB", "bar", stream=io.StringIO(), scale=1e6)
    progress.update(3e6)
    assert progress.line(bar=False) == "read  100%  3.0/3.0 MB  0.5 MB/s  in 0:06"
    assert console._clock(3725) == "1:02:05" and console._clock(65) == "1:05"
    assert console._clock(float("nan")) == "?:??"


def test_a_folder_without_stats_json_is_not_a_preprocess_output(tmp_path):
    with pytest.raises(console.MissingPathError) as e:
        console.check_preprocess_output(str(tmp_path), "--data")
    assert str(e.value) == (f"--data: {tmp_path / 'stats.json'} not found: {tmp_path} is not the output of a "
                            "completed preprocess run")
    (tmp_path / "stats.json").write_text("{}\n")
    console.check_preprocess_output(str(tmp_path), "--data")
    console.check_preprocess_output("gs://bucket/out", "OUT")  # a URL: the command checks it later
