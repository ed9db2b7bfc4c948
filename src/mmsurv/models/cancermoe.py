"""CancerMoE: sparse mixture-of-experts transformer with dynamic patch selection and attention consolidation.

Peng et al., "One Leaf Knows Autumn: A Piece of Data-Model Facilitates Efficient Cancer Prognosis with
Histological and Genomic Modalities" (GenAI4Health workshop, AAAI 2025; its method section is titled
"CancerMoE - An Ultra-Efficient Multi-Modal Integration Framework in Cancer Prognosis"); text in
``../shared/papers/002_aefad4cac30c4be9.txt``. **No official code** was found (code search for the
title, the model name and the authors' lab, UNITES-Lab; one unrelated public class named
``CancerMoE`` — Q-Former projectors, no patch selection, no ACS — is not this paper's): everything
here follows the paper's text; every choice the text leaves open is listed with its reason, and
"(ours)" marks each.

**Tokens.** Patch features (``path``, D = 1024) → ``Linear(D → d)``, d = 32 ("the hidden dimension
of our model is 32", App. B). The genomic vector (``omic``: every genomic column, scaled on the
training fold) is zero-padded and cut into ``genomic_tokens`` = 8 contiguous sub-vectors of
c = ⌈G/8⌉ values, each projected to d by its OWN ``Linear(c → d)`` (``genomic_embedding=
"separate"``; ``"shared"``: one ViT-style projection plus a learned position embedding per token).
The paper: "we divide [the genomic vector] into g sub-vectors. Each sub-vector is then projected into
the embedding space through a linear layer" (§3.2) and "a patch embedding layer that splits each
gene profile vector into sequences with length 8" (App. B); we read "length 8" as the genomic
sequence's length (ours; see **Size** for why neither reading reproduces the paper's count). A
learnable cls token leads the sequence ``[cls, genomic tokens, WSI tokens]``. The modality one-hot
x_m = Concat(x, OneHot(m)) (§3.1) is built **at the router's input** (cls / WSI / genomic, 3 ids):
concatenating it to the token itself would make the width 35, which 8 heads cannot divide (ours).

**Encoder.** 2 pre-norm transformer layers ("two transformer encoder layers"), 8 heads, d = 32 (head
size 4), MLP hidden ``mlp_ratio · d`` = 32 (the paper gives no MLP width; ours), GELU, dropout 0.1
on the residual branches (the paper gives no dropout; ours). The last layer's MLP is the sparse MoE
(App. B: "the SMoE is tailored in the MLP layer of the last transformer encoder layers"): the dense
MLP (d → h → d) partitioned uniformly into ``n_experts`` = 4 experts of hidden h/E (§3.1
"Modularization"; "the number of experts is 4 or 8"); each expert is its slice of a dense MLP's
initial weights and the output bias stays shared, so SMoE and dense MLP hold the same weights plus
the router. Real sparse dispatch: each expert computes only its tokens.

*Router (the paper's eq. 2).* R(x) = TopK(softmax(g(x)), k), y = Σ_i R(x)_i·f_i(x): the softmax over
all E experts' logits, the k largest probabilities kept, the others set to 0, **no renormalisation**
over the kept k and **no noise** (the paper has none). g is "a Multi-Layer Perception (MLP)" of
unstated shape: ``Linear(d + 3 → router_hidden) → GELU → Linear(router_hidden → E)`` with
``router_hidden`` = d = 32 and PyTorch's default initialisation (ours: the shape; GELU as the
model's MLPs; a non-zero initialisation, since a zero-initialised router without noise would send
every token to the same k experts). k = ``top_k`` = 2 (the paper does not give k; ours). The
auxiliary term ``balance`` = w_imp·CV²(Importance) + w_load·CV²(Load) (App. B: "the load and
importance balancing loss (Shazeer et al. 2017b)") over the batch's real tokens, CV² = population
variance / mean², w_imp = w_load = 0.01 (Shazeer's; the paper gives none): Importance = Σ_x R(x)
(differentiable); Load = the number of tokens each expert receives, a count without gradient —
Shazeer's smooth load estimator needs the gating noise, which eq. 2 does not have, so only the
Importance term trains the router towards balance (a consequence of eq. 2, written here).

**Dynamic Patch Selection (DPS)** (§3.3, App. A "Details of Dynamic Patch Selection", App. B). N =
``n_tokens`` (3072) WSI tokens per patient: the b = ``n_key_tokens`` (4) tokens with the highest
stored token scores ("Key Tokens"), N(1 − p)/(2b) tokens on each side of each key token (p =
``p_random`` = 0.5: 192 per side, 384 per key, 1536 in all), and N·p tokens drawn uniformly without
replacement from the tokens not used yet, so exactly N distinct tokens. Token score = the cls
token's attention of the LAST layer (App. B), mean over heads (§A: the multi-head score is the head
average). Neighbourhood = **the patient's bag order** (a window of consecutive rows, shifted inside
the bag at its ends; overlapping windows are merged and the random part fills the shortfall): the
paper's "right and left sides" is a 1-D notion, the patching run lists a slide's patches row-major
on its grid, and it needs no coordinates file (ours). Before a patient has scores (its first
visit) all N tokens are drawn at random (ours). **A bag of n ≤ N real rows uses all of them** (no
duplicates, no padding; the paper fixes N per WSI and does not say what a smaller WSI gets: ours).
**Evaluation** (the paper does not describe DPS at inference; ours): the same rule without the
random part — the N·p (or, without scores, all N) tokens are taken evenly spaced over the unused
rows; a patient without stored scores (a validation patient) is first scored by one forward over N
evenly spaced tokens, then selected and run again (two passes, only for bags larger than N).

*Refresh of the scores* (Table 8). ``refresh``: ``"cindex"`` (the paper's default "c-index
depends": the stored scores are refreshed only during an epoch that follows a drop of the training
c-index), ``"epoch"`` (Table 8's "per epoch"), ``"every_n"`` (refreshing epochs 1, 1 + r, 1 + 2r, …
with r = ``refresh_every``). Table 8 lists "per epoch" and "1 epoch apart" as different settings, so
we map "n epochs apart" to r = n + 1 (n epochs without a refresh between two refreshing ones; our
reading). A patient without stored scores is always stored. *How the model gets this information
(the training loop gives no case ids):*

* patients are keyed by a content hash of their bag (blake2b of the real-row count, the width and
  rows 0, n/2 and n − 1): stable within a fold since the bag files do not change (NOT with
  ``data.max_patches``, which redraws the bag per visit: CancerMoE's paper defaults leave it unset,
  DPS being the cap);
* epochs and the training c-index come from the loop: its ``on_epoch_end`` hook (the contract's,
  called after each epoch's validation) appends the epoch's ``train_cindex`` to a history, counts
  the epoch and decides whether the next one refreshes. A loop that never calls it trains every
  epoch as the first (scores refreshed at every visit);
* the scores (per patient: the N selected row positions and their scores — bounded by N, not by
  the bag), the epoch counter, the c-index history, the refresh flag and the seed of the "w/o DPS"
  sets are the module's ``get_extra_state`` (serialised into a uint8 tensor so ``state_dict``
  copies stay tensors), so checkpoints carry them; selection randomness draws from torch's global
  generator, which the training run seeds: same seed ⇒ same selections.

**Attention Consolidation and Sparsification (ACS)** (§3.4, Algorithms 1-2, App. B).

*Sparsification (Algorithm 1), first layer only* ("The sparsification is only executed in the first
transformer encoder layer, where we filter 92% WSIs tokens"). Per patient and per head, over the
patient's real tokens (cls, genomic, its N WSI tokens: L = 1 + 8 + N): A = softmax(QKᵀ/√dh) (L×L),
flattened; the k = (q·N)² largest elements are kept and every other element set to 0, **without
renormalising the rows**; the head's output is A_sparse·V. q = ``keep_ratio`` = 0.08 and **N = the
number of WSI tokens this patient has in the sequence** (min(bag, ``n_tokens``) under DPS), so the
share of the WSI² count kept is q² whatever the bag (1,600 of 500², 60,398 of 3,072², 640,000 of
10,000² with ``n_tokens`` ≥ 10,000).
Rounding: k = round((q·N)²) to the nearest integer, halves to even (Algorithm 1 writes k ← (q×N)², an integer only
when q·N is; 3,072 gives 245.76² = 60,397.66 → 60,398; a patient with N ≤ 8 WSI tokens keeps 0
elements, its layer-1 attention outputs are 0). As Algorithm 1, the top-k runs over the
whole map, so the cls and genomic rows and columns compete with the WSI ones (the cls row may lose
all of its elements; the cls token then carries only its residual out of layer 1). Implementation
(ours, exact): a custom autograd function keeps only the k kept elements per head and recomputes the
L×L map in the backward, so only one patient's maps (8 × L² floats, ≈ 300 MB per copy at
N = 3,072, two copies transiently) are alive at a time; the k largest are found through a threshold
read off a strided sample and an exact top-k among the candidates (the same set as ``torch.topk`` up
to ties).

*Which tokens leave after layer 1* (the paper says the first layer filters 92 % of the WSI tokens and
that at inference "the attention calculation purely happens among the selected q×N tokens", without
saying how the q·N tokens follow from the (q·N)² elements): the round(q·N) WSI tokens (at least 1)
that RECEIVE the most kept attention (column sums of A_sparse over heads and queries; ties broken by
the layer-1 cls attention) stay with cls and the genomic tokens; the others leave the sequence after
the layer-1 attention, so the layer-1 MLP and layer 2 run on 1 + 8 + q·N tokens (our reading).
*Departure:* inference computes layer 1 exactly as training (the full L×L map, then the kept
elements): the paper's cheaper inference over the q·N tokens alone needs those tokens before the
map that defines them. DPS scores of filtered tokens are their layer-1 cls attention (head mean, of
the dense map) − 1, below every kept token's last-layer score (ours).

*Consolidation (eq. 1, Algorithm 2), every layer* ("We do consolidation on each transformer encoder
layer"). Head importance I_h = E_x|A_h(x)ᵀ ∂L/∂A_h(x)| with A_h(x) **the head's output features**
(the paper: "A_i(x) represents the output features"; Michel et al. 2019's formula), summed over
every query row — the cls row included, in layer 1 too — accumulated per layer on training batches
by a backward hook (sum and count in buffers) and L2-normalised per layer (as Michel et al.). Once
importance has been accumulated over a finished epoch (or, before the model has seen an
evaluation, as soon as it exists; when consolidation starts is not in the paper: ours), the
``keep_heads`` (2; Table 9's best "number of informative attention heads") heads of largest I are
kept, every other head joins the kept head whose output (this patient's, over its real tokens) is
most cosine-similar (Algorithm 2), and each cluster's output is Σ_h softmax(I)_h · A_h(x) over the
cluster's heads (eq. 1); the cluster's output takes the slot of each of its heads before the output
projection (equivalent to one merged projection per cluster; the paper's Concat of k outputs would
leave the projection's width unspecified: ours).

**Training.** Batch 32 patients per forward (App. B "The training batch size is set to 32"), Adam,
lr 1e-3 (App. B), NLL (the paper's β = MCAT's α, 0 by default), 20 epochs, weight decay 1e-5
(MCAT's; the paper gives neither: ours), no accumulation.

**Paper settings as constructor options** (so config variants can train each table's rows):

* Table 4 ablations: ``selection="fixed_random"`` ("w/o DPS": "We fix a set of randomly selected
  tokens during training" — one uniform random set of N tokens per patient, drawn from the run's
  seed and the bag's key, the same at every visit and at evaluation), ``selection="random"``
  ("Random Select": "keep random token selection during training and inference" — N fresh uniform
  tokens at every forward, evaluation included, so evaluation is random too), ``acs=False`` ("w/o
  ACS": the vanilla attention module, no consolidation, no sparsification; both layers then use
  PyTorch's fused attention), ``smoe=False`` ("w/o SMoE": the dense MLP d → h → d, as many weights
  as the experts together, without the router), ``genomics=False`` ("w/o Genomic Profiles": no genomic
  tokens; the ``omic`` input is still loaded but unused). ``selection="all"`` (every real row, no
  selection) is ours, not a paper row. Default ``selection="dps"``.
* Table 5 (selected tokens N): ``n_tokens`` (512 … 4096; 3072 default, "except BRCA, LUSC, and
  SKCM"). Table 6 (key tokens b): ``n_key_tokens`` (1 … 5; 4). The ratio p of unseen tokens (the
  text's Table 7, 0.1 … 0.9; 0.5): ``p_random``. Table 9 (informative heads 1, 2, 3; "w/o
  Consolidation"): ``keep_heads`` and ``consolidation=False`` (sparsification kept). The captions of
  the paper's Tables 7 and 9 are swapped relative to their values and to the text; we follow the
  values. Table 8 (score-update policy): ``refresh`` and ``refresh_every`` (above). Also
  ``keep_ratio`` (q), ``n_experts`` (4 or 8), ``top_k``, ``router_hidden``.

**Gradient conflict (Figure 4b; ours, a measurement, off by default).** The paper plots "the
gradient conflict between modalities in CancerMoE and the dense counterpart", gradients "obtained
from the experts and dense MLP" of "the last transformer layer", as cosines. It does not say how a
gradient is made modality-specific. Splitting the gradient by the tokens that produced it gives
zero here: the prediction reads the cls token, so in the last layer only the cls token's MLP output
reaches the loss. We therefore use the **unimodal losses**: g_WSI = ∇θ NLL of the model run without
its genomic tokens, g_genomic = ∇θ NLL of the model run without its WSI tokens, θ the last layer's
MLP (under SMoE each expert's slices of ``w_in``, ``b_in``, ``w_out``, the cosine averaged over the
experts both passes reach; the dense MLP as one vector), on the same patients as the training step,
at the first training step of every epoch and every ``conflict_every``-th step after it (0: never). The two extra passes do not change training:
they run under a forked random-number state (dropout draws are replayed from where they were), the
head-importance hooks do not fire, DPS stores nothing and the layers' routing records are restored;
the gradients are taken with ``torch.autograd.grad`` and never reach ``.grad`` (tested: same
parameters after a step with and without). The mean per epoch is ``train_grad_conflict/last`` in
``training_log.tsv``. Cost: two forward/backward passes of the batch on a measured step.

**Measures** (``ModelOutput.measures``, for the paper's analysis figures; they change nothing):
``route/<modality>/layer<l>`` (Figure 4a: each expert's share of a modality's top-k choices),
``sparsity/kept_fraction``, ``sparsity/kept_blocks`` and ``sparsity/block_area`` (Figure 3: where the
sparsified first layer's kept elements lie, per query × key modality block, against the blocks'
areas; :func:`kept_blocks`) and, on measured training steps, ``grad_conflict/last`` (above).

**Size.** Parameters = 32,832 (WSI projection 1024 → 32 and the cls token) + 8·(32·⌈G/8⌉ + 32)
(genomic projections, ``separate``) + 13,124 (2 layers, final norm, classifier) + 1,284 (router
g: 35·32 + 32 + 32·4 + 4); on BLCA's 3,062 ``omic`` columns 145,544, on the paper's BRCA width
(Table 3: 20,980 genomic values) 718,984, where the paper reports 0.446 M (Table 2, "calculated on
the BRCA dataset"). No reading of the genomic embedding reproduces 0.446 M at 20,980, because the
non-genomic part is ≈ 47 k and the genomic part is either ≈ 32 per genomic value or ≈ 32/8:

* 8 tokens, separate ``Linear(2,623 → 32)`` (ours): 8·(32·2,623 + 32) = 671,744 → 718,984;
* 8 tokens, one shared ``Linear(2,623 → 32)`` + 8 position embeddings: 83,968 + 256 → 131,464;
* 2,623 tokens of 8 values ("sequences with length 8" as the patch size), one ``Linear(8 → 32)``:
  288 → 47,528; with a position embedding per genomic token (2,623·32 = 83,936) → 131,464;
* with a 4·d MLP instead (h = 128) each total grows by 12,480 (731,464 / 143,944 / 60,008).

0.446 M needs 32 parameters per value at G ≈ 12,450 (separate or one ``Linear(G → 32)``-sized
map; no Table 3 width is near it, the nearest being UCEC's 9,081 and BLCA's 20,404) or, with one shared projection, G ≈ 99,600;
~19 parameters per genomic value at 20,980 matches no projection of width 32. So the paper's count
was taken on another width or architecture than the text states; ``bench/cancermoe.py`` prints the
table. The FLOP figure (0.170 G) fits 8 genomic tokens far better than 2,623 (whose attention alone
would exceed it), which is why we keep 8 tokens.
"""

from __future__ import annotations

import hashlib
import io
import math

import torch
import torch.nn.functional as F
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, NoPatchScores, PatchScores, SurvivalModel, Target, require
from mmsurv.models.registry import register_model

CLS, WSI, GENOMIC = 0, 1, 2  # modality ids (router one-hot)
REFRESH_POLICIES = ("cindex", "epoch", "every_n")
SELECTIONS = ("dps", "fixed_random", "random", "all")


# --------------------------------------------------------------------------------------------------
# Sparse mixture of experts (router: the paper's eq. 2)
# --------------------------------------------------------------------------------------------------

def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation, population variance / mean² (0 for one expert)."""
    if values.numel() < 2:
        return values.new_zeros(())
    return values.var(correction=0) / (values.mean() ** 2 + 1e-10)


class TopKMoE(nn.Module):
    """The dense MLP ``d → h → d`` split into ``n_experts`` experts of hidden h/E, routed by TopK(softmax(g(x)), k)."""

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int, route_extra: int = 3,
                 router_hidden: int | None = None, w_importance: float = 0.01, w_load: float = 0.01):
        super().__init__()
        if hidden % n_experts:
            raise ValueError(f"CancerMoE: MLP hidden size {hidden} must split evenly into {n_experts} experts")
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"CancerMoE: top_k must be in [1, n_experts], got {top_k}")
        self.n_experts, self.top_k = n_experts, top_k
        self.w_importance, self.w_load = w_importance, w_load
        part = hidden // n_experts
        dense_in, dense_out = nn.Linear(dim, hidden), nn.Linear(hidden, dim)  # the dense MLP being partitioned
        self.w_in = nn.Parameter(dense_in.weight.detach().t().reshape(dim, n_experts, part).permute(1, 0, 2).clone())
        self.b_in = nn.Parameter(dense_in.bias.detach().reshape(n_experts, part).clone())
        self.w_out = nn.Parameter(dense_out.weight.detach().t().reshape(n_experts, part, dim).clone())
        self.b_out = nn.Parameter(dense_out.bias.detach().clone())
        width = router_hidden or dim
        self.router = nn.Sequential(nn.Linear(dim + route_extra, width), nn.GELU(), nn.Linear(width, n_experts))

    def route(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router input M×(d+3) → gates M×E (the k largest softmax probabilities, the rest 0), Importance E, Load E."""
        probs = torch.softmax(self.router(r), dim=1)
        top_values, top_index = probs.topk(self.top_k, dim=1)
        gates = torch.zeros_like(probs).scatter(1, top_index, top_values)  # no renormalisation over the kept k
        load = torch.zeros_like(probs).scatter(1, top_index, 1.0).sum(0).detach()  # tokens per expert (a count)
        return gates, gates.sum(0), load

    def balance_loss(self, importance: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
        return self.w_importance * cv_squared(importance) + self.w_load * cv_squared(load)

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens M×d and their modality ids M → outputs M×d, gates M×E, balance loss."""
        r = torch.cat([x, F.one_hot(modality, 3).to(x.dtype)], dim=1)
        gates, importance, load = self.route(r)
        out = x.new_zeros(x.shape)
        for expert in range(self.n_experts):
            rows = gates[:, expert].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            hidden = F.gelu(x[rows] @ self.w_in[expert] + self.b_in[expert])
            out = out.index_add(0, rows, (hidden @ self.w_out[expert]) * gates[rows, expert, None])
        return out + self.b_out, gates, self.balance_loss(importance, load)


class DenseMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return self.net(x), None, None


# --------------------------------------------------------------------------------------------------
# Attention sparsification (the paper's Algorithm 1) in the first layer
# --------------------------------------------------------------------------------------------------

def kept_elements(n_wsi: int, ratio: float) -> int:
    """k = (q·N)² attention elements kept per head, rounded to the nearest integer, halves to even (N = WSI tokens)."""
    return int(round((ratio * n_wsi) ** 2))


def kept_tokens(n_wsi: int, ratio: float) -> int:
    """The q·N WSI tokens (nearest integer, at least 1, at most N) that stay after the first layer."""
    return min(n_wsi, max(1, int(round(ratio * n_wsi))))


def top_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (per row of ``flat``, H×M) of the k largest values: ``flat.topk(k)``'s set up to ties.

    For k ≪ M a threshold read off a strided sample keeps the candidates (≈ 3k), whose top-k is then
    exact; rows where the threshold leaves fewer than k candidates fall back on the full top-k."""
    rows, m = flat.shape
    if k >= m:
        return torch.arange(m, device=flat.device).expand(rows, -1)
    if m < 200_000 or 8 * k > m:
        return flat.topk(k, dim=1).indices
    stride = max(1, m // 100_000)
    sample = flat[:, ::stride].contiguous()
    above = min(sample.shape[1], int(math.ceil(3 * k / m * sample.shape[1])) + 1)
    threshold = sample.topk(above, dim=1).values[:, -1]  # ≈ the (3k)-th largest value
    out = []
    for row in range(rows):
        candidates = (flat[row] >= threshold[row]).nonzero().squeeze(1)
        if candidates.numel() < k:
            out.append(flat[row].topk(k).indices)
        else:
            out.append(candidates[flat[row, candidates].topk(k).indices])
    return torch.stack(out)


def kept_blocks(index: torch.Tensor, length: int, fixed: int) -> torch.Tensor:
    """Figure 3's measurement for one patient's first layer: the kept share of the L×L elements
    (mean over heads), the shares of the kept elements in each (query, key) modality block — cls,
    genomic, WSI: 3×3 flattened row-major — and each block's share of the map's area (what keeping
    elements at random would give). ``index``: H×k kept flat indices of L×L maps; ``fixed``: 1 + the
    genomic tokens. A patient keeping nothing gives zero block shares."""
    def modality(position: torch.Tensor) -> torch.Tensor:
        return (position >= 1).to(torch.int64) + (position >= fixed).to(torch.int64)

    sizes = torch.tensor([1, fixed - 1, length - fixed], dtype=torch.float64)
    area = (sizes[:, None] * sizes[None, :]).reshape(-1) / float(length * length)
    flat = index.reshape(-1)
    counts = torch.bincount((3 * modality(flat // length) + modality(flat % length)).cpu(), minlength=9)
    shares = counts.to(torch.float64) / max(1, flat.numel())
    fraction = torch.tensor([index.shape[1] / float(length * length)], dtype=torch.float64)
    return torch.cat([fraction, shares, area])


class SparsifiedAttention(torch.autograd.Function):
    """One patient's heads: A = softmax(QKᵀ/√dh) (H×L×L), keep the k largest elements of each head's
    flattened map (the rest set to 0, no renormalisation) and return A_sparse·V (Algorithm 1).

    Only the kept elements are stored; the backward recomputes A from Q and K, so
    a patient's L×L maps live for one patient at a time. Extra (non-differentiable) outputs: the cls
    row of the dense map (H×L), the kept attention each token receives as a key summed over heads and
    queries (L), and the kept flat indices (H×k)."""

    @staticmethod
    def _attention(q, k):
        return torch.softmax(torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5), dim=-1)

    @staticmethod
    def forward(ctx, q, k, v, n_keep):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        heads, length, dim = q.shape
        attn = SparsifiedAttention._attention(q, k)
        flat = attn.view(heads, length * length)
        index = top_indices(flat, n_keep)
        values = flat.gather(1, index)
        offset = (torch.arange(heads, device=q.device) * length)[:, None]
        rows, cols = (index // length + offset).reshape(-1), (index % length + offset).reshape(-1)
        out = v.new_zeros(heads * length, dim).index_add_(0, rows, values.reshape(-1, 1) * v.reshape(-1, dim)[cols])
        cls_row = attn[:, 0].clone()
        received = v.new_zeros(heads * length).index_add_(0, cols, values.reshape(-1)).view(heads, length).sum(0)
        ctx.save_for_backward(q, k, v, index, values)
        ctx.mark_non_differentiable(cls_row, received, index)
        return out.view(heads, length, dim), cls_row, received, index

    @staticmethod
    def backward(ctx, grad_out, _cls, _received, _index):
        q, k, v, index, values = ctx.saved_tensors
        heads, length, dim = q.shape
        offset = (torch.arange(heads, device=q.device) * length)[:, None]
        rows, cols = (index // length + offset).reshape(-1), (index % length + offset).reshape(-1)
        grad_rows = grad_out.reshape(-1, dim)[rows]
        grad_values = (grad_rows * v.reshape(-1, dim)[cols]).sum(1)  # ∂L/∂A at the kept elements
        grad_v = v.new_zeros(heads * length, dim).index_add_(0, cols, values.reshape(-1, 1) * grad_rows)
        kept_product = values.reshape(-1) * grad_values  # A ⊙ ∂L/∂A (zero where not kept)
        row_sum = q.new_zeros(heads * length).index_add_(0, rows, kept_product).view(heads, length)
        attn = SparsifiedAttention._attention(q, k)  # recomputed: the softmax backward needs all of A
        grad_scores = attn.mul_(-row_sum[..., None])
        grad_scores.view(heads, -1).scatter_add_(1, index, kept_product.view(heads, -1))
        grad_scores.mul_(dim ** -0.5)
        return grad_scores @ k, grad_scores.transpose(-1, -2) @ q, grad_v.view(heads, length, dim), None


# --------------------------------------------------------------------------------------------------
# Attention with head importance and consolidation
# --------------------------------------------------------------------------------------------------

def consolidation_matrix(importance: torch.Tensor, outputs: torch.Tensor, keep_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Head clusters and mixing weights from importance (H) and one patient's head outputs (H×T×dh).

    Returns ``assign`` (H: the kept head each head joins, by cosine similarity of the flattened
    outputs) and ``mix`` (H×H: row g holds the weights of the heads of g's cluster, softmax of their
    importance, summing to 1; cluster output = mix @ heads)."""
    heads = importance.numel()
    keep = importance.topk(min(keep_heads, heads)).indices
    flat = outputs.reshape(heads, -1)
    similarity = F.cosine_similarity(flat[:, None, :], flat[None, keep, :], dim=2)  # H×k
    assign = keep[similarity.argmax(dim=1)]
    assign[keep] = keep
    same = assign[:, None] == assign[None, :]  # H×H: same cluster
    logits = importance[None, :].expand(heads, heads).masked_fill(~same, float("-inf"))
    return assign, torch.softmax(logits, dim=1)


class HeadAttention(nn.Module):
    """Multi-head self-attention with head importance (on the head outputs) and consolidation."""

    def __init__(self, dim: int, n_heads: int, keep_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"CancerMoE: dim {dim} is not divisible by {n_heads} heads")
        self.n_heads, self.head_dim, self.keep_heads = n_heads, dim // n_heads, keep_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("importance_sum", torch.zeros(n_heads))
        self.register_buffer("importance_count", torch.zeros(()))
        self.last_mix: torch.Tensor | None = None  # B×H×H of the last consolidated forward (tests, maps)

    def importance(self) -> torch.Tensor:
        mean = self.importance_sum / self.importance_count.clamp(min=1)
        return mean / mean.norm().clamp(min=1e-12)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v  # each B×H×T×dh

    def cls_attention(self, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """The cls query's attention over every token: B×H×T."""
        scores = (q[:, :, :1] @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(self.head_dim)
        return torch.softmax(scores.masked_fill(~key_mask[:, None, :], float("-inf")), dim=-1)

    @staticmethod
    def full(q, k, v, key_mask, *, fused: bool) -> torch.Tensor:
        """Dense attention: explicit products (counted by FLOP counters) or PyTorch's fused kernel."""
        if fused:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        return torch.softmax(scores.masked_fill(~key_mask[:, None, None, :], float("-inf")), dim=-1) @ v

    def track(self, heads: torch.Tensor) -> None:
        """Accumulate Michel et al.'s I_h = |A_h(x)ᵀ ∂L/∂A_h(x)| per patient (A_h(x): head h's output B×H×T×dh)."""
        if heads.requires_grad:
            outputs = heads.detach()

            def hook(grad: torch.Tensor) -> None:
                with torch.no_grad():
                    per_patient = (outputs * grad).sum(dim=(2, 3)).abs()  # B×H
                    self.importance_sum += per_patient.sum(0)
                    self.importance_count += per_patient.shape[0]

            heads.register_hook(hook)

    def consolidate(self, heads: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """Each head's output replaced by its cluster's softmax(I)-weighted sum (clusters per patient)."""
        importance = self.importance()
        masked = (heads * query_mask[:, None, :, None]).detach()
        mixes = torch.stack([consolidation_matrix(importance, masked[b], self.keep_heads)[1]
                             for b in range(heads.shape[0])])
        self.last_mix = mixes
        return torch.einsum("bgh,bhtd->bgtd", mixes, heads)

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = heads.shape
        return self.proj(heads.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class Layer(nn.Module):
    def __init__(self, dim: int, n_heads: int, keep_heads: int, hidden: int, dropout: float, moe: nn.Module | None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HeadAttention(dim, n_heads, keep_heads)
        self.mlp = moe if moe is not None else DenseMLP(dim, hidden)
        self.drop = nn.Dropout(dropout)

    def feed_forward(self, x: torch.Tensor, modality: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm2(x)
        rows = h[mask]
        out, gates, balance = self.mlp(rows, modality[mask])
        full = torch.zeros_like(h)
        full[mask] = out
        self.last_gates = None if gates is None else gates.detach()
        self.last_modality = modality[mask].detach()
        return x + self.drop(full), balance


# --------------------------------------------------------------------------------------------------
# Dynamic patch selection
# --------------------------------------------------------------------------------------------------

def select_tokens(n: int, n_tokens: int, stored: tuple[torch.Tensor, torch.Tensor] | None, *, n_key: int,
                  p_random: float, random: bool, device=None) -> torch.Tensor:
    """Positions (sorted, distinct) of the tokens DPS keeps among a bag's ``n`` real rows.

    ``stored``: (positions, scores) of the patient's last scored selection, or None; ``random``:
    draw the random part uniformly (training), else take it evenly spaced (evaluation)."""
    if n <= n_tokens:
        return torch.arange(n, device=device)
    chosen = torch.zeros(n, dtype=torch.bool)
    if stored is not None:
        positions, scores = stored
        keys = positions[scores.topk(min(n_key, scores.numel())).indices]
        half = int(round(n_tokens * (1 - p_random) / (2 * n_key)))
        for key in keys.tolist():
            start = min(max(key - half, 0), n - 2 * half)
            chosen[start:start + 2 * half] = True
    missing = n_tokens - int(chosen.sum())
    unused = (~chosen).nonzero().squeeze(1)
    if random:
        picked = unused[torch.randperm(unused.numel())[:missing]]
    else:
        picked = unused[torch.arange(missing) * unused.numel() // missing] if missing else unused[:0]
    chosen[picked] = True
    return chosen.nonzero().squeeze(1).to(device)


def bag_key(rows: torch.Tensor) -> int:
    """A content hash of a bag's real rows (count, width, rows 0, n/2 and n − 1): a patient's DPS key."""
    n = rows.shape[0]
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{n}x{rows.shape[1]}".encode())
    if n:
        sample = rows[[0, n // 2, n - 1]].detach().to("cpu", torch.float32).contiguous()
        digest.update(sample.numpy().tobytes())
    return int.from_bytes(digest.digest(), "little", signed=True)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------

@register_model("cancermoe", display="CancerMoE", citation="Peng et al., AAAI GenAI4Health Workshop 2025")
class CancerMoE(SurvivalModel):
    """Sparse-MoE transformer over WSI and genomic tokens with dynamic patch selection and ACS."""

    inputs = ("path", "omic")
    batchable = True
    patch_score_kind = ("DPS token score of the selected patches (last layer's cls attention, head mean; a token "
                        "filtered after layer 1: its layer-1 cls attention − 1); unselected patches: none")
    defaults = {"training": {"batch_size": 32, "grad_accum": 1, "lr": 1e-3, "optimizer": "adam",
                             "weight_decay": 1e-5, "epochs": 20}}

    def __init__(self, *, path_dim: int = 1024, omic_dim: int = 0, n_bins: int = 4, dim: int = 32, n_heads: int = 8,
                 n_layers: int = 2, mlp_ratio: float = 1.0, dropout: float = 0.1, genomic_tokens: int = 8,
                 genomic_embedding: str = "separate", n_experts: int = 4, top_k: int = 2,
                 router_hidden: int | None = None, balance_weight: float = 0.01, n_tokens: int = 3072,
                 n_key_tokens: int = 4, p_random: float = 0.5, refresh: str = "cindex", refresh_every: int = 2,
                 keep_heads: int = 2, keep_ratio: float = 0.08, selection: str = "dps", acs: bool = True,
                 consolidation: bool = True, smoe: bool = True, genomics: bool = True, conflict_every: int = 0,
                 **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, omic_dim=omic_dim, **sizes)
        if refresh not in REFRESH_POLICIES:
            raise ValueError(f"CancerMoE: refresh must be one of {', '.join(REFRESH_POLICIES)}, got {refresh!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"CancerMoE: selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        if genomic_embedding not in ("separate", "shared"):
            raise ValueError(f"CancerMoE: genomic_embedding must be separate or shared, got {genomic_embedding!r}")
        if n_layers < 1:
            raise ValueError("CancerMoE needs at least one layer")
        if n_tokens < 1 or not 0.0 < keep_ratio <= 1.0 or not 0.0 <= p_random <= 1.0:
            raise ValueError(f"CancerMoE: need n_tokens ≥ 1, 0 < keep_ratio ≤ 1 and 0 ≤ p_random ≤ 1, got "
                             f"{n_tokens}, {keep_ratio}, {p_random}")
        self.dim, self.n_tokens, self.n_key_tokens, self.p_random = dim, n_tokens, n_key_tokens, p_random
        self.refresh, self.refresh_every, self.keep_ratio = refresh, refresh_every, keep_ratio
        self.selection, self.acs, self.consolidation, self.genomics = selection, acs, consolidation, genomics
        self.genomic_embedding = genomic_embedding
        if conflict_every < 0:
            raise ValueError(f"CancerMoE: conflict_every must be ≥ 0 (0: off), got {conflict_every}")
        self.conflict_every = conflict_every
        self._train_steps = 0  # training forwards of this epoch (the gradient-conflict schedule)
        self._conflict_inputs: tuple | None = None
        self._measuring = False  # a gradient-conflict pass is running: no head-importance tracking
        self._sparsity: torch.Tensor | None = None  # the last sparsified first layer's kept_blocks rows
        self.n_genomic_tokens = min(genomic_tokens, omic_dim) if genomics and omic_dim > 0 else 0
        self.genomic_chunk = -(-omic_dim // self.n_genomic_tokens) if self.n_genomic_tokens else 0
        self.path_proj = nn.Linear(path_dim, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        if self.n_genomic_tokens:
            t, c = self.n_genomic_tokens, self.genomic_chunk
            bound = 1 / math.sqrt(c)
            if genomic_embedding == "separate":
                self.genomic_weight = nn.Parameter(torch.empty(t, c, dim).uniform_(-bound, bound))
                self.genomic_bias = nn.Parameter(torch.empty(t, dim).uniform_(-bound, bound))
            else:
                self.genomic_proj = nn.Linear(c, dim)
                self.genomic_position = nn.Parameter(torch.randn(t, dim) * 0.02)
        hidden = int(round(mlp_ratio * dim))
        self.layers = nn.ModuleList()
        for index in range(n_layers):
            last = index == n_layers - 1
            moe = (TopKMoE(dim, hidden, n_experts, top_k, 3, router_hidden, balance_weight, balance_weight)
                   if smoe and last else None)
            self.layers.append(Layer(dim, n_heads, keep_heads, hidden, dropout, moe))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, n_bins)
        # the "w/o DPS" ablation's fixed random token sets: drawn from the run's seed, no generator draw
        self._selection_seed = int(torch.initial_seed()) & 0x7FFF_FFFF_FFFF_FFFF
        # DPS / epoch bookkeeping (the module's extra state, see the module docstring)
        self._scores: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._epoch = 1
        self._cindex_history: list[float] = []
        self._refreshing = True
        self._ever_eval = False  # an evaluation forward was seen: epochs are being counted
        self._last_keys: list[int] = []
        self._last_selections: list[torch.Tensor] = []

    # ---------------------------------------------------------------- tokens
    def genomic_tokens(self, omic: torch.Tensor) -> torch.Tensor:
        b = omic.shape[0]
        padded = F.pad(omic, (0, self.n_genomic_tokens * self.genomic_chunk - omic.shape[1]))
        pieces = padded.view(b, self.n_genomic_tokens, self.genomic_chunk)
        if self.genomic_embedding == "separate":
            return torch.einsum("btl,tld->btd", pieces, self.genomic_weight) + self.genomic_bias
        return self.genomic_proj(pieces) + self.genomic_position

    # ---------------------------------------------------------------- encoder
    def encode(self, wsi: torch.Tensor, wsi_mask: torch.Tensor, omic: torch.Tensor | None):
        """WSI tokens B×S×D (mask B×S, real rows first) and omic B×G → logits, aux terms, WSI scores B×S, maps."""
        b, s, _ = wsi.shape
        device = wsi.device
        parts, modality = [self.cls_token.expand(b, -1, -1)], [CLS]
        if self.n_genomic_tokens:
            parts.append(self.genomic_tokens(require(omic, "genomic vector (omic)", "CancerMoE")))
            modality += [GENOMIC] * self.n_genomic_tokens
        parts.append(self.path_proj(wsi))
        modality += [WSI] * s
        x = torch.cat(parts, dim=1)
        fixed = 1 + self.n_genomic_tokens
        mask = torch.cat([torch.ones(b, fixed, dtype=torch.bool, device=device), wsi_mask], dim=1)
        modality = torch.tensor(modality, device=device).expand(b, -1)
        wsi_index = torch.arange(s, device=device).expand(b, -1)  # WSI position of each WSI token still present
        first_cls = None
        aux: dict[str, torch.Tensor] = {}
        maps: dict[str, torch.Tensor] = {}
        consolidate = self.acs and self.consolidation and self.consolidating
        track = self.acs and self.consolidation and self.training and torch.is_grad_enabled() and not self._measuring
        for index, layer in enumerate(self.layers):
            h = layer.norm1(x)
            q, k, v = layer.attn.split(h)
            if index == len(self.layers) - 1:  # DPS scores: the last layer's cls attention (head mean)
                last_cls, last_index = layer.attn.cls_attention(q, k, mask).mean(1)[:, fixed:], wsi_index
            sparsify = self.acs and index == 0
            if sparsify:
                heads, first_cls, received, kept = self._sparse_first_layer(q, k, v, wsi_mask, fixed)
                maps["first_layer_kept_elements"] = kept  # B×H
            else:
                heads = layer.attn.full(q, k, v, mask, fused=not self.acs)
            if track:
                layer.attn.track(heads)
            if consolidate:
                heads = layer.attn.consolidate(heads, mask)
            x = x + layer.drop(layer.attn.merge(heads))
            if sparsify:
                x, mask, modality, wsi_index = self._filter(x, mask, modality, received, first_cls, fixed)
                maps["first_layer_kept"] = wsi_index
                maps["first_layer_kept_mask"] = mask[:, fixed:]
            x, balance = layer.feed_forward(x, modality, mask)
            if balance is not None:
                aux["balance"] = balance
        # WSI tokens no longer present in the last layer score their first-layer cls attention − 1
        scores = last_cls if first_cls is None else (first_cls - 1).scatter(1, last_index, last_cls)
        logits = self.classifier(self.norm(x[:, 0]))
        return logits, aux, scores.detach(), maps

    def _sparse_first_layer(self, q, k, v, wsi_mask, fixed):
        """Algorithm 1 per patient over its real tokens (cls, genomic, its N WSI tokens)."""
        b, heads, t, dh = q.shape
        outputs, first_cls, received, kept = [], q.new_zeros(b, t - fixed), q.new_zeros(b, t - fixed), []
        blocks = []
        for row in range(b):
            n = int(wsi_mask[row].sum())
            length = fixed + n
            out, cls_row, mass, index = SparsifiedAttention.apply(q[row, :, :length], k[row, :, :length],
                                                                  v[row, :, :length], kept_elements(n, self.keep_ratio))
            outputs.append(F.pad(out, (0, 0, 0, t - length)))
            first_cls[row, :n] = cls_row.mean(0)[fixed:]
            received[row, :n] = mass[fixed:]
            kept.append(torch.tensor([head.unique().numel() for head in index], device=q.device))
            blocks.append(kept_blocks(index, length, fixed))
        self._sparsity = torch.stack(blocks)  # B×(1 + 9 + 9), read by sparsity_measures
        return torch.stack(outputs), first_cls, received, torch.stack(kept)

    def _filter(self, x, mask, modality, received, first_cls, fixed):
        """Keep cls, genomic and the q·N WSI tokens that receive the most kept attention (ties: cls attention)."""
        b = x.shape[0]
        wsi_mask = mask[:, fixed:]
        counts = [kept_tokens(int(wsi_mask[row].sum()), self.keep_ratio) for row in range(b)]
        width = max(counts)
        order = first_cls.masked_fill(~wsi_mask, -1.0).sort(dim=1, descending=True, stable=True).indices
        ranked = received.masked_fill(~wsi_mask, -1.0).gather(1, order)
        order = order.gather(1, ranked.sort(dim=1, descending=True, stable=True).indices)
        kept_mask = torch.arange(width, device=x.device)[None, :] < torch.tensor(counts, device=x.device)[:, None]
        s = wsi_mask.shape[1]
        top = order[:, :width].masked_fill(~kept_mask, s).sort(dim=1).values  # bag order, padding slots last
        top = top.masked_fill(~kept_mask, 0)  # padding slots: row 0, masked out
        index = torch.cat([torch.arange(fixed, device=x.device).expand(b, -1), top + fixed], dim=1)
        x = x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))
        mask = torch.cat([mask[:, :fixed], kept_mask & wsi_mask.gather(1, top)], dim=1)
        return x, mask, modality.gather(1, index), top

    @property
    def consolidating(self) -> bool:
        """Consolidation runs once head importance has been accumulated over a finished epoch."""
        counted = all(float(layer.attn.importance_count) > 0 for layer in self.layers)
        return counted and (self._epoch >= 2 or not self._tracking_epochs)

    @property
    def _tracking_epochs(self) -> bool:
        return self._ever_eval or bool(self._cindex_history)

    # ---------------------------------------------------------------- selection
    def _bags(self, batch: Batch) -> list[torch.Tensor]:
        path = require(batch.path, "bag of patch features (path)", "CancerMoE")
        if batch.mask is None:
            return [path[row] for row in range(path.shape[0])]
        return [path[row][batch.mask[row]] for row in range(path.shape[0])]

    def _pack(self, bags: list[torch.Tensor], selections: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(1, max(len(sel) for sel in selections))
        wsi = bags[0].new_zeros(len(bags), longest, bags[0].shape[1])
        mask = torch.zeros(len(bags), longest, dtype=torch.bool, device=bags[0].device)
        for row, (bag, sel) in enumerate(zip(bags, selections)):
            wsi[row, :len(sel)] = bag[sel]
            mask[row, :len(sel)] = True
        return wsi, mask

    def _select(self, bag: torch.Tensor, key: int, training: bool, stored=None) -> torch.Tensor:
        n = bag.shape[0]
        if self.selection == "all" or n <= self.n_tokens:
            return torch.arange(n, device=bag.device)
        if self.selection == "random":  # Random Select: fresh uniform tokens at every visit, evaluation too
            return select_tokens(n, self.n_tokens, None, n_key=self.n_key_tokens, p_random=1.0, random=True,
                                 device=bag.device)
        if self.selection == "fixed_random":  # w/o DPS: one random set per patient, the same at every visit
            generator = torch.Generator().manual_seed((self._selection_seed ^ key) & 0x7FFF_FFFF_FFFF_FFFF)
            return torch.randperm(n, generator=generator)[:self.n_tokens].sort().values.to(bag.device)
        stored = self._scores.get(key) if stored is None else stored
        return select_tokens(n, self.n_tokens, stored, n_key=self.n_key_tokens, p_random=self.p_random,
                             random=training, device=bag.device)

    def forward(self, batch: Batch) -> ModelOutput:
        bags = self._bags(batch)
        if any(bag.shape[0] == 0 for bag in bags):
            bags = [bag if bag.shape[0] else bag.new_zeros(1, bag.shape[1]) for bag in bags]
        keys = [bag_key(bag) for bag in bags]
        omic = batch.omic if self.n_genomic_tokens else None
        training = self.training
        if not training:
            self._ever_eval = True
        dps = self.selection == "dps"
        selections = [self._select(bag, key, training) for bag, key in zip(bags, keys)]
        scoring_pass = (not training and dps
                        and any(key not in self._scores and bag.shape[0] > self.n_tokens for bag, key in zip(bags, keys)))
        if scoring_pass:  # evaluation of unseen patients: score an evenly spaced selection first
            wsi, wsi_mask = self._pack(bags, selections)
            _, _, scores, _ = self.encode(wsi, wsi_mask, omic)
            selections = [self._select(bag, key, False, stored=self._scores.get(key, (sel.cpu(), scores[row, :len(sel)].cpu())))
                          for row, (bag, key, sel) in enumerate(zip(bags, keys, selections))]
        wsi, wsi_mask = self._pack(bags, selections)
        logits, aux, scores, maps = self.encode(wsi, wsi_mask, omic)
        if training and dps:
            for row, (key, sel) in enumerate(zip(keys, selections)):
                if self._refreshing or key not in self._scores:
                    self._scores[key] = (sel.cpu(), scores[row, :len(sel)].float().cpu())
        self._last_keys, self._last_selections = keys, selections
        self._last_bag_rows = int(bags[0].shape[0]) if len(bags) == 1 else 0
        self._conflict_inputs = None
        if training and self.conflict_every and torch.is_grad_enabled():
            if self._train_steps % self.conflict_every == 0:
                self._conflict_inputs = (wsi, wsi_mask, omic)
            self._train_steps += 1
        attention = {"wsi_scores": scores, "selection": wsi_mask, **maps}
        return ModelOutput(logits=logits, aux=aux, attention=attention,
                           measures={**self.routing_shares(), **self.sparsity_measures()})

    def patch_scores(self, output: ModelOutput) -> PatchScores:
        """The DPS token scores of one patient's selected patches, NaN for the bag's other patches."""
        attention = output.attention or {}
        if "wsi_scores" not in attention or len(self._last_selections) != 1:
            raise NoPatchScores("CancerMoE: patch scores need the output of a forward on one patient")
        selection = self._last_selections[0].cpu()
        n = int(selection.max()) + 1 if selection.numel() else 0
        n = max(n, int(getattr(self, "_last_bag_rows", n)))
        scores = torch.full((1, n), float("nan"))
        scores[0, selection] = attention["wsi_scores"][0, :selection.numel()].float().cpu()
        return PatchScores(scores=scores, rows=["score"], kind=self.patch_score_kind)

    def sparsity_measures(self) -> dict[str, torch.Tensor]:
        """Figure 3's measurements of the last forward's sparsified first layer (ACS), mean over its
        patients that keep any element: ``sparsity/kept_fraction`` (kept share of the L×L maps),
        ``sparsity/kept_blocks`` (the kept elements' shares per query × key modality block, cls /
        genomic / WSI, 9 values row-major) and ``sparsity/block_area`` (those blocks' shares of the
        maps: the shares of a random choice of elements)."""
        rows, self._sparsity = self._sparsity, None
        if rows is None:
            return {}
        rows = rows[rows[:, 0] > 0]
        if not len(rows):
            return {}
        mean = rows.mean(0)
        return {"sparsity/kept_fraction": mean[:1], "sparsity/kept_blocks": mean[1:10], "sparsity/block_area": mean[10:]}

    def loss(self, output: ModelOutput, target: Target) -> dict[str, torch.Tensor]:
        """The contract's terms; on a gradient-conflict step (``conflict_every``) the measure
        ``grad_conflict/last`` joins ``output.measures`` (the loop reads them after the loss)."""
        terms = super().loss(output, target)
        inputs, self._conflict_inputs = self._conflict_inputs, None
        if inputs is not None:
            cosine = self.gradient_conflict(*inputs, target)
            if cosine is not None:
                output.measures["grad_conflict/last"] = cosine
        return terms

    def gradient_conflict(self, wsi: torch.Tensor, wsi_mask: torch.Tensor, omic: torch.Tensor | None,
                          target: Target) -> torch.Tensor | None:
        """Figure 4b's measurement: the cosine between the WSI-only and the genomic-only gradients of the
        NLL on the last layer's MLP (per expert under SMoE, averaged over the experts both reach; the
        whole dense MLP without it), or None when one modality is absent. See the class docstring."""
        if not self.n_genomic_tokens or wsi.shape[1] == 0:
            return None
        mlp = self.layers[-1].mlp
        params = [mlp.w_in, mlp.b_in, mlp.w_out] if isinstance(mlp, TopKMoE) else list(mlp.parameters())
        saved = [(layer.last_gates, layer.last_modality, layer.attn.last_mix) for layer in self.layers]
        devices = [wsi.device] if wsi.device.type == "cuda" else []
        grads = []
        self._measuring = True
        try:
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                for keep in ("wsi", "genomic"):
                    if keep == "wsi":
                        genomic_tokens, self.n_genomic_tokens = self.n_genomic_tokens, 0
                        try:
                            logits = self.encode(wsi, wsi_mask, None)[0]
                        finally:
                            self.n_genomic_tokens = genomic_tokens
                    else:
                        logits = self.encode(wsi[:, :0], wsi_mask[:, :0], omic)[0]
                    loss = self.survival_loss(ModelOutput(logits=logits), target)
                    grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        finally:
            self._measuring, self._sparsity = False, None
            for layer, (gates, modality, mix) in zip(self.layers, saved):
                layer.last_gates, layer.last_modality, layer.attn.last_mix = gates, modality, mix
        parts = [[torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grad, params)] for grad in grads]
        if isinstance(mlp, TopKMoE):  # one vector per expert: its slices of w_in, b_in, w_out
            vectors = [[torch.cat([w_in[e].reshape(-1), b_in[e], w_out[e].reshape(-1)]) for e in range(mlp.n_experts)]
                       for w_in, b_in, w_out in parts]
        else:
            vectors = [[torch.cat([g.reshape(-1) for g in part])] for part in parts]
        cosines = [F.cosine_similarity(a, b, dim=0) for a, b in zip(*vectors)
                   if bool(a.norm() > 0) and bool(b.norm() > 0)]
        return torch.stack(cosines).mean().to(torch.float64) if cosines else None

    def routing_shares(self) -> dict[str, torch.Tensor]:
        """Figure 4a's measurement: per SMoE layer and modality, the share of that modality's tokens'
        top-k selections that went to each expert (E values summing to 1), ``route/<modality>/layer<l>``."""
        shares = {}
        for index, layer in enumerate(self.layers):
            gates = getattr(layer, "last_gates", None)
            if gates is None:
                continue
            chosen = (gates > 0).to(torch.float64)
            for name, modality in (("cls", CLS), ("wsi", WSI), ("genomic", GENOMIC)):
                rows = layer.last_modality == modality
                if bool(rows.any()):
                    shares[f"route/{name}/layer{index}"] = chosen[rows].mean(0) / chosen[rows].sum(1).mean()
        return shares

    # ---------------------------------------------------------------- epochs, c-index, refresh
    def on_epoch_end(self, record: dict) -> None:
        """The loop's epoch boundary: the epoch's training c-index joins the history, the next epoch
        starts, and whether it refreshes the stored scores is decided."""
        self._cindex_history.append(float(record.get("train_cindex", float("nan"))))
        self._train_steps = 0  # the gradient-conflict schedule restarts with every epoch
        self._epoch += 1
        self._refreshing = self.refresh_decision()

    def refresh_decision(self) -> bool:
        """Whether the epoch now starting refreshes the stored token scores."""
        if self.refresh == "epoch" or self._epoch <= 1:
            return True
        if self.refresh == "every_n":
            return (self._epoch - 1) % max(1, self.refresh_every) == 0
        history = [c for c in self._cindex_history if not math.isnan(c)]
        return len(history) >= 2 and history[-1] < history[-2]

    def get_extra_state(self) -> torch.Tensor:
        state = {"version": 2, "selection_seed": self._selection_seed, "epoch": self._epoch, "cindex": list(self._cindex_history),
                 "refreshing": self._refreshing, "keys": list(self._scores),
                 "positions": [pos for pos, _ in self._scores.values()],
                 "scores": [score for _, score in self._scores.values()]}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    def set_extra_state(self, state: torch.Tensor) -> None:
        values = torch.load(io.BytesIO(state.cpu().numpy().tobytes()), weights_only=True)
        self._epoch, self._cindex_history = int(values["epoch"]), list(values["cindex"])
        self._refreshing = bool(values["refreshing"])
        self._selection_seed = int(values.get("selection_seed", self._selection_seed))
        self._scores = {int(k): (p, s) for k, p, s in zip(values["keys"], values["positions"], values["scores"])}
