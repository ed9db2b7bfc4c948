"""Per-slide extraction: outputs, order, reuse of valid outputs, determinism, empty slides, read errors."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import openslide
import pytest
import torch

from mmsurv.features import FeaturePaths, PatchReadError, build_encoder, extract_slide_features
from mmsurv.features.dataset import READ_ATTEMPTS, reading_order, resize_uint8
from mmsurv_testdata import shared_path

N_PATCHES = 6


def run(slide_path, patches, out_dir, name="slide", **kwargs):
    options = dict(weights="none", batch_size=4, num_workers=0, compile=False, precision="fp32",
                   compile_min_patches=0) | kwargs
    return extract_slide_features(slide_path, patches, out_dir, slide_name=name, **options)


def read_outputs(out_dir, name="slide"):
    paths = FeaturePaths.of(out_dir, name)
    with h5py.File(paths.h5, "r") as h5:
        features, coords, attrs = h5["features"][()], h5["coords"][()], dict(h5.attrs)
    tensor = torch.load(paths.pt, weights_only=True)
    return features, coords, attrs, tensor, json.loads(paths.json.read_text())


@pytest.fixture(scope="module")
def reference(slide, tmp_path_factory, grid_coords, write_patch_file):
    """One extraction (6 patches in a NON-row order, 0 workers) shared by several tests."""
    root = tmp_path_factory.mktemp("reference")
    coords = grid_coords(512, N_PATCHES, step=384)      # x-major grid order, overlapping
    assert not np.array_equal(reading_order(coords), np.arange(len(coords)))
    patches = write_patch_file(root / "patches/slide.h5", coords, name="slide")
    metadata = run(slide[0], patches, root / "features")
    return root, patches, coords, metadata


def test_outputs_are_1024_float32_in_patch_file_order(reference):
    root, _, coords, metadata = reference
    features, stored_coords, attrs, tensor, sidecar = read_outputs(root / "features")
    assert features.shape == (N_PATCHES, 1024) and features.dtype == np.float32
    assert stored_coords.dtype == np.int64 and np.array_equal(stored_coords, coords)
    assert tensor.dtype == torch.float32 and np.array_equal(tensor.numpy(), features)
    assert np.isfinite(features).all() and len({row.tobytes() for row in features}) == N_PATCHES
    for record in (metadata, sidecar, json.loads(attrs["metadata"])):
        assert record["n_patches"] == N_PATCHES and record["encoder"] == "resnet50_trunc"
        assert record["weights"] == "none" and record["pretrained"] is False
        assert {"precision", "channels_last", "compile", "batch_size", "seconds", "patches_per_s",
                "torch_version", "device"} <= set(record)
    assert attrs["pretrained"] == np.False_ and attrs["encoder"] == "resnet50_trunc"
    assert sidecar["patch_attrs"]["patch_size"] == 512 and metadata["skipped"] is False


def test_each_row_is_the_feature_of_its_own_patch(reference, slide):
    """Reading order is (y, x) but row i must be the feature of coords[i]: recompute two rows directly."""
    root, _, coords, metadata = reference
    features = read_outputs(root / "features")[0]
    model, _, info = build_encoder("resnet50_trunc", "none", seed=0)
    model = model.to(memory_format=torch.channels_last)
    prep = info.preprocessing
    with openslide.OpenSlide(str(slide[0])) as handle:
        tiles = [np.asarray(handle.read_region(tuple(int(v) for v in coords[i]), 0, (512, 512)))[..., :3]
                 for i in (0, N_PATCHES - 1)]
    pixels = resize_uint8(torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2), prep.input_size).float() / 255
    x = (pixels - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = model(x.contiguous(memory_format=torch.channels_last)).numpy()
    np.testing.assert_allclose(features[[0, N_PATCHES - 1]], expected, rtol=1e-4, atol=1e-4)


def test_valid_output_is_skipped_and_invalid_recomputed(reference, caplog):
    root, patches, _, _ = reference
    paths = FeaturePaths.of(root / "features", "slide")
    before = read_outputs(root / "features")[0]
    paths.json.unlink()
    again = run(_slide_of(reference), patches, root / "features")
    assert again["skipped"] is True and paths.json.exists()        # sidecar restored from the h5 metadata

    paths.pt.write_bytes(b"truncated")                                 # e.g. a foreign half-written file
    redone = run(_slide_of(reference), patches, root / "features")
    assert redone["skipped"] is False
    assert np.array_equal(read_outputs(root / "features")[0], before)  # deterministic recompute


def _slide_of(reference):
    root, patches, _, metadata = reference
    return metadata["slide_path"]


def test_identical_across_runs_and_worker_counts(slide, patches_h5, tmp_path):
    patches, _ = patches_h5(4)
    first = run(slide[0], patches, tmp_path / "a", num_workers=0, batch_size=2, encoder_processes=0)
    run(slide[0], patches, tmp_path / "b", num_workers=0, batch_size=2, encoder_processes=0)
    workers = run(slide[0], patches, tmp_path / "c", num_workers=2, batch_size=2, encoder_processes=0)
    assert first["num_workers"] == 0 and workers["num_workers"] == 2
    a, b, c = (read_outputs(tmp_path / d)[0] for d in "abc")
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_encoder_processes_give_the_main_process_features(slide, patches_h5, tmp_path):
    """Default on CPU: worker processes read and encode (one thread each); same features."""
    patches, _ = patches_h5(5)
    main = run(slide[0], patches, tmp_path / "main", batch_size=2, encoder_processes=0)
    two = run(slide[0], patches, tmp_path / "two", batch_size=2, encoder_processes=2)
    one = run(slide[0], patches, tmp_path / "one", batch_size=2, encoder_processes=1)
    assert main["encoder_processes"] == 0 and two["encoder_processes"] == 2 and one["encoder_processes"] == 1
    assert "2 encoder processes" in two["parallelism"]
    reference = read_outputs(tmp_path / "main")[0]
    for folder in ("two", "one"):
        np.testing.assert_allclose(read_outputs(tmp_path / folder)[0], reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(read_outputs(tmp_path / "two")[0], read_outputs(tmp_path / "one")[0])


def test_zero_patches_give_empty_outputs(slide, patches_h5, tmp_path):
    patches, _ = patches_h5(coords=np.zeros((0, 2), dtype=np.int64))
    metadata = run(slide[0], patches, tmp_path / "features")
    features, coords, _, tensor, sidecar = read_outputs(tmp_path / "features")
    assert features.shape == (0, 1024) and features.dtype == np.float32
    assert coords.shape == (0, 2) and tuple(tensor.shape) == (0, 1024) and tensor.dtype == torch.float32
    assert metadata["n_patches"] == sidecar["n_patches"] == 0
    assert run(slide[0], patches, tmp_path / "features")["skipped"] is True


def fail_reads_at(monkeypatch, reader: str, bad: tuple[int, int] | None, error: str, times: int | None = None):
    """Make the dataset's ``reader`` reads at ``bad`` (None: any) raise ``error`` (``times`` times, or always).

    Patched where the dataset opens its readers, so the reader choice (which reads a probe patch
    itself) is not affected.
    """
    from mmsurv.features import dataset

    original, calls = dataset.open_reader, []

    def opening(kind, *args):
        handle = original(kind, *args)
        assert kind == reader
        read = handle.read_rgb_into

        def flaky(x, y, out):
            if (bad is None or (x, y) == bad) and (times is None or len(calls) < times):
                calls.append((x, y))
                raise openslide.OpenSlideError(error) if reader == "openslide" else OSError(error)
            return read(x, y, out)

        handle.read_rgb_into = flaky
        return handle

    monkeypatch.setattr(dataset, "open_reader", opening)
    return calls


@pytest.mark.parametrize(("reader", "workers", "encoders"),
                         [("openslide", 0, 0), ("openslide", 1, 0), ("tiff", 0, 0), ("tiff", 1, 0), ("tiff", 0, 2)])
def test_failing_read_is_retried_then_names_slide_and_coordinates(slide, patches_h5, tmp_path, monkeypatch,
                                                                  reader, workers, encoders):
    patches, coords = patches_h5(3, name="TCGA-BAD")
    bad = tuple(int(v) for v in coords[1])
    calls = fail_reads_at(monkeypatch, reader, bad, "Bogus marker length")
    monkeypatch.setattr("mmsurv.features.dataset.RETRY_PAUSE_S", 0.0)
    with pytest.raises(PatchReadError) as error:
        run(slide[0], patches, tmp_path / "features", name="TCGA-BAD", num_workers=workers, batch_size=2,
            reader=reader, encoder_processes=encoders)
    message = str(error.value)
    assert "slide TCGA-BAD" in message and f"(x={bad[0]}, y={bad[1]})" in message
    assert f"after {READ_ATTEMPTS} attempts" in message and "Bogus marker length" in message
    if workers == encoders == 0:
        assert len(calls) == READ_ATTEMPTS
    assert not list((tmp_path / "features").rglob("*.h5")) and not list((tmp_path / "features").rglob("*.pt"))


@pytest.mark.parametrize("reader", ["openslide", "tiff"])
def test_transient_read_failure_recovers(slide, patches_h5, tmp_path, monkeypatch, reader):
    patches, _ = patches_h5(2)
    fail_reads_at(monkeypatch, reader, None, "transient", times=1)
    metadata = run(slide[0], patches, tmp_path / "features", batch_size=2, reader=reader)
    assert metadata["n_patches"] == 2 and metadata["reader"] == reader


def test_tile_reader_gives_the_openslide_features(reference, tmp_path):
    """The default reader on this (tiled JPEG) slide is the tile reader, and it changes no feature."""
    root, patches, _, metadata = reference
    assert metadata["reader"] == "tiff" and "identical to OpenSlide" in metadata["reader_reason"]
    via_openslide = run(_slide_of(reference), patches, tmp_path / "openslide", reader="openslide")
    assert via_openslide["reader"] == "openslide"
    np.testing.assert_array_equal(read_outputs(tmp_path / "openslide")[0], read_outputs(root / "features")[0])


@pytest.mark.shared
def test_unreadable_shared_slide_names_slide_and_coordinates(tmp_path, monkeypatch, write_patch_file):
    source = shared_path("data", "wsi", "unreadable.svs")
    monkeypatch.setattr("mmsurv.features.dataset.RETRY_PAUSE_S", 0.0)
    patches = write_patch_file(tmp_path / "unreadable.h5", np.array([[0, 0]]), patch_size=16, level_dim=(16, 16),
                               name="unreadable")
    with pytest.raises(PatchReadError, match=r"slide unreadable: cannot read patch at level-0 coordinates \(x=0, y=0\)"):
        run(source, patches, tmp_path / "features", name="unreadable")


def test_bad_inputs_are_named(slide, tmp_path, write_patch_file):
    with pytest.raises(ValueError, match="slide S1: patch file .* does not exist"):
        run(slide[0], tmp_path / "missing.h5", tmp_path / "f", name="S1")
    patches = write_patch_file(tmp_path / "p.h5", np.array([[0, 0]]))
    with pytest.raises(FileNotFoundError, match="slide S2: slide file"):
        run(tmp_path / "missing.svs", patches, tmp_path / "f", name="S2")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        run(slide[0], patches, tmp_path / "f", precision="fp8")


@pytest.mark.slow
def test_aot_package_matches_eager_and_is_reused(reference, tmp_path, caplog):
    """AOTInductor (BN folded by freezing): same features as eager fp32; a second slide loads the package."""
    root, patches, _, _ = reference
    eager = read_outputs(root / "features")[0]
    cache = tmp_path / "compiled"
    metadata = run(_slide_of(reference), patches, tmp_path / "aot", compile=True, compile_cache_dir=cache)
    assert metadata["compile"] == "aot" and len(list((cache / "aoti").glob("*.pt2"))) == 1
    compiled = torch.from_numpy(read_outputs(tmp_path / "aot")[0])
    cosine = torch.nn.functional.cosine_similarity(compiled.double(), torch.from_numpy(eager).double(), dim=1)
    assert float(cosine.min()) >= 0.9999
    np.testing.assert_allclose(compiled.numpy(), eager, rtol=1e-3, atol=1e-3)
    caplog.clear()
    from mmsurv.features import encode

    encode._FORWARDS.clear()  # as a new job would: the package is loaded, not rebuilt
    with caplog.at_level(logging.INFO, logger="mmsurv.features.inference"):
        again = run(_slide_of(reference), patches, tmp_path / "aot2", compile=True, compile_cache_dir=cache)
    assert again["compile"] == "aot" and "loaded AOT package" in caplog.text and "AOT-compiling" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmsurv.features.inference"):  # the same process: kept, not reloaded
        third = run(_slide_of(reference), patches, tmp_path / "aot3", compile=True, compile_cache_dir=cache)
    assert third["compile"] == "aot" and "AOT" not in caplog.text
    np.testing.assert_array_equal(read_outputs(tmp_path / "aot2")[0], compiled.numpy())
    encode._FORWARDS.clear()  # a package already built is loaded however few patches the job has
    fourth = run(_slide_of(reference), patches, tmp_path / "aot4", compile=True, compile_cache_dir=cache,
                 compile_min_patches=10**6)
    assert fourth["compile"] == "aot"


def test_small_job_does_not_compile(slide, patches_h5, tmp_path, caplog):
    """Compile only when it pays: a job under compile_min_patches runs eagerly and builds nothing."""
    patches, _ = patches_h5(3)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="mmsurv.features.extract"):
        metadata = run(slide[0], patches, tmp_path / "features", compile=True, compile_cache_dir=cache,
                       compile_min_patches=100)
    assert metadata["compile"] == "none" and not list(cache.rglob("*.pt2"))
    assert "3 patches in this job < compile_min_patches 100" in caplog.text


def test_batch_decides_on_the_patches_of_the_whole_job(slide, patches_h5, tmp_path, monkeypatch):
    from mmsurv.features import encode
    from mmsurv.features.batch import extract_features_batch

    seen = []
    monkeypatch.setattr(encode, "compile_pays", lambda settings, graph, example, identity, n: seen.append(n))
    patches, _ = patches_h5(3)
    extract_features_batch([(slide[0], patches, "slide")], tmp_path / "features", weights="none", batch_size=4,
                           num_workers=0, compile=True, precision="fp32", compile_cache_dir=tmp_path / "cache")
    assert seen == [3]


def test_jit_compile_failure_falls_back_to_eager(slide, patches_h5, tmp_path, monkeypatch, caplog):
    patches, _ = patches_h5(2)

    def broken(module, **kwargs):
        def run_compiled(x):
            raise RuntimeError("InductorError: no C++ compiler")
        return run_compiled

    monkeypatch.setattr(torch, "compile", broken)
    metadata = run(slide[0], patches, tmp_path / "features", compile=True, compile_mode="jit", batch_size=2,
                   compile_cache_dir=tmp_path / "cache")
    assert metadata["compile"] == "none" and metadata["n_patches"] == 2
    assert "jit compilation failed" in caplog.text and "continuing in eager mode" in caplog.text


def test_aot_compile_failure_falls_back_to_eager(slide, patches_h5, tmp_path, monkeypatch, caplog):
    patches, _ = patches_h5(2)

    def broken(*args, **kwargs):
        raise RuntimeError("CppCompileError: gcc not found")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    metadata = run(slide[0], patches, tmp_path / "features", compile=True, batch_size=2,
                   compile_cache_dir=tmp_path / "cache")
    assert metadata["compile"] == "none" and metadata["n_patches"] == 2
    assert "aot compilation failed" in caplog.text and not list((tmp_path / "cache").rglob("*.pt2"))


def test_patch_file_of_another_slide_stops_naming_both(slide, tmp_path, write_patch_file, grid_coords):
    """Finding 4 of issue 19: a patch file made for another slide used to exit 0 with garbage features."""
    from mmsurv.features.dataset import PatchFileError

    coords = grid_coords(512, 2)
    other = write_patch_file(tmp_path / "other.h5", coords, name="TCGA-OT-0001-01Z-00-DX1", level_dim=(3072, 2048))
    with pytest.raises(PatchFileError, match=r"made for slide 'TCGA-OT-0001-01Z-00-DX1', not for slide 'slide'"):
        run(slide[0], other, tmp_path / "f1")
    renamed = write_patch_file(tmp_path / "renamed.h5", coords, name="slide", level_dim=(40000, 30000))
    with pytest.raises(PatchFileError, match=r"records level_dim \(40000, 30000\), but slide 'slide' .* \(3072, 2048\)"):
        run(slide[0], renamed, tmp_path / "f2")
    outside = write_patch_file(tmp_path / "outside.h5", np.array([[0, 0], [5000, 100]]), name="slide")
    with pytest.raises(PatchFileError, match=r"outside slide 'slide'"):
        run(slide[0], outside, tmp_path / "f3")
    assert not list(tmp_path.rglob("*.pt"))
