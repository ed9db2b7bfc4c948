"""CancerMoE efficiency table: parameters and FLOPs beside the paper's 0.446 M / 0.170 G (issue 16).

Counts one forward pass with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add,
matrix products and attention only) and prints MACs (= FLOPs / 2, what thop/fvcore-style counters
and most papers of the field report) beside it, for:

* a bag of exactly N = 3072 patches (DPS takes all of them: one pass, the paper's setting);
* a 50,000-patch bag in training mode (one pass over the N selected tokens) and in evaluation of a
  patient without stored scores (a scoring pass over N evenly spaced tokens, then the selected N);
* the ablation without ACS, whose full attention runs through ``scaled_dot_product_attention``:
  ``FlopCounterMode`` counts no FLOPs for that CPU kernel, so its 2 × 2·T²·d multiply-adds are added
  analytically (T = 1 + 8 + N tokens); with ACS the first layer's full L×L map (Algorithm 1) and the
  second layer are explicit products, counted (not the first layer's sparse A·V, an ``index_add`` of
  k·dh multiply-adds per head: 1.9 M over the 8 heads at N = 3072);
* genomic widths: BLCA's 3,062 ``omic`` columns (this project's BLCA table), the paper's BRCA width
  (Table 3: 20,980 genomic values, where Table 2's 0.446 M was counted) and the width at which the
  parameter count equals 0.446 M (the model docstring's **Size** explains why they differ).

    PYTHONPATH=src python bench/cancermoe.py
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmsurv.machine import cpu_description

PAPER_PARAMS, PAPER_GFLOPS = 0.446e6, 0.170


def forward_flops(model, bag: int, training: bool) -> int:
    batch = model.example_batch(bag)
    model.train(training)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="3062,20980", help="genomic widths to tabulate (besides the implied one)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: one small width, bags of 3,072 only "
                             "(the test suite runs it so that the bench keeps running)")
    args = parser.parse_args(argv)
    print(cpu_description(), flush=True)
    if args.smoke:
        args.widths = "64"
    torch.set_num_threads(1)
    from mmsurv.models import ModelInputs, build_model, n_params

    def build(width: int, **params):
        torch.manual_seed(0)
        return build_model("cancermoe", ModelInputs(omic_dim=width, group_sizes=[width]), params)

    base = n_params(build(0))
    per_gene = (n_params(build(8 * 1000)) - n_params(build(8 * 999))) / 8  # 8 tokens, one more value each
    implied = int(round((PAPER_PARAMS - n_params(build(8))) / per_gene)) + 8
    widths = [int(w) for w in args.widths.split(",")] + [implied]
    print(f"parameters: {base:,} without genomics + {per_gene:g} per genomic value (+ 8 × 32 biases); "
          f"0.446 M ⇔ genomic width ≈ {implied:,}")
    print(f"{'genomic width':>13s} {'variant':>10s} {'params':>10s} {'bag':>7s} {'mode':>18s} {'GFLOPs':>8s} {'GMACs':>7s}")
    for width in widths:
        for variant, params in (("paper", {}), ("no ACS", {"acs": False}), ("dense MLP", {"smoe": False})):
            count = n_params(build(width, **params))
            for bag, training, mode in ((3072, True, "one pass (N)"), (50_000, True, "training"),
                                        (50_000, False, "eval, unseen")):
                if (variant != "paper" or args.smoke) and bag != 3072:
                    continue
                flops = forward_flops(build(width, **params), bag, training)  # fresh: no stored scores
                if variant == "no ACS":  # FlopCounterMode does not count CPU scaled_dot_product_attention
                    tokens = 1 + 8 + min(bag, 3072)
                    flops += 2 * 2 * 2 * tokens * tokens * 32  # 2 layers × (QKᵀ and AV) × T²·d MACs × 2
                print(f"{width:>13,d} {variant:>10s} {count:>10,d} {bag:>7,d} {mode:>18s} {flops / 1e9:>8.3f} "
                      f"{flops / 2e9:>7.3f}")
    print(f"paper (BRCA): {PAPER_PARAMS / 1e6:.3f} M parameters, {PAPER_GFLOPS:.3f} G (its counter's unit)")
    wsi = 3072 * 1024 * 32
    print(f"of which the WSI projection 1024 → 32 of N = 3072 tokens alone: {wsi / 1e9:.3f} GMACs "
          f"({2 * wsi / 1e9:.3f} GFLOPs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
