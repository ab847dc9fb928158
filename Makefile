# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: venv
	$(PY) -m scripts.train --config=configs/fc_digits.py --workdir=runs/demo

test: venv
	$(PY) -m pytest -q -n 2 tests

bench: venv
	$(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.cost_model
	$(PY) -m benchmarks.scheduler

clean:
	rm -rf runs .pytest_cache
