"""SurvMamba: the selective scan equals the naive recurrence, regions and processes, Bi-Mamba padding, variants."""

from __future__ import annotations

import pytest
import torch
import yaml

from mmsurv.models import Batch, ModelInputs, build_model, n_params
from mmsurv.models.registry import resolve_model
from mmsurv.models.survmamba import (
    DEFAULT_HIERARCHY,
    BiMamba,
    InteractionFusionMamba,
    function_processes,
    linear_scan,
    read_hierarchy,
    region_groups,
    selective_scan,
    selective_scan_reference,
)
from mmsurv.train.run import resolve_settings

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
TINY = dict(dim=16, d_state=4)



def scan_inputs(batch, length, inner, state, seed=0, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, inner, generator=generator)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, inner, generator=generator) * scale - 2)
    A = -torch.exp(torch.randn(inner, state, generator=generator))
    B = torch.randn(batch, length, state, generator=generator)
    C = torch.randn(batch, length, state, generator=generator)
    return [t.requires_grad_() for t in (x, delta, A, B, C)]


def close(ours, reference, tol=1e-5):
    """max |ours − reference| within tol of the reference's scale (float32)."""
    ours, reference = ours.detach(), reference.detach()
    return float((ours - reference).abs().max()) <= tol * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("length, batch, inner, state, tile", [
    (1, 2, 3, 4, None), (7, 2, 3, 4, None), (64, 2, 5, 4, None), (64, 3, 5, 4, 400),
    (4097, 1, 3, 2, None), (4097, 2, 3, 2, 3000), (50_000, 1, 2, 2, None)])
def test_scan_equals_naive_recurrence_forward_and_gradients(length, batch, inner, state, tile):
    inputs = scan_inputs(batch, length, inner, state)
    kwargs = {} if tile is None else {"tile_elements": tile}
    ours = selective_scan(*inputs, **kwargs)
    reference = selective_scan_reference(*inputs)
    assert ours.shape == (batch, length, inner) and close(ours, reference)
    weights = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1))
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs, materialize_grads=True)
    reference_grads = torch.autograd.grad((reference * weights).sum(), inputs, materialize_grads=True)
    for name, a, b in zip("x delta A B C".split(), ours_grads, reference_grads):
        assert close(a, b), f"gradient of {name} differs"


def test_scan_is_exact_under_strong_decay_and_with_an_initial_state():
    decay = torch.rand(300, 2, 3) ** 8  # cumulative decays underflow: dividing by them would overflow
    decay[::17] = 0.0
    inputs = torch.randn(300, 2, 3)
    initial = torch.randn(2, 3)
    state, expected = initial, []
    for t in range(300):
        state = decay[t] * state + inputs[t]
        expected.append(state)
    ours = linear_scan(torch.log(decay), inputs, initial)  # log 0 = -inf: a full reset
    assert torch.isfinite(ours).all() and torch.allclose(ours, torch.stack(expected), atol=1e-5, rtol=1e-5)


def grid(x0, y0, nx, ny, step=512):
    return torch.tensor([[x0 + i * step, y0 + j * step] for j in range(ny) for i in range(nx)])


def region_sizes(coords, magnification=None, **sizes):
    mags = None if magnification is None else torch.full((len(coords),), float(magnification))
    order, group, geometry = region_groups(coords, None, mags, **sizes)
    return torch.bincount(group).tolist(), geometry


@pytest.mark.parametrize("patch_px, scan, per_region", [
    (256, 20, 256), (512, 20, 64),  # the paper's 256 px patches: 16 x 16 per 4096 px region; 512 px: 8 x 8
    (256, 40, 256), (512, 40, 64)])  # a 40x scan: footprints of 2 x patch_px level-0 px, regions of 8192
def test_a_region_is_4096_px_at_20x_whatever_the_patch_size_and_scan(patch_px, scan, per_region):
    step = patch_px * scan // 20  # level-0 footprint
    side = int(per_region ** 0.5)
    coords = grid(3 * step, 5 * step, 2 * side, 2 * side, step=step)  # 2 x 2 regions
    counts, geometry = region_sizes(coords[torch.randperm(len(coords))], scan)
    assert counts == [per_region] * 4
    assert geometry[0].side_level0 == 4096 * scan / 20 and geometry[0].grid_step == step
    assert geometry[0].patches_per_side == side and geometry[0].source == "magnification"


def test_region_assignment_does_not_drift_when_the_side_is_not_a_whole_number_of_steps():
    # mpp 0.2457 ("40.7x"): 512 px at 20x is round(512 x 40.7 / 20) = 1042 level-0 px, a region 8335.4
    counts, geometry = region_sizes(grid(0, 0, 160, 8, step=1042), 40.7)
    assert counts == [64] * 20 and geometry[0].patches_per_side == pytest.approx(7.9994, abs=1e-4)


def test_unknown_magnification_falls_back_on_the_grid_and_region_size_overrides():
    counts, geometry = region_sizes(grid(0, 0, 32, 16, step=256))  # CLAM's files: grid step = 256 px at 20x
    assert counts == [256, 256] and geometry[0].source == "grid" and geometry[0].side_level0 == 4096
    counts, _ = region_sizes(grid(0, 0, 32, 16, step=256), fallback_patch_px=512)
    assert counts == [64] * 8
    counts, geometry = region_sizes(grid(0, 0, 32, 16, step=256), 20, region_size=2048)
    assert counts == [64] * 8 and geometry[0].source == "region_size"
    with pytest.raises(ValueError, match="different magnifications"):
        region_groups(grid(0, 0, 2, 1), None, torch.tensor([20.0, 40.0]))


def test_the_model_reports_the_regions_it_used():
    model = build_model("survmamba", ModelInputs(group_sizes=[3, 4], path_dim=8), TINY).eval()
    batch = model.example_batch(bag_size=512)
    batch.values["coords"] = grid(0, 0, 32, 16, step=512).unsqueeze(0)  # 256 px patches on a 40x scan
    batch.values["slide_magnification"] = torch.full((1, 512), 40.0)
    with torch.no_grad():
        model(batch)
        model(batch)
    assert model.region_report() == [{"region_level0_px": 8192.0, "grid_step_level0_px": 512,
                                      "patches_per_side": 16.0, "patches_per_region": 256.0,
                                      "source": "magnification", "magnification": 40.0, "slides": 2}]
    empty = Batch(values={**batch.values, "path": torch.zeros(1, 1, 8), "coords": torch.zeros(1, 1, 2),
                          "slide_magnification": torch.zeros(1, 1), "slide_index": torch.zeros(1, 1, dtype=torch.long)})
    with torch.no_grad():
        model(empty)  # a patient without features: one zero row, no grid, nothing reported
    assert len(model.region_report()) == 1


def test_regions_never_mix_slides():
    coords = torch.cat([grid(0, 0, 4, 4), grid(0, 0, 4, 4)])  # the same positions on two slides
    slides = torch.tensor([0] * 16 + [1] * 16)
    order, group, _ = region_groups(coords, slides)
    assert torch.bincount(group).tolist() == [16, 16]
    for g in (0, 1):
        assert slides[order[group == g]].unique().numel() == 1


def test_missing_coordinates_are_a_clear_error():
    model = build_model("survmamba", ModelInputs(group_sizes=[3, 4], path_dim=8), TINY)
    batch = model.example_batch(bag_size=5)
    del batch.values["coords"]
    with pytest.raises(ValueError, match="no patch coordinates"):
        model(batch)
    with pytest.raises(ValueError, match="missing"):
        region_groups(torch.tensor([[0.0, float("nan")]]))


def test_output_does_not_depend_on_bag_row_order():
    torch.manual_seed(0)
    model = build_model("survmamba", ModelInputs(group_sizes=[3, 4, 2], path_dim=8), TINY).eval()
    batch = model.example_batch(bag_size=150)
    permutation = torch.randperm(150)
    shuffled = Batch(values={**batch.values, "path": batch["path"][:, permutation],
                             "coords": batch["coords"][:, permutation]}, size=1)
    with torch.no_grad():
        assert torch.allclose(model(batch).logits, model(shuffled).logits, atol=1e-5)


def test_bimamba_padding_never_reaches_real_tokens_and_backward_direction_sees_the_future():
    torch.manual_seed(0)
    layer = BiMamba(8, d_state=4).eval()
    short, long = torch.randn(1, 5, 8), torch.randn(1, 9, 8)
    padded = torch.cat([torch.cat([short, torch.full((1, 4, 8), 7.0)], dim=1), long])
    with torch.no_grad():
        together = layer(padded, torch.tensor([5, 9]))
        assert torch.allclose(together[0, :5], layer(short)[0], atol=1e-5)
        assert torch.allclose(together[1], layer(long)[0], atol=1e-5)
        changed = long.clone()
        changed[0, -1] = torch.randn(8)  # (a constant shift would vanish in the LayerNorm)
        assert not torch.allclose(layer(changed)[0, 0], layer(long)[0, 0])  # token 0 sees the last token
        forward_only = BiMamba(8, d_state=4, bidirectional=False).eval()
        assert torch.allclose(forward_only(changed)[0, :-1], forward_only(long)[0, :-1])


def test_processes_from_names_index_fallback_and_user_csv(tmp_path):
    names = list(read_hierarchy(DEFAULT_HIERARCHY))[:20]
    mapping = read_hierarchy(DEFAULT_HIERARCHY)
    by_name = function_processes(names, 20, "default")
    same = [(a, b) for a in range(20) for b in range(20) if mapping[names[a]] == mapping[names[b]]]
    assert all(by_name[a] == by_name[b] for a, b in same)
    assert function_processes([], 16, "default") == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert function_processes([], 6, "default") == [0, 0, 1, 1, 2, 2]
    mixed = function_processes(names[:3] + ["UNKNOWN_A", "UNKNOWN_B", "UNKNOWN_C", "UNKNOWN_D"], 7, "default")
    assert mixed[3] == mixed[4] < mixed[5] == mixed[6] and mixed[3] > max(mixed[:3])
    path = tmp_path / "mine.csv"
    path.write_text("process,function\nimmune,b\nimmune,c\ncycle,a\n")
    assert function_processes(["a", "b", "c"], 3, str(path)) == [1, 0, 0]
    with pytest.raises(ValueError, match="does not list 1"):
        function_processes(["a", "b", "z"], 3, str(path))
    model = build_model("survmamba", ModelInputs(group_sizes=[2, 3, 4], group_names=["a", "b", "c"], path_dim=8),
                        {**TINY, "hierarchy": str(path)})
    assert model.n_processes == 2 and model.function_order.tolist() == [1, 2, 0]


def test_parameter_count_at_the_blca_setting_without_names():
    model = build_model("survmamba", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS))
    assert n_params(model) == 17_896_965
    assert model.n_processes == 3


TABLE3 = {"survmamba_a": ("none", "none"), "survmamba_b": ("fine", "none"), "survmamba_c": ("multi", "none"),
          "survmamba_d": ("multi", "fine"), "survmamba_e": ("multi", "coarse"), "survmamba_f": ("multi", "both")}


def test_table3_variants_of_the_paper_file_resolve_build_and_train(repo):
    models = yaml.safe_load((repo / "config" / "papers" / "survmamba.yaml").read_text())["train"]["models"]
    assert set(TABLE3) | {"survmamba_uni"} == set(models)
    inputs = ModelInputs(group_sizes=[3, 7, 5, 2], path_dim=32)
    built = {}
    for name in models:
        resolved = resolve_model(name, models)
        assert resolved.spec.name == "survmamba"
        torch.manual_seed(0)
        model = build_model("survmamba", inputs, {**TINY, **resolved.params}).train()
        output = model(model.example_batch(bag_size=150))
        sum(model.loss(output, model.example_target()).values()).backward()
        assert torch.isfinite(output.logits).all() and output.logits.shape == (1, 4)
        assert all(p.grad is not None for p in model.parameters())  # every module of the variant is used
        built[name] = model
    for name, (him, ifm) in TABLE3.items():
        model = built[name]
        assert (model.him, model.ifm) == (him, ifm)
        assert hasattr(model, "path_coarse") == (him == "multi") == (model.alpha_logit is not None)
        fused_by_ifm = {level for level, module in model.fusion.items() if isinstance(module, InteractionFusionMamba)}
        assert fused_by_ifm == {"none": set(), "fine": {"fine"}, "coarse": {"coarse"}, "both": {"fine", "coarse"}}[ifm]
    assert built["survmamba_a"].n_processes == 1 and built["survmamba_b"].n_processes == 2
    assert built["survmamba_uni"].path_fine.backward_ssm is None and built["survmamba_f"].path_fine.backward_ssm
    sizes = {name: n_params(model) for name, model in built.items()}
    assert sizes["survmamba_a"] == sizes["survmamba_b"] < sizes["survmamba_c"] < sizes["survmamba_d"]
    assert sizes["survmamba_d"] == sizes["survmamba_e"] < sizes["survmamba_f"] == n_params(
        build_model("survmamba", inputs, TINY))


def test_model_a_has_no_regions_and_model_b_does():
    inputs = ModelInputs(group_sizes=[3, 7, 5], path_dim=8)
    for him, depends in (("none", False), ("fine", True)):
        torch.manual_seed(0)
        model = build_model("survmamba", inputs, {**TINY, "him": him, "ifm": "none"}).eval()
        batch = model.example_batch(bag_size=300)
        with torch.no_grad():
            default = model(batch).logits
            model.region_sizes["region_size"] = 1024  # 2 x 2 patches per region instead of 8 x 8
            smaller = model(batch).logits
        assert torch.allclose(default, smaller, atol=1e-6) != depends


def test_ablation_options_are_checked():
    inputs = ModelInputs(group_sizes=[3, 4], path_dim=8)
    with pytest.raises(ValueError, match="coarse level, which only him 'multi' has"):
        build_model("survmamba", inputs, {**TINY, "him": "fine", "ifm": "both"})
    with pytest.raises(ValueError, match="him must be one of"):
        build_model("survmamba", inputs, {**TINY, "him": "flat"})


def test_paper_defaults_and_a_config_variant_resolve():
    config = {"models": {"survmamba_uni": {"model": "survmamba", "bidirectional": False}}}
    data, training, resolved, _ = resolve_settings(config, "survmamba_uni")
    assert resolved.spec.name == "survmamba" and resolved.params == {"bidirectional": False}
    assert (training.optimizer, training.lr, training.weight_decay, training.batch_size) == ("radam", 2e-4, 5e-3, 1)
    assert data["groups"] == "pathways"


def test_recomputed_long_bag_path_gives_the_same_result_and_gradients():
    inputs = ModelInputs(group_sizes=[3, 7, 5], path_dim=16)
    results = []
    for checkpoint_tokens in (0, 40):  # 0: store everything; 40: level-1 slices and IFM blocks recomputed
        torch.manual_seed(0)
        model = build_model("survmamba", inputs, {**TINY, "dropout": 0.0, "checkpoint_tokens": checkpoint_tokens})
        batch = model.example_batch(bag_size=300)
        output = model(batch)
        sum(model.loss(output, model.example_target()).values()).backward()
        results.append((output.logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (logits_a, grads_a), (logits_b, grads_b) = results
    assert torch.allclose(logits_a, logits_b, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads_a, grads_b))
