"""Fixtures of the report tests: the fake results tree and one report built from it (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from report_fakes import COHORTS, FOLDS, MODELS, snapshot, write_fake_results


@pytest.fixture(scope="session")
def fake_results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_fake_results(root)
    return root


@pytest.fixture(scope="session")
def built_report(fake_results, tmp_path_factory):
    """(results dir, out dir, returned paths, mtimes of the training outputs before the build)."""
    from mmsurv.report import build_report

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        before = snapshot(fake_results)
        out = tmp_path_factory.mktemp("report")
        paths = build_report(fake_results, COHORTS, MODELS, out, folds=FOLDS, reference_bag_size=512,
                             median_split="pooled", pdf=False)
    finally:
        torch.set_num_threads(threads)
    return fake_results, out, paths, before
