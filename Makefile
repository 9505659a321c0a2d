# Two commands on a fresh machine: `make rollout` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch: the CPU build pinned here installs from a local wheel on our machines and from PyPI elsewhere
TORCH_PIN ?= torch==2.13.0

.PHONY: install test rollout bench bench-cluster report-screenshots check-domains train-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q; status=$$?; [ $$status -ne 5 ] || echo 'pytest collected no tests: that is a failure'; exit $$status

# each run writes a new folder under runs/; resume one with: .venv/bin/python -m rollout --out DIR --resume
rollout: install
	$(PY) -m rollout --config configs/rollout/default.yaml --out runs/default-$$(date +%Y%m%d-%H%M%S)

bench: install
	$(PY) tests/bench/bench_env.py
	$(PY) tests/bench/bench_rollout.py
	$(PY) tests/bench/bench_report.py
	$(PY) tests/bench/bench_dataset.py
	$(PY) tests/bench/render_chat_templates.py

# the driver's capacity (1k, 10k, 100k synthetic episodes) and 2,000 concurrent episodes at 20 s latency
# (about 10 minutes; not part of make test or make bench)
bench-cluster: install
	$(PY) tests/bench/bench_driver.py
	$(PY) tests/bench/bench_scale.py

# screenshots of `taugym report` in headless Chromium (apt-get install -y chromium); not part of make test
report-screenshots: install
	$(PY) tests/bench/report_screenshots.py

# every task of every tau2 domain against tau2's own scoring (slow, ~15 min; not part of make test)
check-domains: install
	$(PY) tests/bench/check_domains.py

# rollout -> BC -> greedy evaluation -> GRPO on 6 retail train-split tasks (slow, up to ~30 min; not part of make test)
train-check: install
	OMP_NUM_THREADS=1 $(PY) scripts/train_check.py

clean:
	rm -rf $(VENV) build *.egg-info
