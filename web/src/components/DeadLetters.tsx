import { useCallback, useEffect, useState } from "react";
import { call, TOKEN_CHANGED } from "../lib/http";
import { time } from "../lib/format";
import type { DeadLetter } from "../types";

// Dead-lettered events (a protected read: it needs the token when the
// gateway has one), each with replay and purge. Reloads when the count in
// the header changes, or disagrees with the list.
export function DeadLetters({ count }: { count: number | null | undefined }) {
  const [letters, setLetters] = useState<DeadLetter[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [message, setMessage] = useState<string | null>(null);

  const load = useCallback(async () => {
    const answer = await call<DeadLetter[]>("GET", "/api/dead-letters?limit=100");
    if (answer.ok) {
      setLetters(answer.body);
      setError(null);
    } else {
      setError(answer.message);
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load, count]);
  // The count can come back to where it was between two snapshots (a
  // replayed letter dead-lettered again): while the list shown disagrees
  // with it, look again each second.
  useEffect(() => {
    if (letters === null || count == null || Math.min(count, 100) === letters.length) return;
    const again = window.setTimeout(() => void load(), 1000);
    return () => window.clearTimeout(again);
  }, [letters, count, load]);
  useEffect(() => {
    const reload = () => void load();
    window.addEventListener(TOKEN_CHANGED, reload);
    return () => window.removeEventListener(TOKEN_CHANGED, reload);
  }, [load]);

  const act = async (what: "replay" | "purge", id: string) => {
    const answer = await call<{ replayed?: unknown[]; purged?: number; not_replayable?: string[] }>(
      "POST",
      `/api/dead-letters/${what}`,
      { ids: [id] },
    );
    if (!answer.ok) setMessage(answer.message);
    else if (answer.body.not_replayable?.length) setMessage(`${id} is not a readable event: purge it instead`);
    else setMessage(what === "replay" ? `${id} appended to the log again` : `${id} purged`);
    await load();
  };

  return (
    <section className="card" id="dead-letters" data-testid="dead-letters">
      <h2>Dead letters</h2>
      {message && <p className="muted" role="status" data-testid="dead-letter-message">{message}</p>}
      {error && <p className="error" role="alert">{error}</p>}
      {letters && letters.length === 0 && <p className="muted" data-testid="dead-letters-empty">None.</p>}
      {letters && letters.length > 0 && (
        <ul className="letters">
          {letters.map((l) => (
            <li key={l.id} data-testid="dead-letter" data-id={l.id}>
              <div>
                <strong>{l.envelope?.event_type ?? "unreadable entry"}</strong>{" "}
                <span className="mono muted">{l.envelope?.key ?? l.entry_id}</span>{" "}
                <span className="muted">partition {l.partition} · {l.attempts} attempts · {time(l.failed_at)}</span>
              </div>
              <div className="error-text">{l.error}</div>
              <div className="actions-row">
                <button type="button" onClick={() => void act("replay", l.id ?? "")} disabled={!l.envelope} data-testid="replay">Replay</button>
                <button type="button" onClick={() => void act("purge", l.id ?? "")} data-testid="purge">Purge</button>
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
