#!/usr/bin/env python3
"""Every figure of the performance table (docs/performance.md), measured in one run.

Called by scripts/bench.sh, which starts Valkey and PostgreSQL, builds the
release binary and installs wrk and redis-benchmark. Prints progress on
stderr and one markdown table on stdout.

Measured, on the one machine, load generator included:
  - ingest: wrk and `simulate --profile max` (64 connections) posting orders
    to `serve` alone on Valkey + PostgreSQL (a burst into the log while no
    worker runs) and to embedded `all` (its worker included), beside the raw
    XADD rate of the same Valkey (redis-benchmark, 64 clients) and the
    gateway's GET /health floor (wrk);
  - sustained capacity: the highest open-loop rate at which `serve` + one
    `worker` on Valkey + PostgreSQL keep the backlog flat; then 1.5 times
    it with `--max-backlog` at two seconds of it: the share refused, the
    p99 of what was accepted, and no accepted order lost;
  - drain: `streamstock bench` on both pairs, and with two workers on
    Valkey + PostgreSQL;
  - decision latency at 10 and 1,000 requests/s (`simulate --profile
    steady`, the default mix) on both pairs, with each role's peak RSS;
  - start-up to ready, and the binary's size.

With --durability-cost, only the cost of `--durability replicated` against
`strict`: a replica of the Valkey is started, and ingest (wrk into `serve`
alone, three alternating runs each, medians) and decision latency at 10 and
1,000 requests/s are measured under both, on the same primary.
"""

import argparse
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--bin", required=True)
ARGS.add_argument("--valkey-url", required=True)
ARGS.add_argument("--database-url", required=True)
ARGS.add_argument("--quick", action="store_true", help="shorter runs (a smoke test of the script)")
ARGS.add_argument("--durability-cost", action="store_true",
                  help="only the cost of --durability replicated against strict, on a primary with one replica")
ARGS.add_argument("--listener-cost", action="store_true",
                  help="only ingest and decision latency before and after the accept loop, and the cost of TLS and tokens")
ARGS.add_argument("--before-bin", help="with --listener-cost: the binary of the release before, the reference")
OPTS = ARGS.parse_args()

# The bearer token every request of this script sends, when a deployment
# has one (--listener-cost's tokens run).
AUTH = {}
# The benchmark's own self-signed certificate: nothing to verify.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE

INGEST_SECONDS = 5 if OPTS.quick else 15
SUSTAIN_SECONDS = 15 if OPTS.quick else 60
LATENCY_SECONDS = 10 if OPTS.quick else 30
LOW_LOAD_SECONDS = 10 if OPTS.quick else 30
DRAIN_ORDERS = "20000" if OPTS.quick else "100000"
# Rates tried for the sustained capacity, highest first.
LADDER = [9000, 8000, 7000, 6000, 5000, 4000, 3000, 2000]
ROWS = []


def say(*what):
    print("bench:", *what, file=sys.stderr, flush=True)


def row(measurement, pair, figure, reference="", ratio=""):
    ROWS.append((measurement, pair, figure, reference, ratio))
    say(measurement, pair, figure, reference, ratio)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    for name, value in AUTH.items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=10, context=INSECURE) as answer:
        return json.loads(answer.read() or b"null")


def wait_ready(base, timeout=60):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=1, context=INSECURE) as answer:
                if answer.status == 200:
                    return time.monotonic() - start
        except Exception:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{base} not ready after {timeout} s")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Deployment:
    """Roles of one deployment: embedded (a data dir) or Valkey + PostgreSQL
    (a fresh namespace and database)."""

    def __init__(self, pair, **env):
        self.pair = pair
        self.dir = tempfile.mkdtemp(prefix="streamstock-bench-")
        self.processes = {}
        self.env = dict(os.environ, RUST_LOG="warn", STREAMSTOCK_DATA_DIR=self.dir)
        if pair == "valkey":
            name = f"bench_{os.getpid()}_{int(time.time())}"
            self.database = name
            admin = OPTS.database_url
            subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
            self.env.update(
                STREAMSTOCK_VALKEY_URL=OPTS.valkey_url,
                STREAMSTOCK_VALKEY_NAMESPACE=name,
                DATABASE_URL=admin.rsplit("/", 1)[0] + "/" + name,
            )
        self.env.update(env)

    def start(self, role, *args, binary=None, scheme="http"):
        port = free_port()
        process = subprocess.Popen(
            [binary or OPTS.bin, role, "--listen", f"127.0.0.1:{port}", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, f"{role}.log"), "ab"),
        )
        self.processes[role] = process
        base = f"{scheme}://127.0.0.1:{port}"
        return base, wait_ready(base)

    def stop(self, role):
        process = self.processes.pop(role)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    def close(self):
        for role in list(self.processes):
            self.stop(role)
        if self.pair == "valkey":
            subprocess.run(
                ["psql", OPTS.database_url, "-qc", f"DROP DATABASE {self.database} WITH (FORCE)"],
                check=False,
            )
        subprocess.run(["rm", "-rf", self.dir], check=False)


def create_products(base, count=20):
    ids = []
    for i in range(count):
        product = http(
            "POST",
            base + "/api/products",
            {
                "sku": f"BENCH-{i}",
                "name": f"Bench {i}",
                "price": 9.99,
                "initial_stock": 1000000,
                "low_stock_threshold": 1,
                "reorder_quantity": 1000,
            },
        )
        ids.append(product["id"])
    for product_id in ids:  # applied (201 says so, 202 would not)
        while http("GET", f"{base}/api/products/{product_id}").get("status") == "QUEUED":
            time.sleep(0.1)
    return ids


def wrk(url, seconds, product_id=None):
    args = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency"]
    for name, value in AUTH.items():
        args += ["-H", f"{name}: {value}"]
    env = dict(os.environ)
    if product_id:
        script = os.path.join(tempfile.gettempdir(), "streamstock-bench-order.lua")
        with open(script, "w") as f:
            f.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                "wrk.body = '{\"customer_email\":\"a@example.com\",\"items\":[{\"product_id\":\""
                + product_id
                + "\",\"quantity\":1}]}'\n"
            )
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(p):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rate, ms(50), ms(99), int(non_2xx.group(1)) if non_2xx else 0


def simulate_command(base, *args):
    return [OPTS.bin, "simulate", "--target", base, "--report", "json", "--seed", "1", *args]


def simulate(base, *args):
    out = subprocess.run(
        simulate_command(base, *args),
        capture_output=True,
        text=True,
        env=dict(os.environ, RUST_LOG="warn"),
    )
    if out.returncode != 0:
        raise SystemExit(f"simulate failed: {out.stderr}")
    return json.loads(out.stdout)


def fmt_rate(rate):
    return f"{rate:,.0f}/s"


def ingest(pair, role_args):
    deployment = Deployment(pair)
    try:
        if pair == "valkey":
            base, _ = deployment.start("serve")
            deployment.start("worker")
            product = create_products(base)[0]
            deployment.stop("worker")  # a burst into the log, no worker
            label = "Valkey + PostgreSQL, `serve` alone"
        else:
            base, _ = deployment.start("all", *role_args)
            product = create_products(base)[0]
            label = "embedded `all`, worker included"
        rate, p50, p99, bad = wrk(base + "/api/orders", INGEST_SECONDS, product)
        health = wrk(base + "/health", max(5, INGEST_SECONDS // 3))[0]
        row(
            "ingest, wrk, 64 connections (p50 / p99)",
            label,
            f"{fmt_rate(rate)} ({p50:.1f} / {p99:.1f} ms)" + (f", {bad} non-2xx" if bad else ""),
            f"GET /health {fmt_rate(health)}",
            f"{rate / health:.2f}",
        )
        report = simulate(
            base, "--profile", "max", "--concurrency", "64", "--mix", "place=1",
            "--duration", str(INGEST_SECONDS), "--supplier-delay", "1h",
        )
        latency = report["latency"]
        row(
            "ingest, `simulate --profile max`, 64 connections (p50 / p99)",
            label,
            f"{fmt_rate(report['achieved_rate'])} ({latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ms)"
            + (f", {report['errors']} errors" if report["errors"] else ""),
        )
        return rate
    finally:
        deployment.close()


def raw_xadd():
    host, port = OPTS.valkey_url.split("//")[1].rsplit(":", 1)
    payload = "x" * 300
    out = subprocess.run(
        ["redis-benchmark", "-h", host, "-p", port, "-c", "64", "-n", "200000", "-q",
         "XADD", "streamstock-bench-raw", "MAXLEN", "~", "100000", "*", "e", payload],
        capture_output=True, text=True, check=True,
    ).stdout
    rate = float(re.search(r"([\d.]+) requests per second", out.replace("\r", "\n")).group(1))
    subprocess.run(["redis-cli", "-h", host, "-p", port, "DEL", "streamstock-bench-raw"],
                   capture_output=True, check=False)
    return rate


def backlog(base):
    return http("GET", base + "/api/stats").get("backlog") or 0


def trend(samples):
    """Least-squares slope of (time, value) samples, per second."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var if var else 0.0


def sustained():
    """The highest rate of the ladder at which the backlog stays flat."""
    for rate in LADDER:
        deployment = Deployment("valkey")
        try:
            base, _ = deployment.start("serve")
            deployment.start("worker")
            create_products(base)
            say(f"sustained: trying {rate}/s for {SUSTAIN_SECONDS} s")
            sim = subprocess.Popen(
                simulate_command(base, "--profile", "steady", "--rate", str(rate),
                                 "--concurrency", "256", "--mix", "place=1",
                                 "--duration", str(SUSTAIN_SECONDS)),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env=dict(os.environ, RUST_LOG="warn"),
            )
            # The backlog every 2 s after a warm-up; flat when its trend
            # (least squares) grows by less than 1% of the rate per second.
            warm = min(15, SUSTAIN_SECONDS // 4)
            time.sleep(warm)
            samples = []
            while sim.poll() is None and len(samples) < (SUSTAIN_SECONDS - warm) // 2:
                samples.append((time.monotonic(), backlog(base)))
                time.sleep(2)
            report = json.loads(sim.communicate()[0])
            slope = trend(samples)
            flat = slope < rate / 100 and report["errors"] == 0
            start_backlog, end_backlog = samples[0][1], samples[-1][1]
            say(f"sustained {rate}/s: backlog {start_backlog} -> {end_backlog} "
                f"({slope:+.0f}/s), achieved {report['achieved_rate']:.0f}/s, errors {report['errors']}")
            if flat and report["achieved_rate"] >= rate * 0.97:
                latency = report["latency"]
                row(
                    f"sustained capacity, backlog flat for {SUSTAIN_SECONDS} s (request p50 / p99)",
                    "Valkey + PostgreSQL, `serve` + one `worker`",
                    f"{fmt_rate(rate)} ({latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ms), "
                    f"backlog {start_backlog} -> {end_backlog}, trend {slope:+.0f}/s",
                    f"tried {', '.join(str(r) for r in LADDER[:LADDER.index(rate) + 1])}/s",
                )
                return rate
        finally:
            deployment.close()
    row("sustained capacity", "Valkey + PostgreSQL", f"below {LADDER[-1]}/s")
    return None


def beyond_capacity(capacity):
    """1.5 times the sustained capacity offered for SUSTAIN_SECONDS, with
    --max-backlog at two seconds of it: the share refused (503), the p99 of
    what was accepted, and every accepted order decided once the backlog
    drained."""
    rate = int(capacity * 1.5)
    bound = capacity * 2
    deployment = Deployment("valkey", STREAMSTOCK_MAX_BACKLOG=str(bound))
    try:
        base, _ = deployment.start("serve")
        deployment.start("worker")
        create_products(base)
        say(f"beyond capacity: offering {rate}/s for {SUSTAIN_SECONDS} s, --max-backlog {bound}")
        report = simulate(base, "--profile", "steady", "--rate", str(rate),
                          "--concurrency", "256", "--mix", "place=1",
                          "--duration", str(SUSTAIN_SECONDS))
        refused = report["requests"].get("place 503", 0)
        share = refused / max(report["requests_total"], 1)
        accepted = report["orders_accepted"]
        deadline = time.monotonic() + 300
        while backlog(base) > 0 and time.monotonic() < deadline:
            time.sleep(1)
        decided = sum(n for status, n in http("GET", base + "/api/stats")["orders_by_status"].items()
                      if status != "pending")
        latency = report["accepted_latency"] or report["latency"]
        say(f"beyond capacity: {accepted} accepted, {refused} refused, {decided} decided, "
            f"{report['errors']} errors")
        row(
            f"offered 1.5x capacity for {SUSTAIN_SECONDS} s, `--max-backlog` {bound:,} (accepted p50 / p99)",
            "Valkey + PostgreSQL, `serve` + one `worker`",
            f"{fmt_rate(rate)} offered: {share:.0%} refused (503), accepted "
            f"{latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ms",
            f"{accepted:,} accepted, {decided:,} decided after the drain",
            "none lost" if decided >= accepted else f"{accepted - decided} missing",
        )
    finally:
        deployment.close()


def decision_latency(pair, rate):
    deployment = Deployment(pair)
    try:
        if pair == "valkey":
            base, _ = deployment.start("serve")
            deployment.start("worker")
            label = "Valkey + PostgreSQL, `serve` + `worker`"
        else:
            base, _ = deployment.start("all", "--profile", "none")
            label = "embedded `all`"
        create_products(base)
        report = simulate(
            base, "--profile", "steady", "--rate", str(rate), "--concurrency", "256",
            "--duration", str(LATENCY_SECONDS if rate >= 100 else LOW_LOAD_SECONDS),
            "--supplier-delay", "2s",
        )
        rss = {role: peak_rss_mb(p.pid) for role, p in deployment.processes.items()}
        decision, request = report["decision_latency"], report["latency"]
        row(
            f"decision latency at {rate:,} requests/s, POST to decision heard (p50 / p99)",
            label,
            f"{decision['p50_ms']:.1f} / {decision['p99_ms']:.1f} ms",
            f"request {request['p50_ms']:.1f} / {request['p99_ms']:.1f} ms; "
            f"{report['decisions_missing']} not heard",
        )
        if rate >= 100:
            row(
                f"peak RSS at {rate:,} requests/s",
                label,
                ", ".join(f"{role} {mb:.0f} MiB" for role, mb in rss.items()),
            )
    finally:
        deployment.close()


def startup():
    for pair in ["embedded", "valkey"]:
        deployment = Deployment(pair)
        try:
            if pair == "valkey":
                _, serve = deployment.start("serve")
                _, worker = deployment.start("worker")
                row("start-up to ready", "Valkey + PostgreSQL",
                    f"serve {serve * 1000:.0f} ms, worker {worker * 1000:.0f} ms")
            else:
                _, ready = deployment.start("all", "--profile", "none")
                row("start-up to ready", "embedded `all`", f"{ready * 1000:.0f} ms")
        finally:
            deployment.close()


def drain():
    """`streamstock bench` on both pairs with one worker; on Valkey +
    PostgreSQL with two as well (tasks of one process on these cores)."""
    one_worker = None
    valkey = ["--valkey-url", OPTS.valkey_url, "--database-url", OPTS.database_url]
    for pair, extra, workers in [
        ("embedded log -> SQLite", [], 1),
        ("Valkey -> PostgreSQL", valkey, 1),
        ("Valkey -> PostgreSQL", valkey, 2),
    ]:
        data = tempfile.mkdtemp(prefix="streamstock-bench-drain-")
        out = subprocess.run(
            [OPTS.bin, "bench", "--data-dir", data, "--orders", DRAIN_ORDERS,
             "--workers", str(workers), *extra],
            capture_output=True, text=True, check=True, env=dict(os.environ, RUST_LOG="warn"),
        ).stdout
        subprocess.run(["rm", "-rf", data], check=False)

        def rate(prefix):
            for line in out.splitlines():
                if line.startswith(prefix):
                    return float(line.split()[-1])
            raise SystemExit(f"no `{prefix}` in the bench output:\n{out}")

        orders, raw = rate("worker drain: orders"), rate("raw database inserts")
        if workers == 1:
            row("drain, one worker, orders/s", pair, fmt_rate(orders),
                f"raw single-row inserts {fmt_rate(raw)}", f"{orders / raw:.2f}")
            one_worker = orders
        else:
            row(f"drain, {workers} workers, orders/s", pair, fmt_rate(orders),
                f"one worker {fmt_rate(one_worker)}", f"{orders / one_worker:.2f}")


class Replica:
    """A replica of the benchmark's Valkey, with AOF fsynced on every write
    (WAITAOF counts replicas whose AOF has the write)."""

    def __init__(self):
        host, port = OPTS.valkey_url.split("//")[1].rsplit(":", 1)
        self.dir = tempfile.mkdtemp(prefix="streamstock-bench-replica-")
        self.port = free_port()
        server = os.environ.get("STREAMSTOCK_TEST_VALKEY_SERVER", "valkey-server")
        self.process = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--replicaof", host, port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            info = subprocess.run(["redis-cli", "-p", str(self.port), "INFO", "replication"],
                                  capture_output=True, text=True).stdout
            if "master_link_status:up" in info:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark's Valkey replica never synced")
            time.sleep(0.1)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        subprocess.run(["rm", "-rf", self.dir], check=False)


def serve_ingest(env=None, binary=None, args=(), scheme="http"):
    """Orders/s and p50 / p99 ms into `serve` alone (no worker), wrk; the
    deployment gets `env`, `serve` runs `binary` (default --bin) with `args`."""
    deployment = Deployment("valkey", **(env or {}))
    try:
        base, _ = deployment.start("serve", *args, binary=binary, scheme=scheme)
        deployment.start("worker", binary=binary)
        product = create_products(base)[0]
        deployment.stop("worker")
        rate, p50, p99, bad = wrk(base + "/api/orders", INGEST_SECONDS, product)
        if bad:
            raise SystemExit(f"{bad} non-2xx answers from {binary or OPTS.bin} {list(args)} {env or ''}")
        return rate, p50, p99
    finally:
        deployment.close()


def serve_decisions(rate, env=None, binary=None):
    """Decision and request latency (p50, p99 of each, ms) of `serve` +
    `worker` under `simulate --profile steady --rate rate`."""
    deployment = Deployment("valkey", **(env or {}))
    try:
        base, _ = deployment.start("serve", binary=binary)
        deployment.start("worker", binary=binary)
        create_products(base)
        report = simulate(
            base, "--profile", "steady", "--rate", str(rate), "--concurrency", "256",
            "--duration", str(LATENCY_SECONDS), "--supplier-delay", "2s",
        )
        decision, request = report["decision_latency"], report["latency"]
        return decision["p50_ms"], decision["p99_ms"], request["p50_ms"], request["p99_ms"]
    finally:
        deployment.close()


def durability_env(durability):
    return {"STREAMSTOCK_DURABILITY": durability, "STREAMSTOCK_MIN_REPLICAS": "1"}


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def durability_cost():
    """strict and replicated, alternating, on the same primary (with one
    replica attached for both): medians of three runs each."""
    replica = Replica()
    try:
        runs = {"strict": [], "replicated": []}
        for attempt in range(3):
            for durability in ["strict", "replicated"]:
                figures = serve_ingest(durability_env(durability))
                say(f"ingest {durability} run {attempt + 1}: {figures[0]:.0f}/s "
                    f"({figures[1]:.1f} / {figures[2]:.1f} ms)")
                runs[durability].append(figures)
        strict, replicated = (
            tuple(median([r[i] for r in runs[d]]) for i in range(3)) for d in ["strict", "replicated"]
        )
        row("ingest, wrk, 64 connections, median of 3 (p50 / p99)", "Valkey + replica, `serve` alone",
            f"replicated {fmt_rate(replicated[0])} ({replicated[1]:.1f} / {replicated[2]:.1f} ms)",
            f"strict {fmt_rate(strict[0])} ({strict[1]:.1f} / {strict[2]:.1f} ms)",
            f"{replicated[0] / strict[0]:.2f}")
        for rate in [10, 1000]:
            decisions = {d: serve_decisions(rate, durability_env(d))[:2] for d in ["strict", "replicated"]}
            row(f"decision latency at {rate:,} requests/s (p50 / p99)", "Valkey + replica, `serve` + `worker`",
                "replicated {:.1f} / {:.1f} ms".format(*decisions["replicated"]),
                "strict {:.1f} / {:.1f} ms".format(*decisions["strict"]),
                f"{decisions['replicated'][0] / decisions['strict'][0]:.2f}")
    finally:
        replica.close()


def listener_cost():
    """The accept loop against the release before it (axum::serve), and
    TLS and token checks against plain, alternating, medians of three."""
    if not OPTS.before_bin:
        raise SystemExit("--listener-cost needs --before-bin (the previous release's binary)")
    work = tempfile.mkdtemp(prefix="streamstock-bench-tls-")
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-days", "1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    token = "bench-" + os.urandom(16).hex()
    tokens = os.path.join(work, "tokens.toml")
    with open(tokens, "w") as f:
        digest = subprocess.run(["sha256sum"], input=token, capture_output=True, text=True).stdout.split()[0]
        f.write(f'[[token]]\nname = "bench"\nscope = "write"\nsha256 = "{digest}"\n')
    variants = [
        ("before: axum::serve", OPTS.before_bin, [], "http", False),
        ("after: the accept loop", OPTS.bin, [], "http", False),
        ("after, TLS (ECDSA P-256)", OPTS.bin, ["--tls-cert", cert, "--tls-key", key], "https", False),
        ("after, a scoped token", OPTS.bin, ["--tokens-file", tokens], "http", True),
    ]
    runs = {name: [] for name, *_ in variants}
    try:
        for attempt in range(3):
            for name, binary, args, scheme, with_token in variants:
                AUTH.clear()
                if with_token:
                    AUTH["Authorization"] = f"Bearer {token}"
                figures = serve_ingest(binary=binary, args=args, scheme=scheme)
                AUTH.clear()
                say(f"ingest {name}, run {attempt + 1}: {figures[0]:.0f}/s ({figures[1]:.1f} / {figures[2]:.1f} ms)")
                runs[name].append(figures)
        medians = {name: tuple(median([r[i] for r in runs[name]]) for i in range(3)) for name in runs}
        before = medians[variants[0][0]][0]
        plain = medians[variants[1][0]][0]
        for name, *_ in variants:
            rate, p50, p99 = medians[name]
            reference, ratio = ("", "")
            if name != variants[0][0]:
                against = before if name == variants[1][0] else plain
                reference = "before" if name == variants[1][0] else "after, plain"
                ratio = f"{rate / against:.2f} of {reference}"
            row("ingest, wrk, 64 connections, median of 3 (p50 / p99)", f"Valkey, `serve` alone: {name}",
                f"{fmt_rate(rate)} ({p50:.1f} / {p99:.1f} ms)", "", ratio)
        decisions = {"before": [], "after": []}
        for attempt in range(2):
            for name, binary in [("before", OPTS.before_bin), ("after", OPTS.bin)]:
                figures = serve_decisions(1000, binary=binary)
                say(f"decision latency {name}, run {attempt + 1}: {figures[0]:.1f} / {figures[1]:.1f} ms "
                    f"(requests {figures[2]:.1f} / {figures[3]:.1f} ms)")
                decisions[name].append(figures)
        both = {name: tuple(median([r[i] for r in decisions[name]]) for i in range(4)) for name in decisions}
        row("decision latency at 1,000 requests/s, median of 2 (p50 / p99)", "Valkey, `serve` + `worker`",
            "after {:.1f} / {:.1f} ms (requests {:.1f} / {:.1f})".format(*both["after"]),
            "before {:.1f} / {:.1f} ms (requests {:.1f} / {:.1f})".format(*both["before"]),
            f"{both['after'][0] / both['before'][0]:.2f}")
    finally:
        subprocess.run(["rm", "-rf", work], check=False)


def main():
    say("binary", OPTS.bin)
    if OPTS.listener_cost:
        listener_cost()
        print_table()
        return
    if OPTS.durability_cost:
        durability_cost()
        print_table()
        return
    startup()
    xadd = raw_xadd()
    serve_rate = ingest("valkey", [])
    row("raw XADD, redis-benchmark, 64 clients", "the same Valkey (appendfsync always)",
        fmt_rate(xadd), "", f"`serve` ingest / raw: {serve_rate / xadd:.2f}")
    ingest("embedded", ["--profile", "none"])
    capacity = sustained()
    if capacity:
        beyond_capacity(capacity)
    for pair in ["embedded", "valkey"]:
        decision_latency(pair, 10)
        decision_latency(pair, 1000)
    drain()
    size = os.path.getsize(OPTS.bin) / 1024 / 1024
    stripped_path = os.path.join(tempfile.gettempdir(), "streamstock-bench-stripped")
    subprocess.run(["strip", "-o", stripped_path, OPTS.bin], check=True)
    stripped = os.path.getsize(stripped_path) / 1024 / 1024
    os.remove(stripped_path)
    row("binary size", "", f"{size:.0f} MiB with line tables, {stripped:.0f} MiB stripped")
    print_table()


def print_table():
    print()
    print("| measurement | backend pair | figure | reference (same run) | ratio |")
    print("|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


main()
