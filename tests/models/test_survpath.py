"""SurvPath: reference parameter counts, the sparse attention pattern, pathway coverage."""

from __future__ import annotations

from pathlib import Path

import torch

import mmsurv
from mmsurv.data.pathways import read_gene_sets
from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.survpath import PathwayPatchAttention, attention_mask

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]



def build(groups, path_dim=1024, **params):
    return build_model("survpath", ModelInputs(omic_dim=sum(groups), group_sizes=groups, path_dim=path_dim, n_bins=4),
                       params)


def test_parameter_counts_equal_the_reference():
    # mahmoodlab/SurvPath SurvPath(omic_sizes=..., wsi_embedding_dim=1024, wsi_projection_dim=256), trainable
    assert n_params(build(BLCA_GROUPS)) == 1_676_100
    # the 331 combined pathways (the shipped combine_signatures.csv) with every gene present
    sets = read_gene_sets(Path(mmsurv.__file__).parent / "resources" / "pathways" / "combine_signatures.csv")
    sizes = [len(genes) for genes in sets.values()]
    assert len(sizes) == 331
    assert n_params(build(sizes)) == 24_768_068


def test_attention_mask_has_the_papers_pattern():
    p, n = 3, 5
    mask = attention_mask(p, n)
    assert mask[:p, :].all(), "pathways attend to every pathway and every patch"
    assert mask[p:, :p].all(), "patches attend to every pathway"
    assert not mask[p:, p:].any(), "patches never attend to patches (not even themselves)"


def test_sparse_attention_equals_dense_masked_attention():
    torch.manual_seed(0)
    p, n, dim = 4, 9, 16
    layer = PathwayPatchAttention(dim, dim // 2)
    tokens = torch.randn(p + n, dim)
    out, weights = layer(tokens, p)
    q, k, v = layer.to_qkv(layer.norm(tokens)).chunk(3, dim=-1)
    scores = (q * layer.scale) @ k.T
    scores = scores.masked_fill(~attention_mask(p, n), float("-inf"))
    dense = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(out, dense @ v)
    torch.testing.assert_close(weights["patch_pathway"], dense[p:, :p])
    torch.testing.assert_close(weights["pathway_patch"], dense[:p, p:])


def test_which_tokens_each_output_depends_on_follows_the_mask():
    """Jacobian structure: output row i depends on input row j only where the mask allows (or i == j)."""
    torch.manual_seed(1)
    p, n, dim = 3, 4, 8
    layer = PathwayPatchAttention(dim, dim // 2)
    tokens = torch.randn(p + n, dim)
    jacobian = torch.autograd.functional.jacobian(lambda x: layer(x, p)[0], tokens)  # (P+N)×h×(P+N)×dim
    depends = jacobian.abs().sum(dim=(1, 3)) > 0
    expected = attention_mask(p, n) | torch.eye(p + n, dtype=torch.bool)  # a query row reads its own token
    assert torch.equal(depends, expected)


def test_never_builds_an_n_by_n_matrix():
    model = build([3, 5], path_dim=8).eval()
    batch = model.example_batch(bag_size=3000)
    largest = []

    def record(module, args, output):
        largest.append(max(output[1][name].numel() for name in output[1]))

    model.attention.register_forward_hook(record)
    with torch.no_grad():
        output = model(batch)
    assert largest[0] == 3000 * 2  # the N×P patch → pathway block, nothing of N×N
    assert output.attention["patch_pathway"].shape == (3000, 2)


def test_defaults_are_the_papers():
    from mmsurv.models import model_spec

    spec = model_spec("survpath")
    assert spec.inputs == ("path", "omic_groups:pathways")
    assert spec.defaults["data"] == {"max_patches": 4096, "groups": "pathways"}
    assert spec.defaults["training"]["optimizer"] == "radam" and spec.defaults["training"]["grad_accum"] == 1


def test_train_pad_patches_reproduces_the_reference_zero_padding_in_training_only():
    """train_pad_patches=P: a training bag of N < P patches runs as the bag plus P − N zero feature
    rows (the reference's loader pads and its forward drops the mask); evaluation is unpadded."""
    from mmsurv.models.base import Batch

    groups = [3, 4]
    torch.manual_seed(0)
    padded = build(groups, path_dim=8, train_pad_patches=12)
    plain = build(groups, path_dim=8)
    plain.load_state_dict(padded.state_dict())
    omic = [torch.randn(1, 3), torch.randn(1, 4)]
    bag = torch.randn(5, 8)

    def run(model, path, train):
        model.train(train)
        torch.manual_seed(1)
        values = {"path": path.unsqueeze(0), "omic_groups": omic}
        return model(Batch(values=values, mask=None, size=1)).logits

    zero_rows = torch.cat([bag, torch.zeros(7, 8)])
    torch.testing.assert_close(run(padded, bag, True), run(plain, zero_rows, True))
    assert not torch.allclose(run(padded, bag, True), run(plain, bag, True))
    torch.testing.assert_close(run(padded, bag, False), run(plain, bag, False))
    assert run(padded, torch.randn(20, 8), True).shape == (1, 4)  # larger bags are left alone
