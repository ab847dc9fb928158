# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: venv native demo test bench clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# Native XLA:CPU kernels (spikepipe_jax/native/): built here once so that parallel test workers
# find them; without a C++ compiler the networks fall back to their pure-XLA path.
native: venv
	@$(PY) -m spikepipe_jax.native

# The quick-scale study on the bundled digits: trains the default network (prints its final test
# accuracy), the delay study, the cost model and the schedule study; writes runs/demo/REPORT.md.
demo: native
	$(PY) -m scripts.reproduce --scale=quick --out=runs/demo

test: native
	$(PY) -m pytest -q -n 2 tests

bench: native
	$(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.cost_model
	$(PY) -m benchmarks.scheduler

clean:
	rm -rf runs .pytest_cache
