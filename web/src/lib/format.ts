// Display formats. Money is a decimal amount of the store's currency (the
// API's prices are dollars), shown in the reader's locale with the
// currency's own format, never a hard-coded "$".
export const CURRENCY = "USD";

const moneyFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: CURRENCY });
const countFormat = new Intl.NumberFormat(undefined);
const rateFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export const money = (amount: number) => moneyFormat.format(amount);
export const count = (n: number) => countFormat.format(n);
export const rate = (n: number) => rateFormat.format(n);

/** "3d 4h", "2h 5m", "4m 10s", "12s". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

export const shortId = (id: string) => id.slice(-8);
export const time = (iso: string) => new Date(iso).toLocaleTimeString();
