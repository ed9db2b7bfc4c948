"""MoME: Mixture of Multimodal Experts (Xiong et al., MICCAI 2024), WSI bag + genomic groups.

Xiong et al., "MoME: Mixture of Multimodal Experts for Cancer Survival Prediction", MICCAI 2024.
Reference implementation followed: ``MoMETransformer`` in models/model_mome.py of
BearCleverProud/MoME at its defaults (main.py: ``n_bottlenecks=2``, ``bs_micro=4096``,
``model_size_wsi='small'``, ``model_size_omic='small'``), trained by the micro-batch loop of
trainer/mb_trainer.py (MOTCat's, Innse/MOTCat) — read, not copied.

Architecture (width 512):

1. patches ``Dropout(0.25)(ReLU(Linear(1024 → 512)))``; one SNN per genomic group, blocks
   ``[512, 512]`` (``Linear → ELU → AlphaDropout(0.25)``) → G tokens;
2. four MoME layers, in the order path←omic, omic←path, path←omic, omic←path (each updates one
   modality's tokens x1 given the other's x2, the second one seeing the updated path tokens). A
   layer holds four experts and a router:

   * ``TransFusion``: a Nyström transformer layer (RMSNorm) over [x1; x2], keeping the x1 rows;
   * ``BottleneckTransFusion``: ``n_bottlenecks`` bottleneck tokens first attend over x2 (Nyström
     layer, LayerNorm), then x1 attends with them ([x1; bottlenecks], second layer), x1 rows kept;
   * ``AddFusion``: ``SNN(RMSNorm(x1)) + mean_tokens(SNN(RMSNorm(x2)))``;
   * ``DropX2Fusion``: x1 unchanged;
   * router: ``mean(GELU(RMSNorm(Linear(x1)))) + mean(GELU(RMSNorm(Linear(x2))))`` → ``Linear(512 → 4)``
     → softmax; the expert with the highest probability runs alone (hard routing).

   A "Nyström transformer layer" is ``x·ω + NystromAttention(norm(x))`` (8 heads of 64, 256
   landmarks, 6 pseudo-inverse iterations, value residual convolution, dropout 0.1) with Admin's
   residual scale ω = √((n+1)/ln(n+1) − 1) = 1.7595 for n = 8 (``admin_torch.as_module(8)``,
   a constant buffer);
3. a class token, the path tokens and the genomic tokens through one more Nyström transformer
   layer (LayerNorm); the class token's output → ``Linear(512 → n_bins)``.

**Micro-batches** (``bs_micro = 4096``, the reference's training and validation loops, through the
shared helpers of :mod:`mmsurv.models.layers`): the bag is shuffled and split into
``N // bs_micro + 1`` near-equal chunks; each chunk runs through the WHOLE model with the same
genomic input; the loss is the mean of the chunks' NLLs and the risk the mean of the chunks' ``−Σ S``
(``ModelOutput.risk_score``), as there; ``logits`` is the mean of the chunks' logits (it only feeds
the reported survival curves). Training shuffles with the global generator (seeded by the run).
With more than one chunk in training each chunk is gradient-checkpointed (recomputed in the
backward pass with the same random state: numerically the same gradients), so memory stays at one
chunk's activations: 50,000 patches fit in a few GB on CPU.

**The router's gradient** (``router_grad``). In the public code the router's forward is called as
``routing_network(x1, x2, hard)`` whose third positional argument is the softmax temperature, so
it returns soft probabilities; the layer then takes their argmax and runs that expert, whose output
is not multiplied by anything from the router: the four routers (2,113,552 parameters) never
receive a gradient and stay at their initialisation. ``router_grad="none"`` (default) reproduces
that. ``router_grad="straight_through"`` (an option, ours; e.g. the config variant
``mome_st: {model: mome, router_grad: straight_through}``) multiplies
the selected expert's output by ``1 − p.detach() + p`` (p the selected probability: exactly 1 in the
forward pass, the straight-through estimator the reference's ``DiffSoftmax(hard=True)`` implements
but never calls), so the router learns while the forward output stays that of hard routing. Tested
in ``tests/models/test_mome.py``.

**Fixed random tokens** (``learnable_tokens``). The reference's bottleneck tokens (2 per MoME
layer) and multimodal class token are ``torch.rand`` tensors created at construction, neither
parameters nor buffers (so not even saved in its checkpoints). Here they are *persistent buffers*
by default (``learnable_tokens=False``): same behaviour and parameter count as the reference, and
a checkpoint restores them. ``learnable_tokens=True`` makes them parameters (+4,608 = 4·2·512 + 512).

Parameters (trainable), BLCA signature groups [94, 334, 521, 468, 1496, 479]: 21,716,348 with
``learnable_tokens=False`` — equal to the reference (``tests/models/test_mome.py``); of them the
routers' 2,113,552 get no gradient with ``router_grad="none"``, and the unused ``RMSNorm`` of each
``BottleneckTransFusion`` (4 × 512, built but never called in the reference) never gets one.

Training defaults (the reference's main.py): Adam, lr 2e-4, weight decay 1e-5, batch 1 with
gradient accumulation 32, NLL α = 0, class-balanced sampling, 20 epochs, no schedule.

**Nyström landmarks as the reference.** Every Nyström layer has 256 landmarks and, as the package
the reference uses, zero-pads a shorter sequence at the front to 256 tokens, unmasked (the
bottleneck and genomic sequences always; the fused sequences of bags under ~250 patches).
``adaptive_landmarks=True`` (our improvement, an option, OFF by default) gives a short sequence one
landmark per token instead (``mmsurv.models.layers.nystrom_attention``: no zero rows diluting the
attention, a tokens × tokens pseudo-inverse): it changes every patient's output and is much cheaper
on small bags: at 24 patches, one CPU thread, forward + backward 1,389 ms off, 50 ms on
(``bench/step_cost.py``). No parameter depends on it.

Departures, with reasons:

* evaluation splits the bag with a fixed permutation (``torch.Generator`` seeded 0) where the
  reference reshuffles at every validation pass, so that a model gives the same risk for the same
  bag (for a bag of one chunk only the row order changes);
* the reference's RMSNorm computes in float32 and casts back; ``nn.RMSNorm`` (eps 1e-6) is the same
  in float32;
* its random tokens are buffers (above), so checkpoints restore them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import (
    NystromBlock,
    choice_shares,
    chunk_generator,
    mean_chunk_risk,
    run_micro_batches,
    snn_block,
    snn_encoder,
    use_adaptive_landmarks,
)
from mmsurv.models.registry import register_model

ROUTER_GRADS = ("straight_through", "none")
EVAL_PERMUTATION_SEED = 0


def admin_omega(n_residual_layers: int) -> float:
    """Admin's residual scale at its default ``O(log n)`` output change: √((n+1)/ln(n+1) − 1)."""
    return math.sqrt((n_residual_layers + 1) / math.log(n_residual_layers + 1) - 1)


def admin_nystrom_block(dim: int, norm: str = "layer", n_residual_layers: int = 8) -> NystromBlock:
    """MoME's ``TransLayer``: ``x·ω + NystromAttention(norm(x))``, ω Admin's constant (a buffer)."""
    return NystromBlock(dim, norm=norm, residual_scale=admin_omega(n_residual_layers))


class TransFusion(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.layer = admin_nystrom_block(dim, norm="rms")

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.cat([x1, x2], dim=1))[:, :x1.shape[1]]


class BottleneckTransFusion(nn.Module):
    def __init__(self, dim: int, n_bottlenecks: int, learnable: bool):
        super().__init__()
        self.unused_norm = nn.RMSNorm(dim, eps=1e-6)  # built, never called, as the reference (parameter count)
        self.attn_x1 = admin_nystrom_block(dim)
        self.attn_x2 = admin_nystrom_block(dim)
        tokens = torch.rand(1, n_bottlenecks, dim)
        if learnable:
            self.bottleneck = nn.Parameter(tokens)
        else:
            self.register_buffer("bottleneck", tokens)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        n = self.bottleneck.shape[1]
        squeezed = self.attn_x2(torch.cat([self.bottleneck.expand(x2.shape[0], -1, -1), x2], dim=1))[:, :n]
        return self.attn_x1(torch.cat([x1, squeezed], dim=1))[:, :x1.shape[1]]


class AddFusion(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)
        self.snn1, self.snn2 = snn_block(dim, dim), snn_block(dim, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.snn1(self.norm1(x1)) + self.snn2(self.norm2(x2)).mean(dim=1, keepdim=True)


class DropX2Fusion(nn.Module):
    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return x1


class Router(nn.Module):
    """Expert probabilities from the token means of both modalities (MoME's ``RoutingNetwork``)."""

    def __init__(self, dim: int, n_experts: int):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(dim, dim), nn.RMSNorm(dim, eps=1e-6), nn.GELU())
        self.fc2 = nn.Sequential(nn.Linear(dim, dim), nn.RMSNorm(dim, eps=1e-6), nn.GELU())
        self.classifier = nn.Linear(dim, n_experts)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        pooled = self.fc1(x1).mean(dim=1) + self.fc2(x2).mean(dim=1)
        return torch.softmax(self.classifier(pooled), dim=1)  # B×E


class MoMELayer(nn.Module):
    """Four fusion experts for x1 given x2 and a hard (argmax) router."""

    def __init__(self, dim: int, n_bottlenecks: int, router_grad: str, learnable_tokens: bool):
        super().__init__()
        self.experts = nn.ModuleList([TransFusion(dim), BottleneckTransFusion(dim, n_bottlenecks, learnable_tokens),
                                      AddFusion(dim), DropX2Fusion()])
        self.router = Router(dim, len(self.experts))
        self.router_grad = router_grad

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, int]:
        probs = self.router(x1, x2)[0]
        chosen = int(torch.argmax(probs))
        out = self.experts[chosen](x1, x2)
        if self.router_grad == "straight_through":
            out = out * (1.0 - probs[chosen].detach() + probs[chosen])
        return out, chosen


@register_model("mome", display="MoME", citation="Xiong et al., MICCAI 2024")
class MoME(SurvivalModel):
    """Mixture of multimodal experts: four hard-routed fusion layers between patches and genomic groups."""

    inputs = ("path", "omic_groups")
    defaults = {
        "data": {"groups": "signatures"},
        "training": {"optimizer": "adam", "lr": 2e-4, "weight_decay": 1e-5, "grad_accum": 32, "alpha": 0.0,
                     "epochs": 20, "scheduler": "none", "weighted_sampling": True},
    }

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, dim: int = 512,
                 n_bottlenecks: int = 2, bs_micro: int = 4096, router_grad: str = "none",
                 learnable_tokens: bool = False, checkpoint_chunks: bool = True, dropout: float = 0.25,
                 adaptive_landmarks: bool = False, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("MoME needs at least one genomic group")
        if router_grad not in ROUTER_GRADS:
            raise ValueError(f"MoME: router_grad must be one of {', '.join(ROUTER_GRADS)}, got {router_grad!r}")
        if bs_micro < 1:
            raise ValueError("MoME: bs_micro must be at least 1")
        self.bs_micro = int(bs_micro)
        self.checkpoint_chunks = bool(checkpoint_chunks)
        self.omic_encoders = nn.ModuleList(snn_encoder(size, [dim, dim], 0.25) for size in group_sizes)
        self.path_fc = nn.Sequential(nn.Linear(path_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.path_layer1, self.omic_layer1, self.path_layer2, self.omic_layer2 = (
            MoMELayer(dim, n_bottlenecks, router_grad, learnable_tokens) for _ in range(4))
        self.multimodal_layer = admin_nystrom_block(dim)
        cls = torch.rand(1, 1, dim)
        if learnable_tokens:
            self.cls_token = nn.Parameter(cls)
        else:
            self.register_buffer("cls_token", cls)
        self.classifier = nn.Linear(dim, n_bins)
        use_adaptive_landmarks(self, adaptive_landmarks)

    @property
    def mome_layers(self) -> list[MoMELayer]:
        return [self.path_layer1, self.omic_layer1, self.path_layer2, self.omic_layer2]

    @property
    def routers(self) -> list[Router]:
        return [layer.router for layer in self.mome_layers]

    def forward_chunk(self, path: torch.Tensor, *groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch (n×D patches) through the whole model → 1×K logits and the 4 chosen experts."""
        h_path = self.path_fc(path).unsqueeze(0)
        h_omic = torch.stack([encoder(group) for encoder, group in zip(self.omic_encoders, groups)]).unsqueeze(0)
        h_path, e1 = self.path_layer1(h_path, h_omic)
        h_omic, e2 = self.omic_layer1(h_omic, h_path)
        h_path, e3 = self.path_layer2(h_path, h_omic)
        h_omic, e4 = self.omic_layer2(h_omic, h_path)
        tokens = torch.cat([self.cls_token, h_path, h_omic], dim=1)
        logits = self.classifier(self.multimodal_layer(tokens)[:, 0])
        return logits, torch.tensor([e1, e2, e3, e4])

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "MoME")
        groups = batch.one_groups("MoME", len(self.omic_encoders))
        _, results = run_micro_batches(self.forward_chunk, path, self.bs_micro,
                                       chunk_generator(self.training, EVAL_PERMUTATION_SEED), *groups,
                                       recompute=self.checkpoint_chunks)
        chunk_logits = torch.cat([logits for logits, _ in results])  # chunks×K
        experts = torch.stack([chosen for _, chosen in results])
        # each MoME layer's choices over the micro-batches: layers 1 and 2 of each modality's side
        n = len(self.mome_layers[0].experts)
        measures = {f"route/{side}/layer{layer}": choice_shares(experts[:, column], n)
                    for column, (side, layer) in enumerate((("wsi", 0), ("genomic", 0), ("wsi", 1), ("genomic", 1)))}
        return ModelOutput(logits=chunk_logits.mean(dim=0, keepdim=True), risk_score=mean_chunk_risk(chunk_logits),
                           attention={"experts": experts}, chunk_logits=chunk_logits, measures=measures)
