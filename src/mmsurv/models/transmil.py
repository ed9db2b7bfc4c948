"""TransMIL: transformer-based correlated multiple-instance learning (Shao et al., NeurIPS 2021), WSI only.

Architecture of the paper and of its official code (``TransMIL`` in models/TransMIL.py of
szc19990412/TransMIL), with a survival head:

1. patch features ``ReLU(Linear(path_dim → 512))`` (N×512);
2. the N tokens are padded to a square grid of side ``⌈√N⌉`` by repeating tokens from the start of
   the bag (token ``i`` of the padding is token ``i mod N``, as the reference), and a learnt class
   token is put in front;
3. ``TransLayer``: ``x + NystromAttention(LayerNorm(x))`` with 8 heads of 64, 256 landmarks
   (``dim // 2``), 6 Moore–Penrose iterations, the package's depthwise residual convolution on the
   values (kernel 33) and dropout 0.1 — the ``nystrom-attention`` package's layer (PyPI), as the
   reference, computed by :class:`mmsurv.models.layers.NystromAttention` (equal up to rounding, less
   per-call overhead);
4. PPEG (pyramid position encoding generator): the patch tokens are laid out row-major on the
   ``⌈√N⌉ × ⌈√N⌉`` grid and ``x + DWConv7(x) + DWConv5(x) + DWConv3(x)`` (depthwise, 512 channels,
   same padding) is computed; the class token bypasses it;
5. a second ``TransLayer``, ``LayerNorm``, the class token's output → ``Linear(512 → n_bins)``
   hazard logits (the reference's ``_fc2`` with ``n_classes = n_bins``).

Parameters at the reference setting (1024-d input, 4 outputs): 2,673,172, equal to the official
code's count with ``n_classes = 4`` (tested). PyTorch default initialisation; the class token is
N(0, 1) as the reference's ``torch.randn``.

Defaults: ``dim=512``, ``heads=8``, ``landmarks=256``, ``pinv_iterations=6``, ``attn_dropout=0.1``,
``adaptive_landmarks=False`` (the reference's zero padding; see below), ``checkpoint_tokens=8192`` (see Cost).
Training defaults: the reference's Camelyon/TransMIL.yaml and train.py (PyTorch Lightning 1.2.3):
``lookahead_radam`` built by MyOptimizer/optim_factory.py, i.e. Lookahead (k 6, α 0.5) around the
RAdam of Liu et al., lr 2e-4, weight decay 1e-5 applied to the weights (``p ← p − lr·wd·p``) and
not to biases or 1-D parameters (LayerNorm weights; the class token, 1×1×512, is decayed) —
``optimizer: radam``, ``decoupled_weight_decay``, ``no_decay_1d``, ``lookahead``; batch 1 with
gradient accumulation 2 (``grad_acc``); up to 200 epochs with early stopping after 10 epochs
without a lower validation loss, reporting the checkpoint of the lowest validation loss; the
training bags in shuffled order without class balancing (``weighted_sampling: false``). The
reference's validation set is its own (216 training / 54 validation slides on Camelyon16's fold
0, test apart); our validation fold is the reported one, so early stopping and the choice of the
"best" epoch look at a hold-out of 20 % of the training fold (``holdout_fraction: 0.2``, the
reference's 54 / 270) through its loss (the loop's default metric with a hold-out), patience 10.
Not reproduced: the reference's 16-bit mixed precision (``precision: 16``; we train in fp32).

Departures, with reasons:

* survival head: ``n_bins`` hazard logits trained with the package's NLL (the reference classifies);
* the reference moves the class token to the GPU by hand; here it lives on the module's device;
* the reference pads with ``h[:, :add_length]``, which needs ``add_length ≤ N`` (always true for
  ``N ≥ 1``, since ``⌈√N⌉² − N ≤ N``); we index ``i mod N``, identical where the reference works;
* the checkpointing of long bags (see Cost) changes memory, not values.

The attention computes the package's, as the reference's: Nyström attention pads the sequence at the
front to a multiple of the 256 landmarks with zero rows and no mask, for every bag, including bags
of fewer than 255 patches (the demo's ~24), which it pads up to 256 tokens.

**Adaptive landmarks** (``adaptive_landmarks=True``; our improvement, an option, OFF by default):
for sequences shorter than the 256 landmarks the reference runs the 6 Moore–Penrose iterations on
an 8×256×256 landmark kernel whatever N, which dominates the CPU cost, and lets the zero rows dilute
the attention. With the option a layer uses ``min(256, tokens)`` landmarks, so a short sequence is
its own landmark set (each landmark one token, no zero padding: the Nyström approximation of full
softmax attention with every point a landmark). At 24 patches, one CPU thread, forward + backward:
543 ms off, 14 ms on (``bench/step_cost.py``). Sequences of 256 tokens or more are computed exactly
as the reference either way. No parameter depends on it.

Cost: Nyström attention is linear in N, but each layer keeps several heads × N × 256 maps for the
backward pass (≈ 0.11 MB per patch for the model, measured at 2k–5k patches: ≈ 6 GB at 50,000).
From ``checkpoint_tokens`` tokens on (default 8192; 0 disables) each layer's attention is
recomputed in the backward pass instead (``torch.utils.checkpoint``; same values and gradients,
dropout replayed with the saved RNG state), which keeps a 50,000-patch forward + backward well
under 8 GB on CPU at the price of one more attention forward per layer.

Patch scores (heatmaps; ours, not part of the reference training code): the class token's row of the second
layer's Nyström attention matrix, mean over heads, over the bag's patches (the square padding's
repeated tokens left out), computed only while ``scoring_patches`` is on, from the same attention
call (the prediction is unchanged). From 8,192 patches on, scoring evaluates both layers' attention
in bounded memory (:func:`mmsurv.models.layers.nystrom_attention_bounded`: the same attention up to
rounding), so a 50,000-patch slide scores in ~1.9 GB and ~10 s on one CPU thread instead of
3.6 GB and ~40 s (``bench/heatmap.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import PPEG, NystromBlock, encode_with_class_token
from mmsurv.models.registry import register_model


@register_model("transmil", display="TransMIL", citation="Shao et al., NeurIPS 2021")
class TransMIL(SurvivalModel):
    """Nyström-attention transformer with PPEG over a patient's patch bag (WSI only)."""

    inputs = ("path",)
    embedding_head = "classifier"
    patch_score_kind = "the class token's Nyström attention over the patches in the last layer (head mean)"
    patch_score_key = "path"
    defaults = {"training": {"optimizer": "radam", "lr": 2e-4, "weight_decay": 1e-5, "decoupled_weight_decay": True,
                             "no_decay_1d": True, "lookahead": True, "lookahead_k": 6, "lookahead_alpha": 0.5,
                             "grad_accum": 2, "epochs": 200, "holdout_fraction": 0.2, "early_stopping_patience": 10,
                             "weighted_sampling": False}}

    def __init__(self, *, path_dim: int = 1024, n_bins: int = 4, dim: int = 512, heads: int = 8,
                 landmarks: int | None = None, pinv_iterations: int = 6, attn_dropout: float = 0.1,
                 adaptive_landmarks: bool = False, checkpoint_tokens: int = 8192, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, **sizes)
        landmarks = landmarks or dim // 2
        self.fc = nn.Sequential(nn.Linear(path_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        layer = {"heads": heads, "landmarks": landmarks, "pinv_iterations": pinv_iterations, "dropout": attn_dropout,
                 "adaptive": adaptive_landmarks, "checkpoint_tokens": checkpoint_tokens}
        self.layer1 = NystromBlock(dim, **layer)
        self.ppeg = PPEG(dim)
        self.layer2 = NystromBlock(dim, **layer)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "TransMIL")
        row = [] if self.scoring_patches else None
        cls, _ = encode_with_class_token(self.fc(path).unsqueeze(0), self.cls_token, self.layer1, self.layer2,
                                         self.norm, self.ppeg, cls_row=row)
        return ModelOutput(logits=self.classifier(cls), attention={"path": row[0]} if row else None)
