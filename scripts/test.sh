#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Tests use tiny models built from a config;
# the hub is never contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 \
       FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 RAY_USAGE_STATS_ENABLED=0
# Two workers (pytest-xdist): a real run mostly waits on process starts, so two at once
# nearly halve the time on 2 cores. PFL_TEST_WORKERS=0 runs in this one process.
python -m pytest -n "${PFL_TEST_WORKERS:-2}" --dist loadgroup "$@"
