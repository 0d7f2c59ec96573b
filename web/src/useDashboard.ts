import { useEffect, useState } from "react";
import type { Snapshot, StatusChanges } from "./types";

export type Connection = "connecting" | "live" | "reconnecting";

// Subscribes to /ws/dashboard: the server sends a snapshot on connect, a
// fresh one every second, and between them each order status change the
// moment a worker commits it, which is applied to the recent orders shown
// at once. Reconnects with capped backoff.
export function useDashboard(): { snapshot: Snapshot | null; connection: Connection } {
  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  const [connection, setConnection] = useState<Connection>("connecting");

  useEffect(() => {
    let socket: WebSocket | null = null;
    let retry: number | undefined;
    let attempts = 0;
    let stopped = false;

    const connect = () => {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${window.location.host}/ws/dashboard`);
      socket.onopen = () => {
        attempts = 0;
        setConnection("live");
      };
      socket.onmessage = (message) => {
        try {
          const data = JSON.parse(message.data) as Snapshot | StatusChanges;
          if ("status_changes" in data) {
            setSnapshot((current) => withStatusChanges(current, data));
          } else {
            setSnapshot(data);
          }
        } catch {
          // A malformed frame is ignored; the next snapshot replaces it.
        }
      };
      socket.onclose = () => {
        if (stopped) return;
        setConnection("reconnecting");
        attempts += 1;
        retry = window.setTimeout(connect, Math.min(5000, 250 * 2 ** attempts));
      };
    };
    connect();
    return () => {
      stopped = true;
      window.clearTimeout(retry);
      socket?.close();
    };
  }, []);

  return { snapshot, connection };
}

// The snapshot with the recent orders' statuses brought up to date.
function withStatusChanges(current: Snapshot | null, changes: StatusChanges): Snapshot | null {
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
