"""`crewstream synth`: the files must have the layout and the quirks of the real Kaggle files.

Two samples are made once per session: a small one (12 s per block, so times pass 10 s and the
text order differs from the numeric one) for layout checks, and a larger one (60 s, 6 crews) for
proportions, magnitudes and learnability.
"""

import dataclasses
import os
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from crewstream import synth
from tfrecords_schema.csv_columns import (
    CREW, EVENT, EXPERIMENT, ID, SAMPLE_RATE_HZ, SEAT, SEATS, SIGNALS, TEST_COLUMNS,
    TEST_EXPERIMENTS, TIME, TRAIN_COLUMNS, TRAIN_EXPERIMENTS,
)
from tfrecords_schema.record import LABEL_VOCABULARY

SMALL = dict(crews=(1, 2, 3), seconds=12.0, test_crews=(1, 2), test_seconds=12.0, seed=0)
LARGE = dict(crews=(1, 2, 3, 4, 5, 6), seconds=60.0, test_crews=(1, 2), test_seconds=120.0, seed=0)
HELD_OUT_CREWS = (5, 6)
PERSON = [CREW, SEAT]
EEG = SIGNALS[:-3]  # csv_columns.SIGNALS: 20 EEG channels, then ecg, r, gsr
ECG, R, GSR = SIGNALS[-3:]
BLOCK = [CREW, SEAT, EXPERIMENT]


def _read_text(path):
    """The file as written: every field a str, nothing parsed."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _read_numbers(path):
    """The file parsed: numbers as numbers, experiment and event as str."""
    return pd.read_csv(path, dtype={EXPERIMENT: str, EVENT: str})


def _time_order(frame):
    """Rows sorted numerically by (crew, seat, experiment, time): each block in time order."""
    return frame.sort_values(BLOCK + [TIME], kind="stable").reset_index(drop=True)


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth_small"))
    written = synth.generate(out, **SMALL)
    return {"dir": out, "written": written,
            "train": _read_text(written["train"]["path"]),
            "test": _read_text(written["test"]["path"]),
            "truth": _read_text(written["test_truth"]["path"])}


@pytest.fixture(scope="session")
def large(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth_large"))
    written = synth.generate(out, **LARGE)
    train = _read_numbers(written["train"]["path"])
    test = _read_numbers(written["test"]["path"]).merge(_read_numbers(written["test_truth"]["path"]), on=ID)
    return {"train": _time_order(train), "test": _time_order(test)}


def _runs(values):
    """Run-length encoding: the distinct consecutive values, in order."""
    values = list(values)
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


# --- layout ----------------------------------------------------------------------------------

def test_headers_are_the_schema_columns(small):
    paths = {name: info["path"] for name, info in small["written"].items()}
    with open(paths["train"]) as f:
        assert f.readline() == ",".join(TRAIN_COLUMNS) + "\n"
    with open(paths["test"]) as f:
        assert f.readline() == ",".join(TEST_COLUMNS) + "\n"
    with open(paths["test_truth"]) as f:
        assert f.readline() == ",".join((ID, EVENT)) + "\n"


def test_nothing_is_quoted(small):
    for info in small["written"].values():
        with open(info["path"]) as f:
            assert '"' not in f.read()


def test_row_counts(small):
    n = int(SMALL["seconds"] * SAMPLE_RATE_HZ)
    n_test = int(SMALL["test_seconds"] * SAMPLE_RATE_HZ)
    expected_train = len(SMALL["crews"]) * len(SEATS) * len(TRAIN_EXPERIMENTS) * n
    expected_test = len(SMALL["test_crews"]) * len(SEATS) * len(TEST_EXPERIMENTS) * n_test
    assert len(small["train"]) == small["written"]["train"]["rows"] == expected_train
    assert len(small["test"]) == small["written"]["test"]["rows"] == expected_test
    assert len(small["truth"]) == small["written"]["test_truth"]["rows"] == expected_test
    assert (small["train"].groupby(BLOCK).size() == n).all()


@pytest.mark.parametrize("name, experiments, crews", [
    ("train", TRAIN_EXPERIMENTS, SMALL["crews"]), ("test", TEST_EXPERIMENTS, SMALL["test_crews"]),
])
def test_each_crew_experiment_is_one_contiguous_run(small, name, experiments, crews):
    frame = small[name]
    runs = _runs(zip(frame[CREW].astype(int), frame[EXPERIMENT]))
    assert runs == [(crew, experiment) for crew in sorted(crews) for experiment in experiments]


@pytest.mark.parametrize("name", ["train", "test"])
def test_rows_are_ordered_by_time_text_with_seats_interleaved(small, name):
    for _, group in small[name].groupby([CREW, EXPERIMENT], sort=False):
        times = group[TIME].tolist()
        assert times == sorted(times)  # text order, byte by byte
        numeric = np.asarray(times, dtype=np.float64)
        assert (np.diff(numeric) < 0).any(), "text order should differ from numeric order (10.0 < 2.0)"
        seats = group[SEAT].astype(int).to_numpy()
        assert (seats[0::2] == SEATS[0]).all() and (seats[1::2] == SEATS[1]).all()
        assert times[0::2] == times[1::2]


def test_known_text_order_quirk(small):
    times = small["train"].query(f"{CREW} == '1' and {EXPERIMENT} == 'CA'")[TIME].tolist()
    # text order: 1.99609375 < 10.0 and 11.99609375 < 2.0
    assert times[times.index("1.99609375") + 2] == "10.0"
    assert times[times.index("11.99609375") + 2] == "2.0"


@pytest.mark.parametrize("name", ["train", "test"])
def test_each_block_has_every_sample_time_once(small, name):
    frame = small[name]
    for _, group in frame.groupby(BLOCK):
        k = np.asarray(group[TIME].tolist(), dtype=np.float64) * SAMPLE_RATE_HZ
        assert (k == np.round(k)).all()
        np.testing.assert_array_equal(np.sort(k), np.arange(len(k)))


def test_time_text_styles():
    samples = np.array([0, 3, 2816, 28157])
    assert synth.time_text(samples, fixed=False).to_pylist() == ["0.0", "0.01171875", "11.0", "109.98828125"]
    assert synth.time_text(samples, fixed=True).to_pylist() == [
        "0.00000000", "0.01171875", "11.00000000", "109.98828125"]


def test_test_time_has_eight_decimals(small):
    assert small["test"][TIME].str.fullmatch(r"\d+\.\d{8}").all()
    assert small["test"][TIME].iloc[0] == "0.00000000"


def test_kaggle_order_on_literal_rows():
    times = ["2.0", "11.0", "109.98828125", "2.0", "11.0", "109.98828125"]
    seats = np.array([0, 0, 0, 1, 1, 1])
    order = synth.kaggle_order(seats, synth.pa.array(times))
    assert [(times[i], seats[i]) for i in order] == [
        ("109.98828125", 0), ("109.98828125", 1), ("11.0", 0), ("11.0", 1), ("2.0", 0), ("2.0", 1)]


# --- float text ------------------------------------------------------------------------------

def test_format_repr_matches_python_repr():
    rng = np.random.default_rng(1)
    tricky = [-4520.0, 0.0, -0.0, 1.0, 1e-05, -1.5e-07, 0.0001, 1e16, 123456789012345678.0,
              0.1 + 0.2, -6.6958699999999975, 33.160301000000004, float("inf"), float("nan")]
    random = rng.normal(0, 1, 20000) * 10.0 ** rng.integers(-8, 18, 20000)
    values = np.concatenate([tricky, random, np.round(random * 1e6) * 1e-6])
    assert synth.format_repr(values).to_pylist() == [repr(v) for v in values.tolist()]


def test_signal_texts_are_shortest_repr_with_long_ones_among_them(small):
    texts = small["train"][list(SIGNALS)].to_numpy().ravel()
    assert all(repr(float(t)) == t for t in texts)
    digits = np.array([len(re.sub(r"[-.]", "", t).lstrip("0")) for t in texts])
    long_share = (digits >= 15).mean()
    assert 0.005 < long_share < 0.2, long_share  # like the real files: some, not most


# --- test ids --------------------------------------------------------------------------------

def test_test_ids_are_unique_and_match_the_truth(small):
    ids = small["test"][ID].astype(int).to_numpy()
    np.testing.assert_array_equal(ids, np.arange(len(ids)))
    np.testing.assert_array_equal(small["truth"][ID].astype(int).to_numpy(), ids)
    assert set(small["truth"][EVENT]) <= set(LABEL_VOCABULARY)
    assert EVENT not in small["test"].columns


# --- determinism -----------------------------------------------------------------------------

def _file_bytes(out):
    return {name: open(os.path.join(out, name), "rb").read()
            for name in (synth.TRAIN_FILE, synth.TEST_FILE, synth.TRUTH_FILE)}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = dict(crews=(1, 2), seconds=2.0, test_seconds=2.0)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synth.generate(str(tmp_path / name), seed=seed, **args)
    first, again, other = (_file_bytes(str(tmp_path / name)) for name in "abc")
    assert first == again
    assert first[synth.TRAIN_FILE] != other[synth.TRAIN_FILE]
    assert first[synth.TEST_FILE] != other[synth.TEST_FILE]


def test_a_crew_does_not_depend_on_the_other_crews(small, tmp_path):
    written = synth.generate(str(tmp_path), **dict(SMALL, crews=(2,), test_crews=(2,)))
    alone = _read_text(written["train"]["path"])
    together = small["train"][small["train"][CREW] == "2"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, together)


# --- labels ----------------------------------------------------------------------------------

def _shares(frame):
    return frame[EVENT].value_counts(normalize=True)


def test_class_proportions_per_experiment(large):
    tolerance = 1e-3
    for (_, _, experiment), block in large["train"].groupby(BLOCK):
        share = _shares(block)
        if experiment == "CA":
            assert set(share.index) == {"A", "C"}
            assert 0.97 - tolerance <= share["C"] <= 0.99 + tolerance
            assert _runs(block[EVENT]) == ["A", "C"]  # A only at the start
        elif experiment == "DA":
            assert set(share.index) == {"A", "D"}
            assert 0.13 - tolerance <= share["D"] <= 0.15 + tolerance
            assert _runs(block[EVENT]).count("D") >= 2  # bursts
        else:
            assert set(share.index) == {"A", "B"}
            assert 0.08 - tolerance <= share["B"] <= 0.09 + tolerance
            assert _runs(block[EVENT]).count("B") >= 2


def test_loft_mixes_all_four_classes(large):
    for _, block in large["test"].groupby(BLOCK):
        share = _shares(block)
        assert set(share.index) == set(LABEL_VOCABULARY)
        assert share["A"] == share.max()
        assert 0.2 < share["C"] < 0.4 and share["B"] < share["D"] < share["C"]


@pytest.mark.parametrize("experiment", sorted(synth.SCHEDULES))
@pytest.mark.parametrize("n", [1, 7, 256])
def test_label_codes_cover_any_length(experiment, n):
    codes = synth.label_codes(experiment, n, np.random.default_rng(0))
    assert codes.shape == (n,) and codes.dtype == np.int8
    assert set(codes.tolist()) <= set(range(len(LABEL_VOCABULARY)))


# --- magnitudes ------------------------------------------------------------------------------

def test_magnitudes_are_of_the_stated_orders_and_differ_between_people(large):
    per_person = large["train"].groupby(PERSON)
    eeg_size = per_person[list(EEG)].apply(lambda f: np.median(np.abs(f.to_numpy())))
    assert ((eeg_size > 1) & (eeg_size < 100)).all()  # tens of microvolts
    ecg = per_person[ECG].median()
    assert ((ecg.abs() >= 1000) & (ecg.abs() < 10000)).all() and (ecg < 0).any()  # thousands, often negative
    r = per_person[R].median()
    assert ((r >= 100) & (r < 1000)).all()  # hundreds
    gsr = per_person[GSR].median()
    assert ((gsr >= 100) & (gsr < 10000)).all()  # hundreds to thousands
    assert gsr.max() / gsr.min() > 2 and r.max() / r.min() > 1.3
    assert per_person[R].std().max() / per_person[R].std().min() > 1.5


# The people of the LARGE sample, and the attributes draw_person(seed, crew, seat) gave a person
# before the gains of ecg, r and gsr were drawn (computed with the code of fcf38a5): the new draws
# come after the old ones, so no existing attribute changed. Arrays are pinned by their sums.
LARGE_PEOPLE = [(crew, seat) for crew in LARGE["crews"] for seat in SEATS]
PERSON_BEFORE_GAINS = {
    (0, 1, 0): dict(
        eeg_offset=5.455280393826397, eeg_mix=299.3723032772782, eeg_noise=84.37418107711565,
        eeg_band_hz=38.144476237295834, ecg_offset=-1632.6354249039684, ecg_amp=-5434.133354599281,
        ecg_noise=0.020338446666634678, ecg_tremor=0.04294714321544696, ecg_decimals=6,
        heart_hz=1.2720797471928178, r_offset=560.3204908062312, r_amp=131.47819067947054,
        r_noise=0.02473496984560037, r_tremor=0.06338901050932472, breath_hz=0.27798775081228577,
        tremor_hz=9.941249977380044, gsr_level=601.5094076429654, gsr_noise=0.010216905820614922,
        response=4.112599200490795),
    (7, 13, 1): dict(
        eeg_mix=239.0800460037573, ecg_offset=-1610.375716159184, ecg_amp=5826.157608915594,
        r_offset=712.1761943616956, r_amp=153.95017625341532, tremor_hz=9.522742302686092,
        gsr_level=694.5095553853197, response=4.112275104201035),
}
NEW_GAINS = ("ecg_gain", "r_gain", "gsr_gain")


def test_people_differ_in_the_gains_of_ecg_r_and_gsr(large):
    drawn = [synth.draw_person(LARGE["seed"], *person) for person in LARGE_PEOPLE]
    gains = np.array([[getattr(person, name) for name in NEW_GAINS] for person in drawn])
    assert (gains.max(axis=0) / gains.min(axis=0) > 3).all(), gains
    # ...and so does their spread at rest: 1.71, 1.88, 2.49 when only Person's amplitudes differed
    # (gsr's slow drift alone varies its spread much, so gsr's gain is checked above on the draws)
    frame = large["train"]
    spread = frame[frame[EVENT] == "A"].groupby(PERSON)[[ECG, R, GSR]].std()
    assert (spread.max() / spread.min() > 2.5).all(), spread.max() / spread.min()
    for key, person in zip(LARGE_PEOPLE, drawn):
        again = synth.draw_person(LARGE["seed"], *key)
        for field in dataclasses.fields(synth.Person):
            np.testing.assert_array_equal(getattr(again, field.name), getattr(person, field.name))


@pytest.mark.parametrize("key", sorted(PERSON_BEFORE_GAINS))
def test_the_gains_leave_every_earlier_attribute_of_a_person_as_it_was(key):
    person = synth.draw_person(*key)
    for name, value in PERSON_BEFORE_GAINS[key].items():
        assert np.sum(getattr(person, name)) == pytest.approx(value, rel=1e-12), name
    assert {field.name for field in dataclasses.fields(synth.Person)} - set(PERSON_BEFORE_GAINS[(0, 1, 0)]) \
        == set(NEW_GAINS)


def test_the_offsets_of_people_are_smaller_than_the_swings_within_a_recording(large):
    """Every recording's swing of r and ecg (1st to 99th percentile) exceeds the spread of the
    people's levels (the std of their medians), the recordings of the lowest gains included."""
    frame = large["train"]
    for column in (R, ECG):
        spread = frame.groupby(PERSON)[column].median().std()
        values = frame.groupby(BLOCK)[column]
        swing = values.quantile(0.99) - values.quantile(0.01)
        assert swing.min() > spread, (column, swing.min(), spread)


# --- learnability, without a leak --------------------------------------------------------------

def _windows(frame, columns):
    """Non-overlapping 256-row windows per block in time order: (m, 256, len(columns)), labels, crews."""
    values, labels, crews = [], [], []
    for (crew, _, _), block in frame.groupby(BLOCK):
        m = len(block) // SAMPLE_RATE_HZ
        v = block[list(columns)].to_numpy()[: m * SAMPLE_RATE_HZ]
        values.append(v.reshape(m, SAMPLE_RATE_HZ, len(columns)))
        labels.append(block[EVENT].to_numpy()[SAMPLE_RATE_HZ - 1: m * SAMPLE_RATE_HZ: SAMPLE_RATE_HZ])
        crews.append(np.full(m, crew))
    return np.concatenate(values), np.concatenate(labels), np.concatenate(crews)


def _window_summaries(windows):
    """Scale-free summaries of each window and channel: spread, roughness, relative slope."""
    spread = np.log(windows.std(axis=1) + 1e-9)
    roughness = np.log(np.abs(np.diff(windows, axis=1)).mean(axis=1) + 1e-9)
    slope = (windows[:, -32:].mean(1) - windows[:, :32].mean(1)) / np.abs(windows.mean(1))
    return np.hstack([spread, roughness, roughness - spread, slope])


def _eeg_band_shares(windows):
    """Log share of the theta, alpha, beta and gamma bands in each window, averaged over channels."""
    power = np.abs(np.fft.rfft(windows - windows.mean(1, keepdims=True), axis=1)) ** 2  # 1 Hz bins
    bands = np.stack([power[:, lo:hi].sum(1) for lo, hi in ((4, 8), (8, 13), (13, 30), (30, 60))], 1)
    return (np.log(bands + 1e-9) - np.log(bands.sum(1, keepdims=True) + 1e-9)).mean(axis=2)


def _held_out_accuracy(features, labels, crews):
    """(accuracy, majority share) on HELD_OUT_CREWS of a logistic regression fitted on the others."""
    test = np.isin(crews, HELD_OUT_CREWS)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features[~test], labels[~test])
    majority = pd.Series(labels[test]).value_counts(normalize=True).max()
    return (model.predict(features[test]) == labels[test]).mean(), majority


def test_classes_are_learnable_from_one_second_of_r_ecg_gsr(large):
    windows, labels, crews = _windows(large["train"], (R, ECG, GSR))
    accuracy, majority = _held_out_accuracy(_window_summaries(windows), labels, crews)
    assert accuracy > majority + 0.15, (accuracy, majority)


def test_classes_are_learnable_from_one_second_of_eeg(large):
    windows, labels, crews = _windows(large["train"], EEG)
    accuracy, majority = _held_out_accuracy(_eeg_band_shares(windows), labels, crews)
    assert accuracy > majority + 0.15, (accuracy, majority)


def test_single_rows_do_not_give_the_class_away(large):
    frame = large["train"]
    columns = [R, ECG, GSR]
    rows = frame[columns].to_numpy()
    accuracy, majority = _held_out_accuracy(rows, frame[EVENT].to_numpy(), frame[CREW].to_numpy())
    assert accuracy < majority + 0.03, (accuracy, majority)
    # Within one person too, most of a class's values lie inside that person's baseline range.
    inside = []
    for _, person in frame.groupby(PERSON):
        baseline = person[person[EVENT] == "A"][columns]
        low, high = baseline.quantile(0.01), baseline.quantile(0.99)
        values = person[person[EVENT] != "A"]
        within = (values[columns] >= low) & (values[columns] <= high)
        inside.append(within.groupby(values[EVENT]).mean())
    inside = pd.concat(inside).groupby(level=0).mean()
    assert (inside > 0.5).all().all(), inside


# --- command line ----------------------------------------------------------------------------

def test_main_writes_and_reports(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert synth.main(["--out", out, "--crews", "3,1", "--seconds", "1", "--test-seconds", "0.5"]) == 0
    printed = capsys.readouterr().out
    for name, rows in ((synth.TRAIN_FILE, 2 * 2 * 3 * 256), (synth.TEST_FILE, 2 * 2 * 128),
                       (synth.TRUTH_FILE, 2 * 2 * 128)):
        path = os.path.join(out, name)
        assert f"{path}: {rows:,} rows, {os.path.getsize(path):,} bytes" in printed
    assert re.search(r"in \d+\.\d s", printed)
    assert _runs(_read_text(os.path.join(out, synth.TRAIN_FILE))[CREW]) == ["1", "3"]


def test_main_rejects_bad_arguments(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--seconds", "0"]) == 2
    assert synth.main(["--out", str(tmp_path), "--crews", "1,1"]) == 2
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--crews", "one"])


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        synth.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--crews", "--seconds", "--test-crews", "--test-seconds", "--seed"):
        assert option in text


def test_empty_test_crews_still_write_headers(tmp_path):
    written = synth.generate(str(tmp_path), crews=(1,), seconds=1.0, test_crews=())
    assert written["test"]["rows"] == 0
    with open(written["test"]["path"]) as f:
        assert f.read() == ",".join(TEST_COLUMNS) + "\n"


def test_the_sample_is_text_ordered_and_seat_interleaved(sample_dir):
    df = pd.read_csv(sample_dir / "test.csv", dtype={TIME: str})
    one = df[df[CREW] == df[CREW].iloc[0]]
    assert (one[SEAT].to_numpy()[:6] == [0, 1, 0, 1, 0, 1]).all()
    times = one[TIME].astype(float).to_numpy()
    assert (np.diff(times) < 0).any()  # not in numeric order...
    assert list(one[TIME]) == sorted(one[TIME], key=lambda t: t)  # ...but in text order
