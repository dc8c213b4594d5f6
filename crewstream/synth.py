"""`crewstream synth`: write a sample train.csv / test.csv / test_truth.csv in the Kaggle layout.

The real competition files cannot be reached from our machines, so everything downstream is built
and tested on files made here. They reproduce the layout and the quirks that docs/DATA.md lists:

* headers exactly `csv_columns.TRAIN_COLUMNS` / `csv_columns.TEST_COLUMNS`, values never quoted;
* rows of one (crew, experiment) together, the two seats interleaved, and within that the rows
  ordered by the `time` column compared AS TEXT (`109.98828125` comes before `11.0`);
* `time` = sample index / SAMPLE_RATE_HZ, written as the shortest repr in train.csv
  (`0.01171875`, `11.0`) and with 8 decimals in test.csv (`0.00000000`);
* signal values written as the shortest round-trip repr of a float64 (Python's `repr`), with
  float-arithmetic texts such as `-6.6958699999999975` among the short decimals;
* per-person offsets and scales: EEG tens of microvolts, ecg thousands (often negative), r hundreds,
  gsr hundreds to thousands; the gains of every signal differ between people, the EEG channels' and
  each of ecg's, r's and gsr's (a log-normal per-person factor on the signal's variation around its
  level, PERSON_GAIN_SIGMA), so one person's swings can be several times another's;
* labels per experiment as in the real data: CA about 98% C after a short A lead, DA about 13-15% D
  in bursts, SS about 8-9% B in short bursts; the test flight (LOFT) mixes all four classes, and its
  labels go to test_truth.csv (`id,event`) only.

The classes change the physiology (breathing rate and depth, heart rate, muscle tremor and noise on
r and ecg, skin-conductance level and fluctuation, EEG band power), with per-person response
strengths and slow non-stationary drift. Rates (breathing at 0.2-0.5 Hz, heart at 1-2 Hz) hardly
show in a 1-second window, so what a window shows of the class is mostly muscle activity: a ~10 Hz
tremor whose amplitude grows many times with tension, within a quarter of a second of a label
change. It is on r (chest) in C and B and on ecg (arm and trunk muscles) in D and B, so each class
has its own pattern over the two channels. The people's offsets of r and ecg are smaller than the
swings within one recording (breathing, tremor, ecg wander), so that a model fed windows z-scored
with global statistics (as `crewstream preprocess` makes them) can learn the class from a window's
dynamics rather than from whose recording it is. No single row value gives the class away: most of a
class's values lie inside the same person's baseline range (tests/crewstream/test_synth.py).

Every (crew, seat, experiment) recording is drawn from its own seeded generator, so the same arguments
give byte-identical files, and a crew's data does not depend on which other crews are requested.
The files are streamed one session (crew, experiment: both seats) at a time, in batches of rows, so memory stays
bounded by one session's numbers whatever the number of crews.
"""

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from tfrecords_schema.csv_columns import (
    CREW, EVENT, EXPERIMENT, EXPERIMENTS, ID, SAMPLE_RATE_HZ, SEAT, SEATS, SIGNALS, TEST_COLUMNS,
    TEST_EXPERIMENTS, TIME, TRAIN_COLUMNS, TRAIN_EXPERIMENTS,
)
from cli_common import console, failure
from tfrecords_schema import ownership
from tfrecords_schema.record import LABEL_VOCABULARY

TRAIN_FILE = "train.csv"
TEST_FILE = "test.csv"
TRUTH_FILE = "test_truth.csv"
# What `crewstream synth --output DIR` owns in DIR (tfrecords_schema.ownership). A folder without
# synth's marker is never written: a folder of the real Kaggle files has the same names.
OUTPUT = ownership.Kind("synth", (TRAIN_FILE, TEST_FILE, TRUTH_FILE))
TRUTH_COLUMNS = (ID, EVENT)

A, B, C, D = (LABEL_VOCABULARY.index(name) for name in "ABCD")
# csv_columns.SIGNALS is the 20 EEG channels, then ecg, r, gsr: positions, so no name is retyped here.
NUM_EEG = len(SIGNALS) - 3
ECG, R, GSR = range(NUM_EEG, len(SIGNALS))

# test.csv writes time with 8 decimals; k / 256 has at most 8, so the text is exact.
TEST_TIME_DECIMALS = 8
assert 10**TEST_TIME_DECIMALS % SAMPLE_RATE_HZ == 0

# Values are rounded to this many decimals (the real files carry float32-like 8-9 digit values).
VALUE_DECIMALS = 6
# Share of values computed as integer * 10**-d instead of integer / 10**d: about 3 in 10 of those
# are not the double nearest to the decimal, and print like `-6.6958699999999975`.
FLOAT_ARITHMETIC_SHARE = 0.15

ROWS_PER_CHUNK = 1 << 18  # rows formatted and written at a time: bounds the text in memory


# ---------------------------------------------------------------------------------------------
# Labels

@dataclass(frozen=True)
class Bursts:
    """`code` in runs covering a `fraction` (lo, hi) of the recording, about one run per `period_s`."""
    code: int
    fraction: Tuple[float, float]
    period_s: float


@dataclass(frozen=True)
class Schedule:
    """The label timeline of one experiment: a lead of A, then `fill` interrupted by `bursts`."""
    fill: int
    lead_a: Tuple[float, float] = (0.0, 0.0)
    bursts: Tuple[Bursts, ...] = ()


SCHEDULES = {
    "CA": Schedule(fill=C, lead_a=(0.015, 0.025)),
    "DA": Schedule(fill=A, bursts=(Bursts(D, (0.13, 0.15), 30.0),)),
    "SS": Schedule(fill=A, bursts=(Bursts(B, (0.08, 0.09), 20.0),)),
    # A simulated flight: long stretches of channelized attention, diverted-attention episodes,
    # a few startles.
    "LOFT": Schedule(fill=A, bursts=(
        Bursts(C, (0.25, 0.35), 300.0), Bursts(D, (0.06, 0.10), 40.0), Bursts(B, (0.02, 0.04), 60.0),
    )),
}
assert set(SCHEDULES) == set(EXPERIMENTS)


def _split(total: int, parts: int, rng: np.random.Generator, concentration: float) -> np.ndarray:
    """`parts` non-negative ints summing to `total`, near-equal for a large `concentration`."""
    edges = np.round(np.cumsum(rng.dirichlet(np.full(parts, concentration))) * total).astype(np.int64)
    edges[-1] = total  # rounding the cumulative shares keeps the sizes non-negative and exact
    return np.diff(edges, prepend=0)


def label_codes(experiment: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """The event of each of the `n` samples of one (crew, seat, experiment): int8 label indices.

    Burst totals are rounded from the drawn fraction, so the proportions hold for any n; the runs
    are placed in random order with random gaps of the fill class between them.
    """
    schedule = SCHEDULES[experiment]
    lead = int(round(rng.uniform(*schedule.lead_a) * n))
    runs: List[Tuple[int, int]] = []
    for bursts in schedule.bursts:
        total = int(round(rng.uniform(*bursts.fraction) * n))
        count = max(1, int(round(n / (bursts.period_s * SAMPLE_RATE_HZ))))
        runs += [(bursts.code, int(size)) for size in _split(total, count, rng, 8.0)]
    runs = [runs[i] for i in rng.permutation(len(runs))]
    free = n - lead - sum(size for _, size in runs)
    gaps = _split(free, len(runs) + 1, rng, 4.0)
    codes, sizes = [A], [lead]
    for (code, size), gap in zip(runs, gaps):
        codes += [schedule.fill, code]
        sizes += [int(gap), size]
    codes.append(schedule.fill)
    sizes.append(int(gaps[-1]))
    return np.repeat(np.asarray(codes, np.int8), sizes)


def class_envelope(codes: np.ndarray, seconds: float) -> np.ndarray:
    """(n, 4) float64: the one-hot labels smoothed over `seconds`, so physiology changes gradually.

    Two passes of a moving average give a ramp of about `seconds` around every label change.
    """
    env = np.eye(len(LABEL_VOCABULARY))[codes]
    width = max(1, int(seconds * SAMPLE_RATE_HZ) // 2)
    for _ in range(2):
        env = _moving_average(env, width)
    return env


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0, edges extended with the first / last row."""
    before, after = width // 2, width - width // 2 - 1
    padded = np.concatenate([np.repeat(x[:1], before, 0), x, np.repeat(x[-1:], after, 0)])
    sums = np.cumsum(padded, axis=0)
    sums = np.concatenate([np.zeros_like(sums[:1]), sums])
    return (sums[width:] - sums[:-width]) / width


# ---------------------------------------------------------------------------------------------
# Signals

# Multipliers of a person's baseline in each class (A, B, C, D). A person's own response scales
# the distance from 1 (Person.response), so the effects differ between people.
EFFECTS = {
    "heart_rate": (1.0, 1.35, 1.15, 1.20),
    "breath_rate": (1.0, 1.80, 0.60, 1.40),
    "breath_depth": (1.0, 1.20, 0.25, 1.30),
    "muscle_noise": (1.0, 2.60, 1.90, 1.50),  # broadband, on ecg and r
    "r_tremor": (1.0, 22.0, 26.0, 1.5),  # chest and shoulder muscles, on r
    "ecg_tremor": (1.0, 15.0, 1.0, 17.0),  # arm and trunk muscles, on ecg
    "gsr_level": (1.0, 1.06, 1.04, 1.05),
    "gsr_noise": (1.0, 5.0, 1.5, 4.0),
    "theta": (1.0, 1.50, 0.80, 2.00),
    "alpha": (1.0, 0.70, 0.50, 0.70),
    "beta": (1.0, 1.80, 2.20, 1.30),
}
EEG_BANDS = ("theta", "alpha", "beta")
EEG_BAND_HZ = (6.0, 10.0, 20.0)

# A person's own gain on ecg, r and gsr (Person.ecg_gain, r_gain, gsr_gain), like the EEG's factor
# in eeg_mix: it multiplies the whole variation around the signal's level (breathing or beats,
# tremor, noise, drift and the class effects together), so every class effect relative to the
# person's own baseline is as before, and a model that removes a rolling mean and is trained at
# random gains learns the same effects. With the amplitude ranges of Person alone, 12 people's
# spreads of ecg and r at rest differed by about 2x at most; real people's differ by orders of
# magnitude. Log-normal, as gains multiply: sigma 0.5 puts the middle 95% of gains in 0.38-2.66 (a
# factor of 7), and the largest of 12 people's spreads at rest is then typically 3-10 times the
# smallest. Clipped to PERSON_GAIN_RANGE (8% of draws below, 1.4% above): below, so that the lowest
# gain's swings of r and ecg within a recording still exceed the spread of the people's offsets (the
# module's promise, tested); above, so that no rare draw makes one person dominate a small sample
# (ecg's R-peaks stay within about 21,000). With gains above 1, r's troughs under C's chest tremor
# dip below zero in some recordings (ecg's values are negative anyway).
PERSON_GAIN_SIGMA = 0.5
PERSON_GAIN_RANGE = (0.5, 3.0)


@dataclass(frozen=True)
class Person:
    """The physiology of one pilot (crew, seat): baselines, scales and response strengths."""
    eeg_offset: np.ndarray  # (NUM_EEG,) microvolts
    eeg_mix: np.ndarray  # (3, NUM_EEG) band source -> channel gain, microvolts
    eeg_noise: np.ndarray  # (NUM_EEG,) microvolts
    eeg_band_hz: np.ndarray  # (3,)
    ecg_offset: float
    ecg_amp: float  # R-peak height; negative for an inverted lead
    ecg_noise: float  # broadband muscle noise at rest, fraction of |ecg_amp|
    ecg_tremor: float  # tremor amplitude at rest, fraction of |ecg_amp|
    ecg_decimals: int  # some recorders store whole ADC counts: `-4520.0`
    heart_hz: float
    r_offset: float
    r_amp: float  # breathing amplitude
    r_noise: float  # broadband muscle noise at rest, fraction of r_amp
    r_tremor: float  # tremor amplitude at rest, fraction of r_amp
    breath_hz: float
    tremor_hz: float  # physiological tremor, about 10 Hz
    gsr_level: float
    gsr_noise: float  # fraction of gsr_level
    response: np.ndarray  # (4,) strength of the class effects for this person
    # Drawn last, so that every attribute above keeps the value it had before these existed.
    ecg_gain: float  # multiplies ecg's whole variation around its level (ECG_BEAT_MEAN)
    r_gain: float  # multiplies r's whole variation around r_offset
    gsr_gain: float  # multiplies gsr's whole variation around gsr_level


def draw_person(seed: int, crew: int, seat: int) -> Person:
    """The person (crew, seat) of the sample drawn with `seed`; independent of the other people."""
    rng = np.random.default_rng([seed, crew, seat, 1])
    return Person(
        eeg_offset=rng.uniform(-15, 15, NUM_EEG),
        eeg_mix=rng.uniform(1, 10, (3, NUM_EEG)) * rng.lognormal(0, 0.35),
        eeg_noise=rng.uniform(2, 6, NUM_EEG),
        eeg_band_hz=np.asarray(EEG_BAND_HZ) + rng.uniform(-1, 1, 3),
        ecg_offset=rng.choice([-1, -1, 1]) * rng.uniform(1500, 2500),
        ecg_amp=rng.choice([-1, 1, 1]) * rng.uniform(4000, 7000),
        ecg_noise=rng.uniform(0.015, 0.025),
        ecg_tremor=rng.uniform(0.035, 0.045),
        ecg_decimals=int(rng.choice([0, VALUE_DECIMALS, VALUE_DECIMALS])),
        heart_hz=rng.uniform(60, 80) / 60,
        r_offset=rng.uniform(490, 730),
        r_amp=rng.uniform(100, 200),
        r_noise=rng.uniform(0.015, 0.025),
        r_tremor=rng.uniform(0.055, 0.065),
        breath_hz=rng.uniform(0.22, 0.30),
        tremor_hz=rng.uniform(9.5, 10.5),
        gsr_level=float(np.exp(rng.uniform(np.log(450), np.log(1100)))),
        gsr_noise=rng.uniform(0.008, 0.012),
        response=rng.uniform(0.8, 1.2, len(LABEL_VOCABULARY)),
        ecg_gain=_person_gain(rng),
        r_gain=_person_gain(rng),
        gsr_gain=_person_gain(rng),
    )


def _person_gain(rng: np.random.Generator) -> float:
    """A person's gain on one signal: log-normal, median 1, clipped to PERSON_GAIN_RANGE."""
    return float(np.clip(rng.lognormal(0.0, PERSON_GAIN_SIGMA), *PERSON_GAIN_RANGE))


def _effect(name: str, person: Person, env: np.ndarray) -> np.ndarray:
    """(n,) multiplier of effect `name` over time: the classes' effects mixed by the envelope."""
    per_class = 1 + (np.asarray(EFFECTS[name]) - 1) * person.response
    return env @ per_class


def _slow(n: int, rng: np.random.Generator, period_s: float, scale: float) -> np.ndarray:
    """(n,) smooth random drift: Gaussian knots every `period_s`, linearly interpolated."""
    step = period_s * SAMPLE_RATE_HZ
    knots = rng.normal(0, scale, int(n // step) + 2)
    return np.interp(np.arange(n), np.arange(len(knots)) * step, knots)


def _phase(hz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) phase in cycles of an oscillator whose rate changes over time, continuous throughout."""
    return rng.uniform() + np.cumsum(hz) / SAMPLE_RATE_HZ


def _tremor(person: Person, amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) muscle tremor: an oscillation near the person's tremor_hz, of `amplitude`, waxing and waning."""
    n = len(amplitude)
    hz = person.tremor_hz * np.exp(_slow(n, rng, 1.0, 0.05))
    return amplitude * np.exp(_slow(n, rng, 2.0, 0.15)) * np.sin(2 * np.pi * _phase(hz, rng))


def _eeg(person: Person, env: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, NUM_EEG) microvolts: three band sources mixed into the channels, plus channel noise."""
    n = len(env)
    t = np.arange(n) / SAMPLE_RATE_HZ
    sources = np.empty((n, len(EEG_BANDS)))
    for i, (band, hz) in enumerate(zip(EEG_BANDS, person.eeg_band_hz)):
        wobble = np.exp(_slow(n, rng, 2.0, 0.3))  # EEG rhythms wax and wane
        sources[:, i] = np.sin(2 * np.pi * (hz * t + rng.uniform())) * wobble * _effect(band, person, env)
    noise = rng.standard_normal((n, NUM_EEG)) * person.eeg_noise
    return sources @ person.eeg_mix + noise + person.eeg_offset


# One heartbeat as Gaussian bumps over the beat phase: P, Q, R, S, T (centre, width, height).
ECG_WAVES = np.array([
    (0.15, 0.025, 0.12), (0.27, 0.008, -0.12), (0.30, 0.010, 1.0), (0.33, 0.010, -0.25),
    (0.55, 0.050, 0.30),
])
# The beat wave's mean over a beat (the bumps' areas): ecg's level above ecg_offset, at any heart
# rate. A person's ecg_gain scales the variation around it, so the gain leaves the level in place.
ECG_BEAT_MEAN = float(np.sum(ECG_WAVES[:, 1] * ECG_WAVES[:, 2]) * np.sqrt(2 * np.pi))


def _ecg(person: Person, env: np.ndarray, muscle: np.ndarray, breath: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
    """(n,) ecg: beats at a class-dependent heart rate, breathing wander, muscle tremor and noise."""
    n = len(env)
    beat = _phase(person.heart_hz * _effect("heart_rate", person, env), rng) % 1.0
    wave = np.zeros(n)
    for centre, width, height in ECG_WAVES:
        wave += height * np.exp(-0.5 * ((beat - centre) / width) ** 2)
    wave += 0.3 * np.sin(2 * np.pi * breath)
    wave += _tremor(person, person.ecg_tremor * _effect("ecg_tremor", person, muscle), rng)
    noise_level = person.ecg_noise * _effect("muscle_noise", person, muscle)
    noise_level *= np.exp(_slow(n, rng, 5.0, 0.15))
    variation = wave - ECG_BEAT_MEAN + noise_level * rng.standard_normal(n)
    return person.ecg_offset + person.ecg_amp * (ECG_BEAT_MEAN + person.ecg_gain * variation)


def _respiration(person: Person, env: np.ndarray, muscle: np.ndarray, breath: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """(n,) r: a breathing wave with class-dependent depth, muscle tremor and noise, slow wander."""
    n = len(env)
    wave = np.sin(2 * np.pi * breath) + 0.15 * np.sin(4 * np.pi * breath + 1.0)
    wave = wave * _effect("breath_depth", person, env) + _slow(n, rng, 20.0, 0.2)
    wave += _tremor(person, person.r_tremor * _effect("r_tremor", person, muscle), rng)
    noise_level = person.r_noise * _effect("muscle_noise", person, muscle)
    noise_level *= np.exp(_slow(n, rng, 5.0, 0.15))
    return person.r_offset + person.r_gain * person.r_amp * (wave + noise_level * rng.standard_normal(n))


def _gsr(person: Person, codes: np.ndarray, env: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) gsr: a skin-conductance level that follows the class slowly, with sweat fluctuation."""
    n = len(env)
    # The level lags: its own, longer envelope makes it rise and fall over seconds.
    level = _effect("gsr_level", person, class_envelope(codes, 4.0)) * np.exp(_slow(n, rng, 5.0, 0.15))
    noise_level = person.gsr_noise * _effect("gsr_noise", person, env) * np.exp(_slow(n, rng, 5.0, 0.25))
    return person.gsr_level * (1 + person.gsr_gain * (level - 1 + noise_level * rng.standard_normal(n)))


def quantize(values: np.ndarray, decimals: int, rng: np.random.Generator) -> np.ndarray:
    """`values` rounded to `decimals`, a FLOAT_ARITHMETIC_SHARE of them through float arithmetic.

    Dividing the rounded integer by 10**d gives the double nearest to the short decimal, which
    prints short (`26.775801`); multiplying by 10**-d is sometimes one ulp off and prints like the
    real files' `-6.6958699999999975`.
    """
    whole = np.round(values * 10.0**decimals)
    out = whole / 10.0**decimals
    pick = rng.random(values.shape) < FLOAT_ARITHMETIC_SHARE
    out[pick] = whole[pick] * 10.0**-decimals
    return out


@dataclass
class Recording:
    """One (crew, seat, experiment) recording in time order.

    signals: (n, len(SIGNALS)) float64, columns in SIGNALS order.
    codes: (n,) int8, index into LABEL_VOCABULARY of each sample's event.
    """
    signals: np.ndarray
    codes: np.ndarray


def make_recording(seed: int, crew: int, seat: int, experiment: str, n: int) -> Recording:
    """The `n` samples (n / SAMPLE_RATE_HZ seconds) of one (crew, seat, experiment)."""
    person = draw_person(seed, crew, seat)
    rng = np.random.default_rng([seed, crew, seat, 2, EXPERIMENTS.index(experiment)])
    codes = label_codes(experiment, n, rng)
    env = class_envelope(codes, 1.0)
    muscle = class_envelope(codes, 0.25)  # muscles respond within a fraction of a second
    breath = _phase(person.breath_hz * _effect("breath_rate", person, env), rng)
    signals = np.empty((n, len(SIGNALS)))
    signals[:, :NUM_EEG] = _eeg(person, env, rng)
    signals[:, ECG] = _ecg(person, env, muscle, breath, rng)
    signals[:, R] = _respiration(person, env, muscle, breath, rng)
    signals[:, GSR] = _gsr(person, codes, env, rng)
    decimals = np.full(len(SIGNALS), VALUE_DECIMALS)
    decimals[ECG] = person.ecg_decimals
    for d in np.unique(decimals):
        columns = decimals == d
        signals[:, columns] = quantize(signals[:, columns], int(d), rng)
    return Recording(signals=signals, codes=codes)


# ---------------------------------------------------------------------------------------------
# Text and order

# Where Arrow's cast and Python's repr both write plain decimals (Arrow switches to exponents from
# 1e10 on, Python from 1e16; Python already below 1e-4, Arrow below 1e-6).
PLAIN_RANGE = (1e-4, 1e9)


def format_repr(values: np.ndarray) -> pa.StringArray:
    """Each float64 as Python's `repr` spells it (shortest round-trip digits), vectorized.

    Arrow's cast gives the same shortest digits, but spells whole numbers without `.0` (fixed in
    bulk) and uses exponents at other magnitudes than Python (the rare values outside PLAIN_RANGE
    are spelled by Python one by one).
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    text = pc.cast(pa.array(values), pa.string())
    magnitude = np.abs(values)
    whole = (values == np.trunc(values)) & (magnitude < PLAIN_RANGE[1])
    if whole.any():
        text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, ".0", ""), text)
    odd = ~((magnitude < PLAIN_RANGE[1]) & ((magnitude >= PLAIN_RANGE[0]) | (values == 0)))
    if odd.any():
        text = pc.replace_with_mask(text, pa.array(odd), pa.array([repr(v) for v in values[odd].tolist()]))
    return text


def time_text(sample: np.ndarray, fixed: bool) -> pa.StringArray:
    """`time` = sample / SAMPLE_RATE_HZ as text: shortest repr, or `fixed` with 8 decimals."""
    sample = np.asarray(sample, dtype=np.int64)
    if not fixed:
        return format_repr(sample / SAMPLE_RATE_HZ)
    whole = pc.cast(pa.array(sample // SAMPLE_RATE_HZ), pa.string())
    fraction = (sample % SAMPLE_RATE_HZ) * (10**TEST_TIME_DECIMALS // SAMPLE_RATE_HZ)
    fraction = pc.utf8_lpad(pc.cast(pa.array(fraction), pa.string()), TEST_TIME_DECIMALS, "0")
    return pc.binary_join_element_wise(whole, fraction, ".")


def kaggle_order(seat: np.ndarray, times: pa.StringArray) -> np.ndarray:
    """The permutation that puts one (crew, experiment)'s rows in the order of the Kaggle files.

    Rows sort by the time TEXT (byte order, so `109.98828125` before `11.0`), then by seat, so
    the two seats' rows of the same time are adjacent. Stable; returns int64 row indices.
    """
    keys = pa.table({TIME: times, SEAT: pa.array(seat)})
    order = pc.sort_indices(keys, sort_keys=[(TIME, "ascending"), (SEAT, "ascending")])
    return order.to_numpy()


@dataclass
class Session:
    """One (crew, experiment): both seats' recordings stacked (seat 0 first) and their file order.

    seat, codes: (m,) ints; signals: (m, len(SIGNALS)) float64; time: (m,) text;
    order: (m,) int64 permutation into file order.
    """
    crew: int
    experiment: str
    seat: np.ndarray
    signals: np.ndarray
    codes: np.ndarray
    time: pa.StringArray
    order: np.ndarray


def make_session(seed: int, crew: int, experiment: str, n: int, fixed_time: bool) -> Session:
    """Both seats of one (crew, experiment), `n` samples each, with the Kaggle row order."""
    recordings = [make_recording(seed, crew, seat, experiment, n) for seat in SEATS]
    seat = np.repeat(np.asarray(SEATS, np.int64), n)
    sample = np.tile(np.arange(n, dtype=np.int64), len(SEATS))
    text = time_text(sample, fixed_time)
    return Session(
        crew=crew, experiment=experiment, seat=seat,
        signals=np.concatenate([r.signals for r in recordings]),
        codes=np.concatenate([r.codes for r in recordings]),
        time=text, order=kaggle_order(seat, text),
    )


# ---------------------------------------------------------------------------------------------
# Writing

WRITE_OPTIONS = pa_csv.WriteOptions(include_header=True, quoting_style="none", quoting_header="none")


def _columns(session: Session, rows: np.ndarray, pool: ThreadPoolExecutor) -> Dict[str, pa.Array]:
    """Every column a file can hold, by name, for the session's `rows` (file order)."""
    m = len(rows)
    # Arrow's cast releases the GIL: formatting the signal columns in parallel uses all cores.
    signals = pool.map(format_repr, session.signals[rows].T)
    return {
        CREW: pa.repeat(pa.scalar(session.crew, pa.int64()), m),
        EXPERIMENT: pa.repeat(pa.scalar(session.experiment, pa.string()), m),
        TIME: session.time.take(pa.array(rows)),
        SEAT: pa.array(session.seat[rows]),
        **dict(zip(SIGNALS, signals)),
        EVENT: pa.array(LABEL_VOCABULARY).take(pa.array(session.codes[rows])),
    }


def _table(columns: Dict[str, pa.Array], names: Sequence[str]) -> pa.Table:
    return pa.Table.from_arrays([columns[name] for name in names], names=list(names))


def _row_batches(order: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(order), ROWS_PER_CHUNK):
        yield order[start:start + ROWS_PER_CHUNK]


def write_train(path: str, seed: int, crews: Sequence[int], n: int, pool: ThreadPoolExecutor) -> int:
    """Write train.csv: TRAIN_EXPERIMENTS of each crew, `n` samples per (crew, seat, experiment).

    Returns the number of data rows.
    """
    rows_written = 0
    with pa.OSFile(path, "wb") as sink:
        writer = None
        for crew in crews:
            for experiment in TRAIN_EXPERIMENTS:
                session = make_session(seed, crew, experiment, n, fixed_time=False)
                for rows in _row_batches(session.order):
                    table = _table(_columns(session, rows, pool), TRAIN_COLUMNS)
                    writer = writer or pa_csv.CSVWriter(sink, table.schema, write_options=WRITE_OPTIONS)
                    writer.write_table(table)
                    rows_written += len(rows)
        _close(writer, sink, TRAIN_COLUMNS)
    return rows_written


def write_test(path: str, truth_path: str, seed: int, crews: Sequence[int], n: int,
               pool: ThreadPoolExecutor) -> int:
    """Write test.csv (ids 0..N-1 in file order) and test_truth.csv (`id,event`, same order).

    Returns the number of data rows (of each file).
    """
    rows_written = 0
    with pa.OSFile(path, "wb") as sink, pa.OSFile(truth_path, "wb") as truth_sink:
        writer = truth_writer = None
        for crew in crews:
            for experiment in TEST_EXPERIMENTS:
                session = make_session(seed, crew, experiment, n, fixed_time=True)
                for rows in _row_batches(session.order):
                    columns = _columns(session, rows, pool)
                    columns[ID] = pa.array(np.arange(rows_written, rows_written + len(rows), dtype=np.int64))
                    table, truth = _table(columns, TEST_COLUMNS), _table(columns, TRUTH_COLUMNS)
                    writer = writer or pa_csv.CSVWriter(sink, table.schema, write_options=WRITE_OPTIONS)
                    truth_writer = truth_writer or pa_csv.CSVWriter(
                        truth_sink, truth.schema, write_options=WRITE_OPTIONS)
                    writer.write_table(table)
                    truth_writer.write_table(truth)
                    rows_written += len(rows)
        _close(writer, sink, TEST_COLUMNS)
        _close(truth_writer, truth_sink, TRUTH_COLUMNS)
    return rows_written


def _close(writer: Optional[pa_csv.CSVWriter], sink: pa.NativeFile, names: Sequence[str]) -> None:
    """Finish a file; with no rows at all it still gets its header line."""
    if writer is None:
        sink.write((",".join(names) + "\n").encode())
    else:
        writer.close()


def generate(out_dir: str, crews: Sequence[int] = (1, 2, 3), seconds: float = 60.0,
             test_crews: Optional[Sequence[int]] = None, test_seconds: float = 30.0,
             seed: int = 0, claim: bool = False) -> Dict[str, Dict[str, object]]:
    """Write out_dir/train.csv, out_dir/test.csv and out_dir/test_truth.csv.

    `seconds` / `test_seconds` are per (crew, seat, experiment): each gives round(s * 256) rows.
    `test_crews` defaults to `crews`. Crews are written in ascending order. With `claim`, out_dir
    is marked as a synth output (ownership.claim; the command checks it first) before any file.
    Returns {"train" | "test" | "test_truth": {"path": str, "rows": int}}.
    """
    crews = _check_crews(crews)
    test_crews = crews if test_crews is None else _check_crews(test_crews)
    n_train, n_test = _samples(seconds), _samples(test_seconds)
    _check_seed(seed)
    if claim:
        ownership.claim(out_dir, OUTPUT)
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, file) for name, file in
             (("train", TRAIN_FILE), ("test", TEST_FILE), ("test_truth", TRUTH_FILE))}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        train_rows = write_train(paths["train"], seed, crews, n_train, pool)
        test_rows = write_test(paths["test"], paths["test_truth"], seed, test_crews, n_test, pool)
    rows = {"train": train_rows, "test": test_rows, "test_truth": test_rows}
    return {name: {"path": path, "rows": rows[name]} for name, path in paths.items()}


def _check_arguments(args: argparse.Namespace) -> None:
    """UsageError (exit 2) for values argparse cannot check: generate's own checks, run first."""
    try:
        _check_crews(args.crews)
        _check_crews(args.test_crews or ())
        _samples(args.seconds), _samples(args.test_seconds)
        _check_seed(args.seed)
    except ValueError as e:
        raise console.UsageError(str(e)) from None


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _check_crews(crews: Sequence[int]) -> Tuple[int, ...]:
    crews = tuple(sorted(int(c) for c in crews))
    if len(set(crews)) != len(crews) or any(c < 0 for c in crews):
        raise ValueError(f"crews must be distinct non-negative integers, got {crews}")
    return crews


def _samples(seconds: float) -> int:
    n = int(round(seconds * SAMPLE_RATE_HZ))
    if n < 1:
        raise ValueError(f"seconds must give at least one sample at {SAMPLE_RATE_HZ} Hz, got {seconds}")
    return n


# ---------------------------------------------------------------------------------------------
# Command line

def _crew_list(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated crew numbers, got {text!r}") from None


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crewstream synth",
        description=(
            "Write a synthetic sample of the Kaggle 'Reducing Commercial Aviation Fatalities' files: "
            "OUT/train.csv (experiments CA, DA, SS), OUT/test.csv (LOFT, with ids) and "
            "OUT/test_truth.csv (id,event). Same layout and quirks as the real files: rows ordered "
            "by time as text with the seats interleaved, shortest-repr floats. Deterministic per seed."),
        epilog="Kaggle-sized train.csv: --crews 1,2,3,4,5,6,7,8,13 --seconds 352 (4.87M rows, ~1.2 GB).")
    parser.add_argument("--output", dest="out", required=True, metavar="DIR",
                        help="output folder: new, empty, or an earlier synth output (created if missing)")
    parser.add_argument("--crews", type=_crew_list, default=(1, 2, 3), metavar="1,2,3",
                        help="train crews, comma-separated (default: 1,2,3)")
    parser.add_argument("--seconds", type=float, default=60.0, metavar="S",
                        help="train seconds per (crew, seat, experiment), 256 rows each (default: 60)")
    parser.add_argument("--test-crews", type=_crew_list, default=None, metavar="1,2,3",
                        help="test crews, comma-separated (default: the train crews)")
    parser.add_argument("--test-seconds", type=float, default=30.0, metavar="S",
                        help="test (LOFT) seconds per (crew, seat) (default: 30)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed, >= 0 (default: 0)")
    console.add_verbose(parser)
    return parser.parse_args(argv)


@failure.command("synth")
def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    started = time.perf_counter()
    _check_arguments(args)
    with ownership.hold(args.out, f"--output {args.out}"):
        ownership.check_output_folder(args.out, OUTPUT, flag="--output")
        written = generate(args.out, crews=args.crews, seconds=args.seconds, test_crews=args.test_crews,
                           test_seconds=args.test_seconds, seed=args.seed, claim=True)
    for info in written.values():
        size = os.path.getsize(info["path"])
        print(f"wrote {info['path']}: {info['rows']:,} rows, {size:,} bytes")
    print(f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    failure.run_process(main)
