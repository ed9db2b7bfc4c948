"""Attention heatmaps: a trained fold's per-patch scores on one slide, drawn over the slide.

For researchers who want to see where a survival model looks (CLAM's ``create_heatmaps.py``, per
fold and slide): :mod:`~mmsurv.heatmap.scores` runs a fold's checkpoint on one slide's bag and
returns the scores with their patch coordinates, :mod:`~mmsurv.heatmap.draw` overlays them on the
slide's thumbnail and picks the top and bottom patches at full resolution,
:mod:`~mmsurv.heatmap.qupath` writes them as GeoJSON for QuPath, :mod:`~mmsurv.heatmap.outputs` writes a
slide's four files, :mod:`~mmsurv.heatmap.batch` chooses patients for the workflow, and
``mmsurv heatmap`` is the command.
"""
