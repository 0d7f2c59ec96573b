#!/usr/bin/env bash
# The performance table of docs/performance.md: every figure measured in one run, on
# servers this script starts itself (as the tests do), with the release
# binary, the load generator on the same machine.
#   ./scripts/bench.sh           # the whole table (about 15 minutes)
#   ./scripts/bench.sh --quick   # shorter runs, to check the script
#   ./scripts/bench.sh --durability-cost   # replicated against strict, same run (about 6 minutes)
#   ./scripts/bench.sh --listener-cost --before-bin OLD   # the accept loop against OLD (the
#                                  # release before it), TLS and tokens against plain (about 9 minutes)
# Prints progress on stderr and one markdown table on stdout. Needs wrk and
# redis-benchmark (Debian's wrk and redis-tools), installed here if missing.
# `streamstock bench` alone measures the worker's drain on one backend pair.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/servers.sh
source "$ROOT/scripts/servers.sh"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}" >&2
  if [[ $(id -u) == 0 ]]; then
    apt-get install -y --no-install-recommends "${missing[@]}" >&2
  else
    sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
fi

[[ -n "${STREAMSTOCK_TEST_VALKEY_URL:-}" ]] || start_valkey
# A PostgreSQL with its default durability (fsync, synchronous commit).
[[ -n "${STREAMSTOCK_TEST_DATABASE_URL:-}" ]] || STREAMSTOCK_PG_DURABLE=1 start_postgres

cd "$ROOT"
cargo build --release --quiet
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $(date -u +%F)" >&2
python3 "$ROOT/scripts/bench_table.py" --bin "$ROOT/target/release/streamstock" \
  --valkey-url "$STREAMSTOCK_TEST_VALKEY_URL" --database-url "$STREAMSTOCK_TEST_DATABASE_URL" "$@"
