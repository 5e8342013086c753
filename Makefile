# zlab make targets. Every target that needs Python runs `setup` first when .venv is missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
ZLAB    := $(BIN)/zlab
TOPO    ?= raft-5
BACKEND ?= local
NAME    ?= $(TOPO)
S       ?= topologies/raft-5.yaml
SEED    ?=
SEED_ARG := $(if $(SEED),--seed $(SEED),)
COMPARE_BACKEND ?= sim

.PHONY: setup demo up down fault run status compare test test-fast image bench lint clean

$(BIN)/zlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

setup: $(BIN)/zlab

demo: setup
	$(ZLAB) run topologies/raft-5-demo.yaml --backend local $(SEED_ARG)

up: setup
	$(ZLAB) up topologies/$(TOPO).yaml --name $(NAME) --backend $(BACKEND)

status: setup
	$(ZLAB) status $(NAME)

# make fault ARGS="partition n1,n2 n3,n4,n5"
fault: setup
	$(ZLAB) fault $(NAME) $(ARGS)

down: setup
	$(ZLAB) down $(NAME)

run: setup
	$(ZLAB) run $(S) --backend $(BACKEND) $(SEED_ARG)

# the tutorial's comparison table (docs/compare.md); COMPARE_BACKEND=local for real processes
compare: setup
	$(ZLAB) compare --backend $(COMPARE_BACKEND) $(SEED_ARG)

test: setup
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -n auto -m "not docker" $(PYTEST_ARGS)

image: setup
	$(BIN)/python -m lab.image build

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check lab nodes tests bench examples zlab

clean:
	rm -rf results .pytest_cache .ruff_cache .hypothesis
