"""The training loop: batches (1 patient by default) with gradient accumulation, validation, selection.

As MCAT (utils/core_utils.py of mahmoodlab/MCAT): one patient per forward pass by default; the
model's loss terms (:meth:`SurvivalModel.loss`: MCAT's NLL plus the model's own terms) are summed,
the WHOLE total divided by ``grad_accum`` (MCAT's ``gc``, 32) and back-propagated, and the
optimiser steps every ``grad_accum`` batches; so an auxiliary term weighs the same against the
survival loss whatever the accumulation. Models that declare ``batchable`` may take
``training.batch_size`` patients per forward pass (bags padded, with a mask): each term is then a
mean over the batch, so batch B × accumulation 1 gives the gradient of batch 1 × accumulation B.
The optional L1 penalty (MCAT's ``--reg_type omic``, ``λ·Σ|w|`` over all parameters, or over the
submodules named in ``l1_modules`` as PORPOISE's ``--reg_type pathomic``) is added per patient
without the division, as there; since the weights do not change inside an accumulation
window, the ``k`` per-patient penalties of a window of ``k`` patients are back-propagated once as
``k·λ·Σ|w|`` when the window closes (the same gradient ``k·λ·sign(w)`` and the same logged loss,
without one pass over every weight per patient). An epoch visits as many patients as the training
fold has, in the order of :func:`mmsurv.data.dataset.epoch_order` (class-balanced with replacement
by default, MCAT's weighted sampler). Unlike MCAT, gradients left over at the end of an epoch
(fewer than ``grad_accum`` batches) are applied by a last step (``flush_accumulation``) instead of
leaking into the next epoch. Every loss term is logged per epoch (``train_loss_<term>``). The
optimiser and the learning-rate schedule (per epoch, or per optimiser step with
``scheduler_interval: step``) are built by :mod:`mmsurv.train.optim`.

Evaluation ranks patients by the model's ``output.risk`` (float64) and reports the mean of the
model's summed loss terms.

After every epoch the model is evaluated on the validation fold (and on the hold-out if any).
Two results are kept and labelled:

* **last**: the model after the final epoch (what MCAT reports, "latest");
* **best**: the epoch with the best selection metric. With a hold-out carved from the training
  fold (``holdout_fraction > 0``) the selection looks only at the hold-out (default metric: its
  NLL; early stopping with ``early_stopping_patience`` uses it too). Without a hold-out it is the
  validation c-index (MCAT's ``Monitor_CIndex``), which is optimistic because the reported fold
  chose the epoch; ``selected_on`` says which.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mmsurv.data.dataset import PatientSample, SurvivalDataset, epoch_order
from mmsurv.data.inputs import collate
from mmsurv.models.base import SURVIVAL_TERM, Batch, SurvivalModel, Target
from mmsurv.models.survival import discrete_survival, mcat_risk
from mmsurv.train.loss import cox_ph_loss
from mmsurv.train.metrics import concordance
from mmsurv.train.optim import make_optimizer, make_scheduler, steps_per_epoch
from mmsurv.train.resume import ResumeCheckpoint, StopSignals, rng_states, set_rng_states
from mmsurv.train.settings import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-patient outputs of one pass over a dataset (no gradients)."""

    case_ids: list[str]
    survival: np.ndarray  # P×K
    risk: np.ndarray
    time: np.ndarray
    censorship: np.ndarray
    label: np.ndarray
    loss: float
    cindex: float
    measures: dict[str, float | list[float]] = field(default_factory=dict)  # patient means of ModelOutput.measures


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    history: list[dict]
    last_eval: EvalResult
    best_eval: EvalResult
    best_epoch: int  # 1-based
    best_state: dict
    selected_on: str
    selection_metric: str
    stopped_early: bool
    epoch_seconds: list[float] = field(default_factory=list)


def make_batch(samples: list[PatientSample], device: torch.device, alpha: float = 0.0) -> tuple[Batch, Target]:
    """Collated inputs and labels of ``samples`` on ``device``; ``alpha``: the NLL's α (``training.alpha``)."""
    batch, target = collate(samples)
    target.alpha = alpha
    return batch.to(device), target.to(device)


def chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[start:start + size] for start in range(0, len(order), size)]


def l1_norm(model: nn.Module, modules: list[str] | None = None) -> torch.Tensor:
    """Σ|w| over every parameter (MCAT's ``l1_reg_all``), or over the submodules named in ``modules``
    (PORPOISE's ``l1_reg_modules``: ``fc_omic`` and ``mm`` there)."""
    if modules is None:
        return sum(p.abs().sum() for p in model.parameters())
    return sum(p.abs().sum() for name in modules for p in _submodule(model, name).parameters())


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(child for child, _ in model.named_children())
        raise ValueError(f"training.l1_modules: {type(model).__name__} has no submodule {name!r} "
                         f"(its top-level modules: {children})") from None


def train_epoch(model: SurvivalModel, dataset: SurvivalDataset, optimizer: torch.optim.Optimizer,
                config: TrainConfig, generator: torch.Generator, device: torch.device, step_scheduler=None) -> dict:
    """One epoch; returns the mean of every loss term per patient, the mean total and the training c-index.

    ``step_scheduler`` (a per-step learning-rate schedule) is stepped after every optimiser step."""
    model.train()
    order = epoch_order(dataset.class_labels, weighted=config.weighted_sampling, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    risks, times, censorships = [], [], []
    terms_total: dict[str, float] = defaultdict(float)  # per-window terms (L1, Cox) as they close
    step_terms: list[tuple[str, torch.Tensor | float, int]] = []  # per-step terms, read after the epoch
    measures = MeasureMeans()
    window: list[tuple[torch.Tensor, Target]] = []
    pending_patients = 0
    batches = chunks(order, config.batch_size)
    for position, indices in enumerate(batches, start=1):
        samples = [dataset[index] for index in indices]
        batch, target = make_batch(samples, device, config.alpha)
        output = model(batch)
        terms = model.loss(output, target)
        risk = output.risk
        risks.append(risk.detach().reshape(-1))  # no host sync per step: read once after the epoch
        measures.add(output.measures, len(samples))
        times += [sample.time for sample in samples]
        censorships += [sample.censorship for sample in samples]
        if config.loss == "cox":  # the survival term comes from the window's partial likelihood
            terms = {name: value for name, value in terms.items() if name != SURVIVAL_TERM}
            window.append((risk.reshape(-1), target))
        total = sum(terms.values()) if terms else None
        if torch.is_tensor(total) and total.requires_grad:
            (total / config.grad_accum).backward()
        for name, value in terms.items():
            terms_total.setdefault(name, 0.0)  # keeps the order in which terms first appear
            step_terms.append((name, value.detach() if torch.is_tensor(value) else value, len(samples)))
        pending_patients += len(samples)
        if position % config.grad_accum == 0:
            terms_total["l1"] += _window_l1(model, config, pending_patients, backward=True)
            _close_window(window, config, terms_total)
            _optimizer_step(optimizer, step_scheduler)
            pending_patients = 0
    if pending_patients:  # a last partial window: applied with flush_accumulation, else its gradients are dropped
        terms_total["l1"] += _window_l1(model, config, pending_patients, backward=config.flush_accumulation)
        if config.flush_accumulation:
            _close_window(window, config, terms_total)
            _optimizer_step(optimizer, step_scheduler)
    window.clear()
    for (name, _, patients), value in zip(step_terms, _host_floats([value for _, value, _ in step_terms])):
        terms_total[name] += value * patients
    risks = _host_floats(risks)
    count = max(1, len(order))
    record = {f"train_loss_{name}": value / count for name, value in terms_total.items() if name != "l1" or value}
    record.setdefault(f"train_loss_{SURVIVAL_TERM}", 0.0)
    record["train_loss"] = sum(terms_total.values()) / count
    record["train_cindex"] = concordance(times, censorships, risks)
    record.update({f"train_{name}": value for name, value in measures.means().items() if isinstance(value, float)})
    return record


def _optimizer_step(optimizer: torch.optim.Optimizer, step_scheduler) -> None:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if step_scheduler is not None:
        step_scheduler.step()


def _window_l1(model: nn.Module, config: TrainConfig, patients: int, *, backward: bool) -> float:
    """The L1 penalty of ``patients`` patients of one window (weights fixed): back-propagated, summed."""
    if not config.l1_reg or not patients:
        return 0.0
    with torch.set_grad_enabled(backward):
        penalty = (config.l1_reg * patients) * l1_norm(model, config.l1_modules)
        if backward:
            penalty.backward()
    return float(penalty.detach())


class MeasureMeans:
    """Patient-weighted means of the ``ModelOutput.measures`` of one pass (kept on the device until read)."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[torch.Tensor, int]]] = defaultdict(list)

    def add(self, measures: dict[str, torch.Tensor], patients: int) -> None:
        for name, value in measures.items():
            self.values[name].append((value.detach().reshape(-1).to(torch.float64), patients))

    def means(self) -> dict[str, float | list[float]]:
        """name → the mean (a float for scalars, a list for vectors); a measure whose size varies is an error."""
        out: dict[str, float | list[float]] = {}
        for name, entries in self.values.items():
            sizes = {value.numel() for value, _ in entries}
            if len(sizes) != 1:
                raise ValueError(f"ModelOutput.measures[{name!r}] changed size between patients ({sorted(sizes)})")
            weights = torch.tensor([float(patients) for _, patients in entries], dtype=torch.float64)
            stacked = torch.stack([value.cpu() for value, _ in entries])
            mean = (stacked * weights[:, None]).sum(0) / weights.sum()
            out[name] = float(mean[0]) if sizes == {1} else mean.tolist()
        return out


def _host_floats(values: list) -> list[float]:
    """Numbers and tensors (any shape) of one epoch as Python floats, in order, with one copy from
    the device instead of a synchronising ``.item()`` per training step (float32 → float64 is exact,
    so the sums over them are what per-step conversion gave)."""
    tensors = [value for value in values if torch.is_tensor(value)]
    if not tensors:
        return [float(value) for value in values]
    flat = iter(torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]).cpu().tolist())
    out: list[float] = []
    for value in values:
        if torch.is_tensor(value):
            out += [next(flat) for _ in range(value.numel())]
        else:
            out.append(float(value))
    return out


def _close_window(window: list, config: TrainConfig, terms_total: dict[str, float]) -> None:
    """Cox only: back-propagate the partial likelihood of the accumulated window, log it as ``surv``."""
    if config.loss != "cox" or not window:
        return
    log_risk = torch.cat([risk for risk, _ in window])
    time_ = torch.cat([target.time for _, target in window])
    event = torch.cat([1 - target.censorship for _, target in window])
    loss = cox_ph_loss(log_risk, time_, event)
    loss.backward()
    window.clear()
    terms_total[SURVIVAL_TERM] += float(loss.detach()) * len(log_risk)


@torch.no_grad()
def evaluate(model: SurvivalModel, dataset: SurvivalDataset, device: torch.device, batch_size: int = 1,
             alpha: float = 0.0) -> EvalResult:
    """Survival curves, the model's risks (float64), mean summed loss terms (the NLL with ``alpha``,
    ``training.alpha`` as in training) and c-index over ``dataset``."""
    model.eval()
    curves, risks, losses, sizes, times, censorships, labels = [], [], [], [], [], [], []
    measures = MeasureMeans()
    for indices in chunks(list(range(len(dataset))), batch_size):
        samples = [dataset[index] for index in indices]
        batch, target = make_batch(samples, device, alpha)
        output = model(batch)
        survival = discrete_survival(output.logits.double())
        curves.append(survival)  # on the device until the pass ends: no host sync per patient
        own = output.risk_score
        risks.append(mcat_risk(survival) if own is None else own.reshape(-1).double())
        losses.append(sum(model.loss(output, target).values()))
        measures.add(output.measures, len(samples))
        sizes.append(len(samples))
        times += [sample.time for sample in samples]
        censorships += [sample.censorship for sample in samples]
        labels += [sample.label for sample in samples]
    loss_sum = 0.0
    for loss, size in zip(_host_floats(losses), sizes):
        loss_sum += loss * size
    survival = torch.cat(curves).cpu().numpy() if curves else np.zeros((0, model.n_bins))
    risk = torch.cat(risks).cpu().numpy() if risks else np.zeros(0)
    return EvalResult(case_ids=dataset.case_ids, survival=survival, risk=risk, time=np.asarray(times),
                      censorship=np.asarray(censorships, dtype="int64"), label=np.asarray(labels, dtype="int64"),
                      loss=loss_sum / len(dataset) if len(dataset) else float("nan"),
                      cindex=concordance(times, censorships, risk), measures=measures.means())


class _Selector:
    """Tracks the best epoch by a metric of the hold-out (or, without one, of the validation fold)."""

    def __init__(self, config: TrainConfig, has_holdout: bool):
        self.selected_on = "holdout" if has_holdout else "val"
        self.metric = config.selection_metric or ("loss" if has_holdout else "cindex")
        self.best_value = math.inf
        self.best_epoch = 0
        self.since_best = 0

    def score(self, result: EvalResult) -> float:
        value = result.loss if self.metric == "loss" else -result.cindex
        return math.inf if math.isnan(value) else value

    def update(self, epoch: int, result: EvalResult) -> bool:
        value = self.score(result)
        if value < self.best_value or self.best_epoch == 0:
            self.best_value, self.best_epoch, self.since_best = value, epoch, 0
            return True
        self.since_best += 1
        return False


def fit(model: SurvivalModel, train: SurvivalDataset, val: SurvivalDataset, config: TrainConfig, *,
        holdout: SurvivalDataset | None = None, seed: int = 0,
        on_epoch: Callable[[dict], None] | None = None, resume: ResumeCheckpoint | None = None,
        stop: StopSignals | None = None) -> FitResult:
    """Train ``model`` for ``config.epochs`` (or until early stopping) and keep last and best.

    With ``resume`` the whole training state is saved there at the end of an epoch (every
    ``config.resume_every_s`` seconds, and after the last epoch or a stop), and a saved
    state of the same run is restored first (:mod:`mmsurv.train.resume`): the run continues with the
    numbers an uninterrupted run has. ``on_epoch`` sees every record, restored ones included.
    ``stop`` (a signal handler) ends the run with ``TrainingInterrupted`` after the epoch's save.
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch(len(train), config))
    step_scheduler = scheduler if config.scheduler_interval == "step" else None
    if config.l1_reg and config.l1_modules:
        l1_norm(model, config.l1_modules)  # an unknown module name stops the run before training
    generator = torch.Generator().manual_seed(int(seed))
    selector = _Selector(config, holdout is not None)
    history: list[dict] = []
    best_state, best_eval, val_result = None, None, None
    stopped_early = False
    saved = resume.load() if resume is not None else None
    if saved is not None:
        best_state, best_eval, val_result, stopped_early = _restore(saved, model, optimizer, scheduler, generator,
                                                                    train, selector, history)
        log.info("resuming from %s: %d of %d epoch(s) done%s", resume.path, len(history), config.epochs,
                 " (stopped early)" if stopped_early else "")
        for record in history:
            if on_epoch is not None:
                on_epoch(record)
    if stop is not None:
        stop.epoch = len(history)
    saved_epoch, saved_at = len(history), time.monotonic()
    for epoch in range(len(history) + 1, config.epochs + 1):
        if stopped_early:
            break
        started = time.perf_counter()
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        record.update(train_epoch(model, train, optimizer, config, generator, device, step_scheduler))
        seconds = time.perf_counter() - started
        if scheduler is not None and step_scheduler is None:
            scheduler.step()
        val_result = evaluate(model, val, device, config.batch_size, config.alpha)
        record.update(val_loss=val_result.loss, val_cindex=val_result.cindex)
        monitored = val_result
        if holdout is not None:
            monitored = evaluate(model, holdout, device, config.batch_size, config.alpha)
            record.update(holdout_loss=monitored.loss, holdout_cindex=monitored.cindex)
        record["seconds"] = seconds
        if selector.update(epoch, monitored):
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_eval = val_result
        record["best_epoch"] = selector.best_epoch
        model.on_epoch_end(record)
        history.append(record)
        log.info("epoch %d/%d: train loss %.4f c-index %.4f | val loss %.4f c-index %.4f%s (%.1f s)",
                 epoch, config.epochs, record["train_loss"], record["train_cindex"], val_result.loss,
                 val_result.cindex, f" | holdout loss {monitored.loss:.4f}" if holdout is not None else "", seconds)
        stopped_early = (config.early_stopping_patience is not None and epoch >= config.early_stopping_min_epochs
                         and selector.since_best >= config.early_stopping_patience)
        with stop.protected() if stop is not None else contextlib.nullcontext():
            if on_epoch is not None:
                on_epoch(record)
            if resume is not None and (epoch == config.epochs or stopped_early
                                       or (stop is not None and stop.received is not None)
                                       or time.monotonic() - saved_at >= config.resume_every_s):
                resume.save(_fit_state(model, optimizer, scheduler, generator, train, selector, history, best_state,
                                       best_eval, val_result, stopped_early))
                saved_epoch, saved_at = epoch, time.monotonic()
        if stop is not None:
            stop.check(saved_epoch if resume is not None else epoch)
        if stopped_early:
            log.info("early stopping after epoch %d (best hold-out epoch %d)", epoch, selector.best_epoch)
    return FitResult(history=history, last_eval=val_result, best_eval=best_eval, best_epoch=selector.best_epoch,
                     best_state=best_state, selected_on=selector.selected_on, selection_metric=selector.metric,
                     stopped_early=stopped_early, epoch_seconds=[r["seconds"] for r in history])


def _fit_state(model: SurvivalModel, optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator,
               train: SurvivalDataset, selector: _Selector, history: list[dict], best_state: dict | None,
               best_eval: EvalResult | None, last_eval: EvalResult, stopped_early: bool) -> dict:
    """Everything :func:`fit` needs to continue after the last epoch of ``history`` (see mmsurv.train.resume)."""
    data_rng = getattr(train, "rng", None)
    return {
        "epoch": len(history),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler": generator.get_state(),
        "data_rng": data_rng.get_state() if data_rng is not None else None,
        "rng": rng_states(),
        "history": history,
        "selector": {"best_value": selector.best_value, "best_epoch": selector.best_epoch,
                     "since_best": selector.since_best},
        # the best epoch's weights, unless they are the model's (the epoch just saved): a quarter less to write
        "best_state": None if selector.best_epoch == len(history) else best_state,
        "best_eval": _eval_state(best_eval),
        "last_eval": _eval_state(last_eval),
        "stopped_early": stopped_early,
    }


def _restore(state: dict, model: SurvivalModel, optimizer: torch.optim.Optimizer, scheduler,
             generator: torch.Generator, train: SurvivalDataset, selector: _Selector, history: list[dict]
             ) -> tuple[dict | None, EvalResult | None, EvalResult | None, bool]:
    """Load a :func:`_fit_state` into the run's objects; → best state, best and last evaluation, stopped early."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["sampler"])
    data_rng = getattr(train, "rng", None)
    if data_rng is not None and state["data_rng"] is not None:
        data_rng.set_state(state["data_rng"])
    set_rng_states(state["rng"])
    history.extend(state["history"])
    selector.best_value = state["selector"]["best_value"]
    selector.best_epoch = state["selector"]["best_epoch"]
    selector.since_best = state["selector"]["since_best"]
    best_state = state["best_state"]
    if best_state is None and selector.best_epoch == len(history):
        best_state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    return (best_state, _eval_from_state(state["best_eval"]), _eval_from_state(state["last_eval"]),
            bool(state["stopped_early"]))


_EVAL_ARRAYS = ("survival", "risk", "time", "censorship", "label")


def _eval_state(result: EvalResult | None) -> dict | None:
    if result is None:
        return None
    state = {name: torch.from_numpy(np.ascontiguousarray(getattr(result, name))) for name in _EVAL_ARRAYS}
    return {**state, "case_ids": list(result.case_ids), "loss": result.loss, "cindex": result.cindex,
            "measures": dict(result.measures)}


def _eval_from_state(state: dict | None) -> EvalResult | None:
    if state is None:
        return None
    return EvalResult(case_ids=list(state["case_ids"]), loss=state["loss"], cindex=state["cindex"],
                      measures=dict(state.get("measures", {})), **{name: state[name].numpy() for name in _EVAL_ARRAYS})
