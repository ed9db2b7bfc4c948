# External cohorts (role: external): their slides go through patching and features like any
# cohort's; every fold model of their trained_on cohort scores them (no split, no training).


rule predict_external:
    input:
        unpack(external_input),
    output:
        f"{RESULTS}/{{cohort}}/{{model}}/predictions.tsv",
    log:
        f"{LOGS}/predict_external/{{cohort}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_external/{{cohort}}/{{model}}.tsv"
    wildcard_constraints:
        cohort="|".join(re.escape(name) for name in EXTERNAL) or "(?!)",
        model=r"[^/]+",
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
        plugins=PLUGINS,
    script:
        "../workflow/scripts/predict_external.py"
