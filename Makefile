# netdiag — two commands: `make demo` (the main job) and `make test` (the tests).
# Both bootstrap a fresh Debian 12 host as root through `make setup` (idempotent, quiet when done).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit lint typecheck clean-state

setup:
	@scripts/bootstrap.sh

demo: setup
	@$(BIN)/netdiag doctor
	@mkdir -p results
	@$(BIN)/netdiag bench p2p --nodes 12 --profile lossy-wan --cc cubic,bbr --duration 20 \
		--tx-bytes 4096 --seed 1 --out results/demo.json --html results/demo.html
	@$(BIN)/netdiag bench sync --mode replay,snapshot --blocks 5000 --accounts 2000 --rounds 1 \
		--out results/demo-sync.json
	@$(BIN)/netdiag bench diagnose --quick --out results/demo-diagnose.json
	@$(BIN)/netdiag bench probes overhead --runs 4 --seconds 2 --rates max \
		--out results/demo-probes.json
	@$(BIN)/netdiag bench attack --attacks stalled_small,stalled_goodbye,stalled_reader \
		--out results/demo-attack.json

test: setup
	@scripts/run-tests.sh $(PYTEST_ARGS)

test-unit: setup
	@$(BIN)/python -m pytest tests/unit -q

lint: setup
	@$(BIN)/ruff check netdiag tests && $(BIN)/ruff format --check netdiag tests

typecheck: setup
	@$(BIN)/mypy

# Recover kernel state after a kill -9 of any netdiag process.
clean-state: setup
	@$(BIN)/netdiag lab down --all || true
	@$(BIN)/netdiag tune --revert || true
