"""Bring a cohort's slides into the run's slide folder, verified against the GDC manifest."""

from mmsurv.fetch.slide import fetch_slide

__all__ = ["fetch_slide"]
