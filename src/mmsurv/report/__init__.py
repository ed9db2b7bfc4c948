"""Results report: c-index tables, efficiency (params/FLOPs/time/memory), Kaplan–Meier curves, figures.

For the workflow's ``aggregate`` rule and the ``mmsurv report`` command: :func:`build_report`
reads the per-fold training outputs (``{results}/{cohort}/{model}/fold{k}/``) and writes the
paper tables and figures into one folder. Modules: :mod:`~mmsurv.report.collect` (find and load
fold results), :mod:`~mmsurv.report.tables`, :mod:`~mmsurv.report.efficiency`,
:mod:`~mmsurv.report.km`, :mod:`~mmsurv.report.figures`, :mod:`~mmsurv.report.stats` (IBS, AUC, Uno's C,
bootstrap intervals, paired tests), :mod:`~mmsurv.report.stats_report`, :mod:`~mmsurv.report.build`,
:mod:`~mmsurv.report.cli`.
"""

from __future__ import annotations

from mmsurv.report.build import build_report
from mmsurv.report.collect import ResultsError, ResultSet, collect_results

__all__ = ["build_report", "collect_results", "ResultSet", "ResultsError"]
