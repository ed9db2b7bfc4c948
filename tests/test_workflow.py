"""The Snakemake workflow itself: lint and format clean, config checked first, demo run end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile")]

SMALL_DEMO = {"outdir": "resources/demo", "patients": 10, "seed": 1, "width": 2048, "height": 1536, "genes": 24}


def demo_config(**changes) -> dict:
    cohort = {
        "manifest": "resources/demo/gdc_manifest.txt",
        "table": "resources/demo/tcga_demo_all_clean.csv.gz",
        "splits_dir": "resources/demo/splits",
        "signatures": "resources/demo/signatures.csv",
        "pathways": "resources/demo/pathways.csv",
        "slides_dir": "resources/demo/slides",
    }
    config = {"results": "results", "demo": dict(SMALL_DEMO), "cohorts": {"demo": cohort},
              "patching": {"preset": "tcga", "segment": {"min_tissue_mm2": 0.02}},
              "features": {"weights": "none", "compile": False, "num_workers": 0},
              "models": ["snn", "abmil", "coord_probe"], "folds": 2, "seed": 1,
              # a model added as a plugin file: no change to train/, data/ or the rules
              "model_plugins": [str(REPO / "tests/fixtures/coord_probe_model.py")],
              "train": {"data": {"standardize_features": True},
                        "training": {"epochs": 2, "grad_accum": 1, "weighted_sampling": False}},
              "download": {"source": "local", "verify_md5": True, "link": "symlink"},
              # as config/config.yaml's: heatmaps of the listed models this run trains (ABMIL only)
              "demo_report": {"heatmaps": {"models": ["abmil", "clam_sb"], "n": 2, "max_side": 512}}}
    config.update(changes)
    return config


def run_snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def planned_jobs(workdir: Path, config: dict) -> tuple[list[str], set[str]]:
    """(sorted rules, models) of the jobs ``snakemake -n`` plans, ``all`` left out."""
    result = run_snakemake(workdir, config, "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = [job for job in re.findall(r"^(?:local)?rule (\w+):", output, flags=re.MULTILINE) if job != "all"]
    return sorted(jobs), set(re.findall(r"model=(\w+)", output))


def test_lint_is_clean():
    result = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_check_is_clean():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "rules").glob("*.smk")))]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_config_follows_the_schema():
    from mmsurv.config import check_config

    check_config(yaml.safe_load((REPO / "config/config.yaml").read_text()), REPO / "workflow/schemas/config.schema.yaml")


def test_bad_config_stops_before_any_job_naming_every_bad_key(tmp_path):
    config = demo_config(download={"source": "ftp"})
    config["cohorts"]["demo"]["spltis_dir"] = "x"
    result = run_snakemake(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cohorts.demo.spltis_dir: unexpected key" in output
    assert "download.source: 'ftp' is not one of" in output
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_local_source_needs_slides_dir(tmp_path):
    config = demo_config()
    del config["cohorts"]["demo"]["slides_dir"]
    result = run_snakemake(tmp_path, config, "-n")
    assert result.returncode != 0
    assert "cohorts.demo.slides_dir is required" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The whole demo workflow (one cohort, 2 models x 2 folds) up to the report."""
    workdir = tmp_path_factory.mktemp("run")
    result = run_snakemake(workdir, demo_config())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir


def test_two_cohorts_in_one_run(tmp_path, demo_run):
    """Two cohorts over the same slides, run up to patching: each gets its own outputs; the second
    links the first's slides (slides_from) and extracts with CTransPath, so (patch size not set) it
    is patched at CTransPath's 224 px preset."""
    import h5py

    (tmp_path / "resources").symlink_to(demo_run / "resources")
    config = demo_config()
    del config["demo"]
    second = {key: value for key, value in config["cohorts"]["demo"].items() if key != "slides_dir"}
    config["cohorts"]["second"] = {**second, "slides_from": "demo", "features": {"encoder": "ctranspath"}}
    targets = [f"results/{cohort}/{name}" for cohort in ("demo", "second") for name in ("slides.tsv", "wsi/patching.tsv")]
    result = run_snakemake(tmp_path, config, *targets)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for cohort, side in (("demo", 512), ("second", 224)):
        samples = pd.read_csv(tmp_path / f"results/{cohort}/manifest/samples.tsv", sep="\t")
        patching = pd.read_csv(tmp_path / f"results/{cohort}/wsi/patching.tsv", sep="\t")
        assert sorted(patching["slide"]) == sorted(samples["slide"])
        with h5py.File(next((tmp_path / f"results/{cohort}/wsi/patches").glob("*.h5")), "r") as handle:
            assert handle["coords"].attrs["patch_size"] == side
    linked = sorted((tmp_path / "results/second/slides").iterdir())
    assert linked and all(path.resolve() == (tmp_path / "results/demo/slides" / path.name).resolve() for path in linked)


@pytest.mark.parametrize("cohort", ["demo"])
def test_demo_run_links_every_cleaned_slide_per_cohort(demo_run, cohort):
    samples = pd.read_csv(demo_run / f"results/{cohort}/manifest/samples.tsv", sep="\t")
    inventory = pd.read_csv(demo_run / f"results/{cohort}/slides.tsv", sep="\t")
    table = pd.read_csv(demo_run / "resources/demo/tcga_demo_all_clean.csv.gz")
    assert sorted(inventory["slide_id"]) == sorted(samples["slide_id"]) == sorted(table["slide_id"])
    for row in inventory.itertuples():
        link = demo_run / row.path
        assert link.is_symlink() and link.resolve() == (demo_run / "resources/demo/slides" / row.slide_id).resolve()
    dropped = pd.read_csv(demo_run / f"results/{cohort}/manifest/dropped.tsv", sep="\t")
    assert set(dropped["reason"]) == {"duplicate_row", "not_diagnostic", "case_not_in_table"}
    log = (demo_run / f"results/logs/clean_manifest/{cohort}.log").read_text()
    assert "dropped 2 rows: not_diagnostic" in log


@pytest.mark.parametrize("cohort", ["demo"])
def test_demo_run_patches_every_slide(demo_run, cohort):
    import h5py

    samples = pd.read_csv(demo_run / f"results/{cohort}/manifest/samples.tsv", sep="\t")
    patching = pd.read_csv(demo_run / f"results/{cohort}/wsi/patching.tsv", sep="\t")
    assert sorted(patching["slide"]) == sorted(samples["slide"])
    assert (patching["n_patches"] > 0).sum() >= len(patching) // 2
    for row in patching.itertuples():
        with h5py.File(demo_run / f"results/{cohort}/wsi/patches/{row.slide}.h5") as handle:
            assert handle["coords"].shape == (row.n_patches, 2)
            assert handle["coords"].attrs["patch_size"] == 512
        assert (demo_run / f"results/{cohort}/wsi/stitches/{row.slide}.png").stat().st_size > 0


def test_demo_run_extracts_features_trains_and_reports(demo_run):
    import json

    import torch

    patching = pd.read_csv(demo_run / "results/demo/wsi/patching.tsv", sep="\t")
    for row in patching.itertuples():
        features = torch.load(demo_run / f"results/demo/features/pt_files/{row.slide}.pt")
        assert features.shape == (row.n_patches, 1024) and features.dtype == torch.float32
    for model in ("snn", "abmil", "coord_probe"):
        for fold in (0, 1):
            metrics = json.loads((demo_run / f"results/demo/{model}/fold{fold}/metrics.json").read_text())
            assert metrics["model"] == model and metrics["fold"] == fold
    table = pd.read_csv(demo_run / "results/report/cindex_last.csv")
    assert set(table["model"]) == {"snn", "abmil", "coord_probe"} and set(table["cohort"]) == {"demo"}
    log = pd.read_csv(demo_run / "results/demo/coord_probe/fold0/training_log.tsv", sep="\t")
    assert (log["train_loss_weight_penalty"] > 0).all()  # the plugin's own loss term was trained
    assert "CoordProbe" in (demo_run / "results/report/cindex_last.md").read_text()
    # a genomic-only model asked for no GPU slot and one thread
    benchmark = demo_run / "results/logs/train/demo/snn/fold0.log"
    assert "1 thread(s)" in benchmark.read_text()
    assert (demo_run / "results/report/km/km_demo_abmil.png").stat().st_size > 10_000
    # the demo's heatmaps (demo_report): ABMIL is the one model of this run on its list
    heatmaps = demo_run / "results/report/heatmaps/demo"
    assert [path.name for path in heatmaps.iterdir()] == ["abmil"]
    index = json.loads((heatmaps / "abmil/index.json").read_text())
    assert len({entry["case_id"] for entry in index["slides"]}) == 2  # the highest- and lowest-risk patients
    for entry in index["slides"]:
        assert all((heatmaps / "abmil" / name).stat().st_size > 0 for name in entry["files"].values())


def test_report_html_builds(demo_run):
    result = run_snakemake(demo_run, yaml.safe_load((demo_run / "config.yaml").read_text()),
                           "--report", str(demo_run / "report.html"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (demo_run / "report.html").stat().st_size > 50_000
    assert "Heatmaps" in (demo_run / "report.html").read_text(errors="replace")


def test_aggregation_rerun_touches_no_training_job(demo_run):
    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    trained = sorted((demo_run / "results/demo").rglob("fold*/*"))
    before = {path: path.stat().st_mtime_ns for path in trained}
    result = run_snakemake(demo_run, config, "--forcerun", "aggregate", "--allowed-rules", "aggregate")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert {path: path.stat().st_mtime_ns for path in trained} == before
    assert "rule train" not in result.stdout + result.stderr


def test_editing_one_models_settings_reruns_only_that_models_jobs(demo_run):
    original = (demo_run / "config.yaml").read_text()
    config = yaml.safe_load(original)
    config["train"]["models"] = {"abmil": {"dropout": 0.1}}
    try:
        result = run_snakemake(demo_run, config, "-n")
    finally:
        (demo_run / "config.yaml").write_text(original)  # the other tests see the run's own config
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = [job for job in re.findall(r"^(?:local)?rule (\w+):", output, flags=re.MULTILINE) if job != "all"]
    models = set(re.findall(r"model=(\w+)", output))
    # its two folds, the report, and its own heatmaps (the demo draws ABMIL's)
    assert sorted(set(jobs)) == ["aggregate", "heatmaps", "train"] and jobs.count("train") == 2, jobs
    assert jobs.count("heatmaps") == 1
    assert models == {"abmil"}


def test_rerun_has_nothing_to_do(demo_run):
    result = run_snakemake(demo_run, yaml.safe_load((demo_run / "config.yaml").read_text()), "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_corrupt_local_slide_fails_naming_it(tmp_path, demo_run):
    """Same data, one slide altered after the manifest was written: the run names that slide."""
    data = tmp_path / "resources"
    (data / "demo").mkdir(parents=True)
    for name in ("gdc_manifest.txt", "tcga_demo_all_clean.csv.gz", "signatures.csv"):
        (data / "demo" / name).write_bytes((demo_run / "resources/demo" / name).read_bytes())
    (data / "demo/splits").symlink_to(demo_run / "resources/demo/splits")
    (data / "demo/slides").mkdir()
    slides = sorted((demo_run / "resources/demo/slides").iterdir())
    for slide in slides:
        (data / "demo/slides" / slide.name).write_bytes(slide.read_bytes())
    samples = pd.read_csv(demo_run / "results/demo/manifest/samples.tsv", sep="\t")
    victim = samples["slide_id"].iloc[0]
    corrupted = bytearray((data / "demo/slides" / victim).read_bytes())
    corrupted[-100] ^= 0xFF
    (data / "demo/slides" / victim).write_bytes(bytes(corrupted))
    config = demo_config()
    del config["demo"]
    result = run_snakemake(tmp_path, config, "--keep-going", "results/demo/slides.tsv")
    assert result.returncode != 0
    log = (tmp_path / f"results/logs/fetch_slide/demo/{victim}.log").read_text()
    assert f"slide {victim[:-4]}: md5 of" in log and "the manifest says" in log
    assert not (tmp_path / f"results/demo/slides/{victim[:-4]}.svs").exists()
    linked = list((tmp_path / "results/demo/slides").iterdir())
    assert len(linked) == len(samples) - 1, "with --keep-going the other slides are still linked"


def test_editing_a_model_file_reruns_exactly_its_train_jobs_and_aggregate(tmp_path, small_cohort):
    """Training only (a cohort with its own features): a model file edited after the run makes
    ``snakemake -n`` list that model's train jobs and aggregate, nothing else."""
    import shutil

    cohort = small_cohort["cohort"]
    plugin = tmp_path / "probe_model.py"
    shutil.copy(REPO / "tests/fixtures/coord_probe_model.py", plugin)
    config = {"results": "results", "download": {"source": "local"}, "folds": 2, "seed": 1,
              "cohorts": {"tiny": {"table": str(cohort.table), "splits_dir": str(cohort.splits_dir),
                                   "signatures": str(cohort.signatures), "pathways": str(cohort.pathways),
                                   "features_dir": str(small_cohort["root"] / "features/pt_files")}},
              "models": ["snn", "coord_probe"], "model_plugins": [str(plugin)], "train_jobs": "per_model",
              "train": {"data": {"feature_dim": 16}, "training": {"epochs": 1, "grad_accum": 1}}}
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert not list((tmp_path / "results/tiny").rglob("resume")), "resume states are removed when a job ends"
    assert run_snakemake(tmp_path, config, "-n").stdout.count("Nothing to be done") == 1

    plugin.write_text(plugin.read_text() + "\n# an edit of the model's file\n")
    assert planned_jobs(tmp_path, config) == (["aggregate", "train"], {"coord_probe"})


KILLER_PLUGIN = '''
"""Test plugin: SIGKILL this train job once fold 1's resume checkpoint of epoch 2 is on disk (once)."""
import os
import signal
from pathlib import Path

from mmsurv.train.resume import ResumeCheckpoint

MARKER = Path({marker!r})
_save = ResumeCheckpoint.save


def _save_then_die(self, state):
    _save(self, state)
    if self.path.parts[-3] == "fold1" and state["epoch"] == 2 and not MARKER.exists():
        MARKER.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)


ResumeCheckpoint.save = _save_then_die
'''


def test_a_killed_train_job_of_every_fold_resumes_at_the_fold_and_epoch_reached(tmp_path, small_cohort):
    from mmsurv.train.run import train_fold

    cohort = small_cohort["cohort"]
    plugin = tmp_path / "kill_after_epoch_2.py"
    plugin.write_text(KILLER_PLUGIN.format(marker=str(tmp_path / "killed")))
    training = {"epochs": 5, "grad_accum": 1, "resume_every_s": 0}  # a resume checkpoint after every epoch
    config = {"results": "results", "download": {"source": "local"}, "folds": 2, "seed": 1, "train_threads": 1,
              "cohorts": {"tiny": {"table": str(cohort.table), "splits_dir": str(cohort.splits_dir),
                                   "signatures": str(cohort.signatures), "pathways": str(cohort.pathways),
                                   "features_dir": str(small_cohort["root"] / "features/pt_files")}},
              "models": ["abmil"], "model_plugins": [str(plugin)], "train_jobs": "per_model",
              "train": {"data": {"feature_dim": 16}, "training": training}}
    target = "results/tiny/abmil/fold1/metrics.json"
    killed = run_snakemake(tmp_path, config, target)
    assert killed.returncode != 0 and (tmp_path / "killed").exists(), (killed.stdout + killed.stderr)[-3000:]
    folds = tmp_path / "results/tiny/abmil"
    assert not (folds / "fold0/metrics.json").exists()  # Snakemake removed the failed job's outputs
    assert (folds / "fold0/resume/state.pt").exists() and (folds / "fold1/resume/state.pt").exists()

    resumed = run_snakemake(tmp_path, config, target)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    log = (tmp_path / "results/logs/train/tiny/abmil/folds.log").read_text()
    assert "fold0/resume/state.pt: 5 of 5 epoch(s) done" in log and "fold1/resume/state.pt: 2 of 5 epoch(s) done" in log
    assert not list(folds.rglob("resume"))
    for fold in (0, 1):  # the numbers of an uninterrupted run
        reference = tmp_path / f"reference{fold}"
        train_fold({"data": {"feature_dim": 16}, "training": {"num_threads": 1, **training}}, cohort_table=cohort.table,
                   splits_dir=cohort.splits_dir, fold=fold, model="abmil", out_dir=reference,
                   signatures=cohort.signatures, pathways=cohort.pathways,
                   features_dir=small_cohort["root"] / "features/pt_files", seed=1)
        for name in ("predictions.tsv", "predictions_best.tsv"):
            assert (folds / f"fold{fold}" / name).read_bytes() == (reference / name).read_bytes(), (fold, name)


def test_a_sweep_trains_one_variant_per_value_and_an_edited_value_reruns_only_its_jobs(tmp_path, small_cohort):
    """``train.sweeps``: one row per value; after the run, changing one value makes ``snakemake -n``
    list that value's train job (and aggregate), nothing of the values kept."""
    cohort = small_cohort["cohort"]
    config = {"results": "results", "download": {"source": "local"}, "folds": 2, "seed": 1,
              "cohorts": {"tiny": {"table": str(cohort.table), "splits_dir": str(cohort.splits_dir),
                                   "signatures": str(cohort.signatures), "pathways": str(cohort.pathways),
                                   "features_dir": str(small_cohort["root"] / "features/pt_files")}},
              "models": ["snn_dropout"], "train_jobs": "per_model", "report": {"papers": []},
              "train": {"data": {"feature_dim": 16}, "training": {"epochs": 1, "grad_accum": 1},
                        "sweeps": {"snn_dropout": {"model": "snn", "param": "dropout", "values": [0.25, 0.5]}}}}
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for variant, dropout in (("snn_dropout_0p25", 0.25), ("snn_dropout_0p5", 0.5)):
        metrics = json.loads((tmp_path / f"results/tiny/{variant}/fold1/metrics.json").read_text())
        assert metrics["config"]["model_params"] == {"dropout": dropout}
    config["train"]["sweeps"]["snn_dropout"]["values"] = [0.25, 0.4]
    assert planned_jobs(tmp_path, config) == (["aggregate", "train"], {"snn_dropout_0p4"})


def test_a_genomic_only_cohort_trains_genomic_models_without_any_slide_job(tmp_path, small_cohort):
    """A cohort with a table and splits but no manifest, sample sheet or features: genomic models
    train and the report is written, no slide is listed, patched or encoded; skip_cohorts drops a
    cohort of the merged configs, and the demo's training departures (demo_train) stay out."""
    cohort = small_cohort["cohort"]
    config = {"results": "results", "download": {"source": "local"}, "folds": 2, "seed": 1,
              "skip_cohorts": ["demo"],
              "cohorts": {"tables": {"table": str(cohort.table), "splits_dir": str(cohort.splits_dir),
                                     "signatures": str(cohort.signatures)},
                          "demo": {"manifest": "no/such/manifest.txt", "table": "t", "splits_dir": "s",
                                   "signatures": "g", "slides_dir": "d"}},
              "models": ["snn"], "train_jobs": "per_model", "report": {"papers": []},
              "demo_train": {"training": {"epochs": 99}},
              "train": {"training": {"epochs": 1, "grad_accum": 1}}}
    result = run_snakemake(tmp_path, config)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert not re.search(r"rule (clean_manifest|slide_inventory|segment|extract|features_index|patching)", output)
    metrics = json.loads((tmp_path / "results/tables/snn/fold1/metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and not (tmp_path / "results/demo").exists()
    assert (tmp_path / "results/report/report.json").is_file()

    config["models"] = ["snn", "abmil"]  # a model that reads slides cannot train there: said at once
    refused = run_snakemake(tmp_path, config, "-n")
    assert refused.returncode != 0
    assert "cohorts.tables has no slides" in refused.stdout + refused.stderr and "abmil" in refused.stdout + refused.stderr


PAPERS = ["survmamba", "cancermoe", "mmm", "hdmoe"]


@pytest.mark.parametrize("paper", PAPERS)
def test_each_paper_preset_plans_its_models_on_the_demo_and_its_cohorts_template_is_valid(paper, tmp_path):
    """``make demo-paper PAPER=...``'s config (preset + demo overlay) parses and plans one train job per
    model and variant (sweeps expanded); the preset with its cohorts template passes the schema."""
    from snakemake.utils import update_config

    from mmsurv.config import check_config
    from mmsurv.models.catalog import with_sweeps

    preset = yaml.safe_load((REPO / f"config/papers/{paper}.yaml").read_text())
    result = subprocess.run([*SNAKEMAKE, "-n", "-d", str(tmp_path), "--configfile", str(REPO / f"config/papers/{paper}.yaml"),
                             str(REPO / "config/papers/demo.yaml"), "--config", "results=results"],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    planned = set(re.findall(r"model=(\w+)", output))
    expected, _ = with_sweeps(preset["models"], preset["train"].get("models"), preset["train"].get("sweeps"))
    assert planned == set(expected)
    merged = dict(preset)
    update_config(merged, yaml.safe_load((REPO / f"config/papers/cohorts/{paper}.yaml").read_text()))
    check_config(merged, REPO / "workflow/schemas/config.schema.yaml", source=f"config/papers/{paper}.yaml")


def test_an_external_cohort_is_processed_scored_by_every_fold_model_and_reported(tmp_path, demo_run):
    """The demo's patients again as an external cohort trained_on the demo: patched and encoded like
    any cohort, never split or trained on; each fold model scores every patient, a patient's risk
    under the fold that validated it equals that fold's own prediction, and the report lists it."""
    (tmp_path / "resources").symlink_to(demo_run / "resources")
    config = demo_config(models=["snn", "abmil"])
    del config["demo"]
    external = {key: value for key, value in config["cohorts"]["demo"].items()
                if key not in ("splits_dir", "signatures")}
    config["cohorts"]["ext"] = {**external, "role": "external", "trained_on": "demo"}
    config["demo_report"] = {}
    jobs, _ = planned_jobs(tmp_path, config)
    assert "predict_external" in jobs
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert not (tmp_path / "results/ext/abmil/fold0").exists()  # never trained on
    for model in ("snn", "abmil"):
        scored = pd.read_csv(tmp_path / f"results/ext/{model}/predictions.tsv", sep="\t", dtype={"case_id": str})
        for fold in (0, 1):
            own = pd.read_csv(tmp_path / f"results/demo/{model}/fold{fold}/predictions.tsv", sep="\t",
                              dtype={"case_id": str}).set_index("case_id")["risk"]
            again = scored.set_index("case_id").loc[own.index, f"risk_fold{fold}"]
            assert np.allclose(again.to_numpy(), own.to_numpy(), atol=1e-5), (model, fold)
    table = pd.read_csv(tmp_path / "results/report/external.csv")
    assert set(table["model"]) == {"snn", "abmil"} and (table["cohort"] == "ext").all()
    assert table["cindex"].between(0, 1).all() and (table["ci_low"] <= table["ci_high"]).all()
    assert (tmp_path / "results/report/km/external_ext_abmil.png").stat().st_size > 10_000
    assert "External validation" in (tmp_path / "results/report/external.md").read_text()
    # the command line, from the checkpoints alone, gives the workflow's table
    out = tmp_path / "abmil_ext.tsv"
    done = subprocess.run([str(BIN / "mmsurv"), "predict", "--run-dir", str(tmp_path / "results/demo/abmil"),
                           "--table", str(tmp_path / config["cohorts"]["ext"]["table"]), "--features-dir",
                           str(tmp_path / "results/ext/features/pt_files"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(out, sep="\t"), pd.read_csv(tmp_path / "results/ext/abmil/predictions.tsv",
                                                                          sep="\t"))
