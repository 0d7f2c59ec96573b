//! The service manager's side of a role's life (sd_notify(3)): `READY=1`
//! once the role's backends answer, `STATUS=` while it waits for them,
//! `WATCHDOG=1` pings when the unit sets `WatchdogSec`, and `STOPPING=1`
//! when shutdown begins. Outside systemd (no `NOTIFY_SOCKET`) every call
//! does nothing.

use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "could not notify the service manager");
    }
}

/// The role serves: its backends answered and its listener is bound.
pub fn ready(what: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(what)]);
}

/// What the role is doing, for `systemctl status`.
pub fn status(what: &str) {
    send(&[NotifyState::Status(what)]);
}

/// Pings the watchdog at half its interval while the runtime runs, and
/// says `STOPPING=1` once `shutdown` fires. A runtime stuck so that this
/// task cannot run misses its pings, and systemd restarts the service.
/// The role awaits the handle (`finish`) before the process exits: a task
/// woken by the shutdown is not sure to run before the runtime is dropped,
/// and then STOPPING=1 was never sent (seen in a test under load).
pub fn watch(shutdown: CancellationToken) -> Watch {
    let interval = sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
    let stopped = shutdown.clone();
    let task = tokio::spawn(async move {
        let shutdown = stopped;
        match interval {
            Some(every) => {
                let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => send(&[NotifyState::Watchdog]),
                    }
                }
            }
            None => shutdown.cancelled().await,
        }
        send(&[NotifyState::Stopping]);
    });
    Watch { shutdown, task }
}

/// The watchdog's task, to finish before the process exits.
pub struct Watch {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Waits for STOPPING=1 to be sent when the role stopped on shutdown;
    /// a role that ended otherwise (a command done, an error) ends the
    /// pings without it.
    pub async fn finish(self) {
        if self.shutdown.is_cancelled() {
            let _ = self.task.await;
        } else {
            self.task.abort();
        }
    }
}
