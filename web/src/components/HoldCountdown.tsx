import { useEffect, useState } from "react";
import { duration } from "../lib/format";

// What is left of a held order's hold, ticking each second: "expires in
// 4m 10s", then "expiring…" until a worker decides the expiry (the sweep
// asks within a second or so of the deadline).
export function HoldCountdown({ until }: { until: string }) {
  const deadline = new Date(until).getTime();
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const tick = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(tick);
  }, []);
  const left = (deadline - now) / 1000;
  return (
    <span className="countdown" data-testid="hold-countdown" title={`held until ${new Date(until).toLocaleTimeString()}`}>
      {left > 0 ? `expires in ${duration(left)}` : "expiring…"}
    </span>
  );
}
