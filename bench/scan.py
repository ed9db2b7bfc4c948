"""SurvMamba cost figures: the selective scan vs the naive loop vs mambapy's pscan, the whole model at
1k / 10k / 50k patches, and parameters / FLOPs beside the paper's 398.85 K / 2.51 G.

Run (heavy; one at a time on shared machines)::

    PYTHONPATH=$PWD/src flock /tmp/mmsurv-heavy.lock nice -n 5 .venv/bin/python bench/scan.py

Options: ``--lengths 1000,10000,50000``, ``--inner 64,128``, ``--state 16``, ``--bags 1000,10000,50000``,
``--skip-scan`` / ``--skip-model`` / ``--skip-size``, ``--threads N``.

Every measurement runs in a fresh child process (``--case``) so that its peak memory is its own: the
figure is the peak resident set size (``ru_maxrss``) minus the resident size once the inputs exist,
i.e. what the computation itself adds. Scan cases run one sequence (batch 1) of length L with E
channels and N states, forward + backward of ``sum(y * w)``; the three implementations compute the
same thing (Ā = exp(Δ ⊗ A), B̄x = (Δ x) ⊗ B, the scan, y = C · h) and the bench prints their largest
difference from ours. ``mambapy`` (``pip install mambapy==1.2.0``, bench-only, see
requirements.txt) is skipped with a note when it is not installed. The model case trains the
default SurvMamba (D 512) on BLCA's six genomic groups (no group names → processes by index) with a
random bag on a 512 px grid, forward + backward + one RAdam step, and reports seconds per patient
(median of ``--repeats`` after one warm-up) and peak memory.

FLOPs: ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add of matrix products and
convolutions and nothing for element-wise work; papers of this field report thop/fvcore
multiply-adds (MACs). The table gives both, plus the scan's element-wise multiply-adds
(3·E·N per token and direction: decay, input and read-out), which flop_counter does not see.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

from mmsurv.machine import cpu_description

PAPER_PARAMS = 398_850
PAPER_FLOPS = 2.51e9
BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------- cases

def scan_case(method: str, length: int, inner: int, state: int, threads: int) -> dict:
    import torch

    from mmsurv.models.survmamba import selective_scan, selective_scan_reference

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, inner, generator=generator)
    delta = torch.nn.functional.softplus(torch.randn(1, length, inner, generator=generator) - 2)
    A = -torch.arange(1, state + 1, dtype=torch.float32).repeat(inner, 1)
    B = torch.randn(1, length, state, generator=generator)
    C = torch.randn(1, length, state, generator=generator)
    weights = torch.randn(1, length, inner, generator=generator)
    inputs = [t.requires_grad_() for t in (x, delta, A, B, C)]

    if method == "ours":
        run = selective_scan
    elif method == "naive":
        run = selective_scan_reference
    else:
        from mambapy.pscan import pscan

        def run(x, delta, A, B, C):
            decay = torch.exp(delta.unsqueeze(-1) * A)
            inputs_ = (delta * x).unsqueeze(-1) * B.unsqueeze(-2)
            return torch.matmul(pscan(decay, inputs_), C.unsqueeze(-1)).squeeze(-1)

    warm = [t.detach()[:, :64].clone().requires_grad_() if t.dim() == 3 else t.detach().clone().requires_grad_()
            for t in inputs]
    run(*warm).sum().backward()  # first-call costs out of the timing
    base = rss_mib()
    start = time.perf_counter()
    y = run(*inputs)
    forward = time.perf_counter() - start
    (y * weights).sum().backward()
    total = time.perf_counter() - start
    peak = peak_mib() - base
    result = {"forward_s": forward, "forward_backward_s": total, "peak_mib": peak}
    if method != "ours":
        with torch.no_grad():
            ours = selective_scan(*(t.detach() for t in inputs))
        result["max_diff_vs_ours"] = float((ours - y.detach()).abs().max())
    return result


def model_case(bag: int, threads: int, repeats: int) -> dict:
    import torch

    from mmsurv.models import ModelInputs, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("survmamba", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS)).train()
    optimizer = torch.optim.RAdam(model.parameters(), lr=2e-4, weight_decay=5e-3)
    batch, target = model.example_batch(bag), model.example_target()
    base = rss_mib()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        output = model(batch)
        sum(model.loss(output, target).values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"seconds_per_patient": statistics.median(times[1:]) if repeats else times[0],
            "peak_mib": peak_mib() - base, "peak_rss_mib": peak_mib()}


def run_child(args: list[str]) -> dict:
    env = dict(os.environ)
    process = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True, env=env)
    if process.returncode != 0:
        return {"error": (process.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(process.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- size

def size_table() -> None:
    import torch

    from mmsurv.data.pathways import read_gene_sets
    from mmsurv.models import ModelInputs, build_model, count_flops, n_params
    from mmsurv.resources import default_pathways

    torch.set_num_threads(1)
    sets = read_gene_sets(default_pathways())
    settings = {
        "BLCA 6 signature groups, D 512": (ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS), {}),
        "331 SurvPath pathways (42 processes), D 512": (
            ModelInputs(group_sizes=[len(g) for g in sets.values()], group_names=list(sets)), {}),
        "paper-like width: 768-d features, BLCA groups, D 64": (
            ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=768), {"dim": 64}),
    }
    print("\n## Parameters and FLOPs (forward, one patient)")
    print(f"paper: {PAPER_PARAMS / 1e3:.2f} K parameters, {PAPER_FLOPS / 1e9:.2f} G 'FLOPs' (bag size not stated)")
    print("| setting | parameters | without genomic encoders | bag | flop_counter GFLOPs | GMACs | + scan GMACs |")
    print("|---|---|---|---|---|---|---|")
    for label, (inputs, params) in settings.items():
        model = build_model("survmamba", inputs, params)
        total = n_params(model)
        without = total - n_params(model.omic_encoder)
        dim = model.path_fc.out_features
        inner = 2 * dim
        state = model.path_fine.forward_ssm.d_state
        n_groups = len(inputs.group_sizes)
        for bag in (1000, 10_000):
            flops = count_flops(model, bag)
            regions = math.ceil(bag / 64)
            # tokens through a scan (per direction): HIM level 1 + 2 (x2 directions), IFM fine + coarse (1 direction)
            him = 2 * (bag + regions + n_groups + model.n_processes)
            ifm = bag + n_groups + regions + model.n_processes
            scan_macs = 3 * inner * state * (him + ifm)
            print(f"| {label} | {total:,} | {without:,} | {bag:,} | {flops / 1e9:.2f} | {flops / 2e9:.2f} | "
                  f"{scan_macs / 1e9:.3f} |")


# ---------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--lengths", default="1000,10000,50000")
    parser.add_argument("--inner", default="64,128")
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--bags", default="1000,10000,50000")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--naive-max", type=int, default=50000, help="longest L for the naive loop")
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-size", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: L = 256, one model bag of 256, 1 repeat, no size table "
                             "(the test suite runs it so that the bench keeps running)")
    args = parser.parse_args()
    if args.smoke:
        args.lengths, args.inner, args.bags, args.repeats, args.skip_size = "256", "64", "256", 1, True

    if args.case:
        kind, *rest = args.case
        if kind == "scan":
            method, length, inner, state, threads = rest
            result = scan_case(method, int(length), int(inner), int(state), int(threads))
        else:
            bag, threads, repeats = rest
            result = model_case(int(bag), int(threads), int(repeats))
        print(json.dumps(result))
        return

    import torch

    threads = args.threads or min(2, os.cpu_count() or 1)
    print(f"# SurvMamba bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(cpu_description())
    print(f"torch {torch.__version__}, {threads} thread(s); timings on a shared machine are noisy")
    try:
        import mambapy

        have_mambapy = True
        print(f"mambapy {getattr(mambapy, '__version__', '1.2.0')} (pscan: Blelloch scan, pads L to a power of two)")
    except ImportError:
        have_mambapy = False
        print("mambapy not installed (pip install mambapy==1.2.0): its column is skipped")

    if not args.skip_scan:
        print(f"\n## Selective scan, batch 1, N = {args.state}, forward + backward")
        print("| L | E | method | forward s | fwd+bwd s | peak extra MiB | max |diff| vs ours |")
        print("|---|---|---|---|---|---|---|")
        for inner in (int(v) for v in args.inner.split(",")):
            for length in (int(v) for v in args.lengths.split(",")):
                methods = ["ours"] + (["naive"] if length <= args.naive_max else []) + (["mambapy"] if have_mambapy else [])
                for method in methods:
                    r = run_child(["scan", method, str(length), str(inner), str(args.state), str(threads)])
                    if "error" in r:
                        print(f"| {length:,} | {inner} | {method} | error: {r['error']} | | | |")
                        continue
                    diff = f"{r['max_diff_vs_ours']:.1e}" if "max_diff_vs_ours" in r else "-"
                    print(f"| {length:,} | {inner} | {method} | {r['forward_s']:.3f} | {r['forward_backward_s']:.3f} | "
                          f"{r['peak_mib']:.0f} | {diff} |", flush=True)

    if not args.skip_model:
        print("\n## Whole model (D 512, BLCA groups), forward + backward + RAdam step, one patient")
        print("| patches | s / patient | peak extra MiB | peak RSS MiB |")
        print("|---|---|---|---|")
        for bag in (int(v) for v in args.bags.split(",")):
            r = run_child(["model", str(bag), str(threads), str(args.repeats if bag < 50_000 else 0)])
            if "error" in r:
                print(f"| {bag:,} | error: {r['error']} | | |")
                continue
            print(f"| {bag:,} | {r['seconds_per_patient']:.2f} | {r['peak_mib']:.0f} | {r['peak_rss_mib']:.0f} |", flush=True)

    if not args.skip_size:
        size_table()


if __name__ == "__main__":
    main()
