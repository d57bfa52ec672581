# slidebench front door. Every target sets up what it needs: a local virtual environment with the
# pinned dependencies (requirements.lock, or requirements-cuda.lock on a machine with an NVIDIA GPU:
# see tools/tf_variant.sh; TF_VARIANT=cpu|cuda overrides), and the native extension built from source.
#
#   make reproduce [SUITE=default|paper] [DATA_DIR=path]   the whole comparison, plots and report
#   make test                                               C++ unit tests (ctest) and pytest
#   make bench | plots | clean | lint

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUITE  ?= default
# Real data sets: an explicit DATA_DIR, else $SLIDEBENCH_DATA, else this workspace's shared copy.
DATA_DIR ?= $(or $(SLIDEBENCH_DATA),$(wildcard ../shared/datasets))
export SLIDEBENCH_DATA := $(abspath $(DATA_DIR))

# TensorFlow build: "cpu" (tensorflow-cpu) or "cuda" (tensorflow[and-cuda]), chosen once per make
# invocation; the script says why on stderr. Each variant has its own deps stamp and installing one
# deletes the other's, so switching (a GPU appears, or TF_VARIANT changes) reinstalls TensorFlow in
# the same venv. The cpu stamp keeps the name venvs made before the cuda variant existed carry.
TF_CHOICE := $(shell TF_VARIANT='$(TF_VARIANT)' sh tools/tf_variant.sh)
ifeq ($(filter cpu cuda,$(TF_CHOICE)),)
$(error tools/tf_variant.sh chose no TensorFlow variant (TF_VARIANT must be cpu or cuda))
endif
LOCK_cpu  := requirements.lock
LOCK_cuda := requirements-cuda.lock
# The other variant's TensorFlow distribution: both install the same `tensorflow` package folder,
# so one must be removed before the other goes in.
OTHER_TF_cpu  := tensorflow
OTHER_TF_cuda := tensorflow-cpu
STAMP_cpu  := $(VENV)/.stamp-deps
STAMP_cuda := $(VENV)/.stamp-deps-cuda
DEPS_STAMP := $(STAMP_$(TF_CHOICE))

NATIVE_SOURCES := CMakeLists.txt pyproject.toml $(shell find engines/slide -name '*.cpp' -o -name '*.h' -o -name 'CMakeLists.txt' 2>/dev/null)

.PHONY: all install reproduce test ctest pytest bench plots lint clean
all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): $(LOCK_$(TF_CHOICE)) | $(BIN)/python
	@echo "installing $(LOCK_$(TF_CHOICE)) (TensorFlow variant: $(TF_CHOICE))"
	rm -f $(STAMP_cpu) $(STAMP_cuda)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes $(OTHER_TF_$(TF_CHOICE))
	$(BIN)/python -m pip install --quiet -r $(LOCK_$(TF_CHOICE))
	touch $@

# Editable install: harness/ and engines/ are used from the source tree, the compiled _slide module
# from the build folder. --no-build-isolation reuses the pinned build tools of the environment.
$(VENV)/.stamp-build: $(DEPS_STAMP) $(NATIVE_SOURCES)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.stamp-build

reproduce: install
	$(BIN)/slidebench reproduce --suite $(SUITE)

test: ctest pytest

# Release, as the Python module is built (so the tests and the bench_* timing programs run the
# same -O3 code), plus -g so that profilers and debuggers see source lines.
ctest: $(DEPS_STAMP)
	$(BIN)/cmake -S . -B build/ctest -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(BIN)/ninja) \
	    -DSLIDE_BUILD_TESTS=ON -DSLIDE_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g >/dev/null
	$(BIN)/cmake --build build/ctest
	$(BIN)/ctest --test-dir build/ctest --output-on-failure

pytest: install
	$(BIN)/python -m pytest -q

# asv suite against this build, results filed under HEAD (docs/benchmarks.md). A subset, quickly:
#   make bench ASV_ARGS="--quick -b FitStepSmall"
bench: install
	$(BIN)/asv machine --yes >/dev/null
	$(BIN)/asv run --python=same --set-commit-hash $$(git rev-parse HEAD) $(ASV_ARGS)

plots: install
	$(BIN)/slidebench report

lint: $(DEPS_STAMP)
	$(BIN)/ruff check harness engines tests benchmarks tools

clean:
	rm -rf build _skbuild .asv results/runs results/plots results/report.md results/report.html
	find . -name __pycache__ -prune -exec rm -rf {} +
