# Bring each slide of a cohort into the run's slide folder (verified), then list them.


rule fetch_slide:
    input:
        unpack(fetch_slide_input),
    output:
        f"{RESULTS}/{{cohort}}/slides/{{slide}}.svs",
    log:
        f"{LOGS}/fetch_slide/{{cohort}}/{{slide}}.log",
    conda:
        "../envs/fetch_slide.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=120,
    params:
        sample=sample_row,
        download=DOWNLOAD,
    script:
        "../workflow/scripts/fetch_slide.py"


rule slide_inventory:
    input:
        samples=f"{RESULTS}/{{cohort}}/manifest/samples.tsv",
        slides=cohort_slides,
    output:
        f"{RESULTS}/{{cohort}}/slides.tsv",
    log:
        f"{LOGS}/slide_inventory/{{cohort}}.log",
    conda:
        "../envs/slide_inventory.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../workflow/scripts/slide_inventory.py"
