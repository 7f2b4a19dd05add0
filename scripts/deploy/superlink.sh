#!/usr/bin/env bash
# Start the SuperLink for a deployment: TLS and SuperNode authentication by default.
#   bash scripts/deploy/superlink.sh certs/            (port 9091; PORT=... to change)
#   INSECURE=1 bash scripts/deploy/superlink.sh         (no TLS, no auth: a trusted lab network only)
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
port=${PORT:-9091}
if [[ ${INSECURE:-0} == 1 ]]; then
    exec flower-superlink --insecure --port "$port"
fi
certs=${1:?usage: superlink.sh CERT_DIR (made by make-certs.sh), or INSECURE=1}
exec flower-superlink --port "$port" \
    --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" --ssl-keyfile "$certs/server.key" \
    --enable-supernode-auth --database "${DATABASE:-superlink-state.db}"
