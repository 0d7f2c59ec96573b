//! Prometheus metrics for every role, served as text on `/metrics`.
//! One process-wide recorder; roles record through the `metrics` macros.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const EVENTS_PROCESSED: &str = "streamstock_events_processed_total";
pub const BATCH_SECONDS: &str = "streamstock_batch_duration_seconds";
pub const EVENT_LATENCY_SECONDS: &str = "streamstock_event_latency_seconds";
pub const EVENTS_APPENDED: &str = "streamstock_events_appended_total";
pub const APPEND_SECONDS: &str = "streamstock_append_duration_seconds";
pub const PARTITION_LAG: &str = "streamstock_partition_lag";
pub const PARTITION_PENDING: &str = "streamstock_partition_pending";
pub const PARTITION_OWNED: &str = "streamstock_partition_owned";
pub const DEAD_LETTERS: &str = "streamstock_dead_letters";
pub const WORKER_UP: &str = "streamstock_worker_up";
pub const REQUESTS_SHED: &str = "streamstock_requests_shed_total";
pub const GATEWAY_BACKLOG: &str = "streamstock_gateway_backlog";
pub const LOG_RETAINED_ENTRIES: &str = "streamstock_log_retained_entries";
pub const LOG_RETAINED_BYTES: &str = "streamstock_log_retained_bytes";
pub const LOG_TRIMMED: &str = "streamstock_log_trimmed_entries_total";
pub const WINDOWS_PRUNED: &str = "streamstock_throughput_windows_pruned_total";
pub const DEAD_LETTER_ALERT_AT: &str = "streamstock_dead_letter_alert_threshold";
pub const HTTP_REQUESTS: &str = "streamstock_http_requests_total";
pub const HTTP_SECONDS: &str = "streamstock_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "streamstock_http_requests_in_flight";
pub const ANNOUNCEMENTS_HEARD: &str = "streamstock_announcements_heard_total";
pub const FENCED_BATCHES: &str = "streamstock_fenced_batches_total";
pub const INVARIANT_VIOLATIONS: &str = "streamstock_invariant_violations_total";
pub const EPOCHS_REISSUED: &str = "streamstock_lease_epochs_reissued_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "streamstock_http_connections_open";
pub const HTTP_CONNECTIONS_CLOSED: &str = "streamstock_http_connections_closed_total";
pub const HTTP_ACCEPT_ERRORS: &str = "streamstock_http_accept_errors_total";
pub const AUTH_REFUSALS: &str = "streamstock_auth_refusals_total";
pub const LOG_LOST_ENTRIES: &str = "streamstock_log_lost_entries_total";
pub const HOLD_EXPIRIES_REQUESTED: &str = "streamstock_hold_expiries_requested_total";
pub const HOLD_EXPIRY_LAG_SECONDS: &str = "streamstock_hold_expiry_lag_seconds";
pub const HOLDS_OVERDUE_SECONDS: &str = "streamstock_holds_overdue_seconds";
pub const WEBHOOK_SUBSCRIPTIONS_DELIVERING: &str = "streamstock_webhook_subscriptions_delivering";
const LOG_AUDITS: &str = "streamstock_log_audits_total";
const LEDGER_MISMATCHED: &str = "streamstock_ledger_mismatched_products";
const LEDGER_AUDITS: &str = "streamstock_ledger_audits_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Counts an invariant found broken in the code (`INVARIANT_VIOLATIONS`);
/// the caller logs what it stopped.
pub fn invariant_broken(invariant: &'static str) {
    metrics::counter!(INVARIANT_VIOLATIONS, "invariant" => invariant).increment(1);
}

/// Counts a lease epoch the lease store issued although it was already
/// claimed (`EPOCHS_REISSUED`): the worker took a later one instead.
pub fn epoch_reissued() {
    metrics::counter!(EPOCHS_REISSUED).increment(1);
}

/// Counts an audit of the read model against the log (`LOG_AUDITS`) and
/// the applied events it found the log had lost (`LOG_LOST_ENTRIES`).
pub fn log_audited(newly_lost: u64) {
    metrics::counter!(LOG_AUDITS).increment(1);
    metrics::counter!(LOG_LOST_ENTRIES).increment(newly_lost);
}

/// Records a self-audit of the stock ledger: how many products' last
/// ledger row is not their figures (`LEDGER_MISMATCHED`, 0 when sound).
pub fn ledger_audited(mismatched: i64) {
    metrics::counter!(LEDGER_AUDITS).increment(1);
    metrics::gauge!(LEDGER_MISMATCHED).set(mismatched as f64);
}

/// Everything `/metrics` shows: the recorder's series, then the
/// per-subscription webhook series (kept apart, see `webhook_series`).
pub fn render() -> String {
    let mut text = handle().render();
    text.push_str(&super::webhook_series::render());
    text
}

/// The process's recorder, installed (with the metrics' descriptions and an
/// upkeep thread) on first use. Every role calls it before recording.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .install_recorder()
            .expect("the metrics recorder is installed once");
        describe();
        // Histogram samples wait in the recorder until drained: keep them
        // bounded even when nobody scrapes. A thread, not a task, so it does
        // not depend on which tokio runtime installed the recorder.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("the metrics upkeep thread starts");
        handle
    })
}

fn describe() {
    metrics::describe_gauge!(
        WEBHOOK_SUBSCRIPTIONS_DELIVERING,
        "Webhook subscriptions this worker delivers (those of its partitions, active)"
    );
    metrics::describe_counter!(
        HOLD_EXPIRIES_REQUESTED,
        "Expiry requests (order.expire_requested) this worker's sweep appended for holds that ran out"
    );
    metrics::describe_histogram!(
        HOLD_EXPIRY_LAG_SECONDS,
        "Time from a hold's deadline to the sweep's request to expire it"
    );
    metrics::describe_gauge!(
        HOLDS_OVERDUE_SECONDS,
        "How long the oldest hold still held past its deadline has been due, at the last sweep (0: none)"
    );
    metrics::describe_counter!(
        AUTH_REFUSALS,
        "Requests refused for their token, by reason (unauthorized, insufficient_scope)"
    );
    metrics::describe_gauge!(
        HTTP_CONNECTIONS_OPEN,
        "HTTP connections open, by listener (WebSockets included)"
    );
    metrics::describe_counter!(
        HTTP_CONNECTIONS_CLOSED,
        "HTTP connections closed, by listener and reason (finished, max_connections, max_per_address, header_timeout, idle_timeout, tls_handshake)"
    );
    metrics::describe_counter!(
        HTTP_ACCEPT_ERRORS,
        "Errors accepting connections (as when the process runs out of files), by listener"
    );
    metrics::describe_counter!(
        INVARIANT_VIOLATIONS,
        "Invariants found broken in the code (by invariant): each stopped what it guarded"
    );
    metrics::describe_gauge!(
        LEDGER_MISMATCHED,
        "Products whose stock ledger's last row is not their on-hand and reserved, at the last self-audit (0 on a sound read model)"
    );
    metrics::describe_counter!(
        LEDGER_AUDITS,
        "Self-audits of the stock ledger against the products' figures"
    );
    metrics::describe_counter!(
        LOG_LOST_ENTRIES,
        "Events the read model applied that the log then lost (a failover to a replica that missed them), found by the log audit; listed at /api/lost-log-entries"
    );
    metrics::describe_counter!(
        LOG_AUDITS,
        "Audits of recently applied events against the log (at worker start and after each reconnect)"
    );
    metrics::describe_counter!(
        EPOCHS_REISSUED,
        "Lease epochs issued again by the lease store (as after a Valkey failover) and refused by their claim"
    );
    metrics::describe_counter!(EVENTS_PROCESSED, "Events handled by workers, by outcome");
    metrics::describe_histogram!(BATCH_SECONDS, "Time to apply, publish and ack one batch");
    metrics::describe_histogram!(
        EVENT_LATENCY_SECONDS,
        "From an event's occurrence to its commit in the read model"
    );
    metrics::describe_counter!(
        EVENTS_APPENDED,
        "Events appended by the gateway, by type and result (ok, error: not recorded, unknown: sent but not confirmed)"
    );
    metrics::describe_histogram!(APPEND_SECONDS, "Durable append latency seen by the gateway");
    metrics::describe_gauge!(
        PARTITION_LAG,
        "Entries not yet delivered to the processor group"
    );
    metrics::describe_gauge!(PARTITION_PENDING, "Entries delivered but not yet acked");
    metrics::describe_gauge!(
        PARTITION_OWNED,
        "1 when this worker holds the partition's lease"
    );
    metrics::describe_gauge!(DEAD_LETTERS, "Dead-lettered events waiting for an operator");
    metrics::describe_gauge!(WORKER_UP, "1 while this process runs a worker");
    metrics::describe_gauge!(
        GATEWAY_BACKLOG,
        "Events appended and not yet processed by the workers, as the gateway last read it (writes are refused above --max-backlog)"
    );
    metrics::describe_counter!(
        REQUESTS_SHED,
        "Requests refused with 503 because a bound was full, by bound"
    );
    metrics::describe_gauge!(
        LOG_RETAINED_ENTRIES,
        "Entries the partition's log still holds"
    );
    metrics::describe_gauge!(
        LOG_RETAINED_BYTES,
        "Bytes the partition's log holds (Valkey: its memory estimate)"
    );
    metrics::describe_counter!(
        LOG_TRIMMED,
        "Log entries removed after every consumer group acked them"
    );
    metrics::describe_counter!(
        WINDOWS_PRUNED,
        "Throughput windows removed past their retention"
    );
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered by the gateway, by route, method and status"
    );
    metrics::describe_histogram!(
        HTTP_SECONDS,
        "Time to answer an HTTP request, by route, method and status"
    );
    metrics::describe_counter!(
        ANNOUNCEMENTS_HEARD,
        "Workers' announcements of committed status changes the gateway heard (they wake long polls)"
    );
    metrics::describe_gauge!(
        HTTP_IN_FLIGHT,
        "Requests the gateway is handling (the probes aside)"
    );
    metrics::describe_counter!(
        FENCED_BATCHES,
        "Batches whose commit was refused because the partition's lease had moved to another worker"
    );
    metrics::describe_gauge!(
        DEAD_LETTER_ALERT_AT,
        "Dead letters at which the worker raises a critical alert"
    );
}
