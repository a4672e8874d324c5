# The two commands a user runs: `make demo` and `make test`. Both create .venv when it is missing.
# `make test` also installs Debian's chromium for the dashboard's browser test (.ci/browser/install.sh),
# and installs (Debian packages) and starts a single-node SLURM on localhost for the
# `slurm` tests, and stops it afterwards, pass or fail: that part needs root. Without root, or on
# a machine with a real SLURM, `make test-no-slurm` runs every other test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-no-slurm slurm-up slurm-down demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch 2.13.0 CPU lies on this machine's disk; any other pin downloads gigabytes.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Formatting and a short lint rule set ([tool.ruff] in pyproject.toml); `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: $(STAMP) lint
	@bash .ci/browser/install.sh || echo "*** make test: chromium is missing (above); the browser tests will fail. ***" >&2
	@up=0; bash .ci/slurm/up.sh || up=$$?; \
	if [ $$up -ne 0 ]; then echo "*** make test: SLURM did not start (above); the slurm tests will fail. 'make test-no-slurm' runs the others. ***" >&2; fi; \
	status=0; $(BIN)/python -m pytest -q || status=$$?; \
	bash .ci/slurm/down.sh; \
	if [ $$status -eq 0 ] && [ $$up -ne 0 ]; then status=1; fi; \
	exit $$status

test-no-slurm: $(STAMP) lint
	@bash .ci/browser/install.sh || echo "*** make test-no-slurm: chromium is missing (above); the browser tests will fail. ***" >&2
	$(BIN)/python -m pytest -q -m "not slurm"

# A single-node SLURM on localhost (root): .ci/slurm/slurm.conf, munged, slurmctld, slurmd.
slurm-up:
	bash .ci/slurm/up.sh

slurm-down:
	bash .ci/slurm/down.sh

demo: $(STAMP)
	$(BIN)/python examples/digits_grid.py

bench: $(STAMP)
	$(BIN)/python benchmarks/planner.py
	$(BIN)/python benchmarks/sim.py
	$(BIN)/python benchmarks/digits.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
