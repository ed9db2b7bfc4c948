# Patch features per slide: ResNet50 truncated after layer3 (1024-d), CLAM/MCAT file layout.


rule extract_features:
    input:
        slide=slide_file,
        patches=f"{RESULTS}/{{cohort}}/wsi/patches/{{slide}}.h5",
        summary=f"{RESULTS}/{{cohort}}/wsi/{{slide}}.json",
    output:
        h5=f"{RESULTS}/{{cohort}}/features/h5_files/{{slide}}.h5",
        pt=f"{RESULTS}/{{cohort}}/features/pt_files/{{slide}}.pt",
        meta=f"{RESULTS}/{{cohort}}/features/json/{{slide}}.json",
    log:
        f"{LOGS}/extract_features/{{cohort}}/{{slide}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{cohort}}/{{slide}}.tsv"
    conda:
        "../envs/extract_features.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        features=config["features"],
        compile_cache_dir=COMPILE_CACHE,
    script:
        "../workflow/scripts/extract_features.py"
