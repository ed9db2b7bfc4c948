# Manifest cleaning: a checkpoint, since the slides of a cohort are known only once it ran.


checkpoint clean_manifest:
    input:
        manifest=cohort_file("manifest"),
        table=cohort_file("table"),
    output:
        manifest=f"{RESULTS}/{{cohort}}/manifest/manifest.tsv",
        samples=f"{RESULTS}/{{cohort}}/manifest/samples.tsv",
        dropped=f"{RESULTS}/{{cohort}}/manifest/dropped.tsv",
    log:
        f"{LOGS}/clean_manifest/{{cohort}}.log",
    conda:
        "../envs/clean_manifest.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/clean_manifest.py"
