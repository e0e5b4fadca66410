#!/usr/bin/env bash
# `make demo`: the synthetic camera and fusion_node as real processes for ~20 s; results in demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m fusion_perception.ros.demo --out demo_out --duration "${DEMO_SECONDS:-20}" "$@"
