#!/usr/bin/env bash
# Start one SuperNode (one client) on a device.
#   bash scripts/deploy/supernode.sh SUPERLINK_HOST:9091 PARTITION_ID NUM_PARTITIONS certs/ca.crt keys/node-0
#   INSECURE=1 bash scripts/deploy/supernode.sh 127.0.0.1:9091 0 2
# With TLS, SUPERLINK_HOST must be one of the addresses make-certs.sh put in the server certificate.
# The client keeps its state (its LoRA) under STATE_DIR (default ~/.local/share/pfl-app), so a
# restarted SuperNode carries on where it was. PORT sets its local API port (default 9094).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
superlink=${1:?usage: supernode.sh SUPERLINK PARTITION_ID NUM_PARTITIONS [CA_CERT AUTH_KEY]}
pid=${2:?partition id}
n=${3:?number of partitions}
state=${STATE_DIR:-$HOME/.local/share/pfl-app}
config="partition-id=$pid num-partitions=$n state-dir=\"$state\""
if [[ ${INSECURE:-0} == 1 ]]; then
    exec flower-supernode --insecure --superlink "$superlink" --port "${PORT:-9094}" --node-config "$config"
fi
ca=${4:?CA certificate (ca.crt), or INSECURE=1}
key=${5:?SuperNode private key (make-node-key.sh), or INSECURE=1}
exec flower-supernode --superlink "$superlink" --port "${PORT:-9094}" --node-config "$config" \
    --root-certificates "$ca" --auth-supernode-private-key "$key"
