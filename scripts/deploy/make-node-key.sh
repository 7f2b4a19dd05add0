#!/usr/bin/env bash
# Make a SuperNode's authentication key pair (ECDSA P-384, what Flower expects).
#   bash scripts/deploy/make-node-key.sh keys/node-0
# Keep keys/node-0 on the device; register keys/node-0.pub with the SuperLink:
#   flwr supernode register keys/node-0.pub <connection>
set -euo pipefail
key=${1:?usage: make-node-key.sh KEY_PATH}
mkdir -p "$(dirname "$key")"
openssl ecparam -name secp384r1 -genkey -noout -out "$key"
openssl ec -in "$key" -pubout -out "$key.pub" 2>/dev/null
chmod 600 "$key"
echo "private: $key   public: $key.pub"
