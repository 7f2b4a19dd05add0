#!/usr/bin/env bash
# Set up (if needed) and run the default simulation (simulation.toml) into results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
pfl-app run --scenario simulation.toml "$@"
