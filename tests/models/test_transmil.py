"""TransMIL: reference parameter count, square padding, PPEG around the class token, Nyström layers."""

from __future__ import annotations

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.layers import PPEG, pad_to_square
from mmsurv.models.transmil import TransMIL


def small(seed: int = 0) -> TransMIL:
    torch.manual_seed(seed)
    return TransMIL(path_dim=16, n_bins=4, dim=32, heads=4)


def test_parameter_count_equals_the_official_code():
    assert n_params(build_model("transmil", ModelInputs())) == 2_673_172


def test_layers_are_the_nystrom_packages_settings():
    from nystrom_attention import NystromAttention

    model = build_model("transmil", ModelInputs())
    attention = model.layer1.attn
    package = NystromAttention(dim=512, dim_head=64, heads=8, num_landmarks=256, pinv_iterations=6, residual=True,
                               dropout=0.1)
    assert attention.state_dict().keys() == package.state_dict().keys()
    assert all(a.shape == b.shape for a, b in zip(attention.state_dict().values(), package.state_dict().values()))
    assert attention.heads == 8 and attention.num_landmarks == 256 and attention.pinv_iterations == 6
    assert [conv.kernel_size for conv in model.ppeg.convs] == [(7, 7), (5, 5), (3, 3)]
    assert all(conv.groups == 512 for conv in model.ppeg.convs)


@pytest.mark.parametrize("n, side", [(1, 1), (4, 2), (10, 4), (37, 7), (49, 7), (50, 8)])
def test_pad_to_square_repeats_the_first_tokens(n, side):
    tokens = torch.randn(1, n, 3)
    padded, got = pad_to_square(tokens)
    assert got == side and padded.shape == (1, side * side, 3)
    assert torch.equal(padded[:, :n], tokens)
    extra = side * side - n
    assert torch.equal(padded[:, n:], tokens[:, torch.arange(extra) % n])


def test_ppeg_keeps_the_class_token_and_is_identity_without_convolutions():
    torch.manual_seed(0)
    ppeg = PPEG(8)
    x = torch.randn(2, 1 + 9, 8)
    out = ppeg(x, 3)
    assert out.shape == x.shape and torch.equal(out[:, 0], x[:, 0])
    assert not torch.allclose(out[:, 1:], x[:, 1:])
    for conv in ppeg.convs:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    assert torch.equal(ppeg(x, 3), x)
    with pytest.raises(ValueError, match="grid"):
        ppeg(x, 4)


def test_ppeg_convolves_the_row_major_grid():
    """A change to one patch token moves only its 7×7 neighbourhood on the grid (depthwise, local)."""
    torch.manual_seed(0)
    ppeg = PPEG(4)
    side = 10
    x = torch.randn(1, 1 + side * side, 4)
    y = x.clone()
    y[0, 1 + 0] += 1.0  # grid cell (0, 0)
    changed = (ppeg(y, side) - ppeg(x, side)).abs().sum(dim=2)[0, 1:].reshape(side, side) > 0
    assert changed[:4, :4].all() and not changed[4:, :].any() and not changed[:, 4:].any()


def test_forward_pads_to_a_square_and_reads_the_class_token():
    model = small().eval()
    seen = []
    model.ppeg.register_forward_pre_hook(lambda module, args: seen.append((args[0].shape[1], args[1])))
    batch = model.example_batch(bag_size=37)
    output = model(batch)
    assert seen == [(1 + 49, 7)] and output.logits.shape == (1, 4)
    model.train()
    model(batch).logits.sum().backward()
    assert model.cls_token.grad is not None and model.cls_token.grad.abs().sum() > 0


def test_patch_order_matters_through_the_ppeg_grid():
    """PPEG makes TransMIL order-dependent (the grid is row-major): a shuffled bag changes the output."""
    model = small().eval()
    batch = model.example_batch(bag_size=36)
    with torch.no_grad():
        reference = model(batch).logits
        batch.values["path"] = batch.values["path"][:, torch.randperm(36, generator=torch.Generator().manual_seed(1))]
        assert not torch.allclose(reference, model(batch).logits)


def test_landmarks_are_the_references_by_default_and_adaptive_ones_are_an_option():
    model = small()  # dim 32: 16 landmarks
    batch = model.example_batch(bag_size=8)  # 1 + 9 tokens
    model(batch)
    assert model.layer1.attn.num_landmarks == 16 and model.layer2.attn.num_landmarks == 16
    adaptive = TransMIL(path_dim=16, dim=32, heads=4, adaptive_landmarks=True)
    adaptive(batch)
    assert adaptive.layer1.attn.num_landmarks == 10 and adaptive.layer2.attn.num_landmarks == 10
    adaptive(adaptive.example_batch(bag_size=40))  # 1 + 49 tokens: the reference count
    assert adaptive.layer1.attn.num_landmarks == 16


def test_checkpointed_layers_give_the_same_output_and_gradients():
    batch = small().example_batch(bag_size=40)
    results = []
    for threshold in (0, 10):
        torch.manual_seed(0)
        model = TransMIL(path_dim=16, dim=32, heads=4, checkpoint_tokens=threshold).train()
        torch.manual_seed(1)  # same dropout draws
        output = model(batch).logits
        output.sum().backward()
        results.append((output.detach(), [p.grad.clone() for p in model.parameters()]))
    (out0, grads0), (out1, grads1) = results
    assert torch.equal(out0, out1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads0, grads1))


def test_a_checkpoint_from_before_the_shared_nystrom_block_still_loads():
    """TransMIL's layers named their attention ``attention``; the shared block names it ``attn``."""
    torch.manual_seed(0)
    model = TransMIL(path_dim=16, n_bins=4, dim=32, landmarks=8)
    old = {key.replace(".attn.", ".attention."): value.clone() for key, value in model.state_dict().items()}
    assert any(".attention." in key for key in old)
    torch.manual_seed(1)
    fresh = TransMIL(path_dim=16, n_bins=4, dim=32, landmarks=8)
    fresh.load_state_dict(old)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
