"""The tf.Transform preprocessing_fns on literal rows, with tf.Transform's own test helper."""

import numpy as np
import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.runners.portability.fn_api_runner import fn_runner
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata

from beam_jobs import scaling
from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS, transform_graph

ROWS = np.array([[1.0, 5.0, -4520.0], [2.0, 5.0, -4480.0], [4.0, 5.0, -4600.0], [9.0, 5.0, -4400.0]],
                dtype=np.float32)


def _metadata(num_features):
    return dataset_metadata.DatasetMetadata.from_feature_spec(
        {RAW_SIGNALS: tf.io.FixedLenFeature([num_features], tf.float32)})


class PreprocessingFnTest(tft_unit.TransformTestCase):

    def _pipeline(self):
        # Our machines are offline: the in-process FnApiRunner, never Prism's download.
        return beam.Pipeline(runner=fn_runner.FnApiRunner())

    def test_zscore_is_population_zscore_and_zero_std_divides_by_one(self):
        mean, std = ROWS.astype(np.float64).mean(0), ROWS.astype(np.float64).std(0)  # ddof 0
        std[std == 0] = 1.0  # column 1 is constant
        expected = ((ROWS - mean) / std).astype(np.float32)
        self.assertAnalyzeAndTransformResults(
            [{RAW_SIGNALS: r} for r in ROWS], _metadata(3), scaling.zscore_preprocessing_fn,
            [{SCALED_SIGNALS: e} for e in expected], beam_pipeline=self._pipeline(),
            temp_dir=self.get_temp_dir())

    def test_minmax_maps_to_unit_range_and_zero_range_divides_by_one(self):
        lo, hi = ROWS.min(0).astype(np.float64), ROWS.max(0).astype(np.float64)
        rng = np.where(hi - lo == 0, 1.0, hi - lo)
        expected = ((ROWS - lo) / rng).astype(np.float32)
        self.assertAnalyzeAndTransformResults(
            [{RAW_SIGNALS: r} for r in ROWS], _metadata(3), scaling.minmax_preprocessing_fn,
            [{SCALED_SIGNALS: e} for e in expected], beam_pipeline=self._pipeline(),
            temp_dir=self.get_temp_dir())


def _analyze(tmp_path, values, fn):
    out = str(tmp_path / "tft")
    rows = [{RAW_SIGNALS: r} for r in values]
    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        with tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
            data = p | beam.Create(rows)
            transform_fn = (data, _metadata(values.shape[1])) | tft_beam.AnalyzeDataset(fn)
            _ = transform_fn | tft_beam.WriteTransformFn(out)
    return tft.TFTransformOutput(out)


def test_scaling_stats_read_back_from_the_graph_equal_numpy(tmp_path):
    rng = np.random.default_rng(3)
    # Magnitudes of the real signals: EEG tens, ecg thousands and negative, gsr hundreds.
    values = (rng.normal(size=(5000, 3)) * [20.0, 300.0, 150.0] + [3.0, -4520.0, 800.0]).astype(np.float32)
    output = _analyze(tmp_path, values, scaling.zscore_preprocessing_fn)
    stats = transform_graph.scaling_stats(output, ["eeg_fp1", "ecg", "gsr"], "zscore")
    as64 = values.astype(np.float64)
    for i, name in enumerate(["eeg_fp1", "ecg", "gsr"]):
        assert abs(stats[name]["mean"] - as64[:, i].mean()) <= 1e-6 * as64[:, i].std()
        np.testing.assert_allclose(stats[name]["std"], as64[:, i].std(ddof=0), rtol=1e-6)


def test_minmax_stats_read_back(tmp_path):
    values = np.array([[1.0, 7.0], [3.0, 7.0], [-5.0, 7.0]], dtype=np.float32)
    output = _analyze(tmp_path, values, scaling.minmax_preprocessing_fn)
    stats = transform_graph.scaling_stats(output, ["r", "gsr"], "minmax")
    np.testing.assert_allclose([stats["r"]["min"], stats["r"]["range"]], [-5.0, 8.0], rtol=1e-6)
    np.testing.assert_allclose([stats["gsr"]["min"], stats["gsr"]["range"]], [7.0, 1.0], rtol=1e-6)


def test_scaler_applies_the_written_graph(tmp_path):
    values = np.array([[1.0, 7.0], [3.0, 7.0], [-5.0, 7.0], [9.0, 7.0]], dtype=np.float32)
    _analyze(tmp_path, values, scaling.zscore_preprocessing_fn)
    scaled = scaling.Scaler(str(tmp_path / "tft")).scale(values)
    as64 = values.astype(np.float64)
    std = as64.std(0)
    std[std == 0] = 1
    np.testing.assert_allclose(scaled, (as64 - as64.mean(0)) / std, rtol=1e-6, atol=1e-6)
    assert scaled.dtype == np.float32
    assert scaling.Scaler(str(tmp_path / "tft")).scale(np.zeros((0, 2), np.float32)).shape == (0, 2)


def test_signals_record_batch():
    batch = scaling.signals_record_batch(np.float32([[1, 2, 3], [4, 5, 6]]))
    assert batch.schema == scaling.ARROW_SCHEMA
    assert batch.column(0).to_pylist() == [[1, 2, 3], [4, 5, 6]]
