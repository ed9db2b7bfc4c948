"""The compiled-encoder cache: outside the results, and a job never waits for another one's build."""

from __future__ import annotations

import logging

import torch

from mmsurv.features import inference
from mmsurv.io import try_exclusive_lock


class Tiny(torch.nn.Module):
    memory_format, autocast_dtype, resize = torch.contiguous_format, None, False

    def forward(self, x):
        return x.float().mean(dim=(2, 3))


def test_a_package_being_built_elsewhere_means_eager_now_not_waiting(tmp_path, caplog):
    graph, example = Tiny(), torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    key = inference.package_key(graph, example, {"weights": "tiny"})
    lock = tmp_path / "aoti" / f"{key}.lock"
    with try_exclusive_lock(lock) as mine, caplog.at_level(logging.INFO, logger="mmsurv.features.inference"):
        assert mine  # this test plays the other job, building the package
        runner, compiled = inference.compiled_graph(graph, example, mode="aot", identity={"weights": "tiny"},
                                                    cache_dir=tmp_path)
    assert compiled == "none" and runner is graph
    assert "being built by another job" in caplog.text and "eagerly" in caplog.text
    assert not (tmp_path / "aoti" / f"{key}.pt2").exists()


def test_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "x.lock"
    with try_exclusive_lock(path) as first:
        with try_exclusive_lock(path) as second:
            assert first and not second
    with try_exclusive_lock(path) as again:
        assert again


def test_default_cache_is_outside_any_results_folder():
    assert "results" not in inference.DEFAULT_CACHE.parts and inference.DEFAULT_CACHE.name == "compiled"
