"""Resume a killed training run: the per-epoch resume checkpoint, its identity, and stop signals.

Who uses this: :func:`mmsurv.train.loop.fit` (saves and restores the state) and
:func:`mmsurv.train.run.train_fold` (where the file lives, what identifies a run, the signals).

**When.** At the end of an epoch once ``training.resume_every_s`` seconds (default 60; 0: every
epoch) have passed since the last save, and always at the end of the last epoch, of an early stop
and of an epoch during whose end a stop signal came. A save of a large model costs ~0.5 s (MoME:
model and Adam state, fsync-ed), which per epoch was a third of a demo job's time for ~0.3 s
epochs; with the interval a run that is killed loses at most a minute of epochs.

**What is saved**, in ONE file written atomically (temporary file beside it, flushed and fsync-ed,
renamed): the model, the optimiser and the scheduler (their
``state_dict``: a scheduler stepped per epoch or per optimiser step is saved alike), the epoch
reached, the sampler's generator, the training dataset's patch-capping generator, the global RNG
states (torch CPU and CUDA, NumPy, Python), the history (one record per epoch), the best epoch's
weights and evaluation, the selector (best value, best epoch, epochs since the best), the last
evaluation and whether early stopping fired. A run restored from it continues with exactly the
numbers an uninterrupted run has (tested bit for bit on CPU: ``tests/train/test_resume.py``).

**Identity.** The checkpoint records a hash (:func:`run_identity`) of everything that changes the
numbers: the resolved data, training and model settings, the seed, the fold, the device type, the
content of the cohort table, split file, signature and pathway files, the size and modification
time of every feature file, and the source of the model's module (with the model modules it
imports) and of the shared training code. A checkpoint with another identity (or unreadable, or of
another format) is not used: the run starts over and the log says which part differs.

**Signals.** :func:`stop_on_signals` turns SIGTERM and SIGUSR1 (SLURM's warning before the time
limit, ``--signal=USR1@120``; SIGTERM at the limit or on pre-emption) into
:class:`TrainingInterrupted`: outside the epoch-end save the current epoch is abandoned at once
(its state is not worth more than the last checkpoint, which is on disk); during the
save, the save finishes first. The command line and the workflow's train script then exit with
:data:`INTERRUPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try again"), so Snakemake marks the job
failed and a rerun (or Snakemake's ``retries``) resumes it. A SIGKILL, or a signal during an
epoch, loses the epoch in progress and those since the last save (at most ``resume_every_s``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsurv.io import atomic_path

log = logging.getLogger(__name__)

RESUME_FORMAT = 1
RESUME_DIR = "resume"
RESUME_FILE = "state.pt"
INTERRUPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, the rerun resumes
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")
SHARED_TRAINING_CODE = ("train/loop.py", "train/loss.py", "train/metrics.py", "train/run.py", "train/seed.py",
                        "train/settings.py", "train/resume.py", "data/dataset.py", "data/inputs.py",
                        "data/survival.py", "data/splits.py", "data/cohort.py", "data/missing.py",
                        "data/pathways.py", "models/base.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class TrainingInterrupted(Exception):
    """A stop signal arrived; the last epoch's resume checkpoint is on disk (exit, then rerun to resume)."""

    def __init__(self, signal_name: str, epoch: int | None = None):
        self.signal_name, self.epoch = signal_name, epoch
        where = "before the first epoch ended" if not epoch else f"after epoch {epoch}"
        super().__init__(f"training interrupted by {signal_name} {where}; rerun the same job to resume")


def resume_path(out_dir: str | os.PathLike) -> Path:
    """Where a fold's resume checkpoint lives: ``out_dir/resume/state.pt`` (not a workflow output)."""
    return Path(out_dir) / RESUME_DIR / RESUME_FILE


def remove_resume(out_dir: str | os.PathLike) -> None:
    """Delete a fold's resume checkpoint (and its folder when empty)."""
    path = resume_path(out_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()


# ------------------------------------------------------------------------------------------------
# Identity
# ------------------------------------------------------------------------------------------------

def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a (small) file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def features_listing(features_dir: str | os.PathLike | None) -> list[list]:
    """(name, bytes, mtime_ns) of every feature file (``*.pt`` and the ``h5_files`` beside): rewritten
    features change the listing without reading gigabytes."""
    if features_dir is None:
        return []
    folder = Path(features_dir)
    files = sorted(folder.glob("*.pt")) + sorted((folder.parent / "h5_files").glob("*.h5"))
    rows = []
    for path in files:
        stat = path.stat()
        rows.append([f"{path.parent.name}/{path.name}", stat.st_size, stat.st_mtime_ns])
    return rows


def code_digests(model_sources: Iterable[str | os.PathLike]) -> dict[str, str]:
    """sha256 of the model's source files and of the shared training code."""
    import mmsurv

    digests = {"mmsurv": mmsurv.__version__}
    for path in [*model_sources, *(PACKAGE_DIR / name for name in SHARED_TRAINING_CODE)]:
        path = Path(path)
        if path.is_file():
            digests[path.name if path.is_relative_to(PACKAGE_DIR) else str(path)] = file_digest(path)
    return digests


def run_identity(*, settings: Mapping[str, Any], data_files: Mapping[str, str | os.PathLike | None],
                 features_dir: str | os.PathLike | None, model_sources: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Per part (``settings``, ``data``, ``features``, ``code``), a hash of what makes a run's numbers."""
    data = {key: (file_digest(path) if path is not None and Path(path).is_file() else None)
            for key, path in sorted(data_files.items())}
    parts = {"settings": settings, "data": data, "features": features_listing(features_dir),
             "code": code_digests(model_sources)}
    return {key: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
            for key, value in parts.items()}


# ------------------------------------------------------------------------------------------------
# RNG states (everything weights_only=True can load: tensors, lists, numbers, strings)
# ------------------------------------------------------------------------------------------------

def rng_states() -> dict[str, Any]:
    """The global RNG states: torch CPU (and CUDA), NumPy's legacy generator, Python's ``random``."""
    numpy_state = np.random.get_state(legacy=False)
    python_version, python_state, python_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "python": [python_version, list(python_state), python_gauss],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state({"bit_generator": numpy["bit_generator"],
                         "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ------------------------------------------------------------------------------------------------
# The checkpoint file
# ------------------------------------------------------------------------------------------------

class ResumeCheckpoint:
    """One run's resume file: ``path`` and the ``identity`` a state must carry to be used."""

    def __init__(self, path: str | os.PathLike, identity: Mapping[str, str]):
        self.path = Path(path)
        self.identity = dict(identity)
        self.seconds_saving: list[float] = []

    def load(self) -> dict | None:
        """The saved state when it exists and belongs to this run; else None (the log says why).

        Temporary files a killed save left beside it are deleted (never read)."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp{self.path.suffix}"):
            log.info("removing leftover temp file %s", stale)
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file means "start over"
            log.warning("resume checkpoint %s unreadable (%s: %s): starting over", self.path, type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "")
            return None
        if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
            log.warning("resume checkpoint %s has another format: starting over", self.path)
            return None
        recorded = state.get("identity") or {}
        differ = sorted(key for key in set(recorded) | set(self.identity) if recorded.get(key) != self.identity.get(key))
        if differ:
            log.warning("resume checkpoint %s (epoch %s) is of another run (different %s): starting over",
                        self.path, state.get("epoch"), ", ".join(differ))
            return None
        return state

    def save(self, state: dict) -> None:
        """Write ``state`` (with this run's identity) atomically and durably."""
        import time

        started = time.perf_counter()
        with atomic_path(self.path) as tmp:
            torch.save({"format": RESUME_FORMAT, "identity": self.identity, **state}, tmp)
        self.seconds_saving.append(time.perf_counter() - started)

    def remove(self) -> None:
        remove_resume(self.path.parent.parent)


# ------------------------------------------------------------------------------------------------
# Stop signals
# ------------------------------------------------------------------------------------------------

class StopSignals:
    """SIGTERM/SIGUSR1 → :class:`TrainingInterrupted`, deferred while the epoch-end state is saved."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.epoch = 0  # the last epoch whose state is saved
        self._protected = 0

    def handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.received = signal.Signals(signum).name
        log.warning("received %s: stopping (the last finished epoch's resume checkpoint is kept)", self.received)
        if not self._protected:
            raise TrainingInterrupted(self.received, self.epoch)

    @contextlib.contextmanager
    def protected(self) -> Iterator[None]:
        """A block a signal does not interrupt (the epoch-end save); the stop is raised after it."""
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1

    def check(self, epoch: int) -> None:
        """After epoch ``epoch``'s save: stop now if a signal came."""
        self.epoch = epoch
        if self.received is not None and not self._protected:
            raise TrainingInterrupted(self.received, epoch)


@contextlib.contextmanager
def stop_on_signals(names: Iterable[str] = STOP_SIGNALS) -> Iterator[StopSignals | None]:
    """Install :class:`StopSignals` for ``names`` in the block (main thread only; None elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    stop = StopSignals()
    previous = {}
    for name in names:
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, stop.handle)
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
