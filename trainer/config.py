"""The settings of a training run (TrainConfig) and of its network (ModelParams), and their
defaults: a field's default is what `crewstream train` uses when its flag is not given, and
trainer.task reads its flags' defaults and help text from here.

No TensorFlow import: the command line builds a TrainConfig, and answers --help and usage errors,
before TensorFlow loads. trainer.model builds the network these settings describe.
"""

import dataclasses
from typing import Any, Dict, Optional

from trainer import weights
from trainer.choices import DEFAULT, MODELS, MULTIWORKER, NORM_CENTER, NORM_NONE, NORMALIZATIONS, STRATEGIES, TCN

# Windows held by the shuffle buffer: W*F*4 bytes each (23.5 KB at W=256, F=23, so ~48 MB).
DEFAULT_SHUFFLE_BUFFER = 2048


class ModelError(ValueError):
    """The model's settings cannot work with the data, e.g. a receptive field larger than W."""


def receptive_field(kernel_size: int, levels: int, input_rows: int = 1) -> int:
    """Rows a tcn output step depends on: level i adds 2 (k-1) d rows (two convolutions of
    dilation d = 2^i). `input_rows` is the look-back of a causal stage before the levels (1: none;
    a rolling normalization over L rows passes L)."""
    return input_rows + 2 * (kernel_size - 1) * (2 ** levels - 1)


def max_levels(kernel_size: int, window: int, input_rows: int = 1) -> int:
    """The most levels whose receptive field (see `receptive_field`) fits `window` rows (0 when
    not even one does)."""
    levels = 0
    while receptive_field(kernel_size, levels + 1, input_rows) <= window:
        levels += 1
    return levels


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """The flags that shape and train the network; the defaults are `crewstream train`'s: a tcn of
    64 filters whose input is centered over half the window, trained at random input gains up to 2x
    (the best measured on a flight of a crew in no split, docs/DESIGN.md "Models").

    `kind`: one of MODELS. `units`, `layers`: the lstm's; `filters`, `kernel_size`, `levels`: the
    tcn's (levels None: as many as fit the window, see `for_window`); `dropout`, `learning_rate`:
    both. `normalize` (one of NORMALIZATIONS) over `norm_rows` rows (None: half the window, see
    `for_window`): the causal input stage of both models (RollingNormalization); a tcn's
    receptive field then counts those rows too. `augment_gain` G > 1: in training only, before
    that stage, every sample's features at random gains in [1/G, G] (RandomGain); 1: none.
    """

    units: int = 64
    layers: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3
    kind: str = TCN
    filters: int = 64
    kernel_size: int = 3
    levels: Optional[int] = None
    normalize: str = NORM_CENTER
    norm_rows: Optional[int] = None
    augment_gain: float = 2.0

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.norm_rows is not None and self.norm_rows < 2:
            raise ValueError(f"norm_rows must be >= 2, got {self.norm_rows}")
        if self.kind not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.kind!r}")
        if self.units < 1 or self.layers < 1:
            raise ValueError(f"units ({self.units}) and layers ({self.layers}) must be >= 1")
        if self.filters < 1 or self.kernel_size < 2 or (self.levels is not None and self.levels < 1):
            raise ValueError(f"filters ({self.filters}) and levels ({self.levels}) must be >= 1, "
                             f"kernel_size ({self.kernel_size}) >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.augment_gain >= 1.0:
            raise ValueError(f"augment_gain must be >= 1 (1: none), got {self.augment_gain}")

    @property
    def receptive_field(self) -> Optional[int]:
        """Rows one output depends on: the tcn's (None until `levels` is set); None for the lstm,
        which sees its whole window."""
        if self.kind != TCN or self.levels is None:
            return None
        return receptive_field(self.kernel_size, self.levels, self.input_rows)

    @property
    def input_rows(self) -> int:
        """Rows the input stage looks back over: `norm_rows` when normalizing, else 1."""
        return 1 if self.normalize == NORM_NONE else (self.norm_rows or 1)

    def describe(self) -> str:
        """One line for the log, e.g. `tcn: 4 levels of 32 filters, kernel 3, receptive field 61 rows`."""
        norm = "" if self.normalize == NORM_NONE else f"; input {self.normalize} over {self.norm_rows} rows"
        norm += f"; trained at random input gains up to {self.augment_gain:g}x" if self.augment_gain > 1 else ""
        if self.kind == TCN:
            return (f"tcn: {self.levels} levels of {self.filters} filters, kernel {self.kernel_size}, "
                    f"receptive field {self.receptive_field} rows, dropout {self.dropout:g}{norm}")
        return f"lstm: {self.layers} x {self.units} units, dropout {self.dropout:g}{norm}"

    def for_window(self, window: int) -> "ModelParams":
        """These settings for windows of `window` rows: a tcn's `levels` filled in (as many as
        fit), checked. ModelError when the receptive field exceeds the window: the windowed model
        would then see its own zero padding, and one pass could not equal it. With a
        normalization, `norm_rows` None becomes half the window, and more rows than the window
        are refused the same way."""
        params = self
        if self.normalize != NORM_NONE:
            rows = max(2, window // 2) if self.norm_rows is None else self.norm_rows
            if rows > window:
                raise ModelError(f"--normalize {self.normalize} over --norm-rows {rows} rows, more than "
                                 f"the window of {window} rows: use --norm-rows {window} or fewer")
            params = dataclasses.replace(self, norm_rows=rows)
        if self.kind != TCN:
            return params
        look_back = params.input_rows
        fits = max_levels(self.kernel_size, window, look_back)
        levels = fits if self.levels is None else self.levels
        if levels < 1 or receptive_field(self.kernel_size, levels, look_back) > window:
            hint = (f"use --levels {fits} or fewer" if fits else
                    "use a smaller --kernel-size" + (" or --norm-rows" if look_back > 1 else ""))
            norm = f", --norm-rows {look_back}" if look_back > 1 else ""
            raise ModelError(f"tcn with --kernel-size {self.kernel_size} and --levels {max(levels, 1)}{norm} "
                             f"has a receptive field of "
                             f"{receptive_field(self.kernel_size, max(levels, 1), look_back)} "
                             f"rows, more than the window of {window} rows: {hint}")
        return dataclasses.replace(params, levels=levels)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run (trainer.train.train); MODEL/train_config.json records it (`to_json`)."""

    data: str
    model_dir: str
    epochs: int = 16
    batch_size: int = 64
    weighting: str = weights.BALANCED
    steps_per_epoch: Optional[int] = None  # None: one exact pass over the train split per epoch
    seed: int = 0
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    model: ModelParams = ModelParams()
    verbose: int = 1  # Keras: 1 progress bar, 2 one line per epoch, 0 silent
    strategy: str = DEFAULT  # one of STRATEGIES
    data_service: Optional[str] = None  # grpc://HOST:PORT of a tf.data service dispatcher
    early_stopping: Optional[int] = None  # patience in epochs; None: train every epoch, export the last
    window: Optional[int] = None  # rows per window (sequence folders: any up to stats.json's); None: stats.json's
    stride: Optional[int] = None  # rows between window starts (sequence folders: any); None: stats.json's
    dense: bool = False  # tcn on a sequence folder: one pass per chunk, a loss at every stride-1 window end

    def __post_init__(self):
        if self.dense and self.model.kind != TCN:
            raise ValueError(f"dense training needs --model {TCN}: an lstm has no per-row outputs")
        if self.dense and (self.strategy == MULTIWORKER or self.data_service):
            raise ValueError("dense training runs on one machine: not with the multiworker strategy or "
                             "a data service")
        if (self.window is not None and self.window < 1) or (self.stride is not None and self.stride < 1):
            raise ValueError(f"window ({self.window}) and stride ({self.stride}) must be >= 1")
        if self.epochs < 1 or self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ValueError("epochs, batch_size and shuffle_buffer must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ValueError(f"early_stopping (patience) must be >= 1, got {self.early_stopping}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.strategy == MULTIWORKER and self.data_service:
            raise ValueError("a data service with the multiworker strategy is not supported: every "
                             "worker would run its own jobs over the whole split")
        weights.parse_method(self.weighting)

    def to_json(self) -> Dict[str, Any]:
        """The settings, and the model's receptive field (rows; null for the lstm: its window)."""
        settings = dataclasses.asdict(self)
        settings["model"]["receptive_field"] = self.model.receptive_field
        return settings
