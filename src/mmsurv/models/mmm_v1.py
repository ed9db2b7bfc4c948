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

**Micro-batches** (``bs_micro = 4096``), as the released trainer (``trainer/mb_trainer.py``, its
training and validation loops for ``--model_type mmm``): the bag is shuffled and split into
``N // 4096 + 1`` near-equal chunks (one chunk, in shuffled order, up to 4,095 patches), the
released model runs on each chunk with the same genomic input (its own φ shuffle per chunk), the
loss is the mean of the chunks' NLLs and the risk the mean of the chunks' −Σ_k S_k
(:class:`mmsurv.models.mmm.MMM` for the details). ``forward_chunk`` is the released model's forward
on one chunk; ``bs_micro=None`` runs it once on the whole bag in its order.

Defaults as the released ``main.py`` (:attr:`MMM.defaults`): AdamW, lr 5e-4, weight decay 1e-5,
gradient accumulation 32, 100 epochs, batch 1, and a constant learning rate (the release parses
``--lr_scheduler cosine`` but never calls its scheduler).

Departures, with reasons:

* the released φ shuffles the repeated genomic tokens in evaluation too, so a validation score
  changes from pass to pass; here the shuffle is drawn in training only and evaluation uses the
  plain cyclic order (``shuffle_eval=True`` restores the released behaviour). The permutation is
  drawn on the input's device from torch's generator (seeded runs repeat);
* evaluation splits the bag with a fixed permutation (``eval_seed``, default 0) where the release
  reshuffles with Python's ``random`` at every validation pass (same reason); training shuffles
  with torch's global generator (seeded by the run);
* ``logits`` are those of the chunks' mean survival curve (the release averages loss and risk only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import chunk_generator, micro_batch_output, run_micro_batches
from mmsurv.models.mmm import DAM, MMM, check_bs_micro, sdl, tile_tokens
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
                 dim2: int = 128, shuffle_eval: bool = False, bs_micro: int | None = 4096, eval_seed: int = 0,
                 **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("MMM v1 needs at least one genomic group")
        self.shuffle_eval = shuffle_eval
        self.bs_micro, self.eval_seed = check_bs_micro(bs_micro, "MMM v1"), eval_seed
        self.image_sdl = sdl(path_dim, dim, 0.2)
        self.omic_sdl = nn.ModuleList(sdl(size, dim, 0.2) for size in group_sizes)
        self.phi = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.25))
        self.mit1 = MiT(dim, 0.3)
        self.image_down, self.gene_down = sdl(dim, dim2, 0.3), sdl(dim, dim2, 0.3)
        self.dam = DAM(dim2)
        self.image_mid, self.gene_mid = sdl(dim2, dim2, 0.3), sdl(dim2, dim2, 0.3)
        self.mit2 = MiT(dim2, 0.35)
        self.classifier = nn.Linear(dim2, n_bins)

    def forward_chunk(self, path: torch.Tensor, *groups: torch.Tensor) -> torch.Tensor:
        """The released model's forward on one micro-batch of n patches → 1×K logits."""
        x_img = self.image_sdl(path)
        genes = torch.stack([layer(group) for layer, group in zip(self.omic_sdl, groups)])
        x_gene = tile_tokens(genes, x_img.shape[0])
        if self.training or self.shuffle_eval:
            x_gene = x_gene[torch.randperm(x_gene.shape[0]).to(x_gene.device)]
        x_img, x_gene = self.mit1(x_img, self.phi(x_gene))
        x_img, x_gene = self.dam(self.image_down(x_img), self.gene_down(x_gene))
        x_img, x_gene = self.mit2(self.image_mid(x_img), self.gene_mid(x_gene))
        mixed = F.normalize(x_img.t() @ x_gene, dim=0)
        return self.classifier(mixed.mean(dim=0)).unsqueeze(0)

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "MMM v1")
        groups = batch.one_groups("MMM v1", len(self.omic_sdl))
        _, chunk_logits = run_micro_batches(self.forward_chunk, path, self.bs_micro,
                                            chunk_generator(self.training, self.eval_seed), *groups)
        return micro_batch_output(torch.cat(chunk_logits))
