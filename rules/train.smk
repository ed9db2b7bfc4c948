# One training job per cohort x model x fold: model, out-of-fold predictions, metrics.


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
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        train=config["train"],
        features_dir=features_dir,
        seed=config["seed"],
    script:
        "../workflow/scripts/train.py"
