# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False

.PHONY: install demo test test-all lint bench clean space browser-deps

$(STAMP): setup.cfg pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m unif2ace_hf.cli demo --output-dir demo_outputs

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP) browser-deps
	$(PY) -m pytest -q -m "slow or not slow"

# Debian's Chromium and ChromeDriver for the Space's browser test (never a browser download).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

# The Gradio Space on http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change; UNIF2ACE_MODEL picks the checkpoint).
space: $(STAMP)
	GRADIO_SERVER_NAME=127.0.0.1 $(PY) spaces/app.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks spaces
	$(VENV)/bin/ruff format --check src tests benchmarks spaces

# About 15 minutes on 2 cores; writes benchmarks/results_*.json, then benchmarks/RESULTS.md and results.json.
bench: $(STAMP)
	$(PY) benchmarks/bench_moe.py --profile
	$(PY) benchmarks/bench_scheduler.py
	$(PY) benchmarks/bench_understanding.py
	$(PY) benchmarks/bench_t2i.py
	$(PY) benchmarks/bench_train.py
	-$(PY) benchmarks/bench_synthface_render.py
	$(PY) benchmarks/bench_tokenizer_train.py
	$(PY) benchmarks/bench_packed_questions.py
	$(PY) benchmarks/bench_muon_step.py
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
