// Drives the real dashboard in headless Chromium (playwright-core, Debian's
// chromium) against a running `streamstock all` with an API token, and
// checks what an operator sees and does:
//   node e2e/dashboard.mjs <base-url> <token> <screenshot-dir>
// The script asks the Rust test (tests/dashboard_browser.rs) for two
// things by printing a line on stdout and waiting for one on stdin: "load"
// (start a load generator against the server) and "restart" (restart the
// server). Exits non-zero with a message
// on the first failed check.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [base, token, shots] = process.argv.slice(2);
if (!base || !token || !shots) {
  console.error("usage: node e2e/dashboard.mjs <base-url> <token> <screenshot-dir>");
  process.exit(2);
}
const executablePath = process.env.STREAMSTOCK_TEST_CHROMIUM || "/usr/bin/chromium";
const WAIT = { timeout: 20000 };
const stdin = createInterface({ input: process.stdin });
const stdinLines = stdin[Symbol.asyncIterator]();

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function step(what) {
  console.error(`e2e: ${what}`);
}

async function api(path, init = {}) {
  const headers = { authorization: `Bearer ${token}`, ...(init.body ? { "content-type": "application/json" } : {}) };
  const response = await fetch(base + path, { ...init, headers });
  check(response.ok, `${init.method ?? "GET"} ${path} answered ${response.status}`);
  return response.json();
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const problems = [];
  page.on("console", (m) => {
    // A 401 before the token is entered, and the socket dropping while the
    // server restarts, are expected; anything else is a bug.
    if (m.type() === "error" && !/401|WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(e.message));
  const shown = async (id) => (await page.getByTestId(id).first().innerText()).trim();

  await page.goto(base + "/");
  step("without a token the page asks for one, and goes live once it is given; it is kept for the session");
  // The gateway has a token, so its WebSocket and reads answer 401 and
  // the token box opens by itself.
  await page.getByTestId("token-input").waitFor(WAIT);
  check((await page.getByTestId("connection").innerText()).trim() !== "live", "live without a token");
  await page.getByTestId("token-input").fill(token);
  await page.getByTestId("token-save").click();
  await page.getByTestId("token-edit").filter({ hasText: "API token set" }).waitFor(WAIT);
  await page.getByTestId("connection").filter({ hasText: "live" }).waitFor(WAIT);

  step("the header shows the backends, the version and the workers");
  await page.getByTestId("backends").filter({ hasText: "Valkey + PostgreSQL" }).waitFor(WAIT);
  await page.getByTestId("worker").first().waitFor(WAIT);
  const status = await api("/api/stats");
  check((await shown("version")).includes("up "), `version: ${await shown("version")}`);
  check(status.event_log.includes("Valkey"), status.event_log);

  step("the inventory shows every product with the server's figures");
  const products = await api("/api/products");
  check(products.length > 0, "the test needs products");
  for (const p of products) {
    const row = page.locator(`[data-testid="inventory-row"][data-sku="${p.sku}"]`);
    await row.waitFor(WAIT);
    const available = (await row.locator('[data-field="available"]').innerText()).replace(/\D/g, "");
    check(available === String(p.available), `${p.sku}: page shows available ${available}, API ${p.available}`);
  }

  step("an invalid form shows the server's error at the field");
  const form = page.getByTestId("create-product");
  await form.locator('input[name="sku"]').fill("E2E-NEW-1");
  await form.locator('input[name="name"]').fill("Made in the browser");
  await form.locator('input[name="price"]').fill("4.25");
  await form.locator('input[name="initial_stock"]').fill("-5");
  await form.getByRole("button", { name: "Create" }).click();
  await form.getByTestId("error-initial_stock").waitFor(WAIT);
  check((await form.getByTestId("error-initial_stock").innerText()).startsWith("initial_stock:"), "the error names the field");

  step("creating a product makes it appear in the inventory");
  await form.locator('input[name="initial_stock"]').fill("7");
  await form.getByRole("button", { name: "Create" }).click();
  await form.getByTestId("form-result").filter({ hasText: "created" }).waitFor(WAIT);
  // The search asks the server, so it finds products past the snapshot's.
  await Promise.all([
    page.waitForRequest((r) => r.url().includes("/api/products?") && r.url().includes("q=E2E-NEW"), WAIT),
    page.getByTestId("inventory-filter").fill("E2E-NEW"),
  ]);
  const created = page.locator('[data-testid="inventory-row"][data-sku="E2E-NEW-1"]');
  await created.waitFor(WAIT);
  await created.locator('[data-field="available"]').filter({ hasText: "7" }).waitFor(WAIT);
  await page.getByTestId("inventory-filter").fill("");

  step("placing an order shows it in the feed with its final status");
  const order = page.getByTestId("place-order");
  await order.locator('input[name="customer_email"]').fill("e2e@example.com");
  const createdProduct = (await api("/api/products")).find((p) => p.sku === "E2E-NEW-1");
  await order.locator('select[name="product_id"]').selectOption(createdProduct.id);
  await order.locator('input[name="quantity"]').fill("2");
  await order.getByRole("button", { name: "Place order" }).click();
  await order.getByTestId("form-result").filter({ hasText: "placed" }).waitFor(WAIT);
  const placedId = (await order.getByTestId("form-result").innerText()).match(/order (\w+)/)[1];
  const feedRow = page.locator('[data-testid="order-row"]', { hasText: placedId });
  await feedRow.getByTestId("order-status").filter({ hasText: "CONFIRMED" }).waitFor(WAIT);

  step("the order opens with its lines, history and audit trail; a partial shipment makes it PARTIALLY_SHIPPED, shipping the rest SHIPPED");
  const drawer = page.getByTestId("order-drawer");
  await drawer.getByTestId("drawer-status").filter({ hasText: "CONFIRMED" }).waitFor(WAIT);
  await drawer.getByTestId("audit-trail").locator("li", { hasText: "order.placed" }).waitFor(WAIT);
  await drawer.getByTestId("audit-trail").locator("li", { hasText: "order.confirmed" }).waitFor(WAIT);
  // The command names the token it came with; the worker's decision none.
  const placedEntry = drawer.getByTestId("audit-trail").locator("li", { hasText: "order.placed" });
  check((await placedEntry.getByTestId("event-actor").innerText()).includes("api-token"), "order.placed names its actor");
  check((await drawer.getByTestId("audit-trail").locator("li", { hasText: "order.confirmed" }).getByTestId("event-actor").count()) === 0, "a decision has no actor");
  // One unit of the two ships first: PARTIALLY_SHIPPED; "Ship all" the rest.
  await drawer.getByTestId("line-quantity").first().fill("1");
  await drawer.getByTestId("ship-lines").click();
  await drawer.getByTestId("drawer-message").filter({ hasText: "shipped 1" }).waitFor(WAIT);
  await drawer.getByTestId("drawer-status").filter({ hasText: "PARTIALLY_SHIPPED" }).waitFor(WAIT);
  await drawer.getByTestId("order-line").first().locator('[data-field="shipped"]').filter({ hasText: "1" }).waitFor(WAIT);
  await drawer.getByTestId("ship").click();
  await drawer.getByTestId("drawer-status").filter({ hasText: /^SHIPPED$/ }).waitFor(WAIT);
  await feedRow.getByTestId("order-status").filter({ hasText: /^SHIPPED$/ }).waitFor(WAIT);
  await drawer.getByTestId("status-history").locator("li", { hasText: "order.shipped" }).first().waitFor(WAIT);

  step("a shipped unit comes back from the order drawer: restocked, with its refund");
  await drawer.getByTestId("line-quantity").first().fill("1");
  await drawer.getByTestId("return-disposition").selectOption("restock");
  await drawer.getByTestId("return-reason").fill("wrong size");
  await drawer.getByTestId("return-lines").click();
  await drawer.getByTestId("drawer-message").filter({ hasText: "took back 1" }).waitFor(WAIT);
  await drawer.getByTestId("order-line").first().locator('[data-field="returned"]').filter({ hasText: "1" }).waitFor(WAIT);
  await drawer.locator('[data-testid="fulfilments"] li[data-kind="return"][data-status="applied"]').waitFor(WAIT);
  // Returning more than shipped and not returned is refused with the reason.
  await drawer.getByTestId("line-quantity").first().fill("2");
  await drawer.getByTestId("return-lines").click();
  await drawer.getByTestId("drawer-message").filter({ hasText: "shipped and not returned" }).waitFor(WAIT);
  await page.screenshot({ path: `${shots}/order-returns.png` });
  await drawer.getByTestId("drawer-close").click();

  step("cancelling an order from its drawer moves it to CANCELLED");
  await order.locator('input[name="quantity"]').fill("1");
  await order.getByRole("button", { name: "Place order" }).click();
  await page.waitForFunction(
    (before) => {
      const text = document.querySelector('[data-testid="place-order"] [data-testid="form-result"]')?.textContent ?? "";
      return text.includes("placed") && !text.includes(before);
    },
    placedId,
    WAIT,
  );
  const secondId = (await order.getByTestId("form-result").innerText()).match(/order (\w+)/)[1];
  await drawer.getByTestId("drawer-status").filter({ hasText: "CONFIRMED" }).waitFor(WAIT);
  await drawer.getByTestId("cancel").click();
  await drawer.getByTestId("drawer-status").filter({ hasText: "CANCELLED" }).waitFor(WAIT);
  await page.locator('[data-testid="order-row"]', { hasText: secondId }).getByTestId("order-status").filter({ hasText: "CANCELLED" }).waitFor(WAIT);
  await drawer.getByTestId("drawer-close").click();

  step("an order placed with a hold is HELD with a countdown, and committing it from the drawer confirms it");
  await order.locator('input[name="hold_ttl_s"]').fill("300");
  await order.getByRole("button", { name: "Place order" }).click();
  await page.waitForFunction(
    (before) => {
      const text = document.querySelector('[data-testid="place-order"] [data-testid="form-result"]')?.textContent ?? "";
      return text.includes("placed") && !text.includes(before);
    },
    secondId,
    WAIT,
  );
  const heldId = (await order.getByTestId("form-result").innerText()).match(/order (\w+)/)[1];
  await drawer.getByTestId("drawer-status").filter({ hasText: "HELD" }).waitFor(WAIT);
  const left = await drawer.getByTestId("hold-countdown").innerText();
  if (!/^expires in [45]m/.test(left)) throw new Error(`the drawer's countdown reads "${left}"`);
  await page.locator('[data-testid="order-row"]', { hasText: heldId }).getByTestId("hold-countdown").waitFor(WAIT);
  await drawer.getByTestId("commit").click();
  await drawer.getByTestId("drawer-status").filter({ hasText: "CONFIRMED" }).waitFor(WAIT);
  await drawer.getByTestId("drawer-message").filter({ hasText: "committed" }).waitFor(WAIT);
  await page.locator('[data-testid="order-row"]', { hasText: heldId }).getByTestId("order-status").filter({ hasText: "CONFIRMED" }).waitFor(WAIT);
  await order.locator('input[name="hold_ttl_s"]').fill("");
  await drawer.getByTestId("drawer-close").click();

  step("receiving stock from an inventory row adds to it");
  const dashB = page.locator('[data-testid="inventory-row"][data-sku="DASH-B"]');
  const onHandB = Number((await dashB.locator('[data-field="on_hand"]').innerText()).replace(/\D/g, ""));
  await dashB.getByTestId("receive-stock").click();
  const receiveForm = page.getByTestId("receive-stock-form");
  await receiveForm.locator('input[name="quantity"]').fill("5");
  await receiveForm.getByRole("button", { name: "Receive" }).click();
  await dashB.locator('[data-field="on_hand"]').filter({ hasText: String(onHandB + 5) }).waitFor(WAIT);

  step("an adjustment from an inventory row is applied; one on an on-hand changed meanwhile is refused with the actual figure");
  await dashB.getByTestId("adjust-stock").click();
  let adjustForm = page.getByTestId("adjust-stock-form");
  await adjustForm.locator('input[name="delta"]').fill("-2");
  await adjustForm.locator('select[name="reason"]').selectOption("damaged");
  await adjustForm.locator('input[name="reference"]').fill("DMG-E2E");
  await adjustForm.getByRole("button", { name: "Adjust" }).click();
  await adjustForm.getByTestId("adjustment-outcome").filter({ hasText: "adjusted -2 DASH-B (damaged)" }).waitFor(WAIT);
  await dashB.locator('[data-field="on_hand"]').filter({ hasText: String(onHandB + 3) }).waitFor(WAIT);
  await adjustForm.waitFor({ state: "detached", ...WAIT });
  await dashB.getByTestId("adjust-stock").click();
  adjustForm = page.getByTestId("adjust-stock-form");
  const productB = (await api("/api/products?limit=1000")).find((p) => p.sku === "DASH-B");
  await api(`/api/products/${productB.id}/stock`, { method: "POST", body: JSON.stringify({ quantity: 1 }) });
  await dashB.locator('[data-field="on_hand"]').filter({ hasText: String(onHandB + 4) }).waitFor(WAIT);
  await adjustForm.locator('input[name="delta"]').fill("-1");
  await adjustForm.getByRole("button", { name: "Adjust" }).click();
  await adjustForm
    .getByTestId("adjustment-outcome")
    .filter({ hasText: `on_hand is ${onHandB + 4}, not the ${onHandB + 3} expected` })
    .waitFor(WAIT);
  await page.screenshot({ path: `${shots}/adjustment-refused.png` });
  await adjustForm.getByRole("button", { name: "close" }).click();

  step("a product's drawer shows its ledger and sparkline, records a count, and downloads the ledger as CSV");
  await dashB.getByTestId("open-product").click();
  const productDrawer = page.getByTestId("product-drawer");
  await productDrawer.getByTestId("ledger-row").first().waitFor(WAIT);
  await productDrawer.getByTestId("ledger-sparkline").waitFor(WAIT);
  check(
    (await productDrawer.getByTestId("ledger-row").first().getAttribute("data-kind")) === "received",
    "the newest ledger row is the receipt made just before",
  );
  await productDrawer.locator('input[name="counted"]').fill(String(onHandB + 3));
  await productDrawer.getByRole("button", { name: "Record count" }).click();
  await productDrawer.getByTestId("count-outcome").filter({ hasText: `counted ${onHandB + 3}: -1 DASH-B (cycle count)` }).waitFor(WAIT);
  await productDrawer.locator('[data-testid="ledger-row"][data-kind="adjusted"]').first().waitFor(WAIT);
  await page.screenshot({ path: `${shots}/product-ledger.png` });
  const [download] = await Promise.all([page.waitForEvent("download", WAIT), productDrawer.getByTestId("ledger-csv").click()]);
  const csvText = await (await import("node:fs/promises")).readFile(await download.path(), "utf8");
  check(csvText.startsWith("seq,occurred_at,kind"), `the CSV starts with its header: ${csvText.slice(0, 60)}`);
  check(csvText.trim().split("\n").length >= 5, "the CSV holds the ledger's rows");
  await productDrawer.getByTestId("product-drawer-close").click();

  step("selling past zero: the drawer sets a backorder limit, an order beyond the stock waits in the product's queue, and a receipt fills it");
  await dashB.getByTestId("open-product").click();
  await productDrawer.locator('input[name="backorder_limit"]').fill("5");
  await productDrawer.getByRole("button", { name: "Set" }).click();
  await productDrawer.getByTestId("backorder-message").filter({ hasText: "limit set to 5" }).waitFor(WAIT);
  const productBNow = (await api("/api/products?limit=1000")).find((p) => p.sku === "DASH-B");
  const pastZero = await api("/api/orders", {
    method: "POST",
    body: JSON.stringify({ customer_email: "e2e@example.com", items: [{ product_id: productBNow.id, quantity: productBNow.available + 2 }] }),
  });
  const pastZeroShort = pastZero.order_id.slice(-8);
  await productDrawer.getByTestId("queued-backorder").filter({ hasText: pastZeroShort }).waitFor(WAIT);
  await page.locator('[data-testid="order-row"]', { hasText: pastZeroShort }).getByTestId("order-status").filter({ hasText: "BACKORDERED" }).waitFor(WAIT);
  await dashB.getByTestId("backordered-badge").filter({ hasText: "2 waiting" }).waitFor(WAIT);
  await page.screenshot({ path: `${shots}/backorders.png` });
  await api(`/api/products/${productBNow.id}/stock`, { method: "POST", body: JSON.stringify({ quantity: 2 }) });
  await page.locator('[data-testid="order-row"]', { hasText: pastZeroShort }).getByTestId("order-status").filter({ hasText: "CONFIRMED" }).waitFor(WAIT);
  await productDrawer.getByTestId("backorder-queue").waitFor({ ...WAIT, state: "detached" });
  await productDrawer.getByTestId("product-drawer-close").click();

  step("an import shows its accepted and refused rows");
  // What the count left, and the 2 units received for the backorder (the
  // row may not show it yet).
  const onHandBeforeImport = onHandB + 3 + 2;
  await dashB.locator('[data-field="on_hand"]').filter({ hasText: String(onHandBeforeImport) }).waitFor(WAIT);
  const importForm = page.getByTestId("import-stock");
  await importForm.locator('input[name="file"]').setInputFiles({
    name: "stock.csv",
    mimeType: "text/csv",
    buffer: Buffer.from("sku,quantity,reason\r\nDASH-B,2,found\r\nNOPE-9,1,found\r\n"),
  });
  await importForm.getByRole("button", { name: "Import" }).click();
  await importForm.getByTestId("import-summary").filter({ hasText: "2 rows: 1 accepted, 0 imported before, 1 refused" }).waitFor(WAIT);
  check((await importForm.getByTestId("import-refused-row").first().innerText()).includes("no such product"), "the refused row says why");
  await dashB.locator('[data-field="on_hand"]').filter({ hasText: String(onHandBeforeImport + 2) }).waitFor(WAIT);

  step("a transfer to a new location is requested and received from the transfers panel; the inventory filters by location");
  await api("/api/locations", { method: "POST", body: JSON.stringify({ code: "e2e-east", name: "E2E East", priority: 5 }) });
  const panel = page.getByTestId("locations");
  await panel.locator('[data-testid="location-row"][data-code="e2e-east"]').waitFor(WAIT);
  const locationList = await api("/api/locations");
  const east = locationList.find((l) => l.code === "e2e-east");
  const transferForm = panel.getByTestId("transfer-form");
  await transferForm.getByTestId("transfer-from").selectOption({ label: "default" });
  await transferForm.getByTestId("transfer-to").selectOption(east.id);
  await transferForm.getByTestId("transfer-product").selectOption({ label: "DASH-B" });
  await transferForm.getByTestId("transfer-quantity").fill("2");
  await transferForm.getByTestId("transfer-submit").click();
  await panel.getByTestId("transfer-message").filter({ hasText: "transfer shipped" }).waitFor(WAIT);
  const inTransit = panel.locator('[data-testid="transfer"][data-status="shipped"]').first();
  await inTransit.waitFor(WAIT);
  await inTransit.getByTestId("transfer-received").fill("1");
  await inTransit.getByTestId("receive-transfer-submit").click();
  await panel.getByTestId("transfer-message").filter({ hasText: "receipt recorded" }).waitFor(WAIT);
  await panel.locator('[data-testid="transfer"][data-status="received"]', { hasText: "1 arrived" }).waitFor(WAIT);
  await page.getByTestId("inventory-location").selectOption(east.id);
  await dashB.locator('[data-field="on_hand"]').filter({ hasText: /^1$/ }).waitFor(WAIT);
  await page.locator('[data-testid="inventory-row"][data-sku="DASH-A"]').waitFor({ state: "detached", ...WAIT });
  await page.screenshot({ path: `${shots}/locations-transfers.png` });
  await page.getByTestId("inventory-location").selectOption("");
  await page.locator('[data-testid="inventory-row"][data-sku="DASH-A"]').waitFor(WAIT);
  await dashB.getByTestId("open-product").click();
  await productDrawer.locator('[data-testid="product-location"][data-location="e2e-east"] [data-field="on_hand"]').filter({ hasText: /^1$/ }).waitFor(WAIT);
  await productDrawer.getByTestId("product-drawer-close").click();

  step("a webhook subscribed from its panel shows its secret once, its last error, and pauses and resumes");
  const subscriptions = page.getByTestId("subscriptions");
  // The server itself answers the POSTs 405: each delivery fails, visibly.
  await subscriptions.getByTestId("subscribe-url").fill(`${base}/health`);
  await subscriptions.getByTestId("subscribe-submit").click();
  await subscriptions.getByTestId("subscription-secret").filter({ hasText: "whsec_" }).waitFor(WAIT);
  const hook = subscriptions.locator('[data-testid="subscription"][data-state="active"]').first();
  await hook.waitFor(WAIT);
  await api("/api/products", { method: "POST", body: JSON.stringify({ sku: "HOOK-1", name: "Hook", price: 1, initial_stock: 1 }) });
  await hook.getByTestId("subscription-error").filter({ hasText: "405" }).waitFor(WAIT);
  await hook.getByTestId("subscription-pause").click();
  await subscriptions.locator('[data-testid="subscription"][data-state="paused"]').waitFor(WAIT);
  await subscriptions.getByTestId("subscription-resume").click();
  await subscriptions.locator('[data-testid="subscription"][data-state="active"]').waitFor(WAIT);
  // Rewind asks for its seq inline, then sends again from there.
  await subscriptions.getByTestId("subscription-rewind").click();
  await subscriptions.getByTestId("subscription-rewind-seq").fill("0");
  await page.screenshot({ path: `${shots}/subscriptions.png` });
  await subscriptions.getByTestId("subscription-rewind-confirm").click();
  await subscriptions.getByTestId("subscription-message").filter({ hasText: "rewind:" }).waitFor(WAIT);
  // Delete asks again before it deletes.
  await subscriptions.getByTestId("subscription-delete").click();
  await subscriptions.getByTestId("subscription-delete-confirm").click();
  await subscriptions.locator('[data-testid="subscription"]').waitFor({ state: "detached", ...WAIT });

  step("receiving a purchase order closes it and restocks its product");
  const openBefore = await api("/api/purchase-orders?status=OPEN");
  check(openBefore.length > 0, "the test needs an open purchase order");
  const po = openBefore[0];
  await page.locator('[data-testid="purchase-orders"] tr', { hasText: po.id.slice(-8) }).getByTestId("receive-po").click();
  await page.getByTestId("purchase-order-message").filter({ hasText: "receiving" }).waitFor(WAIT);
  await page.locator('[data-testid="purchase-orders"] tr', { hasText: po.id.slice(-8) }).waitFor({ state: "detached", ...WAIT });

  step("a dead letter appears and can be replayed");
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="dead-letter-count"]')?.textContent) > 0, null, WAIT);
  const letter = page.getByTestId("dead-letter").first();
  await letter.waitFor(WAIT);
  const letterId = await letter.getAttribute("data-id");
  await letter.getByTestId("replay").click();
  await page.getByTestId("dead-letter-message").filter({ hasText: `${letterId} appended to the log again` }).waitFor(WAIT);

  step("a dead letter can be purged");
  await page.waitForFunction((gone) => {
    const ids = [...document.querySelectorAll('[data-testid="dead-letter"]')].map((l) => l.getAttribute("data-id"));
    return ids.length > 0 && !ids.includes(gone);
  }, letterId, WAIT);
  const again = page.getByTestId("dead-letter").first();
  const againId = await again.getAttribute("data-id");
  await again.getByTestId("purge").click();
  await page.getByTestId("dead-letter-message").filter({ hasText: `${againId} purged` }).waitFor(WAIT);
  await page.locator(`[data-testid="dead-letter"][data-id="${againId}"]`).waitFor({ state: "detached", ...WAIT });

  step("the figures change while the simulator runs");
  const before = Number(await shown("order-count"));
  await page.getByTestId("simulator-burst").click();
  await page.getByTestId("simulator-state").filter({ hasText: "running burst" }).waitFor(WAIT);
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="order-count"]')?.textContent) >= n, before + 5, WAIT);
  await page.waitForFunction(
    () => [...document.querySelectorAll('[data-testid="chart-throughput-legend"] strong')].some((s) => /[1-9]/.test(s.textContent ?? "")),
    null,
    WAIT,
  );
  await page.getByTestId("simulator-stop").click();
  await page.getByTestId("simulator-state").filter({ hasText: "stopped" }).waitFor(WAIT);

  step("under heavy load the page renders a few times a second, no more");
  const countBefore = Number(await shown("order-count"));
  console.log("load");
  await stdinLines.next(); // the test has started `simulate --profile max`
  const renders = await page.evaluate(
    () =>
      new Promise((resolve) => {
        // Each React commit that changes the page calls this once.
        let calls = 0;
        const observer = new MutationObserver(() => calls++);
        observer.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
        setTimeout(() => {
          observer.disconnect();
          resolve(calls);
        }, 5000);
      }),
  );
  const countAfter = Number(await shown("order-count"));
  // The load offered: orders the workers applied, and the events still
  // waiting for them (on a busy machine the workers fall behind; the page
  // must coalesce either way).
  const waiting = Number((await shown("backlog")).replace(/\D/g, "")) || 0;
  const offered = countAfter - countBefore + waiting;
  console.error(`e2e: ${renders} renders in 5 s while ${countAfter - countBefore} orders were applied and ${waiting} events waited`);
  check(offered > 500, `the load made only ${offered} orders and waiting events`);
  // Four coalesced updates a second (each a commit, and the charts' effects
  // after it) and the header's clock: at most 10 a second. Rendering each
  // of the feed's messages would be hundreds.
  check(renders <= 50, `${renders} renders in 5 s under load`);

  step("screenshots at 1440 px and 390 px, light and dark");
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.setViewportSize({ width: 1440, height: 1000 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(600);
    await page.screenshot({ path: `${shots}/dashboard-1440-${scheme}.png`, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(600);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `at 390 px the page is ${overflow} px wider than the screen`);
    await page.screenshot({ path: `${shots}/dashboard-390-${scheme}.png`, fullPage: true });
  }
  // The narrowest phones: nothing wider than the screen.
  await page.setViewportSize({ width: 360, height: 740 });
  await page.waitForTimeout(600);
  const overflow360 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  const wide = await page.evaluate(() =>
    [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 6)
      .map((e) => `${e.tagName.toLowerCase()}.${e.className}[${e.getAttribute("data-testid") ?? ""}]`),
  );
  check(overflow360 <= 0, `at 360 px the page is ${overflow360} px wider than the screen: ${wide.join(", ")}`);
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize({ width: 1440, height: 1000 });

  step("the page reconnects after the server restarts, and says so");
  console.log("restart");
  await page.getByTestId("connection").filter({ hasText: "reconnecting" }).waitFor(WAIT);
  await stdinLines.next();
  await page.getByTestId("connection").filter({ hasText: "live" }).waitFor({ timeout: 30000 });
  await page.getByTestId("reconnected").waitFor(WAIT);
  await page.locator('[data-testid="inventory-row"][data-sku="E2E-NEW-1"]').waitFor(WAIT);

  step("events the log lost while the server was down are listed, once the restarted worker has audited");
  await page.getByTestId("lost-log-entries").waitFor(WAIT);
  const lost = Number((await page.getByTestId("lost-log-entry-count").innerText()).replace(/[^0-9]/g, ""));
  check(lost > 0, `the lost-entry count reads ${lost}`);
  const first = page.getByTestId("lost-log-entry").first();
  check(/\w+\.\w+/.test(await first.innerText()), `a lost entry names its event type: ${await first.innerText()}`);
  await page.getByTestId("lost-log-entries").screenshot({ path: `${shots}/lost-log-entries-1440.png` });

  check(problems.length === 0, `the page reported errors: ${problems.join("; ")}`);
  console.log(JSON.stringify({ ok: true, products: products.length }));
} catch (error) {
  // What the page showed when the check failed, for the test's output.
  const page = browser.contexts()[0]?.pages()[0];
  if (page) {
    await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
    const text = await page.locator("body").innerText().catch(() => "");
    console.error(`e2e: the page said:\n${text.slice(0, 4000)}`);
  }
  throw error;
} finally {
  await browser.close();
  stdin.close(); // an open stdin would keep node running
}
