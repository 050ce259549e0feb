# Lumos on Ray — set-up, demo, tests, benchmarks.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK=1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export DS_ACCELERATOR ?= cpu
export RAY_USAGE_STATS_ENABLED=0

.PHONY: setup toolchain demo train-small test test-fast bench browser lint clean

setup: $(STAMP) toolchain

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(VPY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	touch $(STAMP)

# A C++ compiler: torch.compile (engine.compile, on in the goal recipe) builds its CPU kernels with one.
toolchain:
	@command -v g++ >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq g++ >/dev/null) || echo "g++ not installed: engine.compile=true will fail on CPU and its tests will be skipped"

# Chromium for the playground browser test (Debian package; skipped by the test if absent).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium not installed: the browser test will be skipped"

demo: setup
	$(VPY) -m workflows.demo $(DEMO_ARGS)

# The small model from scratch in <= 2 h on 2 cores: two shapes-world corpora, then the two-stage recipe
# (workflows/configs/pretrain_small_2h.yaml; checkpoint in runs/small-2h-video/final). Rerun = resume.
TEXT_VOCAB := lumos/assets/text_words.json
train-small: setup
	$(VPY) -m tokenize_jobs.shapes --out runs/shards/small-image --stills 24000 --clips 2000 --seed 0 --text-tokenizer $(TEXT_VOCAB)
	$(VPY) -m tokenize_jobs.shapes --out runs/shards/small-video --stills 30000 --clips 30000 --seed 1 --text-tokenizer $(TEXT_VOCAB)
	$(VPY) -m workflows.pretrain --config workflows/configs/pretrain_small_2h.yaml $(TRAIN_ARGS)

test: setup browser lint
	$(VPY) -m pytest -m "not gpu" -q --durations=20 $(PYTEST_ARGS)

test-fast: setup
	$(VPY) -m pytest -m "not gpu and not slow" -q -x $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VPY) -P $$b || exit 1; done

lint: setup
	$(VPY) -m ruff check lumos tokenize_jobs workflows tests bench

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
