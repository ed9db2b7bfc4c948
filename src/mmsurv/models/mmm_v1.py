"""MMM v1: the released first version of MMM, "Multi-modal Mutual Mixer" (MiT + DAM).

"MMM: A Lightweight Framework for Multi-modal Mutual Mixer in Cancer Survival Prediction", the
version whose code lived in the git history of jermmy19998/MMM (``models/model_mmm.py`` before the
commit that deleted the models directory) before the repository switched to the published
multi-expert design (:mod:`mmsurv.models.mmm`). Reimplemented from that history, nothing copied.

Architecture (d = 256, d2 = 128; SDL = ``Linear → SELU → AlphaDropout``):

1. patches: SDL path_dim → d (dropout 0.2); genomic groups: SDL s_i → d each (dropout 0.2);
2. φ: the G genomic tokens repeated to the N image tokens and shuffled by a random permutation,
   then ``Linear d → d → GELU → Dropout 0.25``;
3. MiT (multi-information transmission, :class:`MiT`, dropout 0.3): each modality's tokens are
   scaled by a gate computed from the OTHER modality's global statistics
   (``sigmoid(Linear([mean; max] over tokens))``), then a residual ``x + Dropout(GELU(Linear x))``;
4. SDL d → d2 per modality (0.3), DAM (:class:`mmsurv.models.mmm.DAM`), SDL d2 → d2 (0.3);
5. MiT at d2 (dropout 0.35);
6. ``img^T · gene`` (d2×d2), L2-normalised over the image axis, mean over it, ``Linear(d2 → n_bins)``.

PyTorch default initialisation (the released code does not re-initialise). Parameter count on
BLCA's signature groups [94, 334, 521, 468, 1496, 479], 4 bins: 1,856,516, the released code's
(asserted in tests/models/test_mmm.py).

Departure: the released φ shuffles the repeated genomic tokens in evaluation too, so a validation
score changes from pass to pass; here the shuffle is drawn in training only and evaluation uses the
plain cyclic order (``shuffle_eval=True`` restores the released behaviour). The permutation is drawn
on the input's device from torch's generator (seeded runs repeat).

Defaults as the released ``main.py``: AdamW, lr 5e-4, weight decay 1e-5, gradient accumulation 32,
cosine schedule, 100 epochs, batch 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.mmm import DAM, MMM, sdl, tile_tokens
from mmsurv.models.registry import register_model


class GlobalGate(nn.Module):
    """``sigmoid(Linear([mean; max] over the tokens))``: one d_out gate vector from a token set."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(torch.cat([x.mean(dim=0), x.max(dim=0).values])))


class MiT(nn.Module):
    """Multi-information transmission: cross-modal global gating, then a residual GELU layer per modality."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.image_layer = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.gene_layer = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.gate_from_gene = GlobalGate(dim, dim)
        self.gate_from_image = GlobalGate(dim, dim)

    def forward(self, x_img: torch.Tensor, x_gene: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = x_img * self.gate_from_gene(x_gene)
        gene = x_gene * self.gate_from_image(x_img)
        return img + self.image_layer(img), gene + self.gene_layer(gene)


@register_model("mmm_v1", display="MMM v1",
                citation="Anonymous authors, MMM first release (jermmy19998/MMM history), 2025")
class MMMv1(SurvivalModel):
    """The released first MMM: SDL encoders, φ, MiT, DAM, MiT, image ⊗ genomics product."""

    inputs = ("path", "omic_groups")
    defaults = MMM.defaults

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, dim: int = 256,
                 dim2: int = 128, shuffle_eval: bool = False, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("MMM v1 needs at least one genomic group")
        self.shuffle_eval = shuffle_eval
        self.image_sdl = sdl(path_dim, dim, 0.2)
        self.omic_sdl = nn.ModuleList(sdl(size, dim, 0.2) for size in group_sizes)
        self.phi = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.25))
        self.mit1 = MiT(dim, 0.3)
        self.image_down, self.gene_down = sdl(dim, dim2, 0.3), sdl(dim, dim2, 0.3)
        self.dam = DAM(dim2)
        self.image_mid, self.gene_mid = sdl(dim2, dim2, 0.3), sdl(dim2, dim2, 0.3)
        self.mit2 = MiT(dim2, 0.35)
        self.classifier = nn.Linear(dim2, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "MMM v1")
        groups = batch.one_groups("MMM v1", len(self.omic_sdl))
        x_img = self.image_sdl(path)
        genes = torch.stack([layer(group) for layer, group in zip(self.omic_sdl, groups)])
        x_gene = tile_tokens(genes, x_img.shape[0])
        if self.training or self.shuffle_eval:
            x_gene = x_gene[torch.randperm(x_gene.shape[0]).to(x_gene.device)]
        x_img, x_gene = self.mit1(x_img, self.phi(x_gene))
        x_img, x_gene = self.dam(self.image_down(x_img), self.gene_down(x_gene))
        x_img, x_gene = self.mit2(self.image_mid(x_img), self.gene_mid(x_gene))
        mixed = F.normalize(x_img.t() @ x_gene, dim=0)
        return ModelOutput(logits=self.classifier(mixed.mean(dim=0)).unsqueeze(0))
