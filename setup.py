"""crewstream: large multi-channel time-series CSVs to windowed TFRecords and trained models.

This file is also what remote Beam workers install (`--setup_file ./setup.py`).
"""

import setuptools

# tf.Transform 1.21 pins one TensorFlow minor; these install together from the package index.
REQUIRED = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "tf-keras==2.21.0",
    "tensorboard==2.21.0",  # Keras' TensorBoard callback writes through it
    "numpy==2.4.6",
    "pandas==3.1.1",
    "pyarrow==25.0.1",
    "matplotlib==3.11.2",
    "psutil==7.2.2",
]

TEST = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "scikit-learn==1.9.1",
    "ruff==0.16.9",  # `make test` runs `ruff check` (ruff.toml)
    "polars==2.1.0",  # the in-memory anchor of benchmarks/bench_floor.py, checked by its test
]

setuptools.setup(
    name="crewstream",
    version="0.1.0",
    description="Crew physiology CSVs to scaled, windowed TFRecord shards, trained models and predictions",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=["tfrecords_schema*", "cli_common*", "beam_jobs*", "trainer*", "crewstream*"]),
    install_requires=REQUIRED,
    extras_require={"test": TEST},
    entry_points={"console_scripts": ["crewstream=crewstream.cli:script"]},
)
