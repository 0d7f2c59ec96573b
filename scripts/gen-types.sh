#!/usr/bin/env bash
# Regenerates the API contract files from the code, after a change to a
# route, a request or a response type:
#   web/openapi.json  the gateway's OpenAPI document (`streamstock openapi`)
#   web/src/api.ts    the dashboard's TypeScript types (openapi-typescript)
# tests/openapi.rs fails while either is out of date.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The dashboard is built from api.ts: skip it while api.ts is being remade.
STREAMSTOCK_SKIP_WEB_BUILD=1 cargo build --quiet
./target/debug/streamstock openapi > web/openapi.json
(cd web && { [[ -d node_modules ]] || npm ci --no-audit --no-fund; } && npm run --silent types)
echo "web/openapi.json and web/src/api.ts regenerated"
