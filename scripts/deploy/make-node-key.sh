#!/usr/bin/env bash
# Make a SuperNode's authentication key pair: ECDSA on NIST P-384, both halves in OpenSSH
# format (what flower-supernode and `flwr supernode register` read).
#   bash scripts/deploy/make-node-key.sh keys/node-0
# Keep keys/node-0 on the device; register keys/node-0.pub with the SuperLink:
#   flwr supernode register keys/node-0.pub <connection>
set -euo pipefail
key=${1:?usage: make-node-key.sh KEY_PATH}
mkdir -p "$(dirname "$key")"
py="$(dirname "$0")/../../.venv/bin/python"
[[ -x $py ]] || py=python3
umask 077
"$py" - "$key" <<'PY'
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

path = sys.argv[1]
key = ec.generate_private_key(ec.SECP384R1())
with open(path, "wb") as fh:
    fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                               serialization.NoEncryption()))
with open(path + ".pub", "wb") as fh:
    fh.write(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
PY
echo "private: $key   public: $key.pub"
