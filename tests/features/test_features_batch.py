"""A batch of slides in one process: one bad slide is named and the others keep their outputs;
the encoder is built once; a rerun after a kill mid-batch ends with the same outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mmsurv.batch import BatchError
from mmsurv.features import encode
from mmsurv.features.batch import extract_features_batch
from mmsurv.features.outputs import FeaturePaths

OPTIONS = dict(weights="none", batch_size=4, num_workers=0, compile=False, precision="fp32", encoder_processes=0)


def batch_jobs(slide, patches_h5, names):
    path, _ = slide
    return [(path, patches_h5(n=3, name=name)[0], name) for name in names]


def features_of(out_dir, name):
    return torch.load(FeaturePaths.of(out_dir, name).pt)


def test_one_bad_slide_is_named_and_the_others_are_written(slide, patches_h5, tmp_path, monkeypatch):
    builds = []
    original = encode.build_encoder
    monkeypatch.setattr(encode, "build_encoder", lambda *a, **k: builds.append(1) or original(*a, **k))
    monkeypatch.setattr(encode, "_ENCODERS", {})
    jobs = batch_jobs(slide, patches_h5, ["a", "b", "c"])
    jobs[1] = (tmp_path / "missing.svs", jobs[1][1], "b")
    with pytest.raises(BatchError, match=r"1 of 3 slide\(s\) failed \(b: FileNotFoundError") as failure:
        extract_features_batch(jobs, tmp_path / "out", **OPTIONS)
    assert set(failure.value.failures) == {"b"}
    for name in ("a", "c"):
        assert features_of(tmp_path / "out", name).shape == (3, 1024)
    assert not FeaturePaths.of(tmp_path / "out", "b").pt.exists()
    assert len(builds) == 1  # the encoder was built once for the batch


SCRIPT = """
import sys, time
from mmsurv.features import extract
from mmsurv.features.batch import extract_features_batch
original = extract.extract_slide_features
def slow(*args, **kwargs):
    result = original(*args, **kwargs)
    print("done", kwargs["slide_name"], flush=True)
    time.sleep(float(sys.argv[2]))
    return result
import mmsurv.features.batch as batch
batch.extract_slide_features = slow
jobs = [(sys.argv[3], sys.argv[4 + i], name) for i, name in enumerate(["a", "b", "c"])]
extract_features_batch(jobs, sys.argv[1], weights="none", batch_size=4, num_workers=0, compile=False,
                       precision="fp32", encoder_processes=0)
"""


@pytest.mark.slow
def test_a_rerun_after_a_kill_mid_batch_gives_the_same_outputs(slide, patches_h5, tmp_path):
    path, _ = slide
    patch_files = [str(patches_h5(n=3, name=name)[0]) for name in ("a", "b", "c")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-c", SCRIPT, str(reference), "0", str(path), *patch_files], check=True, env=env,
                   capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed), "30", str(path), *patch_files], env=env,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "done a"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not FeaturePaths.of(killed, "c").pt.exists()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", SCRIPT, str(killed), "0", str(path), *patch_files], check=True, env=env,
                   capture_output=True)
    assert time.perf_counter() - started < 600
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(features_of(killed, name).numpy(), features_of(reference, name).numpy())
    leftovers = [p.name for p in killed.rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers
