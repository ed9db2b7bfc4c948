"""SurvPath: pathway tokens and patch tokens in one sparse multimodal transformer layer.

Jaume et al., "Modeling Dense Multimodal Interactions Between Biological Pathways and Histology for
Survival Prediction", CVPR 2024. Reference implementation followed: ``SurvPath`` in
models/model_SurvPath.py and ``MMAttentionLayer`` in models/layers/cross_attention.py of
mahmoodlab/SurvPath (read, not copied).

Architecture (reference defaults, ``wsi_projection_dim=256``):

1. one token per biological pathway: the pathway's scaled RNA-seq values through its own SNN
   (``Linear → ELU → AlphaDropout(0.25)`` blocks, sizes ``[256, 256]``), P×256;
2. patch tokens: ``Linear(1024 → 256)`` (no activation), N×256;
3. one attention layer over the P + N tokens: ``LayerNorm(256)``, a single head with
   ``dim_head = 128`` (``to_qkv = Linear(256 → 3·128, bias=False)``), no output projection, no
   residual (the reference builds the layer with ``residual=False``), with SurvPath's sparse
   pattern: a pathway query attends to every pathway AND every patch (one softmax over the P + N
   keys), a patch query attends to the P pathways only; patches never attend to each other
   (:func:`attention_mask` is the pattern as a matrix). It is computed as two products (P×(P+N)
   and N×P) and never forms an N×N matrix, so 50,000 patches cost O(N·P) memory;
4. ``FeedForward`` (``LayerNorm(128) → Linear(128, 128) → GELU → Dropout(0.1) → Linear(128, 128)``,
   no residual) and a ``LayerNorm(128)``;
5. the mean of the pathway tokens and the mean of the patch tokens, concatenated (256), then
   ``Linear(256 → 64) → ReLU → Linear(64 → n_bins)``.

PyTorch default initialisation (the reference does not re-initialise).

Paper settings (``defaults``): pathway groups (``omic_groups:pathways``; the project ships
SurvPath's 331 Hallmark + Reactome/PID sets), 4,096 patches sampled per patient in training
(``data.max_patches``; evaluation sees every patch), RAdam, lr 5e-4, weight decay 1e-3, batch 1
with an optimiser step per patient (``grad_accum = 1``: the reference has no accumulation), NLL
with α = 0.5 (``--alpha_surv 0.5`` of scripts/survpath.sh), class-balanced sampling
(``--weighted_sample``), 20 epochs. The reference's RAdam (custom_optims/radam.py) decays the
weights directly, ``p ← p − lr·wd·p``, on every parameter (``decoupled_weight_decay: true``, no
exemption); its schedule (utils/core_utils.py ``_get_lr_scheduler``, the default ``--lr_scheduler
cosine --warmup_epochs 1``) is Hugging Face's ``get_cosine_schedule_with_warmup`` over
``len(loader) × epochs`` steps with one epoch of linear warm-up from 0, stepped after every
optimiser step: ``scheduler: cosine``, ``scheduler_interval: step``, ``warmup_epochs: 1``. The lr / weight decay are the paper's
stated values; the released script grid-searches lr ∈ {5e-5 … 1e-3} and decay ∈ {1e-5 … 1e-2}.

Parameters (trainable): 1,676,100 with the six MCAT signature groups of BLCA (sizes
[94, 334, 521, 468, 1496, 479]) and 24,768,068 with the 331 combined pathways when every gene is
present — both equal to the reference (``tests/models/test_survpath.py``). The count grows by 256
per gene present and by 66,048 per pathway token.

**Pathway coverage.** MCAT's tables carry a subset of the genes of the gene sets, so many pathways
are only partly measured and some not at all. The data layer drops pathways with fewer than
``data.pathway_min_size`` present columns (default 1: only empty ones) and logs the count
(:mod:`mmsurv.data.pathways`); the model logs its token sizes at build time, and
:func:`mmsurv.data.pathways.pathway_coverage` (``mmsurv pathways coverage --table T --pathways P``) reports
each pathway's coverage (genes present / genes in the set). SurvPath's own code keeps every pathway
of its tables (the authors selected pathways with > 90 % of their genes measured in their Xena
tables, README). Recommendation for MCAT-style tables: ``pathway_min_size: 5``. On TCGA-BLCA's
MCAT table (``_rnaseq`` columns) the 331 sets have a median coverage of 0.10: 141 pathways have no
gene at all, 190 have at least one (2,351 gene slots), 81 have five or more and they hold 2,141
of those 2,351 slots (91 %); the 109 pathways of one to four genes would each be a token from a
handful of values with an encoder of 66 k parameters of its own. The package default stays 1 so
that the model matches the reference when the table holds every gene; run :func:`main` for the
cohort at hand.

**Zero-padded training bags** (``train_pad_patches``, default None = off). The reference's training
loader (datasets/dataset_survival.py ``_load_wsi_embs_from_path`` with ``sample=True``) draws at
most 4,096 patches and pads a smaller bag with all-zero feature rows up to 4,096; it builds a mask
of those rows, but ``SurvPath.forward`` sets ``mask = None``, so in training the padding rows are
patch tokens like the others (each projects to the projection's bias, takes part in the attention
and in the patch-token mean); validation bags are never padded. We do not pad by default: the rows
are not patches, the paper does not describe them, and they make a training bag of N < 4,096
patches differ from the same bag in evaluation (the patch mean is diluted by 4,096 − N bias
tokens). ``train_pad_patches=4096`` reproduces the reference (zero rows appended in training mode
only, after the data layer's ``max_patches`` sampling).

Departures: the per-pathway encoders run one after the other as in the reference (a grouped
matmul would be faster but would change the parameter layout); the attention returns the three
blocks detached in ``ModelOutput.attention`` (``pathway_pathway`` P×P, ``pathway_patch`` P×N,
``patch_pathway`` N×P) instead of the reference's pre-softmax patch scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import snn_encoder
from mmsurv.models.registry import register_model

log = logging.getLogger(__name__)


def attention_mask(n_pathways: int, n_patches: int) -> torch.Tensor:
    """SurvPath's attention pattern as a (P+N)×(P+N) boolean matrix (True = query row attends key column).

    Rows/columns 0..P-1 are pathway tokens, P..P+N-1 patch tokens. Only for small sizes (tests,
    figures): the model itself never builds it."""
    total = n_pathways + n_patches
    mask = torch.zeros(total, total, dtype=torch.bool)
    mask[:n_pathways, :] = True  # pathway → pathways and patches
    mask[n_pathways:, :n_pathways] = True  # patch → pathways only
    return mask


class PathwayPatchAttention(nn.Module):
    """Single-head attention with SurvPath's sparse pattern, O((P+N)·P) memory (no N×N matrix)."""

    def __init__(self, dim: int, dim_head: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim_head, bias=False)
        self.scale = dim_head ** -0.5

    def forward(self, tokens: torch.Tensor, n_pathways: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``tokens``: (P+N)×dim, pathways first → (P+N)×dim_head and the attention weights."""
        q, k, v = self.to_qkv(self.norm(tokens)).chunk(3, dim=-1)
        q = q * self.scale
        q_path, k_path, v_path = q[:n_pathways], k[:n_pathways], v[:n_pathways]
        # pathway queries: one softmax over all P + N keys
        pathway_weights = torch.softmax(q_path @ k.transpose(0, 1), dim=-1)  # P×(P+N)
        # patch queries: softmax over the P pathway keys only
        patch_weights = torch.softmax(q[n_pathways:] @ k_path.transpose(0, 1), dim=-1)  # N×P
        out = torch.cat([pathway_weights @ v, patch_weights @ v_path], dim=0)
        weights = {"pathway_pathway": pathway_weights[:, :n_pathways], "pathway_patch": pathway_weights[:, n_pathways:],
                   "patch_pathway": patch_weights}
        return out, weights


@register_model("survpath", display="SurvPath", citation="Jaume et al., CVPR 2024")
class SurvPath(SurvivalModel):
    """Pathway tokens + patch tokens through one sparse multimodal attention layer (SurvPath)."""

    inputs = ("path", "omic_groups:pathways")
    patch_score_kind = "pathway-to-patch attention (one row per pathway)"
    patch_score_key = "pathway_patch"
    defaults = {
        "data": {"max_patches": 4096, "groups": "pathways"},
        "training": {"optimizer": "radam", "lr": 5e-4, "weight_decay": 1e-3, "decoupled_weight_decay": True,
                     "grad_accum": 1, "alpha": 0.5, "scheduler": "cosine", "scheduler_interval": "step",
                     "warmup_epochs": 1, "epochs": 20, "weighted_sampling": True},
    }

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, embed_dim: int = 256,
                 omic_hidden: tuple[int, ...] = (256, 256), omic_dropout: float = 0.25, dropout: float = 0.1,
                 group_names: Sequence[str] | None = None, train_pad_patches: int | None = None, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, group_names=group_names, **sizes)
        if not group_sizes:
            raise ValueError("SurvPath needs at least one pathway group")
        if train_pad_patches is not None and train_pad_patches < 1:
            raise ValueError(f"SurvPath: train_pad_patches must be a positive patch count or None, got {train_pad_patches}")
        self.train_pad_patches = train_pad_patches
        if min(group_sizes) < 1:
            raise ValueError("SurvPath: every pathway needs at least one gene column (raise data.pathway_min_size)")
        omic_hidden = list(omic_hidden)
        if omic_hidden[-1] != embed_dim:
            raise ValueError(f"SurvPath: omic_hidden must end with embed_dim ({embed_dim}), got {omic_hidden}")
        head = embed_dim // 2
        self.pathway_encoders = nn.ModuleList(snn_encoder(size, omic_hidden, omic_dropout) for size in group_sizes)
        self.path_projection = nn.Linear(path_dim, embed_dim)
        self.attention = PathwayPatchAttention(embed_dim, head)
        self.feed_forward = nn.Sequential(nn.LayerNorm(head), nn.Linear(head, head), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(head, head))
        self.out_norm = nn.LayerNorm(head)
        self.classifier = nn.Sequential(nn.Linear(2 * head, embed_dim // 4), nn.ReLU(), nn.Linear(embed_dim // 4, n_bins))
        log_token_sizes(self.group_sizes, self.group_names)

    @property
    def n_pathways(self) -> int:
        return len(self.pathway_encoders)

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "SurvPath")
        if self.training and self.train_pad_patches and path.shape[0] < self.train_pad_patches:
            path = torch.cat([path, path.new_zeros(self.train_pad_patches - path.shape[0], path.shape[1])])
        groups = batch.one_groups("SurvPath", self.n_pathways, "pathways")
        pathway_tokens = torch.stack([encoder(values) for encoder, values in zip(self.pathway_encoders, groups)])
        tokens = torch.cat([pathway_tokens, self.path_projection(path)], dim=0)  # (P+N)×E
        mixed, weights = self.attention(tokens, self.n_pathways)
        mixed = self.out_norm(self.feed_forward(mixed))
        pooled = torch.cat([mixed[:self.n_pathways].mean(dim=0), mixed[self.n_pathways:].mean(dim=0)])
        logits = self.classifier(pooled).unsqueeze(0)
        return ModelOutput(logits=logits, attention={name: w.detach() for name, w in weights.items()})


def log_token_sizes(group_sizes: Sequence[int], group_names: Sequence[str]) -> None:
    """Log the pathway tokens' gene counts (summary at INFO, one line per pathway at DEBUG)."""
    sizes = sorted(group_sizes)
    log.info("SurvPath: %d pathway tokens, genes per pathway min %d / median %d / max %d; %d pathway(s) under 5 genes",
             len(sizes), sizes[0], sizes[len(sizes) // 2], sizes[-1], sum(size < 5 for size in sizes))
    for index, size in enumerate(group_sizes):
        name = group_names[index] if index < len(group_names) else f"pathway_{index}"
        log.debug("SurvPath token %s: %d gene column(s)", name, size)
