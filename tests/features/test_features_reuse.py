"""Reuse of existing features: every setting that changes the numbers is compared, a difference
recomputes the slide and the log names it; settings of speed only keep the features."""

from __future__ import annotations

import logging

import pytest
import torch

from mmsurv.features import encode, outputs
from mmsurv.features.batch import extract_features_batch
from mmsurv.features.dataset import read_patch_coords
from mmsurv.features.encoders import ResNet50Trunc

OPTIONS = dict(batch_size=4, num_workers=0, compile=False, encoder_processes=0)


def run_batch(jobs, out, **settings):
    outcomes = extract_features_batch(jobs, out, **{**OPTIONS, "weights": "none", "precision": "fp32", **settings})
    return {o.slide: o.result["skipped"] for o in outcomes}


@pytest.fixture()
def jobs(slide, patches_h5):
    return [(slide[0], patches_h5(n=2, name=name)[0], name) for name in ("a", "b")]


def test_changing_the_precision_recomputes_every_slide_and_says_why(jobs, tmp_path, caplog):
    out = tmp_path / "features"
    assert run_batch(jobs, out) == {"a": False, "b": False}
    assert run_batch(jobs, out, channels_last=False, batch_size=1) == {"a": True, "b": True}  # speed only
    with caplog.at_level(logging.WARNING, logger="mmsurv.features"):
        assert run_batch(jobs, out, precision="bf16") == {"a": False, "b": False}
    assert caplog.text.count("precision: made with 'fp32', now 'bf16'") == 2
    assert run_batch(jobs, out, precision="bf16") == {"a": True, "b": True}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmsurv.features"):
        assert run_batch(jobs, out, precision="bf16", seed=1)["a"] is False  # other random weights
    assert "weights: made with 'random seed 0', now 'random seed 1'" in caplog.text


def test_a_checkpoint_is_known_by_its_content_not_its_path(jobs, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(encode, "_ENCODERS", {})
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save(ResNet50Trunc().state_dict(), weights)
    out = tmp_path / "features"
    assert run_batch(jobs[:1], out, weights=str(weights)) == {"a": False}
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    monkeypatch.setattr(encode, "_ENCODERS", {})
    assert run_batch(jobs[:1], out, weights=str(moved)) == {"a": True}  # same file elsewhere: reused
    torch.manual_seed(1)
    torch.save(ResNet50Trunc().state_dict(), moved)  # other weights at the same path
    monkeypatch.setattr(encode, "_ENCODERS", {})
    with caplog.at_level(logging.WARNING, logger="mmsurv.features"):
        assert run_batch(jobs[:1], out, weights=str(moved)) == {"a": False}
    assert "weights: made with 'sha256 " in caplog.text


def test_input_size_normalisation_resize_and_encoder_version_are_compared(jobs, tmp_path, caplog):
    import json

    out = tmp_path / "features"
    run_batch(jobs[:1], out)
    paths = outputs.FeaturePaths.of(out, "a")
    patches = read_patch_coords(jobs[0][1], slide_name="a")
    made = json.loads(paths.json.read_text())["numbers"]
    assert outputs.valid_existing_metadata(paths, patches, made) is not None
    changes = {"input_size": {"preprocessing": {**made["preprocessing"], "input_size": 192}},
               "std": {"preprocessing": {**made["preprocessing"], "std": [0.5, 0.5, 0.5]}},
               "encoder_version": {"encoder_version": made["encoder_version"] + 1},
               "resize": {"resize": "device"}, "patch_size": {"patch_size": 256}}
    for name, change in changes.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mmsurv.features"):
            assert outputs.valid_existing_metadata(paths, patches, {**made, **change}) is None, name
        assert name in caplog.text and "recomputing" in caplog.text


def test_a_full_disk_fails_the_slide_naming_the_file_and_the_rerun_completes(jobs, small_tmpfs):
    import os

    from mmsurv.batch import BatchError

    out = small_tmpfs / "features"
    filler = small_tmpfs / "filler.bin"
    stats = os.statvfs(small_tmpfs)
    filler.write_bytes(b"x" * (stats.f_bavail * stats.f_frsize - 4096))  # 4 KiB left: no feature file fits
    with pytest.raises(BatchError) as failure:
        run_batch(jobs[:1], out)
    message = failure.value.failures["a"]
    assert message.startswith("DiskFullError: no space left on the device of ") and str(out) in message
    assert "\n" not in message
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert not leftovers, leftovers  # no partial h5, pt or json
    filler.unlink()  # space freed: the rerun writes the slide
    assert run_batch(jobs[:1], out) == {"a": False}
    assert torch.load(outputs.FeaturePaths.of(out, "a").pt).shape == (2, 1024)
