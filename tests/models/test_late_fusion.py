"""Late fusion (ABMIL + SNN, concat / Kronecker / gated bilinear): reference sizes and invariants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsurv.models import Batch, ModelInputs, available_models, build_model, n_params
from mmsurv.models.late_fusion import BilinearFusion, build_backbone, kronecker_product

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
BLCA = ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=1024, n_bins=4)
TINY = ModelInputs(omic_dim=50, group_sizes=[3, 7, 5], path_dim=32, n_bins=4)

torch.set_num_threads(1)


def test_parameter_counts_match_mcat_reference_on_blca():
    assert sum(BLCA_GROUPS) == 3392
    assert n_params(build_model("abmil_cat", BLCA)) == 2_051_589  # MCAT AMIL, fusion='concat'
    assert n_params(build_model("abmil_cat", BLCA, {"fusion": "bilinear"})) == 2_250_693  # MCAT AMIL, 'bilinear'
    # The KP rows are MCAT's gated BilinearFusion (fusion='bilinear'): the reference's count.
    assert n_params(build_model("abmil_kp", BLCA)) == 2_250_693
    # Ungated variant = MCAT's BilinearFusion with both gates off, without the two unused gate layers (2 × 16,416).
    assert n_params(build_model("abmil_kp", BLCA, {"fusion": "kronecker"})) == 2_250_693 - 2 * (512 * 32 + 32) == 2_217_861


@pytest.mark.parametrize("name, count, gate_in", [("transmil_kp", 4_027_348, 512 + 256), ("clam_mb_kp", 2_296_272, 2048 + 256)])
def test_other_kp_rows_are_gated_and_ungated_is_a_variant(name, count, gate_in):
    model = build_model(name, BLCA)
    assert n_params(model) == count
    assert model.fusion.path_gate.in_features == model.fusion.omic_gate.in_features == gate_in
    gates = 2 * (gate_in * 32 + 32)
    assert n_params(build_model(name, BLCA, {"fusion": "kronecker"})) == count - gates


def mcat_bilinear_fusion_by_hand(fusion: BilinearFusion, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """MCAT's BilinearFusion.forward (gates on, no skip) written out from its layers' weights."""
    linear = lambda layer, x: x @ layer.weight.t() + layer.bias  # noqa: E731
    both = torch.cat([v1, v2], dim=1)
    o1 = torch.relu(linear(fusion.path_o[0], torch.sigmoid(linear(fusion.path_gate, both)) * torch.relu(linear(fusion.path_h[0], v1))))
    o2 = torch.relu(linear(fusion.omic_o[0], torch.sigmoid(linear(fusion.omic_gate, both)) * torch.relu(linear(fusion.omic_h[0], v2))))
    ones = torch.ones(v1.shape[0], 1)
    o12 = torch.bmm(torch.cat([o1, ones], 1).unsqueeze(2), torch.cat([o2, ones], 1).unsqueeze(1)).flatten(start_dim=1)
    return torch.relu(linear(fusion.encoder2[0], torch.relu(linear(fusion.encoder1[0], o12))))


def test_kp_fusion_is_mcats_gated_layer_with_dropout_after_both_encoders():
    torch.manual_seed(0)
    model = build_model("abmil_kp", BLCA)
    fusion = model.fusion
    assert fusion.path_gate is not None and fusion.omic_gate is not None and not fusion.skip
    for encoder in (fusion.encoder1, fusion.encoder2):  # MCAT: Linear → ReLU → Dropout(0.25)
        assert [type(m) for m in encoder] == [nn.Linear, nn.ReLU, nn.Dropout] and encoder[2].p == 0.25
    v1, v2 = torch.randn(3, 256), torch.randn(3, 256)
    fusion.eval()
    torch.testing.assert_close(fusion(v1, v2), mcat_bilinear_fusion_by_hand(fusion, v1, v2))
    fusion.train()  # with the other dropouts off, training differs from evaluation by the encoder dropouts only
    for dropout in (fusion.path_o[2], fusion.omic_o[2], fusion.post_dropout):
        dropout.p = 0.0
    assert not torch.allclose(fusion(v1, v2), mcat_bilinear_fusion_by_hand(fusion, v1, v2))
    fusion.encoder1[2].p = fusion.encoder2[2].p = 0.0
    torch.testing.assert_close(fusion(v1, v2), mcat_bilinear_fusion_by_hand(fusion, v1, v2))
    # PORPOISE's layer has no dropout after its encoders.
    porpoise = build_model("porpoise_mmf", BLCA).fusion
    assert [type(m) for m in porpoise.encoder1] == [nn.Linear, nn.ReLU] and len(porpoise.encoder2) == 2


def test_concat_model_has_the_reference_layers():
    model = build_model("abmil_cat", BLCA)
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(1024, 512), (512, 256), (512, 256), (256, 1), (512, 256),  # ABMIL without its head
                      (3392, 256), (256, 256),  # SNN over all genomics
                      (512, 256), (256, 256),  # concat fusion
                      (256, 4)]
    assert all(isinstance(block[1], nn.ELU) and isinstance(block[2], nn.AlphaDropout) for block in model.omic_branch)


def test_kronecker_product_size_and_terms():
    h_path, h_omic = torch.randn(2, 5), torch.randn(2, 3)
    product = kronecker_product(h_path, h_omic)
    assert product.shape == (2, (5 + 1) * (3 + 1))
    for row in range(2):
        ones = torch.ones(1)
        expected = torch.kron(torch.cat([h_path[row], ones]), torch.cat([h_omic[row], ones]))
        assert torch.allclose(product[row], expected)
    # The constant 1s keep each unimodal embedding inside the product.
    grid = product.reshape(2, 6, 4)
    assert torch.allclose(grid[:, :5, 3], h_path) and torch.allclose(grid[:, 5, :3], h_omic) and torch.all(grid[:, 5, 3] == 1)


@pytest.mark.parametrize("kp_dim, expected", [(32, 33 * 33), (8, 9 * 9), (None, 257 * 257)])
def test_kp_fusion_input_is_d_path_plus_one_times_d_omic_plus_one(kp_dim, expected):
    fusion = BilinearFusion(256, kp_dim, gate_path=False, gate_omic=False)
    assert fusion.encoder1[0].in_features == expected
    assert fusion.path_gate is None and fusion.omic_gate is None
    assert fusion(torch.randn(1, 256), torch.randn(1, 256)).shape == (1, 256)


def test_gates_and_skip_connection_learn():
    torch.manual_seed(0)
    gated = BilinearFusion(16, 8, out_dim=8, hidden_dim=8, skip=True).eval()
    assert gated.encoder2[0].in_features == 8 + 32
    out = gated(torch.randn(16, 16), torch.randn(16, 16))
    out.sum().backward()
    assert gated.path_gate.weight.grad.abs().sum() > 0 and gated.omic_gate.weight.grad.abs().sum() > 0


def test_both_branches_get_gradients():
    for name in ("abmil_cat", "abmil_kp"):
        torch.manual_seed(0)
        model = build_model(name, TINY).train()
        batch = model.example_batch(bag_size=20)
        output = model(batch)
        sum(model.loss(output, model.example_target()).values()).backward()
        assert model.path_branch.fc[0].weight.grad.abs().sum() > 0, name
        assert model.omic_branch[0][0].weight.grad.abs().sum() > 0, name
        assert output.attention["path"].shape == (1, 20)


def test_slide_embedding_is_abmil_without_its_head():
    torch.manual_seed(0)
    fusion = build_model("abmil_cat", TINY).eval()
    abmil = build_model("abmil", TINY).eval()
    assert not any(name.startswith("classifier") for name, _ in fusion.path_branch.named_parameters())
    missing, unexpected = abmil.load_state_dict(fusion.path_branch.state_dict(), strict=False)
    assert missing == ["classifier.weight", "classifier.bias"] and not unexpected
    bag = torch.randn(12, TINY.path_dim)
    with torch.no_grad():
        embedding = fusion.path_branch(Batch.single(path=bag)).logits
        assert embedding.shape == (1, 256)
        assert torch.allclose(abmil.classifier(embedding), abmil(Batch.single(path=bag)).logits, atol=1e-6)


def test_backbone_must_be_a_pathology_model_naming_its_embedding_head():
    with pytest.raises(ValueError, match="must be a pathology model"):
        build_backbone("snn", path_dim=32, n_bins=4, dropout=0.25)
    with pytest.raises(ValueError, match="names no embedding_head"):
        build_backbone("patch_gcn", path_dim=32, n_bins=4, dropout=0.25)
    with pytest.raises(ValueError, match="fusion must be one of"):
        build_model("abmil_cat", TINY, {"fusion": "sum"})


def test_dropinput_only_in_training():
    torch.manual_seed(0)
    model = build_model("abmil_cat", TINY, {"dropinput": 0.5}).eval()
    batch = model.example_batch(bag_size=10)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)


def test_every_late_fusion_row_has_its_backbone_registered():
    from mmsurv.models.late_fusion import LateFusion
    from mmsurv.models.registry import model_spec

    for name in available_models():
        spec = model_spec(name)
        if issubclass(spec.model_class, LateFusion):
            backbone = spec.parameters()["backbone"]
            assert backbone in available_models(), name
            assert name.startswith(backbone) and name.endswith(("_cat", "_kp")) or name == "porpoise_mmf"
            assert spec.parameters()["fusion"] == ("concat" if name.endswith("_cat") else "bilinear"), name


def test_backbone_label_terms_join_the_loss():
    from mmsurv.models.abmil import ABMIL
    from mmsurv.models.base import Target

    class LabelledABMIL(ABMIL):  # a backbone whose own loss reads the label (as CLAM's instance loss)
        def loss(self, output, target):
            return {"surv": output.logits.sum(), "instance": output.logits.mean() * (target.label.float() + 1).sum()}

    torch.manual_seed(0)
    model = build_model("abmil_cat", TINY)
    backbone = LabelledABMIL(path_dim=TINY.path_dim)
    backbone.classifier = nn.Identity()
    model.path_branch = backbone
    output = model(model.example_batch(bag_size=9))
    terms = model.loss(output, Target(torch.tensor([1]), torch.tensor([0.0]), torch.tensor([5.0])))
    assert set(terms) == {"surv", "instance"}
    assert torch.allclose(terms["instance"], output.path_output.logits.mean() * 2)
    plain = build_model("abmil_cat", TINY)
    assert set(plain.loss(plain(plain.example_batch(bag_size=9)), plain.example_target())) == {"surv"}


def test_all_six_late_fusion_rows_are_registered():
    assert {"abmil_cat", "abmil_kp", "clam_mb_cat", "clam_mb_kp", "transmil_cat", "transmil_kp"} <= set(available_models())


@pytest.mark.parametrize("backbone, embedding", [("transmil", 512), ("clam_mb", 4 * 512)])
def test_kp_takes_a_slide_embedding_of_another_size_than_the_genomic_one(backbone, embedding):
    model = build_model(f"{backbone}_kp", BLCA)
    assert model.fusion.path_h[0].in_features == embedding and model.fusion.omic_h[0].in_features == 256
    assert model.fusion.encoder1[0].in_features == 33 * 33
    # Parameters: the headless backbone + the SNN + the fusion + the head, nothing else.
    headless, size = build_backbone(backbone, path_dim=1024, n_bins=4, dropout=0.25)
    assert size == embedding
    parts = [headless, model.omic_branch, model.fusion, model.classifier]
    assert n_params(model) == sum(n_params(part) for part in parts)


def test_clam_mb_late_fusion_embeds_every_bin_and_keeps_the_instance_term():
    torch.manual_seed(0)
    model = build_model("clam_mb_cat", TINY)
    output = model(model.example_batch(bag_size=20))
    assert output.path_output.logits.shape == (1, 4 * 512)
    pooled = output.path_output.attention["path"] @ output.path_output.features  # 4 bins × 512
    assert torch.allclose(output.path_output.logits, pooled.reshape(1, -1))
    terms = model.loss(output, model.example_target())
    assert set(terms) == {"surv", "instance"} and terms["instance"] > 0
    sum(terms.values()).backward()
    assert model.path_branch.instance_classifiers[int(model.example_target().label)].weight.grad.abs().sum() > 0


def test_backbone_params_reach_the_backbone_and_unknown_ones_are_named():
    from mmsurv.models import ModelInputs, build_model

    inputs = ModelInputs(omic_dim=12, path_dim=32, n_bins=4)
    model = build_model("transmil_cat", inputs, {"backbone_params": {"adaptive_landmarks": True}})
    assert model.path_branch.layer1.attn.adaptive_landmarks is True
    assert build_model("transmil_cat", inputs).path_branch.layer1.attn.adaptive_landmarks is False
    with pytest.raises(ValueError, match="no parameter.*landmark_count"):
        build_model("transmil_kp", inputs, {"backbone_params": {"landmark_count": 3}})
