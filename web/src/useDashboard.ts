import { useEffect, useState } from "react";
import type { Snapshot } from "./types";

export type Connection = "connecting" | "live" | "reconnecting";

// Subscribes to /ws/dashboard: the server sends a snapshot on connect and
// then a fresh one whenever figures change. Reconnects with capped backoff.
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
          setSnapshot(JSON.parse(message.data) as Snapshot);
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
