# External cohorts (role: external): their slides go through patching and features like any
# cohort's; every fold model of their trained_on cohort scores them (no split, no training). One
# job per external cohort scores it with every model: the imports and the table are read once.


rule predict_external:
    input:
        unpack(external_input),
    output:
        expand(f"{RESULTS}/{{{{cohort}}}}/{{model}}/predictions.tsv", model=MODELS),
    log:
        f"{LOGS}/predict_external/{{cohort}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_external/{{cohort}}.tsv"
    wildcard_constraints:
        cohort="|".join(re.escape(name) for name in EXTERNAL) or "(?!)",
    conda:
        "../envs/predict_external.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        features_dir=features_dir,
        max_missing_genomic=lookup(
            dpath="train/data/max_missing_features", within=config, default=0.25
        ),
        models=MODELS,
        folds=FOLDS,
        trained_on=lambda wildcards: f"{RESULTS}/{EXTERNAL[wildcards.cohort]}",
        plugins=PLUGINS,
    script:
        "../workflow/scripts/predict_external.py"
