#!/usr/bin/env bash
# Regenerates src/proto from proto/ with the buf binary shipped in npm and ts-proto, then makes
# large `bytes` fields decode without a copy (scripts/zero-copy-bytes.js) and decoding as strict as
# Python's protobuf (scripts/strict-decoding.js).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf src/proto
npx --no-install buf generate
node scripts/zero-copy-bytes.js src/proto
node scripts/strict-decoding.js src/proto
