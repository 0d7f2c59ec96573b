#!/usr/bin/env bash
# Runs StreamStock's whole test suite against real servers it starts itself:
# a Valkey (AOF on, fsync always), a Valkey Cluster of three primaries and a
# PostgreSQL, each on free loopback ports in a temporary folder, torn down on
# exit. Servers given by STREAMSTOCK_TEST_VALKEY_URL,
# STREAMSTOCK_TEST_VALKEY_CLUSTER_URL / STREAMSTOCK_TEST_DATABASE_URL are
# used as they are. A server that cannot be found or installed is an error, never a skip.
# Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/servers.sh
source "$ROOT/scripts/servers.sh"

ensure_chromium() {
  local bin="${STREAMSTOCK_TEST_CHROMIUM:-}"
  [[ -z "$bin" ]] && bin="$(command -v chromium || command -v chromium-browser || true)"
  if [[ -z "$bin" && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing Chromium from Debian's packages (browser tests)"
    (apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; }) || true
    bin="$(command -v chromium || true)"
  fi
  if [[ -z "$bin" ]]; then
    log "error: Chromium not found for the browser tests. Install it with: apt-get install chromium"
    return 1
  fi
  export STREAMSTOCK_TEST_CHROMIUM="$bin"
  log "Chromium: $("$bin" --version 2>/dev/null | head -n1)"
}

ensure_systemd_analyze() {
  # The unit files in deploy/systemd are checked with systemd-analyze verify.
  if ! command -v systemd-analyze >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing systemd from Debian's packages (systemd-analyze for the unit files)"
    (apt-get install -y -q systemd >&2 || { apt-get update -q >&2 && apt-get install -y -q systemd >&2; }) || true
  fi
  if ! command -v systemd-analyze >/dev/null; then
    log "error: systemd-analyze not found for the unit-file tests. Install it with: apt-get install systemd"
    return 1
  fi
}

ensure_stunnel() {
  # The TLS test puts stunnel in front of Valkey (PyPI's valkey-server has no TLS).
  if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null \
    && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing stunnel4 from Debian's packages (a TLS terminator for the TLS test)"
    (apt-get install -y -q stunnel4 >&2 || { apt-get update -q >&2 && apt-get install -y -q stunnel4 >&2; }) || true
  fi
  if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
    log "error: stunnel not found for the TLS test. Install it with: apt-get install stunnel4"
    return 1
  fi
}

ensure_fault_tools() {
  # The disk-fault tests inject fsync errors with strace and fill a small
  # loop-mounted ext4 (mkfs.ext4 from e2fsprogs, mount from util-linux);
  # the partition tests cut hosts apart in network namespaces (ip, from
  # iproute2).
  local missing=()
  command -v strace >/dev/null || missing+=(strace)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  command -v ip >/dev/null || missing+=(iproute2)
  if [[ ${#missing[@]} -gt 0 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} from Debian's packages (the disk-fault tests)"
    (apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }) || true
  fi
  if ! command -v strace >/dev/null || ! command -v mkfs.ext4 >/dev/null || ! command -v ip >/dev/null; then
    log "error: the fault tests need strace, mkfs.ext4 and ip. Install them with: apt-get install strace e2fsprogs iproute2"
    return 1
  fi
}

ensure_web_tools() {
  # The component tests (Vitest) and the browser test (playwright-core)
  # run from web/node_modules: install it as build.rs would, when missing or
  # older than the lockfile.
  if [[ ! -f "$ROOT/web/node_modules/.package-lock.json" \
        || "$ROOT/web/package-lock.json" -nt "$ROOT/web/node_modules/.package-lock.json" ]]; then
    log "installing the dashboard's npm packages"
    (cd "$ROOT/web" && npm ci --no-audit --no-fund >&2)
  fi
}

ensure_chromium
ensure_systemd_analyze
ensure_stunnel
ensure_fault_tools
ensure_web_tools
if [[ -n "${STREAMSTOCK_TEST_VALKEY_URL:-}" ]]; then
  log "using Valkey at $STREAMSTOCK_TEST_VALKEY_URL"
  [[ -n "${STREAMSTOCK_TEST_VALKEY_SERVER:-}" ]] || export STREAMSTOCK_TEST_VALKEY_SERVER="$(find_valkey_server)"
else
  start_valkey
fi
if [[ -n "${STREAMSTOCK_TEST_VALKEY_CLUSTER_URL:-}" ]]; then
  log "using the Valkey Cluster at $STREAMSTOCK_TEST_VALKEY_CLUSTER_URL"
else
  start_valkey_cluster
fi
if [[ -n "${STREAMSTOCK_TEST_DATABASE_URL:-}" ]]; then log "using PostgreSQL at $STREAMSTOCK_TEST_DATABASE_URL"; else start_postgres; fi

cd "$ROOT"
log "the dashboard's component tests (Vitest)"
(cd "$ROOT/web" && npm test --silent)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  log "cargo-nextest not found; using cargo test"
  cargo test --no-fail-fast "$@"
fi
