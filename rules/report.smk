# Aggregation: paper-style tables and figures from every cohort x model x fold, for the HTML report.


rule aggregate:
    input:
        unpack(aggregate_input),
    output:
        cindex_last=report(
            f"{REPORT}/cindex_last.md",
            caption="../workflow/report/cindex_table.rst",
            category="Tables",
            labels={"table": "c-index, last epoch"},
        ),
        cindex_best=report(
            f"{REPORT}/cindex_best.md",
            caption="../workflow/report/cindex_table.rst",
            category="Tables",
            labels={"table": "c-index, best epoch"},
        ),
        cindex_last_csv=f"{REPORT}/cindex_last.csv",
        cindex_best_csv=f"{REPORT}/cindex_best.csv",
        cindex_last_tex=f"{REPORT}/cindex_last.tex",
        cindex_best_tex=f"{REPORT}/cindex_best.tex",
        cindex_last_summary=f"{REPORT}/cindex_last_summary.csv",
        cindex_best_summary=f"{REPORT}/cindex_best_summary.csv",
        efficiency=report(
            f"{REPORT}/efficiency.md",
            caption="../workflow/report/efficiency_table.rst",
            category="Tables",
            labels={"table": "parameters, FLOPs, time, memory"},
        ),
        efficiency_csv=f"{REPORT}/efficiency.csv",
        efficiency_tex=f"{REPORT}/efficiency.tex",
        models=report(
            f"{REPORT}/models.md",
            caption="../workflow/report/models_table.rst",
            category="Tables",
            labels={"table": "models and their papers"},
        ),
        models_csv=f"{REPORT}/models.csv",
        logrank=f"{REPORT}/km_logrank.csv",
        km=[
            report(
                f"{REPORT}/km/km_{cohort}_{model}.png",
                caption="../workflow/report/km.rst",
                category="Kaplan-Meier",
                subcategory=cohort,
                labels={"cohort": cohort, "model": model},
            )
            for cohort in COHORTS
            for model in MODELS
        ],
        km_grid=[
            report(
                f"{REPORT}/km/km_grid_{model}.png",
                caption="../workflow/report/km_grid.rst",
                category="Kaplan-Meier",
                subcategory="all cohorts",
                labels={"cohort": "all", "model": model},
            )
            for model in MODELS
            if len(COHORTS) > 1
        ],
        bubble=report(
            f"{REPORT}/bubble_cindex_flops.png",
            caption="../workflow/report/bubble.rst",
            category="Figures",
            labels={"figure": "c-index vs FLOPs"},
        ),
        statistics=report(
            f"{REPORT}/statistics.md",
            caption="../workflow/report/statistics_table.rst",
            category="Statistics",
            labels={"table": "IBS, AUC, Uno's C with 95% intervals"},
        ),
        statistics_csv=f"{REPORT}/statistics.csv",
        statistics_tex=f"{REPORT}/statistics.tex",
        statistics_folds=f"{REPORT}/statistics_folds.csv",
        comparisons=report(
            f"{REPORT}/comparisons.md",
            caption="../workflow/report/comparisons_table.rst",
            category="Statistics",
            labels={"table": "paired model comparisons"},
        ),
        comparisons_csv=f"{REPORT}/comparisons.csv",
        comparisons_tex=f"{REPORT}/comparisons.tex",
        calibration_csv=f"{REPORT}/calibration.csv",
        significance=[
            report(
                f"{REPORT}/stats/significance_{cohort}.png",
                caption="../workflow/report/significance.rst",
                category="Statistics",
                subcategory="significance",
                labels={"cohort": cohort, "figure": "significance matrix"},
            )
            for cohort in COHORTS
        ],
        calibration=[
            report(
                f"{REPORT}/stats/calibration_{model}.png",
                caption="../workflow/report/calibration.rst",
                category="Statistics",
                subcategory="calibration",
                labels={"model": model, "figure": "calibration"},
            )
            for model in MODELS
        ],
        papers=paper_tables(),
        paper_figures=paper_figures(),
        external=external_report_files(),
        pdfs=report_pdfs(),
        summary=f"{REPORT}/report.json",
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{BENCHMARKS}/aggregate.tsv"
    conda:
        "../envs/aggregate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cohorts=COHORTS,
        models=MODELS,
        external=EXTERNAL,
        folds=config["folds"],
        settings=report_settings(),
        model_params=config["train"].get("models", {}),
        plugins=PLUGINS,
    script:
        "../workflow/scripts/aggregate.py"


# Attention heatmaps of chosen patients (report.heatmaps): per cohort x model, the fold that
# validated each patient draws its slides. Not a target unless report.heatmaps.models names models.
rule heatmaps:
    input:
        unpack(heatmap_input),
    output:
        report(
            directory(f"{REPORT}/heatmaps/{{cohort}}/{{model}}"),
            patterns=["{name}.heatmap.png"],
            caption="../workflow/report/heatmaps.rst",
            category="Heatmaps",
            labels={"cohort": "{cohort}", "model": "{model}", "slide": "{name}"},
        ),
    log:
        f"{LOGS}/heatmaps/{{cohort}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/heatmaps/{{cohort}}/{{model}}.tsv"
    conda:
        "../envs/heatmaps.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=heatmap_settings,
        features_dir=features_dir,
        slides_dir=lambda wildcards: f"{RESULTS}/{wildcards.cohort}/slides",
        plugins=PLUGINS,
    script:
        "../workflow/scripts/heatmaps.py"
