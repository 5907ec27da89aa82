#!/usr/bin/env bash
# Generates everything a TLS + node-authentication deployment needs, in the formats Flower 1.10
# uses, so real Flower peers accept them too. Four independent groups of files:
#   Fleet/Driver TLS   certificates/ca.key, ca.crt          self-signed CA (ECDSA P-256, SHA-256)
#                      certificates/server.key, server.pem  server certificate signed by the CA,
#                                                           SANs localhost, ::1, 127.0.0.1
#   ServerApp mTLS     certificates/serverapp-ca.key, serverapp-ca.crt
#                                            a separate CA (ECDSA P-384) that only signs Driver API
#                                            clients: --driver-api-client-ca serverapp-ca.crt
#                      certificates/serverapp.key, serverapp.pem
#                                            the ServerApp's client certificate (clientAuth EKU),
#                                            for flower-server-app --ssl-certfile/--ssl-keyfile
#   SuperLink keys     keys/server_credentials(.pub)        ECDSA P-384 key pair (OpenSSH format)
#   SuperNode keys     keys/client_credentials_I(.pub)      one pair per SuperNode, I = 1..N
#                      keys/client_public_keys.csv          the SuperLink's allowlist
#
# Usage: scripts/generate.sh [--force] [N] [OUTDIR]
#   --force  replace existing files (every peer holding the old ones loses access)
#   N        number of SuperNode key pairs (default 2)
#   OUTDIR   where certificates/ and keys/ go (default: the repository root)
# Environment: FLWR_CERT_DAYS (default 365); FLWR_CERT_KEY=rsa makes the Fleet/Driver CA and
# server keys RSA 4096 (Flower's own recipe) instead of ECDSA P-256 (the default).
#
# Without --force nothing existing is replaced: a group whose files all exist is kept, a group
# with none is generated, and a group with only some of its files is refused (exit 1) before
# anything is written. If every group exists, it exits 1 and generates nothing. Overwriting
# silently would lock out every live SuperNode at once (the SuperLink hot-reloads the allowlist).
set -euo pipefail

force=0
positional=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "generate.sh: unknown option '$arg' (usage: scripts/generate.sh [--force] [N] [OUTDIR])" >&2; exit 2 ;;
    *) positional+=("$arg") ;;
  esac
done
if [ "${#positional[@]}" -gt 2 ]; then
  echo "generate.sh: too many arguments (usage: scripts/generate.sh [--force] [N] [OUTDIR])" >&2
  exit 2
fi
num_clients="${positional[0]:-2}"
if ! [[ "$num_clients" =~ ^[0-9]+$ ]] || [ "$num_clients" -lt 1 ]; then
  echo "generate.sh: N must be a positive integer, got '$num_clients'" >&2
  exit 2
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${positional[1]:-$repo_root}"
days="${FLWR_CERT_DAYS:-365}"
cert_key="${FLWR_CERT_KEY:-ec}"
case "$cert_key" in
  rsa | ec) ;;
  *) echo "generate.sh: FLWR_CERT_KEY must be 'rsa' or 'ec', got '$cert_key'" >&2; exit 2 ;;
esac
for tool in openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "generate.sh: '$tool' is required but not installed" >&2; exit 2; }
done

cert_dir="$out_dir/certificates"
key_dir="$out_dir/keys"
conf="$repo_root/certificates/certificate.conf"

fleet_files=("$cert_dir/ca.key" "$cert_dir/ca.crt" "$cert_dir/server.key" "$cert_dir/server.pem")
serverapp_files=("$cert_dir/serverapp-ca.key" "$cert_dir/serverapp-ca.crt" "$cert_dir/serverapp.key" "$cert_dir/serverapp.pem")
superlink_files=("$key_dir/server_credentials" "$key_dir/server_credentials.pub")
supernode_files=("$key_dir/client_public_keys.csv")
for ((i = 1; i <= num_clients; i++)); do
  supernode_files+=("$key_dir/client_credentials_$i" "$key_dir/client_credentials_$i.pub")
done

# Prints "generate", "keep" or "partial" for the files given.
group_action() {
  local present=0 f
  for f in "$@"; do [ -e "$f" ] && present=$((present + 1)); done
  if [ "$force" -eq 1 ] || [ "$present" -eq 0 ]; then echo generate
  elif [ "$present" -eq "$#" ]; then echo keep
  else echo partial
  fi
}
fleet_action="$(group_action "${fleet_files[@]}")"
serverapp_action="$(group_action "${serverapp_files[@]}")"
superlink_action="$(group_action "${superlink_files[@]}")"
supernode_action="$(group_action "${supernode_files[@]}")"

refused=0
report_partial() {
  local name="$1" f
  shift
  echo "generate.sh: $name is incomplete; refusing to replace the files that exist:" >&2
  for f in "$@"; do
    if [ -e "$f" ]; then echo "  exists:  $f" >&2; else echo "  missing: $f" >&2; fi
  done
  refused=1
}
[ "$fleet_action" = partial ] && report_partial "the Fleet/Driver TLS set" "${fleet_files[@]}"
[ "$serverapp_action" = partial ] && report_partial "the ServerApp client-certificate set" "${serverapp_files[@]}"
[ "$superlink_action" = partial ] && report_partial "the SuperLink key pair" "${superlink_files[@]}"
[ "$supernode_action" = partial ] && report_partial "the SuperNode key set (N=$num_clients)" "${supernode_files[@]}"
if [ "$refused" -eq 1 ]; then
  echo "generate.sh: nothing written. Restore or delete those files, or pass --force to replace all of them" \
    "(SuperNodes and ServerApps holding the old keys or certificates then lose access)." >&2
  exit 1
fi
if [ "$fleet_action$serverapp_action$superlink_action$supernode_action" = keepkeepkeepkeep ]; then
  echo "generate.sh: all certificates and keys already exist in $cert_dir and $key_dir; refusing to overwrite them." >&2
  echo "generate.sh: pass --force to replace them (SuperNodes and ServerApps holding the old ones then lose access)." >&2
  exit 1
fi
mkdir -p "$cert_dir" "$key_dir"

# ECDSA P-256 by default: the SuperLink signs every TLS handshake with server.key, and an
# RSA-4096 signature costs ~60x a P-256 one (it capped registrations at ~50 nodes/s). Python
# peers (grpcio) accept both. FLWR_CERT_KEY=rsa: RSA 4096, as Flower's own recipe.
fleet_key() {
  if [ "$cert_key" = ec ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$1"
  else
    openssl genrsa -out "$1" 4096 2>/dev/null
  fi
}
if [ "$fleet_action" = generate ]; then
  rm -f "${fleet_files[@]}" "$cert_dir/server.csr" "$cert_dir/ca.srl"
  fleet_key "$cert_dir/ca.key"
  openssl req -new -x509 -key "$cert_dir/ca.key" -sha256 -subj "/C=DE/ST=HH/O=CA, Inc." \
    -days "$days" -out "$cert_dir/ca.crt"
  fleet_key "$cert_dir/server.key"
  openssl req -new -key "$cert_dir/server.key" -out "$cert_dir/server.csr" -config "$conf"
  openssl x509 -req -in "$cert_dir/server.csr" -CA "$cert_dir/ca.crt" -CAkey "$cert_dir/ca.key" \
    -CAcreateserial -out "$cert_dir/server.pem" -days "$days" -sha256 \
    -extfile "$conf" -extensions req_ext 2>/dev/null
  chmod 600 "$cert_dir/ca.key" "$cert_dir/server.key"
fi

# A CA of its own for Driver API clients, so --driver-api-client-ca admits exactly the
# ServerApps this CA signed, never a holder of some other certificate from the Fleet CA
# (which may be an organisation's or a public CA). ECDSA keeps generation fast.
if [ "$serverapp_action" = generate ]; then
  rm -f "${serverapp_files[@]}" "$cert_dir/serverapp.csr" "$cert_dir/serverapp-ca.srl"
  openssl ecparam -name secp384r1 -genkey -noout -out "$cert_dir/serverapp-ca.key"
  openssl req -new -x509 -key "$cert_dir/serverapp-ca.key" -sha384 -subj "/O=Flower/CN=flwr ServerApp CA" \
    -days "$days" -out "$cert_dir/serverapp-ca.crt"
  openssl ecparam -name secp384r1 -genkey -noout -out "$cert_dir/serverapp.key"
  openssl req -new -key "$cert_dir/serverapp.key" -subj "/O=Flower/CN=flwr-serverapp" -out "$cert_dir/serverapp.csr"
  openssl x509 -req -in "$cert_dir/serverapp.csr" -CA "$cert_dir/serverapp-ca.crt" -CAkey "$cert_dir/serverapp-ca.key" \
    -CAcreateserial -out "$cert_dir/serverapp.pem" -days "$days" -sha384 \
    -extfile "$conf" -extensions serverapp_ext 2>/dev/null
  chmod 600 "$cert_dir/serverapp-ca.key" "$cert_dir/serverapp.key"
fi

# ECDSA P-384 key pairs in OpenSSH format, no passphrase, empty comment: Flower's own recipe, so
# the allowlist works unchanged with Python SuperNodes made by Flower's tools. (P-256 would make
# the SuperLink's one ECDH per node ~6x cheaper; our code accepts P-256/384/521 keys as long as
# the SuperLink and its SuperNodes share a curve.)
gen_key() {
  rm -f "$1" "$1.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "$1"
}
[ "$superlink_action" = generate ] && gen_key "$key_dir/server_credentials"
if [ "$supernode_action" = generate ]; then
  csv=""
  for ((i = 1; i <= num_clients; i++)); do
    gen_key "$key_dir/client_credentials_$i"
    # OpenSSH writes "type blob " (trailing space with an empty comment); the CSV holds "type blob".
    pub="$(head -n 1 "$key_dir/client_credentials_$i.pub" | awk '{print $1" "$2}')"
    csv="${csv:+$csv,}$pub"
  done
  printf '%s\n' "$csv" >"$key_dir/client_public_keys.csv"
fi

kept=""
[ "$fleet_action" = keep ] && kept="$kept Fleet/Driver TLS,"
[ "$serverapp_action" = keep ] && kept="$kept ServerApp client certificate,"
[ "$superlink_action" = keep ] && kept="$kept SuperLink keys,"
[ "$supernode_action" = keep ] && kept="$kept SuperNode keys,"
echo "generate.sh: wrote $cert_dir and $key_dir ($num_clients client key pairs)${kept:+; kept the existing${kept%,}}"
