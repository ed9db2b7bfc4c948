"""End to end on a small demo cohort: SNN, ABMIL and MCAT learn; outputs, determinism, CLI.

WSI features: ``mmsurv.features.extract_slide_features`` needs the patching stage's coordinates and
a ResNet50 pass per patch (random weights offline), too slow for this test and with no guaranteed
signal. So the test writes per-slide bags ``pt_files/{slide}.pt`` itself: N ~ U[20, 60) patches of
N(0, 1) noise plus ``risk × w`` (the demo's latent risk from ``demo_truth.tsv``; ``w`` is ±0.5 on
64 of the 1024 features). The first case gets no feature file at all (graceful-missing path).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mmsurv.cli import main
from mmsurv.data.cohort import read_cohort_table
from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort
from mmsurv.train.run import train_fold

FOLDS = 3
BASE = {"training": {"num_threads": 1, "grad_accum": 8, "lr": 5e-4}}
LEARNING = {
    "snn": {"epochs": 20},
    "abmil": {"epochs": 5},
    # the MCAT architecture with narrower layers (overrides) to keep the test short
    "mcat": {"epochs": 5, "params": {"embed_dim": 128, "omic_hidden": [128, 128], "ff_dim": 256}},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_demo")
    spec = DemoSpec(patients=60, seed=5, width=256, height=256, genes=30, informative_genes=6,
                    extra_slide_size=(256, 256), folds=FOLDS)
    cohort = generate_demo_cohort(root / "cohort", spec)
    features = root / "pt_files"
    write_risk_features(cohort, features)
    return {"table": cohort.table, "splits_dir": cohort.splits_dir, "signatures": cohort.signatures,
            "features_dir": features, "root": root}


def write_risk_features(cohort, out_dir) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    risk = pd.read_csv(cohort.truth, sep="\t").set_index("case_id")["risk"]
    rng = np.random.default_rng(0)
    direction = np.zeros(1024, "float32")
    direction[:64] = rng.choice([-0.5, 0.5], 64)
    for index, (case, slides) in enumerate(read_cohort_table(cohort.table).slides_of_case().items()):
        if index == 0:
            continue
        for slide in slides:
            bag = rng.standard_normal((int(rng.integers(20, 60)), 1024)).astype("float32") + risk[case] * direction
            torch.save(torch.from_numpy(bag), out_dir / f"{slide.removesuffix('.svs')}.pt")


def run(demo, model, out_dir, config, fold=0, seed=None):
    return train_fold(config, cohort_table=demo["table"], splits_dir=demo["splits_dir"], fold=fold, model=model,
                      out_dir=out_dir, signatures=demo["signatures"], features_dir=demo["features_dir"], seed=seed)


def config_for(model, epochs=None, **training):
    settings = LEARNING[model]
    config = {"training": {**BASE["training"], "epochs": epochs or settings["epochs"], **training}}
    if "params" in settings:
        config["models"] = {model: settings["params"]}
    return config


@pytest.mark.slow
@pytest.mark.parametrize("model", ["snn", "abmil", "mcat"])
def test_model_learns_on_demo(demo, model, tmp_path):
    scores = [run(demo, model, tmp_path / f"fold{k}", config_for(model), fold=k)["cindex_last"] for k in range(FOLDS)]
    assert np.mean(scores) > 0.6, f"{model}: last-epoch c-index per fold {scores}"


def test_fold_outputs(demo, tmp_path):
    run(demo, "abmil", tmp_path, config_for("abmil", epochs=2))
    names = {"metrics.json", "predictions.tsv", "predictions_best.tsv", "checkpoint_last.pt", "checkpoint_best.pt",
             "training_log.tsv", "bin_edges.json"}
    assert names <= {p.name for p in tmp_path.iterdir()}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("cindex_last", "cindex_best", "best_epoch", "best_selected_on", "n_train", "n_val",
                "seconds_per_epoch", "peak_rss_mb", "n_params"):
        assert key in written
    assert written["n_train"] + written["n_val"] == 60 and written["best_selected_on"] == "val"
    from mmsurv.models import ModelInputs, build_model, count_flops

    rebuilt = build_model("abmil", ModelInputs(path_dim=written["path_dim"]))  # the features' own dimension
    assert written["config"]["data"]["feature_dim"] is None and written["path_dim"] == 1024
    assert written["flops_per_patient"] == {"4096": count_flops(rebuilt, bag_size=4096)}  # the report's reference size
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    assert list(predictions.columns) == ["case_id", "risk", "S_1", "S_2", "S_3", "S_4", "time", "event", "bin"]
    assert len(predictions) == written["n_val"]
    assert np.allclose(predictions["risk"], -predictions[["S_1", "S_2", "S_3", "S_4"]].sum(axis=1), atol=1e-6)
    log = pd.read_csv(tmp_path / "training_log.tsv", sep="\t")
    assert log["epoch"].tolist() == [1, 2] and {"train_loss", "val_loss", "val_cindex", "train_cindex"} <= set(log.columns)
    edges = json.loads((tmp_path / "bin_edges.json").read_text())["edges_months"]
    assert len(edges) == 5 and edges == sorted(edges)
    checkpoint = torch.load(tmp_path / "checkpoint_best.pt", weights_only=False)
    assert checkpoint["epoch"] == written["best_epoch"] and checkpoint["model"] == "abmil"


def test_same_seed_same_numbers(demo, tmp_path):
    config = config_for("mcat", epochs=2)
    config["data"] = {"max_patches": 16}  # random patch sampling must be seeded too
    first = run(demo, "mcat", tmp_path / "a", config, seed=7)
    second = run(demo, "mcat", tmp_path / "b", config, seed=7)
    other = run(demo, "mcat", tmp_path / "c", config, seed=8)
    assert first["cindex_last"] == second["cindex_last"] and first["cindex_best"] == second["cindex_best"]
    assert (tmp_path / "a" / "predictions.tsv").read_bytes() == (tmp_path / "b" / "predictions.tsv").read_bytes()
    log_a = pd.read_csv(tmp_path / "a" / "training_log.tsv", sep="\t")
    log_b = pd.read_csv(tmp_path / "b" / "training_log.tsv", sep="\t")
    assert log_a["train_loss"].tolist() == log_b["train_loss"].tolist()
    assert (tmp_path / "a" / "predictions.tsv").read_bytes() != (tmp_path / "c" / "predictions.tsv").read_bytes()
    assert other["seed"] == 8


def test_holdout_selection_and_early_stopping(demo, tmp_path):
    config = config_for("snn", epochs=6, holdout_fraction=0.25, early_stopping_patience=1, scheduler="cosine",
                        optimizer="adamw")
    metrics = run(demo, "snn", tmp_path, config)
    assert metrics["best_selected_on"] == "holdout" and metrics["best_selection_metric"] == "loss"
    assert metrics["n_holdout"] > 0 and metrics["n_train"] + metrics["n_holdout"] + metrics["n_val"] == 60
    assert metrics["epochs_run"] <= 6
    log = pd.read_csv(tmp_path / "training_log.tsv", sep="\t")
    assert "holdout_loss" in log.columns and len(log) == metrics["epochs_run"]


def test_cli_train(demo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0 and "--features-dir" in capsys.readouterr().out
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"training": {"epochs": 1, "num_threads": 1, "loss": "cox", "grad_accum": 8},
                                      "models": {"snn": {"hidden": [32, 32]}}}))
    code = main(["train", "--table", str(demo["table"]), "--splits-dir", str(demo["splits_dir"]), "--fold", "1",
                 "--model", "snn", "--out-dir", str(tmp_path / "out"), "--config", str(config), "--seed", "3"])
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fold"] == 1 and metrics["seed"] == 3 and metrics["config"]["training"]["loss"] == "cox"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trainig": {}}))
    assert main(["train", "--table", str(demo["table"]), "--splits-dir", str(demo["splits_dir"]), "--fold", "0",
                 "--model", "snn", "--out-dir", str(tmp_path / "bad"), "--config", str(bad)]) == 1
    assert "unknown section" in capsys.readouterr().err


def test_a_job_reads_its_cohort_table_once_until_the_file_changes(tmp_path, monkeypatch):
    import os

    import mmsurv.train.run as run

    table = tmp_path / "table.csv"
    table.write_text("case_id,slide_id,survival_months,censorship,G1_rnaseq\nA,A.svs,3.0,0,0.5\nB,B.svs,5.0,1,0.1\n")
    reads = []
    monkeypatch.setattr(run, "read_cohort_table", lambda path: reads.append(path) or object())
    first = run.cohort_table_once(table)
    assert run.cohort_table_once(table) is first and len(reads) == 1
    table.write_text(table.read_text() + "C,C.svs,7.0,0,0.2\n")
    os.utime(table, ns=(1, 1))  # another size and modification time: read again
    assert run.cohort_table_once(table) is not first and len(reads) == 2


def write_h5_features(source_dir, out_dir, dim: int) -> None:
    """The demo bags as per-slide h5 files (datasets ``features`` N×dim and ``coords`` N×2), the layout
    of TRIDENT's ``features_<encoder>/`` and CLAM's ``h5_files/``."""
    import h5py

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    projection = rng.standard_normal((1024, dim)).astype("float32") / 32
    for path in sorted(source_dir.glob("*.pt")):
        bag = torch.load(path).numpy() @ projection
        with h5py.File(out_dir / f"{path.stem}.h5", "w") as handle:
            handle["features"] = bag
            handle["coords"] = np.stack([np.arange(len(bag)) * 512, np.zeros(len(bag))], axis=1).astype("int64")


@pytest.mark.parametrize(("layout", "model", "dim"), [("trident", "abmil", 768), ("clam_h5", "transmil", 1536)])
def test_features_made_elsewhere_train_a_model_and_set_its_dimension(demo, tmp_path, layout, model, dim):
    # TRIDENT: features_<encoder>/{slide}.h5; CLAM: h5_files/{slide}.h5. No feature_dim to set: the
    # model is built for the files' dimension and the coords come from the same files.
    features = tmp_path / ("features_conch_v1" if layout == "trident" else "h5_files")
    write_h5_features(demo["features_dir"], features, dim)
    config = {"training": {**BASE["training"], "epochs": 1}}
    if model == "transmil":
        config["models"] = {"transmil": {"dim": 32}}
    metrics = train_fold(config, cohort_table=demo["table"], splits_dir=demo["splits_dir"], fold=0, model=model,
                         out_dir=tmp_path / "run", signatures=demo["signatures"], features_dir=features)
    assert metrics["path_dim"] == dim and np.isfinite(metrics["cindex_last"])
    checkpoint = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=False)
    assert checkpoint["inputs"]["path_dim"] == dim


def test_a_folder_mixing_two_encoders_is_refused_naming_the_file(demo, tmp_path):
    from mmsurv.data.dataset import CohortError

    features = tmp_path / "mixed"
    write_h5_features(demo["features_dir"], features, 512)
    write_h5_features(demo["features_dir"], tmp_path / "other", 768)
    for path in sorted(features.glob("*.h5"))[1:]:  # the first file (by name) sets the dimension: 512
        (tmp_path / "other" / path.name).replace(path)
    with pytest.raises(CohortError, match=r"\.h5: features have 768 columns, expected 512 \(the first feature file"):
        train_fold({"training": {**BASE["training"], "epochs": 1}}, cohort_table=demo["table"],
                   splits_dir=demo["splits_dir"], fold=0, model="abmil", out_dir=tmp_path / "run",
                   signatures=demo["signatures"], features_dir=features)
