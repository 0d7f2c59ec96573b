import { useCallback, useEffect, useState, type FormEvent } from "react";
import { call, TOKEN_CHANGED } from "../lib/http";
import { count, time } from "../lib/format";
import type { DeliveryAttempt, SubscriptionCreated, SubscriptionRow } from "../types";

/** How often the subscriptions are read again (ms). */
const REFRESH_MS = 3000;

// Webhook subscriptions: each one's state, how far behind it is, its last
// error, and the operator's switches (pause, resume, rewind to a seq,
// delete); a form to subscribe a URL, whose answer shows the secret this
// once; and, for the subscription opened, its recent delivery attempts.
export function Subscriptions() {
  const [subscriptions, setSubscriptions] = useState<SubscriptionRow[]>([]);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const [secret, setSecret] = useState<{ id: string; secret: string } | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [attempts, setAttempts] = useState<DeliveryAttempt[]>([]);
  // The row whose rewind or delete is being asked for, inline: a rewind
  // needs its seq, a delete a second click.
  const [asking, setAsking] = useState<{ id: string; action: "rewind" | "delete"; seq: string } | null>(null);

  const load = useCallback(async () => {
    const answer = await call<SubscriptionRow[]>("GET", "/api/subscriptions");
    if (answer.ok) setSubscriptions(answer.body);
  }, []);
  useEffect(() => {
    void load();
    const timer = window.setInterval(() => void load(), REFRESH_MS);
    const reload = () => void load();
    window.addEventListener(TOKEN_CHANGED, reload);
    return () => {
      window.clearInterval(timer);
      window.removeEventListener(TOKEN_CHANGED, reload);
    };
  }, [load]);
  useEffect(() => {
    if (!open) return;
    void call<DeliveryAttempt[]>("GET", `/api/subscriptions/${open}/deliveries?limit=20`).then((answer) => {
      if (answer.ok) setAttempts(answer.body);
    });
  }, [open, subscriptions]);

  const act = async (s: SubscriptionRow, action: "pause" | "resume" | "rewind" | "delete", seq?: string) => {
    let answer;
    setAsking(null);
    if (action === "rewind") {
      answer = await call("POST", `/api/subscriptions/${s.id}/rewind`, { seq: Number(seq) });
    } else if (action === "delete") {
      answer = await call("DELETE", `/api/subscriptions/${s.id}`);
    } else {
      answer = await call("POST", `/api/subscriptions/${s.id}/${action}`, {});
    }
    setMessage(answer.ok ? { ok: true, text: `${action}: ${s.url}` } : { ok: false, text: answer.message });
    void load();
  };

  const subscribe = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const types = String(form.get("types") ?? "")
      .split(",")
      .map((t) => t.trim())
      .filter((t) => t !== "");
    const answer = await call<SubscriptionCreated>("POST", "/api/subscriptions", {
      url: String(form.get("url") ?? "").trim(),
      event_types: types,
      start: String(form.get("start") ?? "now"),
    });
    if (answer.ok) {
      setSecret({ id: answer.body.id, secret: answer.body.secret });
      setMessage({ ok: true, text: `subscribed ${answer.body.url}` });
      void load();
    } else {
      setMessage({ ok: false, text: answer.message });
    }
  };

  return (
    <section className="card subscriptions" data-testid="subscriptions">
      <div className="card-head">
        <h2>Webhook subscriptions</h2>
      </div>
      {subscriptions.length === 0 ? (
        <p className="muted">No subscriptions: other systems can follow every event here, or with GET /api/feed.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>URL</th>
              <th>Events</th>
              <th>State</th>
              <th className="num">Cursor</th>
              <th className="num">Behind</th>
              <th className="num">Delivered</th>
              <th>Last error</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {subscriptions.map((s) => (
              <tr key={s.id} data-testid="subscription" data-id={s.id} data-state={s.state}>
                <td className="mono">
                  <button className="link" onClick={() => setOpen(open === s.id ? null : s.id)}>
                    {s.url}
                  </button>
                </td>
                <td>{s.event_types.length === 0 ? "all" : s.event_types.join(", ")}</td>
                <td>
                  <span className={`badge ${s.state === "active" ? "confirmed" : "low"}`} data-testid="subscription-state">
                    {s.state}
                  </span>
                  {s.paused_reason && <div className="muted">{s.paused_reason}</div>}
                </td>
                <td className="num mono">{count(s.cursor)}</td>
                <td className="num" data-testid="subscription-lag">
                  {count(s.lag_events)} {s.lag_events > 0 && <span className="muted">({s.lag_seconds.toFixed(1)} s)</span>}
                </td>
                <td className="num">
                  {count(s.delivered)}
                  {s.failed > 0 && <span className="muted"> · {count(s.failed)} failed</span>}
                </td>
                <td data-testid="subscription-error">
                  {s.last_error ? (
                    <>
                      {s.last_error} {s.last_error_at && <span className="muted">{time(s.last_error_at)}</span>}
                    </>
                  ) : (
                    <span className="muted">none</span>
                  )}
                </td>
                <td className="row-actions">
                  {s.state === "active" ? (
                    <button data-testid="subscription-pause" onClick={() => void act(s, "pause")}>Pause</button>
                  ) : (
                    <button data-testid="subscription-resume" onClick={() => void act(s, "resume")}>Resume</button>
                  )}
                  {asking?.id === s.id && asking.action === "rewind" ? (
                    <form
                      className="inline"
                      onSubmit={(e) => {
                        e.preventDefault();
                        void act(s, "rewind", asking.seq);
                      }}
                    >
                      <input
                        type="number"
                        min={0}
                        max={s.head}
                        required
                        value={asking.seq}
                        onChange={(e) => setAsking({ ...asking, seq: e.target.value })}
                        aria-label={`Deliver again every event after this seq (0 to ${s.head})`}
                        title={`Deliver again every event after this seq (0 to ${s.head})`}
                        data-testid="subscription-rewind-seq"
                      />
                      <button type="submit" data-testid="subscription-rewind-confirm">
                        Send again
                      </button>
                      <button type="button" onClick={() => setAsking(null)}>
                        Cancel
                      </button>
                    </form>
                  ) : asking?.id === s.id && asking.action === "delete" ? (
                    <>
                      <button data-testid="subscription-delete-confirm" onClick={() => void act(s, "delete")}>
                        Delete it
                      </button>
                      <button onClick={() => setAsking(null)}>Keep</button>
                    </>
                  ) : (
                    <>
                      <button
                        data-testid="subscription-rewind"
                        onClick={() => setAsking({ id: s.id, action: "rewind", seq: String(Math.max(0, s.cursor - 100)) })}
                      >
                        Rewind
                      </button>
                      <button data-testid="subscription-delete" onClick={() => setAsking({ id: s.id, action: "delete", seq: "" })}>
                        Delete
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && (
        <div className="deliveries" data-testid="subscription-deliveries">
          <h3>Recent deliveries</h3>
          <ul className="letters">
            {attempts.map((a) => (
              <li key={`${a.seq}-${a.attempt}-${a.attempted_at}`}>
                seq <span className="mono">{a.seq}</span> · attempt {a.attempt} ·{" "}
                <strong>{a.status ?? "no answer"}</strong> · {a.latency_ms} ms · {time(a.attempted_at)}
                {a.error && <span className="muted"> · {a.error}</span>}
              </li>
            ))}
          </ul>
        </div>
      )}
      <form className="inline" onSubmit={(e) => void subscribe(e)}>
        <input name="url" data-testid="subscribe-url" placeholder="https://… (where events are POSTed)" required aria-label="Webhook URL" />
        <input name="types" placeholder="event types: order.*, stock.received (blank: all)" aria-label="Event types" />
        <select name="start" aria-label="Start" defaultValue="now">
          <option value="now">from now</option>
          <option value="beginning">from the beginning</option>
        </select>
        <button type="submit" data-testid="subscribe-submit">Subscribe</button>
      </form>
      {secret && (
        <p className="notice" data-testid="subscription-secret">
          The signing secret of {secret.id.slice(-8)}, shown this once: <code>{secret.secret}</code>
        </p>
      )}
      {message && (
        <p className={message.ok ? "muted" : "error"} data-testid="subscription-message">
          {message.text}
        </p>
      )}
    </section>
  );
}
