"""The bubble chart stays legible at the zoo's size: numbered bubbles whose labels never overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from matplotlib.text import Text

from mmsurv.report.figures import bubble_figure, label_positions


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_label_positions_never_overlap_even_for_a_pile_of_points():
    rng = np.random.default_rng(0)
    centers = 300 + rng.normal(0, 3, size=(40, 2))  # 40 markers nearly on top of each other
    radii = rng.uniform(1, 20, size=40)
    sizes = np.tile([18.0, 12.0], (40, 1))
    spots = label_positions(centers, radii, sizes, (0.0, 0.0, 600.0, 600.0))
    boxes = [(x - 9, y - 6, x + 9, y + 6) for x, y in spots]
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert all(0 <= box[0] and box[2] <= 600 and 0 <= box[1] and box[3] <= 600 for box in boxes)
    big = label_positions(np.array([[50.0, 50.0]]), np.array([30.0]), np.array([[10.0, 8.0]]), (0, 0, 100, 100))
    assert np.allclose(big, [[50.0, 50.0]])  # a label that fits inside its marker stays on it


def test_bubble_chart_of_30_models_numbers_every_bubble_without_overlapping_labels():
    rng = np.random.default_rng(1)
    models = [f"model_{i}" for i in range(30)]
    points = pd.DataFrame({"flops": 10 ** rng.uniform(9.5, 10.5, 30), "params": 10 ** rng.uniform(5, 7.3, 30),
                           "modality": rng.choice(["omic", "path", "multimodal"], 30),
                           "cindex": rng.uniform(0.70, 0.85, 30)}, index=models)
    figure = bubble_figure(points, reference_bag_size=4096, variant="last")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    ax = figure.axes[0]
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    assert sorted(int(t.get_text()) for t in numbers) == list(range(1, 31))
    extents = [Text.get_window_extent(t, renderer) for t in numbers]  # the text, not its leader line
    clashes = [(a.get_text(), b.get_text()) for (a, ea), (b, eb) in itertools.combinations(zip(numbers, extents), 2)
               if _overlap(ea, eb)]
    assert not clashes, clashes
    key = " ".join(t.get_text() for a in figure.axes[1:] for t in a.texts)
    best = points["cindex"].idxmax()
    assert f"{points.loc[best, 'cindex']:.3f}" in key  # number 1 is the best model, listed in the key
