import { useCallback, useEffect, useState } from "react";
import { call, TOKEN_CHANGED } from "../lib/http";
import { count, time } from "../lib/format";
import type { LostLogEntries as Found } from "../types";

// Events the read model applied that the log then lost (a Valkey failover
// to a replica that had not received them), as the workers' audit found
// them. Shown only when there are any: it is an alarm, not a figure. The
// snapshot carries their count; the list is read again when it changes.
export function LostLogEntries({ count: total }: { count: number | null | undefined }) {
  const [found, setFound] = useState<Found | null>(null);

  const load = useCallback(async () => {
    const answer = await call<Found>("GET", "/api/lost-log-entries?limit=20");
    if (answer.ok) setFound(answer.body);
  }, []);

  useEffect(() => {
    if (total) void load();
  }, [load, total]);
  useEffect(() => {
    const reload = () => void load();
    window.addEventListener(TOKEN_CHANGED, reload);
    return () => window.removeEventListener(TOKEN_CHANGED, reload);
  }, [load]);

  if (!total || !found || found.total === 0) return null;
  return (
    <section className="card alarm" id="lost-log-entries" data-testid="lost-log-entries">
      <h2>Events the log lost</h2>
      <p>
        <strong data-testid="lost-log-entry-count">{count(found.total)}</strong> applied{" "}
        {found.total === 1 ? "event is" : "events are"} no longer in the log (a failover to a replica that
        had not received them?). Their effects are in the read model; whatever reads the log itself never
        saw them.{" "}
        {found.total > found.entries.length && (
          <span className="muted">The newest {found.entries.length} are shown; all of them at /api/lost-log-entries.</span>
        )}
      </p>
      <ul className="letters">
        {found.entries.map((e) => (
          <li key={e.event_id} data-testid="lost-log-entry" data-id={e.event_id}>
            <strong>{e.event_type}</strong> <span className="mono muted">{e.event_key}</span>{" "}
            <span className="muted">
              partition {e.partition} · entry {e.entry_id} · applied {time(e.applied_at)} · found {time(e.detected_at)}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}
