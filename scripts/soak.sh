#!/usr/bin/env bash
# Soak run: a steady rate of orders through the HTTP API for a while, on
# each backend pair, sampling every 10 s what must stay flat for a service
# that runs for months, then a table and a verdict per figure.
#
#   ./scripts/soak.sh                          # 10 min per pair at 2,000 orders/s
#   ./scripts/soak.sh --minutes 3 --rate 1000  # shorter, gentler
#   ./scripts/soak.sh --only embedded          # or: --only valkey
#
# Sampled: the RSS of every streamstock process (the load generator,
# `streamstock simulate --rate`, is listed apart), Valkey's used_memory, the
# log's bytes on disk (embedded segments; Valkey's AOF), the event archive's
# size, and the backlog the workers have not processed yet. Each figure is
# shown at minute 2 and at the end (last at most 1.2 times minute 2 is the
# simple rule), but none of them is smooth: RSS follows the batch sizes of
# the moment, log segments are deleted whole, Valkey's AOF is rewritten.
# So the verdict compares peaks: flat when the peak after minute 5 is at
# most 1.2 times the peak of minutes 1-5 (runs of 5 minutes or less fall
# back to the simple rule). The archive is expected to grow: it is the
# history.
# Starts its own Valkey and PostgreSQL (durable, as the benchmark's) and
# tears everything down on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/servers.sh
source "$ROOT/scripts/servers.sh"

MINUTES=10
RATE=2000
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--rate ORDERS_PER_S] [--only embedded|valkey]" >&2; exit 2 ;;
  esac
done
SECONDS_TOTAL=$((MINUTES * 60))
EVERY=10

cd "$ROOT"
cargo build --release --quiet
BIN="$ROOT/target/release/streamstock"
export RUST_LOG="${RUST_LOG:-warn}"
PIDS=()
stop_roles() { # the last started first: the load before the servers
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  PIDS=()
}
trap 'stop_roles; cleanup' EXIT INT TERM

rss_mb() { # pid
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"
}
bytes_mb() { # path...
  du -scb "$@" 2>/dev/null | tail -n1 | awk '{ printf "%.1f", $1 / 1048576 }'
}
backlog() { # base url
  curl -sf "$1/api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backlog"))' 2>/dev/null || echo "-"
}
wait_ready() { # base url
  for _ in $(seq 1 300); do curl -sf "$1/ready" >/dev/null && return 0; sleep 0.1; done
  log "error: $1 never became ready"; return 1
}

# Prints the samples (a file of `t name=value ...` lines) as a table, then
# the verdict for each figure named in $2 (space-separated), and the
# targets: `name<=MB` pairs in $3.
report() { # samples-file flat-figures targets
  python3 - "$@" <<'PY'
import sys
path, flat, targets = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = []
for line in open(path):
    t, *pairs = line.split()
    rows.append((int(t), dict(p.split("=", 1) for p in pairs)))
if not rows:
    sys.exit("no samples")
names = list(rows[0][1])
print("| t (s) | " + " | ".join(names) + " |")
print("|---:|" + "---:|" * len(names))
for t, values in rows:
    print(f"| {t} | " + " | ".join(values.get(n, "-") for n in names) + " |")
def num(v):
    try: return float(v)
    except ValueError: return None
at2 = min(rows, key=lambda r: abs(r[0] - 120))[1]
last = rows[-1][1]
def ratio(a, b):
    return b / a if a > 0 else (1.0 if b == 0 else float("inf"))
print()
for n in flat:
    a, b = num(at2.get(n, "-")), num(last.get(n, "-"))
    if a is None or b is None:
        print(f"{n}: not measured"); continue
    early = max(((num(v.get(n, "-")) or 0) for t, v in rows if 60 <= t <= 300), default=0)
    late = max(((num(v.get(n, "-")) or 0) for t, v in rows if t > 300), default=0)
    line = f"{n}: {a:.1f} at minute 2, {b:.1f} at the end (x{ratio(a, b):.2f})"
    if late:
        r = ratio(early, late)
        line += f"; peak {early:.1f} in minutes 1-5, {late:.1f} after (x{r:.2f}) -> {'flat' if r <= 1.2 else 'GREW'}"
    else:
        line += f" -> {'flat' if ratio(a, b) <= 1.2 else 'GREW'}"
    print(line)
for target in targets:
    n, limit = target.split("<=")
    peak = max((num(v.get(n, "-")) or 0) for _, v in rows)
    print(f"{n}: peak {peak:.1f} MB, target <= {limit} MB -> {'met' if peak <= float(limit) else 'MISSED'}")
PY
}

soak_embedded() {
  local data="$WORK/soak-embedded" port base samples all sim
  mkdir -p "$data"
  port="$(free_port)"; base="http://127.0.0.1:$port"
  "$BIN" all --profile none --listen "127.0.0.1:$port" --data-dir "$data" &
  all=$!; PIDS+=("$all")
  wait_ready "$base"
  # The load runs until the last sample is taken (stop_roles ends it).
  "$BIN" simulate --target "$base" --rate "$RATE" &
  sim=$!; PIDS+=("$sim")
  samples="$WORK/embedded.samples"; : >"$samples"
  log "embedded: $RATE orders/s for $MINUTES min, sampling every $EVERY s"
  for ((t = EVERY; t <= SECONDS_TOTAL; t += EVERY)); do
    sleep "$EVERY"
    echo "$t all_rss_mb=$(rss_mb "$all") simulate_rss_mb=$(rss_mb "$sim") log_mb=$(bytes_mb "$data/log") archive_mb=$(bytes_mb "$data"/streamstock.db*) backlog=$(backlog "$base")" >>"$samples"
    tail -n1 "$samples" >&2
  done
  stop_roles
  echo; echo "== embedded log + SQLite: streamstock all, $RATE orders/s, $MINUTES min"
  report "$samples" "all_rss_mb log_mb" "all_rss_mb<=150"
}

soak_valkey() {
  local port base samples serve worker sim database valkey_port
  [[ -n "${STREAMSTOCK_TEST_VALKEY_URL:-}" ]] || start_valkey
  [[ -n "${STREAMSTOCK_TEST_DATABASE_URL:-}" ]] || STREAMSTOCK_PG_DURABLE=1 start_postgres
  valkey_port="${STREAMSTOCK_TEST_VALKEY_URL##*:}"
  local cli
  cli="$(dirname "$STREAMSTOCK_TEST_VALKEY_SERVER")/valkey-cli"
  [[ -x "$cli" ]] || cli="$(command -v valkey-cli || command -v redis-cli || true)"
  database="${STREAMSTOCK_TEST_DATABASE_URL%/*}/soak_$$"
  psql "$STREAMSTOCK_TEST_DATABASE_URL" -qc "CREATE DATABASE soak_$$" >/dev/null
  export STREAMSTOCK_VALKEY_URL="$STREAMSTOCK_TEST_VALKEY_URL" DATABASE_URL="$database"
  export STREAMSTOCK_VALKEY_NAMESPACE="soak-$$"
  port="$(free_port)"; base="http://127.0.0.1:$port"
  "$BIN" serve --listen "127.0.0.1:$port" &
  serve=$!; PIDS+=("$serve")
  "$BIN" worker --listen "127.0.0.1:$(free_port)" &
  worker=$!; PIDS+=("$worker")
  wait_ready "$base"
  "$BIN" simulate --target "$base" --rate "$RATE" &
  sim=$!; PIDS+=("$sim")
  samples="$WORK/valkey.samples"; : >"$samples"
  log "Valkey + PostgreSQL: $RATE orders/s for $MINUTES min, sampling every $EVERY s"
  for ((t = EVERY; t <= SECONDS_TOTAL; t += EVERY)); do
    sleep "$EVERY"
    local used aof archive
    used="$("$cli" -p "$valkey_port" info memory | awk -F: '/^used_memory:/ { printf "%.1f", $2 / 1048576 }')"
    aof="$(bytes_mb "$WORK/valkey")"
    archive="$(psql "$database" -Atc "SELECT round(pg_total_relation_size('event_archive') / 1048576.0, 1)")"
    echo "$t serve_rss_mb=$(rss_mb "$serve") worker_rss_mb=$(rss_mb "$worker") simulate_rss_mb=$(rss_mb "$sim") valkey_used_mb=$used valkey_aof_mb=$aof archive_mb=$archive backlog=$(backlog "$base")" >>"$samples"
    tail -n1 "$samples" >&2
  done
  stop_roles
  echo; echo "== Valkey + PostgreSQL: serve + worker, $RATE orders/s, $MINUTES min"
  report "$samples" "serve_rss_mb worker_rss_mb valkey_used_mb valkey_aof_mb" "serve_rss_mb<=100 worker_rss_mb<=100"
  unset STREAMSTOCK_VALKEY_URL DATABASE_URL STREAMSTOCK_VALKEY_NAMESPACE
}

[[ -z "$ONLY" || "$ONLY" == embedded ]] && soak_embedded
[[ -z "$ONLY" || "$ONLY" == valkey ]] && soak_valkey
