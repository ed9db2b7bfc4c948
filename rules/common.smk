# Helpers shared by all rules: config and sample-sheet validation, cohort look-ups, targets.
import functools
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from mmsurv.config import check_config

# Our check first: it names every bad key at once; then Snakemake's (fills schema defaults).
check_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
validate(config, schema="../workflow/schemas/config.schema.yaml")

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
COHORTS = list(config["cohorts"])
DOWNLOAD = config["download"]
SAMPLES_SCHEMA = str(Path(workflow.basedir) / "workflow/schemas/samples.schema.yaml")
MODELS = config["models"]
FOLDS = list(range(config["folds"]))
REPORT = f"{RESULTS}/report"
COMPILE_CACHE = str(Path(RESULTS).resolve() / ".torch_compile_cache")


def check_cohorts():
    """Fail before any job with a message naming the cohort and key that is missing."""
    for name, cohort in config["cohorts"].items():
        if "features_dir" in cohort:
            continue
        if DOWNLOAD["source"] == "local" and "slides_dir" not in cohort:
            raise ValueError(
                f"config: cohorts.{name}.slides_dir is required when download.source is 'local'"
            )
        if "samples" in cohort and DOWNLOAD["source"] != "local":
            raise ValueError(
                f"config: cohorts.{name}.samples: a sample-sheet cohort reads its slides from "
                "slides_dir (download.source 'local'); GDC downloads need a GDC manifest"
            )


check_cohorts()


def check_training_config():
    """Unknown models or training keys stop the run now, not after hours of feature extraction."""
    from mmsurv.models.registry import available_models
    from mmsurv.train.run import resolve_config

    for model in config["models"]:
        if model not in available_models():
            raise ValueError(
                f"config: models: unknown model {model!r} (available: {', '.join(available_models())})"
            )
        resolve_config(config["train"], model)


if workflow.is_main_process:
    check_training_config()


wildcard_constraints:
    cohort="|".join(re.escape(name) for name in COHORTS),
    slide=r"[^/]+",
    ext=r"\.[A-Za-z0-9]+",
    model="|".join(re.escape(name) for name in MODELS),
    fold=r"\d+",


def cohort_file(key):
    """Input function returning the path of ``key`` (manifest, table, ...) of the cohort."""

    def _path(wildcards):
        return config["cohorts"][wildcards.cohort][key]

    return _path


# The sample sheet is read and validated once per file version (path + mtime), not once per job:
# the per-slide functions below run for every slide of every cohort.
@functools.cache
def _read_samples(path, mtime):
    samples = pd.read_csv(
        path, sep="\t", dtype={"size": "int64"}, keep_default_na=False
    )
    # absolute schema path: input functions run after Snakefile parsing, when relative
    # paths can no longer be resolved against the including file
    validate(samples, schema=SAMPLES_SCHEMA)
    return samples.set_index("slide", drop=False)


@functools.cache
def _sample_rows(path, mtime):
    """The rows of a sample sheet as plain dicts by slide (a dict look-up per job, not pandas)."""
    return _read_samples(path, mtime).to_dict("index")


@functools.cache
def _samples_path(cohort):
    """A cohort's sample sheet; raises until checkpoint clean_manifest ran. Only a success
    is cached, and it is final: Snakemake never forgets a created checkpoint output."""
    return checkpoints.clean_manifest.get(cohort=cohort).output.samples


def _samples_version(cohort):
    """(path, mtime) of a cohort's sample sheet: the cache key of the readers above."""
    path = _samples_path(cohort)
    return path, Path(path).stat().st_mtime_ns


def cohort_samples(cohort):
    """The validated sample sheet of a cohort (available once checkpoint clean_manifest ran)."""
    return _read_samples(*_samples_version(cohort))


def sample_row(wildcards):
    """The sample-sheet row (dict) of the slide ``wildcards.slide`` of ``wildcards.cohort``."""
    rows = _sample_rows(*_samples_version(wildcards.cohort))
    if wildcards.slide not in rows:
        raise ValueError(
            f"slide {wildcards.slide} is not in the sample sheet of cohort {wildcards.cohort}"
        )
    return dict(rows[wildcards.slide])


def cleaning_input(wildcards):
    """The cohort's slide list (GDC manifest or sample sheet) and its table."""
    cohort = config["cohorts"][wildcards.cohort]
    key = "samples" if "samples" in cohort else "manifest"
    return {key: cohort[key], "table": cohort["table"]}


def slide_file(wildcards):
    """A fetched slide in the run's slide folder: its own file name, so its own format."""
    row = sample_row(wildcards)
    return f"{RESULTS}/{wildcards.cohort}/slides/{row['slide_id']}"


def fetch_slide_input(wildcards):
    """For download.source local, the slide in the cohort's slides_dir (so a missing one is named)."""
    row = sample_row(wildcards)
    if row["slide_id"] != wildcards.slide + wildcards.ext:
        raise ValueError(
            f"slide {wildcards.slide} of cohort {wildcards.cohort} is the file {row['slide_id']}, "
            f"not {wildcards.slide}{wildcards.ext}"
        )
    if DOWNLOAD["source"] != "local":
        return {}
    return {
        "slide": str(
            Path(config["cohorts"][wildcards.cohort]["slides_dir"]) / row["slide_id"]
        )
    }


def cohort_slides(wildcards):
    """Every fetched slide of a cohort."""
    samples = cohort_samples(wildcards.cohort)
    return [
        f"{RESULTS}/{wildcards.cohort}/slides/{slide_id}"
        for slide_id in samples["slide_id"]
    ]


def patching_params(wildcards):
    """Patching settings of a cohort: the global ``patching`` section, preset overridable per cohort."""
    settings = dict(config.get("patching", {}))
    cohort_preset = config["cohorts"][wildcards.cohort].get("preset")
    settings["preset"] = cohort_preset or settings.get("preset", "tcga")
    return settings


def cohort_patches(wildcards):
    """The patch-coordinate summaries of every slide of a cohort."""
    samples = cohort_samples(wildcards.cohort)
    return [
        f"{RESULTS}/{wildcards.cohort}/wsi/{slide}.json" for slide in samples["slide"]
    ]


def external_features(cohort):
    """A cohort's own features folder (CLAM-style pt_files made elsewhere), or None."""
    return config["cohorts"][cohort].get("features_dir")


def features_dir(wildcards):
    """Where the training job of a cohort reads its {slide}.pt bags."""
    external = external_features(wildcards.cohort)
    return external or f"{RESULTS}/{wildcards.cohort}/features/pt_files"


def train_input(wildcards):
    """Cohort files of a training job, plus every slide's features unless they come from elsewhere."""
    cohort = config["cohorts"][wildcards.cohort]
    inputs = {
        "table": cohort["table"],
        "splits_dir": cohort["splits_dir"],
        "signatures": cohort["signatures"],
    }
    if external_features(wildcards.cohort) is None:
        samples = cohort_samples(wildcards.cohort)
        inputs["features"] = [
            f"{RESULTS}/{wildcards.cohort}/features/pt_files/{slide}.pt"
            for slide in samples["slide"]
        ]
    return inputs


def aggregate_input(wildcards):
    """Every fold's metrics and predictions, and each cohort's bag sizes when it was patched here."""
    inputs = {
        "metrics": expand(
            f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/metrics.json",
            cohort=COHORTS,
            model=MODELS,
            fold=FOLDS,
        ),
        "predictions": expand(
            f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/predictions_best.tsv",
            cohort=COHORTS,
            model=MODELS,
            fold=FOLDS,
        ),
    }
    inputs["patching"] = [
        f"{RESULTS}/{cohort}/wsi/patching.tsv"
        for cohort in COHORTS
        if external_features(cohort) is None
    ]
    return inputs


def get_final_output():
    """Targets of rule all."""
    targets = [f"{REPORT}/report.json"]
    for cohort in COHORTS:
        if external_features(cohort) is None:
            targets += [
                f"{RESULTS}/{cohort}/slides.tsv",
                f"{RESULTS}/{cohort}/wsi/patching.tsv",
            ]
    return targets
