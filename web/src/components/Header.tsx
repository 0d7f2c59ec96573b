import { useEffect, useState } from "react";
import { count, duration } from "../lib/format";
import type { Connection } from "../useDashboard";
import type { Pipeline } from "../types";
import { TokenBox } from "./TokenBox";

// The pipeline at a glance: the live connection, the backends, version and
// uptime, the workers with the partitions each holds, the total lag and
// the dead letters (a link to their view).
export function Header({
  pipeline,
  connection,
  reconnectedAt,
}: {
  pipeline: Pipeline | null;
  connection: Connection;
  reconnectedAt: number | null;
}) {
  const now = useNow();
  const recentlyReconnected = reconnectedAt != null && now - reconnectedAt < 10_000;
  return (
    <header className="header">
      <div className="title">
        <h1>StreamStock</h1>
        <span className={`connection ${connection}`} data-testid="connection">
          {connection}
        </span>
        {recentlyReconnected && connection === "live" && (
          <span className="notice" role="status" data-testid="reconnected">
            reconnected to the server
          </span>
        )}
        <TokenBox />
      </div>
      {pipeline && (
        <dl className="pipeline">
          <div>
            <dt>Backends</dt>
            <dd data-testid="backends" title={`${pipeline.event_log} · ${pipeline.database}`}>
              {backendName(pipeline.event_log)} + {databaseName(pipeline.database)}
            </dd>
          </div>
          <div>
            <dt>Version</dt>
            <dd data-testid="version">
              {pipeline.version} · up {duration((now - Date.parse(pipeline.started_at)) / 1000)}
            </dd>
          </div>
          <div>
            <dt>Workers</dt>
            <dd data-testid="workers">
              {pipeline.workers.length === 0 ? (
                <span className="bad">none alive</span>
              ) : (
                pipeline.workers.map((w) => (
                  <span key={w.name} className="worker" title={w.name} data-testid="worker">
                    {shortWorker(w.name)}: {w.partitions.join(", ")}
                  </span>
                ))
              )}
              {pipeline.unowned_partitions.length > 0 && (
                <span className="bad" data-testid="unowned">
                  {" "}unowned: {pipeline.unowned_partitions.join(", ")}
                </span>
              )}
            </dd>
          </div>
          <div>
            <dt>Lag</dt>
            <dd data-testid="lag">{pipeline.lag == null ? "n/a" : count(pipeline.lag)}</dd>
          </div>
          <div>
            <dt>Dead letters</dt>
            <dd>
              <a href="#dead-letters" data-testid="dead-letter-count" className={pipeline.dead_letters ? "bad" : undefined}>
                {pipeline.dead_letters == null ? "n/a" : count(pipeline.dead_letters)}
              </a>
            </dd>
          </div>
        </dl>
      )}
    </header>
  );
}

function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, []);
  return now;
}

/** "Valkey streams at redis://… (strict durability)" → "Valkey". */
export function backendName(eventLog: string): string {
  if (/valkey/i.test(eventLog)) return /cluster/i.test(eventLog) ? "Valkey Cluster" : "Valkey";
  if (/embedded/i.test(eventLog)) return "embedded log";
  return eventLog.split(" ")[0] ?? eventLog;
}

export function databaseName(database: string): string {
  if (/postgres/i.test(database)) return "PostgreSQL";
  if (/sqlite/i.test(database)) return "SQLite";
  return database;
}

/** Member names are host-pid-suffix: keep them short. */
function shortWorker(name: string): string {
  return name.length > 18 ? `${name.slice(0, 10)}…${name.slice(-6)}` : name;
}
