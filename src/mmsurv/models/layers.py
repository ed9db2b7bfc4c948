"""Building blocks several models share (as ``torchvision.ops``); not a model module.

For model authors. Sections: initialisation (:func:`xavier_init`, :func:`lecun_normal_init`);
MCAT's SNN blocks; routing measures (:func:`choice_shares`); attention MIL pooling (gated attention, MCAT's readout and transformer);
Nyström attention (:func:`nystrom_attention`, the one pre-norm :class:`NystromBlock`, TransMIL's
:class:`PPEG` and the class-token encoder of TransMIL, CMTA and HDMoE); micro-batches (MOTCat's
trainer, reused by MoME and MMM). The registry does not scan this module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmsurv.models.base import ModelOutput
from mmsurv.models.survival import discrete_survival, mcat_risk

LOGIT_CLAMP = 1e-7
BOUNDED_TOKENS = 8192  # from here on, patch scoring evaluates Nyström attention in bounded memory


# ---------------------------------------------------------------------------- initialisation

def xavier_init(module: nn.Module) -> None:
    """Xavier-normal ``nn.Linear`` weights, zero biases; LayerNorm weight 1, bias 0. CMTA's
    ``initialize_weights`` (HDMoE's network.py applies the same function) and PORPOISE's (which
    touches Linear layers only: the same result, LayerNorm's defaults being 1 and 0). (MoME's code
    never calls its copy of it, utils/utils.py, for the MoME model: MoME keeps PyTorch's default
    initialisation.)"""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.LayerNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def lecun_normal_init(module: nn.Module) -> None:
    """Every ``nn.Linear`` (exactly that type): weight ~ N(0, 1/fan_in), bias 0 (MCAT's ``init_max_weights``)."""
    for layer in module.modules():
        if type(layer) is nn.Linear:
            nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.weight.size(1)) if layer.weight.size(1) else 1.0)
            nn.init.zeros_(layer.bias)


# ---------------------------------------------------------------------------- SNN blocks (MCAT)

SNN_ACTIVATIONS = {"elu": nn.ELU, "selu": nn.SELU}


def snn_block(in_dim: int, out_dim: int, dropout: float = 0.25, activation: str = "elu") -> nn.Sequential:
    """``Linear → ELU (or SELU) → AlphaDropout``: MCAT's ``SNN_Block``."""
    if activation not in SNN_ACTIVATIONS:
        raise ValueError(f"SNN activation must be one of {', '.join(SNN_ACTIVATIONS)}, got {activation!r}")
    return nn.Sequential(nn.Linear(in_dim, out_dim), SNN_ACTIVATIONS[activation](), nn.AlphaDropout(p=dropout))


def snn_encoder(in_dim: int, hidden, dropout: float = 0.25, activation: str = "elu") -> nn.Sequential:
    """SNN blocks ``in_dim → hidden[0] → … → hidden[-1]``."""
    dims = [in_dim, *hidden]
    return nn.Sequential(*(snn_block(a, b, dropout, activation) for a, b in zip(dims[:-1], dims[1:])))


# ---------------------------------------------------------------------------- attention pooling

class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018, eq. 9): w^T (tanh(V h) ⊙ sigmoid(U h)), one per row."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float, n_outputs: int = 1):
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Dropout(dropout))
        self.sigmoid_branch = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(hidden_dim, n_outputs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """N×in_dim → N×n_outputs unnormalised scores."""
        return self.score(self.tanh_branch(h) * self.sigmoid_branch(h))


def attention_pool(scores: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the N rows of ``scores`` (N×1) and the weighted sum of ``h`` (N×D) → (1×D, 1×N)."""
    weights = torch.softmax(scores.transpose(0, 1), dim=1)
    return weights @ h, weights


class AttentionReadout(nn.Module):
    """Gated attention pooling of a token set followed by MCAT's ``rho`` layer."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.attention = GatedAttention(dim, dim, dropout)
        self.rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, weights = attention_pool(self.attention(tokens), tokens)
        return self.rho(pooled), weights


def transformer(embed_dim: int, n_heads: int, ff_dim: int, dropout: float, n_layers: int) -> nn.TransformerEncoder:
    """MCAT's token transformer: ``n_layers`` post-norm ``TransformerEncoderLayer``s (ReLU, batch first)."""
    layer = nn.TransformerEncoderLayer(d_model=embed_dim, nhead=n_heads, dim_feedforward=ff_dim, dropout=dropout,
                                       activation="relu", batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)


# ---------------------------------------------------------------------------- routing measures
def choice_shares(choices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Each expert's share of hard routing ``choices`` (integer expert indices, any shape): E values
    summing to 1, float64, for ``ModelOutput.measures`` (``route/<modality>/layer<l>``)."""
    counts = torch.bincount(choices.reshape(-1).to(torch.int64), minlength=n_experts).to(torch.float64)
    return counts / counts.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------- Nyström attention
RESIDUAL_AS_PRODUCT_TOKENS = 64  # up to here, the value convolution runs as one banded matrix product


class NystromAttention(nn.Module):
    """Nyström attention (Xiong et al. 2021) as the ``nystrom_attention`` package (0.0.14, the layer
    TransMIL, CMTA, HDMoE and MoME import) computes it, without the package's per-call overhead.

    The same parameters under the same names (``to_qkv``, ``to_out.0``, ``res_conv``: state dicts
    load either way) and the same arithmetic: the sequence zero-padded at the front to a multiple of
    the landmarks, landmarks as segment means of the scaled queries and of the keys, the three
    softmax kernels, the Moore–Penrose pseudo-inverse by ``pinv_iterations`` Newton iterations
    (:func:`iterative_pinv`), the depth-wise ``residual_conv_kernel`` × 1 convolution of the values
    per head, and ``to_out`` (Linear, Dropout). For whom: every model with Nyström layers; on the
    short sequences of small bags most of a step is the package's call overhead (einops
    rearrangements of 4-D tensors, ``torch.eye`` rebuilt in every call, a depth-wise convolution
    on a handful of tokens), not arithmetic.

    What differs is the execution only: heads are folded into the batch so that every product is one
    3-D ``bmm``; the identity multiples of the pseudo-inverse are built once per size; a landmark
    that is one token (``num_landmarks`` = the sequence length) is that token, not a sum over one;
    and up to :data:`RESIDUAL_AS_PRODUCT_TOKENS` tokens the value convolution is the equivalent
    banded matrix product. Outputs equal the package's up to float rounding (tested, forward and
    gradients); one CPU thread, forward + backward of one 256-d layer: 2.4 → 1.4 ms at 7 tokens,
    3.1 → 1.9 ms at 26, the same at 4,096. Masks (unused by these models) are not supported.
    """

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, num_landmarks: int = 256,
                 pinv_iterations: int = 6, residual: bool = True, residual_conv_kernel: int = 33,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.num_landmarks, self.pinv_iterations = heads, num_landmarks, pinv_iterations
        self.scale = dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.residual = residual
        if residual:
            self.res_conv = nn.Conv2d(heads, heads, (residual_conv_kernel, 1), padding=(residual_conv_kernel // 2, 0),
                                      groups=heads, bias=False)

    def forward(self, x: torch.Tensor, return_attn_matrices: bool = False):
        """``x``: B×N×dim → B×N×dim; with ``return_attn_matrices`` also the package's three factors
        (B×H×T×m, B×H×m×m pseudo-inverse, B×H×m×T; T the padded length)."""
        b, n, _ = x.shape
        heads, m = self.heads, self.num_landmarks
        pad = (m - n % m) % m
        if pad:
            x = nn.functional.pad(x, (0, 0, pad, 0))
        t = n + pad
        q, k, v = self.to_qkv(x).view(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4).reshape(3, b * heads, t, -1).unbind(0)
        q = q * self.scale
        per = t // m
        if per == 1:
            q_landmarks, k_landmarks = q, k
        else:
            q_landmarks = q.reshape(b * heads, m, per, -1).sum(2) / per
            k_landmarks = k.reshape(b * heads, m, per, -1).sum(2) / per
        k_landmarks_t = k_landmarks.transpose(1, 2)
        attn1 = torch.bmm(q, k_landmarks_t).softmax(dim=-1)
        attn2_inv = iterative_pinv(torch.bmm(q_landmarks, k_landmarks_t).softmax(dim=-1), self.pinv_iterations)
        attn3 = torch.bmm(q_landmarks, k.transpose(1, 2)).softmax(dim=-1)
        out = torch.bmm(torch.bmm(attn1, attn2_inv), torch.bmm(attn3, v))
        if self.residual:
            out = out + self._value_convolution(v, b)
        out = self.to_out(out.view(b, heads, t, -1).transpose(1, 2).reshape(b, t, -1))[:, -n:]
        if return_attn_matrices:
            return out, tuple(a.view(b, heads, *a.shape[1:]) for a in (attn1, attn2_inv, attn3))
        return out

    def _value_convolution(self, v: torch.Tensor, batch: int) -> torch.Tensor:
        """``res_conv`` of the values (B·H×T×dh): a T×T banded product per head on short sequences."""
        t = v.shape[1]
        if t > RESIDUAL_AS_PRODUCT_TOKENS:
            return self.res_conv(v.view(batch, self.heads, t, -1)).view(v.shape)
        rows, valid = _band_index(t, self.res_conv.kernel_size[0], v.device)
        band = self.res_conv.weight.reshape(self.heads, -1)[:, rows] * valid  # H×T×T
        return torch.bmm(band.repeat(batch, 1, 1), v)


@functools.cache
@torch.inference_mode(False)  # cached for later autograd use, even when first built under inference mode
def _band_index(tokens: int, kernel: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel tap of output token i from input token j (clamped) and whether it lies in the kernel."""
    position = torch.arange(tokens, device=device)
    tap = position[None, :] - position[:, None] + kernel // 2
    return tap.clamp(0, kernel - 1), (tap >= 0) & (tap < kernel)


@functools.cache
@torch.inference_mode(False)
def _identity_multiples(size: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    identity = torch.eye(size, dtype=dtype, device=device)
    return 7 * identity, 15 * identity, 13 * identity


def iterative_pinv(x: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """The Moore–Penrose pseudo-inverse of each matrix of ``x`` (…×m×m) by the package's iteration
    (Razavi et al. 2014): z₀ = xᵀ / (max row sum · max column sum of |x|, over the whole batch),
    z ← ¼ z (13I − xz(15I − xz(7I − xz)))."""
    shape = x.shape
    x = x.reshape(-1, shape[-2], shape[-1])
    magnitude = x.abs()
    z = x.transpose(1, 2) / (magnitude.sum(dim=-1).max() * magnitude.sum(dim=-2).max())
    seven, fifteen, thirteen = _identity_multiples(shape[-1], x.dtype, x.device)
    for _ in range(iterations):
        xz = torch.bmm(x, z)
        z = torch.bmm(0.25 * z, thirteen - torch.bmm(xz, fifteen - torch.bmm(xz, seven - xz)))
    return z.reshape(shape[:-2] + z.shape[-2:])


def nystrom_attention(dim: int, heads: int = 8, landmarks: int | None = None, pinv_iterations: int = 6,
                      dropout: float = 0.1, adaptive: bool = False) -> nn.Module:
    """:class:`NystromAttention` as TransMIL, CMTA, HDMoE and MoME build the package's layer:
    ``dim // heads`` per head, ``dim // 2`` landmarks unless given, 6 Moore–Penrose iterations, value
    residual convolution. By default (``adaptive=False``) it computes what the package does.

    **Adaptive landmarks** (our improvement, an option, OFF by default: ``adaptive=True`` here, or
    :func:`use_adaptive_landmarks` / a model's ``adaptive_landmarks=True``). The package pads a
    sequence at the front with zero tokens to a multiple of its landmarks, unmasked, and always
    inverts a heads × landmarks × landmarks kernel. For a sequence shorter than the landmarks — a
    7-token genomic sequence, a demo bag of ~24 patches — that pads it to 128 or 256 tokens, lets the
    zero rows dilute the attention, and costs the same ~6 GFLOP of pseudo-inverse products per layer
    whatever the sequence (one CPU thread, forward + backward at 24 patches, off → on: CMTA 384 → 63
    ms, HDMoE 178 → 32, MoME 1,389 → 50, TransMIL 543 → 14; ``bench/step_cost.py``). Adaptive, a
    layer uses ``min(landmarks, tokens)`` landmarks: a short sequence is its own landmark set (one
    token per landmark, no padding: full softmax attention up to the iterative pseudo-inverse's
    error, ~1e-2 after 6 iterations, ~1e-6 after 20; tested). It changes the output of every short
    sequence. Sequences of at least ``landmarks`` tokens are computed exactly as the package
    does. No parameter depends on it."""
    attention = NystromAttention(dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=landmarks or dim // 2,
                                 pinv_iterations=pinv_iterations, residual=True, dropout=dropout)
    attention.max_landmarks = attention.num_landmarks
    attention.adaptive_landmarks = adaptive
    attention.register_forward_pre_hook(_fit_landmarks)
    return attention


def _fit_landmarks(module: nn.Module, args: tuple) -> None:
    # NystromAttention reads num_landmarks at call time; args[0] is the B×N×dim input.
    tokens = args[0].shape[1]
    module.num_landmarks = min(module.max_landmarks, tokens) if module.adaptive_landmarks else module.max_landmarks


def use_adaptive_landmarks(model: nn.Module, adaptive: bool) -> None:
    """Switch adaptive landmarks on or off in every :func:`nystrom_attention` layer of ``model``."""
    for module in model.modules():
        if hasattr(module, "max_landmarks"):
            module.adaptive_landmarks = adaptive


class NystromBlock(nn.Module):
    """The pre-norm Nyström block: ``x·ω + NystromAttention(norm(x))``, no feed-forward.

    TransMIL's ``TransLayer`` (ω = 1, LayerNorm; CMTA and HDMoE reuse it) and MoME's (``norm="rms"``
    or ``"layer"`` and ``residual_scale`` ω = Admin's constant, kept as the buffer ``omega``). From
    ``checkpoint_tokens`` tokens on (0: never) the attention is recomputed in the backward pass
    instead of keeping its maps (``torch.utils.checkpoint``: same values and gradients, dropout
    replayed). Checkpoints written when TransMIL named the attention ``attention`` still load."""

    def __init__(self, dim: int, heads: int = 8, landmarks: int | None = None, pinv_iterations: int = 6,
                 dropout: float = 0.1, *, adaptive: bool = False, checkpoint_tokens: int = 0, norm: str = "layer",
                 residual_scale: float | None = None):
        super().__init__()
        if norm not in ("layer", "rms"):
            raise ValueError(f"NystromBlock: norm must be 'layer' or 'rms', got {norm!r}")
        self.norm = nn.LayerNorm(dim) if norm == "layer" else nn.RMSNorm(dim, eps=1e-6)
        self.attn = nystrom_attention(dim, heads=heads, landmarks=landmarks, pinv_iterations=pinv_iterations,
                                      dropout=dropout, adaptive=adaptive)
        self.register_buffer("omega", None if residual_scale is None else torch.tensor([float(residual_scale)]))
        self.checkpoint_tokens = checkpoint_tokens
        self._register_load_state_dict_pre_hook(_rename_legacy_attention)

    def forward(self, x: torch.Tensor, cls_row: list | None = None, bounded: bool = False) -> torch.Tensor:
        """``cls_row`` (a list): receives row 0 of the attention matrix (:func:`nystrom_class_row`),
        taken from the same attention call (its output is the one returned either way). ``bounded``
        (without gradients, from :data:`BOUNDED_TOKENS` tokens on): the attention in bounded memory
        (:func:`nystrom_attention_bounded`, equal up to rounding), for heatmaps of large bags."""
        residual = x if self.omega is None else x * self.omega
        if bounded and not torch.is_grad_enabled() and x.shape[1] >= BOUNDED_TOKENS:
            out, row = nystrom_attention_bounded(self.attn, self.norm(x))
            if cls_row is not None:
                cls_row.append(row)
            return residual + out
        if cls_row is not None:
            out, matrices = self.attn(self.norm(x), return_attn_matrices=True)
            cls_row.append(nystrom_class_row(matrices, x.shape[1]))
            return residual + out
        if self.checkpoint_tokens and x.shape[1] >= self.checkpoint_tokens and torch.is_grad_enabled() and x.requires_grad:
            return residual + checkpoint(self._attend, x, use_reentrant=False)
        return residual + self._attend(x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm(x))


def _rename_legacy_attention(state_dict: dict, prefix: str, *args: Any) -> None:
    """TransMIL's ``TransLayer`` named its attention ``attention`` (before the one shared block)."""
    for key in [k for k in state_dict if k.startswith(prefix + "attention.")]:
        state_dict[prefix + "attn." + key[len(prefix + "attention."):]] = state_dict.pop(key)


class PPEG(nn.Module):
    """TransMIL's pyramid position encoding: the identity plus depth-wise 7×7, 5×5 and 3×3
    convolutions over the square token grid; the class token (first) passes through unchanged."""

    def __init__(self, dim: int, kernels: tuple[int, ...] = (7, 5, 3)):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) for k in kernels)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """``x``: B×(1 + side²)×C with the class token first."""
        cls_token, tokens = x[:, :1], x[:, 1:]
        b, n, c = tokens.shape
        if n != side * side:
            raise ValueError(f"PPEG: {n} tokens do not fill a {side}×{side} grid")
        grid = tokens.transpose(1, 2).reshape(b, c, side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)


def pad_to_square(tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """B×N×C → B×side²×C (side = ⌈√N⌉) by appending tokens 0, 1, … of the bag (cyclically), as TransMIL."""
    n = tokens.shape[1]
    side = max(1, math.ceil(math.sqrt(n)))
    extra = side * side - n
    if extra:
        index = torch.arange(extra, device=tokens.device) % n
        tokens = torch.cat([tokens, tokens[:, index]], dim=1)
    return tokens, side


def encode_with_class_token(tokens: torch.Tensor, cls_token: torch.Tensor, first: nn.Module, second: nn.Module,
                            norm: nn.Module, ppeg: PPEG | None = None, *, cls_row: list | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """TransMIL's encoder: class token + ``first`` block (+ PPEG over the square-padded token grid)
    + ``second`` block + ``norm`` → (class token B×dim, token outputs). ``tokens``: B×N×dim.

    ``cls_row`` (a list): receives the class token's attention over the N input tokens in ``second``
    (a :class:`NystromBlock`; :func:`nystrom_class_row`, B×N), for patch scores, from the same
    attention call; the outputs are the same with and without it below :data:`BOUNDED_TOKENS`
    tokens, and equal up to rounding above (both blocks then run in bounded memory)."""
    n, side = tokens.shape[1], 0
    if ppeg is not None:
        tokens, side = pad_to_square(tokens)
    h = torch.cat([cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1), tokens], dim=1)
    del tokens  # (a 50,000-patch bag: 100 MB less while the blocks run)
    h = first(h, bounded=cls_row is not None) if cls_row is not None else first(h)
    if ppeg is not None:
        h = ppeg(h, side)
    if cls_row is not None:
        h = second(h, cls_row=cls_row, bounded=True)
        cls_row[-1] = cls_row[-1][:, 1:1 + n]
        h = norm(h)
    else:
        h = norm(second(h))
    return h[:, 0], h[:, 1:]


@torch.no_grad()
def nystrom_attention_bounded(attention: nn.Module, x: torch.Tensor, chunk: int = 4096
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """A :class:`NystromAttention` layer's output for ``x`` (B×T×dim; evaluation, no gradients) in bounded
    memory, and the class token's row of its attention matrix (B×T, head mean). The same
    computation as the layer's forward — front zero padding to a multiple of the landmarks,
    landmark means, the iterative pseudo-inverse, the value convolution — with the two B×H×T×m
    maps never formed whole: the keys' softmax of each landmark is taken in two passes over
    ``chunk`` keys, and the output as attn1 · (pinv · (attn3 · V)) over ``chunk`` queries at a
    time. The reassociation and the chunked softmax change the rounding only (tested against the
    package's output); a 50,000-token layer then holds ~1 GB less. For heatmaps of large bags."""
    b, n, _ = x.shape
    heads, m = attention.heads, attention.num_landmarks
    pad = (m - n % m) % m
    t = n + pad
    # the zero rows the package pads in front project to zero (to_qkv has no bias): write the
    # projection of the real rows behind them instead of projecting a padded copy of x
    qkv = x.new_zeros(b, t, attention.to_qkv.out_features)
    for row in range(b):
        torch.matmul(x[row], attention.to_qkv.weight.t(), out=qkv[row, pad:])
    q, k, v = (part.reshape(b, t, heads, -1).transpose(1, 2) for part in qkv.chunk(3, dim=-1))
    q = q.mul_(attention.scale)  # in place in qkv: q is not needed unscaled
    per = t // m
    q_landmarks = q.reshape(b, heads, m, per, -1).sum(3) / per
    k_landmarks = k.reshape(b, heads, m, per, -1).sum(3) / per
    attn2_inv = iterative_pinv(torch.softmax(q_landmarks @ k_landmarks.transpose(-1, -2), dim=-1),
                                        attention.pinv_iterations)
    spans = [slice(start, min(t, start + chunk)) for start in range(0, t, chunk)]

    def landmark_scores(span: slice, keys: torch.Tensor) -> torch.Tensor:  # q_landmarks · kᵀ of a key chunk
        return q_landmarks @ keys[:, :, span].transpose(-1, -2)

    # attn3 = softmax over all keys of q_landmarks · kᵀ, in two passes: the maxima, then the sums
    peak = torch.full((b, heads, m, 1), float("-inf"), dtype=q.dtype, device=q.device)
    for span in spans:
        peak = torch.maximum(peak, landmark_scores(span, k).amax(-1, keepdim=True))
    total = torch.zeros_like(peak)
    weighted = torch.zeros(b, heads, m, v.shape[-1], dtype=v.dtype, device=v.device)
    for span in spans:
        exponent = torch.exp(landmark_scores(span, k) - peak)
        total += exponent.sum(-1, keepdim=True)
        weighted += exponent @ v[:, :, span]
    mixed = attn2_inv @ (weighted / total)  # pinv(attn2) · (attn3 · V), B×H×m×dh
    cls_mix = torch.softmax(q[:, :, pad:pad + 1] @ k_landmarks.transpose(-1, -2), dim=-1) @ attn2_inv  # B×H×1×m
    row = torch.empty(b, heads, t, dtype=q.dtype, device=q.device)
    out = torch.empty_like(v)
    for span in spans:
        row[:, :, span] = (cls_mix @ (torch.exp(landmark_scores(span, k) - peak) / total)).squeeze(2)
        out[:, :, span] = torch.softmax(q[:, :, span] @ k_landmarks.transpose(-1, -2), dim=-1) @ mixed
    if attention.residual:
        out += attention.res_conv(v)
    del q, k, v, qkv  # the B×T×3·dim projections are not needed for the output projection
    out = attention.to_out(out.transpose(1, 2).reshape(b, t, -1))
    return out[:, -n:], row[:, :, pad:].mean(dim=1)


@torch.no_grad()
def nystrom_class_row(matrices: tuple[torch.Tensor, torch.Tensor, torch.Tensor], tokens: int) -> torch.Tensor:
    """Row 0 (the class token's) of a :func:`nystrom_attention` layer's approximate attention matrix
    over its ``tokens`` inputs, mean over heads: B×T. ``matrices``: the package's three factors
    (``return_attn_matrices``; its own padding at the front included), which give the row as
    attn1[cls] · pinv(attn2) · attn3 without forming the T×T matrix."""
    attn1, attn2_inv, attn3 = matrices
    padding = attn1.shape[-2] - tokens
    row = (attn1[:, :, padding:padding + 1] @ attn2_inv @ attn3)[:, :, 0, padding:]  # B×H×T
    return row.mean(dim=1)


class ClassTokenEncoder(nn.Module):
    """CMTA's and HDMoE's token encoder (:func:`encode_with_class_token` with a class token drawn
    N(0, 1e-6²)): PPEG for a patch bag (``positional``), none for genomic tokens."""

    def __init__(self, dim: int, positional: bool):
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        self.layer1 = NystromBlock(dim)
        self.positional = PPEG(dim) if positional else None
        self.layer2 = NystromBlock(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens``: B×N×dim → class token B×dim and the token outputs."""
        return encode_with_class_token(tokens, self.cls_token, self.layer1, self.layer2, self.norm, self.positional)


# ---------------------------------------------------------------------------- micro-batches

# The training and validation loops of MOTCat's trainer/mb_trainer.py, which MoME's
# and MMM's releases reuse (``split_chunk_list``): a bag is shuffled and split into
# ``N // size + 1`` near-equal chunks, the whole model runs on each chunk with the same genomic input,
# the loss is the mean of the chunks' losses and the risk the mean of the chunks' −Σ_k S_k.

def micro_batches(n: int, size: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Row indices of a shuffle of ``n`` rows split into ``n // size + 1`` near-equal chunks, the larger
    ones first (``np.array_split`` of the references' ``split_chunk_list``); empty chunks are dropped.

    The shuffle draws from ``generator``, or from torch's global generator (seeded by the run) when None."""
    if size < 1:
        raise ValueError(f"micro-batch size must be at least 1, got {size}")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.randperm(n)
    return [chunk.to(device) for chunk in torch.tensor_split(order, n // size + 1) if chunk.numel()]


def chunk_generator(training: bool, eval_seed: int) -> torch.Generator | None:
    """None in training (the global generator); in evaluation a generator seeded with ``eval_seed``, so a
    model gives the same risk for the same bag (the references reshuffle at every validation)."""
    return None if training else torch.Generator().manual_seed(eval_seed)


def run_micro_batches(chunk_forward: Callable[..., Any], path: torch.Tensor, size: int | None,
                      generator: torch.Generator | None, *args: Any, recompute: bool = False,
                      ) -> tuple[list[torch.Tensor], list[Any]]:
    """``chunk_forward(rows of path, *args)`` on every micro-batch: (the chunks' row indices, their results).
    ``size=None``: one chunk, the whole bag in its order (no shuffle).

    ``recompute`` (with more than one chunk, gradients on) checkpoints each chunk: recomputed in the
    backward pass with the same random state, so the gradients are the same and memory holds one chunk."""
    if size is None:
        return [torch.arange(path.shape[0], device=path.device)], [chunk_forward(path, *args)]
    chunks = micro_batches(path.shape[0], size, generator, path.device)
    recompute = recompute and len(chunks) > 1 and torch.is_grad_enabled()
    results = []
    for rows in chunks:
        part = path.index_select(0, rows)
        results.append(checkpoint(chunk_forward, part, *args, use_reentrant=False) if recompute
                       else chunk_forward(part, *args))
    return chunks, results


def mean_chunk_risk(chunk_logits: torch.Tensor) -> torch.Tensor:
    """The mean over the C chunks (C×K logits) of MCAT's risk −Σ_k S_k, shape (1,)."""
    return mcat_risk(discrete_survival(chunk_logits)).mean().reshape(1)


def mean_curve_logits(chunk_logits: torch.Tensor) -> torch.Tensor:
    """1×K hazard logits whose survival curve is the mean of the C chunks' curves (C×K)."""
    if chunk_logits.shape[0] == 1:
        return chunk_logits
    survival = discrete_survival(chunk_logits).mean(dim=0, keepdim=True)
    before = torch.cat([survival.new_ones(1, 1), survival[:, :-1]], dim=1)
    hazard = (1 - survival / before.clamp_min(LOGIT_CLAMP)).clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)
    return torch.logit(hazard)


def micro_batch_output(chunk_logits: torch.Tensor, **fields: Any) -> ModelOutput:
    """The output of C chunks' logits (C×K): mean survival curve, mean risk, and the chunks, whose
    mean NLL is the contract's default survival loss (:meth:`SurvivalModel.survival_loss`, the
    references' ``loss / cnt``)."""
    return ModelOutput(logits=mean_curve_logits(chunk_logits), risk_score=mean_chunk_risk(chunk_logits),
                       chunk_logits=chunk_logits, **fields)
