"""The model contract (v2): what a survival model reads, what it returns and how it learns.

For whoever adds a model. A model is ONE module under ``mmsurv/models/`` holding an ``nn.Module``
subclass of :class:`SurvivalModel` registered with ``@register_model`` (see
:mod:`mmsurv.models.registry`); the training loop, the data layer and the workflow never change.

**What it reads.** The class attribute ``inputs`` names the inputs it needs; the data layer
(:mod:`mmsurv.data.inputs`) loads only those. Built-in names:

* ``path``: the patient's bag of patch features, B×N×D (all slides of the case, table order);
* ``coords``: N×2 level-0 (x, y) coordinates of the same rows, B×N×2 (from ``h5_files``);
* ``slide_index``: which of the patient's slides each row comes from, B×N (0, 1, …);
* ``slide_magnification``: the level-0 magnification (objective power, e.g. 40.0) of each row's
  slide, B×N float, as its ``h5_files`` record it; NaN when they do not (CLAM's own files);
* ``omic``: every genomic column, scaled on the training fold, B×G;
* ``omic_groups``: one scaled vector per genomic group, a list of B×s_i tensors; the grouping is
  the model's ``data.groups`` setting (``signatures`` or ``pathways``); ``omic_groups:signatures``
  or ``omic_groups:pathways`` fix the grouping whatever the setting.

Row-aligned inputs (``path``, ``coords``, ``slide_index``, ``slide_magnification``) are capped
together (same rows kept) and padded together; ``Batch.mask`` (B×N, True for real rows) says which
rows are padding when a batch holds several patients. The table label of a model (``genomic`` /
``pathology`` / ``multimodal``) is derived from its inputs (:func:`modality_of`).

**Batches.** Every tensor has a leading patient dimension B. Models that take bags of different
sizes one patient at a time (``batchable = False``, the default and what MCAT does) get B = 1 and
gradient accumulation gives the effective batch; ``batch.one("path")`` returns the N×D bag.
Models with ``batchable = True`` may be trained with ``training.batch_size > 1``.

**What it returns.** ``forward(batch)`` returns a :class:`ModelOutput`: B×K discrete-time hazard
logits (``hazards = sigmoid``, ``S = cumprod(1 − h)``), optional named auxiliary loss terms
(already weighted), optional attention maps, and optionally its own ``risk`` (default MCAT's
−Σ_k S_k). Evaluation ranks patients by ``output.risk``.

**How it learns.** ``loss(output, target)`` returns named loss terms; the loop back-propagates
their sum divided by ``grad_accum`` and logs each term per epoch. The default is MCAT's NLL under
the name ``surv`` (:data:`SURVIVAL_TERM`) plus every term of ``output.aux``. With
``training.loss: cox`` the loop replaces the ``surv`` term by the Cox partial likelihood of each
accumulation window and keeps the others.

**Epochs.** ``on_epoch_end(record)`` is called by the loop after each epoch's validation with the
epoch's record; a model whose training depends on the epoch (CancerMoE's score refresh) keeps its
state there (and in ``get_extra_state`` so checkpoints carry it). The loop never sets attributes of
a model: the NLL's α travels in the :class:`Target`.

**Late fusion.** A pathology model may serve as the WSI branch of the late-fusion models
(:mod:`mmsurv.models.late_fusion`) when it names, in ``embedding_head``, the ``nn.Linear`` that
maps its B×d slide embedding to its logits: :meth:`SurvivalModel.drop_head` replaces that layer by
the identity (its ``forward`` then returns the embedding as ``logits``) and returns d
(:meth:`embedding_dim`, by default the head's input size).

**Measures and patch scores.** ``ModelOutput.measures`` carries what a model reports for the
papers' analysis figures (see :class:`ModelOutput`). A model that weighs patches declares what its
per-patch scores are (``patch_score_kind``) and where its output holds them (``patch_score_key``:
an ``attention`` entry, N, 1×N or G×N), or overrides :meth:`SurvivalModel.patch_scores`; scores
that cost extra work are computed only while ``scoring_patches`` is on
(:meth:`SurvivalModel.score_patches`). ``patch_score_kind = None`` (the default) says the model has
none. The heatmaps (:mod:`mmsurv.heatmap`) read them; nothing else names a model.

**Paper defaults.** ``defaults = {"data": {...}, "training": {...}}`` states the paper's data and
training settings (grouping, patch cap, optimiser, lr, weight decay, epochs, batch, …); the run
resolves package defaults < model defaults < the config's ``train.data``/``train.training`` <
``train.models.NAME.{data,training}`` and records the result in ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mmsurv.models.inputs import group_kind, modality_of
from mmsurv.models.survival import discrete_survival, mcat_risk, nll_logits_loss, nll_surv_loss

SURVIVAL_TERM = "surv"


@dataclass
class Batch:
    """Inputs of B patients by input name (see the module docstring), plus the bag padding mask."""

    values: dict[str, Any] = field(default_factory=dict)
    mask: torch.Tensor | None = None  # B×N, True for real rows; None when nothing is padded
    size: int = 1

    @classmethod
    def single(cls, **values: Any) -> Batch:
        """A batch of one patient from unbatched values (N×D bag, G vector, list of group vectors)."""
        batched = {}
        for name, value in values.items():
            if value is None:
                continue
            batched[name] = [v.unsqueeze(0) for v in value] if isinstance(value, (list, tuple)) else value.unsqueeze(0)
        return cls(values=batched, mask=None, size=1)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"the batch has no input {name!r} (it has: {', '.join(sorted(self.values)) or 'none'})") from None

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    @property
    def path(self) -> torch.Tensor | None:
        return self.values.get("path")

    @property
    def coords(self) -> torch.Tensor | None:
        return self.values.get("coords")

    @property
    def slide_index(self) -> torch.Tensor | None:
        return self.values.get("slide_index")

    @property
    def omic(self) -> torch.Tensor | None:
        return self.values.get("omic")

    @property
    def omic_groups(self) -> list[torch.Tensor] | None:
        """The genomic groups input, whichever grouping the model declared."""
        if "omic_groups" in self.values:
            return self.values["omic_groups"]
        keys = [key for key in self.values if key.startswith("omic_groups:")]
        return self.values[keys[0]] if len(keys) == 1 else None

    def one(self, name: str, model: str = "model") -> Any:
        """Input ``name`` of the single patient of a B = 1 batch, without the patient dimension."""
        if self.size != 1:
            raise ValueError(f"{model}: takes one patient per forward pass, the batch has {self.size}")
        value = require(self.omic_groups if name == "omic_groups" else self.values.get(name), name, model)
        return [v[0] for v in value] if isinstance(value, list) else value[0]

    def one_groups(self, model: str, expected: int, what: str = "genomic groups") -> list[torch.Tensor]:
        """The single patient's genomic group tensors, checked against the ``expected`` count the model was built for."""
        groups = self.one("omic_groups", model)
        if len(groups) != expected:
            raise ValueError(f"{model}: built for {expected} {what}, the batch has {len(groups)}")
        return groups

    def to(self, device: torch.device | str) -> Batch:
        def move(value):
            if torch.is_tensor(value):
                return value.to(device)
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        return Batch(values={k: move(v) for k, v in self.values.items()},
                     mask=None if self.mask is None else self.mask.to(device), size=self.size)


@dataclass
class Target:
    """The survival labels of a batch's B patients (what a model's loss may read), and how the
    NLL weighs them: ``alpha`` is MCAT's α_surv (the loop passes ``training.alpha``)."""

    label: torch.Tensor  # B long: survival bin
    censorship: torch.Tensor  # B float: 1 = censored
    time: torch.Tensor  # B float: survival months
    alpha: float = 0.0

    def to(self, device: torch.device | str) -> Target:
        return Target(self.label.to(device), self.censorship.to(device), self.time.to(device), self.alpha)


@dataclass
class ModelOutput:
    """Hazard logits (B×K), named auxiliary loss terms, attention maps, an optional own risk and
    measurements.

    ``measures``: what a model reports about this forward pass for the papers' analysis figures
    (the share of tokens each expert received per modality, attention sparsity, a gradient
    conflict its loss computed, ...), each a detached scalar or 1-D tensor, named
    ``<measure>/<part>`` by convention. The loop averages each over the patients of a pass:
    ``metrics.json`` ``measures.val_last`` / ``measures.val_best`` (validation), and the scalar ones
    of training per epoch in ``training_log.tsv`` as ``train_<name>``. A model writes them in
    ``forward`` (or in ``loss``, which sees the output): the loop never knows a model's measures."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    attention: dict[str, torch.Tensor] | None = None
    risk_score: torch.Tensor | None = None  # B; None: MCAT's −Σ S
    chunk_logits: torch.Tensor | None = None  # C×K: one row per micro-batch of a B = 1 bag (see survival_loss)
    measures: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def hazards(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def survival(self) -> torch.Tensor:
        """S_k = Π_{j≤k} (1 − h_j), with 1 − sigmoid(x) computed as sigmoid(−x) (exact near 1)."""
        return discrete_survival(self.logits)

    @property
    def risk(self) -> torch.Tensor:
        """The score evaluation ranks by (higher = earlier event): the model's own, else −Σ_k S_k."""
        if self.risk_score is not None:
            return self.risk_score.reshape(-1)
        return mcat_risk(self.survival)


class NoPatchScores(ValueError):
    """The model (or this output) has no per-patch scores."""


@dataclass
class PatchScores:
    """One patient's per-patch scores: ``scores`` rows × N (NaN for a patch the model did not score),
    ``rows`` their names, ``kind`` what they are (the model's ``patch_score_kind``)."""

    scores: torch.Tensor
    rows: list[str]
    kind: str

    def row(self, name: str | None = None) -> torch.Tensor:
        """One row by name (the first when ``name`` is None); an error lists the names."""
        if name is None:
            return self.scores[0]
        if name not in self.rows:
            raise ValueError(f"no score row {name!r} (rows: {', '.join(self.rows)})")
        return self.scores[self.rows.index(name)]


class SurvivalModel(nn.Module):
    """Base class: declared inputs, paper defaults, input sizes, and the default NLL loss."""

    inputs: ClassVar[tuple[str, ...]] = ("omic",)
    batchable: ClassVar[bool] = False
    defaults: ClassVar[dict[str, dict]] = {}
    embedding_head: ClassVar[str | None] = None  # the Linear reading the slide embedding (late fusion)
    # Patch scores (heatmaps): what the model's per-patch scores are, and the attention entry holding
    # them (an N-vector, 1×N, or G×N: one row per genomic group, pathway or bin). None: the model
    # weighs no patches, and says so (see patch_scores).
    patch_score_kind: ClassVar[str | None] = None
    patch_score_key: ClassVar[str | None] = None
    # Set by whoever wants patch scores that cost extra work (TransMIL's class-token row): a model
    # computes them only then, so training and validation are unchanged.
    scoring_patches: bool = False

    def __init__(self, *, n_bins: int = 4, path_dim: int = 0, omic_dim: int = 0,
                 group_sizes: list[int] | None = None, group_names: list[str] | None = None):
        super().__init__()
        self.n_bins = n_bins
        self.path_dim = path_dim
        self.omic_dim = omic_dim
        self.group_sizes = list(group_sizes or [])
        self.group_names = list(group_names or [])

    @property
    def modality(self) -> str:
        return modality_of(self.inputs)

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, output: ModelOutput, target: Target) -> dict[str, torch.Tensor]:
        """Named loss terms, each a mean over the batch's patients: MCAT's NLL plus ``output.aux``."""
        return {SURVIVAL_TERM: self.survival_loss(output, target), **output.aux}

    @staticmethod
    def survival_loss(output: ModelOutput, target: Target) -> torch.Tensor:
        """MCAT's NLL of ``output``'s hazards and curve (:mod:`mmsurv.models.survival`), α from ``target``.

        An output of micro-batches (``chunk_logits``, C×K, :func:`mmsurv.models.layers.micro_batch_output`)
        gives the mean of the C chunks' NLL with the patient's label: the references' ``loss / cnt``
        (MOTCat's trainer, reused by MoME and MMM)."""
        if output.chunk_logits is not None:
            count = output.chunk_logits.shape[0]
            return nll_logits_loss(output.chunk_logits, target.label.expand(count), target.censorship.expand(count),
                                   alpha=target.alpha)
        return nll_surv_loss(output.hazards, output.survival, target.label, target.censorship, alpha=target.alpha)

    def patch_scores(self, output: ModelOutput) -> PatchScores:
        """The per-patch scores of one patient's forward (``output`` of a batch of 1): rows × N with
        row names (``score`` for one row; the genomic groups / pathways, or ``bin k``, for several).
        By default the attention entry ``patch_score_key``; a model whose scores need more overrides
        this. A model without patch scores raises :class:`NoPatchScores` naming it."""
        if self.patch_score_key is None:
            raise NoPatchScores(f"model {type(self).__name__} has no per-patch scores (it weighs no patches: "
                                "patch_score_kind is None)")
        attention = output.attention or {}
        if self.patch_score_key not in attention:
            raise NoPatchScores(f"model {type(self).__name__}: its output holds no attention entry "
                                f"{self.patch_score_key!r} (run it in evaluation mode on one patient)")
        scores = attention[self.patch_score_key].detach().float()
        scores = scores.reshape(1, -1) if scores.dim() == 1 else scores.reshape(-1, scores.shape[-1])
        return PatchScores(scores=scores.cpu(), rows=self.score_row_names(scores.shape[0]), kind=self.patch_score_kind)

    def score_patches(self, enabled: bool = True) -> None:
        """Switch ``scoring_patches`` on (or off) in this model and every model inside it (a late
        fusion's backbone): models whose patch scores cost extra work compute them only then."""
        for module in self.modules():
            if isinstance(module, SurvivalModel):
                module.scoring_patches = enabled

    def score_row_names(self, rows: int) -> list[str]:
        """Names of the score rows: ``score`` for one, the genomic group names when there are as many."""
        if rows == 1:
            return ["score"]
        if len(self.group_names) == rows:
            return list(self.group_names)
        return [f"row {index + 1}" for index in range(rows)]

    def drop_head(self) -> int:
        """Replace the ``embedding_head`` layer by the identity (``forward``'s logits become the B×d
        slide embedding) and return d: what a late fusion reads. An error for a model without one."""
        head = getattr(self, self.embedding_head, None) if self.embedding_head else None
        if not isinstance(head, nn.Linear):
            raise ValueError(f"{type(self).__name__} names no embedding_head (an nn.Linear reading its slide "
                             "embedding): it cannot be a late-fusion backbone")
        setattr(self, self.embedding_head, nn.Identity())
        return self.embedding_dim(head)

    def embedding_dim(self, head: nn.Linear) -> int:
        """The size of the slide embedding ``head`` read: its input size (CLAM-MB: one vector per bin)."""
        return head.in_features

    def on_epoch_end(self, record: dict) -> None:
        """Called by the loop once per epoch, after the epoch's validation (and after the best state
        was kept), with the epoch's record (``epoch``, ``train_loss``, ``train_cindex``, …). For
        models whose training depends on the epoch (CancerMoE's score refresh); a model's numbers
        must not depend on the validation entries. Not called for epochs restored on resume (their
        effect is in the checkpoint). Default: nothing."""

    def example_batch(self, bag_size: int = 1000, device: torch.device | str = "cpu", batch_size: int = 1,
                      seed: int = 0) -> Batch:
        """A random batch of the inputs this model reads (FLOP counts, benchmarks, contract tests).

        Coordinates lie on a 512 px grid of one 20x slide, row-major, as a patching run gives them."""
        generator = torch.Generator().manual_seed(seed)
        values: dict[str, Any] = {}
        side = max(1, int(bag_size ** 0.5 + 0.999))
        for name in self.inputs:
            if name == "path":
                values[name] = torch.randn(batch_size, bag_size, self.path_dim, generator=generator)
            elif name == "coords":
                grid = torch.arange(bag_size)
                xy = torch.stack([grid % side, grid // side], dim=1) * 512
                values[name] = xy.unsqueeze(0).expand(batch_size, -1, -1).clone()
            elif name == "slide_index":
                values[name] = torch.zeros(batch_size, bag_size, dtype=torch.long)
            elif name == "slide_magnification":  # a 20x scan: the 512 px grid is 512 px patches at 20x
                values[name] = torch.full((batch_size, bag_size), 20.0)
            elif name == "omic":
                values[name] = torch.randn(batch_size, self.omic_dim, generator=generator)
            elif group_kind(name, "signatures") is not None:
                values[name] = [torch.randn(batch_size, size, generator=generator) for size in self.group_sizes]
            else:
                raise ValueError(f"{type(self).__name__}.example_batch: no example for input {name!r}")
        return Batch(values=values, mask=None, size=batch_size).to(device)

    def example_target(self, batch_size: int = 1, seed: int = 0) -> Target:
        generator = torch.Generator().manual_seed(seed)
        return Target(label=torch.randint(0, self.n_bins, (batch_size,), generator=generator),
                      censorship=torch.randint(0, 2, (batch_size,), generator=generator).float(),
                      time=torch.rand(batch_size, generator=generator) * 100)


def n_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def require(value, what: str, model: str):
    """``value`` or a clear error saying which input the model lacks."""
    if value is None:
        raise ValueError(f"{model}: the batch has no {what}")
    return value
