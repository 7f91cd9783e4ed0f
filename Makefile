# bacalhau.aws_spot: one-command setup, tests and the offline demo.
# Everything runs from the repository root; tools come from .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
COLL   := .collections/ansible_collections/bacalhau/aws_spot
SANITY_DIR ?= build/sanity
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup test lint sanity unit integration test-roles test-sandbox emulator sandbox bench bench-cluster clean

setup: $(VENV)/.installed $(COLL)

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# ansible-core finds the collection through ansible.cfg's collections_path.
$(COLL):
	mkdir -p $(dir $(COLL))
	ln -sfn ../../.. $(COLL)

## test: every check, as CI runs it
test: setup lint sanity unit integration test-roles test-sandbox

lint: setup
	$(BIN)/ansible-lint --profile production

# ansible-test needs the collection under ansible_collections/<ns>/<name> for real
# (not via a symlink), so it runs on a copy of the tracked and new files, in a git
# repository of its own (ansible-test lists files through git).
# ansible-test bootstraps pip in its venvs with a get-pip.py it downloads from a host we
# cannot reach: give it ours under the name it looks for (its pip version, read from
# ansible-test itself once the venv exists).
sanity: setup
	pip_version=$$($(BIN)/python -c "import re,ansible_test,pathlib;print(re.search(r\"pip='([0-9.]+)'\",(pathlib.Path(ansible_test.__file__).parent/'_internal/python_requirements.py').read_text()).group(1))") && \
	  mkdir -p $(HOME)/.ansible/test/cache && \
	  cp tests/sanity/get_pip_offline.py $(HOME)/.ansible/test/cache/get_pip_$${pip_version//./_}.py
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR)/ansible_collections/bacalhau/aws_spot
	git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t $(SANITY_DIR)/ansible_collections/bacalhau/aws_spot
	ln -s $$($(BIN)/python -c "import ansible_collections.amazon.aws as m;print(m.__path__[0].rsplit('/',1)[0])") \
	  $(SANITY_DIR)/ansible_collections/amazon
	cd $(SANITY_DIR)/ansible_collections/bacalhau/aws_spot && git init -q && git add -A && \
	  $(CURDIR)/$(BIN)/ansible-test sanity --requirements --python 3.11 --color no \
	    plugins/

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

test-roles: setup
	tests/roles/run.sh

# the offline demo, end to end, as a test (root: it boots test hosts)
test-sandbox: setup
	$(BIN)/pytest -q tests/e2e

## bench: ours vs the stock amazon.aws way on the emulator, with added latency (not part of test);
## BENCH_ARGS="--regions 5 --instances 20 --latency-ms 100 [--large]"; report in build/bench/
bench: setup
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

## bench-cluster: time create.yml to a working cluster on 3 and 9 test hosts, in phases (as root; not part
## of test); BENCH_CLUSTER_ARGS="--hosts 3,9 [--latency-ms 100]"; report in build/bench/cluster_time.md
bench-cluster: setup
	tests/hosts/install-deps.sh
	$(BIN)/python -m tests.bench.cluster $(BENCH_CLUSTER_ARGS)

## emulator: run the offline AWS world in the foreground (Ctrl-C stops it)
emulator: setup
	$(BIN)/python -m tests.emulator

## sandbox: the offline demo (as root): emulator + test hosts + create/status/destroy
sandbox: setup
	tests/hosts/install-deps.sh
	$(BIN)/python -m tests.sandbox $(SANDBOX_ARGS)

clean:
	rm -rf build .collections .pytest_cache
