#!/usr/bin/env bash
# Make a private CA and a SuperLink server certificate for one or more host names / IP addresses.
#   bash scripts/deploy/make-certs.sh 192.168.1.10 certs/                      (one address)
#   bash scripts/deploy/make-certs.sh 192.168.1.10 superlink.lan certs/        (several; the last argument is the folder)
# Writes certs/ca.crt (give it to every SuperNode and to flwr), certs/server.pem and
# certs/server.key (keep them on the SuperLink). Every address that SuperNodes or flwr use to
# reach the SuperLink must be in the certificate's subjectAltName: list them all. 127.0.0.1 is
# always added, because a SuperLink bound to 0.0.0.0 (the default of superlink.sh) starts its
# ServerApp runtime against 127.0.0.1 and checks this certificate there too.
set -euo pipefail
usage="usage: make-certs.sh HOST_OR_IP [HOST_OR_IP...] OUT_DIR"
(( $# >= 2 )) || { echo "$usage" >&2; exit 2; }
out=${!#}
hosts=("${@:1:$#-1}")
[[ " ${hosts[*]} " == *" 127.0.0.1 "* ]] || hosts+=(127.0.0.1)
san=""
for host in "${hosts[@]}"; do
    if [[ $host == 0.0.0.0 || $host == :: || $host == "[::]" ]]; then
        # a bind address, not one a client can dial: name the address the devices use instead
        echo "make-certs.sh: $host is not an address clients connect to; give the SuperLink's own address" >&2
        exit 2
    fi
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then entry="IP:${host#[}"; entry=${entry%]}; else entry="DNS:$host"; fi
    san+="${san:+,}$entry"
done
mkdir -p "$out"
openssl req -x509 -newkey rsa:3072 -nodes -days 365 -subj "/CN=pfl-app CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=${hosts[0]}" \
    -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 365 -extfile "$out/server.ext" -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
chmod 600 "$out/ca.key" "$out/server.key"
echo "CA: $out/ca.crt   server: $out/server.pem, $out/server.key   (subjectAltName $san)"
