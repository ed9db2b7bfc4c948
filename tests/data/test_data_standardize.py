"""Optional feature standardisation: statistics from the training cases' patches only."""

from __future__ import annotations

import torch

from mmsurv.data.dataset import BagLoader, BagOptions


def test_statistics_come_from_the_training_cases_only(tmp_path):
    torch.save(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), tmp_path / "a.pt")
    torch.save(torch.tensor([[100.0, -5.0]]), tmp_path / "b.pt")
    loader = BagLoader(BagOptions(features_dir=tmp_path, feature_dim=2, standardize=True))
    loader.fit_standardization({"train_case": ["a.svs"]})
    train_bag = loader.load("train_case", ["a.svs"])
    assert torch.allclose(train_bag, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    val_bag = loader.load("val_case", ["b.svs"])
    assert torch.allclose(val_bag, torch.tensor([[(100 - 2) / 1.0, (-5 - 20) / 10.0]]))


def test_without_fitting_bags_are_raw(tmp_path):
    torch.save(torch.tensor([[1.0, 10.0]]), tmp_path / "a.pt")
    loader = BagLoader(BagOptions(features_dir=tmp_path, feature_dim=2))
    assert torch.equal(loader.load("c", ["a.svs"]), torch.tensor([[1.0, 10.0]]))
