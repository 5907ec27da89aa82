#!/usr/bin/env bash
# Generates everything a TLS + node-authentication deployment needs, in the formats Flower 1.10
# uses, so real Flower peers accept them too:
#   certificates/ca.key, ca.crt              self-signed CA (RSA 4096, SHA-256)
#   certificates/server.key, server.csr, server.pem
#                                            server certificate signed by the CA,
#                                            SANs localhost, ::1, 127.0.0.1
#   keys/server_credentials(.pub)            SuperLink ECDSA P-384 key pair (OpenSSH format)
#   keys/client_credentials_I(.pub)          one pair per SuperNode, I = 1..N
#   keys/client_public_keys.csv              the SuperLink's allowlist (one line, comma-separated)
#
# Usage: scripts/generate.sh [N] [OUTDIR]
#   N       number of SuperNode key pairs (default 2)
#   OUTDIR  where certificates/ and keys/ go (default: the repository root)
# Existing files are replaced.
set -euo pipefail

num_clients="${1:-2}"
if ! [[ "$num_clients" =~ ^[0-9]+$ ]] || [ "$num_clients" -lt 1 ]; then
  echo "generate.sh: N must be a positive integer, got '$num_clients'" >&2
  exit 2
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${2:-$repo_root}"
days="${FLWR_CERT_DAYS:-365}"
for tool in openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "generate.sh: '$tool' is required but not installed" >&2; exit 2; }
done

cert_dir="$out_dir/certificates"
key_dir="$out_dir/keys"
mkdir -p "$cert_dir" "$key_dir"
conf="$repo_root/certificates/certificate.conf"

# CA and server certificate.
rm -f "$cert_dir"/ca.key "$cert_dir"/ca.crt "$cert_dir"/server.key "$cert_dir"/server.csr "$cert_dir"/server.pem
openssl genrsa -out "$cert_dir/ca.key" 4096 2>/dev/null
openssl req -new -x509 -key "$cert_dir/ca.key" -sha256 -subj "/C=DE/ST=HH/O=CA, Inc." \
  -days "$days" -out "$cert_dir/ca.crt"
openssl genrsa -out "$cert_dir/server.key" 4096 2>/dev/null
openssl req -new -key "$cert_dir/server.key" -out "$cert_dir/server.csr" -config "$conf"
openssl x509 -req -in "$cert_dir/server.csr" -CA "$cert_dir/ca.crt" -CAkey "$cert_dir/ca.key" \
  -CAcreateserial -out "$cert_dir/server.pem" -days "$days" -sha256 \
  -extfile "$conf" -extensions req_ext 2>/dev/null

# ECDSA P-384 key pairs in OpenSSH format, no passphrase, empty comment.
gen_key() {
  rm -f "$1" "$1.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "$1"
}
gen_key "$key_dir/server_credentials"
csv=""
for ((i = 1; i <= num_clients; i++)); do
  gen_key "$key_dir/client_credentials_$i"
  # OpenSSH writes "type blob " (trailing space with an empty comment); the CSV holds "type blob".
  pub="$(head -n 1 "$key_dir/client_credentials_$i.pub" | awk '{print $1" "$2}')"
  csv="${csv:+$csv,}$pub"
done
printf '%s\n' "$csv" >"$key_dir/client_public_keys.csv"
echo "generate.sh: wrote $cert_dir and $key_dir ($num_clients client key pairs)"
