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
SCHEDULERS = ("none", "cosine", "step", "poly")
SCHEDULER_INTERVALS = ("epoch", "step")
LOSSES = ("nll", "cox")
NOT_NUMERIC = ("resume_every_s",)  # training settings that never change the numbers


@dataclass
class TrainConfig:
    """Training settings; defaults are MCAT's (Adam, lr 2e-4, weight decay 1e-5, 20 epochs, gc 32).

    Optimiser and schedule options are described in :mod:`mmsurv.train.optim`."""

    optimizer: str = "adam"
    lr: float = 2e-4
    weight_decay: float = 1e-5
    decoupled_weight_decay: bool | None = None  # None: the optimiser's rule (adam/radam: in the gradient; adamw: decoupled)
    no_decay_1d: bool = False  # biases and 1-D weights (norms) take no weight decay (TransMIL's/timm's rule)
    lookahead: bool = False  # Lookahead around the optimiser (TransMIL's lookahead_radam)
    lookahead_k: int = 6
    lookahead_alpha: float = 0.5
    epochs: int = 20
    grad_accum: int = 32
    batch_size: int = 1  # patients per forward pass (models that declare batchable)
    scheduler: str = "none"
    step_size: int = 10  # step scheduler: epochs per decay
    gamma: float = 0.1  # step scheduler: decay factor
    min_lr: float = 0.0  # cosine scheduler floor
    poly_power: float = 0.9  # poly scheduler: lr·(1 − s/T)^power (HDMoE's engine)
    warmup_epochs: int = 0  # cosine/poly: linear warm-up from 0 over these epochs (SurvPath: 1)
    scheduler_interval: str = "epoch"  # "epoch" | "step": when cosine/poly advance (SurvPath: every optimiser step)
    loss: str = "nll"
    alpha: float = 0.0  # NLL weight of the uncensored term (MCAT --alpha_surv)
    l1_reg: float = 0.0  # MCAT --lambda_reg with --reg_type omic (1e-4 for its SNN runs)
    l1_modules: list[str] | None = None  # L1 over these submodules only (PORPOISE's --reg_type pathomic); None: all
    weighted_sampling: bool = True
    flush_accumulation: bool = True
    holdout_fraction: float = 0.0
    selection_metric: str | None = None  # "cindex" | "loss"; None: loss on a hold-out, else cindex on val
    early_stopping_patience: int | None = None  # epochs without hold-out improvement; needs a hold-out
    early_stopping_min_epochs: int = 0
    device: str = "auto"
    num_threads: int | None = None  # None: 1 for genomic-only models, else min(2, CPUs) (seed.default_threads)
    deterministic: bool = True
    # Seconds between resume checkpoints (mmsurv.train.resume): an epoch's end writes one when this
    # long has passed since the last; the last epoch, an early stop and a stop signal always write
    # one. 0: every epoch. Does not change the numbers (not part of a run's identity).
    resume_every_s: float = 60.0

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
        self._validate_optimizer_options()
        if self.selection_metric not in (None, "cindex", "loss"):
            raise ValueError(f"training.selection_metric must be cindex or loss, got {self.selection_metric!r}")
        if not isinstance(self.resume_every_s, (int, float)) or self.resume_every_s < 0:
            raise ValueError(f"training.resume_every_s must be a number of seconds >= 0, got {self.resume_every_s!r}")
        if self.early_stopping_patience is not None and self.holdout_fraction <= 0:
            raise ValueError("training.early_stopping_patience needs training.holdout_fraction > 0: "
                             "early stopping never looks at the validation fold")

    def _validate_optimizer_options(self) -> None:
        if self.scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"training.scheduler_interval must be one of {', '.join(SCHEDULER_INTERVALS)}, "
                             f"got {self.scheduler_interval!r}")
        if self.scheduler_interval == "step" and self.scheduler not in ("cosine", "poly"):
            raise ValueError(f"training.scheduler_interval: step needs scheduler cosine or poly, got {self.scheduler!r} "
                             "(the step scheduler's step_size counts epochs)")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"training.warmup_epochs must be a whole number >= 0, got {self.warmup_epochs!r}")
        if self.warmup_epochs and self.scheduler not in ("cosine", "poly"):
            raise ValueError(f"training.warmup_epochs needs scheduler cosine or poly, got {self.scheduler!r}")
        if not self.poly_power > 0:
            raise ValueError(f"training.poly_power must be positive, got {self.poly_power!r}")
        if self.decoupled_weight_decay not in (None, True, False):
            raise ValueError(f"training.decoupled_weight_decay must be true, false or null, got {self.decoupled_weight_decay!r}")
        if self.optimizer == "adamw" and self.decoupled_weight_decay is False:
            raise ValueError("training.decoupled_weight_decay: false contradicts optimizer adamw (always decoupled); "
                             "use optimizer adam for decay in the gradient")
        if self.lookahead and (not isinstance(self.lookahead_k, int) or self.lookahead_k < 1
                               or not 0.0 <= self.lookahead_alpha <= 1.0):
            raise ValueError(f"training.lookahead needs lookahead_k >= 1 and 0 <= lookahead_alpha <= 1, "
                             f"got {self.lookahead_k!r} and {self.lookahead_alpha!r}")
        if self.l1_modules is not None and (isinstance(self.l1_modules, str) or not self.l1_modules
                                            or not all(isinstance(m, str) and m for m in self.l1_modules)):
            raise ValueError(f"training.l1_modules must be a non-empty list of module names, got {self.l1_modules!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    def numeric_settings(self) -> dict:
        """The settings that can change a run's numbers (a run's identity): all but the checkpoint interval."""
        return {key: value for key, value in asdict(self).items() if key not in NOT_NUMERIC}


DEFAULT_SEED = 1
# Patches per patient of the reference FLOP count: the training job counts its model's FLOPs at this
# bag size (metrics.json flops_per_patient) and the report's efficiency table compares models at it.
FLOPS_REFERENCE_BAG_SIZE = 4096
DATA_DEFAULTS = {
    "n_bins": 4,
    "groups": "signatures",
    "pathway_suffixes": ["_rnaseq"],
    "pathway_min_size": 1,
    "feature_dim": None,  # read from the features (data.dataset.bag_feature_dim)
    "max_patches": None,
    "eval_max_patches": None,
    "cache_bags": False,
    "standardize_features": False,
    "max_missing_features": DEFAULT_MAX_MISSING_FEATURES,  # share of a fold side without WSI features
}
CONFIG_SECTIONS = ("data", "training", "models", "seed")


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


