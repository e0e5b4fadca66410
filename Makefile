# Two commands matter: `make demo` and `make test`. Both set up .venv first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ROS_ENV := source tools/ros_env.sh

.PHONY: setup test demo bench study extensions lint format clean

setup:
	@tools/setup_venv.sh

test: setup
	@$(ROS_ENV) && $(PY) -m pytest test -q -p no:cacheprovider --timeout=600

demo: setup
	@$(ROS_ENV) && tools/demo.sh

bench: setup
	@$(ROS_ENV) && $(PY) tools/bench.py --out docs/benchmarks.md

study: setup
	@$(ROS_ENV) && { test -f data/real_pairs/manifest.yaml || $(VENV)/bin/fusion-prepare-real --out data/real_pairs; } \
		&& $(PY) -m fusion_training.study --out docs $(STUDY_ARGS)

extensions: setup
	@$(ROS_ENV) && { test -f data/real_pairs/manifest.yaml || $(VENV)/bin/fusion-prepare-real --out data/real_pairs; } \
		&& $(PY) -m fusion_training.seed_extensions --out docs $(STUDY_ARGS)

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf build install log demo_out $(VENV)/.package.stamp
