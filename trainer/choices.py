"""The named choices of a training run, in a module that imports no TensorFlow, so that the command line
(trainer.task: --help, argument checks) needs no TensorFlow import.

STRATEGIES: the tf.distribute strategies of trainer.train (`--strategy`).
MODELS: the networks of trainer.model (`--model`).
NORMALIZATIONS: what the network does to its (globally scaled) input rows first, per feature, over
  the last `norm_rows` rows up to each step (causal): nothing; subtract their mean; z-score
  (`--normalize`, trainer.model).
"""

# The serving config names them, so they are the serving contract's (tfrecords_schema.serving).
from tfrecords_schema.serving import (  # noqa: F401 (names of this module)
    LSTM, MODELS, NORM_CENTER, NORM_NONE, NORM_ZSCORE, NORMALIZATIONS, TCN,
)

DEFAULT, MIRRORED, MULTIWORKER = "default", "mirrored", "multiworker"
STRATEGIES = (DEFAULT, MIRRORED, MULTIWORKER)
