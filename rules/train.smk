# One training job per cohort x model x fold: model, out-of-fold predictions, metrics.


rule features_index:
    input:
        cohort_batches("features"),
    output:
        f"{RESULTS}/{{cohort}}/features/index.tsv",
    log:
        f"{LOGS}/features_index/{{cohort}}.log",
    conda:
        "../envs/features_index.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        files=cohort_features,
    script:
        "../workflow/scripts/features_index.py"


# Per fold (default; one GPU job per fold on a cluster) or per model (all folds of a cohort x model
# in one process: a train job's fixed cost - interpreter, imports, data - is paid once per model,
# which is what makes a zoo of ~25 models x 5 folds fit a 2-core workstation; see train_jobs in the config).
if config["train_jobs"] == "per_fold":

    rule train:
        input:
            unpack(train_input),
        output:
            metrics=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/metrics.json",
            predictions=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/predictions.tsv",
            predictions_best=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/predictions_best.tsv",
            training_log=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/training_log.tsv",
            bin_edges=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/bin_edges.json",
            checkpoint_last=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/checkpoint_last.pt",
            checkpoint_best=f"{RESULTS}/{{cohort}}/{{model}}/fold{{fold}}/checkpoint_best.pt",
        log:
            f"{LOGS}/train/{{cohort}}/{{model}}/fold{{fold}}.log",
        benchmark:
            f"{BENCHMARKS}/train/{{cohort}}/{{model}}/fold{{fold}}.tsv"
        conda:
            "../envs/train.yaml"
        threads: train_threads
        resources:
            gpu=train_gpus,
            mem_mb=16000,
            runtime=240,
        params:
            data=lookup(dpath="train/data", within=config, default={}),
            training=lookup(dpath="train/training", within=config, default={}),
            model=lookup(dpath="train/models/{model}", within=config, default={}),
            features_dir=features_dir,
            seed=lookup(dpath="seed", within=config),
            plugins=PLUGINS,
            training_code=TRAINING_CODE,
        script:
            "../workflow/scripts/train.py"

else:

    rule train_folds:
        input:
            unpack(train_input),
        output:
            metrics=fold_outputs("metrics.json"),
            predictions=fold_outputs("predictions.tsv"),
            predictions_best=fold_outputs("predictions_best.tsv"),
            training_log=fold_outputs("training_log.tsv"),
            bin_edges=fold_outputs("bin_edges.json"),
            checkpoint_last=fold_outputs("checkpoint_last.pt"),
            checkpoint_best=fold_outputs("checkpoint_best.pt"),
        log:
            f"{LOGS}/train/{{cohort}}/{{model}}/folds.log",
        benchmark:
            f"{BENCHMARKS}/train/{{cohort}}/{{model}}/folds.tsv"
        conda:
            "../envs/train_folds.yaml"
        threads: train_threads
        resources:
            gpu=train_gpus,
            mem_mb=16000,
            runtime=lambda wildcards: 240 * len(FOLDS),
        params:
            data=lookup(dpath="train/data", within=config, default={}),
            training=lookup(dpath="train/training", within=config, default={}),
            model=lookup(dpath="train/models/{model}", within=config, default={}),
            features_dir=features_dir,
            seed=lookup(dpath="seed", within=config),
            plugins=PLUGINS,
            training_code=TRAINING_CODE,
        script:
            "../workflow/scripts/train.py"
