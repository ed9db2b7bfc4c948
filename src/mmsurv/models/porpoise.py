"""PORPOISE MMF: gated-attention MIL + SNN with gated bilinear fusion (Chen et al., Cancer Cell 2022).

"Pan-cancer integrative histology-genomic analysis via multimodal deep learning", Cancer Cell 40(8),
2022. Reference followed: ``PorpoiseMMF`` of models/model_porpoise.py (mahmoodlab/PORPOISE) at its
CLASS defaults (``fusion='bilinear'``, ``gate_path=1``, ``gate_omic=1``, ``skip=True``,
``dropinput=0.10``, ``scale_dim1 = scale_dim2 = 8``, ``size_arg='small'``), which is what the paper
describes (gated attention in the fusion, skip connections, input dropout):

1. WSI branch: ``Dropout(0.1)`` on the patch features, ``Dropout(ReLU(Linear(1024 → 512)))``,
   gated attention (512 → 256 hidden, dropout 0.25), softmax over patches, attention-weighted sum,
   ``rho = Dropout(ReLU(Linear(512 → 256)))`` — ABMIL (:mod:`mmsurv.models.abmil`) behind input dropout;
2. genomic branch: SNN blocks over all genomic columns, ``G → 256 → 256`` (ELU, AlphaDropout 0.25);
3. gated bilinear fusion (:class:`mmsurv.models.late_fusion.BilinearFusion`): each embedding reduced
   to 32 (= 256 / 8), gated by ``sigmoid(Linear(512 → 32))`` of both embeddings, ``[o_path, 1] ⊗
   [o_omic, 1]`` (1,089 values), ``ReLU(Linear(1089 → 256))``, then the skip connection appends both
   256-d embeddings and ``ReLU(Linear(768 → 256))``;
4. ``Linear(256 → n_bins)`` hazard logits (MCAT's NLL loss).

Parameter counts at MCAT's BLCA setting (1024-d features, 4 bins, 3,392 genomic columns), ours
beside the reference's measured from its code:

* class defaults (gates, skip, dropinput 0.1): **2,381,765**, equal;
* its ``main.py`` defaults (``--gate_path``/``--gate_omic``/``--skip`` off): the reference builds
  2,250,693 parameters of which the two gate layers (2 × 16,416 = 32,832) never get a gradient;
  ours with ``gate_path=False, gate_omic=False, skip=False`` builds 2,217,861 (the unused gates are
  not built) — the size of ``abmil_kp`` with ``fusion: kronecker``, which differs in its fusion's
  dropouts: PORPOISE's ``BilinearFusion`` has none after its two encoders, MCAT's (``abmil_kp``)
  has (:mod:`mmsurv.models.late_fusion`).

Training settings: the reference's ``main.py`` (Adam, lr 2e-4, weight decay 1e-5, 20 epochs, batch 1
with gradient accumulation 32, NLL with alpha 0), the package defaults, plus the L1 penalty of its
documented MMF command (docs/Commands.md: ``--mode pathomic --reg_type pathomic``, ``--lambda_reg``
default 1e-5): ``λ·Σ|w|`` with λ = 1e-5 over the genomic SNN and the fusion layer only
(utils/utils.py ``l1_reg_modules``: ``model.fc_omic`` and ``model.mm``, here ``omic_branch`` and
``fusion``), added per patient without the accumulation's division as there (``l1_reg: 1e-5``,
``l1_modules: [omic_branch, fusion]``). That command names ``--model_type mm_attention_mil``, which
the released core_utils.py no longer dispatches (its MMF class is ``porpoise_mmf``); we read it as
the MMF command. No departure from the reference's architecture.
"""

from __future__ import annotations

from mmsurv.models.late_fusion import LateFusion
from mmsurv.models.registry import register_model


@register_model("porpoise_mmf", display="PORPOISE MMF", citation="Chen et al., Cancer Cell 2022")
class PorpoiseMMF(LateFusion):
    """PORPOISE's multimodal fusion model: ABMIL + SNN + gated bilinear fusion with skip connections."""

    fusion_encoder_dropout = False  # PORPOISE's BilinearFusion: no dropout after its encoders
    defaults = {"training": {"l1_reg": 1e-5, "l1_modules": ["omic_branch", "fusion"]}}

    def __init__(self, *, omic_dim: int, path_dim: int = 1024, n_bins: int = 4, backbone: str = "abmil",
                 fusion: str = "bilinear", gate_path: bool = True, gate_omic: bool = True, skip: bool = True,
                 dropinput: float = 0.1, kp_dim: int | None = 32, dropout: float = 0.25, **sizes):
        super().__init__(omic_dim=omic_dim, path_dim=path_dim, n_bins=n_bins, backbone=backbone, fusion=fusion,
                         gate_path=gate_path, gate_omic=gate_omic, skip=skip, dropinput=dropinput, kp_dim=kp_dim,
                         dropout=dropout, **sizes)
