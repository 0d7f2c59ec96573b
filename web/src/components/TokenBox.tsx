import { useEffect, useState } from "react";
import { saveToken, savedToken, TOKEN_NEEDED } from "../lib/http";

// The gateway's API token: typed once, kept in this tab's session storage.
// The box opens by itself when the gateway answers 401.
export function TokenBox() {
  const [token, setToken] = useState(savedToken());
  const [editing, setEditing] = useState(false);
  useEffect(() => {
    const ask = () => setEditing(true);
    window.addEventListener(TOKEN_NEEDED, ask);
    return () => window.removeEventListener(TOKEN_NEEDED, ask);
  }, []);
  if (!editing) {
    return (
      <button type="button" className="link token" onClick={() => setEditing(true)} data-testid="token-edit">
        {token ? "API token set" : "Set API token"}
      </button>
    );
  }
  return (
    <form
      className="token-form"
      onSubmit={(e) => {
        e.preventDefault();
        saveToken(token.trim());
        setEditing(false);
      }}
    >
      <input
        type="password"
        aria-label="API token"
        placeholder="bearer token"
        value={token}
        onChange={(e) => setToken(e.target.value)}
        data-testid="token-input"
        autoFocus
      />
      <button type="submit" data-testid="token-save">Save</button>
    </form>
  );
}
