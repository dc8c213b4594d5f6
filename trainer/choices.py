"""The named choices of a training run, in a module that imports nothing, so that the command line
(trainer.task: --help, argument checks) needs no TensorFlow import.

STRATEGIES: the tf.distribute strategies of trainer.train (`--strategy`).
MODELS: the networks of trainer.model (`--model`).
NORMALIZATIONS: what the network does to its (globally scaled) input rows first, per feature, over
  the last `norm_rows` rows up to each step (causal): nothing; subtract their mean; z-score
  (`--normalize`, trainer.model).
"""

DEFAULT, MIRRORED, MULTIWORKER = "default", "mirrored", "multiworker"
STRATEGIES = (DEFAULT, MIRRORED, MULTIWORKER)

LSTM, TCN = "lstm", "tcn"
MODELS = (LSTM, TCN)

NORM_NONE, NORM_CENTER, NORM_ZSCORE = "none", "center", "zscore"
NORMALIZATIONS = (NORM_NONE, NORM_CENTER, NORM_ZSCORE)
