"""HDMoE: hierarchical decoupling-fusion mixture of experts over a WSI bag and genomic groups.

Wang et al., "A Hierarchical Decoupling-Fusion Mixture-of-Experts Framework for Multimodal Cancer
Survival Prediction", KDD 2026. Reference implementation followed: the public code ZJUMAI/HDMoE
(models/hdmoe/network.py, engine.py, utils/loss.py, run.sh), reimplemented here without its
hard-coded CUDA device calls so it runs on any device.

Architecture (``gate_dim`` d = 256, as the run script):

1. encoders: patches ``2 × (Linear → ReLU → Dropout 0.25)`` path_dim → d → d; one SNN per genomic
   group ``s_i → 1024 → d`` (MCAT's ``SNN_Block``: Linear → ELU → AlphaDropout 0.25);
2. a TransMIL-style WSI transformer (tokens padded to a square by repeating the first rows, a cls
   token, Nyström layer, PPEG (7/5/3 depthwise convolutions), Nyström layer, LayerNorm) and a
   genomic transformer (cls + 2 Nyström layers + LayerNorm); each keeps its cls token. The Nyström
   layers compute ``nystrom_attention.NystromAttention`` (our :class:`~mmsurv.models.layers.NystromAttention`,
   equal up to rounding; 8 heads of d/8, d/2 landmarks, 6
   Moore-Penrose iterations, residual value convolution, dropout 0.1) after a pre-LayerNorm;
3. first-level decoupling MoE per modality on its cls token: 8 routed experts + 1 shared expert
   (``Linear d→128 → ReLU → Dropout 0.1 → Linear 128→d → ReLU``), a bias-free softmax router,
   top-1; the routed output is scaled by its router probability. This gives a modality-specific
   (routed) and a shared vector per modality;
4. Random Feature Recombination (RFR, :func:`recombine`): the four d-vectors (genomic routed,
   pathology routed, genomic shared, pathology shared) are cut into ``seg`` equal chunks and the
   chunks interleaved into 4 tokens (seg from {1, 2, 4, …, 128});
5. the fusion MoE on those 4 tokens (8 + 1 experts, d → 128 → d/2), its 4 routed and 4 shared
   outputs flattened to two 2d-vectors, a second RFR (seg from {1, …, 256}) and
   ``Linear(4d → n_bins)``;
6. two projections ``Linear(2d → 2d)`` of the concatenated routed (resp. shared) first-level
   vectors, used only by the decoupling loss.

Loss (``nll_surv_cos`` with ``alpha`` 1 in the run script), as :meth:`HDMoE.loss` terms:
``surv`` (NLL), ``decouple_fusion`` = (1 − cos(fused routed, proj. routed)) + (1 − cos(fused
shared, proj. shared)), ``decouple_orth`` = cos(g routed, g shared) + cos(p routed, p shared) +
cos(fused routed, fused shared) (both × ``decouple_weight`` = 1), and ``balance`` = 0.01 × the
sum of the three MoEs' Switch balance losses N·Σ_e f_e·P_e (training only, as the public gate).

**RFR at evaluation.** The public code draws ``seg`` at random in evaluation too, so its validation
c-index changes from run to run. ``rfr_eval`` chooses: ``"fixed"`` (default) uses ``eval_seg`` /
``eval_seg2`` (default 1 and 1: the four vectors as whole tokens, one member of the training
distribution, no interleaving); ``"mean"`` averages the hazard logits over all 8 × 9 (seg, seg2)
pairs (the encoders and first-level MoEs run once; the loss terms of evaluation come from the
seg = 1 pass); ``"random"`` is the public behaviour (drawn from torch's generator, so a seeded run
is repeatable). Training always draws at random.

Defaults (run.sh, engine.py): Adam, lr 5e-4, weight decay 1e-5 (torch's Adam: added to the
gradient), 30 epochs, batch 1, an optimiser step per patient (no accumulation), class-balanced
sampling (its ``weighted_sample`` default, the loop's default too), and the engine's polynomial
decay: ``Engine.learning`` sets lr·(1 − e/E)^0.9 at the start of every epoch e = 0 … E−1 (per
epoch, not per iteration; run.sh passes ``--scheduler None``, and with a scheduler the engine's
value would overwrite it anyway), i.e. ``scheduler: poly``, ``poly_power: 0.9``,
``scheduler_interval: epoch``.

Initialisation as the public code: every Linear Xavier-normal with zero bias, LayerNorm (1, 0),
router weights Kaiming-uniform(a=√5), cls tokens N(0, 1e-6²), convolutions PyTorch default. (The
public ``models/hdmoe/util.py`` is not in the snapshot read; its imported names are those of CMTA's
``models/cmta/util.py``, whose ``initialize_weights`` and ``NystromAttention`` these follow; the
latter is lucidrains' ``nystrom-attention``, whose arithmetic ``layers.NystromAttention`` reproduces.)

Parameter count: 8,625,188 at gate_dim 256 on BLCA's signature groups [94, 334, 521, 468, 1496,
479] with 4 bins, equal to the public code's (asserted in tests/models/test_hdmoe.py).
Other departure: random seg draws use torch's generator instead of Python's ``random`` (seeded,
device-agnostic reproducibility).

**Nyström landmarks as the public code.** Every Nyström layer has d/2 = 128 landmarks and, as the
package the public code uses, zero-pads a shorter sequence at the front to 128 tokens, unmasked: the
7-token genomic sequence (cls + 6 groups) always, and bags of at most 121 patches (their square grid
plus the class token stays under 128 tokens).
``adaptive_landmarks=True`` (our improvement, an option, OFF by default) gives a short sequence one
landmark per token instead (``mmsurv.models.layers.nystrom_attention``: no zero rows diluting the
attention, a tokens × tokens pseudo-inverse): it changes every patient's genomic encoding (logits
up to ~0.09 apart at initialisation) and is cheaper on small bags: at 24 patches, one CPU thread,
forward + backward 178 ms off, 32 ms on (``bench/step_cost.py``). No parameter depends on it.
**Ablations of its parts** (the summary page names the parts; how each is removed is ours, all
ON by default, which is HDMoE): ``first_level_moe=False`` gives each modality's first-level MoE one
routed expert (every token to it with weight 1: a dense expert, no routing) beside its shared
expert; ``fusion_moe=False`` does the same to the fusion MoE; ``rfr=False`` keeps the four vectors
whole (seg = seg2 = 1 in training and evaluation, no recombination); ``shared_experts=False`` removes
the shared experts of all three MoEs (their outputs are zero vectors, so the fusion tokens of the
shared vectors are zeros) and the decoupling terms that compare shared vectors (``decouple_orth``
and the shared half of ``decouple_fusion``). A MoE with one expert has a constant balance term,
left out of ``balance``. config/papers/hdmoe.yaml trains the four as variants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import ClassTokenEncoder, choice_shares, snn_encoder, use_adaptive_landmarks, xavier_init
from mmsurv.models.registry import register_model

SEGMENTS = (1, 2, 4, 8, 16, 32, 64, 128)
SEGMENTS2 = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RFR_EVAL = ("fixed", "mean", "random")


def recombine(vectors: torch.Tensor, seg: int) -> torch.Tensor:
    """RFR: K×D vectors, each cut into ``seg`` chunks, chunks interleaved → flat K·D (a permutation).

    The output holds chunk 0 of every vector, then chunk 1 of every vector, and so on."""
    k, d = vectors.shape
    if d % seg:
        raise ValueError(f"RFR: segment count {seg} does not divide the vector length {d}")
    return vectors.reshape(k, seg, d // seg).transpose(0, 1).reshape(-1)


def _expert(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim), nn.ReLU())


class SharedExpertMoE(nn.Module):
    """Top-1 routed experts plus one always-on shared expert; bias-free softmax router."""

    def __init__(self, dim: int, out_dim: int, n_experts: int = 8, hidden: int = 128, dropout: float = 0.1,
                 shared: bool = True):
        super().__init__()
        self.router = nn.Parameter(torch.empty(n_experts, dim))
        nn.init.kaiming_uniform_(self.router, a=math.sqrt(5))
        self.experts = nn.ModuleList(_expert(dim, hidden, out_dim, dropout) for _ in range(n_experts))
        self.shared = _expert(dim, hidden, out_dim, dropout) if shared else None
        self.out_dim = out_dim

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """T×dim tokens → (routed T×out, shared T×out, Switch balance loss, router probabilities T×E)."""
        probs = torch.softmax(tokens @ self.router.t(), dim=-1)
        weight, choice = probs.max(dim=-1)
        routed = tokens.new_zeros(tokens.shape[0], self.out_dim)
        for index in torch.unique(choice).tolist():
            rows = (choice == index).nonzero(as_tuple=True)[0]
            routed = routed.index_copy(0, rows, self.experts[index](tokens[rows]) * weight[rows, None])
        n_experts = probs.shape[1]
        fraction = F.one_hot(choice, n_experts).float().mean(0)
        balance = n_experts * (fraction * probs.mean(0)).sum()
        shared = self.shared(tokens) if self.shared is not None else tokens.new_zeros(tokens.shape[0], self.out_dim)
        return routed, shared, balance, probs


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1), dim=1)[0]


@register_model("hdmoe", display="HDMoE", citation="Wang et al., KDD 2026")
class HDMoE(SurvivalModel):
    """Hierarchical decoupling-fusion MoE: modality MoEs, random feature recombination, fusion MoE."""

    inputs = ("path", "omic_groups")
    defaults = {
        "data": {"groups": "signatures"},
        "training": {"optimizer": "adam", "lr": 5e-4, "weight_decay": 1e-5, "epochs": 30, "batch_size": 1,
                     "grad_accum": 1, "scheduler": "poly", "poly_power": 0.9, "scheduler_interval": "epoch"},
    }

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, gate_dim: int = 256,
                 n_experts: int = 8, expert_hidden: int = 128, omic_hidden: int = 1024,
                 decouple_weight: float = 1.0, balance_weight: float = 0.01, rfr_eval: str = "fixed",
                 eval_seg: int = 1, eval_seg2: int = 1, adaptive_landmarks: bool = False,
                 first_level_moe: bool = True, fusion_moe: bool = True, rfr: bool = True, shared_experts: bool = True,
                 **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("HDMoE needs at least one genomic group")
        if rfr_eval not in RFR_EVAL:
            raise ValueError(f"HDMoE: rfr_eval must be one of {', '.join(RFR_EVAL)}, got {rfr_eval!r}")
        d = gate_dim
        self.segments = [s for s in SEGMENTS if d % s == 0]
        self.segments2 = [s for s in SEGMENTS2 if (2 * d) % s == 0]
        if eval_seg not in self.segments or eval_seg2 not in self.segments2:
            raise ValueError(f"HDMoE: eval_seg must be in {self.segments} and eval_seg2 in {self.segments2}")
        self.gate_dim, self.rfr_eval, self.eval_seg, self.eval_seg2 = d, rfr_eval, eval_seg, eval_seg2
        self.decouple_weight, self.balance_weight = decouple_weight, balance_weight
        self.path_fc = nn.Sequential(nn.Linear(path_dim, d), nn.ReLU(), nn.Dropout(0.25),
                                     nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.25))
        self.omic_fc = nn.ModuleList(snn_encoder(size, [omic_hidden, d], 0.25) for size in group_sizes)
        self.path_encoder = ClassTokenEncoder(d, positional=True)
        self.omic_encoder = ClassTokenEncoder(d, positional=False)
        self.first_level_moe, self.fusion_routing, self.rfr, self.shared_experts = (first_level_moe, fusion_moe,
                                                                                   rfr, shared_experts)
        first_experts = n_experts if first_level_moe else 1  # one expert: every token to it, weight 1
        self.path_moe = SharedExpertMoE(d, d, first_experts, expert_hidden, shared=shared_experts)
        self.omic_moe = SharedExpertMoE(d, d, first_experts, expert_hidden, shared=shared_experts)
        self.fusion_moe = SharedExpertMoE(d, d // 2, n_experts if fusion_moe else 1, expert_hidden,
                                          shared=shared_experts)
        self.project_specific = nn.Linear(2 * d, 2 * d)
        self.project_shared = nn.Linear(2 * d, 2 * d)
        self.classifier = nn.Linear(4 * d, n_bins)
        xavier_init(self)
        use_adaptive_landmarks(self, adaptive_landmarks)

    def _draw(self, choices: list[int]) -> int:
        return choices[int(torch.randint(len(choices), (1,)).item())]

    def _fuse(self, first: torch.Tensor, seg: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """4×d first-level vectors → fusion MoE on their recombination: (routed 2d, shared 2d, balance, probs)."""
        tokens = recombine(first, seg).reshape(4, self.gate_dim)
        routed, shared, balance, probs = self.fusion_moe(tokens)
        return routed.reshape(-1), shared.reshape(-1), balance, probs

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "HDMoE")
        groups = batch.one_groups("HDMoE", len(self.omic_fc))
        omic_tokens = torch.stack([fc(group) for fc, group in zip(self.omic_fc, groups)]).unsqueeze(0)
        path_cls = self.path_encoder(self.path_fc(path).unsqueeze(0))[0]
        omic_cls = self.omic_encoder(omic_tokens)[0]
        g_routed, g_shared, g_balance, g_probs = self.omic_moe(omic_cls)
        p_routed, p_shared, p_balance, p_probs = self.path_moe(path_cls)
        first = torch.cat([g_routed, p_routed, g_shared, p_shared], dim=0)  # 4×d
        specific = self.project_specific(torch.cat([g_routed, p_routed], dim=1))
        common = self.project_shared(torch.cat([g_shared, p_shared], dim=1))

        if not self.rfr:
            seg, seg2 = 1, 1
        elif self.training or self.rfr_eval == "random":
            seg, seg2 = self._draw(self.segments), self._draw(self.segments2)
        else:
            seg, seg2 = (self.eval_seg, self.eval_seg2) if self.rfr_eval == "fixed" else (1, 1)
        f_routed, f_shared, f_balance, f_probs = self._fuse(first, seg)
        logits = self.classifier(recombine(torch.stack([f_routed, f_shared]), seg2)).unsqueeze(0)
        if not self.training and self.rfr_eval == "mean" and self.rfr:
            all_logits = []
            for s in self.segments:
                r, c, _, _ = self._fuse(first, s) if s != 1 else (f_routed, f_shared, None, None)
                pair = torch.stack([r, c])
                all_logits += [self.classifier(recombine(pair, s2)) for s2 in self.segments2]
            logits = torch.stack(all_logits).mean(0, keepdim=True)

        aux = {}
        if self.decouple_weight and self.shared_experts:
            fusion_term = (1 - _cos(f_routed, specific)) + (1 - _cos(f_shared, common))
            orth_term = _cos(g_routed, g_shared) + _cos(p_routed, p_shared) + _cos(f_routed, f_shared)
            aux["decouple_fusion"] = self.decouple_weight * fusion_term
            aux["decouple_orth"] = self.decouple_weight * orth_term
        elif self.decouple_weight:  # no shared vectors: only the routed half of the fusion term
            aux["decouple_fusion"] = self.decouple_weight * (1 - _cos(f_routed, specific))
        routing = [b for b, on in ((g_balance, self.first_level_moe), (p_balance, self.first_level_moe),
                                   (f_balance, self.fusion_routing)) if on]
        if self.training and self.balance_weight and routing:
            aux["balance"] = self.balance_weight * sum(routing)
        attention = {"router_omic": g_probs.detach(), "router_path": p_probs.detach(),
                     "router_fusion": f_probs.detach()}
        return ModelOutput(logits=logits, aux=aux, attention=attention,
                           measures=self.routing_shares(g_probs, p_probs, f_probs))

    def routing_shares(self, g_probs: torch.Tensor, p_probs: torch.Tensor, f_probs: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
        """The top-1 choices' share per expert: the first-level MoEs per modality (``route/genomic/layer0``,
        ``route/wsi/layer0``) and the fusion MoE over its four tokens (``route/fusion/layer1``); a
        switched-off level reports nothing."""
        shares = {}
        if self.first_level_moe:
            shares["route/genomic/layer0"] = choice_shares(g_probs.detach().argmax(-1), g_probs.shape[-1])
            shares["route/wsi/layer0"] = choice_shares(p_probs.detach().argmax(-1), p_probs.shape[-1])
        if self.fusion_routing:
            shares["route/fusion/layer1"] = choice_shares(f_probs.detach().argmax(-1), f_probs.shape[-1])
        return shares
