//! The load generator: the `steady` (open loop at a rate) and `max` (closed
//! loop at a concurrency) profiles of `streamstock simulate`.
//!
//! Each request is an order placed (1–3 lines over Zipf-skewed products),
//! or a confirmed order shipped or cancelled, in the proportions of the
//! `--mix`. A supplier receives the purchase orders the workers draft once
//! they are `--supplier-delay` old, so a long run reaches a steady state
//! instead of emptying the warehouse. Decisions are heard on the
//! dashboard's WebSocket, which gives each accepted order's decision
//! latency. Errors are counted by status, never fatal.

use super::recorder::{Answer, Outcome, Recorder, Verb};
use super::schedule::{corrected_latency, OpenLoop, Popularity};
use super::summary::{Percentiles, Summary};
use super::{order_body, Product, Simulator};
use crate::domain::status::OrderStatus;
use futures::StreamExt;
use rand::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// `rate` requests/s whatever the answers (at most `concurrency` in
    /// flight; a request due while all are busy waits, and its wait counts).
    Steady { rate: u32 },
    /// `concurrency` connections, each sending its next request as soon as
    /// the last is answered.
    Max,
}

/// The share of each kind of request, in parts
/// (`place=85,ship=12,cancel=3,partial=0,return=0,adjust=0`). `adjust`
/// books damage and shrinkage (a unit or two of a product written off, now
/// and then one found), conditional on the on-hand last read, as a
/// warehouse does. `partial` ships one unit of a confirmed order's first
/// line (the rest ships or is cancelled later); `return` takes back one
/// unit of an order shipped earlier in the run, restocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mix {
    pub place: u32,
    pub ship: u32,
    pub cancel: u32,
    pub partial: u32,
    pub returns: u32,
    pub adjust: u32,
}

impl Mix {
    /// The default: orders, ships and cancels.
    pub fn orders() -> Mix {
        Mix {
            place: 85,
            ship: 12,
            cancel: 3,
            ..Mix::default()
        }
    }

    fn total(&self) -> u32 {
        self.place + self.ship + self.cancel + self.partial + self.returns + self.adjust
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(text: &str) -> Result<Mix, String> {
        let mut mix = Mix::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, parts) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=parts, e.g. place=85"))?;
            let parts: u32 = parts
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the parts must be a whole number"))?;
            match name.trim() {
                "place" => mix.place = parts,
                "ship" => mix.ship = parts,
                "cancel" => mix.cancel = parts,
                "adjust" => mix.adjust = parts,
                "partial" => mix.partial = parts,
                "return" => mix.returns = parts,
                other => {
                    return Err(format!(
                    "unknown request kind `{other}` (place, ship, cancel, partial, return, adjust)"
                ))
                }
            }
        }
        if mix.place == 0 {
            return Err("the mix must place some orders (place=N with N > 0)".into());
        }
        Ok(mix)
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub pace: Pace,
    pub concurrency: usize,
    /// How long to send for, from the first request (the catalog's seeding
    /// and the wait for the gateway do not count); else until shutdown.
    pub duration: Option<Duration>,
    /// Stop after this many orders were sent (else at shutdown).
    pub orders: Option<u64>,
    pub seed: u64,
    pub mix: Mix,
    pub supplier_delay: Duration,
    /// How often the progress line is written.
    pub progress_every: Duration,
}

/// What one request does.
enum Action {
    Place(serde_json::Value),
    /// An order, and the product of its first line when known.
    Ship(Uuid, Option<Uuid>),
    Cancel(Uuid),
    /// One unit of the order's first line, of this product.
    Partial(Uuid, Uuid),
    /// One unit of this product back from the order, restocked.
    Return(Uuid, Uuid),
    /// A product and the adjustment's body.
    Adjust(Uuid, serde_json::Value),
}

impl Action {
    fn verb(&self) -> Verb {
        match self {
            Action::Place(_) => Verb::Place,
            Action::Ship(..) => Verb::Ship,
            Action::Cancel(_) => Verb::Cancel,
            Action::Partial(..) => Verb::Partial,
            Action::Return(..) => Verb::Return,
            Action::Adjust(..) => Verb::Adjust,
        }
    }
}

/// How long the end of a run waits for the last decisions.
const DECISION_GRACE: Duration = Duration::from_secs(5);

impl Simulator {
    /// Runs a load profile until `shutdown` or `--orders`, and sums it up.
    pub async fn run_load(
        self: Arc<Self>,
        options: LoadOptions,
        shutdown: CancellationToken,
    ) -> Summary {
        let products = self.prepare(&shutdown).await.unwrap_or_default();
        let recorder = Arc::new(Recorder::new());
        // Sending stops at the duration or the order count; the feed, the
        // supplier and the progress line run on until the last decisions
        // are heard.
        let stop = shutdown.child_token();
        let background = shutdown.child_token();
        if let Some(duration) = options.duration {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                stop.cancel();
            });
        }
        let (connected, feed_ready) = tokio::sync::oneshot::channel();
        let feed = tokio::spawn(listen_to_decisions(
            self.feed_request(),
            self.trust.websocket_connector(),
            recorder.clone(),
            connected,
            background.clone(),
        ));
        // Decisions of the first orders are heard only if the feed is open
        // before they are sent (a failure drops the sender at once).
        let _ = tokio::time::timeout(Duration::from_secs(5), feed_ready).await;
        let supplier = tokio::spawn(self.clone().supply(
            options.supplier_delay,
            recorder.clone(),
            background.clone(),
        ));
        let progress = tokio::spawn(report_progress(
            recorder.clone(),
            options.progress_every,
            background.clone(),
        ));
        if products.is_empty() {
            tracing::warn!("no products to order; nothing sent");
        } else {
            tracing::info!(pace = ?options.pace, concurrency = options.concurrency, seed = options.seed,
                products = products.len(), target = %self.target, "load run started");
            let world = Arc::new(World {
                popularity: Popularity::new(products.len()),
                products,
                mix: options.mix,
            });
            match options.pace {
                Pace::Steady { rate } => {
                    self.open_loop(rate, &options, world, &recorder, &stop)
                        .await
                }
                Pace::Max => self.closed_loop(&options, world, &recorder, &stop).await,
            }
        }
        let elapsed = recorder.started.elapsed();
        // The last decisions, briefly.
        let grace = Instant::now() + DECISION_GRACE;
        while Instant::now() < grace
            && recorder.feed_connected.load(Ordering::Relaxed)
            && !recorder.decisions.lock().expect("lock").pending.is_empty()
            && !shutdown.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        background.cancel();
        let _ = tokio::join!(feed, supplier, progress);
        {
            let decisions = recorder.decisions.lock().expect("lock");
            if !decisions.pending.is_empty() {
                let unheard: Vec<&Uuid> = decisions.pending.keys().take(10).collect();
                tracing::warn!(count = decisions.pending.len(), first = ?unheard, "accepted orders whose decision was not heard");
            }
        }
        summarise(&recorder, &options, elapsed)
    }

    /// The dashboard feed's handshake, with the bearer token when the
    /// gateway has one (the feed needs `read`).
    fn feed_request(&self) -> Result<FeedRequest, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let base = self
            .target
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let url = format!("{base}/ws/dashboard");
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("{url}: {e}"))?;
        if let Some(token) = &self.token {
            let bearer = format!("Bearer {}", secrecy::ExposeSecret::expose_secret(token));
            let value = bearer
                .parse()
                .map_err(|_| "the token is not a header value".to_string())?;
            request.headers_mut().insert("authorization", value);
        }
        Ok(request)
    }

    async fn open_loop(
        self: &Arc<Self>,
        rate: u32,
        options: &LoadOptions,
        world: Arc<World>,
        recorder: &Arc<Recorder>,
        stop: &CancellationToken,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(options.concurrency));
        let schedule = OpenLoop::new(Instant::now(), rate);
        let mut rng = StdRng::seed_from_u64(options.seed);
        for i in 0u64.. {
            let due = schedule.intended(i);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
            // All busy: this request waits, and its wait is counted.
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            };
            let action = world.next_action(&mut rng, recorder);
            let last = self.count_order(&action, options, recorder);
            let (simulator, recorder) = (self.clone(), recorder.clone());
            tokio::spawn(async move {
                simulator.send(action, due, &recorder).await;
                drop(slot);
            });
            if last {
                break;
            }
        }
        let _ = slots.acquire_many(options.concurrency as u32).await;
    }

    async fn closed_loop(
        self: &Arc<Self>,
        options: &LoadOptions,
        world: Arc<World>,
        recorder: &Arc<Recorder>,
        stop: &CancellationToken,
    ) {
        let connections = (0..options.concurrency).map(|c| {
            let (simulator, world, recorder, stop, options) = (
                self.clone(),
                world.clone(),
                recorder.clone(),
                stop.clone(),
                options.clone(),
            );
            let mut rng = StdRng::seed_from_u64(options.seed.wrapping_add(c as u64));
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let action = world.next_action(&mut rng, &recorder);
                    let last = simulator.count_order(&action, &options, &recorder);
                    simulator.send(action, Instant::now(), &recorder).await;
                    if last {
                        stop.cancel();
                    }
                }
            })
        });
        futures::future::join_all(connections).await;
    }

    /// Counts an order about to be sent; true when it is the last one
    /// `--orders` allows.
    fn count_order(&self, action: &Action, options: &LoadOptions, recorder: &Recorder) -> bool {
        if !matches!(action, Action::Place(_)) {
            return false;
        }
        let sent = recorder.orders_sent.fetch_add(1, Ordering::Relaxed) + 1;
        options.orders.is_some_and(|limit| sent >= limit)
    }

    /// Sends one request and records its outcome and latency (from `due`).
    async fn send(&self, action: Action, due: Instant, recorder: &Recorder) {
        let verb = action.verb();
        let request = match &action {
            Action::Place(body) => self.post("/api/orders").json(body),
            Action::Ship(order, _) => self.post(&format!("/api/orders/{order}/ship")),
            Action::Cancel(order) => self.post(&format!("/api/orders/{order}/cancel")),
            Action::Partial(order, product) => self
                .post(&format!("/api/orders/{order}/shipments"))
                .json(&serde_json::json!({"lines": [{"product_id": product, "quantity": 1}]})),
            Action::Return(order, product) => self
                .post(&format!("/api/orders/{order}/returns"))
                .json(&serde_json::json!({
                    "lines": [{"product_id": product, "quantity": 1, "disposition": "restock"}],
                    "reason": "load generator",
                })),
            Action::Adjust(product, body) => self
                .post(&format!("/api/products/{product}/adjustments"))
                .json(body),
        };
        let answer = request.send().await;
        let answered = Instant::now();
        let answer = match answer {
            Ok(response) => {
                let status = response.status();
                if !status.is_success() && !status.is_client_error() {
                    recorder.errors.fetch_add(1, Ordering::Relaxed);
                }
                if status == reqwest::StatusCode::ACCEPTED {
                    self.note_accepted(&action, response, due, recorder).await;
                }
                Answer::Status(status.as_u16())
            }
            Err(e) => {
                recorder.errors.fetch_add(1, Ordering::Relaxed);
                if e.is_timeout() {
                    Answer::Timeout
                } else if e.is_connect() {
                    Answer::Connect
                } else {
                    Answer::Error
                }
            }
        };
        let outcome = Outcome { verb, answer };
        recorder.outcome(outcome, corrected_latency(due, answered));
    }

    /// What an accepted request changes for the requests that follow: a
    /// placed order waits for its decision (its first line's product
    /// noted, for a partial shipment); a shipped one may come back; a
    /// partly shipped one is still there to ship or cancel.
    async fn note_accepted(
        &self,
        action: &Action,
        response: reqwest::Response,
        due: Instant,
        recorder: &Recorder,
    ) {
        match action {
            Action::Place(body) => {
                recorder.accepted.fetch_add(1, Ordering::Relaxed);
                let Ok(answer) = response.json::<serde_json::Value>().await else {
                    return;
                };
                let Some(order) = answer["order_id"].as_str().and_then(|id| id.parse().ok()) else {
                    return;
                };
                let first = body["items"][0]["product_id"]
                    .as_str()
                    .and_then(|id| id.parse().ok());
                let units = body["items"].as_array().map_or(0, |items| {
                    items.iter().filter_map(|i| i["quantity"].as_i64()).sum()
                });
                let mut decisions = recorder.decisions.lock().expect("lock");
                decisions.accepted(order, due);
                if let Some(product) = first {
                    decisions.note_first_product(order, product, units);
                }
            }
            Action::Ship(order, Some(product)) => recorder
                .decisions
                .lock()
                .expect("lock")
                .shipped(*order, *product),
            // The rest is still to ship or cancel (once: a second partial
            // could complete it).
            Action::Partial(order, product) => {
                let mut decisions = recorder.decisions.lock().expect("lock");
                decisions.shipped(*order, *product);
                decisions.confirmed.push_back(*order);
            }
            _ => {}
        }
    }

    /// The supplier: every second, receives each open purchase order once
    /// it is `delay` old, and restocks low products that have none.
    async fn supply(
        self: Arc<Self>,
        delay: Duration,
        recorder: Arc<Recorder>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(products) = self.products().await else {
                continue;
            };
            let mut round = super::SimulatorReport::default();
            self.supplier_round(&products, delay, &mut round).await;
            recorder
                .purchase_orders_received
                .fetch_add(round.deliveries, Ordering::Relaxed);
        }
    }
}

/// The products and how the run picks among them.
struct World {
    products: Vec<Product>,
    popularity: Popularity,
    mix: Mix,
}

impl World {
    /// The next request, by the mix: a command on an order (ship, cancel,
    /// partial, return) needs one heard confirmed (or shipped); without one
    /// it places an order instead.
    fn next_action(&self, rng: &mut StdRng, recorder: &Recorder) -> Action {
        let mix = &self.mix;
        let total = mix.total();
        let roll = rng.random_range(0..total);
        if roll >= total - mix.adjust {
            let product = &self.products[self.popularity.pick(rng)];
            return Action::Adjust(product.id, super::write_off(rng));
        }
        if roll >= mix.place {
            let mut decisions = recorder.decisions.lock().expect("lock");
            let command = roll - mix.place;
            if command >= mix.ship + mix.cancel + mix.partial {
                if let Some((order, product)) = decisions.shipped.pop_front() {
                    return Action::Return(order, product);
                }
            } else if let Some(order) = decisions.confirmed.pop_front() {
                let first = decisions.first_product.remove(&order);
                return if command < mix.ship {
                    Action::Ship(order, first.map(|(product, _)| product))
                } else if command < mix.ship + mix.cancel {
                    Action::Cancel(order)
                } else {
                    match first {
                        // One unit of an order of several: the rest ships
                        // (or is cancelled) later.
                        Some((product, units)) if units > 1 => Action::Partial(order, product),
                        _ => Action::Ship(order, None),
                    }
                };
            }
        }
        Action::Place(self.order(rng))
    }

    /// 1–3 lines over distinct products picked by popularity, 1–4 units each.
    fn order(&self, rng: &mut StdRng) -> serde_json::Value {
        let lines = rng.random_range(1..=3.min(self.products.len()));
        let mut picked: Vec<usize> = Vec::with_capacity(lines);
        while picked.len() < lines {
            let i = self.popularity.pick(rng);
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let ids: Vec<Uuid> = picked.iter().map(|&i| self.products[i].id).collect();
        order_body(rng, &ids)
    }
}

/// Hears decisions on the dashboard feed until `stop`.
type FeedRequest = tokio_tungstenite::tungstenite::handshake::client::Request;

async fn listen_to_decisions(
    request: Result<FeedRequest, String>,
    tls: Option<tokio_tungstenite::Connector>,
    recorder: Arc<Recorder>,
    connected: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) {
    use tokio_tungstenite::tungstenite::Message;
    let url = match &request {
        Ok(request) => request.uri().to_string(),
        Err(e) => e.clone(),
    };
    let connected_socket = match request {
        Ok(request) => tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let mut socket = match connected_socket {
        Ok((socket, _)) => socket,
        Err(e) => {
            tracing::warn!(error = %e, %url, "no dashboard feed: decision latency is not measured");
            return;
        }
    };
    recorder.feed_connected.store(true, Ordering::Relaxed);
    // The gateway subscribes a feed to the changes before it sends the
    // first snapshot: from that message on, no decision is missed.
    let mut connected = Some(connected);
    #[derive(serde::Deserialize)]
    struct Changes {
        status_changes: Vec<Change>,
    }
    #[derive(serde::Deserialize)]
    struct Change {
        order_id: Uuid,
        status: String,
    }
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = socket.next() => message,
        };
        if let Some(connected) = connected.take() {
            let _ = connected.send(());
        }
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                tracing::warn!("the dashboard feed closed: later decisions are not timed");
                recorder.feed_connected.store(false, Ordering::Relaxed);
                return;
            }
        };
        let at = Instant::now();
        // Snapshots do not parse as changes and are skipped.
        if let Ok(changes) = serde_json::from_str::<Changes>(&text) {
            let mut decisions = recorder.decisions.lock().expect("lock");
            for change in changes.status_changes {
                // A status this client does not know (a newer gateway's)
                // decides nothing it waits for.
                if let Some(status) = OrderStatus::parse(&change.status) {
                    decisions.heard(change.order_id, status, at);
                }
            }
        }
    }
    let _ = socket.close(None).await;
}

/// Every `every`: the rate, the latency since the last update and what was
/// not accepted, on a live line when stderr is a terminal (indicatif), as
/// log lines otherwise.
async fn report_progress(recorder: Arc<Recorder>, every: Duration, stop: CancellationToken) {
    use std::io::IsTerminal;
    let live = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let every = if live.is_some() {
        Duration::from_secs(1)
    } else {
        every
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last_total = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (p50, p99, total) = {
            let mut recent = recorder.recent.lock().expect("lock");
            let (p50, p99) = (
                recent.value_at_quantile(0.5) as f64 / 1000.0,
                recent.value_at_quantile(0.99) as f64 / 1000.0,
            );
            (p50, p99, recorder.fold_recent(&mut recent))
        };
        let not_accepted = recorder.outcomes_by_label(|outcome| !outcome.accepted());
        let rate = ((total - last_total) as f64 / every.as_secs_f64()).round();
        let accepted = recorder.accepted.load(Ordering::Relaxed);
        last_total = total;
        match &live {
            Some(bar) => bar.set_message(format!(
                "{rate:.0} req/s  p50 {p50:.1} ms  p99 {p99:.1} ms  orders accepted {accepted}  not accepted {not_accepted:?}"
            )),
            None => tracing::info!(
                elapsed_s = recorder.started.elapsed().as_secs(),
                rate,
                p50_ms = p50,
                p99_ms = p99,
                accepted,
                ?not_accepted,
                "load"
            ),
        }
    }
    if let Some(bar) = live {
        bar.finish_and_clear();
    }
}

fn summarise(recorder: &Recorder, options: &LoadOptions, elapsed: Duration) -> Summary {
    let requests = recorder.outcomes_by_label(|_| true);
    let requests_total: u64 = requests.values().sum();
    let decisions = recorder.decisions.lock().expect("lock");
    Summary {
        profile: match options.pace {
            Pace::Steady { .. } => "steady".into(),
            Pace::Max => "max".into(),
        },
        target_rate: match options.pace {
            Pace::Steady { rate } => Some(rate),
            Pace::Max => None,
        },
        concurrency: options.concurrency,
        seed: options.seed,
        elapsed_s: elapsed.as_secs_f64(),
        requests_total,
        achieved_rate: requests_total as f64 / elapsed.as_secs_f64().max(1e-9),
        requests,
        orders_accepted: recorder.accepted.load(Ordering::Relaxed),
        errors: recorder.errors.load(Ordering::Relaxed),
        latency: {
            recorder.fold_recent(&mut recorder.recent.lock().expect("lock"));
            Percentiles::of(&recorder.latency.lock().expect("lock"))
        },
        accepted_latency: Percentiles::of(&recorder.accepted_latency.lock().expect("lock")),
        decision_latency: decisions.latency.as_ref().and_then(Percentiles::of),
        decisions_missing: decisions.pending.len() as u64,
        purchase_orders_received: recorder.purchase_orders_received.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::super::recorder::Decisions;
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn the_mix_parses_and_refuses_nonsense() {
        assert_eq!(
            "place=80, ship=15,cancel=5".parse::<Mix>(),
            Ok(Mix {
                place: 80,
                ship: 15,
                cancel: 5,
                ..Mix::default()
            })
        );
        assert_eq!(
            "place=1".parse::<Mix>(),
            Ok(Mix {
                place: 1,
                ..Mix::default()
            })
        );
        assert!("ship=10".parse::<Mix>().is_err());
        assert_eq!("place=9,adjust=1".parse::<Mix>().map(|m| m.adjust), Ok(1));
        assert_eq!(
            "place=8,partial=1,return=1"
                .parse::<Mix>()
                .map(|m| (m.partial, m.returns)),
            Ok((1, 1))
        );
        assert!("place=x".parse::<Mix>().is_err());
        assert!("place=1,refund=2".parse::<Mix>().is_err());
        assert!("place".parse::<Mix>().is_err());
    }

    #[test]
    fn a_decision_heard_before_its_202_is_still_timed() {
        let mut decisions = Decisions::default();
        let due = Instant::now();
        let (early, late) = (Uuid::now_v7(), Uuid::now_v7());
        decisions.heard(
            early,
            OrderStatus::Confirmed,
            due + Duration::from_millis(3),
        );
        decisions.accepted(early, due);
        decisions.accepted(late, due);
        decisions.heard(late, OrderStatus::Rejected, due + Duration::from_millis(7));
        let latency = decisions.latency.as_ref().unwrap();
        assert_eq!(latency.len(), 2);
        assert!(decisions.pending.is_empty() && decisions.early.is_empty());
        assert_eq!(decisions.confirmed, VecDeque::from([early]));
    }
}
