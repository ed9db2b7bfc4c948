"""SurvMamba's two-level genomic hierarchy (functions → processes) built from gene sets.

For whoever ships or makes a hierarchy CSV (columns ``process,function``; the model reads it with
:func:`mmsurv.models.survmamba.read_hierarchy`): :func:`build_hierarchy` groups the pathways of a
gene-set file into processes by gene overlap, deterministically; ``mmsurv pathways hierarchy``
writes the result. The shipped resource was made so (``resources/hierarchy/README.md``).
"""

from __future__ import annotations

import csv
import os

import numpy as np

from mmsurv.io import atomic_path


def build_hierarchy(gene_sets: dict[str, list[str]], n_processes: int = 42) -> list[tuple[str, str]]:
    """(process, function) rows: functions grouped by gene overlap, deterministically.

    Average-linkage agglomeration on the Jaccard similarity of the gene sets, merging at each step the
    most similar pair whose merged size stays within ceil(1.5·F/K) (balanced processes; if no pair fits, the two
    smallest merge), ties broken by the smaller merged size, then the lowest (file-order) indices,
    until K processes remain. Processes are ordered by their first
    function in file order and named ``Pkk_<member most similar to the others>``."""
    names = list(gene_sets)
    sets = [set(gene_sets[name]) for name in names]
    count = len(names)
    n_processes = max(1, min(n_processes, count))
    cap = -(-3 * count // (2 * n_processes))
    jaccard = np.zeros((count, count))
    for i in range(count):
        for j in range(i + 1, count):
            union = len(sets[i] | sets[j])
            jaccard[i, j] = jaccard[j, i] = len(sets[i] & sets[j]) / union if union else 0.0
    clusters = [[i] for i in range(count)]
    sums = jaccard.copy()
    while len(clusters) > n_processes:
        sizes = np.array([len(c) for c in clusters], dtype=float)
        average = sums / np.outer(sizes, sizes)
        combined = np.add.outer(sizes, sizes)
        allowed = np.triu(combined <= cap, k=1)
        if not allowed.any():  # nothing fits under the cap: merge the two smallest
            allowed = np.triu(combined == np.triu(combined, k=1)[np.triu(np.ones_like(allowed), k=1)].min(), k=1)
        average = np.where(allowed, average, -np.inf)
        best = average >= average.max() - 1e-12  # ties: the smallest merged process, then file order
        size_of_best = np.where(best, combined, np.inf)
        i, j = np.unravel_index(int(np.argmin(size_of_best)), average.shape)
        clusters[i] = sorted(clusters[i] + clusters[j])
        sums[i] += sums[j]
        sums[:, i] += sums[:, j]
        sums = np.delete(np.delete(sums, j, axis=0), j, axis=1)
        del clusters[j]
    clusters.sort(key=min)
    rows = []
    for k, members in enumerate(clusters, start=1):
        within = jaccard[np.ix_(members, members)].sum(axis=1)
        representative = names[members[int(np.argmax(within))]]
        rows += [(f"P{k:02d}_{representative}", names[m]) for m in members]
    return rows


def write_hierarchy(rows: list[tuple[str, str]], path: str | os.PathLike) -> None:
    """The ``process,function`` CSV the model reads (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["process", "function"])
        writer.writerows(rows)
