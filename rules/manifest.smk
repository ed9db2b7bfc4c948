# Slide-list cleaning: a checkpoint, since the slides of a cohort are known only once it ran.
# dropped.tsv and summary.json are also written into the log folder (declared as logs), so a
# failing job (e.g. no slide left) cannot take the reasons with it.


checkpoint clean_manifest:
    input:
        unpack(cleaning_input),
    output:
        manifest=f"{RESULTS}/{{cohort}}/manifest/manifest.tsv",
        samples=f"{RESULTS}/{{cohort}}/manifest/samples.tsv",
        dropped=f"{RESULTS}/{{cohort}}/manifest/dropped.tsv",
        summary=f"{RESULTS}/{{cohort}}/manifest/summary.json",
    log:
        main=f"{LOGS}/clean_manifest/{{cohort}}.log",
        dropped=f"{LOGS}/clean_manifest/{{cohort}}.dropped.tsv",
        summary=f"{LOGS}/clean_manifest/{{cohort}}.summary.json",
    conda:
        "../envs/clean_manifest.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        tcga=lookup(dpath="cohorts/{cohort}/tcga", within=config, default=None),
    script:
        "../workflow/scripts/clean_manifest.py"
