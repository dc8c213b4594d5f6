"""trainer.task: `crewstream train`'s flags take their defaults, and their help its numbers, from
trainer.config (TrainConfig, ModelParams), the one home of the defaults."""

import dataclasses

import pytest

from trainer import task
from trainer.config import ModelParams, TrainConfig


def _flag(field: str) -> str:
    """The flag of a ModelParams or TrainConfig field."""
    return "--model" if field == "kind" else "--" + field.replace("_", "-")


def _help_of_each_flag(capsys) -> dict:
    """{flag: its help text, wrapped lines joined}, from `crewstream train --help`."""
    with pytest.raises(SystemExit) as e:
        task.main(["--help"])
    assert e.value.code == 0
    helps, flag = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            helps[flag] = line
        elif flag and line.startswith("   "):
            helps[flag] += " " + line
        else:
            flag = None
    return {flag: " ".join(text.split()) for flag, text in helps.items()}


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_no_flags_train_the_model_params_defaults():
    config = task.config_from_argv(["--data", "d", "--model-dir", "m"])
    assert config.model == ModelParams()
    assert config == TrainConfig(data="d", model_dir="m", verbose=config.verbose)


def test_the_help_shows_the_defaults_model_params_holds(capsys):
    helps = _help_of_each_flag(capsys)
    for field in dataclasses.fields(ModelParams):
        default = getattr(ModelParams(), field.name)
        help_text = helps[_flag(field.name)]
        if default is None:  # filled in for the window (ModelParams.for_window)
            assert "(default: " in help_text, help_text
        else:
            assert f"(default {_text(default)}" in help_text, help_text


@pytest.mark.parametrize("field", ["epochs", "batch_size", "weighting", "seed", "shuffle_buffer"])
def test_the_help_shows_the_run_defaults_train_config_holds(capsys, field):
    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == field)
    assert f"(default {_text(default)})" in _help_of_each_flag(capsys)[_flag(field)]


def test_levels_is_the_tcns_depth():
    argv = ["--data", "d", "--model-dir", "m", "--model", "tcn", "--levels", "3"]
    assert task.config_from_argv(argv).model.levels == 3
    with pytest.raises(SystemExit) as e:
        task.config_from_argv(["--data", "d", "--model-dir", "m", "--blocks", "3"])
    assert e.value.code == 2
