#!/bin/sh
# Demo certificates for the TLS variant: a private CA and one certificate + key, signed by it,
# used by the scheduler, the workers and the ddrp client (distributed authenticates both ends
# against the CA; it does not check host names).
#
#   deploy/docker/make_certs.sh [OUTDIR]      # default: deploy/docker/certs
#
# Writes OUTDIR/ca.pem, OUTDIR/cluster.pem, OUTDIR/cluster-key.pem. The containers run as
# uid 1000, so the key is made readable to them (0644): fine for a demo on one machine; for
# anything shared, use your own PKI and a secret store (Kubernetes Secrets, Docker secrets).
set -eu

out="${1:-$(dirname "$0")/certs}"
days="${DAYS:-365}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=ddrp demo CA" \
    -keyout "$tmp/ca-key.pem" -out "$out/ca.pem" 2>/dev/null

printf '%s\n' \
    "basicConstraints=CA:FALSE" \
    "keyUsage=digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:scheduler,DNS:localhost,IP:127.0.0.1" > "$tmp/ext.cnf"

openssl req -newkey rsa:2048 -nodes -subj "/CN=ddrp-cluster" \
    -keyout "$out/cluster-key.pem" -out "$tmp/cluster.csr" 2>/dev/null
openssl x509 -req -in "$tmp/cluster.csr" -CA "$out/ca.pem" -CAkey "$tmp/ca-key.pem" \
    -CAserial "$tmp/ca.srl" -CAcreateserial -days "$days" -extfile "$tmp/ext.cnf" -out "$out/cluster.pem" 2>/dev/null

chmod 0644 "$out/ca.pem" "$out/cluster.pem" "$out/cluster-key.pem"
echo "wrote $out/ca.pem $out/cluster.pem $out/cluster-key.pem"
