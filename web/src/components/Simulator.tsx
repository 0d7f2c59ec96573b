import { useCallback, useEffect, useState } from "react";
import { call } from "../lib/http";
import type { SimulatorState } from "../types";

// Starts and stops the simulator of `streamstock all`, and switches its
// profile. Hidden when the gateway runs without one (`serve`).
export function SimulatorControl() {
  const [state, setState] = useState<SimulatorState | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    const answer = await call<SimulatorState>("GET", "/api/simulator");
    if (answer.ok) setState(answer.body);
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  if (!state?.available) return null;

  const command = async (running: boolean, profile?: string) => {
    const answer = await call<SimulatorState>("POST", "/api/simulator", { running, profile });
    if (answer.ok) {
      setState(answer.body);
      setError(null);
    } else {
      setError(answer.message);
    }
  };
  return (
    <div className="simulator" data-testid="simulator">
      <span>Simulator</span>
      {state.profiles.map((profile) => (
        <button
          key={profile}
          type="button"
          className={state.running && state.profile === profile ? "active" : undefined}
          aria-pressed={state.running && state.profile === profile}
          onClick={() => void command(true, profile)}
          data-testid={`simulator-${profile}`}
        >
          {profile}
        </button>
      ))}
      <button type="button" onClick={() => void command(false)} disabled={!state.running} data-testid="simulator-stop">
        stop
      </button>
      <span className="muted" data-testid="simulator-state">{state.running ? `running ${state.profile}` : "stopped"}</span>
      {error && <span className="error" role="alert">{error}</span>}
    </div>
  );
}
