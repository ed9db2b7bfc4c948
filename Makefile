# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test lint setup clean-demo paper demo-paper demo-encoder

setup: $(STAMP)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import mmsurv, torch, torchvision, openslide, snakemake, sksurv"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores 1 --configfile config/config.yaml --report results/report.html
	@echo "demo finished:"
	@echo "  HTML report:        results/report.html"
	@echo "  tables (md/csv/tex): results/report/cindex_last.md, results/report/cindex_best.md, results/report/efficiency.md"
	@echo "  figures:            results/report/km/, results/report/bubble_cindex_flops.png"

# make paper: rebuild every table and figure from finished results; no training job can run.
# make paper PAPER=<survmamba|cancermoe|mmm|hdmoe>: that paper's preset (config/papers/<paper>.yaml,
# with the cohort paths filled in config/papers/cohorts/<paper>.yaml) trains what is missing and
# writes the paper's tables and figures.
paper: $(STAMP)
ifdef PAPER
	@test -f config/papers/$(PAPER).yaml || { echo "usage: make paper PAPER=<survmamba|cancermoe|mmm|hdmoe>"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --configfile config/papers/$(PAPER).yaml config/papers/cohorts/$(PAPER).yaml
	@echo "paper tables and figures: results/report/papers/$(PAPER)/"
else
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --forcerun aggregate --allowed-rules aggregate
	$(BIN)/snakemake --cores 1 --configfile config/config.yaml --report results/report.html
	@echo "tables and figures in results/report/, report in results/report.html"
endif

# One founding paper's preset on the demo cohort: make demo-paper PAPER=survmamba (cancermoe, mmm, hdmoe).
demo-paper: $(STAMP)
	@test -f config/papers/$(PAPER).yaml || { echo "usage: make demo-paper PAPER=<survmamba|cancermoe|mmm|hdmoe>"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --configfile config/papers/$(PAPER).yaml config/papers/demo.yaml \
		--config results=results/demo-paper/$(PAPER)
	@echo "tables: results/demo-paper/$(PAPER)/report/ (paper tables: papers/$(PAPER)/ when it prints any)"

# The demo with another patch encoder, random weights (offline): make demo-encoder ENCODER=uni.
# Its patches stay at the demo's 512 px (an encoder's own preset, e.g. UNI's 256 px, would cut 4x
# the patches); results/demo-encoder/<encoder>/, report.html there.
demo-encoder: $(STAMP)
	@test -n "$(ENCODER)" || { echo "usage: make demo-encoder ENCODER=<uni|conch_v1|ctranspath|...>"; exit 2; }
	@mkdir -p results/demo-encoder/$(ENCODER)
	@printf 'features:\n  encoder: %s\npatching:\n  patch_size: 512\n' "$(ENCODER)" > results/demo-encoder/$(ENCODER)/overlay.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml results/demo-encoder/$(ENCODER)/overlay.yaml \
		--config results=results/demo-encoder/$(ENCODER)
	$(BIN)/snakemake --cores 1 --configfile config/config.yaml results/demo-encoder/$(ENCODER)/overlay.yaml \
		--config results=results/demo-encoder/$(ENCODER) --report results/demo-encoder/$(ENCODER)/report.html
	@echo "report: results/demo-encoder/$(ENCODER)/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench workflow/scripts
	$(BIN)/snakemake --lint --configfile config/config.yaml
	$(BIN)/snakefmt --check Snakefile rules

clean-demo:
	rm -rf results resources/demo resources/demo_external .snakemake
