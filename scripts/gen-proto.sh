#!/usr/bin/env bash
# Regenerates src/proto from proto/ with the buf binary shipped in npm and ts-proto.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf src/proto
npx --no-install buf generate
