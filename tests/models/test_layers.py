"""Shared blocks of mmsurv.models.layers: Nyström attention with adaptive landmarks."""

import pytest
import torch

from mmsurv.models.layers import (
    ClassTokenEncoder,
    micro_batch_output,
    micro_batches,
    nystrom_attention,
    run_micro_batches,
    use_adaptive_landmarks,
)

pytest.importorskip("nystrom_attention")


def _softmax_attention(layer, x):
    """Full softmax attention with the layer's weights and its value residual convolution."""
    q, k, v = layer.to_qkv(x).chunk(3, dim=-1)
    heads = layer.heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(q) * layer.scale, split(k), split(v)
    out = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v + layer.res_conv(v)
    return layer.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


def test_a_short_sequence_is_its_own_landmark_set_and_gives_softmax_attention():
    # Exact up to the iterative pseudo-inverse: 20 iterations make it negligible (6, the default, ~1e-2).
    torch.manual_seed(0)
    layer = nystrom_attention(32, heads=4, dropout=0.0, pinv_iterations=20, adaptive=True).eval()  # 16 landmarks
    x = torch.randn(1, 9, 32)
    out = layer(x)
    assert layer.num_landmarks == 9
    torch.testing.assert_close(out, _softmax_attention(layer, x), atol=1e-4, rtol=1e-4)


def test_long_sequences_keep_the_package_behaviour_and_the_switch_restores_it_for_short_ones():
    torch.manual_seed(0)
    layer = nystrom_attention(32, heads=4, dropout=0.0, adaptive=True).eval()
    layer(torch.randn(1, 40, 32))
    assert layer.num_landmarks == 16
    use_adaptive_landmarks(layer, False)
    x = torch.randn(1, 9, 32)
    padded = layer(x)
    assert layer.num_landmarks == 16
    assert not torch.allclose(padded, _softmax_attention(layer, x), atol=2e-3)  # zero rows dilute it


def test_class_token_encoder_pads_the_bag_to_a_square_and_all_parameters_learn():
    torch.manual_seed(0)
    encoder = ClassTokenEncoder(32, positional=True)
    cls, tokens = encoder(torch.randn(1, 10, 32))
    assert cls.shape == (1, 32) and tokens.shape == (1, 16, 32)  # 10 → 4×4 grid
    (cls.sum() + tokens.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_by_default_the_layer_is_the_packages_on_a_sequence_shorter_than_the_landmarks():
    from nystrom_attention import NystromAttention

    torch.manual_seed(0)
    ours = nystrom_attention(32, heads=4).eval()  # 16 landmarks, zero padding as the package
    package = NystromAttention(dim=32, dim_head=8, heads=4, num_landmarks=16, pinv_iterations=6, residual=True,
                               dropout=0.1).eval()
    package.load_state_dict(ours.state_dict())
    x = torch.randn(1, 7, 32)
    assert torch.equal(ours(x), package(x)) and ours.num_landmarks == 16


@pytest.mark.parametrize("name", ["cmta", "mome", "hdmoe", "transmil"])
def test_every_nystrom_layer_of_a_model_with_a_reference_has_adaptive_landmarks_off_by_default(name):
    from mmsurv.models import ModelInputs, build_model

    inputs = ModelInputs(omic_dim=15, group_sizes=[3, 7, 5], path_dim=16, n_bins=4)
    small = {"cmta": {"embed_dim": 32, "path_hidden": (32, 32), "omic_hidden": (32, 32)}, "mome": {"dim": 32},
             "hdmoe": {"gate_dim": 32, "omic_hidden": 32}, "transmil": {"dim": 32}}[name]
    for params, adaptive in (({}, False), ({"adaptive_landmarks": True}, True)):
        model = build_model(name, inputs, {**small, **params})
        layers = [m for m in model.modules() if hasattr(m, "max_landmarks")]
        assert layers and all(m.adaptive_landmarks is adaptive for m in layers)


def test_micro_batches_are_a_seeded_shuffle_in_near_equal_chunks():
    first = micro_batches(10_000, 4096, torch.Generator().manual_seed(3))
    again = micro_batches(10_000, 4096, torch.Generator().manual_seed(3))
    assert [len(c) for c in first] == [3334, 3333, 3333]  # 10,000 // 4,096 + 1 chunks
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sorted(torch.cat(first).tolist()) == list(range(10_000))
    assert len(micro_batches(4095, 4096)) == 1 and len(micro_batches(4096, 4096)) == 2  # the references' rule
    torch.manual_seed(5)
    drawn = micro_batches(50, 16)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(drawn, micro_batches(50, 16)))  # global generator, seeded run


def test_run_micro_batches_without_a_size_is_the_whole_bag_in_order():
    path = torch.randn(9, 4)
    chunks, results = run_micro_batches(lambda rows, scale: rows * scale, path, None, None, 2.0)
    assert len(results) == 1 and torch.equal(results[0], path * 2) and torch.equal(chunks[0], torch.arange(9))
    chunks, results = run_micro_batches(lambda rows: rows, path, 4, torch.Generator().manual_seed(0))
    assert [len(c) for c in chunks] == [3, 3, 3]
    assert all(torch.equal(result, path[rows]) for rows, result in zip(chunks, results))


def test_micro_batch_output_and_loss_are_means_over_chunks():
    from mmsurv.models.base import SurvivalModel, Target
    from mmsurv.models.survival import nll_surv_loss

    class Chunked(SurvivalModel):  # the contract's default loss reads the chunks
        pass

    chunk_logits = torch.randn(3, 4)
    output = micro_batch_output(chunk_logits, aux={"extra": torch.tensor(0.5)})
    risks = -torch.cumprod(torch.sigmoid(-chunk_logits), dim=1).sum(dim=1)
    torch.testing.assert_close(output.risk, risks.mean().reshape(1))
    mean_curve = torch.cumprod(torch.sigmoid(-chunk_logits), dim=1).mean(0, keepdim=True)
    torch.testing.assert_close(output.survival, mean_curve)
    target = Target(torch.tensor([2]), torch.tensor([0.0]), torch.tensor([10.0]))
    terms = Chunked().loss(output, target)
    per_chunk = [nll_surv_loss(torch.sigmoid(row[None]), torch.cumprod(torch.sigmoid(-row[None]), dim=1),
                               target.label, target.censorship) for row in chunk_logits]
    torch.testing.assert_close(terms["surv"], torch.stack(per_chunk).mean())
    assert terms["extra"] == 0.5
    weighted = Chunked().loss(output, Target(target.label, target.censorship, target.time, alpha=0.4))
    per_chunk = [nll_surv_loss(torch.sigmoid(row[None]), torch.cumprod(torch.sigmoid(-row[None]), dim=1),
                               target.label, target.censorship, alpha=0.4) for row in chunk_logits]
    torch.testing.assert_close(weighted["surv"], torch.stack(per_chunk).mean())  # alpha reaches every chunk


@pytest.mark.parametrize("name, encoder, tokens", [("hdmoe", "omic_encoder", 6), ("hdmoe", "path_encoder", 24),
                                                   ("cmta", "omic_encoder", 6), ("cmta", "path_decoder", 24)])
def test_hdmoe_and_cmta_encoders_at_defaults_equal_the_package_layers_on_short_sequences(name, encoder, tokens):
    # The references build their TransLayers from nystrom_attention.NystromAttention(dim=256, dim_head=32,
    # heads=8, num_landmarks=128, pinv_iterations=6, residual=True, dropout=0.1): the 7-token genomic
    # sequence and a 24-patch bag (5×5 grid + class token) are zero-padded to 128 tokens there.
    from nystrom_attention import NystromAttention

    from mmsurv.models import ModelInputs, build_model

    torch.manual_seed(0)
    model = build_model(name, ModelInputs(omic_dim=15, group_sizes=[3, 7, 5, 4, 6, 2], path_dim=16)).eval()
    ours = getattr(model, encoder)
    packages = []
    for layer in (ours.layer1, ours.layer2):
        package = NystromAttention(dim=256, dim_head=32, heads=8, num_landmarks=128, pinv_iterations=6,
                                   residual=True, dropout=0.1).eval()
        package.load_state_dict(layer.attn.state_dict())
        packages.append(package)
    x = torch.randn(1, tokens, 256)
    with torch.no_grad():
        cls, _ = ours(x)
        h = x
        side = 0
        if ours.positional is not None:
            side = int(tokens ** 0.5 + 0.999)
            h = torch.cat([h, h[:, :side * side - tokens]], dim=1)
        h = torch.cat([ours.cls_token, h], dim=1)
        h = h + packages[0](ours.layer1.norm(h))
        if ours.positional is not None:
            h = ours.positional(h, side)
        h = ours.norm(h + packages[1](ours.layer2.norm(h)))
    assert torch.equal(cls, h[:, 0])


@pytest.mark.parametrize(("tokens", "landmarks", "chunk"), [(25, 256, 7), (512, 256, 100), (3001, 64, 1000)])
def test_bounded_nystrom_attention_equals_the_package_up_to_rounding(tokens, landmarks, chunk):
    """The heatmaps' bounded-memory evaluation (front padding, landmarks, pseudo-inverse, value
    convolution; chunked softmax and reassociation) against the package's own forward."""
    from mmsurv.models.layers import nystrom_attention, nystrom_attention_bounded, nystrom_class_row

    torch.manual_seed(tokens)
    attention = nystrom_attention(64, heads=4, landmarks=landmarks).eval()
    x = torch.randn(2, tokens, 64)
    with torch.no_grad():
        expected, matrices = attention(x, return_attn_matrices=True)
        out, row = nystrom_attention_bounded(attention, x, chunk=chunk)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(row, nystrom_class_row(matrices, tokens), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("tokens", "landmarks", "batch"), [(7, 7, 1), (26, 26, 1), (9, 16, 2), (70, 70, 1),
                                                            (300, 128, 1), (1000, 64, 2)])
def test_the_layer_equals_the_package_forward_and_gradients(tokens, landmarks, batch):
    # Short sequences take the banded-product value convolution, long ones the convolution; one
    # token per landmark (no segment sum) at tokens == landmarks; padding at 9 of 16 and 300 of 128.
    from nystrom_attention import NystromAttention as PackageAttention

    from mmsurv.models.layers import NystromAttention

    torch.manual_seed(0)
    ours = NystromAttention(dim=64, dim_head=16, heads=4, num_landmarks=landmarks, dropout=0.0)
    package = PackageAttention(dim=64, dim_head=16, heads=4, num_landmarks=landmarks, pinv_iterations=6,
                               residual=True, dropout=0.0)
    package.load_state_dict(ours.state_dict())
    x = torch.randn(batch, tokens, 64, requires_grad=True)
    expected, got = package(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    weight = torch.randn_like(expected)
    grads = [torch.autograd.grad((out * weight).sum(), [x, *layer.parameters()])
             for out, layer in ((expected, package), (got, ours))]
    for want, have in zip(*grads):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    _, matrices = ours(x.detach(), return_attn_matrices=True)
    _, package_matrices = package(x.detach(), return_attn_matrices=True)
    for have, want in zip(matrices, package_matrices):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)


def test_the_cached_constants_serve_autograd_after_inference_mode():
    from mmsurv.models.layers import NystromAttention, _band_index, _identity_multiples

    _band_index.cache_clear()
    _identity_multiples.cache_clear()
    layer = NystromAttention(dim=32, dim_head=8, heads=4, num_landmarks=11)
    x = torch.randn(1, 11, 32)
    with torch.inference_mode():
        first = layer(x)
    again = layer(x.requires_grad_())
    again.sum().backward()  # the band index and identities cached under inference mode are ordinary tensors
    torch.testing.assert_close(again, first)
    assert layer.res_conv.weight.grad is not None
