# Tissue segmentation and 512 px patching, one job per slide (CLAM-compatible outputs).


rule segment_and_patch:
    input:
        slide=slide_file,
    output:
        h5=f"{RESULTS}/{{cohort}}/wsi/patches/{{slide}}.h5",
        mask=f"{RESULTS}/{{cohort}}/wsi/masks/{{slide}}.png",
        stitch=f"{RESULTS}/{{cohort}}/wsi/stitches/{{slide}}.png",
        summary=f"{RESULTS}/{{cohort}}/wsi/{{slide}}.json",
    log:
        f"{LOGS}/segment_and_patch/{{cohort}}/{{slide}}.log",
    benchmark:
        f"{BENCHMARKS}/segment_and_patch/{{cohort}}/{{slide}}.tsv"
    group:
        "slide"
    conda:
        "../envs/segment_and_patch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        patching=patching_params,
    script:
        "../workflow/scripts/segment_and_patch.py"


rule patching_summary:
    input:
        cohort_patches,
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
    script:
        "../workflow/scripts/patching_summary.py"
