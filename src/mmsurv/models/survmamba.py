"""SurvMamba: hierarchical bidirectional state-space survival model (Chen et al., arXiv:2404.08027, 2024).

Pure PyTorch (no ``mamba_ssm`` / ``causal-conv1d`` CUDA kernels), device-agnostic, exact.

**Official code.** None was found (code index searched for SurvMamba and the authors' group, 2026-12-03).
The same group's later CancerMul (``XJJ-student/Cancermul`` at 51174c1: three modalities, several
tasks) is a different model (e.g. one Mamba stack used at both hierarchy levels, LayerNorm-Linear-
LayerNorm genomic encoders); none of its numerics are taken. Where the paper is silent, the choices
below are ours and say so.

**The paper's design, as implemented.**

* *Regions* (paper §3.3, §4.1: regions of 4,096 × 4,096 px at 20×, cut into 256 × 256 px patches,
  so 16 × 16 = 256 patches per region). A region is ``region_px`` (4096) px at
  ``region_magnification`` (20×) whatever the patch size: 4,096 level-0 px on a 20× scan, 8,192 on a
  40× scan; 256 px patches at 20× give 16 × 16 patches per region, the project's default 512 px
  patches 8 × 8 = 64 (``patching.patch_size: 256`` cuts the paper's patches). Each slide's level-0
  magnification is the input ``slide_magnification``, read from the attributes its ``h5_files`` carry
  (mmsurv's patching records it; :func:`mmsurv.data.dataset.recorded_magnification`). For a slide
  whose files do not record it (CLAM's own ``h5_files``) the coordinate grid step (GCD of the
  offsets) is taken as ``fallback_patch_px`` (256, the paper's patch) px at 20×, i.e. a region of
  16 × 16 grid steps, with a warning in the log; ``region_size`` (level-0 px) fixes the side for
  every slide. Regions come from the coordinates (``coords``, with ``slide_index`` so that regions
  never mix slides), anchored at each slide's smallest x and y (the paper does not say where its
  grid starts); a patch belongs to the region holding the centre of its grid cell. Tokens are ordered
  by (slide, region row, region column) and, inside a region, row-major (y, then x): the scan order
  (the paper gives none). Each new region geometry is logged once per run (side in level-0 px,
  grid step, patches per region, where the side came from) and :meth:`SurvMamba.region_report`
  returns them.
* *Genomic hierarchy.* Genes → *functions* → *processes*. Functions are the pathways of the
  project's gene sets (input ``omic_groups:pathways``): the paper's 352 KEGG functions in 42 KEGG
  processes cannot be shipped. *Processes*: by default the versioned resource
  ``resources/hierarchy/combine_signatures_processes.v1.csv`` (SurvPath's 331 pathways in 42
  processes, the paper's process count, built deterministically by gene overlap with
  :func:`mmsurv.data.hierarchy.build_hierarchy`, ``mmsurv pathways hierarchy``; see its README). ``hierarchy`` may name a user's two-level CSV
  (columns ``process,function``) or ``"index"``. Functions the hierarchy does not list (and every
  function when the model is built without ``group_names``) are grouped **by index**: consecutive
  runs of functions in group order, ``ceil(sqrt(F'))`` processes of near-equal size for the F'
  unlisted functions (e.g. the demo's 16 synthetic pathways → 4 processes of 4; BLCA's 6 MCAT
  signature groups → 3 processes of 2).
* *Encoders.* Pathology: ``Linear(path_dim → D)`` (paper: 768-d TransPath features → 512; here the
  project's 1024-d ResNet50 features → 512). Genomics: one two-layer feed-forward encoder per
  function, ``s_f → D → D`` (the paper: "two-layer feed-forward network", 512-d tokens; hidden width,
  activation and dropout not stated: ours are D, ELU and AlphaDropout, SurvPath's per-pathway SNN
  blocks), computed for all functions at once (:class:`GroupedFFN`: one segment sum and one batched
  product instead of F small modules; same parameters). ``dropout`` (0.25) after both encoders:
  the paper states no dropout; 0.25 is the value of the MCAT family it compares with.
* *Bi-Mamba* (paper Algorithm 1, :class:`BiMamba`): LayerNorm → ``Linear^x``, ``Linear^z``; for the
  forward and the backward direction its own causal depthwise Conv1d + SiLU, input-dependent B, C
  and Δ = softplus(Linear(x') + bias), Ā = exp(Δ ⊗ A), B̄ = Δ ⊗ B (Algorithm 1's form, as in Mamba's
  code; not eq. 2's zero-order-hold B̄), the selective scan with Mamba's skip D; both outputs gated
  by SiLU(z), summed, ``Linear`` back to D, residual. The backward direction scans the reversed
  sequence and its output is reversed back (the paper names Vision Mamba [39] as its model). Mamba's
  internal sizes and initialisation (the paper gives none; Mamba's defaults): ``d_state`` N = 16,
  ``expand`` 2 (E = 2D), ``d_conv`` 4, ``dt_rank`` ceil(D/16), A = −(1…N), Δ bias so that
  softplus(bias) is log-uniform in [1e-3, 1e-1], no bias in the in/out projections. With padding
  (regions of unequal size) the backward direction reverses each region's real tokens only, so
  padding never reaches a real token.
* *HIM* (eqs. 5-6). Level 1: one Bi-Mamba shared by all regions (over their patch tokens) and one
  shared by all processes (over their function tokens); Pool = the mean over a group's tokens (the
  paper does not name the pooling); level 2: a Bi-Mamba over the region tokens and one over the
  process tokens. One Bi-Mamba layer each, not shared between levels or modalities (the paper
  gives no depth and writes "Bi-Mamba" for all four). Fine-grained features = level-1 patch and
  function tokens; coarse-grained = level-2 region and process tokens.
* *IFM* (paper Algorithm 2, :class:`InteractionFusionMamba`) at the fine and at the coarse level:
  per modality LayerNorm → ``Linear^x``, ``Linear^z``, causal Conv1d + SiLU, selective scan (one
  direction, as Algorithm 2); each branch gated by SiLU of the OTHER modality's z. Algorithm 2 types
  both sequences with the same length M, but patches and functions differ in number, so the gate is
  the token mean of SiLU(z_other) and each gated branch is mean-pooled over its tokens before the two
  vectors are concatenated and projected (``Linear(2E → D)``): our reading, the paper does not say how
  the lengths are matched. H = αH_f + (1 − α)H_c (eq. 8) with α = sigmoid(a), a learnable (α starts
  at 0.5; the paper calls α a learned hyper-parameter without saying how it is kept in [0, 1]);
  ``Linear(D → n_bins)`` hazards; the NLL survival loss of eq. 9 (MCAT's implementation, the
  contract's default).
* *Training defaults* (``defaults``, paper §4.1): RAdam, lr 2e-4, weight decay 5e-3 (applied as the
  project's ``radam`` optimizer applies it; the paper does not say coupled or decoupled), batch 1
  (one patient per optimiser step: ``grad_accum`` 1; the paper states batch 1 and no accumulation);
  no patch cap (the paper states none). Epochs and schedule: not stated (the package defaults apply).
* *Demo.* ``config/config.yaml`` trains the demo at ``dim: 64`` and 5 epochs (at 512 the model has
  17.9 M parameters and takes minutes per demo fold on 2 cores; the reason is in that file); real
  runs keep the paper's width 512.

**Table 3 ablations** (paper §4.3; constructor options, so each is a config variant; the named
variants are in ``config/papers/survmamba.yaml``):

* ``him``: ``multi`` (default; models C-F: both HIM levels, H = αH_f + (1 − α)H_c), ``fine``
  (model B: the shared level-1 Bi-Mamba within regions / processes, no coarse level, H = H_f),
  ``none`` (model A: "all fine-grained features are fed as an input vector into the Bi-Mamba
  block": each modality's whole sequence through one Bi-Mamba, no regions or processes; patches in
  (slide, y, x) order, functions in group order, our choice; H = H_f).
* ``ifm``: ``both`` (default; F), ``fine`` (D: IFM at the fine level only), ``coarse`` (E),
  ``none`` (A-C). A level without IFM concatenates the two modalities' mean-pooled tokens and
  projects them with ``Linear(2D → D)`` (the paper: "concatenated to predict survival outcomes";
  the pooling and the projection are ours, so that H_f and H_c are D-dimensional as with IFM).
* ``bidirectional`` (False: forward scans only; Figure 3's unidirectional model).

**Remaining departures, in one place** (each explained above): 1024-d ResNet50 features instead of
TransPath's 768-d; the project's pathways and overlap-built processes instead of KEGG's 352/42;
512 px patches by default (8 × 8 per 4,096 px region; 256 px gives the paper's 16 × 16); regions
anchored at each slide's tissue and the scan order ours; the genomic encoder's activation, hidden
width and the 0.25 dropouts ours; mean pooling, the IFM's length matching and α = sigmoid(a) our
readings; the magnification fallback for files that do not record it; the demo's width 64.

**The selective scan** (:func:`selective_scan`): h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t,
y_t = C_t · h_t, in plain PyTorch and exact (no division by cumulative decays, so no overflow
whatever Δ): :func:`linear_scan` cuts a long sequence into ~√L chunks, scans every chunk from a zero
state with all chunks in parallel (√L vectorised steps), scans the chunk carries the same way one
level up (recursively) and adds each chunk's incoming state times its cumulative decay; short or
very wide sequences (HIM level 1: many regions of ≤ 256 patches at once) run token by token, which
is then cheaper. Work is linear, Python steps O(√L). A hand-written backward
(:class:`_SelectiveScan`) recomputes the states tile by tile (tiles of ≤ ``TILE_ELEMENTS`` state
entries) instead of storing the L × E × N states, and runs the adjoint as the same scan backwards.
:func:`selective_scan_reference` is the naive token-by-token recurrence it is tested against
(forward and gradients, 1e-5, float32, L = 1 … 50,000). ``bench/scan.py`` compares both with
``mambapy``'s parallel scan (Blelloch, power-of-two padding).

**Long bags** (``checkpoint_tokens``, default 4096; 0 disables): while training on a bag longer
than that, HIM level 1 runs over slices of regions recomputed in the backward pass, and the IFM's
pathology branch over blocks of ≤ 1024 tokens (state and convolution context carried across
blocks, recomputed in the backward pass): the same numbers (tested), memory no longer dominated by
the bag (a 50,000-patch bag: see ``bench/scan.py``).

**Size and cost** (``bench/scan.py``). On the BLCA signature groups [94, 334, 521, 468, 1496, 479]
without group names (path_dim 1024, D 512, 3 processes by index): 17,896,965 parameters
(14,581,253 outside the genomic encoders), 7.25 GFLOPs = 3.62 GMACs at 1,000 patches (a 512 px grid
at 20×: 64 patches per region) by
``torch.utils.flop_counter`` (2 FLOPs per multiply-add, matrix products and convolutions only; the
scan's element-wise 3·E·N multiply-adds per token and direction add 0.15 GMACs). On SurvPath's 331
pathways (42 processes): 106,679,301 parameters, the 331 function encoders ``s_f → 512 → 512``
holding 92 M. The paper reports 398.85 K parameters and 2.51 GFLOPs; its own stated layers cannot
fit in that count (the 768 → 512 projection alone has 393,728 parameters, its 352 function encoders
to D = 512 several millions), so the figure does not describe the stated D = 512 model. The same
architecture at D = 64 on 768-d features has 344,005 parameters outside the genomic encoders and
2.35 GFLOPs (flop_counter) at 10,000 patches, the paper's order of magnitude: its count may be of
a narrower model or of part of it; this is a guess, the paper does not say.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.registry import register_model

log = logging.getLogger(__name__)

TILE_ELEMENTS = 1 << 23  # state entries (time × batch × E × N) per scan tile
SEQUENTIAL_MAX = 8  # scans this short run token by token
IFM_BLOCK = 1024  # pathology tokens per recomputed IFM block (long bags while training)
PARALLEL_STEP_MAX = 1 << 16  # ... and so do scans whose every step has this many state entries
HIERARCHY_DIR = Path(__file__).resolve().parent.parent / "resources" / "hierarchy"
DEFAULT_HIERARCHY = HIERARCHY_DIR / "combine_signatures_processes.v1.csv"
HIM_MODES = ("none", "fine", "multi")  # Table 3: A / B / C-F
IFM_MODES = ("none", "fine", "coarse", "both")  # Table 3: A-C / D / E / F
REGION_PX = 4096  # region side at REGION_MAGNIFICATION (paper, section 4.1)
REGION_MAGNIFICATION = 20.0
FALLBACK_PATCH_PX = 256  # the paper's patch side at 20x: the grid step assumed when a slide's magnification is unknown


# --------------------------------------------------------------------------------------------
# The selective scan
# --------------------------------------------------------------------------------------------

def chunk_size(length: int, step_elements: int) -> int | None:
    """Chunk length of the parallel form, or None for the token-by-token loop (short sequences, or
    steps so large that the loop's Python overhead is negligible and its fewer passes win)."""
    if length <= SEQUENTIAL_MAX or step_elements >= PARALLEL_STEP_MAX:
        return None
    return math.isqrt(length - 1) + 1  # ceil(sqrt(L))


def linear_scan(log_decay: torch.Tensor, inputs: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = exp(log_decay_t) ⊙ h_{t−1} + inputs_t along dim 0 (h_{−1} = ``initial`` or 0); every h_t.

    Exact chunked form (no division, so no overflow whatever the decay): √L chunks are scanned from
    a zero state in parallel, the carries between chunks are the same scan one level up
    (recursively), and each chunk adds its incoming state times its cumulative decay."""
    length = log_decay.shape[0]
    size = chunk_size(length, inputs[0].numel())
    if size is None:
        states = []
        state = initial
        for decay_t, input_t in zip(log_decay.exp().unbind(0), inputs.unbind(0)):  # unbind: one backward node
            state = input_t if state is None else torch.addcmul(input_t, decay_t, state)
            states.append(state)
        return torch.stack(states)
    n_chunks = -(-length // size)
    pad = n_chunks * size - length
    if pad:  # callers pad long inputs beforehand (see _scan_tile); this only pads the small carry levels
        log_decay = torch.cat([log_decay, log_decay.new_zeros((pad, *log_decay.shape[1:]))])
        inputs = torch.cat([inputs, inputs.new_zeros((pad, *inputs.shape[1:]))])
    log_decay = log_decay.reshape(n_chunks, size, *log_decay.shape[1:])
    inputs = inputs.reshape(n_chunks, size, *inputs.shape[1:])
    decay_steps, input_steps = log_decay.exp().unbind(1), inputs.unbind(1)
    local, cumulative = [input_steps[0]], [decay_steps[0]]
    for t in range(1, size):  # every chunk from a zero state, all chunks at once
        local.append(torch.addcmul(input_steps[t], decay_steps[t], local[-1]))
        cumulative.append(cumulative[-1] * decay_steps[t])  # decay from the chunk start to t
    local, cumulative = torch.stack(local, dim=1), torch.stack(cumulative, dim=1)
    carries = linear_scan(log_decay.sum(dim=1), local[:, -1], initial)  # state at each chunk end
    first = torch.zeros_like(carries[:1]) if initial is None else initial.unsqueeze(0)
    incoming = torch.cat([first, carries[:-1]]).unsqueeze(1)
    states = torch.addcmul(local, cumulative, incoming)
    return states.reshape(n_chunks * size, *states.shape[2:])[:length]


def _pad_tile(length: int, step_elements: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pad time-major tile inputs (before the N-fold expansion) to a multiple of the chunk size:
    zeros give Δ = 0, hence decay 1 and input 0 (and a zero output gradient)."""
    size = chunk_size(length, step_elements)
    pad = 0 if size is None else -length % size
    if not pad:
        return tensors
    return tuple(torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) for t in tensors)


def _tile_states(x, delta, A, B, initial):
    """Log-decays Δ ⊗ A, inputs (Δ x) ⊗ B and states of one time-major tile, (l, b, E, N) each."""
    log_decay = delta.unsqueeze(-1) * A
    inputs = (delta * x).unsqueeze(-1) * B.unsqueeze(-2)
    return log_decay, inputs, linear_scan(log_decay, inputs, initial)


def _tiles(batch: int, length: int, step: int, tile_elements: int):
    """(batch slice, [time slices]) covering (L, b): whole sequences when they fit, else blocks."""
    rows = max(1, tile_elements // step)  # (time, batch) pairs per tile
    time_tile = min(length, rows)
    batch_tile = max(1, rows // time_tile)
    times = [slice(t0, min(length, t0 + time_tile)) for t0 in range(0, length, time_tile)]
    return [(slice(b0, min(batch, b0 + batch_tile)), times) for b0 in range(0, batch, batch_tile)]


def _scan_forward(x, delta, A, B, C, tile_elements, keep_carries=False):
    """y (L, b, E) of time-major inputs, tile by tile; optionally the state entering every tile."""
    step = x.shape[2] * A.shape[-1]
    y = x.new_empty(x.shape)
    carries = {}
    for rows, times in _tiles(x.shape[1], x.shape[0], step, tile_elements):
        carry = None
        for span in times:
            if keep_carries:
                carries[(rows.start, span.start)] = carry
            length = span.stop - span.start
            xs, ds, Bs, Cs = _pad_tile(length, (rows.stop - rows.start) * step, x[span, rows], delta[span, rows],
                                       B[span, rows], C[span, rows])
            _, _, states = _tile_states(xs, ds, A, Bs, carry)
            y[span, rows] = torch.matmul(states[:length], Cs[:length].unsqueeze(-1)).squeeze(-1)
            carry = states[length - 1]
            del states
    return y, carries


class _SelectiveScan(torch.autograd.Function):
    """The scan with a hand-written backward: states are recomputed tile by tile (never stored), the
    adjoint g_t = C_t ⊗ ∂y_t + exp(Δ_{t+1} A) ⊙ g_{t+1} is the same linear scan run backwards, and
    a_t ⊙ h_{t−1} = h_t − u_t gives the decay gradients without a shifted copy of the states."""

    @staticmethod
    def forward(ctx, x, delta, A, B, C, tile_elements):
        y, carries = _scan_forward(x, delta, A, B, C, tile_elements, keep_carries=True)
        ctx.save_for_backward(x, delta, A, B, C)
        ctx.carries, ctx.tile_elements = carries, tile_elements
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, delta, A, B, C = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        gx, gdelta, gB, gC = (torch.zeros_like(t) for t in (x, delta, B, C))
        gA = torch.zeros_like(A)
        step = x.shape[2] * A.shape[-1]
        for rows, times in _tiles(x.shape[1], x.shape[0], step, ctx.tile_elements):
            adjoint = None  # exp(Δ A) ⊙ g at the first token of the following tile
            for span in reversed(times):
                length = span.stop - span.start
                xs, ds, Bs, Cs, gys = _pad_tile(length, (rows.stop - rows.start) * step, x[span, rows],
                                                delta[span, rows], B[span, rows], C[span, rows], grad_y[span, rows])
                log_decay, inputs, states = _tile_states(xs, ds, A, Bs, ctx.carries[(rows.start, span.start)])
                reversed_delta = ds.flip(0)  # reverse time on the small (l, b, E) inputs, not on the states
                shifted = torch.cat([torch.zeros_like(reversed_delta[:1]), reversed_delta[:-1]]).unsqueeze(-1) * A
                source = gys.flip(0).unsqueeze(-1) * Cs.flip(0).unsqueeze(-2)
                grad_h = linear_scan(shifted, source, adjoint).flip(0)
                del shifted, source
                adjoint = torch.exp(log_decay[0]) * grad_h[0]
                grad_log_decay = grad_h * (states - inputs)  # ∂/∂(Δ⊗A): g ⊙ a_t ⊙ h_{t−1}
                del inputs
                gA += torch.einsum("lben,lbe->en", grad_log_decay, ds)
                g_dx = torch.matmul(grad_h, Bs.unsqueeze(-1)).squeeze(-1)  # Σ_n g B
                gB[span, rows] = torch.matmul((ds * xs).unsqueeze(-2), grad_h).squeeze(-2)[:length]
                gC[span, rows] = torch.matmul(gys.unsqueeze(-2), states).squeeze(-2)[:length]
                gdelta[span, rows] = ((grad_log_decay * A).sum(-1) + g_dx * xs)[:length]
                gx[span, rows] = (g_dx * ds)[:length]
                del grad_h, grad_log_decay, states, log_decay
        return gx, gdelta, gA, gB, gC, None


def selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   tile_elements: int = TILE_ELEMENTS) -> torch.Tensor:
    """Mamba's selective scan (without the D skip and the gate), exact, memory-bounded.

    ``x``, ``delta``: (b, L, E); ``A``: (E, N), negative; ``B``, ``C``: (b, L, N). Returns y (b, L, E)
    with h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t, h_{−1} = 0, y_t = C_t · h_t. Work is split in
    tiles of at most ``tile_elements`` state entries; the backward recomputes the states."""
    if x.shape[1] == 0:
        return x.new_zeros(x.shape)
    x, delta, B, C = (t.transpose(0, 1).contiguous() for t in (x, delta, B, C))  # time-major
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, delta, A, B, C)):
        y = _SelectiveScan.apply(x, delta, A, B, C, tile_elements)
    else:
        y, _ = _scan_forward(x, delta, A, B, C, tile_elements)
    return y.transpose(0, 1)


def selective_scan_reference(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor) -> torch.Tensor:
    """The same recurrence token by token (the reference the scan is tested against).

    Ā = exp(Δ ⊗ A) and B̄x = (Δ x) ⊗ B are formed for all tokens at once; the states follow one by one."""
    decay = torch.exp(delta.unsqueeze(-1) * A)
    inputs = (delta * x).unsqueeze(-1) * B.unsqueeze(-2)
    state = torch.zeros_like(inputs[:, 0])
    states = []
    for decay_t, input_t in zip(decay.unbind(1), inputs.unbind(1)):
        state = decay_t * state + input_t
        states.append(state)
    return (torch.stack(states, dim=1) * C.unsqueeze(-2)).sum(-1)


# --------------------------------------------------------------------------------------------
# Mamba layers
# --------------------------------------------------------------------------------------------

class SelectiveSSM(nn.Module):
    """One scan direction: causal depthwise Conv1d + SiLU, input-dependent Δ, B, C, scan, skip D."""

    def __init__(self, inner: int, d_state: int = 16, d_conv: int = 4, dt_rank: int = 32,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.conv = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner)
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
        dt = torch.exp(torch.rand(inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) = dt
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))

    def _inputs(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Conv (after ``context``, the previous raw inputs) + SiLU, Δ, B, C of (b, L, E) inputs."""
        length = x.shape[1]
        full = x if context is None else torch.cat([context, x], dim=1)
        x = F.silu(self.conv(full.transpose(1, 2))[..., :full.shape[1]][..., -length:].transpose(1, 2))
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return x, F.softplus(self.dt_proj(dt)), B, C, full[:, -(self.conv.kernel_size[0] - 1):]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, L, E) → (b, L, E), causal along L."""
        x, delta, B, C, _ = self._inputs(x)
        return selective_scan(x, delta, -torch.exp(self.A_log), B, C) + x * self.D

    def forward_block(self, x: torch.Tensor, state: torch.Tensor | None, context: torch.Tensor | None):
        """One block of a longer sequence: (b, K, E) after the block whose last state / raw inputs are given
        → (outputs, last state (b, E, N), raw-input context); for blockwise recomputation (autograd scan)."""
        x, delta, B, C, context = self._inputs(x, context)
        A = -torch.exp(self.A_log)
        states = linear_scan((delta.unsqueeze(-1) * A).transpose(0, 1),
                             ((delta * x).unsqueeze(-1) * B.unsqueeze(-2)).transpose(0, 1),
                             None if state is None else state)
        y = torch.matmul(states, C.transpose(0, 1).unsqueeze(-1)).squeeze(-1).transpose(0, 1)
        return y + x * self.D, states[-1], context


def reverse_within(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each row's first ``lengths[i]`` tokens along dim 1 (padding stays at the end; an involution)."""
    if lengths is None or bool((lengths == x.shape[1]).all()):
        return x.flip(1)
    positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    index = torch.where(positions < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - positions, positions)
    return torch.gather(x, 1, index.unsqueeze(-1).expand_as(x))


class BiMamba(nn.Module):
    """Paper Algorithm 1: norm, x/z projections, forward (+ backward) SSM gated by SiLU(z), out projection, residual."""

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None,
                 bidirectional: bool = True):
        super().__init__()
        inner = expand * dim
        dt_rank = dt_rank or math.ceil(dim / 16)
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.forward_ssm = SelectiveSSM(inner, d_state, d_conv, dt_rank)
        self.backward_ssm = SelectiveSSM(inner, d_state, d_conv, dt_rank) if bidirectional else None
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(b, L, D) tokens, right-padded to ``lengths`` → (b, L, D)."""
        x, z = self.in_proj(self.norm(tokens)).chunk(2, dim=-1)
        y = self.forward_ssm(x)
        if self.backward_ssm is not None:
            y = y + reverse_within(self.backward_ssm(reverse_within(x, lengths)), lengths)
        return tokens + self.out_proj(y * F.silu(z))


class InteractionFusionMamba(nn.Module):
    """Paper Algorithm 2: two SSM branches, each gated by SiLU of the other modality's z, pooled, concatenated, projected."""

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None):
        super().__init__()
        inner = expand * dim
        dt_rank = dt_rank or math.ceil(dim / 16)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.in_projs = nn.ModuleList(nn.Linear(dim, 2 * inner, bias=False) for _ in range(2))
        self.ssms = nn.ModuleList(SelectiveSSM(inner, d_state, d_conv, dt_rank) for _ in range(2))
        self.out_proj = nn.Linear(2 * inner, dim)

    def _path_block(self, tokens, state, context):
        x, z = self.in_projs[0](self.norms[0](tokens)).chunk(2, dim=-1)
        y, state, context = self.ssms[0].forward_block(x, state, context)
        return y.sum(dim=1), F.silu(z).sum(dim=1), state, context

    def forward(self, path: torch.Tensor, omic: torch.Tensor, block: int | None = None) -> torch.Tensor:
        """(1, Lp, D) and (1, Lg, D) token sequences → (1, D).

        With ``block``, the pathology branch runs in blocks of that many tokens, each recomputed in the
        backward pass (state and conv context carried across blocks): the same result in bounded memory.
        The gate is constant over tokens, so mean_t(y_t ⊙ gate) = mean_t(y_t) ⊙ gate."""
        xg, zg = self.in_projs[1](self.norms[1](omic)).chunk(2, dim=-1)
        length = path.shape[1]
        if block is None:
            xp, zp = self.in_projs[0](self.norms[0](path)).chunk(2, dim=-1)
            path_sum, gate_sum = self.ssms[0](xp).sum(dim=1), F.silu(zp).sum(dim=1)
        else:
            path_sum = gate_sum = 0
            state = context = None
            for start in range(0, length, block):
                y, g, state, context = checkpoint(self._path_block, path[:, start:start + block], state, context,
                                                  use_reentrant=False)
                path_sum, gate_sum = path_sum + y, gate_sum + g
        path_vec = path_sum / length * F.silu(zg).mean(dim=1)
        omic_vec = (self.ssms[1](xg) * (gate_sum / length).unsqueeze(1)).mean(dim=1)
        return self.out_proj(torch.cat([path_vec, omic_vec], dim=-1))


class GroupedFFN(nn.Module):
    """One two-layer SNN encoder per genomic group (s_f → hidden → out, ELU + AlphaDropout), all groups at once.

    Same parameters and initialisation as F separate ``nn.Linear`` pairs (U(±1/√fan_in))."""

    def __init__(self, sizes: list[int], hidden: int, out: int, dropout: float = 0.25):
        super().__init__()
        sizes = [int(s) for s in sizes]
        bound1 = torch.tensor([1 / math.sqrt(max(s, 1)) for s in sizes])
        segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))
        self.register_buffer("segment", segment, persistent=False)
        self.weight1 = nn.Parameter((torch.rand(int(sum(sizes)), hidden) * 2 - 1) * bound1[segment].unsqueeze(1))
        self.bias1 = nn.Parameter((torch.rand(len(sizes), hidden) * 2 - 1) * bound1.unsqueeze(1))
        self.weight2 = nn.Parameter((torch.rand(len(sizes), hidden, out) * 2 - 1) / math.sqrt(hidden))
        self.bias2 = nn.Parameter((torch.rand(len(sizes), out) * 2 - 1) / math.sqrt(hidden))
        self.dropout1, self.dropout2 = nn.AlphaDropout(dropout), nn.AlphaDropout(dropout)

    def forward(self, groups: list[torch.Tensor]) -> torch.Tensor:
        """F vectors (s_f,) → (F, out)."""
        values = torch.cat([g.reshape(-1) for g in groups]).to(self.weight1.dtype)
        first = self.bias1.index_add(0, self.segment, values.unsqueeze(1) * self.weight1)
        hidden = self.dropout1(F.elu(first))
        return self.dropout2(F.elu(torch.bmm(hidden.unsqueeze(1), self.weight2).squeeze(1) + self.bias2))


# --------------------------------------------------------------------------------------------
# Hierarchies: regions from coordinates, processes from a two-level CSV
# --------------------------------------------------------------------------------------------

def grid_step(offsets: np.ndarray) -> int:
    """The patch grid step of one slide: GCD of its non-zero coordinate offsets (1 if there are none)."""
    values = np.unique(offsets[offsets > 0])
    return int(functools.reduce(math.gcd, values.tolist(), 0)) or 1


@dataclass(frozen=True)
class RegionGeometry:
    """How one slide was cut into regions: side in level-0 px, patch grid step, where the side came from."""

    slide: int
    side_level0: float  # region side, level-0 px
    grid_step: int  # patch grid step of the slide's coordinates, level-0 px
    source: str  # "magnification" (recorded), "region_size" (set) or "grid" (fallback_patch_px assumed)
    magnification: float  # level-0 magnification used (NaN for "region_size"/"grid")
    patches: int = 0  # rows of the slide in the bag

    @property
    def patches_per_side(self) -> float:
        return self.side_level0 / self.grid_step


def region_side(magnification: float, grid_step: int, *, region_px: int = REGION_PX,
                region_magnification: float = REGION_MAGNIFICATION, region_size: float | None = None,
                fallback_patch_px: int = FALLBACK_PATCH_PX) -> tuple[float, str]:
    """Region side in level-0 px of one slide and its source (see :class:`RegionGeometry`).

    ``region_px`` px at ``region_magnification`` is ``region_px × magnification / region_magnification``
    level-0 px (4096 px at 20x: 4096 on a 20x scan, 8192 on a 40x scan); ``region_size`` (level-0 px)
    overrides it; a slide whose magnification is unknown takes its grid step as ``fallback_patch_px``
    px at ``region_magnification``, i.e. ``region_px / fallback_patch_px`` grid steps."""
    if region_size:
        return float(region_size), "region_size"
    if math.isfinite(magnification) and magnification > 0:
        return region_px * magnification / region_magnification, "magnification"
    return grid_step * region_px / fallback_patch_px, "grid"


def region_groups(coords: torch.Tensor, slide_index: torch.Tensor | None = None,
                  magnification: torch.Tensor | None = None, **sizes) -> tuple[torch.Tensor, torch.Tensor,
                                                                               list[RegionGeometry]]:
    """Rows ordered by (slide, region row, region column, y, x), the region id of each ordered row,
    and each slide's :class:`RegionGeometry`.

    Regions are squares of :func:`region_side` level-0 px (``sizes``: its keyword arguments), anchored
    at the slide's smallest x and y; a patch belongs to the region holding the centre of its grid cell
    (top-left + half the grid step: the same as its top-left when the side is a whole number of grid
    steps, and no drift when it is not); regions of different slides are different regions.
    ``magnification`` (N,): each row's slide's level-0 magnification (NaN or absent: unknown).
    Returns (order, group, geometry): ``order`` a permutation of the N rows, ``group`` (N,) ids 0…R−1,
    non-decreasing."""
    if coords is None:
        raise ValueError("SurvMamba: the batch has no patch coordinates ('coords'); regions of 4096 px are built "
                         "from them (give the h5_files with coordinates beside the patch features)")
    xy = coords.detach().cpu().numpy()
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"SurvMamba: coords must be N×2 (x, y), got shape {tuple(coords.shape)}")
    if not np.isfinite(xy).all():
        raise ValueError("SurvMamba: patch coordinates contain missing (NaN) values")
    xy = np.rint(xy).astype(np.int64)
    slides = (np.zeros(len(xy), dtype=np.int64) if slide_index is None
              else slide_index.detach().cpu().numpy().astype(np.int64).reshape(-1))
    if len(slides) != len(xy):
        raise ValueError(f"SurvMamba: slide_index has {len(slides)} rows, coords {len(xy)}")
    magnifications = (np.full(len(xy), np.nan) if magnification is None
                      else magnification.detach().cpu().numpy().astype(np.float64).reshape(-1))
    if len(magnifications) != len(xy):
        raise ValueError(f"SurvMamba: slide_magnification has {len(magnifications)} rows, coords {len(xy)}")
    region = np.zeros_like(xy)
    geometry = []
    for slide in np.unique(slides):
        rows = slides == slide
        offsets = xy[rows] - xy[rows].min(axis=0)
        step = grid_step(offsets)
        values = np.unique(magnifications[rows][np.isfinite(magnifications[rows]) & (magnifications[rows] > 0)])
        if len(values) > 1:
            raise ValueError(f"SurvMamba: slide {int(slide)} of the patient has rows of different magnifications "
                             f"{values.tolist()}")
        level0 = float(values[0]) if len(values) else float("nan")
        side, source = region_side(level0, step, **sizes)
        region[rows] = np.floor((offsets + step / 2) / side).astype(np.int64)
        geometry.append(RegionGeometry(int(slide), side, step, source, level0 if source == "magnification"
                                       else float("nan"), int(rows.sum())))
    order = np.lexsort((xy[:, 0], xy[:, 1], region[:, 0], region[:, 1], slides))
    keys = np.stack([slides[order], region[order, 1], region[order, 0]], axis=1)
    new = np.ones(len(order), dtype=bool)
    new[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    group = np.cumsum(new) - 1
    device = coords.device
    return torch.from_numpy(order).to(device), torch.from_numpy(group).to(device), geometry


def raster_order(coords: torch.Tensor, slide_index: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ordered by (slide, y, x): the scan order without regions (Table 3's model A)."""
    if coords is None:
        region_groups(None)  # the clear error
    xy = coords.detach().cpu().numpy()
    slides = (np.zeros(len(xy)) if slide_index is None else slide_index.detach().cpu().numpy().reshape(-1))
    return torch.from_numpy(np.lexsort((xy[:, 0], xy[:, 1], slides))).to(coords.device)


def padded_layout(group: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows sorted by ``group`` (non-decreasing ids): (R, Lmax) row indices (``n_rows`` = padding) and lengths."""
    counts = torch.bincount(group)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(len(group), device=group.device) - starts[group]
    index = torch.full((len(counts), int(counts.max())), n_rows, dtype=torch.long, device=group.device)
    index[group, position] = torch.arange(len(group), device=group.device)
    return index, counts


def index_grouping(n_functions: int) -> list[int]:
    """Process id of each of ``n_functions`` functions: ceil(sqrt(F)) consecutive runs of near-equal size."""
    if n_functions == 0:
        return []
    n_processes = math.isqrt(n_functions - 1) + 1
    return [int(i) for i, chunk in enumerate(np.array_split(np.arange(n_functions), n_processes)) for _ in chunk]


def read_hierarchy(path: str | os.PathLike) -> dict[str, str]:
    """Function → process from a two-level CSV with columns ``process,function`` (file order kept)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"process", "function"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a hierarchy CSV needs the columns 'process' and 'function'")
        mapping: dict[str, str] = {}
        for row in reader:
            function, process = (row["function"] or "").strip(), (row["process"] or "").strip()
            if function and process:
                if mapping.get(function, process) != process:
                    raise ValueError(f"{path}: function {function!r} is listed under two processes")
                mapping[function] = process
    if not mapping:
        raise ValueError(f"{path}: the hierarchy lists no function")
    return mapping


def function_processes(group_names: list[str], n_functions: int, hierarchy: str) -> list[int]:
    """Process id of each function (group order), by the hierarchy (``default``, a CSV path or ``index``)."""
    names = list(group_names or [])
    if hierarchy == "index" or not names:
        return index_grouping(n_functions)
    if len(names) != n_functions:
        raise ValueError(f"SurvMamba: {len(names)} group names for {n_functions} genomic groups")
    user_file = hierarchy != "default"
    mapping = read_hierarchy(hierarchy if user_file else DEFAULT_HIERARCHY)
    missing = [name for name in names if name not in mapping]
    if missing and user_file:
        raise ValueError(f"SurvMamba: hierarchy {hierarchy} does not list {len(missing)} of the {n_functions} "
                         f"functions (e.g. {missing[0]!r})")
    process_ids: dict[str, int] = {}
    for process in mapping.values():  # file order
        process_ids.setdefault(process, len(process_ids))
    listed = sorted({process_ids[mapping[name]] for name in names if name in mapping})
    renumber = {old: new for new, old in enumerate(listed)}
    result = [renumber[process_ids[mapping[name]]] if name in mapping else -1 for name in names]
    if missing:
        log.info("SurvMamba: %d of %d functions are not in the default hierarchy; grouped by index",
                 len(missing), n_functions)
        extra = iter(index_grouping(len(missing)))
        result = [value if value >= 0 else len(listed) + next(extra) for value in result]
    return result


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

def masked_mean(padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(R, L, D) right-padded with zeros → (R, D) mean over each row's real tokens."""
    return padded.sum(dim=1) / lengths.unsqueeze(1).to(padded.dtype)


@register_model("survmamba", display="SurvMamba", citation="Chen et al., arXiv:2404.08027, 2024")
class SurvMamba(SurvivalModel):
    """Hierarchical (patch→region, function→process) bidirectional Mamba with multi-grained Mamba fusion."""

    inputs = ("path", "coords", "slide_index", "slide_magnification", "omic_groups:pathways")
    defaults = {"data": {"groups": "pathways"},
                "training": {"optimizer": "radam", "lr": 2e-4, "weight_decay": 5e-3, "batch_size": 1,
                             "grad_accum": 1}}

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4,
                 group_names: list[str] | None = None, dim: int = 512, d_state: int = 16, expand: int = 2,
                 d_conv: int = 4, dt_rank: int | None = None, dropout: float = 0.25, bidirectional: bool = True,
                 him: str = "multi", ifm: str = "both", region_px: int = 4096, region_magnification: float = 20.0,
                 region_size: float | None = None, fallback_patch_px: int = 256, hierarchy: str = "default",
                 checkpoint_tokens: int = 4096, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, group_names=group_names, **sizes)
        if not group_sizes:
            raise ValueError("SurvMamba needs at least one genomic group (function)")
        if him not in HIM_MODES:
            raise ValueError(f"SurvMamba: him must be one of {', '.join(HIM_MODES)}, got {him!r}")
        if ifm not in IFM_MODES:
            raise ValueError(f"SurvMamba: ifm must be one of {', '.join(IFM_MODES)}, got {ifm!r}")
        levels = ("fine", "coarse") if him == "multi" else ("fine",)
        if ifm in ("coarse", "both") and him != "multi":
            raise ValueError(f"SurvMamba: ifm {ifm!r} fuses the coarse level, which only him 'multi' has (him {him!r})")
        if region_px <= 0 or region_magnification <= 0 or fallback_patch_px <= 0 or (region_size is not None
                                                                                      and region_size <= 0):
            raise ValueError("SurvMamba: region_px, region_magnification, fallback_patch_px and region_size "
                             "must be positive")
        self.him, self.ifm = him, ifm
        self.region_sizes = dict(region_px=region_px, region_magnification=region_magnification,
                                 region_size=region_size, fallback_patch_px=fallback_patch_px)
        self.regions_seen: dict[tuple, int] = {}  # (side, grid step, source, magnification) → slides seen
        self.checkpoint_tokens = checkpoint_tokens
        if him == "none":  # model A: no processes, the functions in group order form one sequence
            processes = [0] * len(group_sizes)
        else:
            processes = function_processes(self.group_names, len(group_sizes), hierarchy)
        order = sorted(range(len(processes)), key=lambda f: (processes[f], f))
        self.register_buffer("function_order", torch.tensor(order, dtype=torch.long), persistent=False)
        process_sorted = torch.tensor([processes[f] for f in order], dtype=torch.long)
        process_index, process_lengths = padded_layout(process_sorted, len(order))
        self.register_buffer("process_index", process_index, persistent=False)
        self.register_buffer("process_lengths", process_lengths, persistent=False)
        self.n_processes = len(process_lengths)

        mamba = dict(d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank)
        self.path_fc = nn.Linear(path_dim, dim)
        self.omic_encoder = GroupedFFN(group_sizes, dim, dim, dropout)
        self.dropout = nn.Dropout(dropout)
        for modality in ("path", "omic"):  # (creation order: the weights a seed gives stay those of earlier versions)
            setattr(self, f"{modality}_fine", BiMamba(dim, bidirectional=bidirectional, **mamba))
            if him == "multi":
                setattr(self, f"{modality}_coarse", BiMamba(dim, bidirectional=bidirectional, **mamba))
        fused_by_ifm = {"none": (), "fine": ("fine",), "coarse": ("coarse",), "both": ("fine", "coarse")}[ifm]
        self.fusion = nn.ModuleDict({level: InteractionFusionMamba(dim, **mamba) if level in fused_by_ifm
                                     else nn.Linear(2 * dim, dim) for level in levels})
        self.alpha_logit = nn.Parameter(torch.zeros(())) if him == "multi" else None
        self.classifier = nn.Linear(dim, n_bins)

    def _remat(self, tokens: int) -> bool:
        """Recompute this part in the backward pass instead of storing it (long sequences while training)."""
        return torch.is_grad_enabled() and 0 < self.checkpoint_tokens < tokens

    def _levels(self, tokens: torch.Tensor, index: torch.Tensor, lengths: torch.Tensor, fine: BiMamba,
                coarse: BiMamba | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Grouped tokens (n, D) → fine tokens (n, D) and coarse group tokens (R, D) (None without ``coarse``)."""
        padded = torch.cat([tokens, tokens.new_zeros(1, tokens.shape[1])])[index]  # (R, Lmax, D)
        valid = index < tokens.shape[0]
        per_call = max(1, self.checkpoint_tokens // padded.shape[1])
        if self._remat(padded.shape[0] * padded.shape[1]):  # groups are independent: recompute per slice
            padded = torch.cat([checkpoint(fine, padded[i:i + per_call], lengths[i:i + per_call], use_reentrant=False)
                                for i in range(0, padded.shape[0], per_call)])
        else:
            padded = fine(padded, lengths)
        padded = padded * valid.unsqueeze(-1)
        tokens = padded[valid]  # row-major over (R, Lmax) keeps the grouped order
        if coarse is None:
            return tokens, None
        return tokens, coarse(masked_mean(padded, lengths).unsqueeze(0))[0]

    def _note_regions(self, geometry: list[RegionGeometry]) -> None:
        """Log each new region geometry once (the fold's log says which regions were used); one-patch
        slides (e.g. the zero row of a patient without features) have no grid and are left out."""
        px, at = self.region_sizes["region_px"], self.region_sizes["region_magnification"]
        for g in geometry:
            if g.patches < 2:
                continue
            known = not math.isnan(g.magnification)
            key = (round(g.side_level0, 3), g.grid_step, g.source, g.magnification if known else None)
            if key not in self.regions_seen:
                how = {"magnification": f"{px} px at {at:g}x on a {g.magnification:g}x scan",
                       "region_size": "region_size set",
                       "grid": f"magnification not recorded: grid step taken as "
                               f"{self.region_sizes['fallback_patch_px']} px at {at:g}x"}[g.source]
                per_side = g.patches_per_side
                (log.warning if g.source == "grid" else log.info)(
                    "SurvMamba: regions of %g level-0 px (%s), patch grid step %d level-0 px: %.4g x %.4g = %.4g "
                    "patches per full region", g.side_level0, how, g.grid_step, per_side, per_side, per_side ** 2)
            self.regions_seen[key] = self.regions_seen.get(key, 0) + 1

    def region_report(self) -> list[dict]:
        """The region geometries met so far (side and grid step in level-0 px, patches per side, source, slides)."""
        return [{"region_level0_px": side, "grid_step_level0_px": step, "patches_per_side": side / step,
                 "patches_per_region": (side / step) ** 2, "source": source,
                 "magnification": magnification, "slides": count}
                for (side, step, source, magnification), count in self.regions_seen.items()]

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "SurvMamba")
        if batch.get("coords") is None:
            region_groups(None)  # the clear error
        coords = batch.one("coords", "SurvMamba")
        slide_index = batch.one("slide_index", "SurvMamba") if batch.get("slide_index") is not None else None
        magnification = (batch.one("slide_magnification", "SurvMamba")
                         if batch.get("slide_magnification") is not None else None)
        groups = batch.one_groups("SurvMamba", len(self.group_sizes))
        if coords.shape[0] != path.shape[0]:
            raise ValueError(f"SurvMamba: {coords.shape[0]} coordinates for {path.shape[0]} patches")
        if self.him == "none":  # model A: the whole bag is one sequence
            order = raster_order(coords, slide_index)
            region = torch.zeros(len(order), dtype=torch.long, device=coords.device)
        else:
            order, region, geometry = region_groups(coords, slide_index, magnification, **self.region_sizes)
            self._note_regions(geometry)
        region_index, region_lengths = padded_layout(region, len(order))

        h_path = self.dropout(self.path_fc(path[order]))  # patches in scan order
        h_omic = self.dropout(self.omic_encoder(groups))[self.function_order]  # functions in process order
        coarse = self.him == "multi"
        fine_p, coarse_p = self._levels(h_path, region_index, region_lengths, self.path_fine,
                                        self.path_coarse if coarse else None)
        fine_g, coarse_g = self._levels(h_omic, self.process_index, self.process_lengths, self.omic_fine,
                                        self.omic_coarse if coarse else None)
        fused = {}
        for level, (p, g) in {"fine": (fine_p, fine_g), "coarse": (coarse_p, coarse_g)}.items():
            if level not in self.fusion:
                continue
            if isinstance(self.fusion[level], InteractionFusionMamba):
                block = min(IFM_BLOCK, self.checkpoint_tokens) if self._remat(p.shape[0]) else None
                fused[level] = self.fusion[level](p.unsqueeze(0), g.unsqueeze(0), block=block)
            else:  # without IFM: the two modalities' mean-pooled tokens concatenated
                fused[level] = self.fusion[level](torch.cat([p.mean(0), g.mean(0)]).unsqueeze(0))
        if self.alpha_logit is not None:
            alpha = torch.sigmoid(self.alpha_logit)
            h = alpha * fused["fine"] + (1 - alpha) * fused["coarse"]
        else:
            h = fused["fine"]
        return ModelOutput(logits=self.classifier(h))
