"""The CSV columns of the crew recordings (Kaggle "Reducing Commercial Aviation Fatalities").

Column names of the input files are part of the contract: the synth generator writes them, the
preprocess job and predict read them. Nothing else spells a column name.
"""

CREW = "crew"
EXPERIMENT = "experiment"
TIME = "time"
SEAT = "seat"
EVENT = "event"
ID = "id"

# The 23 signals, in file order.
SIGNALS = (
    "eeg_fp1", "eeg_f7", "eeg_f8", "eeg_t4", "eeg_t6", "eeg_t5", "eeg_t3", "eeg_fp2",
    "eeg_o1", "eeg_p3", "eeg_pz", "eeg_f3", "eeg_fz", "eeg_f4", "eeg_c4", "eeg_p4",
    "eeg_poz", "eeg_c3", "eeg_cz", "eeg_o2", "ecg", "r", "gsr",
)

KEY_COLUMNS = (CREW, EXPERIMENT, TIME, SEAT)
TRAIN_COLUMNS = KEY_COLUMNS + SIGNALS + (EVENT,)
TEST_COLUMNS = (ID,) + KEY_COLUMNS + SIGNALS

TRAIN_EXPERIMENTS = ("CA", "DA", "SS")
TEST_EXPERIMENTS = ("LOFT",)
EXPERIMENTS = TRAIN_EXPERIMENTS + TEST_EXPERIMENTS
SEATS = (0, 1)

# Sampling rate of the recordings, rows per second per (crew, seat, experiment).
SAMPLE_RATE_HZ = 256
