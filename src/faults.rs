//! Faults the fault tests' negative controls inject, in debug builds only:
//! each makes the system do what its test must catch, so a control shows
//! the test can fail. Release builds never read these variables (the
//! `cfg!` makes each of these functions `false`).

/// `STREAMSTOCK_FAULT_KEEP_EXPIRED_LEASES`: a worker that cannot renew its
/// leases goes on believing it holds them (the database's epoch fence
/// still refuses its commits). For the partition test.
pub fn keeps_expired_leases() -> bool {
    set("STREAMSTOCK_FAULT_KEEP_EXPIRED_LEASES")
}

/// `STREAMSTOCK_FAULT_SWEEP_STALL_MS`: the hold expiry sweep pauses this
/// long between reading the due holds and asking for their expiry, so a
/// test can freeze the worker with requests in hand (the window a long GC
/// pause or a stalled host would leave).
pub fn sweep_stall() -> Option<std::time::Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let ms = std::env::var("STREAMSTOCK_FAULT_SWEEP_STALL_MS").ok()?;
    ms.parse().ok().map(std::time::Duration::from_millis)
}

/// `STREAMSTOCK_FAULT_EXPIRE_UNCHECKED`: a worker decides `order.expired`
/// for every expiry request, whatever the order's state (as a domain
/// without its guard would). For the zombie-expiry test's control.
pub fn expires_unchecked() -> bool {
    set("STREAMSTOCK_FAULT_EXPIRE_UNCHECKED")
}

/// `STREAMSTOCK_FAULT_ARCHIVE_NUMBERED_AT_INSERT`: on PostgreSQL a batch
/// takes its archive rows' numbers from a sequence at its start, without
/// the numbering lock, then dawdles up to 150 ms: a batch that numbered
/// later can take the row locks first and commit first, so batches commit
/// out of `seq` order (as a `seq` given at insert allows). For the feed
/// test's control, which must then see a reader skip events.
pub fn archive_numbered_at_insert() -> bool {
    set("STREAMSTOCK_FAULT_ARCHIVE_NUMBERED_AT_INSERT")
}

/// `STREAMSTOCK_FAULT_WEBHOOK_CURSOR_AHEAD`: the webhook deliverer writes
/// a page's end as its cursor before it delivers the page (at most once,
/// as a deliverer that advanced first would). For the kill -9 delivery
/// test's control, which must then see events skipped.
pub fn webhook_cursor_ahead() -> bool {
    set("STREAMSTOCK_FAULT_WEBHOOK_CURSOR_AHEAD")
}

/// `STREAMSTOCK_FAULT_WEBHOOK_RESOLVE_UNCHECKED`: the webhook deliverer
/// connects to whatever a subscription's name resolves to, as a client that
/// checked the address only at creation would. For the DNS change test's
/// control, which must then see a delivery reach a refused address.
pub fn webhook_resolve_unchecked() -> bool {
    set("STREAMSTOCK_FAULT_WEBHOOK_RESOLVE_UNCHECKED")
}

fn set(name: &str) -> bool {
    cfg!(debug_assertions) && std::env::var_os(name).is_some()
}
