#!/usr/bin/env bash
# The fault scenarios, run again and again, and their histories checked
# (tests/common/history.rs): a Valkey Cluster primary killed under load; a
# failover to replicas that missed the last appends, on the cluster and
# with Sentinel (replicated durability, and strict as its negative
# control); a network partition that cuts a cluster primary and a gateway
# off (the same pair); a worker cut off; a PostgreSQL failover to a
# synchronous standby (an asynchronous one as its control); a power cut at
# every fsync of the embedded log (no journal fsync as its control); every
# fsync failing (skipped fsyncs as its control) and a full disk; a Valkey
# primary lost with its disk, one append at a time (replicated, strict as
# its control); a worker cut off (one that keeps its expired leases as its
# control); a worker reading entries a frozen replica lacks (one that
# skips the replicas' confirmation as its control). Each run of a scenario prints one CHAOS line; this gathers
# them into one table.
#   ./scripts/chaos.sh --runs 30      # about 5.5 minutes a run on 2 cores
# Starts its Valkey and PostgreSQL as the tests do (scripts/servers.sh);
# the scenarios start their own clusters, replicas and standbys.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/servers.sh
source "$ROOT/scripts/servers.sh"

runs=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
  esac
done

command -v strace >/dev/null || { log "error: the power-loss scenario needs strace (apt-get install strace)"; exit 1; }
command -v ip >/dev/null || { log "error: the partition scenario needs ip (apt-get install iproute2)"; exit 1; }
[[ $(id -u) -eq 0 ]] || { log "error: the partition scenario makes network namespaces: run as root"; exit 1; }
[[ -n "${STREAMSTOCK_TEST_VALKEY_URL:-}" ]] || start_valkey
[[ -n "${STREAMSTOCK_TEST_VALKEY_SERVER:-}" ]] || export STREAMSTOCK_TEST_VALKEY_SERVER="$(find_valkey_server)"
[[ -n "${STREAMSTOCK_TEST_DATABASE_URL:-}" ]] || start_postgres

cd "$ROOT"
# In servers.sh's folder: its exit trap removes it with the servers it
# stops (a trap of our own would replace that one and leave them running).
lines="$WORK/chaos-lines"
: > "$lines"
# A fresh clone has no target/ yet: the runs' logs go there.
mkdir -p "$ROOT/target"
for run in $(seq 1 "$runs"); do
  log "run $run of $runs"
  # A failing scenario still prints its CHAOS line: the table says what
  # went wrong, and the loop goes on.
  # Each run's whole output is kept: a scenario that fails before its
  # check prints no CHAOS line, and its log says why.
  run_log="$ROOT/target/chaos-run-$run.log"
  cargo nextest run --no-fail-fast --no-capture \
    -E 'test(/^(failover|partition|pg_failover|power_loss|disk_faults)::/) | test(/^replication::(replicated_acknowledges|a_worker_applies_only)/)' > "$run_log" 2>&1 || true
  grep '^CHAOS ' "$run_log" | sed 's/^CHAOS //' >> "$lines" || true
  if grep -q '^ *FAIL \[' "$run_log"; then
    log "run $run: failed tests (see $run_log):"
    grep '^ *FAIL \[' "$run_log" | sort -u >&2
  fi
done

python3 - "$lines" "$runs" <<'PY'
import json, re, statistics, sys
path, runs = sys.argv[1], int(sys.argv[2])
by = {}
for line in open(path):
    v = json.loads(line)
    name = re.sub(r" \(\d+ cuts\)$", "", v["scenario"])
    by.setdefault((name, v["control"]), []).append(v)
def med(values):
    values = [x for x in values if x is not None]
    return f"{statistics.median(values):,.0f}" if values else "-"
def e_column(vs):
    checked = [v for v in vs if v.get("read_model_lost") is not None]
    if not checked:
        return "-"
    lost = sum(v["read_model_lost"] for v in checked)
    reported = sum(v.get("reported_lost") or 0 for v in checked)
    return f"{lost:,} ({reported:,})"
if not by:
    print("no scenario reported a CHAOS line: see target/chaos-run-*.log", file=sys.stderr)
    sys.exit(1)
print(f"\n{runs} run(s) of each scenario\n")
print("| scenario | runs | orders | acknowledged | lost | duplicated | unknown | out of log order | invariants broken | stale commits | applied, lost by the log (reported) | recovery ms (median) | p99 during fault ms (median) | result |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
failed = False
for (name, control), vs in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    total = lambda k: sum(v[k] for v in vs)
    # Any event the read model holds and the log lost is an anomaly: under
    # replicated durability workers apply only entries the replicas have.
    lost_by_log = lambda v: v.get("read_model_lost") or 0
    unreported = lambda v: max(0, lost_by_log(v) - (v.get("reported_lost") or 0))
    anomalous = [v for v in vs if v["lost"] + v["duplicated"] + v["out_of_order"]
                 + v["invariant_violations"] + v.get("stale_commits", 0)
                 + lost_by_log(v) + unreported(v) + v.get("acknowledged_undurable", 0)
                 + v.get("held_past_lease", 0) + v.get("applied_unreplicated", 0) > 0]
    # The audit must report what the log lost, control or not.
    if any(unreported(v) for v in vs):
        failed = True
    if control:
        result = f"negative control: anomaly in {len(anomalous)} of {len(vs)} runs"
        failed |= not anomalous
    else:
        result = "nothing lost or duplicated" if not anomalous else f"ANOMALY in {len(anomalous)} of {len(vs)} runs"
        failed |= bool(anomalous)
    if len(vs) < runs:
        # A run that failed before its check printed nothing: it counts as a
        # failure, whatever the others showed.
        result += f"; only {len(vs)} of {runs} runs reported"
        failed = True
    print(f"| {name} | {len(vs)} | {total('orders'):,} | {total('acknowledged'):,} | {total('lost'):,} | "
          f"{total('duplicated'):,} | {total('unknown'):,} | {total('out_of_order'):,} | "
          f"{total('invariant_violations'):,} | {sum(v.get('stale_commits', 0) for v in vs):,} | "
          f"{e_column(vs)} | "
          f"{med([v['recovery_ms'] for v in vs])} | "
          f"{med([v['p99_during_fault_ms'] for v in vs])} | {result} |")
sys.exit(1 if failed else 0)
PY
