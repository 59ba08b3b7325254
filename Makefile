# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test proofs figures bench mutmut mutate mutate-full clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU build, so nothing pulls a CUDA wheel
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test,private]'
	# CrypTen for measured private inference: its declared dependencies are broken (the
	# deprecated sklearn package, a torchvision that pulls another torch), so the [private]
	# extra above installs what it needs and CrypTen itself comes without dependencies
	$(PY) -m pip install -q --no-deps crypten==0.4.1
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m capacity.optimize --d1 50000 --d2 5000 --budget 10000

test: setup
	$(PY) -m pytest -q -n 2

proofs: setup
	$(PY) -m proofs

figures: setup
	$(PY) -m figures

bench: setup
	$(PY) benchmarks/cli_startup.py
	$(PY) benchmarks/pieces.py
	$(PY) benchmarks/gates.py
	$(PY) benchmarks/gates.py --compiled-only --threads 1
	$(PY) benchmarks/data.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/private.py --runs runs/private

# Mutation testing of the six core modules (config: [tool.mutmut] in pyproject.toml;
# results and the equivalent survivors: docs/mutation.md). `make mutate` runs a seeded random
# sample of SAMPLE (100) mutants per module (10 minutes on 2 cores; the same sample every time)
# and prints each module's score with its 95 % interval; `make mutate-full` runs every mutant
# (several hours), MUTANTS narrowing it, e.g. make mutate-full MUTANTS='capacity.optimum*'.
# Results are cached in mutants/: a rerun only tests mutants of functions that changed.
MUTANTS ?= capacity.bounds* capacity.optimum* capacity.pieces* snl_train.gates* snl_train.trainer* snl_train.accounting*
SAMPLE ?= 100

mutmut: setup
	$(PY) -m pip install -q -c constraints.txt 'mutmut==3.8.1'

mutate: mutmut
	HYPOTHESIS_PROFILE=mutate $(PY) tools/mutate_sample.py --mutmut $(VENV)/bin/mutmut --per-module $(SAMPLE)

mutate-full: mutmut
	HYPOTHESIS_PROFILE=mutate $(VENV)/bin/mutmut run --max-children 2 $(foreach m,$(MUTANTS),'$(m)')
	$(VENV)/bin/mutmut export-cicd-stats
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) build *.egg-info mutants
