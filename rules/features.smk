# Patch features (ResNet50 truncated after layer3, 1024-d, CLAM/MCAT file layout per slide), in
# batches of slides_per_job slides per process: imports, the encoder and its compiled package are
# set up once per batch.


rule extract_features_batch:
    input:
        slides=batch_slide_files,
        patched=f"{RESULTS}/{{cohort}}/wsi/batches/{{batch}}.tsv",
    output:
        f"{RESULTS}/{{cohort}}/features/batches/{{batch}}.tsv",
    log:
        f"{LOGS}/extract_features/{{cohort}}/{{batch}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{cohort}}/{{batch}}.tsv"
    conda:
        "../envs/extract_features_batch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=batch_runtime(120),
    params:
        features=features_params,
        compile_cache_dir=COMPILE_CACHE,
        slides=batch_slides,
        patches=batch_patch_files,
        out_dir=stage_dir("features"),
    script:
        "../workflow/scripts/extract_features_batch.py"
