"""The named choices of a training run, in a module that imports nothing, so that the command line
(trainer.task: --help, argument checks) needs no TensorFlow import.

STRATEGIES: the tf.distribute strategies of trainer.train (`--strategy`).
"""

DEFAULT, MIRRORED, MULTIWORKER = "default", "mirrored", "multiworker"
STRATEGIES = (DEFAULT, MIRRORED, MULTIWORKER)
