# Tissue segmentation and 512 px patching (CLAM-compatible outputs per slide), in batches of
# slides_per_job slides per process: start-up is paid once per batch, outputs stay per slide.


rule segment_and_patch_batch:
    input:
        slides=batch_slide_files,
    output:
        f"{RESULTS}/{{cohort}}/wsi/batches/{{batch}}.tsv",
    log:
        f"{LOGS}/segment_and_patch/{{cohort}}/{{batch}}.log",
    benchmark:
        f"{BENCHMARKS}/segment_and_patch/{{cohort}}/{{batch}}.tsv"
    group:
        "slide"
    conda:
        "../envs/segment_and_patch_batch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=batch_runtime(30),
    params:
        patching=patching_params,
        slides=batch_slides,
        out_dir=stage_dir("wsi"),
    script:
        "../workflow/scripts/segment_and_patch_batch.py"


rule patching_summary:
    input:
        cohort_batches("wsi"),
    output:
        f"{RESULTS}/{{cohort}}/wsi/patching.tsv",
    log:
        f"{LOGS}/patching_summary/{{cohort}}.log",
    conda:
        "../envs/patching_summary.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        summaries=cohort_patches,
    script:
        "../workflow/scripts/patching_summary.py"
