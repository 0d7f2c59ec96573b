// Drives the real dashboard in headless Chromium (playwright-core, Debian's
// chromium) against a running StreamStock, and checks that what a person
// sees is the server's truth and updates live:
//   node e2e/dashboard.mjs <base-url> <screenshot.png>
// Exits non-zero with a message on the first failed check.
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node e2e/dashboard.mjs <base-url> <screenshot.png>");
  process.exit(2);
}
const executablePath = process.env.STREAMSTOCK_TEST_CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function api(path, init) {
  const response = await fetch(base + path, init);
  check(response.ok, `${init?.method ?? "GET"} ${path} answered ${response.status}`);
  return response.json();
}

const browser = await chromium.launch({
  executablePath,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(e.message));

  await page.goto(base + "/");
  await page.getByTestId("connection").filter({ hasText: "live" }).waitFor({ timeout: 15000 });

  // The inventory table shows every product with the server's figures.
  const products = await api("/api/products");
  check(products.length > 0, "the test needs products");
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="inventory"] tbody tr').length === n,
    products.length,
    { timeout: 15000 },
  );
  for (const p of products) {
    const row = page.locator('[data-testid="inventory"] tbody tr', { hasText: p.sku });
    const cells = await row.locator("td").allInnerTexts();
    check(cells[3] === String(p.on_hand), `${p.sku}: page shows on hand ${cells[3]}, API ${p.on_hand}`);
    check(cells[5] === String(p.available), `${p.sku}: page shows available ${cells[5]}, API ${p.available}`);
  }

  // The figures are the server's.
  const stats = await api("/api/stats");
  const shown = async (id) => (await page.getByTestId(id).innerText()).trim();
  check((await shown("order-count")) === String(stats.order_count), `order count ${await shown("order-count")} vs ${stats.order_count}`);
  check(
    (await shown("status-CONFIRMED")) === String(stats.orders_by_status.CONFIRMED),
    `confirmed ${await shown("status-CONFIRMED")} vs ${stats.orders_by_status.CONFIRMED}`,
  );

  // A new order shows up without reloading: pushed over the WebSocket.
  const before = Number(await shown("order-count"));
  const placed = await api("/api/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      customer_email: "browser@example.com",
      items: [{ product_id: products[0].id, quantity: 1 }],
    }),
  });
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="order-count"]')?.textContent) === n,
    before + 1,
    { timeout: 15000 },
  );
  await page
    .locator('[data-testid="orders"] tbody tr', { hasText: placed.order_id.slice(-8) })
    .waitFor({ timeout: 15000 });

  // Throughput charts: uPlot canvases fed the server's windows of event time.
  for (const id of ["chart-per-second", "chart-per-minute"]) {
    await page.locator(`[data-testid="${id}"] canvas`).first().waitFor({ timeout: 15000 });
  }
  const after = await api("/api/stats");
  const placedLastHour = after.throughput.per_minute.reduce((n, w) => n + w.placed, 0);
  check(placedLastHour === before + 1, `the API's windows hold ${placedLastHour} placed orders, not ${before + 1}`);
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="chart-per-minute"]')?.dataset.placed) === n,
    placedLastHour,
    { timeout: 15000 },
  );

  // Top products and open purchase orders are the server's.
  const top = after.top_products;
  check(top.length > 0, "the test needs sales");
  await page.waitForFunction(
    (t) => {
      const cells = [...document.querySelectorAll('[data-testid="top-products"] tbody tr:first-child td')].map((c) => c.textContent);
      return cells[0] === t.sku && cells[2] === String(t.units);
    },
    top[0],
    { timeout: 15000 },
  );
  const open = await api("/api/purchase-orders?status=OPEN");
  if (open.length === 0) {
    await page.getByTestId("purchase-orders-empty").waitFor({ timeout: 15000 });
  } else {
    await page
      .locator('[data-testid="purchase-orders"] tbody tr', { hasText: open[0].id.slice(-8) })
      .waitFor({ timeout: 15000 });
  }

  // The alert feed shows the server's alerts (or says there are none).
  const alerts = await api("/api/alerts");
  if (alerts.length === 0) {
    await page.getByTestId("alerts-empty").waitFor({ timeout: 15000 });
  } else {
    await page.getByTestId("alerts").filter({ hasText: alerts[0].message }).waitFor({ timeout: 15000 });
  }

  await page.screenshot({ path: screenshot, fullPage: true });
  check(problems.length === 0, `the page reported errors: ${problems.join("; ")}`);
  console.log(JSON.stringify({ ok: true, products: products.length, orders: before + 1, screenshot }));
} finally {
  await browser.close();
}
