# Two entry points (see README): `make reproduce` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= cpu
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: reproduce test nbval smoke-reproduce test-fast gpu-check smoke-check park tier-notebooks notebooks report chromium kernel clean-venv FORCE

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name kdlib --display-name "Python (kdlib)"
	touch $@

# Main job: compute the missing result files (cached), then execute every notebook in order.
reproduce: $(VENV)/.installed
	$(BIN)/kdlib reproduce --scale $(SCALE)
	$(MAKE) -j2 notebooks

EXECUTED := $(patsubst notebooks/%,build/notebooks/$(SCALE)/%,$(NOTEBOOKS))

# Executed copies go to build/notebooks/<scale>/ (one rule per notebook: make -j2 works); a cpu
# run then copies them over the sources, which so carry the published outputs. A smoke run
# never modifies a committed file. The scale is injected only where it is not the default (cpu), so
# the committed notebooks keep one parameters cell, the one a JupyterLab user edits. Kernels start
# on IPC sockets (papermill's engine "kdlib", kdlib.notebook): no TCP port raced for beside nbval's.
notebooks: $(EXECUTED)
ifeq ($(SCALE),cpu)
	cp $(EXECUTED) notebooks/
endif

build/notebooks/$(SCALE)/%.ipynb: notebooks/%.ipynb FORCE | $(VENV)/.installed
	@mkdir -p $(@D)
	$(BIN)/papermill --engine kdlib --cwd notebooks -k kdlib $(if $(filter-out cpu,$(SCALE)),-p scale $(SCALE)) $< $@
	$(BIN)/python -m kdlib.notebook normalize $@

# The reproduction notebook reads the tables the others write: it runs last, also under make -j.
build/notebooks/$(SCALE)/reproduction.ipynb: $(filter-out %/reproduction.ipynb,$(EXECUTED))

FORCE:

# The report test opens the HTML in a real headless browser: Debian's chromium, installed if missing.
chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (for tests/test_report.py)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get install -y -q --no-install-recommends chromium \
		|| { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium; }; }

# Static HTML of the executed notebooks (their committed cpu outputs) and paper/REPRODUCTION.md.
report: $(VENV)/.installed
	$(BIN)/kdlib report --notebooks notebooks --out build/report

# CI's command. Strict nbval: every notebook re-executed on the committed results, each output compared
# with the committed one (figures and tables written under build/nbval, not over the published ones);
# beside it, on the other core, the smoke reproduction; then the check that the smoke run left the
# working tree as it found it. --output-sync keeps each one's output in one piece.
test: $(VENV)/.installed chromium
	$(MAKE) -j2 --output-sync=target nbval smoke-reproduce
	@$(CLEAN_TREE)

nbval: $(VENV)/.installed
	KDLIB_OUTPUTS=build/nbval $(BIN)/pytest -q tests notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg

smoke-reproduce: $(VENV)/.installed
	$(MAKE) reproduce SCALE=smoke

# While developing: the unit tests without the slow ones (marked `slow`, over 10 s each); CI runs `make test`.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -q -m "not slow" tests

# The quick reproduction a newcomer runs first, end to end (results, grid trained for 2 steps, every
# notebook), then a check that it changed no tracked file and left nothing untracked behind.
smoke-check: smoke-reproduce
	@$(CLEAN_TREE)

CLEAN_TREE = dirty="$$(git status --porcelain --untracked-files=all -- .)"; \
	if [ -n "$$dirty" ]; then echo "make reproduce SCALE=smoke changed the working tree:"; echo "$$dirty"; exit 1; fi

# Before a session ends: park the long and equal tiers' unfinished runs in checkpoints/ and re-execute the
# notebooks that report them (e1b_converged; reproduction, whose experiment-1 row carries the tiers'
# verdicts), so that the committed outputs match what is committed. Also after committing a landed run.
TIER_NOTEBOOKS = notebooks/e1b_converged.ipynb notebooks/reproduction.ipynb
park: $(VENV)/.installed
	$(BIN)/kdlib experiment 1 --scale long --park
	$(BIN)/kdlib experiment 1 --scale equal --park
	$(MAKE) notebooks SCALE=cpu NOTEBOOKS="$(TIER_NOTEBOOKS)"

tier-notebooks: $(VENV)/.installed
	$(MAKE) notebooks SCALE=cpu NOTEBOOKS="$(TIER_NOTEBOOKS)"

# On a machine lent a CUDA GPU (issue 29; docs/codec.md "GPU check"): one JSON, results/gpu/gpu_check.json.
# GPU_PYTHON: a Python with torch and kdlib's requirements (default: the venv's, else python3).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) -m kdlib.cli gpu-check $(GPU_ARGS)

clean-venv:
	rm -rf $(VENV)
