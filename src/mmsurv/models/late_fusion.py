"""Late fusion: a pathology MIL backbone's slide embedding fused with an SNN genomic embedding.

The multimodal baselines of MCAT's Table 1 and SurvMamba's Table 1 ("ABMIL / CLAM-MB / TransMIL
(Cat)" and "(KP)"): a WSI branch pools the patient's bag into one slide embedding, a
self-normalising network encodes the WHOLE genomic vector, a fusion layer combines the two, and a
linear layer gives the hazard logits.

Reference followed: ``MIL_Attention_FC_surv`` with ``fusion='concat'`` / ``'bilinear'``
(models/model_set_mil.py of mahmoodlab/MCAT, ``size_arg='small'``) and MCAT's ``BilinearFusion``
(models/model_utils.py of mahmoodlab/MCAT, built there with ``dim1 = dim2 = 256``, ``scale_dim1 =
scale_dim2 = 8``, gates on, no skip):

* WSI branch: the registered pathology model (``abmil``: ``Linear(1024 → 512)``, gated attention
  512 → 256, ``rho = Linear(512 → 256) → ReLU → Dropout(0.25)``) without its classifier: its 1×256
  pooled embedding;
* genomic branch: MCAT's SNN blocks over all G genomic columns, ``G → 256 → 256`` (``Linear → ELU →
  AlphaDropout(0.25)``), PyTorch default initialisation as there (no ``init_max_weights`` call);
* fusion (``fusion=``):

  - ``concat``: ``ReLU(Linear(512 → 256)) → ReLU(Linear(256 → 256))`` (MCAT's ``mm``);
  - ``bilinear`` (**the default of the KP rows**): MCAT's gated ``BilinearFusion``, Pathomic
    Fusion's gated tensor fusion (Chen et al., IEEE TMI 2020). Each embedding is reduced to
    ``kp_dim`` (32 = 256 / MCAT's ``scale_dim`` 8) by ``ReLU(Linear(256 → 32))``, multiplied by its
    gate ``sigmoid(Linear(512 → 32))`` of the two concatenated embeddings, then
    ``Dropout(ReLU(Linear(32 → 32)))``; each is extended by a constant 1 and their Kronecker (outer)
    product, (32 + 1)(32 + 1) = 1,089 values, goes through ``Dropout(0.25)``,
    ``Dropout(0.25)(ReLU(Linear(1089 → 256)))`` and ``Dropout(0.25)(ReLU(Linear(256 → 256)))`` (MCAT's
    ``encoder1`` and ``encoder2`` both end with a dropout). The product keeps every unimodal term
    (the 1s) and every bimodal interaction;
  - ``kronecker``: the same layer with both gates off (``gate1 = gate2 = 0``), the ungated variant
    (e.g. ``train.models.abmil_kp_ungated: {model: abmil_kp, fusion: kronecker}``); the two gate
    layers an ungated MCAT ``BilinearFusion`` builds but never uses are not built.
    ``kp_dim=None`` fuses the raw embeddings, (256 + 1)(256 + 1) = 66,049 values.

  PORPOISE's ``BilinearFusion`` (models/model_porpoise.py of mahmoodlab/PORPOISE, used by
  :mod:`mmsurv.models.porpoise`) is NOT the same layer: its ``encoder1``/``encoder2`` have no
  dropout, and PORPOISE MMF adds a skip connection; ``BilinearFusion(encoder_dropout=...)`` chooses.

* ``Linear(256 → n_bins)`` hazard logits.

Parameter counts at MCAT's BLCA setting (1024-d features, 4 bins, 3,392 genomic columns = the sum of
the BLCA groups [94, 334, 521, 468, 1496, 479]), against the reference's (measured from its code):

==============  ==========  ==========================================================
model           ours        reference
==============  ==========  ==========================================================
``abmil_cat``   2,051,589   2,051,589 (AMIL, ``fusion='concat'``), equal
``abmil_kp``    2,250,693   2,250,693 (AMIL, ``fusion='bilinear'``), equal
``abmil_kp``,   2,217,861   = 2,250,693 − 32,832, the two gate layers ``Linear(512 → 32)``
kronecker                   that an ungated ``BilinearFusion`` builds but never uses
==============  ==========  ==========================================================

The other KP rows (no reference code): ``transmil_kp`` 4,027,348 (``kronecker``: 3,978,132) and
``clam_mb_kp`` 2,296,272 (``kronecker``: 2,148,752); their gates read the wider slide embeddings.

**Other backbones.** :class:`LateFusion` takes any registered pathology model as ``backbone``:
the model is built with the fold's ``path_dim`` and ``n_bins`` and its head removed (the model
contract's ``embedding_head`` / ``drop_head``, :mod:`mmsurv.models.base`); the backbone's attention maps and auxiliary terms are passed on, and when it overrides
``loss`` (label-dependent terms such as CLAM's instance loss) its terms other than the survival NLL
join the late-fusion loss. Registered: ``abmil_cat``, ``abmil_kp``, ``clam_mb_cat``, ``clam_mb_kp``,
``transmil_cat``, ``transmil_kp``.

* **TransMIL**: its class token after the final LayerNorm (512-d). For KP the two reductions take
  different inputs (``Linear(512 → 32)`` and ``Linear(256 → 32)``), the gates read the 768
  concatenated values (``Linear(768 → 32)``): the product stays 33 × 33.
* **CLAM-MB** (our choice; no reference code fuses it): its slide embedding is what its bag
  classifiers read, one attention-pooled 512-d vector per survival bin, flattened (4 × 512 = 2,048
  values), so nothing the unimodal model sees is lost. Its instance-clustering term,
  ``(1 − bag_weight) · CE`` on the bin branch's top/bottom-k patches, joins the loss as above; the
  fused NLL is not scaled by ``bag_weight``.

``backbone_params`` passes the backbone's own hyper-parameters (e.g. ``{adaptive_landmarks: true}``
for the TransMIL rows; default: the backbone's defaults).

**Departures.** ``dropinput`` (default 0 here, PORPOISE's 0.1) drops bag features before the
backbone; the late-fusion models use MCAT's training settings (Adam, lr 2e-4, weight decay 1e-5,
20 epochs, accumulation 32), the package defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from mmsurv.models.base import (
    SURVIVAL_TERM,
    Batch,
    ModelOutput,
    NoPatchScores,
    PatchScores,
    SurvivalModel,
    Target,
    require,
)
from mmsurv.models.layers import snn_encoder
from mmsurv.models.registry import register_model

FUSIONS = ("concat", "kronecker", "bilinear")


def append_one(h: torch.Tensor) -> torch.Tensor:
    """B×d → B×(d+1): the embedding extended by a constant 1 (keeps the unimodal terms in the product)."""
    return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)


def kronecker_product(h_path: torch.Tensor, h_omic: torch.Tensor) -> torch.Tensor:
    """Row-wise Kronecker product of ``[h_path, 1]`` and ``[h_omic, 1]``: B×(d_path+1)(d_omic+1)."""
    return torch.einsum("bi,bj->bij", append_one(h_path), append_one(h_omic)).flatten(start_dim=1)


class BilinearFusion(nn.Module):
    """Pathomic Fusion's (optionally gated) Kronecker fusion: MCAT's ``BilinearFusion`` with
    ``encoder_dropout=True``, PORPOISE's with ``encoder_dropout=False``.

    Per modality m ∈ {path, omic} (inputs ``in_dim`` and ``omic_in_dim``, equal unless given):
    ``h_m = ReLU(Linear(in_m → d))`` with ``d = reduced_dim`` (or ``in_dim`` when ``reduced_dim`` is
    None); with its gate on, ``h_m ← sigmoid(Linear(in_path + in_omic → d)([x_path, x_omic])) ⊙ h_m``; then
    ``o_m = Dropout(ReLU(Linear(d → d))(h_m))``. Output: ``ReLU(Linear(256 + skip → out_dim))`` of
    ``ReLU(Linear((d+1)² → 256))(Dropout([o_path, 1] ⊗ [o_omic, 1]))``, where ``skip`` appends the
    two input embeddings (PORPOISE's skip connection); ``encoder_dropout`` adds ``Dropout`` after
    each of those two ``ReLU`` (MCAT's ``encoder1``/``encoder2``).
    """

    def __init__(self, in_dim: int = 256, reduced_dim: int | None = 32, out_dim: int = 256, gate_path: bool = True,
                 gate_omic: bool = True, skip: bool = False, dropout: float = 0.25, hidden_dim: int = 256,
                 omic_in_dim: int | None = None, encoder_dropout: bool = False):
        super().__init__()
        omic_in_dim = omic_in_dim or in_dim
        if reduced_dim is None and omic_in_dim != in_dim:
            raise ValueError(f"bilinear fusion without reduction needs equal embeddings, got {in_dim} and {omic_in_dim}")
        dim = reduced_dim or in_dim
        both = in_dim + omic_in_dim
        self.skip = skip
        self.path_h = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.omic_h = nn.Sequential(nn.Linear(omic_in_dim, dim), nn.ReLU())
        self.path_gate = nn.Linear(both, dim) if gate_path else None
        self.omic_gate = nn.Linear(both, dim) if gate_omic else None
        self.path_o = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.omic_o = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.post_dropout = nn.Dropout(dropout)
        tail = [nn.Dropout(dropout)] if encoder_dropout else []
        self.encoder1 = nn.Sequential(nn.Linear((dim + 1) ** 2, hidden_dim), nn.ReLU(), *tail)
        self.encoder2 = nn.Sequential(nn.Linear(hidden_dim + (both if skip else 0), out_dim), nn.ReLU(), *tail)

    def forward(self, h_path: torch.Tensor, h_omic: torch.Tensor) -> torch.Tensor:
        """B×in_dim, B×omic_in_dim → B×out_dim."""
        both = torch.cat([h_path, h_omic], dim=1)
        a, b = self.path_h(h_path), self.omic_h(h_omic)
        if self.path_gate is not None:
            a = torch.sigmoid(self.path_gate(both)) * a
        if self.omic_gate is not None:
            b = torch.sigmoid(self.omic_gate(both)) * b
        fused = self.encoder1(self.post_dropout(kronecker_product(self.path_o(a), self.omic_o(b))))
        if self.skip:
            fused = torch.cat([fused, both], dim=1)
        return self.encoder2(fused)


def concat_fusion(in_dim: int = 512, out_dim: int = 256) -> nn.Sequential:
    """MCAT's ``mm`` for ``fusion='concat'`` over the concatenated embeddings (``in_dim`` values):
    ``ReLU(Linear(in → out)) → ReLU(Linear(out → out))``."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim), nn.ReLU())


def build_backbone(name: str, *, path_dim: int, n_bins: int, dropout: float,
                   backbone_params: dict | None = None) -> tuple[SurvivalModel, int]:
    """The registered pathology model ``name`` without its head, and the size of its slide embedding.

    By the model contract (:meth:`SurvivalModel.drop_head`): the backbone names the ``nn.Linear``
    that reads its slide embedding (``embedding_head``); it is replaced by the identity, so its
    parameters are not counted and the backbone's ``logits`` are the embedding (its attention maps
    and auxiliary terms come with it). ``dropout`` is passed when the backbone accepts it, and
    ``backbone_params`` (the backbone's own hyper-parameters, e.g. TransMIL's
    ``adaptive_landmarks``) always; an unknown one is an error naming it.
    """
    from mmsurv.models.registry import model_spec

    spec = model_spec(name)
    if spec.modality != "path":
        raise ValueError(f"late fusion: backbone {name!r} must be a pathology model, it is {spec.label}")
    params = {"dropout": dropout} if "dropout" in spec.parameters() else {}
    unknown = sorted(set(backbone_params or {}) - set(spec.parameters()))
    if unknown:
        raise ValueError(f"late fusion: backbone {name!r} has no parameter(s) {', '.join(unknown)} "
                         f"(accepted: {', '.join(spec.parameters())})")
    params.update(backbone_params or {})
    backbone = spec.model_class(path_dim=path_dim, n_bins=n_bins, **{**spec.preset, **params})
    return backbone, backbone.drop_head()


@dataclass
class LateFusionOutput(ModelOutput):
    """A :class:`ModelOutput` that also keeps the backbone's output (for the backbone's own loss terms)."""

    path_output: ModelOutput | None = None


@register_model("abmil_cat", display="ABMIL (Cat)", params={"backbone": "abmil", "fusion": "concat"},
                citation="Ilse et al., ICML 2018; Chen et al., ICCV 2021 (MCAT's late-fusion baselines)")
@register_model("abmil_kp", display="ABMIL (KP)", params={"backbone": "abmil", "fusion": "bilinear"},
                citation="Ilse et al., ICML 2018; Chen et al., IEEE TMI 2020 (Pathomic Fusion's Kronecker fusion)")
@register_model("transmil_cat", display="TransMIL (Cat)", params={"backbone": "transmil", "fusion": "concat"},
                citation="Shao et al., NeurIPS 2021; Chen et al., ICCV 2021 (MCAT's late-fusion baselines)")
@register_model("transmil_kp", display="TransMIL (KP)", params={"backbone": "transmil", "fusion": "bilinear"},
                citation="Shao et al., NeurIPS 2021; Chen et al., IEEE TMI 2020 (Pathomic Fusion's Kronecker fusion)")
@register_model("clam_mb_cat", display="CLAM-MB (Cat)", params={"backbone": "clam_mb", "fusion": "concat"},
                citation="Lu et al., Nat. Biomed. Eng. 2021; Chen et al., ICCV 2021 (MCAT's late-fusion baselines)")
@register_model("clam_mb_kp", display="CLAM-MB (KP)", params={"backbone": "clam_mb", "fusion": "bilinear"},
                citation="Lu et al., Nat. Biomed. Eng. 2021; Chen et al., IEEE TMI 2020 (Pathomic Fusion's Kronecker fusion)")
class LateFusion(SurvivalModel):
    """Late fusion of a pathology backbone's slide embedding and an SNN genomic embedding.

    One class, one registered row per (``backbone``, ``fusion``) above: each registration is a
    preset of these two parameters, read by the source catalog like any literal. ``backbone`` is a
    registered pathology model naming its ``embedding_head`` (the contract); see the module
    docstring for the architecture and sizes.
    """

    fusion_encoder_dropout: ClassVar[bool] = True  # MCAT's BilinearFusion (PORPOISE's has none)
    inputs = ("path", "omic")
    patch_score_kind = "the WSI backbone's patch scores"

    def __init__(self, *, omic_dim: int, path_dim: int = 1024, n_bins: int = 4, backbone: str = "abmil",
                 fusion: str = "concat",
                 embed_dim: int = 256, omic_hidden: tuple[int, ...] = (256, 256), kp_dim: int | None = 32,
                 gate_path: bool | None = None, gate_omic: bool | None = None, skip: bool = False,
                 dropinput: float = 0.0, dropout: float = 0.25, backbone_params: dict | None = None, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, omic_dim=omic_dim, **sizes)
        if fusion not in FUSIONS:
            raise ValueError(f"late fusion: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if omic_dim < 1:
            raise ValueError("late fusion needs at least one genomic column")
        omic_hidden = list(omic_hidden)
        self.fusion_kind = fusion
        self.dropinput = nn.Dropout(dropinput) if dropinput else None
        self.backbone = backbone
        self.path_branch, path_out = build_backbone(backbone, path_dim=path_dim, n_bins=n_bins,
                                                    dropout=dropout, backbone_params=backbone_params)
        self.omic_branch = snn_encoder(omic_dim, omic_hidden, 0.25)
        if fusion == "concat":
            self.fusion = concat_fusion(path_out + omic_hidden[-1], embed_dim)
        else:
            gated = fusion == "bilinear"
            self.fusion = BilinearFusion(path_out, kp_dim, embed_dim, skip=skip, dropout=dropout,
                                         omic_in_dim=omic_hidden[-1], encoder_dropout=self.fusion_encoder_dropout,
                                         gate_path=gated if gate_path is None else gate_path,
                                         gate_omic=gated if gate_omic is None else gate_omic)
        self.classifier = nn.Linear(embed_dim, n_bins)

    def fused_embedding(self, batch: Batch) -> tuple[torch.Tensor, ModelOutput]:
        """B×embed_dim fused embedding and the (headless) backbone's output."""
        omic = require(batch.omic, "genomic vector (omic)", type(self).__name__)
        if self.dropinput is not None:
            path = require(batch.path, "path", type(self).__name__)
            batch = Batch(values={**batch.values, "path": self.dropinput(path)}, mask=batch.mask, size=batch.size)
        path_output = self.path_branch(batch)
        h_path = path_output.logits  # the headless backbone's slide embedding
        h_omic = self.omic_branch(omic)
        if self.fusion_kind == "concat":
            return self.fusion(torch.cat([h_path, h_omic], dim=1)), path_output
        return self.fusion(h_path, h_omic), path_output

    def forward(self, batch: Batch) -> LateFusionOutput:
        fused, path_output = self.fused_embedding(batch)
        return LateFusionOutput(logits=self.classifier(fused), aux=dict(path_output.aux),
                                attention=path_output.attention, path_output=path_output)

    def patch_scores(self, output: ModelOutput) -> PatchScores:
        """The backbone's patch scores, from its own output."""
        path_output = getattr(output, "path_output", None)
        if path_output is None:
            raise NoPatchScores(f"model {type(self).__name__}: the output holds no backbone output")
        return self.path_branch.patch_scores(path_output)

    def loss(self, output: ModelOutput, target: Target) -> dict[str, torch.Tensor]:
        """MCAT's NLL on the fused logits, ``output.aux``, and the backbone's own label-dependent terms."""
        terms = super().loss(output, target)
        path_output = getattr(output, "path_output", None)
        if path_output is not None and type(self.path_branch).loss is not SurvivalModel.loss:
            extra = self.path_branch.loss(path_output, target)
            terms.update({k: v for k, v in extra.items() if k != SURVIVAL_TERM and k not in terms})
        return terms
