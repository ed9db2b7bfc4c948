"""Reduced precision: any non-fp32 default must keep per-patch cosine >= 0.9999 with fp32 features.

The default precision "auto" is bf16 on a CPU with native bf16 (AMX / AVX512-BF16, as on this
project's machines: min cosine measured 0.99999) and fp32 elsewhere; the first test checks the
bound for whatever the default resolves to here. fp16/bf16 on CUDA are checked when a GPU is present.
"""

from __future__ import annotations

import h5py
import pytest
import torch

from mmsurv.features import DEFAULTS, extract_slide_features
from mmsurv.features.plan import cpu_has_native_bf16, resolve_device, resolve_precision

MIN_COSINE = 0.9999


def features_with(slide_path, patches, out_dir, precision, device="cpu"):
    extract_slide_features(slide_path, patches, out_dir, slide_name="slide", weights="none", batch_size=4,
                           num_workers=0, precision=precision, device=device, compile=False)
    with h5py.File(out_dir / "h5_files/slide.h5", "r") as h5:
        return torch.from_numpy(h5["features"][()])


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


@pytest.fixture(scope="module")
def precision_patches(slide, tmp_path_factory, grid_coords, write_patch_file):
    root = tmp_path_factory.mktemp("precision")
    return slide[0], write_patch_file(root / "patches.h5", grid_coords(512, 3)), root


def reduced_precisions(device: torch.device) -> list[str]:
    return ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]


def test_default_precision_is_fp32_or_meets_cosine(precision_patches):
    slide_path, patches, root = precision_patches
    device = resolve_device(DEFAULTS.device)
    if resolve_precision(DEFAULTS.precision, device) == "fp32":
        pytest.skip("default precision is fp32 on this machine: nothing to bound")
    reference = features_with(slide_path, patches, root / "fp32", "fp32", str(device))
    reduced = features_with(slide_path, patches, root / "default", DEFAULTS.precision, str(device))
    assert min_cosine(reduced, reference) >= MIN_COSINE


def test_auto_precision_follows_the_hardware():
    cpu = resolve_precision("auto", torch.device("cpu"))
    assert cpu == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"     # not measured on a GPU yet
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("precision", reduced_precisions(resolve_device("auto")))
def test_reduced_precision_cosine_per_patch(precision_patches, precision):
    """The documented figure: min over patches of cos(reduced, fp32) >= 0.9999 on the same patches."""
    slide_path, patches, root = precision_patches
    device = str(resolve_device("auto"))
    reference = features_with(slide_path, patches, root / f"ref-{precision}", "fp32", device)
    reduced = features_with(slide_path, patches, root / precision, precision, device)
    cosine = min_cosine(reduced, reference)
    assert reduced.dtype == torch.float32 and reduced.shape == reference.shape
    assert not torch.equal(reduced, reference)          # autocast really ran
    assert cosine >= MIN_COSINE, f"{precision}: min cosine {cosine:.6f}"


def test_fp16_refused_on_cpu(precision_patches):
    slide_path, patches, root = precision_patches
    with pytest.raises(ValueError, match="fp16 is supported on CUDA only"):
        features_with(slide_path, patches, root / "fp16cpu", "fp16", "cpu")
    assert not (root / "fp16cpu" / "h5_files" / "slide.h5").exists()


@pytest.mark.parametrize(("cap", "native"), [("AVX2", False), ("avx512_core", False), ("", None)])
def test_a_onednn_isa_cap_below_bf16_means_fp32(monkeypatch, cap, native):
    """``ONEDNN_MAX_CPU_ISA=AVX2`` (an AVX2-only machine emulated on a newer one) must not pick bf16,
    which oneDNN would then emulate slowly; without a cap the CPU's own flags decide."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    expected = native if native is not None else any(
        getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    assert cpu_has_native_bf16() is expected
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if expected else "fp32")
