# The offline demo cohort, generated when the config has a `demo:` section.


if "demo" in config:

    rule demo_cohort:
        output:
            manifest=f"{config['demo']['outdir']}/gdc_manifest.txt",
            table=f"{config['demo']['outdir']}/tcga_demo_all_clean.csv.gz",
            signatures=f"{config['demo']['outdir']}/signatures.csv",
            pathways=f"{config['demo']['outdir']}/pathways.csv",
            truth=f"{config['demo']['outdir']}/demo_truth.tsv",
            splits=directory(f"{config['demo']['outdir']}/splits"),
            slides=directory(f"{config['demo']['outdir']}/slides"),
        log:
            f"{LOGS}/demo_cohort.log",
        benchmark:
            f"{BENCHMARKS}/demo_cohort.tsv"
        conda:
            "../envs/demo_cohort.yaml"
        threads: 2
        resources:
            mem_mb=3000,
            runtime=30,
        params:
            demo=config["demo"],
        script:
            "../workflow/scripts/demo_cohort.py"


# The demo's external cohort (config `demo_external:`), generated the same way.
if "demo_external" in config:

    rule demo_external_cohort:
        output:
            manifest=f"{config['demo_external']['outdir']}/gdc_manifest.txt",
            table=f"{config['demo_external']['outdir']}/tcga_demo_all_clean.csv.gz",
            signatures=f"{config['demo_external']['outdir']}/signatures.csv",
            pathways=f"{config['demo_external']['outdir']}/pathways.csv",
            truth=f"{config['demo_external']['outdir']}/demo_truth.tsv",
            splits=directory(f"{config['demo_external']['outdir']}/splits"),
            slides=directory(f"{config['demo_external']['outdir']}/slides"),
        log:
            f"{LOGS}/demo_external_cohort.log",
        benchmark:
            f"{BENCHMARKS}/demo_external_cohort.tsv"
        conda:
            "../envs/demo_external_cohort.yaml"
        threads: 2
        resources:
            mem_mb=3000,
            runtime=30,
        params:
            demo=config["demo_external"],
        script:
            "../workflow/scripts/demo_cohort.py"
