#!/usr/bin/env bash
# Make a private CA and a SuperLink server certificate for a host name or IP address.
#   bash scripts/deploy/make-certs.sh 192.168.1.10 certs/      (or a DNS name)
# Writes certs/ca.crt (give it to every SuperNode and to flwr), certs/server.pem and
# certs/server.key (keep them on the SuperLink). The address clients use must be in the
# certificate's subjectAltName, which is what the first argument sets.
set -euo pipefail
host=${1:?usage: make-certs.sh HOST_OR_IP OUT_DIR}
out=${2:?usage: make-certs.sh HOST_OR_IP OUT_DIR}
mkdir -p "$out"
if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
openssl req -x509 -newkey rsa:3072 -nodes -days 365 -subj "/CN=pfl-app CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=$host" \
    -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 365 -extfile "$out/server.ext" -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
chmod 600 "$out/ca.key" "$out/server.key"
echo "CA: $out/ca.crt   server: $out/server.pem, $out/server.key   (subjectAltName $san)"
