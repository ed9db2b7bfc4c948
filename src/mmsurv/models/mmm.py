"""MMM: Multi-expert Mutual Mixer, the published design (gated multi-experts, expert communication, DAM).

"A Lightweight Framework for Multi-expert Mutual Mixer in Cancer Survival Prediction" (repository
jermmy19998/MMM, README abstract and framework figure ``mmm_w.png``; the code of this design was
never released, "code coming soon"). This is an implementation from the abstract and figure; its
skeleton is that of the released first version (:mod:`mmsurv.models.mmm_v1`), whose history was
read for the layer sizes. Nothing of it is copied.

Architecture (d = 256, d2 = 128; every SDL is ``Linear → SELU → AlphaDropout``, MCAT's SNN block
with SELU, :func:`mmsurv.models.snn.snn_block`):

1. patches: SDL path_dim → d (dropout 0.2), N image tokens; genomic groups: one SDL s_i → d each
   (dropout 0.2), G genomic tokens;
2. φ_o maps the G genomic tokens to the image-token length N: the tokens are tiled cyclically to N
   rows, then ``Conv1D → Linear → GELU → Dropout(0.25)`` (a depthwise kernel-3 convolution along the
   token axis, so neighbouring groups mix, then the channel-mixing Linear);
3. GME (the figure's "Multi-expert Gated Gaussian" with "Experts Communication"), see :class:`GME`;
4. SDL d → d2 per modality (dropout 0.3), **DAM** (:class:`DAM`), SDL d2 → d2 (dropout 0.3);
5. a second GME at d2;
6. the image ⊗ genomics matrix product ``img^T · gene`` (d2×d2, a sum over the N aligned token
   pairs), L2-normalised over the image axis (the released version's step; the figure shows only
   the product), mean over that axis, ``Linear(d2 → n_bins)``. ``product_norm="mean"`` divides the
   product by N instead: the L2 step keeps only each genomic channel's direction across image
   channels (with near-identical genomic tokens, little more than its sign), which makes the model
   slow to fit; without it the model fits the demo's training folds (train c-index ≈ 0.93 against
   ≈ 0.5) but over-fits its 19 training patients (demo 5-fold, 1 thread: 0.52 against 0.73 for
   ``l2``), so the released step stays the default.

**GME** per modality: [max; mean] pooled tokens (2d) → gating MLP (2d → d/4 → GELU → N_e) →
softmax weights w over that modality's N_e experts; expert k (``Linear d → d/4 → GELU → Dropout 0.1
→ Linear d/4 → d``) is applied to every token and scaled by w_k; the modality's output is the
residual ``x + Σ_k w_k E_k(x)``. **Expert communication**: a compact global softmax router
(``Linear(2 N_e → N_e²)`` on [w_img; w_gene]) scores every (image expert, gene expert) pair; round
r = 1..R picks the best pair not yet chosen (top-1); a straight-through estimator (one-hot + p −
stop_grad(p), value 1 forward, the softmax's gradient backward) multiplies the round's messages so
the router learns. The chosen pair interacts by cross-attention both ways (image expert tokens
query gene expert tokens and back) with the Gaussian position bias −(pos_i − pos_j)² / (2σ²)
(positions normalised to [0, 1] along each sequence; σ learnable, one per direction, initialised
0.2), and each modality adds its message. Queries and keys are projected to 64 dims (no value or output
projection: messages stay in the experts' space, keeping the module light).

**Cost departure.** Full N×N cross-attention is 10 GB per matrix at 50,000 patches; the keys and
values are therefore average-pooled along the sequence into at most ``key_segments`` (64) segments
whose positions are the segment centres. Queries stay at full resolution, so the cost is linear in
N, and for N ≤ 64 the attention is exact (no pooling).

**DAM** (Dual Affine Mapper): each modality's ``Linear(d2 → 2 d2)`` is split into (a, b); then
x_img' = b_img ⊙ (1 + a_gene) + a_gene and x_gene' = b_gene ⊙ (1 + a_img) + a_img (the released
version's formula, :class:`DAM`).

Choices the paper leaves open, and why: N_e = 4 experts per modality and R = 2 rounds (a small
meeting: 16 possible pairs, 2 voted; keeps the model lightweight); σ initialised at 0.2 (attention
mostly within a fifth of the sequence at start, free to widen); expert shape a d → d/4 → d
bottleneck MLP (half the parameters of a square layer; sized so the whole model lands at the
paper's ≈ 12× below MoME); a Switch-style balance loss on the pair
router, 0.01 × N_e² Σ_p f_p P_p (f = fraction of rounds choosing pair p), so rarely voted pairs
keep receiving probability (``balance_weight``; 0 disables). The genomic tiling is deterministic
(the released version shuffles the repeated tokens); the depthwise Conv1D keeps φ_o light.

Ablations (constructor flags, so config variants train them): ``rounds=0`` (GME without
communication rounds), ``dam=False`` (no DAM: the SDLs are chained), ``gaussian=False`` (cross-
attention without the position bias).

Defaults (the released version's training: ``main.py``, ``utils/utils.py`` and the README's command, at
commit 344f4de; the repository's HEAD holds no code): AdamW, lr 5e-4, weight decay 1e-5, gradient
accumulation 32, 100 epochs (``--max_epochs`` default), batch 1, class-balanced sampling, NLL α = 0,
and a **constant learning rate**: ``main.py`` parses ``--lr_scheduler cosine`` and ``utils.py``
defines ``get_lr_scheduler``, but nothing calls it, so the lr stays 5e-4 for every epoch
(``scheduler: none``; tested). 512 px patches at extraction (a feature-extraction setting, not a
training one, so not in ``defaults``). Parameters on BLCA's signature groups [94, 334, 521, 468,
1496, 479], 4 bins: 1,877,496 (MMM v1: 1,856,516; MoME 21.7 M: 11.6× fewer, the paper says "about
12×").

**Micro-batches** (``bs_micro = 4096``), the released trainer's training AND validation loops
(``trainer/mb_trainer.py`` at 344f4de, MOTCat's, run for ``--model_type mmm``; the shared helpers
of :mod:`mmsurv.models.layers`): the bag is shuffled and split into ``N // 4096 + 1`` near-equal
chunks (a bag of up to 4,095 patches is one chunk in shuffled order; 4,096 patches make two, as
there), the whole model runs on each chunk with the same genomic input, the loss is the mean of the
chunks' NLLs and the risk the mean of the chunks' −Σ_k S_k. Since every step sees shuffled patches,
the Gaussian positions are positions in the chunk's shuffled order. ``bs_micro=None`` runs the whole
bag at once, in its order (one forward pass, e.g. to compare with a reference's single call).
Cost at 5,000 patches, forward + backward on one CPU thread: 908 ms in two chunks, 1,232 ms whole
(``bench/step_cost.py``).

Departures, with reasons:

* the published design's code was never released: everything beyond the released version's
  skeleton (SDLs, DAM, the normalised product) is our reading of the abstract and figure (the
  choices listed above, each with its reason);
* evaluation splits the bag with a fixed permutation (``eval_seed``, default 0) where the release
  reshuffles with Python's ``random`` at every validation pass: a model gives the same risk for the
  same bag; training shuffles with torch's global generator (seeded by the run), not Python's;
* the balance term (ours, above) is averaged over the chunks like the NLL; ``logits`` are those of
  the chunks' mean survival curve (the release averages loss and risk only; the logits only feed the
  reported survival curves, and equal the chunk's logits for a one-chunk bag).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import chunk_generator, micro_batch_output, run_micro_batches, snn_block
from mmsurv.models.registry import register_model


def sdl(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Stable Dense Layer: ``Linear → SELU → AlphaDropout``."""
    return snn_block(in_dim, out_dim, dropout, activation="selu")


def tile_tokens(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """G×d tokens repeated cyclically to ``length`` rows (truncated when length < G)."""
    repeats = -(-length // tokens.shape[0])
    return tokens.repeat(repeats, 1)[:length]


class DAM(nn.Module):
    """Dual Affine Mapper: (a, b) = split(Linear(x)) per modality, each modality's b modulated by the other's a.

    x_img' = b_img ⊙ (1 + a_gene) + a_gene,  x_gene' = b_gene ⊙ (1 + a_img) + a_img."""

    def __init__(self, dim: int):
        super().__init__()
        self.image = nn.Linear(dim, 2 * dim)
        self.gene = nn.Linear(dim, 2 * dim)

    def forward(self, x_img: torch.Tensor, x_gene: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_img, b_img = self.image(x_img).chunk(2, dim=-1)
        a_gene, b_gene = self.gene(x_gene).chunk(2, dim=-1)
        return b_img * (1 + a_gene) + a_gene, b_gene * (1 + a_img) + a_img


def check_bs_micro(bs_micro: int | None, model: str) -> int | None:
    if bs_micro is not None and bs_micro < 1:
        raise ValueError(f"{model}: bs_micro must be at least 1 (or None: the whole bag), got {bs_micro}")
    return bs_micro


def positions(n: int, device=None) -> torch.Tensor:
    """Positions 0..n−1 normalised to [0, 1] (0 for a single token)."""
    return torch.arange(n, device=device, dtype=torch.float32) / max(n - 1, 1)


def gaussian_bias(query_pos: torch.Tensor, key_pos: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """−(pos_i − pos_j)² / (2σ²): the Nq×Nk additive attention bias."""
    return -(query_pos[:, None] - key_pos[None, :]) ** 2 / (2 * sigma ** 2)


class GaussianCrossAttention(nn.Module):
    """Single-head cross-attention with a learnable Gaussian position bias; keys pooled to ≤ ``segments``."""

    def __init__(self, dim: int, attn_dim: int = 64, sigma: float = 0.2, gaussian: bool = True, segments: int = 64):
        super().__init__()
        self.query = nn.Linear(dim, attn_dim, bias=False)
        self.key = nn.Linear(dim, attn_dim, bias=False)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma))) if gaussian else None
        self.segments = segments
        self.scale = attn_dim ** -0.5

    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Nq×d queries attend Nk×d keys (= values) → Nq×d messages."""
        nq, nk = queries.shape[0], keys.shape[0]
        key_pos = positions(nk, keys.device)
        if nk > self.segments:
            keys = F.adaptive_avg_pool1d(keys.t().unsqueeze(0), self.segments)[0].t()
            starts = torch.tensor([(j * nk) // self.segments for j in range(self.segments)], device=keys.device)
            ends = torch.tensor([-(-(j + 1) * nk // self.segments) for j in range(self.segments)], device=keys.device)
            key_pos = (starts + ends - 1).float() / 2 / (nk - 1)
        scores = (self.query(queries) @ self.key(keys).t()) * self.scale
        if self.log_sigma is not None:
            scores = scores + gaussian_bias(positions(nq, queries.device), key_pos, self.sigma())
        return torch.softmax(scores, dim=-1) @ keys


def _experts(dim: int, n: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(nn.Sequential(nn.Linear(dim, dim // 4), nn.GELU(), nn.Dropout(dropout),
                                       nn.Linear(dim // 4, dim)) for _ in range(n))


def _gate(dim: int, n: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, n))


class GME(nn.Module):
    """Gated multi-experts per modality and R rounds of expert communication (see the module docstring)."""

    def __init__(self, dim: int, n_experts: int = 4, rounds: int = 2, gaussian: bool = True, sigma: float = 0.2,
                 attn_dim: int = 64, key_segments: int = 64, dropout: float = 0.1):
        super().__init__()
        if rounds > n_experts ** 2:
            raise ValueError(f"GME: {rounds} rounds but only {n_experts ** 2} expert pairs")
        self.n_experts, self.rounds = n_experts, rounds
        self.image_gate, self.gene_gate = _gate(dim, n_experts), _gate(dim, n_experts)
        self.image_experts, self.gene_experts = _experts(dim, n_experts, dropout), _experts(dim, n_experts, dropout)
        if rounds:
            self.router = nn.Linear(2 * n_experts, n_experts * n_experts)
            self.image_from_gene = GaussianCrossAttention(dim, attn_dim, sigma, gaussian, key_segments)
            self.gene_from_image = GaussianCrossAttention(dim, attn_dim, sigma, gaussian, key_segments)

    @staticmethod
    def _weights(gate: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(gate(torch.cat([x.max(dim=0).values, x.mean(dim=0)])), dim=-1)

    def forward(self, x_img: torch.Tensor, x_gene: torch.Tensor):
        """N×d image and gene tokens → (image out, gene out, balance loss, info dict)."""
        w_img, w_gene = self._weights(self.image_gate, x_img), self._weights(self.gene_gate, x_gene)
        e_img = [w * expert(x_img) for w, expert in zip(w_img, self.image_experts)]
        e_gene = [w * expert(x_gene) for w, expert in zip(w_gene, self.gene_experts)]
        out_img, out_gene = x_img + sum(e_img), x_gene + sum(e_gene)
        info = {"image_gate": w_img.detach(), "gene_gate": w_gene.detach()}
        balance = x_img.new_zeros(())
        if self.rounds:
            probs = torch.softmax(self.router(torch.cat([w_img, w_gene])), dim=-1)
            straight = -probs.detach() + probs  # value 0, gradient of the probabilities
            chosen = []
            available = torch.ones_like(probs, dtype=torch.bool)
            for _ in range(self.rounds):
                pair = int(probs.masked_fill(~available, -1.0).argmax())
                available[pair] = False
                chosen.append(pair)
                gate = 1.0 + straight[pair]  # straight-through top-1: 1 forward, ∂p_pair backward
                i, j = divmod(pair, self.n_experts)
                out_img = out_img + gate * self.image_from_gene(e_img[i], e_gene[j])
                out_gene = out_gene + gate * self.gene_from_image(e_gene[j], e_img[i])
            fraction = torch.zeros_like(probs)
            fraction[chosen] = 1.0 / self.rounds
            balance = probs.numel() * (fraction * probs).sum()
            info["pair_probs"] = probs.detach()
        return out_img, out_gene, balance, info


@register_model("mmm", display="MMM", citation="Anonymous authors, MMM (jermmy19998/MMM), 2025")
class MMM(SurvivalModel):
    """Multi-expert Mutual Mixer: SDL encoders, φ_o, GME, DAM, GME, image ⊗ genomics product."""

    inputs = ("path", "omic_groups")
    defaults = {
        "data": {"groups": "signatures"},
        "training": {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 1e-5, "grad_accum": 32,
                     "scheduler": "none", "epochs": 100, "batch_size": 1},
    }

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, dim: int = 256,
                 dim2: int = 128, n_experts: int = 4, rounds: int = 2, dam: bool = True, gaussian: bool = True,
                 sigma: float = 0.2, attn_dim: int = 64, key_segments: int = 64, balance_weight: float = 0.01,
                 product_norm: str = "l2", bs_micro: int | None = 4096, eval_seed: int = 0, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("MMM needs at least one genomic group")
        gme = dict(n_experts=n_experts, rounds=rounds, gaussian=gaussian, sigma=sigma, attn_dim=attn_dim,
                   key_segments=key_segments)
        if product_norm not in ("mean", "l2"):
            raise ValueError(f"MMM: product_norm must be 'mean' or 'l2', got {product_norm!r}")
        self.balance_weight, self.product_norm = balance_weight, product_norm
        self.bs_micro, self.eval_seed = check_bs_micro(bs_micro, "MMM"), eval_seed
        self.image_sdl = sdl(path_dim, dim, 0.2)
        self.omic_sdl = nn.ModuleList(sdl(size, dim, 0.2) for size in group_sizes)
        self.phi_conv = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)
        self.phi = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.25))
        self.gme1 = GME(dim, **gme)
        self.image_down, self.gene_down = sdl(dim, dim2, 0.3), sdl(dim, dim2, 0.3)
        self.dam = DAM(dim2) if dam else None
        self.image_mid, self.gene_mid = sdl(dim2, dim2, 0.3), sdl(dim2, dim2, 0.3)
        self.gme2 = GME(dim2, **gme)
        self.classifier = nn.Linear(dim2, n_bins)

    def forward_chunk(self, path: torch.Tensor, *groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The whole model on one micro-batch of n patches: 1×K logits, the balance term, the gates."""
        x_img = self.image_sdl(path)  # n×d
        genes = torch.stack([layer(group) for layer, group in zip(self.omic_sdl, groups)])  # G×d
        tiled = tile_tokens(genes, x_img.shape[0])
        x_gene = self.phi(self.phi_conv(tiled.t().unsqueeze(0))[0].t())  # n×d
        x_img, x_gene, balance1, info1 = self.gme1(x_img, x_gene)
        x_img, x_gene = self.image_down(x_img), self.gene_down(x_gene)
        if self.dam is not None:
            x_img, x_gene = self.dam(x_img, x_gene)
        x_img, x_gene = self.image_mid(x_img), self.gene_mid(x_gene)
        x_img, x_gene, balance2, info2 = self.gme2(x_img, x_gene)
        mixed = x_img.t() @ x_gene  # d2×d2: Σ over the n aligned token pairs
        mixed = F.normalize(mixed, dim=0) if self.product_norm == "l2" else mixed / x_img.shape[0]
        logits = self.classifier(mixed.mean(dim=0)).unsqueeze(0)
        info = {f"gme1_{k}": v for k, v in info1.items()} | {f"gme2_{k}": v for k, v in info2.items()}
        return logits, balance1 + balance2, info

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "MMM")
        groups = batch.one_groups("MMM", len(self.omic_sdl))
        _, results = run_micro_batches(self.forward_chunk, path, self.bs_micro,
                                       chunk_generator(self.training, self.eval_seed), *groups)
        aux = {}
        if self.training and self.balance_weight and self.gme1.rounds:
            aux["balance"] = self.balance_weight * torch.stack([balance for _, balance, _ in results]).mean()
        attention = {key: torch.stack([info[key] for _, _, info in results]) for key in results[0][2]}
        # GME's soft expert weights per modality, mean over the micro-batches (they sum to 1 per GME)
        measures = {f"route/{side}/layer{layer}": attention[f"gme{layer + 1}_{gate}_gate"].mean(0).to(torch.float64)
                    for layer in (0, 1) for side, gate in (("wsi", "image"), ("genomic", "gene"))}
        return micro_batch_output(torch.cat([logits for logits, _, _ in results]), aux=aux, attention=attention,
                                  measures=measures)
