#!/usr/bin/env bash
# Worker drain throughput on both backend pairs, each next to raw references
# measured on the same servers in the same run:
#   ./scripts/bench.sh                 # 100,000 orders per backend pair
#   ./scripts/bench.sh --orders 20000  # extra arguments go to `streamstock bench`
# Starts its own Valkey and PostgreSQL (as the tests do), builds in release
# mode, and prints one table per backend pair.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/servers.sh
source "$ROOT/scripts/servers.sh"

[[ -n "${STREAMSTOCK_TEST_VALKEY_URL:-}" ]] || start_valkey
# A PostgreSQL with its default durability (fsync, synchronous commit).
[[ -n "${STREAMSTOCK_TEST_DATABASE_URL:-}" ]] || STREAMSTOCK_PG_DURABLE=1 start_postgres

cd "$ROOT"
cargo build --release --quiet
BIN="$ROOT/target/release/streamstock"
DATA="$WORK/bench-data"
mkdir -p "$DATA"
export RUST_LOG="${RUST_LOG:-warn}"

echo
echo "== embedded log -> SQLite"
"$BIN" bench --data-dir "$DATA" "$@"
echo
echo "== Valkey -> PostgreSQL"
"$BIN" bench --data-dir "$DATA" --valkey-url "$STREAMSTOCK_TEST_VALKEY_URL" \
  --database-url "$STREAMSTOCK_TEST_DATABASE_URL" "$@"
