"""Results report: c-index tables, efficiency (params/FLOPs/time/memory), Kaplan–Meier curves, figures.

For the workflow's ``aggregate`` rule and the ``mmsurv report`` command: :func:`build_report`
reads the per-fold training outputs (``{results}/{cohort}/{model}/fold{k}/``) and writes the
paper tables and figures into one folder. Modules: :mod:`~mmsurv.report.collect` (find and load
fold results), :mod:`~mmsurv.report.tables`, :mod:`~mmsurv.report.efficiency`,
:mod:`~mmsurv.report.km`, :mod:`~mmsurv.report.figures`, :mod:`~mmsurv.report.stats` (IBS, AUC, Uno's C,
bootstrap intervals, paired tests), :mod:`~mmsurv.report.stats_report`, :mod:`~mmsurv.report.build`,
:mod:`~mmsurv.report.cli`.

The names below are imported on first use, so that :mod:`mmsurv.report.settings` (constants the
training job and the workflow read) costs no matplotlib or torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"build_report": "mmsurv.report.build", "collect_results": "mmsurv.report.collect",
            "ResultSet": "mmsurv.report.collect", "ResultsError": "mmsurv.report.collect"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmsurv.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
