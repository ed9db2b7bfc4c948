"""MMM (published design) and MMM v1: parameter counts, Gaussian bias, DAM, straight-through router, ablations,
the release's micro-batches and constant learning rate."""

from __future__ import annotations

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.layers import micro_batches
from mmsurv.models.mmm import DAM, GME, MMM, GaussianCrossAttention, gaussian_bias, positions, tile_tokens
from mmsurv.models.mmm_v1 import MMMv1
from mmsurv.models.registry import resolve_model
from mmsurv.models.survival import nll_surv_loss

BLCA = ModelInputs(omic_dim=3392, group_sizes=[94, 334, 521, 468, 1496, 479])
TINY = dict(group_sizes=[3, 5, 4], path_dim=16, n_bins=4, dim=32, dim2=16, attn_dim=8)



def test_parameter_counts_on_blca():
    assert n_params(build_model("mmm_v1", BLCA)) == 1_856_516  # the released first version's count
    mmm = n_params(build_model("mmm", BLCA))
    assert mmm == 1_877_496
    assert 11 < 21.7e6 / mmm < 13  # "about 12× fewer parameters than MoME (21.7 M)"


def test_gaussian_bias_peaks_on_the_diagonal_and_sigma_learns():
    n = 9
    sigma = torch.tensor(0.2, requires_grad=True)
    bias = gaussian_bias(positions(n), positions(n), sigma)
    assert torch.equal(bias.argmax(dim=1), torch.arange(n)) and torch.equal(bias.diagonal(), torch.zeros(n))
    assert (bias[0, 1:].diff() < 0).all()  # decreasing with the distance
    torch.manual_seed(0)
    for length in (12, 200):  # exact keys, and keys pooled to 64 segments
        attention = GaussianCrossAttention(8, attn_dim=4, sigma=0.2, segments=64)
        out = attention(torch.randn(length, 8), torch.randn(length, 8))
        (out * torch.randn_like(out)).sum().backward()
        assert attention.log_sigma.grad is not None and attention.log_sigma.grad.abs() > 0


def test_small_sigma_makes_each_query_attend_its_own_position():
    attention = GaussianCrossAttention(4, attn_dim=2, sigma=1e-3, segments=64)
    torch.nn.init.zeros_(attention.query.weight)
    keys = torch.randn(10, 4)
    assert torch.allclose(attention(torch.randn(10, 4), keys), keys, atol=1e-5)


def test_dam_with_zero_weights_is_the_identity_map_of_its_formula():
    torch.manual_seed(0)
    dam = DAM(6)
    x_img, x_gene = torch.randn(5, 6), torch.randn(5, 6)
    with torch.no_grad():
        for layer in (dam.image, dam.gene):
            layer.weight.zero_()
    a_img, b_img = dam.image.bias.detach().chunk(2)
    a_gene, b_gene = dam.gene.bias.detach().chunk(2)
    out_img, out_gene = dam(x_img, x_gene)
    assert torch.allclose(out_img, (b_img * (1 + a_gene) + a_gene).expand(5, 6))
    assert torch.allclose(out_gene, (b_gene * (1 + a_img) + a_img).expand(5, 6))
    with torch.no_grad():  # zero modulation (a = 0) and identity carriers (b = x): the identity map
        for layer in (dam.image, dam.gene):
            layer.bias.zero_()
            layer.weight[6:] = torch.eye(6)
    out_img, out_gene = dam(x_img, x_gene)
    assert torch.equal(out_img, x_img) and torch.equal(out_gene, x_gene)


def test_straight_through_router_experts_and_gates_receive_gradients_in_a_short_run():
    torch.manual_seed(0)
    model = MMM(**TINY).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gmes = {"gme1": model.gme1, "gme2": model.gme2}
    seen: dict[str, bool] = {}
    for step in range(8):
        batch = model.example_batch(bag_size=20 + step, seed=step)
        output = model(batch)
        optimizer.zero_grad()
        sum(model.loss(output, model.example_target(seed=step)).values()).backward()
        for name, gme in gmes.items():
            parts = {"router": gme.router, "image_gate": gme.image_gate, "gene_gate": gme.gene_gate,
                     "sigma_ig": gme.image_from_gene.log_sigma, "sigma_gi": gme.gene_from_image.log_sigma}
            parts |= {f"image_expert{i}": e for i, e in enumerate(gme.image_experts)}
            parts |= {f"gene_expert{i}": e for i, e in enumerate(gme.gene_experts)}
            for part, module in parts.items():
                params = [module] if isinstance(module, torch.nn.Parameter) else list(module.parameters())
                got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
                seen[f"{name}.{part}"] = seen.get(f"{name}.{part}", False) or got
        optimizer.step()
    assert all(seen.values()), [k for k, v in seen.items() if not v]


def test_rounds_pick_distinct_pairs_and_the_balance_term_is_reported():
    torch.manual_seed(0)
    gme = GME(8, n_experts=3, rounds=4)
    _, _, balance, info = gme(torch.randn(7, 8), torch.randn(7, 8))
    # N·Σ f·P ≥ 1: the chosen pairs are the most probable ones
    assert info["pair_probs"].shape == (9,) and float(balance.detach()) >= 1.0 - 1e-6
    model = MMM(**TINY).train()
    terms = model.loss(model(model.example_batch(bag_size=15)), model.example_target())
    assert set(terms) == {"surv", "balance"}
    with pytest.raises(ValueError, match="rounds"):
        GME(8, n_experts=2, rounds=5)


def test_ablation_flags_and_config_variants():
    models = {"mmm_no_rounds": {"model": "mmm", "rounds": 0}, "mmm_no_dam": {"model": "mmm", "dam": False},
              "mmm_no_gauss": {"model": "mmm", "gaussian": False}}
    inputs = ModelInputs(omic_dim=12, group_sizes=[3, 5, 4], path_dim=16)
    built = {}
    for name in models:
        variant = resolve_model(name, models)
        built[name] = variant.spec.builder(inputs, **variant.params).train()
        out = built[name](built[name].example_batch(bag_size=11))
        assert torch.isfinite(out.logits).all()
    assert not hasattr(built["mmm_no_rounds"].gme1, "router")
    assert "balance" not in built["mmm_no_rounds"].loss(built["mmm_no_rounds"](built["mmm_no_rounds"].example_batch()),
                                                         built["mmm_no_rounds"].example_target())
    assert built["mmm_no_dam"].dam is None
    assert built["mmm_no_gauss"].gme1.image_from_gene.log_sigma is None


def test_genomic_tokens_are_tiled_to_the_image_length():
    tokens = torch.arange(3.0).unsqueeze(1)
    assert tile_tokens(tokens, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tile_tokens(tokens, 2)[:, 0].tolist() == [0, 1]


def test_mmm_v1_shuffles_in_training_only_unless_asked():
    torch.manual_seed(0)
    model = MMMv1(group_sizes=[3, 5, 4], path_dim=16, dim=32, dim2=16).eval()
    batch = model.example_batch(bag_size=25)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)
        model.shuffle_eval = True
        draws = torch.stack([model(batch).logits for _ in range(5)])
    assert (draws - draws[0]).abs().max() > 0
    assert MMMv1.defaults["training"] == MMM.defaults["training"]
    assert MMM.defaults["training"]["optimizer"] == "adamw" and MMM.defaults["training"]["grad_accum"] == 32


def test_product_normalisation_options():
    torch.manual_seed(0)
    batch = MMM(**TINY).example_batch(bag_size=13)
    released, averaged = MMM(**TINY).eval(), MMM(**TINY, product_norm="mean").eval()
    averaged.load_state_dict(released.state_dict())
    with torch.no_grad():
        assert not torch.allclose(released(batch).logits, averaged(batch).logits)
    with pytest.raises(ValueError, match="product_norm"):
        MMM(**TINY, product_norm="max")


def tiny(name: str, **params):
    torch.manual_seed(0)
    if name == "mmm":
        return MMM(**TINY, **params)
    return MMMv1(group_sizes=[3, 5, 4], path_dim=16, dim=32, dim2=16, **params)


def chunk_logits_of(model, path, groups, rows) -> torch.Tensor:
    result = model.forward_chunk(path[rows], *groups)
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize("name", ["mmm", "mmm_v1"])
def test_a_10000_patch_bag_runs_as_three_micro_batches_whose_loss_and_risk_are_averaged(name):
    # the release's trainer/mb_trainer.py: N // 4096 + 1 chunks of a shuffle, the whole model on each,
    # loss = mean of the chunks' NLLs, risk = mean of the chunks' -sum(S), in training and validation
    model = tiny(name).eval()
    batch, target = model.example_batch(bag_size=10_000), model.example_target()
    path, groups = batch.one("path"), batch.one_groups("test", 3)
    with torch.no_grad():
        output = model(batch)
        chunks = micro_batches(10_000, 4096, torch.Generator().manual_seed(model.eval_seed))
        expected = torch.cat([chunk_logits_of(model, path, groups, rows) for rows in chunks])
    assert [len(rows) for rows in chunks] == [3334, 3333, 3333]
    assert output.chunk_logits.shape == (3, 4)
    torch.testing.assert_close(output.chunk_logits, expected)
    survival = torch.cumprod(torch.sigmoid(-expected), dim=1)
    torch.testing.assert_close(output.risk, -survival.sum(dim=1).mean().reshape(1))
    per_chunk = [nll_surv_loss(torch.sigmoid(row[None]), survival[i:i + 1], target.label, target.censorship)
                 for i, row in enumerate(expected)]
    torch.testing.assert_close(model.loss(output, target)["surv"], torch.stack(per_chunk).mean())
    # training draws its chunks from the run's seeded generator: same seed, same numbers
    model.train()
    losses = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        out = model(batch)
        assert out.chunk_logits.shape == (3, 4)
        losses.append(sum(model.loss(out, target).values()).detach())
    assert torch.equal(losses[0], losses[1]) and not torch.equal(losses[0], losses[2])


@pytest.mark.parametrize("name", ["mmm", "mmm_v1"])
def test_a_bag_under_4096_patches_is_one_shuffled_chunk_and_none_runs_the_whole_bag(name):
    model = tiny(name).eval()
    batch = model.example_batch(bag_size=4095)
    path, groups = batch.one("path"), batch.one_groups("test", 3)
    with torch.no_grad():
        output = model(batch)
        assert output.chunk_logits.shape == (1, 4)
        torch.testing.assert_close(output.logits, output.chunk_logits)  # one chunk: its own curve
        (rows,) = micro_batches(4095, 4096, torch.Generator().manual_seed(0))
        torch.testing.assert_close(output.logits, chunk_logits_of(model, path, groups, rows))
        assert model(model.example_batch(bag_size=4096)).chunk_logits.shape == (2, 4)  # 4096 // 4096 + 1
        model.bs_micro = None
        whole = model(batch)
        torch.testing.assert_close(whole.logits, chunk_logits_of(model, path, groups, torch.arange(4095)))
    with pytest.raises(ValueError, match="bs_micro"):
        tiny(name, bs_micro=0)


@pytest.mark.parametrize("name", ["mmm", "mmm_v1"])
def test_the_resolved_settings_give_the_releases_constant_learning_rate(name):
    # the release parses --lr_scheduler cosine but never calls get_lr_scheduler: lr 5e-4 for 100 epochs
    from mmsurv.train.loop import make_scheduler
    from mmsurv.train.settings import resolve_settings

    _, training, _, _ = resolve_settings(None, name)
    assert training.lr == 5e-4 and training.epochs == 100 and training.scheduler == "none"
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=training.lr)
    scheduler = make_scheduler(optimizer, training)
    rates = []
    for _ in range(training.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    assert rates == [5e-4] * training.epochs


def test_routing_measures_are_the_gme_weights_per_modality_averaged_over_micro_batches():
    torch.manual_seed(0)
    model = MMM(**TINY, bs_micro=6).eval()
    output = model(model.example_batch(bag_size=15))
    for layer in (0, 1):
        for side, gate in (("wsi", "image"), ("genomic", "gene")):
            weights = output.attention[f"gme{layer + 1}_{gate}_gate"]  # chunks × experts
            assert weights.shape[0] == 3
            shares = output.measures[f"route/{side}/layer{layer}"]
            assert torch.allclose(shares, weights.mean(0).double()) and shares.sum().item() == pytest.approx(1.0)
