"""Frozen configuration dataclasses for the GPP recurrent models (flax-examples style).

A run is fully described by a :class:`ModelConfig` (the network) and a :class:`TrainConfig`
(data protocol, optimiser, budget); both are hashable so jitted functions can take the model
configuration as a static argument and compile once per architecture. A hyperparameter
search is bounded by a :class:`SearchSpace` and a budget (:data:`TUNE_TRIALS`,
:data:`TUNE_MAX_EPOCHS`). This module imports no JAX or Optuna, so the ``gpp`` command
reads its option defaults from these fields. The defaults that are
the paper's protocol (sequence length, split years, dropout, epochs, the layer and unit
bounds) come from :mod:`gpp_cubes.paper`, so the CLI options derived from these fields show
the same values.

References
----------
Montero, D. et al. (2024). Recurrent neural networks for modelling gross primary production
using Sentinel-2, Sentinel-1 and MODIS data, sections 2.2-2.3.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gpp_cubes import paper
from gpp_cubes.errors import ConfigError

Cell = Literal["rnn", "gru", "lstm"]
Init = Literal["paper_uniform", "flax_default"]
Protocol = Literal["holdout", "paper"]
Impl = Literal["auto", "fused", "flax"]

CELLS: tuple[str, ...] = ("rnn", "gru", "lstm")
#: Largest network the configuration accepts (and the tuner searches), section 2.2.
MAX_LAYERS = paper.MAX_LAYERS
MAX_UNITS = paper.MAX_UNITS
#: Default budget of one tuning worker: trials, and Hyperband's largest resource per trial
#: [epochs] (3^3: rungs at 1, 3, 9 and 27 epochs with reduction factor 3).
TUNE_TRIALS = 30
TUNE_MAX_EPOCHS = 27
#: Shuffling scopes of the permutation importance (:mod:`gpp_models.explain`); the first is
#: the default. Here (no JAX) so the ``gpp`` command reads its choices without importing it.
ImportanceScope = Literal["site", "pooled"]
IMPORTANCE_SCOPES: tuple[str, ...] = get_args(ImportanceScope)
#: Readings of the NRMSE range (:mod:`gpp_models.evaluate`); the first is the default.
NrmseNorm = Literal["subset", "full-period"]
NRMSE_NORMS: tuple[str, ...] = get_args(NrmseNorm)
#: The evaluation readings each protocol implies; ``gpp evaluate`` / ``gpp explain`` take them
#: from the run's recorded protocol unless the option is given. The paper divides the RMSE by
#: "the maximum and minimum observed values" (read as the site's whole test period) and
#: shuffles "the feature array" (read as all sites' test samples pooled), section 2.2-2.3.
PROTOCOL_READINGS: dict[str, dict[str, str]] = {
    "holdout": {"nrmse_norm": "subset", "importance_scope": "site"},
    "paper": {"nrmse_norm": "full-period", "importance_scope": "pooled"},
}
#: ``source`` recorded beside a reading that was given explicitly (not from the protocol).
OPTION_SOURCE = "option"


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``; otherwise a ConfigError naming ``what`` and them."""
    if value not in choices:
        raise ConfigError(f"{what} must be one of {choices}, got {value!r}")
    return value


def protocol_reading(reading: str, protocols: Any, explicit: str | None = None
                     ) -> tuple[str, str]:
    """The value of an evaluation reading and where it came from.

    Parameters
    ----------
    reading : {"nrmse_norm", "importance_scope"}
        A key of :data:`PROTOCOL_READINGS`.
    protocols : iterable of str
        The recorded protocols of the runs evaluated together.
    explicit : str, optional
        The value given as an option; it wins over the protocols.

    Returns
    -------
    (value, source)
        ``source`` is :data:`OPTION_SOURCE` for an explicit value, else ``"protocol <name>"``.

    Raises
    ------
    gpp_cubes.errors.ConfigError
        No explicit value and the runs' protocols imply different values (name them).
    """
    if explicit is not None:
        return explicit, OPTION_SOURCE
    protos = list(dict.fromkeys(str(p) for p in protocols))
    for p in protos:
        check_choice(p, tuple(PROTOCOL_READINGS), "protocol")
    values = {PROTOCOL_READINGS[p][reading] for p in protos}
    if len(values) != 1:
        option = "--" + reading.replace("_", "-")
        raise ConfigError(f"the runs were trained under the protocols {', '.join(protos)}, "
                          f"which read {reading} differently ({', '.join(sorted(values))}); "
                          f"give {option} to evaluate them together")
    return values.pop(), f"protocol {protos[0]}"


def _as_int(field_name: str, value: Any) -> int:
    """``value`` as a plain Python int (numpy/pandas integers and integral floats accepted).

    Configs are written to JSON (``config.json``, ``best_epoch.json``) and hashed as static
    jit arguments, so numpy scalars (e.g. years read from a cube's time axis) must not leak in.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{field_name} must be an integer, got {value!r}")
    try:
        as_int = int(value)
        exact = as_int == value
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise ConfigError(f"{field_name} must be an integer, got {value!r}")
    return as_int


@dataclass(frozen=True)
class ModelConfig:
    """A stacked recurrent network with a dense head (sequence-to-one regression).

    Parameters
    ----------
    cell : {"rnn", "gru", "lstm"}
        Recurrent cell: Elman RNN (tanh), GRU (Cho et al. 2014, PyTorch/Flax form) or LSTM
        (Hochreiter & Schmidhuber 1997, no peepholes).
    layers : int
        Number of stacked recurrent layers [1-:data:`MAX_LAYERS`].
    units : int
        Hidden units per layer [1-:data:`MAX_UNITS`].
    dropout : float
        Dropout rate applied to each recurrent layer's output (between layers and before the
        head) during training [0-1); default :data:`gpp_cubes.paper.DROPOUT` (section 2.2).
    init : {"paper_uniform", "flax_default"}
        ``paper_uniform`` draws every kernel from U[-1/sqrt(n), 1/sqrt(n)] with n the fan-in
        of that kernel (the number of input features for the first layer's input kernel). The
        paper writes U[-sqrt(n), sqrt(n)], which for 25 features would give weights up to 5 and
        saturate tanh/sigmoid at once; we read it as the usual 1/sqrt(n) (Glorot-era and
        PyTorch convention) and keep the bound switchable. ``flax_default`` uses Flax's
        LeCun-normal input kernels and orthogonal recurrent kernels. Biases start at zero.
    unroll : int
        Time steps unrolled per ``lax.scan`` iteration (a speed knob on CPU, same numbers).
    impl : {"auto", "fused", "flax"}
        ``fused``: hand-written scan layers tuned for XLA:CPU
        (:mod:`gpp_models.recurrence`). ``flax``: the stock ``nn.SimpleCell``/``nn.GRUCell``/
        ``nn.OptimizedLSTMCell`` driven by ``nn.RNN``; same equations (tested equal), other
        parameter names, slower on CPU (see :mod:`gpp_models.models`). ``auto`` (default):
        training picks one for the device it runs on (:func:`gpp_models.impl_choice.choose_impl`:
        ``fused`` on CPU, the faster of the two in a few timed steps elsewhere) and records
        the choice in the run's ``config.json``; a network built from an unresolved ``auto``
        is ``fused``.
    """

    cell: Cell = "lstm"
    layers: int = 2
    units: int = 128
    dropout: float = paper.DROPOUT
    init: Init = "paper_uniform"
    unroll: int = 1
    impl: Impl = "auto"

    def __post_init__(self) -> None:
        for name in ("layers", "units", "unroll"):
            object.__setattr__(self, name, _as_int(f"ModelConfig.{name}", getattr(self, name)))
        object.__setattr__(self, "dropout", float(self.dropout))
        if self.impl not in get_args(Impl):
            raise ConfigError(f"ModelConfig.impl must be auto|fused|flax, got {self.impl!r}")
        if self.cell not in CELLS:
            raise ConfigError(f"ModelConfig.cell must be one of {CELLS}, got {self.cell!r}")
        if not 1 <= int(self.layers) <= MAX_LAYERS:
            raise ConfigError(f"ModelConfig.layers must be in 1..{MAX_LAYERS}, got {self.layers}")
        if not 1 <= int(self.units) <= MAX_UNITS:
            raise ConfigError(f"ModelConfig.units must be in 1..{MAX_UNITS}, got {self.units}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("paper_uniform", "flax_default"):
            raise ConfigError(f"ModelConfig.init must be paper_uniform|flax_default: {self.init!r}")
        if int(self.unroll) < 1:
            raise ConfigError(f"ModelConfig.unroll must be >= 1, got {self.unroll}")


@dataclass(frozen=True)
class TrainConfig:
    """Data protocol, optimiser and budget of one training run.

    Parameters
    ----------
    model : ModelConfig
        The network.
    epochs : int
        Passes over the training samples [1]; default :data:`gpp_cubes.paper.EPOCHS`.
    batch_size : int
        Samples per optimiser step [1].
    learning_rate : float
        Adam step size [1]; tuned log-uniformly in
        :data:`gpp_cubes.paper.LEARNING_RATE_RANGE`.
    seed : int
        Seed of parameter init, dropout and batch order; equal seeds give equal runs.
    protocol : {"holdout", "paper"}
        ``holdout`` (default) fits on ``train_years`` minus ``val_year`` and selects the best
        epoch on ``val_year``: the test years are never seen before evaluation. ``paper``
        fits on all ``train_years`` and keeps the checkpoint that is best on the *test* years,
        as in the paper: this leaks the test set into model selection and is reported so.
    window : int
        Sequence length [days]: the ``window`` days ending on day t predict GPP on day t;
        default :data:`gpp_cubes.paper.SEQUENCE_LENGTH`.
    train_years, test_years : tuple of int
        Calendar years of the temporal split; default :data:`gpp_cubes.paper.TRAIN_YEARS` /
        :data:`gpp_cubes.paper.TEST_YEARS` (section 2.2).
    val_year : int or None
        Training year held out for validation in the ``holdout`` protocol (default: the last
        training year). None selects the
        *blocked* split instead: every fourth ISO week of the training years is held out
        (used automatically when a cube holds a single training year; validation days then
        neighbour fitting days, so validation scores are optimistic, but the test years stay
        unseen).
    ensemble : int
        Number of seeds trained at once with ``jax.vmap`` (K >= 1); predictions report the
        ensemble mean and spread.
    patience : int or None
        Early stopping after this many epochs without validation improvement; None trains
        all epochs (the best checkpoint is kept either way).
    checkpoint_every : int
        Epochs between orbax checkpoints of the full training state (resumption points).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = paper.EPOCHS
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 0
    protocol: Protocol = "holdout"
    window: int = paper.SEQUENCE_LENGTH
    train_years: tuple[int, ...] = paper.TRAIN_YEARS
    test_years: tuple[int, ...] = paper.TEST_YEARS
    val_year: int | None = paper.TRAIN_YEARS[-1]
    ensemble: int = 1
    patience: int | None = None
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        # Plain Python ints (years often arrive as numpy scalars from a cube's time axis) keep
        # the config JSON-serialisable; tuples keep it hashable when built from JSON lists.
        def years(name: str) -> tuple[int, ...]:
            return tuple(_as_int(f"TrainConfig.{name}", y) for y in getattr(self, name))

        object.__setattr__(self, "train_years", years("train_years"))
        object.__setattr__(self, "test_years", years("test_years"))
        for name in ("val_year", "patience"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_int(f"TrainConfig.{name}", value))
        for name in ("epochs", "batch_size", "seed", "window", "ensemble", "checkpoint_every"):
            object.__setattr__(self, name, _as_int(f"TrainConfig.{name}", getattr(self, name)))
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        if self.protocol not in ("holdout", "paper"):
            raise ConfigError(f"TrainConfig.protocol must be holdout|paper, got {self.protocol!r}")
        if min(self.epochs, self.batch_size, self.window, self.ensemble,
               self.checkpoint_every) < 1:
            raise ConfigError("TrainConfig: epochs, batch_size, window, ensemble and "
                              "checkpoint_every must be >= 1")
        if not 0.0 < self.learning_rate < 1.0:
            raise ConfigError(f"TrainConfig.learning_rate must be in (0, 1): {self.learning_rate}")
        if set(self.train_years) & set(self.test_years):
            raise ConfigError("TrainConfig: train_years and test_years overlap")
        if self.protocol == "holdout" and self.val_year is not None:
            if self.val_year not in self.train_years:
                raise ConfigError(
                    f"TrainConfig.val_year {self.val_year} is not one of train_years "
                    f"{list(self.train_years)}"
                )
            if len(self.train_years) < 2:
                raise ConfigError("holdout protocol needs >= 2 train_years (one is validation)")

    @property
    def fit_years(self) -> tuple[int, ...]:
        """Years whose samples update the weights (and give the standardisation statistics)."""
        if self.protocol == "holdout" and self.val_year is not None:
            return tuple(y for y in self.train_years if y != self.val_year)
        return self.train_years

    @property
    def select_years(self) -> tuple[int, ...]:
        """Years on which the best epoch is chosen (the test years under ``paper``: leaks)."""
        if self.protocol == "paper":
            return self.test_years
        return (self.val_year,) if self.val_year is not None else self.train_years

    def day_masks(self, time: Any) -> dict[str, Any]:
        """Boolean day masks ``fit``, ``select`` and ``test`` over a daily DatetimeIndex."""
        import numpy as np

        years = np.asarray(time.year)
        masks = {"fit": np.isin(years, self.fit_years),
                 "select": np.isin(years, self.select_years),
                 "test": np.isin(years, self.test_years)}
        if self.protocol == "holdout" and self.val_year is None:  # blocked split
            held = np.asarray(time.isocalendar().week) % 4 == 3
            masks["select"] = masks["fit"] & held
            masks["fit"] = masks["fit"] & ~held
        return masks

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with fields changed; ``model`` fields may be given by name too."""
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        model_changes = {k: changes.pop(k) for k in list(changes) if k in model_fields}
        model = dataclasses.replace(self.model, **model_changes)
        return dataclasses.replace(self, model=model, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``model`` nested)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Indented JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        data = dict(data)
        model = data.pop("model", {}) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        mknown = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown += sorted(f"model.{k}" for k in set(model) - mknown)
        if unknown:
            raise ConfigError(f"unknown training config key(s): {', '.join(unknown)}")
        return cls(model=ModelConfig(**model), **data)


@dataclass(frozen=True)
class SearchSpace:
    """Hyperparameter ranges of :func:`gpp_models.tune.tune`; the defaults are the paper's
    (section 2.2).

    Attributes
    ----------
    layers : (int, int)
        Inclusive range of stacked layers [1-:data:`MAX_LAYERS`].
    units : tuple of int
        Candidate hidden sizes (categorical): the powers of two from 16 to
        :data:`MAX_UNITS`.
    learning_rate : (float, float)
        Log-uniform range of the Adam step size (:data:`gpp_cubes.paper.LEARNING_RATE_RANGE`).
    """

    layers: tuple[int, int] = (1, MAX_LAYERS)
    units: tuple[int, ...] = tuple(2**k for k in range(4, MAX_UNITS.bit_length()))
    learning_rate: tuple[float, float] = paper.LEARNING_RATE_RANGE
