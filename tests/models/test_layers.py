"""Shared blocks of mmsurv.models.layers: Nyström attention with adaptive landmarks."""

import pytest
import torch

from mmsurv.models.layers import ClassTokenEncoder, nystrom_attention, use_adaptive_landmarks

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
    layer = nystrom_attention(32, heads=4, dropout=0.0, pinv_iterations=20).eval()  # 16 landmarks
    x = torch.randn(1, 9, 32)
    out = layer(x)
    assert layer.num_landmarks == 9
    torch.testing.assert_close(out, _softmax_attention(layer, x), atol=1e-4, rtol=1e-4)


def test_long_sequences_keep_the_package_behaviour_and_the_switch_restores_it_for_short_ones():
    torch.manual_seed(0)
    layer = nystrom_attention(32, heads=4, dropout=0.0).eval()
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
