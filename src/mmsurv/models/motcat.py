"""MOTCat: multimodal optimal-transport co-attention transformer (Xu & Chen, ICCV 2023).

"Multimodal Optimal Transport-based Co-Attention Transformer with Global Structure Consistency for
Survival Prediction", ICCV 2023. Reference followed: ``MOTCAT_Surv`` and ``OT_Attn_assem`` of
models/model_motcat.py and the micro-batch loop of trainer/mb_trainer.py (Innse/MOTCat), at the
``main.py`` defaults of its first release, commit 712e03d (2023-09-07: ``--ot_impl pot-uot-l2
--ot_reg 0.1 --ot_tau 0.5 --bs_micro 256``, micro-batches always on, ``fusion='concat'``,
``model_size_wsi = model_size_omic = 'small'``), the code of the paper's experiments. Later
commits changed this: ccafbcb (2024-04-01) moved the OT solve to POT's torch backend and its
scripts/train_motcat.sh passes ``--bs_micro 16384``; HEAD, fe70abc (2024-09-12), trains without
micro-batches unless ``--use_micro_batch`` is given (then ``--bs_micro`` defaults to 16,384; its
README's example command still shows ``--bs_micro 256``). A ``bs_micro`` larger than every bag
runs each bag as one chunk, the whole bag, as HEAD's default does.

It is MCAT (:mod:`mmsurv.models.mcat`) with the co-attention replaced by an optimal transport plan:

1. patch tokens ``Dropout(ReLU(Linear(1024 → 256)))`` (n×256) and one SNN per genomic group
   (``[256, 256]``) → G×256 genomic tokens;
2. both token sets are shifted by their per-token minimum (``x − min_j x_j``), the cost is the
   squared Euclidean distance n×G divided by its maximum, and the **unbalanced** entropic OT plan
   between uniform masses on the n patches and the G groups is solved by POT's
   ``ot.unbalanced.sinkhorn_knopp_unbalanced`` (entropy regulariser ``reg = 0.1``, KL marginal
   relaxation ``reg_m = 0.5``, ``reg_type='entropy'`` as in the POT versions the reference used;
   float64, at most 1,000 iterations, tolerance 1e-6);
3. the G co-attended WSI tokens are ``planᵀ · patch tokens`` (G×256);
4. MCAT's two transformers (2 layers, 8 heads, ff 512, dropout 0.25), gated attention pooling +
   ``rho`` per modality, concat fusion and ``Linear(256 → n_bins)``.

**Micro-batches** (the paper's and the reference's way to fit large bags): the bag's patches are
shuffled and split into ``n // bs_micro + 1`` near-equal chunks (``bs_micro = 256``); the whole model
runs on each chunk (its own OT problem, its own dropout masks); the loss is the mean of the chunks'
NLL and the risk the mean of their ``−Σ_k S_k``. A 50,000-patch bag is 196 small OT problems of
≤ 256 × 6, so memory stays that of the 50,000 × 256 patch tokens.

Parameter count at MCAT's BLCA setting (groups [94, 334, 521, 468, 1496, 479], 1024-d features,
4 bins): **4,228,870**, equal to the reference's (MCAT's 4,492,038 minus its 263,168-parameter
co-attention ``MultiheadAttention``; the OT layer has no parameters).

**Departures.**

* ``plan_grad=True`` (default): the plan is computed with POT's torch backend from the
  differentiable cost, so gradients flow through the Sinkhorn iterations into both the patch and
  the genomic tokens (what the paper's formulation implies). The reference detaches the cost and
  solves in NumPy, so its plan is a constant for back-propagation (patch tokens still get a
  gradient through ``planᵀ · tokens``, the genomic encoders only through the genomic transformer);
  ``plan_grad=False`` reproduces that (712e03d solves in NumPy; from ccafbcb on the solve runs in
POT's torch backend, still on the detached cost, so the plan is a constant there too).
* In evaluation the reference shuffles the chunks at random (its validation risks change from run
  to run); we use a fixed permutation (``torch.Generator`` seeded with ``eval_seed``), so evaluation
  is deterministic. Training shuffles with torch's global RNG (seeded by the run).
* The cost's maximum is clamped to ≥ 1e-12 (a bag whose tokens coincide with the genomic tokens
  would divide by zero in the reference).
* The ``logits`` returned are those of the chunks' mean survival curve (identical to the single
  chunk's logits when the bag fits in one chunk), so evaluation's survival curves and risks are the
  means over chunks, as the reference's risk.

Training settings: the reference's ``main.py`` (Adam, lr 2e-4, weight decay 1e-5, 20 epochs, batch
1 with gradient accumulation 32, NLL alpha 0, signature groups), the package defaults.
"""

from __future__ import annotations

import warnings

import torch

from mmsurv.models.base import Batch, ModelOutput
from mmsurv.models.layers import chunk_generator, micro_batch_output, run_micro_batches
from mmsurv.models.mcat import MCAT
from mmsurv.models.registry import register_model

COST_FLOOR = 1e-12


def shift_to_min(x: torch.Tensor) -> torch.Tensor:
    """Each row minus its minimum (the reference's ``normalize_feature``)."""
    return x - x.min(dim=-1, keepdim=True).values


def transport_cost(patches: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """n×G squared Euclidean distances of the min-shifted rows, divided by their maximum."""
    x, y = shift_to_min(patches), shift_to_min(tokens)
    cost = ((x * x).sum(dim=1, keepdim=True) + (y * y).sum(dim=1)[None, :] - 2 * x @ y.T).clamp_min(0)
    return cost / cost.max().clamp_min(COST_FLOOR)


def uot_plan(cost: torch.Tensor, reg: float = 0.1, reg_m: float = 0.5, n_iter: int = 1000,
             tol: float = 1e-6) -> torch.Tensor:
    """n×G unbalanced entropic OT plan between uniform masses (POT, torch backend, float64)."""
    import ot

    cost64 = cost.double()
    n, g = cost64.shape
    a = torch.full((n,), 1.0 / n, dtype=torch.float64, device=cost.device)
    b = torch.full((g,), 1.0 / g, dtype=torch.float64, device=cost.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="If reg_type = entropy")
        plan = ot.unbalanced.sinkhorn_knopp_unbalanced(a, b, cost64, reg, reg_m, reg_type="entropy",
                                                       numItermax=n_iter, stopThr=tol)
    return plan.to(cost.dtype)


@register_model("motcat", display="MOTCat", citation="Xu & Chen, ICCV 2023")
class MOTCat(MCAT):
    """MCAT with optimal-transport co-attention over micro-batches of patches."""

    inputs = ("path", "omic_groups")
    patch_score_kind = "optimal-transport plan between genomic groups and patches (one row per group)"
    defaults = {"data": {"groups": "signatures"}}

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, embed_dim: int = 256,
                 omic_hidden: tuple[int, ...] = (256, 256), n_heads: int = 8, ff_dim: int = 512, n_layers: int = 2,
                 dropout: float = 0.25, ot_reg: float = 0.1, ot_tau: float = 0.5, bs_micro: int = 256,
                 plan_grad: bool = True, eval_seed: int = 0, **sizes):
        super().__init__(group_sizes=group_sizes, path_dim=path_dim, n_bins=n_bins, embed_dim=embed_dim,
                         omic_hidden=omic_hidden, n_heads=n_heads, ff_dim=ff_dim, n_layers=n_layers,
                         dropout=dropout, **sizes)
        del self.coattn  # replaced by the parameter-free transport plan
        if bs_micro < 1:
            raise ValueError(f"MOTCat: bs_micro must be at least 1, got {bs_micro}")
        self.ot_reg, self.ot_tau, self.bs_micro = ot_reg, ot_tau, bs_micro
        self.plan_grad, self.eval_seed = plan_grad, eval_seed

    def transport(self, h_path: torch.Tensor, h_omic: torch.Tensor) -> torch.Tensor:
        """n×G plan between n patch tokens and G genomic tokens (differentiable unless ``plan_grad`` is off)."""
        if self.plan_grad:
            return uot_plan(transport_cost(h_path, h_omic), self.ot_reg, self.ot_tau)
        with torch.no_grad():
            return uot_plan(transport_cost(h_path, h_omic), self.ot_reg, self.ot_tau)

    def chunk_forward(self, patches: torch.Tensor, groups: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The whole model on one micro-batch of patches: 1×K logits and its attention maps."""
        h_path = self.path_fc(patches)  # n×E
        h_omic = torch.stack([encoder(group) for encoder, group in zip(self.omic_encoders, groups)])  # G×E
        plan = self.transport(h_path, h_omic)  # n×G
        coattended = plan.T @ h_path  # G×E
        path_vec, path_weights = self.path_readout(self.path_transformer(coattended.unsqueeze(0))[0])
        omic_vec, omic_weights = self.omic_readout(self.omic_transformer(h_omic.unsqueeze(0))[0])
        logits = self.classifier(self.fusion(torch.cat([path_vec, omic_vec], dim=1)))
        return logits, {"coattn": plan.T, "path": path_weights, "omic": omic_weights}

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "MOTCat")
        groups = batch.one_groups("MOTCat", len(self.omic_encoders))
        chunks, results = run_micro_batches(self.chunk_forward, path, self.bs_micro,
                                            chunk_generator(self.training, self.eval_seed), groups)
        chunk_logits = torch.cat([logits for logits, _ in results])  # C×K
        coattn = path.new_zeros(len(groups), path.shape[0])
        for rows, (_, maps) in zip(chunks, results):
            coattn[:, rows] = maps["coattn"].detach()
        attention = {"coattn": coattn, "path": torch.stack([maps["path"].detach() for _, maps in results]),
                     "omic": torch.stack([maps["omic"].detach() for _, maps in results])}
        return micro_batch_output(chunk_logits, attention=attention)
