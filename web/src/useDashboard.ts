import { useEffect, useRef, useState } from "react";
import { emptyHistory, record, type History } from "./lib/history";
import { call, savedToken, socketProtocols, TOKEN_CHANGED } from "./lib/http";
import type { Snapshot, StatusChanges } from "./types";

export type Connection = "connecting" | "live" | "reconnecting";

/** At most this many renders a second, however fast messages arrive. */
const RENDERS_PER_SECOND = 4;

export type Dashboard = {
  snapshot: Snapshot | null;
  history: History;
  connection: Connection;
  /** Set once the feed came back after being lost (a server restart). */
  reconnectedAt: number | null;
};

// Subscribes to /ws/dashboard: the server sends a snapshot on connect, a
// fresh one every second, and between them each order status change the
// moment a worker commits it. Messages are folded into a pending state as
// they arrive and rendered at most RENDERS_PER_SECOND times a second, so
// thousands of status changes a second cost a few renders. Reconnects with
// capped backoff, and says so.
export function useDashboard(): Dashboard {
  const [view, setView] = useState<Dashboard>({
    snapshot: null,
    history: emptyHistory,
    connection: "connecting",
    reconnectedAt: null,
  });
  const pending = useRef(view);

  useEffect(() => {
    let socket: WebSocket | null = null;
    let retry: number | undefined;
    let flush: number | undefined;
    let attempts = 0;
    let stopped = false;
    let lost = false;

    const update = (change: (current: Dashboard) => Dashboard, now = false) => {
      pending.current = change(pending.current);
      if (now) {
        window.clearTimeout(flush);
        flush = undefined;
        setView(pending.current);
      } else if (flush === undefined) {
        flush = window.setTimeout(() => {
          flush = undefined;
          setView(pending.current);
        }, 1000 / RENDERS_PER_SECOND);
      }
    };

    const connect = () => {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      let opened = false;
      socket = new WebSocket(`${scheme}://${window.location.host}/ws/dashboard`, socketProtocols(savedToken()));
      socket.onopen = () => {
        opened = true;
        attempts = 0;
        const reconnected = lost;
        update((d) => ({ ...d, connection: "live", reconnectedAt: reconnected ? Date.now() : d.reconnectedAt }), true);
      };
      socket.onmessage = (message) => {
        let data: Snapshot | StatusChanges;
        try {
          data = JSON.parse(message.data);
        } catch {
          return; // A malformed frame is ignored; the next snapshot replaces it.
        }
        if ("status_changes" in data) {
          update((d) => ({ ...d, snapshot: withStatusChanges(d.snapshot, data as StatusChanges) }));
        } else {
          const snapshot = data as Snapshot;
          const t = Date.parse(snapshot.generated_at) / 1000;
          update((d) => ({ ...d, snapshot, history: record(d.history, t, snapshot.pipeline) }));
        }
      };
      socket.onclose = () => {
        if (stopped) return;
        lost = true;
        update((d) => ({ ...d, connection: "reconnecting" }), true);
        const again = () => {
          attempts += 1;
          retry = window.setTimeout(connect, Math.min(5000, 250 * 2 ** attempts));
        };
        if (opened) return again();
        // Refused before it opened: a read tells whether for want of a
        // token (a 401 opens the token box). Then wait for one rather than
        // retry a wrong token into the gateway's guessing limit.
        void call("GET", "/api/stats").then((answer) => {
          if (stopped) return;
          if (!answer.ok && [401, 403, 429].includes(answer.status)) return;
          again();
        });
      };
    };
    connect();
    // A new token: reconnect at once with it.
    const reconnect = () => {
      window.clearTimeout(retry);
      attempts = 0;
      if (socket) {
        socket.onclose = null;
        socket.close();
      }
      connect();
    };
    window.addEventListener(TOKEN_CHANGED, reconnect);
    return () => {
      window.removeEventListener(TOKEN_CHANGED, reconnect);
      stopped = true;
      window.clearTimeout(retry);
      window.clearTimeout(flush);
      socket?.close();
    };
  }, []);

  return view;
}

// The snapshot with the recent orders' statuses brought up to date.
export function withStatusChanges(current: Snapshot | null, changes: StatusChanges): Snapshot | null {
  if (!current) return current;
  const status = new Map(changes.status_changes.map((c) => [c.order_id, c.status]));
  if (!current.recent_orders.some((order) => status.has(order.order_id))) return current;
  return {
    ...current,
    recent_orders: current.recent_orders.map((order) => {
      const next = status.get(order.order_id);
      return next ? { ...order, status: next } : order;
    }),
  };
}
