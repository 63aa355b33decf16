# The two commands: `make demo` (the ROS bring-up, headless: simulator, shipped spiking
# controller and goal server over DDS, goals sent the ways RViz sends them) and `make test`.
# Both create .venv with the pinned dependencies on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench-quick setup results-table clean-venv

$(STAMP): requirements.txt setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snn-control bringup --goals 8

bench-quick: $(STAMP)
	for b in bench/[a-z]*.py; do echo "== $$b"; $(PY) $$b --quick > /dev/null || exit 1; done
	@# train_step's fixture round trip (how a GPU machine without PyBullet is timed), on the CPU
	fixture=$$(mktemp -d) && $(PY) bench/train_step.py --quick --write-fixture $$fixture/f.pt > /dev/null && \
	  $(PY) bench/train_step.py --quick --fixture $$fixture/f.pt --out $$fixture/f.json > /dev/null && rm -r $$fixture

test: $(STAMP)
	$(PY) -m pytest -q

results-table: $(STAMP)
	$(VENV)/bin/snn-control results-table

clean-venv:
	rm -rf $(VENV)
