# kubevine — the two commands a newcomer needs are `make demo` and `make test`.
# Both set up ./.venv from pyproject.toml on first use (and again when it changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)


.PHONY: all setup redis xrootd demo test check lint typecheck imports fuzz format bench clean

all: check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test,hep]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

# Nothing is pre-started on a fresh machine: the suite's Redis (127.0.0.1:6379, no persistence)
# is installed from Debian when missing and started when it does not answer. Tests that kill
# Redis or need persistence start their own on a free port.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null

# The XRootD server and client (xrdcp, xrdfs) that tests/compat/test_xrootd.py serves and fetches
# root:// files with, from Debian's packages when missing. The tests start their own server.
xrootd:
	@command -v xrdcp >/dev/null 2>&1 && command -v xrootd >/dev/null 2>&1 || { \
	  echo "installing xrootd-server and xrootd-client from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq xrootd-server xrootd-client >/dev/null; }

test: $(STAMP) redis xrootd
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# 25,000 fuzzed frames per target (125,000 in all) at the manager, the transfer servers and a
# worker's own connection while a real workload runs (tests/security/test_fuzzing.py)
fuzz: $(STAMP) redis
	KUBEVINE_FUZZ_FRAMES=25000 $(BIN)/python -m pytest tests/security/test_fuzzing.py -s -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy and import-linter read a copy of the package laid out as installed (hack/pkgview.py):
# the services are mapped into kubevine from top-level folders, which they cannot follow.
typecheck: $(STAMP)
	$(BIN)/python hack/pkgview.py mypy

imports: $(STAMP)
	$(BIN)/python hack/pkgview.py lint-imports

check: lint typecheck imports test

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/commands.py
	$(BIN)/python bench/calls.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .pkgview

# A real control plane (kube-apiserver, controller-manager, scheduler, etcd built from Go
# modules into ~/.cache/kubevine/cluster; the first build takes many minutes) and process-kubelet
# nodes in network namespaces. Needs root. See docs/dev/real-cluster.md.
CLUSTER_STATE     ?= .cluster
CLUSTER_NODES     ?= 3
CLUSTER_BANDWIDTH ?=

.PHONY: cluster cluster-down cluster-build cluster-status

cluster-build:
	bash hack/cluster/build.sh

cluster: $(STAMP)
	$(BIN)/python -m tests.realkube.controlplane up --state $(CLUSTER_STATE) --nodes $(CLUSTER_NODES) \
		$(if $(CLUSTER_BANDWIDTH),--bandwidth $(CLUSTER_BANDWIDTH))

cluster-down:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m tests.realkube.controlplane down --state $(CLUSTER_STATE)

cluster-status:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m tests.realkube.controlplane status --state $(CLUSTER_STATE)
