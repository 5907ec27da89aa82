#!/usr/bin/env bash
# Fails when the committed src/proto differs from what proto/ generates.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx --no-install buf generate --output "$tmp" >/dev/null
node scripts/zero-copy-bytes.js "$tmp/src/proto"
node scripts/strict-decoding.js "$tmp/src/proto"
diff -r "$tmp/src/proto" src/proto
