# Helpers shared by all rules: config and sample-sheet validation, cohort look-ups, targets.
import copy
import functools
import os
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import update_config, validate

# The mmsurv package: installed in the project venv; a conda env (--use-conda) installs only its
# dependencies, so the workflow and every job (scripts inherit the environment) find it here.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
)

import mmsurv
from mmsurv.config import check_config
from mmsurv.features.presets import patching_for

# Our check first: it names every bad key at once; then Snakemake's (fills schema defaults).
check_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
validate(config, schema="../workflow/schemas/config.schema.yaml")
# Snakemake merges every config file into config/config.yaml's, whose demo cohort a real-data
# overlay cannot delete: it names it in skip_cohorts instead.
for _skipped in config["skip_cohorts"]:
    config["cohorts"].pop(_skipped, None)
# An external cohort goes with its training cohort (the demo's external cohort with the demo).
for _name, _entry in list(config["cohorts"].items()):
    if (
        _entry.get("role") == "external"
        and _entry.get("trained_on") not in config["cohorts"]
    ):
        config["cohorts"].pop(_name)
if not config["cohorts"]:
    raise ValueError("config: every cohort is in skip_cohorts; nothing to run")
# The demo's training departures (config/config.yaml's demo_train) lie under the run's own train
# settings when the demo cohort runs; a real-data run (skip_cohorts: [demo]) trains with the
# package's and each model's defaults and the settings its own config files give.
_demo_train = config.pop("demo_train", None)
if _demo_train and "demo" in config["cohorts"]:
    _merged = copy.deepcopy(_demo_train)
    update_config(_merged, config.get("train") or {})
    config["train"] = _merged
# Likewise the demo's report additions (its heatmaps): a real-data run draws none unless asked.
_demo_report = config.pop("demo_report", None)
if _demo_report and "demo" in config["cohorts"]:
    _merged = copy.deepcopy(_demo_report)
    update_config(_merged, config.get("report") or {})
    config["report"] = _merged

from mmsurv.models import catalog, registry

# Extra model modules (files registering models): read here, imported through params by every job
# that builds models (train, aggregate). The catalog reads the model modules' source: parsing the
# workflow imports no torch (unless a model module does not describe itself statically).
PLUGINS = [str(Path(path).resolve()) for path in config.get("model_plugins", [])]
CATALOG = registry.known_models(PLUGINS)


def resolve_model(name, models_config):
    """A model of the config's list (registered or a variant), from the catalog."""
    return catalog.resolve_model(name, models_config, CATALOG.get, CATALOG.names)


RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
# External cohorts (role: external) are processed up to their features and scored by the fold
# models of their trained_on cohort; they are never split or trained on.
EXTERNAL = {
    name: entry["trained_on"]
    for name, entry in config["cohorts"].items()
    if entry.get("role") == "external"
}
ALL_COHORTS = list(config["cohorts"])
COHORTS = [cohort for cohort in ALL_COHORTS if cohort not in EXTERNAL]
DOWNLOAD = config["download"]
SAMPLES_SCHEMA = str(Path(workflow.basedir) / "workflow/schemas/samples.schema.yaml")
# Sweeps (train.sweeps) become variants in train.models, one per value, before anything reads them:
# each variant's section is looked up on its own like any variant's.
_LISTED, config["train"]["models"] = catalog.with_sweeps(
    config["models"], config["train"].get("models"), config["train"].pop("sweeps", None)
)
# In a demo run, the per-model departures reach the variants of their model (a paper preset's
# ablations and sweeps): an ablation row then differs from its base row in what it ablates only.
if _demo_train and "demo" in config["cohorts"]:
    config["train"]["models"] = catalog.inherit_base_sections(config["train"]["models"])
MODELS = catalog.expand_models(_LISTED, config["train"]["models"], CATALOG.names())
FOLDS = list(range(config["folds"]))
REPORT = f"{RESULTS}/report"
# The compiled encoder is cached per machine and settings, outside the results (reused by every run):
# features.compile_cache_dir, else $MMSURV_CACHE_DIR, else ~/.cache/mmsurv/compiled.
COMPILE_CACHE = config["features"].get("compile_cache_dir")


def genomic_only(cohort):
    """A cohort with a table and splits but no slides (no manifest, sample sheet or features_dir):
    only genomic models train on it (checked by check_genomic_only_cohorts)."""
    entry = config["cohorts"][cohort]
    return not any(key in entry for key in ("manifest", "samples", "features_dir"))


def has_slides(cohort):
    """The cohort's slides are segmented and patched by this run (a manifest or a sample sheet)."""
    return external_features(cohort) is None and not genomic_only(cohort)


def check_cohorts():
    """Fail before any job with a message naming the cohort and key that is missing."""
    for name, cohort in config["cohorts"].items():
        if "features_dir" in cohort or genomic_only(name):
            continue
        source = cohort.get("slides_from")
        if source is not None and (source == name or source not in config["cohorts"]):
            raise ValueError(
                f"config: cohorts.{name}.slides_from: {source!r} is not another cohort of this config"
            )
        if DOWNLOAD["source"] == "local" and "slides_dir" not in cohort and not source:
            raise ValueError(
                f"config: cohorts.{name}.slides_dir is required when download.source is 'local'"
            )
        if "samples" in cohort and DOWNLOAD["source"] != "local":
            raise ValueError(
                f"config: cohorts.{name}.samples: a sample-sheet cohort reads its slides from "
                "slides_dir (download.source 'local'); GDC downloads need a GDC manifest"
            )


check_cohorts()


def check_external_cohorts():
    """An external cohort names a training cohort of the run."""
    for name, trained_on in EXTERNAL.items():
        if trained_on not in COHORTS:
            raise ValueError(
                f"config: cohorts.{name}.trained_on: {trained_on!r} is not a training cohort of "
                f"this run ({', '.join(COHORTS) or 'none'})"
            )


check_external_cohorts()


def check_training_config():
    """Unknown models, variants or training keys stop the run now, not after hours of feature extraction."""
    from mmsurv.train.settings import resolve_settings

    for model in MODELS:
        try:
            resolve_settings(config["train"], model, resolve_model)
        except ValueError as error:
            raise ValueError(f"config: models: {model}: {error}") from None


if workflow.is_main_process:
    check_training_config()


wildcard_constraints:
    cohort="|".join(re.escape(name) for name in ALL_COHORTS),
    slide=r"[^/]+",
    batch=r"b\d+",
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
    """For download.source local, the slide in the cohort's slides_dir (so a missing one is named);
    for a cohort with ``slides_from``, that cohort's fetched slide."""
    row = sample_row(wildcards)
    if row["slide_id"] != wildcards.slide + wildcards.ext:
        raise ValueError(
            f"slide {wildcards.slide} of cohort {wildcards.cohort} is the file {row['slide_id']}, "
            f"not {wildcards.slide}{wildcards.ext}"
        )
    source = config["cohorts"][wildcards.cohort].get("slides_from")
    if source:  # another cohort's fetched copy, linked: no second download
        return {"slide": f"{RESULTS}/{source}/slides/{row['slide_id']}"}
    if DOWNLOAD["source"] != "local":
        return {}
    return {
        "slide": str(
            Path(config["cohorts"][wildcards.cohort]["slides_dir"]) / row["slide_id"]
        )
    }


def download_params(wildcards):
    """download settings of a cohort's slides: a cohort with slides_from links the other cohort's."""
    if config["cohorts"][wildcards.cohort].get("slides_from"):
        return {**DOWNLOAD, "source": "local", "link": "symlink"}
    return DOWNLOAD


def cohort_slides(wildcards):
    """Every fetched slide of a cohort."""
    samples = cohort_samples(wildcards.cohort)
    return [
        f"{RESULTS}/{wildcards.cohort}/slides/{slide_id}"
        for slide_id in samples["slide_id"]
    ]


def cohort_features_settings(cohort):
    """Feature extraction settings of a cohort: the global ``features`` section with the cohort's
    own ``features`` (encoder, weights) over it."""
    return {**config["features"], **config["cohorts"][cohort].get("features", {})}


def features_params(wildcards):
    return cohort_features_settings(wildcards.cohort)


def patching_params(wildcards):
    """Patching settings of a cohort: the global ``patching`` section, preset overridable per cohort;
    magnification and patch size left null come from the cohort's encoder (its authors' patching).
    """
    settings = dict(config.get("patching", {}))
    cohort_preset = config["cohorts"][wildcards.cohort].get("preset")
    settings["preset"] = cohort_preset or settings.get("preset", "tcga")
    encoder = cohort_features_settings(wildcards.cohort).get(
        "encoder", "resnet50_trunc"
    )
    return patching_for(settings, encoder)


SLIDES_PER_JOB = config["slides_per_job"]


@functools.cache
def _batches(path, mtime):
    """Batch id → slides of a sample sheet: its slides in sheet order, slides_per_job at a time."""
    slides = list(_sample_rows(path, mtime))
    return {
        f"b{start // SLIDES_PER_JOB:05d}": slides[start : start + SLIDES_PER_JOB]
        for start in range(0, len(slides), SLIDES_PER_JOB)
    }


def cohort_batch_ids(cohort):
    return list(_batches(*_samples_version(cohort)))


def batch_slides(wildcards):
    """[slide file, slide name] of each slide of batch ``wildcards.batch`` of a cohort."""
    batches = _batches(*_samples_version(wildcards.cohort))
    if wildcards.batch not in batches:
        raise ValueError(
            f"cohort {wildcards.cohort} has no slide batch {wildcards.batch}"
        )
    rows = _sample_rows(*_samples_version(wildcards.cohort))
    return [
        [f"{RESULTS}/{wildcards.cohort}/slides/{rows[slide]['slide_id']}", slide]
        for slide in batches[wildcards.batch]
    ]


def batch_patch_files(wildcards):
    """The patch-coordinate files of a batch's slides (written by its patching batch), in batch order."""
    return [
        f"{RESULTS}/{wildcards.cohort}/wsi/patches/{name}.h5"
        for _, name in batch_slides(wildcards)
    ]


def stage_dir(stage):
    """Input function: a cohort's output folder of ``stage`` (wsi, features)."""

    def folder(wildcards):
        return f"{RESULTS}/{wildcards.cohort}/{stage}"

    return folder


def batch_slide_files(wildcards):
    """The fetched slide files of a batch."""
    return [path for path, _ in batch_slides(wildcards)]


def batch_runtime(minutes_per_slide):
    """Runtime (minutes) of a batch job: per slide times the batch's size."""

    def runtime(wildcards):
        return minutes_per_slide * SLIDES_PER_JOB

    return runtime


def cohort_batches(stage):
    """Input function: the batch tables of every slide batch of a cohort for ``stage``
    (``wsi`` or ``features``)."""

    def tables(wildcards):
        return [
            f"{RESULTS}/{wildcards.cohort}/{stage}/batches/{batch}.tsv"
            for batch in cohort_batch_ids(wildcards.cohort)
        ]

    return tables


def cohort_patches(wildcards):
    """The patch-coordinate summaries of every slide of a cohort (written by its batches)."""
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


@functools.cache
def model_modality(model):
    """omic, path or multimodal: what a model (or variant) reads, from the registry."""
    return resolve_model(model, config["train"].get("models")).spec.modality


def train_gpus(wildcards):
    """Genomic-only models never ask for a GPU slot."""
    return 0 if model_modality(wildcards.model) == "omic" else 1


def train_threads(wildcards):
    """config train_threads, else 1 for genomic-only models (tiny matrix products) and 2 for the others."""
    if config.get("train_threads"):
        return config["train_threads"]
    return 1 if model_modality(wildcards.model) == "omic" else 2


def cohort_pathways(cohort):
    """A cohort's pathway gene sets: its own file, else the Hallmark + Reactome sets shipped with mmsurv."""
    from mmsurv.resources import default_pathways

    return config["cohorts"][cohort].get("pathways") or str(default_pathways())


def features_index(wildcards):
    """The cohort's feature index (one file standing for every slide's features), if made here and
    the model reads bags: a genomic-only model's jobs never wait for feature extraction.
    """
    if not has_slides(wildcards.cohort) or model_modality(wildcards.model) == "omic":
        return []
    return f"{RESULTS}/{wildcards.cohort}/features/index.tsv"


def cohort_features(wildcards):
    """Every slide's feature files of a cohort (written by its batches; indexed)."""
    samples = cohort_samples(wildcards.cohort)
    base = f"{RESULTS}/{wildcards.cohort}/features"
    return {
        "pt": [f"{base}/pt_files/{slide}.pt" for slide in samples["slide"]],
        "h5": [f"{base}/h5_files/{slide}.h5" for slide in samples["slide"]],
    }


def _source_of(spec):
    """The file defining a model (catalog entry or, when the catalog imported the registry, its class)."""
    import inspect

    return getattr(spec, "source", None) or inspect.getsourcefile(spec.model_class)


@functools.cache
def model_source_files(model):
    """The files whose edit changes a model's numbers: its module and the model modules it uses
    (mmsurv.models.catalog.model_sources); the code every model shares is TRAINING_CODE below.
    """
    spec = resolve_model(model, config["train"].get("models")).spec
    files = catalog.model_sources(
        _source_of(spec), lambda name: _source_of(CATALOG.get(name))
    )
    return [str(path) for path in files]


# The version of the training code every model shares (loop, data, base model): a train job's
# params, so a new version reruns every train job; a model's own files are inputs of its jobs.
TRAINING_CODE = mmsurv.__version__


def train_input(wildcards):
    """Cohort files of a training job, and the cohort's feature index unless features come from
    elsewhere: one input standing for thousands of feature files keeps the DAG small. The model's
    source files too: editing a model reruns exactly its train jobs (and aggregate)."""
    cohort = config["cohorts"][wildcards.cohort]
    inputs = {
        "table": cohort["table"],
        "splits_dir": cohort["splits_dir"],
        "signatures": cohort["signatures"],
        "pathways": cohort_pathways(wildcards.cohort),
        "features_index": features_index(wildcards),
        "model_source": model_source_files(wildcards.model),
    }
    return inputs


def aggregate_input(wildcards):
    """Every fold's metrics, predictions and bin edges, and each cohort's bag sizes when it was patched here."""
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
        # the survival function's time bins (report statistics: IBS, AUC, calibration)
        "bin_edges": expand(
            f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/bin_edges.json",
            cohort=COHORTS,
            model=MODELS,
            fold=FOLDS,
        ),
    }
    inputs["patching"] = [
        f"{RESULTS}/{cohort}/wsi/patching.tsv"
        for cohort in COHORTS
        if has_slides(cohort)
    ]
    inputs["external"] = external_predictions()
    return inputs


# The train rule: one job per fold (train_jobs: per_fold, wildcard {fold}) or one per cohort x model
# with every fold (per_model): the same outputs, logs and params either way, made here once.
PER_FOLD = config["train_jobs"] == "per_fold"
TRAIN_JOB = "fold{fold}" if PER_FOLD else "folds"
TRAIN_FILES = {
    "metrics": "metrics.json",
    "predictions": "predictions.tsv",
    "predictions_best": "predictions_best.tsv",
    "training_log": "training_log.tsv",
    "bin_edges": "bin_edges.json",
    "checkpoint_last": "checkpoint_last.pt",
    "checkpoint_best": "checkpoint_best.pt",
}


def train_outputs():
    """Named outputs of the train rule: each a list of one file per fold of the job."""
    folds = ["{fold}"] if PER_FOLD else FOLDS
    return {
        name: [f"{RESULTS}/{{cohort}}/{{model}}/fold{fold}/{file}" for fold in folds]
        for name, file in TRAIN_FILES.items()
    }


def train_folds(wildcards):
    """The folds a train job trains, in the order of its outputs."""
    return [int(wildcards.fold)] if PER_FOLD else FOLDS


def paper_tables():
    """The paper tables of report.papers (shipped published tables, or our own), as md, csv and tex."""
    from mmsurv.report.papers import paper_table_files

    return [
        f"{REPORT}/papers/{paper}/{name}.{ext}"
        for paper, names in paper_table_files(config["report"]["papers"]).items()
        for name in names
        for ext in ("md", "csv", "tex")
    ]


def paper_figures():
    """The paper figures of report.papers this run can draw (their model is trained), as png (and pdf)."""
    from mmsurv.report.paper_figures import paper_figure_files

    exts = ("png", "pdf") if config["report"].get("pdf") else ("png",)
    return [
        f"{REPORT}/papers/{paper}/{name}.{ext}"
        for paper, names in paper_figure_files(
            config["report"]["papers"], MODELS
        ).items()
        for name in names
        for ext in exts
    ]


def report_pdfs():
    """The PDF twins of the report's figures, written when report.pdf is true."""
    if not config["report"].get("pdf"):
        return []
    return [
        *(f"{REPORT}/km/km_{c}_{m}.pdf" for c in COHORTS for m in MODELS),
        *(f"{REPORT}/km/km_grid_{m}.pdf" for m in MODELS if len(COHORTS) > 1),
        f"{REPORT}/bubble_cindex_flops.pdf",
        *(f"{REPORT}/stats/significance_{c}.pdf" for c in COHORTS),
        *(f"{REPORT}/stats/calibration_{m}.pdf" for m in MODELS),
    ]


def check_genomic_only_cohorts():
    """A cohort without slides can train genomic models only: fail before any job otherwise."""
    for cohort in COHORTS:
        if not genomic_only(cohort):
            continue
        reading_bags = [model for model in MODELS if model_modality(model) != "omic"]
        if reading_bags:
            raise ValueError(
                f"config: cohorts.{cohort} has no slides (no manifest, samples or features_dir), so "
                f"only genomic models can train on it; these read slides: {', '.join(reading_bags)}"
            )


check_genomic_only_cohorts()


def has_patch_scores(model):
    """The model (or variant) reports per-patch scores (its class's patch_score_kind)."""
    spec = resolve_model(model, config["train"].get("models")).spec
    return CATALOG.get(spec.name).patch_score_kind is not None


def heatmap_models():
    """The run's models whose heatmaps are drawn (report.heatmaps.models: names, or all for every
    model of the run with patch scores; a named model that is not in the run is skipped), none by
    default. A named model without patch scores is an error."""
    wanted = config["report"].get("heatmaps", {}).get("models") or []
    if wanted == "all" or wanted == ["all"]:
        return [model for model in MODELS if has_patch_scores(model)]
    without = [m for m in wanted if not has_patch_scores(m)]
    if without:
        raise ValueError(
            f"config: report.heatmaps.models: {', '.join(without)} report no patch scores"
        )
    return [model for model in wanted if model in MODELS]


def heatmap_targets():
    """One heatmaps folder per cohort with slides x model of heatmap_models()."""
    return [
        f"{REPORT}/heatmaps/{cohort}/{model}"
        for cohort in COHORTS
        if has_slides(cohort)
        for model in heatmap_models()
    ]


def report_settings():
    """The report section as build_report takes it (the heatmaps are their own rule)."""
    return {key: value for key, value in config["report"].items() if key != "heatmaps"}


def heatmap_settings(wildcards):
    """report.heatmaps without its model list (editing the list reruns no other model's heatmaps)."""
    settings = config["report"].get("heatmaps", {})
    return {key: value for key, value in settings.items() if key != "models"}


def heatmap_input(wildcards):
    """Every fold's checkpoint and predictions of the cohort x model, the table and the features."""
    folds = f"{RESULTS}/{wildcards.cohort}/{wildcards.model}/fold"
    return {
        "checkpoints": [f"{folds}{fold}/checkpoint_last.pt" for fold in FOLDS],
        "predictions": [f"{folds}{fold}/predictions.tsv" for fold in FOLDS],
        "table": config["cohorts"][wildcards.cohort]["table"],
        "features_index": f"{RESULTS}/{wildcards.cohort}/features/index.tsv",
    }


def get_final_output():
    """The targets of the all rule, the report and every fold's metrics. The latter make a model added to the
    list (or a sweep value) train and the report rebuild: Snakemake never remakes a missing input of
    a job whose outputs exist unless another target needs it, and a new model's report figures have
    no provenance to trigger ``aggregate``."""
    targets = [f"{REPORT}/report.json"]
    targets += expand(
        f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/metrics.json",
        cohort=COHORTS,
        model=MODELS,
        fold=FOLDS,
    )
    for cohort in ALL_COHORTS:
        if has_slides(cohort):
            targets += [
                f"{RESULTS}/{cohort}/slides.tsv",
                f"{RESULTS}/{cohort}/wsi/patching.tsv",
            ]
    targets += external_predictions()
    return targets + heatmap_targets()


def external_predictions():
    """Every external cohort x model: the fold models' risks of its patients."""
    return [
        f"{RESULTS}/{cohort}/{model}/predictions.tsv"
        for cohort in EXTERNAL
        for model in MODELS
    ]


def external_report_files():
    """The report's external-validation table and a Kaplan-Meier figure per external cohort x model."""
    if not EXTERNAL:
        return []
    return [f"{REPORT}/external.md", f"{REPORT}/external.csv"] + [
        f"{REPORT}/km/external_{cohort}_{model}.png"
        for cohort in EXTERNAL
        for model in MODELS
    ]


def external_input(wildcards):
    """Every model's trained_on fold checkpoints and predictions, the external table and features."""
    trained = f"{RESULTS}/{EXTERNAL[wildcards.cohort]}"
    inputs = {
        "checkpoints": [
            f"{trained}/{model}/fold{fold}/checkpoint_last.pt"
            for model in MODELS
            for fold in FOLDS
        ],
        "predictions": [
            f"{trained}/{model}/fold{fold}/predictions.tsv"
            for model in MODELS
            for fold in FOLDS
        ],
        "table": config["cohorts"][wildcards.cohort]["table"],
    }
    if has_slides(wildcards.cohort) and any(
        model_modality(model) != "omic" for model in MODELS
    ):
        inputs["features_index"] = f"{RESULTS}/{wildcards.cohort}/features/index.tsv"
    return inputs
