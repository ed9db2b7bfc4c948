"""Patch-GCN: DeepGCN layers on a k-nearest-neighbour graph of patch coordinates (WSI only).

Chen et al., "Whole Slide Images are 2D Point Clouds: Context-Aware Survival Prediction using
Patch-based Graph Convolutional Networks", MICCAI 2021. Reference implementation read (not
copied): ``PatchGCN_Surv`` in models/model_graph_mil.py of mahmoodlab/Patch-GCN (``--mode graph
--model_type patchgcn``, ``num_gcn_layers=4``, ``edge_agg='spatial'``) and its graph construction
(``pt2graph`` in "WSI-Graph Construction.ipynb"). Graph layers are torch-geometric's (imported
lazily, inside the model): ``GENConv`` and ``DeepGCNLayer``.

**Graph.** Per slide, every patch is joined to its ``k`` (8) nearest patches by Euclidean distance
of the level-0 (x, y) coordinates (the reference queries an HNSW index for 9 neighbours and drops
the first, the patch itself; here an exact ``scipy.spatial.cKDTree`` query, O(N log N)). Edges are
directed as the reference stores them, ``edge_index = [patch; neighbour]``: with torch-geometric's
source→target flow a patch sends its message to each of its k nearest, so each patch aggregates
over the patches that count it among their k nearest (out-degree exactly k, in-degree varies; on a
full grid the two coincide away from the border). The graph is not symmetrised (the reference does
not). A patient's slides are disconnected components (the reference batches one graph per slide);
a slide with at most k patches joins each patch to all others of the slide; a single patch has no
edge (GENConv then transforms it alone). Neighbour tables are cached per slide on the model
instance, keyed by a BLAKE2 digest of the slide's coordinates (least recently used first out, at
most 2^25 cached neighbour entries ≈ 128 MiB). Building the graph of a 50,000-patch slide takes
tens of milliseconds (see bench/graph_models.py); a cached slide costs a hash.

**Network** (``hidden_dim`` 128, ``gcn_layers`` 3 — the reference's ``num_gcn_layers=4`` builds 3):

1. ``Linear(path_dim → 128) → ReLU → Dropout(0.25)``, N×128;
2. a first ``GENConv(128, 128, aggr='softmax', t=1 learnable, num_layers=2 (MLP 128→256→128),
   norm='layer')`` applied on its own, then ``gcn_layers − 1`` ``DeepGCNLayer``\\ s (the same
   GENConv, ``LayerNorm(128)``, ``ReLU``, ``block='res'``: ``x + ReLU(LN(GENConv(x)))``, dropout
   0.1; gradient checkpointing on the reference's layers ``i % 3 != 0``);
3. the outputs of step 1 and of every graph layer concatenated (dense skip connections), N×512;
4. ``path_phi = Linear(512 → 512) → ReLU → Dropout(0.25)``; gated attention pooling (512 → 512
   hidden, dropout 0.25, :class:`~mmsurv.models.base.GatedAttention`) over all the patient's
   patches; ``rho = Linear(512 → 512) → ReLU → Dropout(0.25)``; ``Linear(512 → n_bins)``.

**Which version.** The model file as published with the paper (commits bb8596c and 5fefa05 of
2021-05-21, 6d5c258 of 2021-11-04; unchanged until 2024): ``path_rho`` ends with
``Dropout(dropout)``. Commit 823adda (2024-01-26), the repository's HEAD, removed that dropout from
``path_rho`` (of ``PatchGCN_Surv`` and ``DeepGraphConv_Surv``); we follow the 2021 code, with which
the paper's results were produced. No parameter depends on it (same count, same state dict).

``block`` may be ``'res+'`` (pre-activation, DeeperGCN's own design: ``x + GENConv(Dropout(ReLU(
LN(x))))``); the reference code uses ``'res'``, which is the default here.

**Parameters.** 1,383,304 at 1024-d input and 4 bins with torch-geometric 2.8 — the reference's
count with that version. With the torch-geometric 1.6.3 its authors used the count is 1,384,456:
GENConv's MLP then had biases (3 × (256 + 128)). As in the reference, the first graph layer's
``LayerNorm`` is built but never used (its output goes straight to the concatenation; PyG's
DeeperGCN example applies it after the last layer, Patch-GCN dropped that line): its 256 parameters
never receive a gradient, and neither does the bias of the attention scorer (softmax ignores a
shift). Both are kept so counts and state dicts line up with the reference.

**Training defaults** (the reference's ``main.py``, equal to the package's MCAT defaults): Adam,
lr 2e-4, weight decay 1e-5, 20 epochs, batch 1 with gradient accumulation 32, NLL (α = 0) over
4 bins, class-balanced sampling. Departures: none in the network; the exact kNN replaces an
approximate HNSW index (same neighbours up to HNSW's recall and ties); device-agnostic (the
reference hard-codes CUDA tensors in places).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import GatedAttention, attention_pool
from mmsurv.models.registry import register_model

GRAPH_CACHE_ENTRIES = 1 << 25  # neighbour entries (int32) kept across cached slides


def torch_geometric_nn():
    """``torch_geometric.nn``, imported on first use (silencing its ``torch.jit.script`` deprecation notice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import torch_geometric.nn as pyg_nn
    return pyg_nn


def slide_knn(coords: np.ndarray, k: int) -> np.ndarray:
    """The ``min(k, N−1)`` nearest other patches of each of N patches (N×2 coordinates) → N×k' int32.

    Exact Euclidean kNN with a k-d tree; a patch never counts itself (with duplicate coordinates
    the query may return another copy first, so the patch itself is removed, not the first hit)."""
    from scipy.spatial import cKDTree

    n = coords.shape[0]
    kk = min(k, n - 1)
    if kk <= 0:
        return np.zeros((n, 0), dtype=np.int32)
    points = np.asarray(coords, dtype=np.float64)
    _, neighbours = cKDTree(points).query(points, k=kk + 1)
    neighbours = neighbours.reshape(n, kk + 1)
    drop = neighbours == np.arange(n)[:, None]
    no_self = ~drop.any(axis=1)
    drop[no_self, -1] = True  # self beyond the k+1 hits (many duplicates): drop the farthest hit
    return neighbours[~drop].reshape(n, kk).astype(np.int32)


def knn_edge_index(coords: torch.Tensor, slide_index: torch.Tensor, k: int = 8,
                   cache: OrderedDict | None = None) -> torch.Tensor:
    """2×E edges ``[patch; neighbour]`` joining every patch to its k nearest patches of the same slide.

    ``coords`` N×2, ``slide_index`` N (which slide each row comes from); ``cache`` (optional) maps a
    digest of a slide's coordinates to its neighbour table."""
    xy = coords.detach().cpu().numpy()
    slides = slide_index.detach().cpu().numpy().reshape(-1)
    sources, targets = [], []
    for slide in np.unique(slides):
        rows = np.flatnonzero(slides == slide)
        points = np.ascontiguousarray(xy[rows])
        key = None
        table = None
        if cache is not None:
            key = hashlib.blake2b(f"{points.shape}|{points.dtype}|{k}".encode() + points.tobytes(),
                                  digest_size=16).hexdigest()
            table = cache.get(key)
        if table is None:
            table = slide_knn(points, k)
            if cache is not None:
                cache[key] = table
                _trim(cache)
        else:
            cache.move_to_end(key)
        sources.append(np.repeat(rows, table.shape[1]))
        targets.append(rows[table.reshape(-1)])
    if not sources:
        return torch.zeros(2, 0, dtype=torch.long, device=coords.device)
    edges = np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.int64)
    return torch.from_numpy(edges).to(coords.device)


def _trim(cache: OrderedDict) -> None:
    total = sum(table.size for table in cache.values())
    while total > GRAPH_CACHE_ENTRIES and len(cache) > 1:
        _, table = cache.popitem(last=False)
        total -= table.size


@register_model("patch_gcn", display="Patch-GCN", citation="Chen et al., MICCAI 2021")
class PatchGCN(SurvivalModel):
    """DeepGCN (GENConv, softmax aggregation, residual) on a per-slide patch kNN graph, attention pooling."""

    inputs = ("path", "coords", "slide_index")
    patch_score_kind = "gated attention weight of the graph's nodes (softmax over the bag)"
    patch_score_key = "path"
    defaults = {"training": {"optimizer": "adam", "lr": 2e-4, "weight_decay": 1e-5, "epochs": 20, "grad_accum": 32}}

    def __init__(self, *, path_dim: int = 1024, n_bins: int = 4, hidden_dim: int = 128, gcn_layers: int = 3,
                 k: int = 8, block: str = "res", dropout: float = 0.25, gcn_dropout: float = 0.1,
                 checkpoint: bool = True, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, **sizes)
        if gcn_layers < 1 or k < 1:
            raise ValueError(f"Patch-GCN: gcn_layers and k must be at least 1, got {gcn_layers} and {k}")
        if block not in ("res", "res+"):
            raise ValueError(f"Patch-GCN: block must be 'res' (the reference's) or 'res+', got {block!r}")
        pyg = torch_geometric_nn()
        self.k = k
        self._graphs: OrderedDict[str, np.ndarray] = OrderedDict()
        self.fc = nn.Sequential(nn.Linear(path_dim, hidden_dim), nn.ReLU(), nn.Dropout(0.25))
        self.layers = nn.ModuleList()
        for position in range(1, gcn_layers + 1):
            conv = pyg.GENConv(hidden_dim, hidden_dim, aggr="softmax", t=1.0, learn_t=True, num_layers=2,
                               norm="layer")
            self.layers.append(pyg.DeepGCNLayer(conv, nn.LayerNorm(hidden_dim), nn.ReLU(), block=block,
                                                dropout=gcn_dropout, ckpt_grad=checkpoint and position % 3 != 0))
        width = hidden_dim * (gcn_layers + 1)
        self.path_phi = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.25))
        self.attention = GatedAttention(width, width, dropout)
        self.rho = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(width, n_bins)

    def graph(self, coords: torch.Tensor, slide_index: torch.Tensor) -> torch.Tensor:
        """The patient's kNN edge index (2×E, on the coordinates' device), slides cached."""
        return knn_edge_index(coords, slide_index, self.k, cache=self._graphs)

    def node_embeddings(self, path: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """N×D patches and their graph → N×width node embeddings (steps 1–4 up to ``path_phi``)."""
        x = self.fc(path)
        skips = [x]
        x = self.layers[0].conv(x, edge_index)
        skips.append(x)
        for layer in self.layers[1:]:
            x = layer(x, edge_index)
            skips.append(x)
        return self.path_phi(torch.cat(skips, dim=1))

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "Patch-GCN")
        coords = batch.one("coords", "Patch-GCN")
        slide_index = batch.one("slide_index", "Patch-GCN")
        if coords.shape[0] != path.shape[0] or slide_index.shape[0] != path.shape[0]:
            raise ValueError(f"Patch-GCN: {path.shape[0]} patches but {coords.shape[0]} coordinates and "
                             f"{slide_index.shape[0]} slide indices")
        h = self.node_embeddings(path, self.graph(coords, slide_index).to(path.device))
        pooled, weights = attention_pool(self.attention(h), h)
        return ModelOutput(logits=self.classifier(self.rho(pooled)), attention={"path": weights.detach()})
