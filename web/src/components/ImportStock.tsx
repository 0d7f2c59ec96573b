import { useState, type FormEvent } from "react";
import { authorizedFetch } from "../lib/http";
import type { ImportOutcome } from "../types";

// Uploads a CSV of adjustments (sku,quantity,reason) or counts
// (sku,counted) and shows what became of its rows: how many were
// appended or imported before, and each refused row with its line and why.
export function ImportStockForm() {
  const [file, setFile] = useState<File | null>(null);
  const [outcome, setOutcome] = useState<ImportOutcome | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    if (!file) return;
    setBusy(true);
    setError(null);
    setOutcome(null);
    try {
      const response = await authorizedFetch("/api/imports/stock", {
        method: "POST",
        headers: { "content-type": "text/csv" },
        body: file,
      });
      const body = await response.json().catch(() => undefined);
      if (response.ok) setOutcome(body as ImportOutcome);
      else setError((body as { error?: { message?: string } } | undefined)?.error?.message ?? `the gateway answered ${response.status}`);
    } catch {
      setError("the gateway cannot be reached");
    }
    setBusy(false);
  };
  return (
    <form className="form" onSubmit={onSubmit} data-testid="import-stock">
      <h3>Import stock (CSV)</h3>
      <p className="muted">
        <span className="mono">sku,quantity,reason</span> for adjustments, or <span className="mono">sku,counted</span> for counts.
      </p>
      <input type="file" accept=".csv,text/csv" name="file" onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
      <button type="submit" disabled={busy || !file}>Import</button>
      {error && <p className="error" role="alert" data-testid="import-error">{error}</p>}
      {outcome && (
        <div data-testid="import-outcome">
          <p className={outcome.refused_count === 0 ? "ok" : "error"} role="status" data-testid="import-summary">
            {outcome.rows} rows: {outcome.accepted} accepted, {outcome.already_imported} imported before, {outcome.refused_count} refused
          </p>
          {outcome.refused.length > 0 && (
            <table className="ledger" data-testid="import-refused">
              <thead>
                <tr>
                  <th className="num">Line</th>
                  <th>SKU</th>
                  <th>Why</th>
                </tr>
              </thead>
              <tbody>
                {outcome.refused.map((r) => (
                  <tr key={r.line} data-testid="import-refused-row">
                    <td className="num">{r.line}</td>
                    <td className="mono">{r.sku ?? ""}</td>
                    <td>{r.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </form>
  );
}
