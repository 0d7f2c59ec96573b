//! The webhook deliverer: POSTs each subscription's events, in `seq` order,
//! to its URL, signed (see `domain::webhooks`).
//!
//! A subscription belongs to the partition its id hashes to, so the worker
//! holding that partition's lease delivers it, and a subscription moves
//! with its partition as any work does. Each owned, active subscription has
//! a task of its own: one request in flight and one page of events (at
//! most `PAGE`) in memory, so a slow or dead endpoint holds up only its own
//! subscription.
//!
//! Delivery is at least once and in order: the next event is sent only
//! after the one before it was answered 2xx, and the cursor (the last seq
//! delivered, in `subscription_progress`) moves only after a 2xx, written
//! every `FLUSH_EVERY` while events flow, when the subscription is caught
//! up and when its task stops (a crash sends again at most what was
//! delivered since), with the newest of the attempts (the delivery log
//! keeps the last 100). The cursor moves with a compare-and-set
//! on its old value: a deliverer that lost its partition without knowing
//! it (a stale owner) cannot move it, and stops at its next write.
//!
//! A failed attempt is retried after a backoff that doubles from 1 s to at
//! most a minute. When every attempt has failed for `pause_after`, the
//! deliverer appends `subscription.paused` (automatic); the worker that
//! applies it raises an alert. The cursor stays where it is.

use crate::domain::events::SubscriptionPaused;
use crate::domain::webhooks::{self, AllowList};
use crate::domain::DomainEvent;
use crate::store::feed::{FeedEvent, TypeFilter};
use crate::store::subscriptions::{DeliveryAttempt, DeliveryTarget, SubscriptionState};
use crate::store::Store;
use crate::stream::{EventLog, Holdings};
use crate::telemetry::webhook_series::SubscriptionSeries;
use chrono::Utc;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events a subscription's task reads per page.
const PAGE: i64 = 100;
/// How often the cursor is written while events are being delivered.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How often the deliverer looks for subscriptions that were created,
/// changed or moved to or from this worker.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How long an idle subscription waits before it looks again without a
/// commit announcement (they are best effort).
const FALLBACK_CHECK: Duration = Duration::from_secs(1);
/// The first retry's wait and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// `--webhook-*` settings.
#[derive(Debug, Clone)]
pub struct DelivererSettings {
    pub allow: AllowList,
    /// A delivery's whole time limit: connecting, sending, the answer's head.
    pub timeout: Duration,
    /// How long every attempt may fail before the subscription is paused.
    pub pause_after: Duration,
    /// The most subscriptions a worker delivers at once.
    pub max_subscriptions: usize,
}

impl Default for DelivererSettings {
    fn default() -> DelivererSettings {
        DelivererSettings {
            allow: AllowList::default(),
            timeout: Duration::from_secs(10),
            pause_after: Duration::from_secs(3600),
            max_subscriptions: 100,
        }
    }
}

pub struct Deliverer {
    pub log: Arc<dyn EventLog>,
    pub store: Store,
    pub settings: DelivererSettings,
}

/// One running subscription task: its latest settings and its stop.
struct Running {
    target: watch::Sender<DeliveryTarget>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Deliverer {
    pub async fn run(self, owned: watch::Receiver<Holdings>, stop: CancellationToken) {
        let client = match http_client(&self.settings) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client; no webhooks are delivered");
                return;
            }
        };
        // Commits wake the idle subscriptions.
        let (commits, _) = watch::channel(0u64);
        let commits = Arc::new(commits);
        let listener = {
            let (commits, stop) = (commits.clone(), stop.clone());
            let mut announcements = self.log.announcements();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        heard = announcements.recv() => match heard {
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                commits.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                    }
                }
            })
        };
        let mut running: HashMap<Uuid, Running> = HashMap::new();
        // Subscriptions this worker paused, until its pause is applied.
        let paused_here: PausedHere = Default::default();
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            running.retain(|_, r| !r.task.is_finished());
            paused_here
                .lock()
                .expect("paused lock")
                .retain(|_, p| p.at.elapsed() < PAUSE_APPLIED_WITHIN);
            let held = owned.borrow().clone();
            let targets = match self.store.delivery_targets().await {
                Ok(targets) => targets,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook subscriptions; will retry");
                    continue;
                }
            };
            {
                // A pause this worker made was applied (or something else
                // changed the subscription since): it no longer needs
                // keeping from a restart (a resume starts it again).
                let mut paused = paused_here.lock().expect("paused lock");
                for t in &targets {
                    if paused.get(&t.id).is_some_and(|p| p.version != t.updated_at) {
                        paused.remove(&t.id);
                    }
                }
            }
            let mine: HashMap<Uuid, DeliveryTarget> = targets
                .into_iter()
                .filter(|t| {
                    t.state == SubscriptionState::Active
                        && held.holds(self.log.partition_of(&t.id.to_string()))
                        && !paused_here.lock().expect("paused lock").contains_key(&t.id)
                })
                .take(self.settings.max_subscriptions)
                .map(|t| (t.id, t))
                .collect();
            running.retain(|id, r| {
                let keep = mine.contains_key(id);
                if !keep {
                    r.stop.cancel();
                }
                keep
            });
            for (id, target) in mine {
                match running.get(&id) {
                    // Only a change of what it is told (not of its own
                    // cursor or counters) interrupts a running task.
                    Some(r) => {
                        r.target.send_if_modified(|current| {
                            let changed = !same_settings(current, &target);
                            *current = target;
                            changed
                        });
                    }
                    None => {
                        let (sender, receiver) = watch::channel(target);
                        let task_stop = stop.child_token();
                        let delivery = Subscription {
                            id,
                            store: self.store.clone(),
                            log: self.log.clone(),
                            client: client.clone(),
                            settings: self.settings.clone(),
                            target: receiver,
                            commits: commits.subscribe(),
                            stop: task_stop.clone(),
                            paused_here: paused_here.clone(),
                            series: SubscriptionSeries::open(id.to_string()),
                        };
                        let task = tokio::spawn(delivery.run());
                        running.insert(
                            id,
                            Running {
                                target: sender,
                                stop: task_stop,
                                task,
                            },
                        );
                    }
                }
            }
            metrics::gauge!(crate::telemetry::metrics::WEBHOOK_SUBSCRIPTIONS_DELIVERING)
                .set(running.len() as f64);
        }
        for (_, r) in running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
        listener.abort();
    }
}

/// Whether two reads of a subscription tell its deliverer the same: the
/// cursor and failure times are the deliverer's own doing.
fn same_settings(a: &DeliveryTarget, b: &DeliveryTarget) -> bool {
    (&a.url, &a.event_types, a.state, &a.secret, &a.rewind)
        == (&b.url, &b.event_types, b.state, &b.secret, &b.rewind)
}

/// The client every delivery goes through: no redirects followed, a time
/// limit, and a resolver that drops the addresses the allow-list refuses.
fn http_client(settings: &DelivererSettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(1)
        .user_agent(concat!("StreamStock-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(AllowedResolver {
            allow: settings.allow.clone(),
        }))
        .build()
}

/// Resolves with the system's resolver, then keeps only the addresses the
/// allow-list permits: a name that now leads somewhere refused (its DNS
/// changed since the subscription was created) is not connected to.
struct AllowedResolver {
    allow: AllowList,
}

impl reqwest::dns::Resolve for AllowedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if crate::faults::webhook_resolve_unchecked() {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow.refusal(a.ip()).is_none())
                .collect();
            if permitted.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| allow.refusal(a.ip()))
                    .unwrap_or("no address");
                return Err(format!(
                    "{host} resolves to {why}, which --webhook-allow does not list"
                )
                .into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Where an address-literal URL leads, checked (names are checked by the
/// resolver).
fn literal_refusal(url: &url::Url, allow: &AllowList) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => std::net::IpAddr::V4(v4),
        url::Host::Ipv6(v6) => std::net::IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    allow
        .refusal(ip)
        .map(|why| format!("{ip} is {why}, which --webhook-allow does not list"))
}

/// One subscription's delivery loop.
struct Subscription {
    id: Uuid,
    store: Store,
    log: Arc<dyn EventLog>,
    client: reqwest::Client,
    settings: DelivererSettings,
    target: watch::Receiver<DeliveryTarget>,
    commits: watch::Receiver<u64>,
    stop: CancellationToken,
    paused_here: PausedHere,
    /// Its lag and delivery counts on `/metrics`, while this task lives.
    series: SubscriptionSeries,
}

/// Subscriptions a worker paused, when, and the version (`updated_at`) of
/// the settings it paused: not started again until that version changes
/// (the pause applied) or `PAUSE_APPLIED_WITHIN` passed (it was lost).
type PausedHere = Arc<std::sync::Mutex<HashMap<Uuid, PausedAt>>>;

struct PausedAt {
    at: Instant,
    version: i64,
}
const PAUSE_APPLIED_WITHIN: Duration = Duration::from_secs(30);

/// How one event's delivery ended.
enum Outcome {
    Delivered,
    /// The task must stop: asked to, paused, or its cursor moved elsewhere.
    Stop,
}

/// What is delivered but not yet written.
struct Unflushed {
    /// The cursor as last written.
    written: i64,
    /// The cursor as delivered.
    cursor: i64,
    attempts: Vec<DeliveryAttempt>,
    failing_since: Option<i64>,
    since: Instant,
}

impl Subscription {
    async fn run(mut self) {
        let first = self.target.borrow().clone();
        let mut state = Unflushed {
            written: first.cursor,
            cursor: first.cursor,
            attempts: Vec::new(),
            failing_since: first.failing_since,
            since: Instant::now(),
        };
        let subscription = self.id.to_string();
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let target = self.target.borrow_and_update().clone();
            if let Some((to, rewind_id)) = &target.rewind {
                if !self.flush(&mut state).await {
                    break;
                }
                match self.store.take_rewind(self.id, *to, rewind_id).await {
                    Ok(true) => {
                        tracing::info!(subscription, to, "webhook subscription rewound");
                        state.written = *to;
                        state.cursor = *to;
                        state.failing_since = None;
                    }
                    // Taken up already; the refresh has yet to say so.
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(subscription, error = %e, "cannot take up a rewind; will retry");
                        self.pause(FALLBACK_CHECK).await;
                        continue;
                    }
                }
                // The refresh brings the target without the rewind.
                self.target.borrow_and_update();
                let _ = tokio::time::timeout(REFRESH_EVERY * 2, self.target.changed()).await;
                continue;
            }
            let types = TypeFilter::of(&target.event_types).unwrap_or_default();
            self.commits.borrow_and_update();
            let page = match self.store.feed_page(state.cursor, PAGE, &types).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(subscription, error = %e, "cannot read the feed; will retry");
                    self.pause(FALLBACK_CHECK).await;
                    continue;
                }
            };
            let lag_events = (page.head - state.cursor).max(0);
            let lag_seconds = page
                .events
                .first()
                .map(|e| (Utc::now() - e.archived_at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            self.series.set_lag(lag_events, lag_seconds);
            if page.events.is_empty() {
                state.cursor = page.next;
                if !self.flush(&mut state).await {
                    break;
                }
                if page.next >= page.head {
                    tokio::select! {
                        _ = self.stop.cancelled() => {}
                        _ = self.commits.changed() => {}
                        _ = self.target.changed() => {}
                        _ = tokio::time::sleep(FALLBACK_CHECK) => {}
                    }
                }
                continue;
            }
            let ahead = crate::faults::webhook_cursor_ahead();
            if ahead {
                state.cursor = page.next;
                if !self.flush(&mut state).await {
                    break;
                }
            }
            let mut stopped = false;
            for event in &page.events {
                match self.deliver(&target, event, &mut state).await {
                    Outcome::Delivered if ahead => {}
                    Outcome::Delivered => {
                        state.cursor = event.seq;
                        if state.since.elapsed() >= FLUSH_EVERY && !self.flush(&mut state).await {
                            stopped = true;
                            break;
                        }
                    }
                    Outcome::Stop => {
                        stopped = true;
                        break;
                    }
                }
            }
            if !page.events.is_empty() && page.next > state.cursor && !stopped {
                state.cursor = page.next;
            }
            // Written every `FLUSH_EVERY` while pages follow each other (a
            // write per page would cost the database more than the
            // deliveries), and at once when this task stops.
            if stopped || (state.since.elapsed() >= FLUSH_EVERY && !self.flush(&mut state).await) {
                break;
            }
        }
        self.flush(&mut state).await;
    }

    /// Writes the cursor and the attempts; false if the cursor was moved by
    /// someone else (the task stops: its successor reads the new one).
    async fn flush(&self, state: &mut Unflushed) -> bool {
        if state.cursor == state.written && state.attempts.is_empty() {
            return true;
        }
        state.since = Instant::now();
        match self
            .store
            .record_deliveries(
                self.id,
                state.written,
                state.cursor,
                &state.attempts,
                state.failing_since,
            )
            .await
        {
            Ok(true) => {
                state.written = state.cursor;
                state.attempts.clear();
                true
            }
            Ok(false) => {
                tracing::info!(subscription = %self.id, "the subscription's cursor moved elsewhere; this deliverer stops");
                false
            }
            Err(e) => {
                tracing::warn!(subscription = %self.id, error = %e, "cannot record deliveries; will retry");
                true
            }
        }
    }

    /// Sends one event until a 2xx, retrying with backoff; pauses the
    /// subscription once it has failed for `pause_after`.
    async fn deliver(
        &mut self,
        target: &DeliveryTarget,
        event: &FeedEvent,
        state: &mut Unflushed,
    ) -> Outcome {
        let subscription = self.id.to_string();
        // Serialised once; each attempt shares it (no copy per attempt).
        let body =
            axum::body::Bytes::from(serde_json::to_vec(event).expect("feed events serialize"));
        let mut wait = FIRST_RETRY;
        for attempt in 1.. {
            if self.stop.is_cancelled() {
                return Outcome::Stop;
            }
            let started = Instant::now();
            let result = self.post(target, event, &body, attempt).await;
            let latency_ms = started.elapsed().as_millis() as i64;
            let now = Utc::now();
            let (status, error) = match result {
                Ok(status) if (200..300).contains(&status) => (Some(i64::from(status)), None),
                Ok(status) => (Some(i64::from(status)), Some(format!("answered {status}"))),
                Err(e) => (None, Some(e)),
            };
            let delivered = error.is_none();
            self.series.count_attempt(delivered);
            state.attempts.push(DeliveryAttempt {
                seq: event.seq,
                event_id: event.envelope.event_id,
                attempt,
                status,
                error: error.clone(),
                latency_ms,
                attempted_at: now,
            });
            if delivered {
                state.failing_since = None;
                return Outcome::Delivered;
            }
            let since = *state.failing_since.get_or_insert(now.timestamp_millis());
            tracing::debug!(
                subscription,
                seq = event.seq,
                attempt,
                error = error.as_deref().unwrap_or_default(),
                "a webhook delivery failed"
            );
            if !self.flush(state).await {
                return Outcome::Stop;
            }
            let failing_for = Duration::from_millis((now.timestamp_millis() - since).max(0) as u64);
            if failing_for >= self.settings.pause_after {
                self.pause_subscription(error.unwrap_or_default(), failing_for)
                    .await;
                return Outcome::Stop;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Outcome::Stop,
                _ = tokio::time::sleep(wait) => {}
                // A rewind, a pause or a new URL: start over from the top.
                _ = self.target.changed() => return Outcome::Stop,
            }
            wait = (wait * 2).min(LONGEST_RETRY);
        }
        unreachable!("the attempts go on until one ends the loop")
    }

    async fn post(
        &self,
        target: &DeliveryTarget,
        event: &FeedEvent,
        body: &axum::body::Bytes,
        attempt: i64,
    ) -> Result<u16, String> {
        let url = webhooks::check_url(&target.url).map_err(|e| format!("the URL {e}"))?;
        if let Some(refused) = literal_refusal(&url, &self.settings.allow) {
            return Err(refused);
        }
        let timestamp = Utc::now().timestamp();
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                webhooks::SIGNATURE_HEADER,
                webhooks::sign(&target.secret, timestamp, body),
            )
            .header(
                webhooks::EVENT_ID_HEADER,
                event.envelope.event_id.to_string(),
            )
            .header(webhooks::SEQ_HEADER, event.seq.to_string())
            .header(webhooks::ATTEMPT_HEADER, attempt.to_string())
            .header(webhooks::SUBSCRIPTION_HEADER, self.id.to_string())
            .body(body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        // The answer's body is not read: nothing in it matters, and an
        // endpoint cannot make the worker hold a large one.
        Ok(response.status().as_u16())
    }

    /// Appends the automatic pause; the cursor stays.
    async fn pause_subscription(&self, error: String, failing_for: Duration) {
        let reason = format!(
            "every delivery failed for {} s (last: {error})",
            failing_for.as_secs()
        );
        tracing::warn!(subscription = %self.id, %reason, "pausing a failing webhook subscription");
        let event = DomainEvent::SubscriptionPaused(SubscriptionPaused {
            subscription_id: self.id,
            reason: Some(reason),
            automatic: true,
        })
        .into_envelope(Utc::now());
        match self.log.append(&event).await {
            Ok(_) => {
                let version = self.target.borrow().updated_at;
                self.paused_here.lock().expect("paused lock").insert(
                    self.id,
                    PausedAt {
                        at: Instant::now(),
                        version,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(subscription = %self.id, error = %e, "cannot pause the subscription; will try again");
            }
        }
    }

    async fn pause(&self, how_long: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(how_long) => {}
        }
    }
}

/// A request error in a line: what failed, with its source.
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
