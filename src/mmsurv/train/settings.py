"""Training settings, resolved without torch: the data/training defaults, the training config and
how a model's settings are layered. For the training run and for the workflow's parse-time check.

Settings resolve in this order, later winning: package defaults (MCAT's) < the model's paper
defaults (``SurvivalModel.defaults``) < the config's ``data``/``training`` < the model's own
``models.NAME.data``/``models.NAME.training`` (see :mod:`mmsurv.train.run`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

from mmsurv.data.missing import DEFAULT_MAX_MISSING_FEATURES
from mmsurv.models.catalog import ResolvedModel

OPTIMIZER_NAMES = ("adam", "adamw", "radam")
SCHEDULERS = ("none", "cosine", "step")
LOSSES = ("nll", "cox")


@dataclass
class TrainConfig:
    """Training settings; defaults are MCAT's (Adam, lr 2e-4, weight decay 1e-5, 20 epochs, gc 32)."""

    optimizer: str = "adam"
    lr: float = 2e-4
    weight_decay: float = 1e-5
    epochs: int = 20
    grad_accum: int = 32
    batch_size: int = 1  # patients per forward pass (models that declare batchable)
    scheduler: str = "none"
    step_size: int = 10  # step scheduler: epochs per decay
    gamma: float = 0.1  # step scheduler: decay factor
    min_lr: float = 0.0  # cosine scheduler floor
    loss: str = "nll"
    alpha: float = 0.0  # NLL weight of the uncensored term (MCAT --alpha_surv)
    l1_reg: float = 0.0  # MCAT --lambda_reg with --reg_type omic (1e-4 for its SNN runs)
    weighted_sampling: bool = True
    flush_accumulation: bool = True
    holdout_fraction: float = 0.0
    selection_metric: str | None = None  # "cindex" | "loss"; None: loss on a hold-out, else cindex on val
    early_stopping_patience: int | None = None  # epochs without hold-out improvement; needs a hold-out
    early_stopping_min_epochs: int = 0
    device: str = "auto"
    num_threads: int | None = None  # None: 1 for genomic-only models, else min(2, CPUs) (seed.default_threads)
    deterministic: bool = True

    @classmethod
    def from_dict(cls, values: dict | None) -> TrainConfig:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"training config: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"training.optimizer must be one of {', '.join(OPTIMIZER_NAMES)}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"training.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"training.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.epochs < 1 or self.grad_accum < 1 or self.batch_size < 1:
            raise ValueError("training.epochs, training.grad_accum and training.batch_size must be at least 1")
        if self.selection_metric not in (None, "cindex", "loss"):
            raise ValueError(f"training.selection_metric must be cindex or loss, got {self.selection_metric!r}")
        if self.early_stopping_patience is not None and self.holdout_fraction <= 0:
            raise ValueError("training.early_stopping_patience needs training.holdout_fraction > 0: "
                             "early stopping never looks at the validation fold")

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_SEED = 1
DATA_DEFAULTS = {
    "n_bins": 4,
    "groups": "signatures",
    "pathway_suffixes": ["_rnaseq"],
    "pathway_min_size": 1,
    "feature_dim": 1024,
    "max_patches": None,
    "eval_max_patches": None,
    "cache_bags": False,
    "standardize_features": False,
    "max_missing_features": DEFAULT_MAX_MISSING_FEATURES,  # share of a fold side without WSI features
}
CONFIG_SECTIONS = ("data", "training", "models", "seed")


def resolve_config(config: Mapping | None, model: str) -> tuple[dict, TrainConfig, dict, int]:
    """(data settings, training settings, model hyper-parameters, seed) for ``model`` (or variant)."""
    data, training, resolved, seed = resolve_settings(config, model)
    return data, training, resolved.params, seed


def resolve_settings(config: Mapping | None, model: str,
                     resolve: Callable[[str, Mapping | None], ResolvedModel] | None = None,
                     ) -> tuple[dict, TrainConfig, ResolvedModel, int]:
    """The resolved data and training settings of ``model``, the model behind the name, the seed.

    ``resolve(name, models_section)`` finds the model: by default the registry (imports the model
    modules, and torch); the workflow passes the catalog's, which reads their source."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"train config: unknown section(s) {', '.join(unknown)} (known: {', '.join(CONFIG_SECTIONS)})")
    if resolve is None:
        from mmsurv.models.registry import resolve_model as resolve
    resolved = resolve(model, config.get("models"))
    defaults = resolved.spec.defaults
    data = dict(DATA_DEFAULTS)
    for where, values in ((f"model {resolved.spec.name} defaults", defaults.get("data")), ("train.data", config.get("data")),
                          (f"train.models.{model}.data", resolved.data)):
        extra = sorted(set(values or {}) - set(DATA_DEFAULTS))
        if extra:
            raise ValueError(f"{where}: unknown data key(s) {', '.join(extra)} (known: {', '.join(DATA_DEFAULTS)})")
        data.update(values or {})
    if data["groups"] not in ("signatures", "pathways"):
        raise ValueError(f"train config: data.groups must be 'signatures' or 'pathways', got {data['groups']!r}")
    training_values = dict(defaults.get("training") or {})
    training_values.update(config.get("training") or {})
    training_values.update(resolved.training)
    training = TrainConfig.from_dict(training_values)
    if training.batch_size > 1 and not resolved.spec.batchable:
        raise ValueError(f"model {model!r} takes one patient per forward pass (not batchable): "
                         f"training.batch_size must be 1, got {training.batch_size}")
    return data, training, resolved, int(config.get("seed", DEFAULT_SEED))


