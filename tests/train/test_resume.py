"""Resume after a kill: a run killed after epoch 2 of 5 and rerun ends with an uninterrupted run's numbers.

Most runs here save a resume checkpoint after every epoch (``resume_every_s: 0``); the default
interval is tested on its own at the end.

The killed runs are child processes of this test that stop at a deterministic point: SIGKILL sent
to itself right after the resume checkpoint of epoch 2 is on disk, or SIGTERM at the start of
epoch 3 (the epoch in progress is abandoned; exit code 75). Reference and resumed runs run here.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from mmsurv.train.resume import INTERRUPTED_EXIT_CODE, resume_path
from mmsurv.train.run import train_fold

EPOCHS = 5
CONFIGS = {
    # a bag model: random patch cap (the dataset's generator), weighted sampler, cosine scheduler
    "abmil": {"data": {"feature_dim": 16, "max_patches": 6},
              "training": {"epochs": EPOCHS, "grad_accum": 1, "scheduler": "cosine", "num_threads": 1,
                           "resume_every_s": 0}},
    # an auxiliary loss (CLAM's instance clustering) with gradient accumulation and a step scheduler
    "clam_sb": {"data": {"feature_dim": 16},
                "training": {"epochs": EPOCHS, "grad_accum": 3, "scheduler": "step", "step_size": 2,
                             "num_threads": 1, "resume_every_s": 0}},
}
NUMBERS = ("cindex_last", "cindex_best", "best_epoch", "val_loss_last", "epochs_run", "n_params")

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import mmsurv.train.loop as loop
    from mmsurv.train.resume import ResumeCheckpoint
    from mmsurv.cli import main

    mode, config = sys.argv[1], sys.argv[2]
    if mode == "kill":  # SIGKILL once the checkpoint of epoch 2 is on disk
        save = ResumeCheckpoint.save
        def save_then_die(self, state):
            save(self, state)
            if state["epoch"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        ResumeCheckpoint.save = save_then_die
    elif mode == "SIGTERM-during-save":  # the save of epoch 2 finishes first, then the run stops
        save = ResumeCheckpoint.save
        def term_then_save(self, state):
            if state["epoch"] == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            save(self, state)
        ResumeCheckpoint.save = term_then_save
    else:  # SIGTERM / SIGUSR1 as epoch 3 starts: the epoch is abandoned, epoch 2's checkpoint stands
        train_epoch, calls = loop.train_epoch, []
        def epoch_then_term(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), getattr(signal, mode.split("-")[0]))
            return train_epoch(*args, **kwargs)
        loop.train_epoch = epoch_then_term
    sys.exit(main(["train", "--config", config, *sys.argv[3:]]))
""")


def run_child(mode: str, model: str, out: Path, small_cohort, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / f"{model}.json"
    config.write_text(json.dumps(CONFIGS[model]))
    command = [sys.executable, "-c", CHILD, mode, str(config), "--model", model, "--fold", "0", "--out-dir", str(out),
               *small_cohort["args"]]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def train(model: str, out: Path, small_cohort, config: dict | None = None, **options) -> dict:
    cohort = small_cohort["cohort"]
    return train_fold(config or CONFIGS[model], cohort_table=cohort.table, splits_dir=cohort.splits_dir, fold=0,
                      model=model, out_dir=out, signatures=cohort.signatures, pathways=cohort.pathways,
                      features_dir=small_cohort["root"] / "features/pt_files", **options)


def assert_same_outputs(resumed: Path, reference: Path) -> None:
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (resumed, reference))
    assert {key: first[key] for key in NUMBERS} == {key: second[key] for key in NUMBERS}
    for name in ("predictions.tsv", "predictions_best.tsv"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    logs = [pd.read_csv(folder / "training_log.tsv", sep="\t").drop(columns="seconds") for folder in (resumed, reference)]
    pd.testing.assert_frame_equal(logs[0], logs[1], check_exact=True)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        states = [torch.load(folder / name, weights_only=True)["state_dict"] for folder in (resumed, reference)]
        assert states[0].keys() == states[1].keys()
        for key in states[0]:
            assert torch.equal(states[0][key], states[1][key]), (name, key)


@pytest.fixture(scope="module")
def references(small_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    for model in CONFIGS:
        train(model, root / model, small_cohort)
    return root


def test_a_run_killed_after_epoch_2_resumes_with_the_same_numbers(small_cohort, references, tmp_path, caplog):
    out = tmp_path / "abmil"
    killed = run_child("kill", "abmil", out, small_cohort, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert resume_path(out).is_file() and not (out / "metrics.json").exists()
    assert len(pd.read_csv(out / "training_log.tsv", sep="\t")) == 2
    shutil.copytree(out, tmp_path / "changed")
    with caplog.at_level(logging.INFO, logger="mmsurv.train"):
        train("abmil", out, small_cohort)
    assert "resuming from" in caplog.text and "2 of 5 epoch(s) done" in caplog.text
    assert_same_outputs(out, references / "abmil")
    assert not resume_path(out).exists()  # removed once the fold's outputs are written

    # other settings: the checkpoint is of another run, which starts over and says why
    caplog.clear()
    changed = json.loads(json.dumps(CONFIGS["abmil"]))
    changed["training"]["lr"] = 1e-3
    with caplog.at_level(logging.INFO, logger="mmsurv.train"):
        train("abmil", tmp_path / "changed", small_cohort, config=changed)
    assert "is of another run (different settings): starting over" in caplog.text
    assert "resuming from" not in caplog.text


@pytest.mark.parametrize("mode", ["SIGTERM", "SIGUSR1", "SIGTERM-during-save"])
def test_a_stop_signal_abandons_the_epoch_in_progress_exits_75_and_the_rerun_resumes(small_cohort, references,
                                                                                     tmp_path, mode):
    """A signal during an epoch abandons it; one during the epoch-end save lets the save finish."""
    out = tmp_path / "clam_sb"
    stopped = run_child(mode, "clam_sb", out, small_cohort, tmp_path)
    assert stopped.returncode == INTERRUPTED_EXIT_CODE, stopped.stderr[-2000:]
    assert f"interrupted by {mode.split('-')[0]} after epoch 2" in stopped.stderr
    assert not list(resume_path(out).parent.glob(".*"))  # the save was not cut short
    state = torch.load(resume_path(out), weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    train("clam_sb", out, small_cohort)
    assert_same_outputs(out, references / "clam_sb")


def test_a_finished_fold_kept_by_a_job_of_every_fold_is_rebuilt_without_training(small_cohort, references, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "abmil"
    train("abmil", out, small_cohort, keep_resume=True)
    assert resume_path(out).is_file()
    for name in ("metrics.json", "predictions.tsv", "predictions_best.tsv", "checkpoint_last.pt", "training_log.tsv"):
        (out / name).unlink()  # what Snakemake does to the outputs of a failed train job
    import mmsurv.train.loop as loop

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold must not train again")

    monkeypatch.setattr(loop, "train_epoch", no_training)
    train("abmil", out, small_cohort)
    assert_same_outputs(out, references / "abmil")


def test_a_resume_checkpoint_that_does_not_fit_on_the_disk_keeps_the_previous_one(small_tmpfs):
    from mmsurv.io import DiskFullError
    from mmsurv.train.resume import ResumeCheckpoint

    checkpoint = ResumeCheckpoint(resume_path(small_tmpfs / "fold0"), {"settings": "a"})
    checkpoint.save({"epoch": 1, "model": {"w": torch.zeros(1000)}})
    with pytest.raises(DiskFullError, match=str(checkpoint.path)):
        checkpoint.save({"epoch": 2, "model": {"w": torch.zeros(400_000)}})  # 1.6 MB on a 1 MiB disk
    assert [p.name for p in checkpoint.path.parent.iterdir()] == ["state.pt"]
    assert checkpoint.load()["epoch"] == 1
    assert ResumeCheckpoint(checkpoint.path, {"settings": "b"}).load() is None  # another run's: not used


def stop_after(epoch: int):
    """A stand-in for the signal handler: a stop request arrives during the save of ``epoch``."""
    import contextlib

    from mmsurv.train.resume import StopSignals

    @contextlib.contextmanager
    def stop_on_signals():
        stop = StopSignals()
        check = stop.check

        def check_then_stop(done: int) -> None:
            if done == epoch:
                stop.received = "SIGUSR1"
            check(done)

        stop.check = check_then_stop
        yield stop

    return stop_on_signals


EARLY_STOPPING = {"data": {"feature_dim": 16},
                  "training": {"epochs": 12, "grad_accum": 2, "holdout_fraction": 0.3, "early_stopping_patience": 2,
                               "num_threads": 1, "resume_every_s": 0}}


@pytest.mark.parametrize(("model", "config", "stop_epoch"), [
    ("abmil", CONFIGS["abmil"], 1),  # epoch 1 is the best so far: its checkpoint stores the weights once
    ("snn", EARLY_STOPPING, 2),  # hold-out selection and early stopping: the selector's state carries over
    # TransMIL's defaults: Lookahead(RAdam) with decoupled decay (the slow weights resume), accumulation 2, hold-out
    ("transmil", {"data": {"feature_dim": 16}, "training": {"epochs": 4, "num_threads": 1, "resume_every_s": 0}}, 2),
    # OmicMLP's defaults: cosine schedule stepped per optimizer step after a warm-up epoch
    ("omic_mlp", {"training": {"epochs": 4, "num_threads": 1, "resume_every_s": 0}}, 2),
])
def test_a_run_stopped_at_an_epoch_end_resumes_exactly(small_cohort, references, tmp_path, monkeypatch, model, config,
                                                       stop_epoch):
    import mmsurv.train.run as run
    from mmsurv.train.resume import TrainingInterrupted

    reference = references / model if config is CONFIGS.get(model) else tmp_path / "reference"
    if not (reference / "metrics.json").exists():
        train(model, reference, small_cohort, config=config)
    out = tmp_path / model
    with monkeypatch.context() as patch:
        patch.setattr(run, "stop_on_signals", stop_after(stop_epoch))
        with pytest.raises(TrainingInterrupted, match=f"SIGUSR1 after epoch {stop_epoch}"):
            train(model, out, small_cohort, config=config)
    state = torch.load(resume_path(out), weights_only=True)
    assert state["epoch"] == stop_epoch
    if stop_epoch == 1:
        assert state["selector"]["best_epoch"] == 1 and state["best_state"] is None
    train(model, out, small_cohort, config=config)
    assert_same_outputs(out, reference)
    if model == "snn":
        assert json.loads((out / "metrics.json").read_text())["stopped_early"]


@pytest.mark.parametrize(("interval", "saved"), [(0, [1, 2, 3, 4, 5]), (3600, [5])])
def test_resume_checkpoints_follow_the_interval_and_the_last_epoch_always_saves(small_cohort, tmp_path, monkeypatch,
                                                                                interval, saved):
    from mmsurv.train.resume import ResumeCheckpoint

    epochs = []
    save = ResumeCheckpoint.save
    monkeypatch.setattr(ResumeCheckpoint, "save", lambda self, state: (epochs.append(state["epoch"]), save(self, state)))
    config = json.loads(json.dumps(CONFIGS["abmil"]))
    config["training"]["resume_every_s"] = interval
    train("abmil", tmp_path / "abmil", small_cohort, config=config, keep_resume=True)
    assert epochs == saved


def test_a_stop_between_interval_saves_writes_the_epoch_it_ends(small_cohort, references, tmp_path, monkeypatch):
    """With the default interval nothing is saved after epochs 1-2; a stop request that arrives during
    epoch 2 still leaves epoch 2's state on disk, and the rerun ends as an uninterrupted run."""
    import contextlib

    import mmsurv.train.loop as loop
    import mmsurv.train.run as run
    from mmsurv.train.resume import StopSignals, TrainingInterrupted

    stop = StopSignals()

    @contextlib.contextmanager
    def stop_on_signals():
        yield stop

    train_epoch, calls = loop.train_epoch, []

    def epoch_then_request(*args, **kwargs):
        result = train_epoch(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            stop.received = "SIGUSR1"  # as the handler records a signal that came during the epoch-end block
        return result

    config = json.loads(json.dumps(CONFIGS["abmil"]))
    config["training"]["resume_every_s"] = 3600
    out = tmp_path / "abmil"
    with monkeypatch.context() as patch:
        patch.setattr(run, "stop_on_signals", stop_on_signals)
        patch.setattr(loop, "train_epoch", epoch_then_request)
        with pytest.raises(TrainingInterrupted, match="SIGUSR1 after epoch 2"):
            train("abmil", out, small_cohort, config=config)
    assert torch.load(resume_path(out), weights_only=True)["epoch"] == 2
    train("abmil", out, small_cohort, config=config)
    assert_same_outputs(out, references / "abmil")
