"""The offline demo cohort: a small synthetic TCGA-like study that exercises the whole pipeline.

For people who want to see the pipeline run end to end without downloading anything. Every
patient gets a latent risk ``r ~ N(0, 1)`` that drives three things at once:

* survival: event time ``T ~ Exponential(rate = exp(BETA * r) / BASE_MONTHS)``, independent
  censoring ``C ~ Exponential(mean CENSOR_MONTHS)`` (about half of the patients die), so the risk
  itself reaches a c-index near 0.81 (4,000 patients, 56 % events) and any model that recovers it
  beats 0.5 clearly;
* genomics: a subset of genes (``informative_genes``) carries ``r`` in their ``_rnaseq``
  z-scores, ``_cnv`` calls and ``_mut`` flags; the rest is heavy-tailed noise, as in the real tables;
* histology: nucleus density, size and colour of the patient's slides (see
  :mod:`mmsurv.demo.slides`).

It is written in exactly the formats users get for real data: an MCAT-format table and
``signatures.csv``, 5-fold patient-level ``splits_{k}.csv``, Aperio-style slides named like TCGA
diagnostic slides, and a GDC manifest with real md5s and sizes that, like real manifests, also
lists frozen sections (``-TS1``/``-BS1``), a duplicated row and a slide of a case missing from the
table, so that manifest cleaning has something to clean.
"""

from __future__ import annotations

import gzip
import logging
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mmsurv.demo.slides import SlideSpec, make_slide
from mmsurv.io import atomic_path, atomic_write_bytes, md5_file

log = logging.getLogger(__name__)

BETA = 1.5  # log hazard ratio per unit of latent risk (1.0 until the zoo: its borderline models need a clearer signal on 40 patients)
BASE_MONTHS = 30.0  # mean event time at risk 0
CENSOR_MONTHS = 40.0  # mean censoring time
FAMILIES = (
    "Tumor Suppressor Genes",
    "Oncogenes",
    "Protein Kinases",
    "Cell Differentiation Markers",
    "Transcription Factors",
    "Cytokines and Growth Factors",
)
TABLE_NAME = "tcga_demo_all_clean.csv.gz"
MANIFEST_NAME = "gdc_manifest.txt"
SIGNATURES_NAME = "signatures.csv"
PATHWAYS_NAME = "pathways.csv"
TRUTH_NAME = "demo_truth.tsv"


@dataclass(frozen=True)
class DemoSpec:
    """What to generate. Defaults give a cohort the whole pipeline handles in minutes on 2 cores."""

    patients: int = 40
    seed: int = 0
    width: int = 4000
    height: int = 3000
    second_slide_fraction: float = 0.25  # patients with a second diagnostic slide (DX2)
    genes: int = 120
    informative_genes: int = 24
    folds: int = 5
    extra_slide_size: tuple[int, int] = field(default=(2000, 1500))  # TS/BS and orphan slides


@dataclass(frozen=True)
class DemoCohort:
    """Paths of everything :func:`generate_demo_cohort` wrote."""

    outdir: Path
    table: Path
    signatures: Path
    pathways: Path
    splits_dir: Path
    slides_dir: Path
    manifest: Path
    truth: Path


@dataclass(frozen=True)
class _SlideJob:
    path: Path
    spec: SlideSpec


def generate_demo_cohort(outdir: str | os.PathLike, spec: DemoSpec = DemoSpec(), workers: int = 1) -> DemoCohort:
    """Write the demo cohort into ``outdir``; the same ``spec`` always gives the same files."""
    if spec.patients < spec.folds:
        raise ValueError(f"demo cohort: patients ({spec.patients}) must be at least folds ({spec.folds})")
    outdir = Path(outdir)
    rng = np.random.default_rng(spec.seed)
    patients = _patients(rng, spec)
    genes = [f"DG{index:04d}" for index in range(spec.genes)]
    genomics = _genomics(rng, spec, genes, patients["risk"].to_numpy())
    slides = _slides(rng, spec, patients)
    cohort = DemoCohort(
        outdir=outdir,
        table=outdir / TABLE_NAME,
        signatures=outdir / SIGNATURES_NAME,
        pathways=outdir / PATHWAYS_NAME,
        splits_dir=outdir / "splits",
        slides_dir=outdir / "slides",
        manifest=outdir / MANIFEST_NAME,
        truth=outdir / TRUTH_NAME,
    )
    _write_slides(cohort.slides_dir, slides, workers)
    _write_table(cohort.table, patients, slides, genomics)
    _write_signatures(cohort.signatures, rng, genes)
    _write_splits(cohort.splits_dir, rng, patients["case_id"].tolist(), spec.folds)
    _write_truth(cohort.truth, patients)
    _write_manifest(cohort.manifest, rng, cohort.slides_dir, slides)
    # own generator: the draws above (and so every earlier demo file) do not change
    _write_pathways(cohort.pathways, np.random.default_rng([spec.seed, 7]), genes)
    log.info(
        "demo cohort in %s: %d patients, %d events, %d diagnostic slides",
        outdir, len(patients), int((patients["censorship"] == 0).sum()), int(slides["diagnostic"].sum()),
    )
    return cohort


def _patients(rng: np.random.Generator, spec: DemoSpec) -> pd.DataFrame:
    risk = rng.standard_normal(spec.patients)
    event_time = rng.exponential(BASE_MONTHS * np.exp(-BETA * risk))
    censor_time = rng.exponential(CENSOR_MONTHS, spec.patients)
    months = np.maximum(np.minimum(event_time, censor_time), 0.1).round(2)
    return pd.DataFrame(
        {
            "case_id": _case_ids(rng, spec.patients),
            "risk": risk,
            "survival_months": months,
            "censorship": (censor_time < event_time).astype(int),
            "is_female": rng.integers(0, 2, spec.patients),
            "age": rng.integers(40, 86, spec.patients),
        }
    )


def _case_ids(rng: np.random.Generator, count: int) -> list[str]:
    alphabet = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"))
    ids: list[str] = []
    while len(ids) < count:
        participant = "".join(rng.choice(alphabet, 4))
        case_id = f"TCGA-D{len(ids) % 3}-{participant}"
        if case_id not in ids:
            ids.append(case_id)
    return ids


def _genomics(rng: np.random.Generator, spec: DemoSpec, genes: list[str], risk: np.ndarray) -> pd.DataFrame:
    """rnaseq for every gene, cnv for 60 %, mut for 25 %; the first genes carry the risk."""
    n = len(risk)
    columns: dict[str, np.ndarray] = {}
    for index, gene in enumerate(genes):
        signal = risk if index < spec.informative_genes else np.zeros(n)
        sign = 1.0 if index % 2 == 0 else -1.0
        columns[f"{gene}_rnaseq"] = (0.9 * sign * signal + rng.standard_t(4, n) * 0.6).round(4)
        if index % 5 < 3:
            cnv = np.clip(np.round(0.8 * sign * signal + rng.normal(0, 0.7, n)), -2, 2)
            columns[f"{gene}_cnv"] = cnv.astype(int)
        if index % 4 == 0:
            probability = 1.0 / (1.0 + np.exp(-(1.5 * signal - 1.5)))
            columns[f"{gene}_mut"] = (rng.random(n) < probability).astype(int)
    return pd.DataFrame(columns)


def _slides(rng: np.random.Generator, spec: DemoSpec, patients: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for case_id, risk in zip(patients["case_id"], patients["risk"]):
        count = 2 if rng.random() < spec.second_slide_fraction else 1
        for number in range(1, count + 1):
            rows.append(_slide_row(rng, case_id, risk, f"01Z-00-DX{number}", (spec.width, spec.height), True, True))
    extra_size = spec.extra_slide_size
    cases = patients["case_id"].tolist()
    risks = patients["risk"].tolist()
    rows.append(_slide_row(rng, cases[0], risks[0], "01A-01-TS1", extra_size, False, False))
    rows.append(_slide_row(rng, cases[1 % len(cases)], risks[1 % len(cases)], "01A-02-BS1", extra_size, False, False))
    orphan = "TCGA-D9-ZZZZ"  # never produced by _case_ids (site codes D0-D2)
    rows.append(_slide_row(rng, orphan, 0.0, "01Z-00-DX1", extra_size, True, False))
    slides = pd.DataFrame(rows)
    slides["seed"] = rng.integers(0, 2**31 - 1, len(slides))
    return slides


def _slide_row(rng, case_id: str, risk: float, portion: str, size, diagnostic: bool, in_table: bool) -> dict:
    slide_uuid = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)), version=4))
    return {
        "case_id": case_id,
        "slide_id": f"{case_id}-{portion}.{slide_uuid.upper()}.svs",
        "risk": risk,
        "width": size[0],
        "height": size[1],
        "diagnostic": diagnostic,
        "in_table": in_table,
    }


def _write_slides(slides_dir: Path, slides: pd.DataFrame, workers: int) -> None:
    jobs = [
        _SlideJob(
            path=slides_dir / row.slide_id,
            spec=SlideSpec(width=int(row.width), height=int(row.height), risk=float(row.risk), seed=int(row.seed)),
        )
        for row in slides.itertuples(index=False)
    ]
    slides_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        for job in tqdm(jobs, desc="demo slides", unit="slide"):
            _write_slide(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(_write_slide, jobs), total=len(jobs), desc="demo slides", unit="slide"))


def _write_slide(job: _SlideJob) -> None:
    make_slide(job.path, job.spec)


def _write_table(path: Path, patients: pd.DataFrame, slides: pd.DataFrame, genomics: pd.DataFrame) -> None:
    per_patient = pd.concat([patients.drop(columns="risk"), genomics], axis=1)
    table_slides = slides.loc[slides["in_table"], ["case_id", "slide_id"]]
    table = table_slides.merge(per_patient, on="case_id", how="left", validate="many_to_one")
    table.insert(2, "site", table["case_id"].str.slice(5, 7))
    table.insert(4, "oncotree_code", "DEMO")
    metadata = ["case_id", "slide_id", "site", "is_female", "oncotree_code", "age", "survival_months", "censorship"]
    table = table.loc[:, metadata + list(genomics.columns)]
    # MCAT files carry an unnamed index column; gzip without name/mtime so a seed gives identical bytes
    atomic_write_bytes(path, gzip.compress(table.to_csv(index=True).encode(), mtime=0))


def _write_signatures(path: Path, rng: np.random.Generator, genes: list[str]) -> None:
    """Six families over most table genes, plus a few genes absent from the table (as in real data)."""
    families: dict[str, list[str]] = {family: [] for family in FAMILIES}
    for gene in genes:
        if rng.random() < 0.85:
            families[FAMILIES[int(rng.integers(0, len(FAMILIES)))]].append(gene)
    for index, family in enumerate(FAMILIES):
        families[family].append(f"XG{index:04d}")  # not measured in this cohort
    longest = max(len(members) for members in families.values())
    padded = {family: members + [None] * (longest - len(members)) for family, members in families.items()}
    with atomic_path(path) as tmp:
        pd.DataFrame(padded).to_csv(tmp, index=False)


def _write_pathways(path: Path, rng: np.random.Generator, genes: list[str], count: int = 16) -> None:
    """Gene sets in SurvPath's format (one column per pathway, NaN-padded) over the demo's genes:
    ``count`` pathways of 5–15 genes, overlapping, each with one gene the table lacks."""
    sets = {}
    for index in range(count):
        size = min(int(rng.integers(5, 16)), len(genes))
        members = [genes[i] for i in sorted(rng.choice(len(genes), size=size, replace=False))]
        sets[f"DEMO_PATHWAY_{index:02d}"] = [*members, f"XP{index:04d}"]
    longest = max(len(members) for members in sets.values())
    padded = {name: members + [None] * (longest - len(members)) for name, members in sets.items()}
    with atomic_path(path) as tmp:
        pd.DataFrame(padded).to_csv(tmp, index=False)


def _write_splits(splits_dir: Path, rng: np.random.Generator, case_ids: list[str], folds: int) -> None:
    order = rng.permutation(len(case_ids))
    fold_of = {case_ids[position]: rank % folds for rank, position in enumerate(order)}
    splits_dir.mkdir(parents=True, exist_ok=True)
    for fold in range(folds):
        train = [case for case in case_ids if fold_of[case] != fold]
        val = [case for case in case_ids if fold_of[case] == fold]
        length = max(len(train), len(val))
        frame = pd.DataFrame(
            {"train": pd.Series(train, dtype=object).reindex(range(length)),
             "val": pd.Series(val, dtype=object).reindex(range(length))}
        )
        with atomic_path(splits_dir / f"splits_{fold}.csv") as tmp:
            frame.to_csv(tmp, index=True)


def _write_truth(path: Path, patients: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        patients.loc[:, ["case_id", "risk", "survival_months", "censorship"]].to_csv(tmp, sep="\t", index=False)


def _write_manifest(path: Path, rng: np.random.Generator, slides_dir: Path, slides: pd.DataFrame) -> None:
    rows = []
    for slide_id in slides["slide_id"]:
        slide_path = slides_dir / slide_id
        file_id = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)), version=4))
        rows.append({"id": file_id, "filename": slide_id, "md5": md5_file(slide_path),
                     "size": slide_path.stat().st_size, "state": "released"})
    manifest = pd.DataFrame(rows)
    manifest = pd.concat([manifest, manifest.iloc[[0]]], ignore_index=True)  # a duplicated row, as merged manifests have
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, sep="\t", index=False)


def demo_spec_from_config(demo_config: dict) -> DemoSpec:
    """A :class:`DemoSpec` from the workflow's ``demo:`` config section (``outdir`` is not part of it)."""
    known = {name for name in DemoSpec.__dataclass_fields__}
    unknown = sorted(set(demo_config) - known - {"outdir"})
    if unknown:
        raise ValueError(f"config: demo.{unknown[0]} is not a demo cohort setting ({', '.join(sorted(known))})")
    return DemoSpec(**{key: value for key, value in demo_config.items() if key in known})
