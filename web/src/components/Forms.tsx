import { useState, type FormEvent, type ReactNode } from "react";
import { call, type Answer } from "../lib/http";
import type { Adjustment, AdjustmentReason, ProductRow } from "../types";

type FieldErrors = Record<string, string>;

// A form that posts to the REST API and shows the server's validation
// error at the field it names (or above the buttons when it names none).
function useSubmit() {
  const [errors, setErrors] = useState<FieldErrors>({});
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (run: () => Promise<Answer>, fields: string[], done: (answer: Answer & { ok: true }) => string) => {
    setBusy(true);
    setErrors({});
    setResult(null);
    const answer = await run();
    setBusy(false);
    if (answer.ok) {
      setResult({ ok: true, text: done(answer) });
    } else if (answer.field && fields.includes(answer.field)) {
      setErrors({ [answer.field]: answer.message });
    } else {
      setResult({ ok: false, text: answer.message });
    }
    return answer.ok;
  };
  return { errors, result, busy, submit };
}

function Field({ name, label, errors, children }: { name: string; label: string; errors: FieldErrors; children: ReactNode }) {
  return (
    <label className={`field${errors[name] ? " invalid" : ""}`}>
      <span>{label}</span>
      {children}
      {errors[name] && (
        <span className="field-error" role="alert" data-testid={`error-${name}`}>
          {errors[name]}
        </span>
      )}
    </label>
  );
}

function Result({ result }: { result: { ok: boolean; text: string } | null }) {
  if (!result) return null;
  return (
    <p className={result.ok ? "ok" : "error"} role={result.ok ? "status" : "alert"} data-testid="form-result">
      {result.text}
    </p>
  );
}

/** Numbers are sent as typed (so the server, not the page, judges them). */
const numberOrText = (value: string) => (value.trim() !== "" && !Number.isNaN(Number(value)) ? Number(value) : value);

export function CreateProductForm() {
  const { errors, result, busy, submit } = useSubmit();
  const [form, setForm] = useState({ sku: "", name: "", price: "", initial_stock: "", low_stock_threshold: "", reorder_quantity: "" });
  const set = (key: keyof typeof form) => (e: { target: { value: string } }) => setForm({ ...form, [key]: e.target.value });
  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    const body: Record<string, unknown> = { sku: form.sku, name: form.name, price: numberOrText(form.price) };
    for (const key of ["initial_stock", "low_stock_threshold", "reorder_quantity"] as const) {
      if (form[key].trim() !== "") body[key] = numberOrText(form[key]);
    }
    void submit(() => call("POST", "/api/products", body), Object.keys(form), (a) => `created ${(a.body as { sku?: string }).sku ?? form.sku}`);
  };
  return (
    <form className="form" onSubmit={onSubmit} data-testid="create-product">
      <h3>New product</h3>
      <Field name="sku" label="SKU" errors={errors}><input value={form.sku} onChange={set("sku")} name="sku" /></Field>
      <Field name="name" label="Name" errors={errors}><input value={form.name} onChange={set("name")} name="name" /></Field>
      <Field name="price" label="Price" errors={errors}><input value={form.price} onChange={set("price")} name="price" inputMode="decimal" /></Field>
      <Field name="initial_stock" label="Initial stock" errors={errors}><input value={form.initial_stock} onChange={set("initial_stock")} name="initial_stock" inputMode="numeric" /></Field>
      <Field name="low_stock_threshold" label="Low-stock threshold" errors={errors}><input value={form.low_stock_threshold} onChange={set("low_stock_threshold")} name="low_stock_threshold" inputMode="numeric" /></Field>
      <Field name="reorder_quantity" label="Reorder quantity" errors={errors}><input value={form.reorder_quantity} onChange={set("reorder_quantity")} name="reorder_quantity" inputMode="numeric" /></Field>
      <button type="submit" disabled={busy}>Create</button>
      <Result result={result} />
    </form>
  );
}

export function ReceiveStockForm({ product, onDone }: { product: ProductRow; onDone: () => void }) {
  const { errors, result, busy, submit } = useSubmit();
  const [quantity, setQuantity] = useState("");
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    const ok = await submit(
      () => call("POST", `/api/products/${product.id}/stock`, { quantity: numberOrText(quantity) }),
      ["quantity"],
      () => `receiving ${quantity} of ${product.sku}`,
    );
    if (ok) window.setTimeout(onDone, 800);
  };
  return (
    <form className="form" onSubmit={onSubmit} data-testid="receive-stock-form">
      <h3>Receive stock: <span className="mono">{product.sku}</span></h3>
      <Field name="quantity" label="Quantity" errors={errors}><input value={quantity} onChange={(e) => setQuantity(e.target.value)} name="quantity" inputMode="numeric" autoFocus /></Field>
      <div className="actions-row">
        <button type="submit" disabled={busy}>Receive</button>
        <button type="button" className="link" onClick={onDone}>close</button>
      </div>
      <Result result={result} />
    </form>
  );
}

const REASONS: AdjustmentReason[] = ["damaged", "shrinkage", "found", "correction", "cycle_count", "transit_loss", "returned"];

/** What a decided adjustment read back says, in a sentence. */
export function adjustmentOutcome(adjustment: Adjustment, sku: string): { ok: boolean; text: string } {
  const delta = adjustment.delta ?? 0;
  const counted = adjustment.counted != null ? `counted ${adjustment.counted}: ` : "";
  const change = `${counted}${delta > 0 ? "+" : ""}${delta} ${sku} (${adjustment.reason.replace("_", " ")})`;
  switch (adjustment.status) {
    case "applied":
      return { ok: true, text: `adjusted ${change}` };
    case "refused":
      return { ok: false, text: `refused ${change}: ${adjustment.refusal?.message ?? "no reason given"}` };
    default:
      return { ok: true, text: `${change} is waiting for a worker` };
  }
}

// An adjustment with its reason, conditional by default on the on-hand the
// operator saw when opening the form (compare-and-set): if someone changed
// the stock meanwhile, the worker refuses it and the form says what
// on-hand is now. The outcome is long-polled at the Location answered.
export function AdjustStockForm({ product, onDone }: { product: ProductRow; onDone: () => void }) {
  const { errors, result, busy, submit } = useSubmit();
  const [seen] = useState(product.on_hand);
  const [form, setForm] = useState({ delta: "", reason: "damaged" as AdjustmentReason, reference: "", note: "", conditional: true });
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string } | null>(null);
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    setOutcome(null);
    const body: Record<string, unknown> = { delta: numberOrText(form.delta), reason: form.reason };
    if (form.reference.trim()) body.reference = form.reference;
    if (form.note.trim()) body.note = form.note;
    if (form.conditional) body.expected_on_hand = seen;
    let location = "";
    const accepted = await submit(
      async () => {
        const answer = await call<{ adjustment_id: string }>("POST", `/api/products/${product.id}/adjustments`, body);
        if (answer.ok) location = `/api/products/${product.id}/adjustments/${answer.body.adjustment_id}`;
        return answer;
      },
      ["delta", "reason", "reference", "note", "expected_on_hand"],
      () => `adjustment of ${form.delta} ${product.sku} sent`,
    );
    if (!accepted) return;
    const read = await call<Adjustment>("GET", `${location}?wait=10`);
    const decided = read.body as Adjustment | undefined;
    setOutcome(decided?.status ? adjustmentOutcome(decided, product.sku) : { ok: false, text: read.ok ? "no outcome" : read.message });
    if (decided?.status === "applied") window.setTimeout(onDone, 1200);
  };
  return (
    <form className="form" onSubmit={onSubmit} data-testid="adjust-stock-form">
      <h3>Adjust stock: <span className="mono">{product.sku}</span></h3>
      <Field name="delta" label="Change (negative takes away)" errors={errors}>
        <input value={form.delta} onChange={(e) => setForm({ ...form, delta: e.target.value })} name="delta" inputMode="numeric" placeholder="e.g. -2" autoFocus />
      </Field>
      <Field name="reason" label="Reason" errors={errors}>
        <select value={form.reason} onChange={(e) => setForm({ ...form, reason: e.target.value as AdjustmentReason })} name="reason">
          {REASONS.map((r) => (
            <option key={r} value={r}>{r.replace("_", " ")}</option>
          ))}
        </select>
      </Field>
      <Field name="reference" label="Reference (optional)" errors={errors}>
        <input value={form.reference} onChange={(e) => setForm({ ...form, reference: e.target.value })} name="reference" />
      </Field>
      <Field name="note" label="Note (optional)" errors={errors}>
        <textarea value={form.note} onChange={(e) => setForm({ ...form, note: e.target.value })} name="note" rows={2} />
      </Field>
      <label className="check">
        <input type="checkbox" checked={form.conditional} onChange={(e) => setForm({ ...form, conditional: e.target.checked })} name="conditional" />{" "}
        only if on hand is still {seen}
      </label>
      <div className="actions-row">
        <button type="submit" disabled={busy}>Adjust</button>
        <button type="button" className="link" onClick={onDone}>close</button>
      </div>
      {outcome ? (
        <p className={outcome.ok ? "ok" : "error"} role={outcome.ok ? "status" : "alert"} data-testid="adjustment-outcome">
          {outcome.text}
        </p>
      ) : (
        <Result result={result} />
      )}
    </form>
  );
}

export function PlaceOrderForm({ products, onPlaced }: { products: ProductRow[]; onPlaced: (orderId: string) => void }) {
  const { errors, result, busy, submit } = useSubmit();
  const [form, setForm] = useState({ customer_email: "", product_id: "", quantity: "1", hold_ttl_s: "" });
  const productId = form.product_id || products[0]?.id || "";
  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    // A hold (seconds) makes it a checkout: HELD until committed or expired.
    const hold = form.hold_ttl_s.trim() === "" ? {} : { hold_ttl_s: numberOrText(form.hold_ttl_s) };
    const body = { customer_email: form.customer_email, items: [{ product_id: productId, quantity: numberOrText(form.quantity) }], ...hold };
    void submit(() => call("POST", "/api/orders", body), ["customer_email", "product_id", "quantity", "items", "hold_ttl_s"], (a) => {
      const id = (a.body as { order_id: string }).order_id;
      onPlaced(id);
      return `order ${id.slice(-8)} placed`;
    });
  };
  return (
    <form className="form" onSubmit={onSubmit} data-testid="place-order">
      <h3>Place an order</h3>
      <Field name="customer_email" label="Customer email" errors={errors}>
        <input value={form.customer_email} onChange={(e) => setForm({ ...form, customer_email: e.target.value })} name="customer_email" type="text" />
      </Field>
      <Field name="product_id" label="Product" errors={errors}>
        <select value={productId} onChange={(e) => setForm({ ...form, product_id: e.target.value })} name="product_id">
          {products.map((p) => (
            <option key={p.id} value={p.id}>{p.sku} · {p.name} ({p.available} available)</option>
          ))}
        </select>
      </Field>
      <Field name="quantity" label="Quantity" errors={errors}>
        <input value={form.quantity} onChange={(e) => setForm({ ...form, quantity: e.target.value })} name="quantity" inputMode="numeric" />
      </Field>
      <Field name="hold_ttl_s" label="Hold for checkout (seconds, optional)" errors={errors}>
        <input value={form.hold_ttl_s} onChange={(e) => setForm({ ...form, hold_ttl_s: e.target.value })} name="hold_ttl_s" inputMode="numeric" placeholder="none: confirmed for good" />
      </Field>
      {errors.items && <p className="error" role="alert">{errors.items}</p>}
      <button type="submit" disabled={busy || products.length === 0}>Place order</button>
      <Result result={result} />
    </form>
  );
}
