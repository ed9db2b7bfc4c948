"""Milliseconds per patient training step of every model, beside its FLOP and weight-traffic floors on this CPU.

For whoever tunes a model's speed (issue 26: per-step overhead of small bags; issue 24: the cost of
the references' zero-padded Nyström landmarks and of MMM's micro-batches). One CPU thread; models
built at their defaults on BLCA's signature groups with 1024-d features; the bag is standard-normal
noise; a step is forward + loss + backward (dropout on, as in training), the median of
``--repeats`` timed steps after ``--warmup`` untimed ones. Each (model, bag) runs in a fresh process.

Two floors. The FLOP floor is what the arithmetic alone would take: 3 × the forward's FLOPs (forward
+ backward ≈ 3 forwards; ``torch.utils.flop_counter``, matrix products only, counted on the forward
as training runs it: MoME's training forward is 30-46 GFLOP at 24 patches where its evaluation
forward is 15) divided by this CPU's one-thread matrix-product rate (a 1024³ fp32 matmul, measured
first). The weight floor is the memory traffic of the weights at one patient per step: every
parameter that takes a gradient is read by the forward, read again by the backward and its
gradient written, 3 × those bytes over this CPU's one-thread copy rate (256 MiB, measured first);
it is what a small bag cannot go below without batching patients, whatever the code does.
``overhead`` = step − the larger floor: Python, small kernels, allocation, autograd bookkeeping.

    python bench/step_cost.py                                  # every model at 24 and 4,096 patches
    python bench/step_cost.py --bags 24,4096,50000 --models abmil transmil
    python bench/step_cost.py --models cmta hdmoe --bags 24 --params '{"adaptive_landmarks": true}'
    python bench/step_cost.py --smoke                          # seconds: SNN and ABMIL at 24 patches

Measured (Xeon with AMX, 2 vCPUs, one thread, median of 5; ``--bags 24,4096`` and ``--bags 50000
--repeats 2 --warmup 1``), ms per step at 24 / 4,096 / 50,000 patches, floor in brackets: ABMIL
2.0 / 140 / 2,089 (0.6 / 94 / 1,134); MCAT 12.5 / 82 / 1,131; TransMIL 411 / 1,825 / 39,373 (223 /
797 / 7,149); CMTA 265 / 1,387 / 29,551; MoME 1,064 / 3,688 / 37,511; HDMoE 145 / 709 / 12,070;
SurvMamba 99 / 9,501 / 136,932 (3.4 / 426 / 5,123: its CPU scan's backward, 586 ms per call at
4,096 tokens, is most of a step); CancerMoE 4.7 / 1,201 / 1,228 (its floor misses the sparsified
attention, a custom autograd function the FLOP counter does not see). At the demo's settings (``--params '{"adaptive_landmarks": true}'``, 24 patches, same machine, two
runs each; "before" is the previous version's package under this script), ms per step, before →
after :class:`mmsurv.models.layers.NystromAttention` replaced the package's layer (heads folded
into 3-D products, pseudo-inverse constants built once, the value convolution of a short sequence
as one banded product): TransMIL 13.1-13.3 → 10.9-11.3, CMTA 34.6-39.9 → 30.1-32.9, MoME
34.3-38.2 → 27.0-31.6, HDMoE 23.2-25.3 → 21.1-22.9. Their weight floors are 2.3, 7.0, 8.1 and 6.3
ms and their FLOP floors 2.4, 2.3, 6.7 and 1.3 ms; the rest is ~7,000-10,000 small operations per
step (a profile shows none above 10 %: the weight-gradient products of batch-1 inputs, ``bmm`` of
the pseudo-inverse's tiny matrices, depth-wise convolution backward on a 5 × 5 grid). Padded to
the references' landmarks (the models' defaults) and at 4,096 patches the step is unchanged
(TransMIL, 12 steps at 24 patches, whole process, 5 runs: ratio new/old 0.975). Batching patients
would take the weight floor down, but in these models it changes the numbers (padding enters the
Nyström landmarks, PPEG grids and per-patient routing), so it is not done. At 24 patches the Nyström
models' time is the reference's arithmetic on 128-256 zero-padded landmarks (``adaptive_landmarks``
removes it, below), not overhead the loop can take away. Earlier measurement (helper run of issue
24, median of 5): at 24 patches
CMTA 384 ms (63 with adaptive landmarks), MoME 1,389 (50), HDMoE 178 (32), TransMIL 543 (14); at
5,000 patches MMM 1,232 whole bag against 908 in its release's micro-batches, MMM v1 575 against 460.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from mmsurv.machine import cpu_description

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]


def matmul_gflops() -> float:
    """One thread's fp32 matrix-product rate (GFLOP/s) on 1024³, best of 5."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 1024**3 / best / 1e9


def copy_gbytes_per_s() -> float:
    """One thread's memory bandwidth (GB/s moved: read + write) copying 256 MiB, best of 5."""
    import torch

    torch.set_num_threads(1)
    source, target = torch.ones(1 << 26), torch.empty(1 << 26)
    target.copy_(source)
    best = min(_timed(lambda: target.copy_(source)) for _ in range(5))
    return 2 * source.numel() * source.element_size() / best / 1e9


def _timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def measure(model_name: str, patches: int, params: dict, repeats: int, warmup: int) -> dict:
    """ms per step and forward FLOPs of one model at one bag size (run in a child process)."""
    import torch

    from mmsurv.models import ModelInputs, build_model
    from mmsurv.models.flops import EagerFlopCounter

    torch.set_num_threads(1)
    torch.manual_seed(0)
    inputs = ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=1024,
                         group_names=[f"g{i}" for i in range(len(BLCA_GROUPS))])
    model = build_model(model_name, inputs, params).train()
    batch, target = model.example_batch(bag_size=patches), model.example_target()
    times = []
    for index in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        sum(model.loss(model(batch), target).values()).backward()
        if index >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    # the floor counts the forward as the step runs it (training mode: MoME's and MMM's gates run
    # every expert there, and dropout masks cost nothing), not count_flops()'s evaluation forward
    with torch.no_grad(), EagerFlopCounter(display=False) as counter:
        model(batch)
    flops = int(counter.get_total_flops())
    # weight traffic of a step: every parameter that takes a gradient is read by the forward, read
    # again by the backward (for the input gradient) and its gradient written
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.grad is not None)
    return {"ms_per_step": statistics.median(times), "forward_flops": flops, "weight_traffic_bytes": 3 * weight_bytes}


def run_child(name: str, patches: int, params: dict, repeats: int, warmup: int) -> dict:
    command = [sys.executable, __file__, "--child", name, str(patches), json.dumps(params), str(repeats), str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="registered names (default: every model)")
    parser.add_argument("--bags", default="24,4096", help="bag sizes, comma-separated (50000 takes minutes per model)")
    parser.add_argument("--params", default="{}", help="JSON model hyper-parameters for every model run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: SNN and ABMIL at 24 patches, 1 repeat "
                             "(the test suite runs it so that the bench keeps running)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, patches, params, repeats, warmup = args.child
        print(json.dumps(measure(name, int(patches), json.loads(params), int(repeats), int(warmup))))
        return 0
    if args.smoke:
        args.models, args.bags, args.repeats, args.warmup = ["snn", "abmil"], "24", 1, 1
    if not args.models:
        from mmsurv.models import available_models

        args.models = available_models()
    print(cpu_description(), flush=True)
    peak = matmul_gflops()
    bandwidth = copy_gbytes_per_s()
    print(f"one-thread fp32 matmul: {peak:.1f} GFLOP/s; FLOP floor = 3 x forward FLOPs / that rate", flush=True)
    print(f"one-thread copy: {bandwidth:.1f} GB/s; weight floor = 3 x the bytes of the parameters a step "
          "trains / that rate", flush=True)
    print("overhead = step - the larger floor", flush=True)
    params = json.loads(args.params)
    print(f"{'model':16s} {'patches':>7s} {'ms/step':>9s} {'FLOP floor':>10s} {'weight floor':>12s} "
          f"{'overhead ms':>11s} {'fwd GFLOP':>9s}")
    rows, failed = [], False
    for name in args.models:
        for patches in (int(b) for b in args.bags.split(",")):
            row = {"model": name, "patches": patches, "params": params,
                   **run_child(name, patches, params, args.repeats, args.warmup)}
            rows.append(row)
            if "error" in row:
                failed = True
                print(f"{name:16s} {patches:>7d} error: {row['error']}", flush=True)
                continue
            floor = 3 * row["forward_flops"] / (peak * 1e9) * 1000
            weight_floor = row["weight_traffic_bytes"] / (bandwidth * 1e9) * 1000
            row.update(floor_ms=floor, weight_floor_ms=weight_floor,
                       overhead_ms=row["ms_per_step"] - max(floor, weight_floor))
            print(f"{name:16s} {patches:>7d} {row['ms_per_step']:>9.1f} {floor:>10.1f} {weight_floor:>12.1f} "
                  f"{row['overhead_ms']:>11.1f} {row['forward_flops'] / 1e9:>9.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"cpu": cpu_description(), "matmul_gflops": peak, "copy_gbytes_per_s": bandwidth, "rows": rows},
                      handle, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
