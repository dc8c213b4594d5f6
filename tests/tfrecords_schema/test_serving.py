"""tfrecords_schema.serving: the serving config read back as written, refused when missing, older
or malformed, and read without importing TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

from tfrecords_schema import serving

STATS = {"window": 8, "features": ["r", "gsr"], "label_vocabulary": ["A", "B", "C", "D"]}


def _config(**changes):
    config = serving.make_config(STATS, serving.TCN, 7, [serving.SEQUENCE_SIGNATURE, serving.SERVING_SIGNATURE],
                                 serving.NORM_CENTER, 4)
    return {**config, **changes}


def _write(model_dir, config):
    path = os.path.join(serving.serving_dir(str(model_dir)), serving.CONFIG_FILE)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(config, f)


def test_a_written_config_reads_back(tmp_path):
    serving.write_config(serving.serving_dir(str(tmp_path)), _config())
    assert serving.read_config(str(tmp_path)) == {
        "window": 8, "features": ["r", "gsr"], "label_vocabulary": ["A", "B", "C", "D"], "model": "tcn",
        "receptive_field": 7, "signatures": ["sequence", "serving_default"], "normalize": "center", "norm_rows": 4,
        "temperature": 1.0}
    calibrated = _config(**{"temperature": 1.25})
    serving.write_config(serving.serving_dir(str(tmp_path / "t")), calibrated)
    assert serving.read_config(str(tmp_path / "t")) == calibrated


def test_a_config_written_before_calibration_is_refused(tmp_path):
    """No history in 0.x: a config without `temperature` (an export made before calibration) is
    refused in one line like any other missing key; the golden models carry T = 1."""
    golden = os.path.join(os.path.dirname(__file__), "..", "golden", "models", "tcn")
    assert serving.read_config(golden)["temperature"] == 1.0
    for key in ("temperature", "norm_rows"):
        old = _config()
        del old[key]
        _write(tmp_path / key, old)
        with pytest.raises(serving.ServingModelError, match="written by an older crewstream.*train the model again"):
            serving.read_config(str(tmp_path / key))


def test_no_config_is_one_line(tmp_path):
    with pytest.raises(serving.ServingModelError, match="holds no exported model"):
        serving.read_config(str(tmp_path))


def test_a_config_of_an_older_crewstream_is_refused(tmp_path):
    _write(tmp_path, STATS)  # the first exports wrote these three keys only
    with pytest.raises(serving.ServingModelError, match="written by an older crewstream .*train the model again"):
        serving.read_config(str(tmp_path))


@pytest.mark.parametrize("change", [{"receptive_field": 9}, {"receptive_field": 0}, {"model": "gru"},
                                    {"signatures": ["sequence"]}, {"normalize": "minmax"}, {"window": "8"},
                                    {"features": []}, {"norm_rows": 2.5}, {"temperature": 0},
                                    {"temperature": -1.0}, {"temperature": "1.0"}, {"temperature": True},
                                    {"temperature": float("nan")}, {"temperature": None}])
def test_a_malformed_config_is_refused(tmp_path, change):
    _write(tmp_path, _config(**change))
    with pytest.raises(serving.ServingModelError, match="expected window an int"):
        serving.read_config(str(tmp_path))


def test_damaged_json_is_refused(tmp_path):
    _write(tmp_path, {})
    with open(os.path.join(serving.serving_dir(str(tmp_path)), serving.CONFIG_FILE), "w") as f:
        f.write("{not json")
    with pytest.raises(serving.ServingModelError, match="is not JSON"):
        serving.read_config(str(tmp_path))


def test_reading_the_config_does_not_import_tensorflow(tmp_path):
    serving.write_config(serving.serving_dir(str(tmp_path)), _config())
    code = ("import sys; from beam_jobs import predict; from tfrecords_schema import serving; "
            f"serving.read_config({str(tmp_path)!r}); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tensorflow_transform', 'tf_keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
