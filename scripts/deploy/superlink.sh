#!/usr/bin/env bash
# Start the SuperLink for a deployment: TLS and SuperNode authentication by default.
#   bash scripts/deploy/superlink.sh certs/            (all interfaces, port 9091)
#   HOST=192.168.1.10 PORT=9443 bash scripts/deploy/superlink.sh certs/
#   INSECURE=1 bash scripts/deploy/superlink.sh         (no TLS, no auth: a trusted lab network only)
# HOST is the address the SuperLink listens on. Its default, 0.0.0.0 (every interface), lets
# devices on other hosts connect; flwr 1.41 itself would listen on 127.0.0.1 only. HOST=127.0.0.1
# keeps it to this machine. One port carries everything: the SuperNodes' Fleet API, the Control
# API that `flwr run` / `flwr ls` use, and the ServerApp's runtime API.
# DATABASE (default superlink-state.db, in the repository root) keeps registered SuperNodes and runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
host=${HOST:-0.0.0.0}
port=${PORT:-9091}
if [[ ${INSECURE:-0} == 1 ]]; then
    exec flower-superlink --insecure --host "$host" --port "$port"
fi
certs=${1:?usage: superlink.sh CERT_DIR (made by make-certs.sh), or INSECURE=1}
exec flower-superlink --host "$host" --port "$port" \
    --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" --ssl-keyfile "$certs/server.key" \
    --enable-supernode-auth --database "${DATABASE:-superlink-state.db}"
