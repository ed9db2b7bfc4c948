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
# which is what makes a zoo of ~25 models x 5 folds fit a 2-core workstation; see train_jobs in the
# config). One rule either way: train_outputs() and train_folds() in common.smk.
rule train:
    input:
        unpack(train_input),
    output:
        **train_outputs(),
    log:
        f"{LOGS}/train/{{cohort}}/{{model}}/{TRAIN_JOB}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{cohort}}/{{model}}/{TRAIN_JOB}.tsv"
    conda:
        "../envs/train.yaml"
    threads: train_threads
    resources:
        gpu=train_gpus,
        mem_mb=16000,
        runtime=240 * (1 if PER_FOLD else len(FOLDS)),
    params:
        folds=train_folds,
        data=lookup(dpath="train/data", within=config, default={}),
        training=lookup(dpath="train/training", within=config, default={}),
        model=lookup(dpath="train/models/{model}", within=config, default={}),
        features_dir=features_dir,
        seed=lookup(dpath="seed", within=config),
        plugins=PLUGINS,
        training_code=TRAINING_CODE,
    script:
        "../workflow/scripts/train.py"
