# Bring each slide of a cohort into the run's slide folder (verified), then list them. A slide keeps
# its file name, so its format: OpenSlide tells some formats (.ndpi, .mrxs) by their extension.


rule fetch_slide:
    input:
        unpack(fetch_slide_input),
    output:
        f"{RESULTS}/{{cohort}}/slides/{{slide}}{{ext}}",
    log:
        f"{LOGS}/fetch_slide/{{cohort}}/{{slide}}{{ext}}.log",
    conda:
        "../envs/fetch_slide.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=120,
        gdc_connections=1,
    params:
        sample=sample_row,
        download=download_params,
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
