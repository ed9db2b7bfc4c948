"""Milliseconds per patient step (forward + backward, one CPU thread) of a model under settings.

Two questions of issue 24: what switching adaptive Nyström landmarks off (the references' zero
padding to the landmarks, now the default) costs at a demo-sized bag, and what MMM's micro-batches
cost against the whole bag. Models are built at their defaults on BLCA's signature groups with
1024-d features; the bag is standard-normal noise; the median of ``--repeats`` timed steps after
``--warmup`` untimed ones (dropout on, as in training).

    python bench/step_cost.py                                   # both questions
    python bench/step_cost.py --models cmta hdmoe --patches 24 --params '{"adaptive_landmarks": true}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
LANDMARK_MODELS = ("cmta", "mome", "hdmoe", "transmil")


def step_ms(model_name: str, patches: int, params: dict, repeats: int, warmup: int) -> float:
    import torch

    from mmsurv.models import ModelInputs, build_model

    torch.manual_seed(0)
    inputs = ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=1024)
    model = build_model(model_name, inputs, params).train()
    batch, target = model.example_batch(bag_size=patches), model.example_target()
    times = []
    for index in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        sum(model.loss(model(batch), target).values()).backward()
        if index >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="run only these models with --params at --patches")
    parser.add_argument("--patches", type=int, default=24)
    parser.add_argument("--params", default="{}", help="JSON model hyper-parameters")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.models:
        runs = [(name, args.patches, json.loads(args.params)) for name in args.models]
    else:
        runs = [(name, 24, {"adaptive_landmarks": adaptive}) for name in LANDMARK_MODELS for adaptive in (True, False)]
        runs += [("mmm", 5000, {"bs_micro": None}), ("mmm", 5000, {}),
                 ("mmm_v1", 5000, {"bs_micro": None}), ("mmm_v1", 5000, {})]
    for name, patches, params in runs:
        ms = step_ms(name, patches, params, args.repeats, args.warmup)
        row = {"model": name, "patches": patches, "params": params, "ms_per_step": round(ms, 1)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
