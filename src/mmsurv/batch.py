"""Several slides in one process: each slide's work runs alone, and a failure stops only that slide.

For the batched workflow jobs (segmentation and feature extraction): a process pays its start-up
(imports, the encoder, its compiled package, worker processes) once for N slides instead of once
per slide. Every slide's outputs are written atomically by the stage itself, so a slide either has
complete outputs or none; a slide that fails is logged with its error and the batch goes on with
the next one; at the end :class:`BatchError` names every failed slide (the job fails, the other
slides keep their outputs, and a rerun redoes only what is missing, since each stage skips a
slide whose valid outputs exist).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class BatchError(RuntimeError):
    """One or more slides of a batch failed; ``failures`` maps slide → error text."""

    def __init__(self, stage: str, failures: dict[str, str], total: int):
        self.failures = dict(failures)
        details = "; ".join(f"{slide}: {error}" for slide, error in failures.items())
        super().__init__(f"{stage}: {len(failures)} of {total} slide(s) failed ({details}); "
                         "the other slides' outputs are complete and kept, a rerun redoes only the failed ones")


@dataclass(frozen=True)
class SlideOutcome:
    slide: str
    ok: bool
    seconds: float
    result: Any = None
    error: str = ""


def run_batch(stage: str, slides: Sequence[str], work: Callable[[str], Any],
              errors: tuple[type[BaseException], ...] = (Exception,)) -> list[SlideOutcome]:
    """``work(slide)`` for every slide in order; failures (``errors``) are logged and collected,
    then raised together as :class:`BatchError` once every slide had its turn."""
    outcomes = []
    for index, slide in enumerate(slides, start=1):
        started = time.perf_counter()
        try:
            result = work(slide)
        except errors as error:  # noqa: PERF203 - one slide's failure must not stop the batch
            message = f"{type(error).__name__}: {error}"
            log.error("%s: slide %s (%d of %d) failed: %s", stage, slide, index, len(slides), message)
            outcomes.append(SlideOutcome(slide, False, time.perf_counter() - started, error=message))
            continue
        seconds = time.perf_counter() - started
        log.info("%s: slide %s (%d of %d) done in %.1f s", stage, slide, index, len(slides), seconds)
        outcomes.append(SlideOutcome(slide, True, seconds, result=result))
    failures = {o.slide: o.error for o in outcomes if not o.ok}
    if failures:
        raise BatchError(stage, failures, len(slides))
    return outcomes


def write_batch_table(outcomes: Sequence[SlideOutcome], path) -> None:
    """The batch's record (slide, status, seconds): the workflow's marker that every slide is done."""
    import pandas as pd

    from mmsurv.io import write_tsv

    rows = [{"slide": o.slide, "status": _status(o.result), "seconds": round(o.seconds, 3)} for o in outcomes]
    write_tsv(pd.DataFrame(rows, columns=["slide", "status", "seconds"]), path)


def _status(result: Any) -> str:
    """``skipped`` (valid outputs already there) or ``done``, from what a stage returned."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict) and result.get("skipped"):
        return "skipped"
    return "done"
